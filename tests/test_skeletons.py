"""Joint sets against the published index lists (docs/datasets.md, skeleton mappings)."""

import numpy as np
import pytest

from wild3d_tf import skeletons as sk

# Published lists, typed from the sources docs/datasets.md names for each dataset; the
# module derives its own from joint names, so agreement checks both.
PUBLISHED_TO_POSE2D = {
  "mpii_16": [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 8, 9],
  "h36m_17": [3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10],
  "mpi_inf_3dhp_17": [10, 9, 8, 11, 12, 13, 4, 3, 2, 5, 6, 7, 1, 0],
  "mpi_inf_3dhp_28": [25, 24, 23, 18, 19, 20, 16, 15, 14, 9, 10, 11, 5, 7],
}
PUBLISHED_TO_POSE3D = {
  "mpi_inf_3dhp_17": [14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4],
  "mpi_inf_3dhp_28": [4, 23, 24, 25, 18, 19, 20, 3, 5, 6, 7, 9, 10, 11, 14, 15, 16],
  "h36m_32": [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27],
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_TO_POSE2D))
def test_mapping_to_pose2d_matches_published(name):
  np.testing.assert_array_equal(sk.mapping(sk.ALL_SETS[name], sk.POSE2D), PUBLISHED_TO_POSE2D[name])


@pytest.mark.parametrize("name", sorted(PUBLISHED_TO_POSE3D))
def test_mapping_to_pose3d_matches_published(name):
  np.testing.assert_array_equal(sk.mapping(sk.ALL_SETS[name], sk.POSE3D), PUBLISHED_TO_POSE3D[name])


def test_h36m_32_to_17_drops_the_published_joints():
  kept = set(sk.mapping(sk.H36M_32, sk.POSE3D).tolist())
  dropped = sorted(set(range(32)) - kept)
  assert dropped == [4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31]


# Joint by joint, by name: the semantic pairs the mapping must make.
@pytest.mark.parametrize(
  "source,own,common",
  [
    (sk.H36M_32, "Hips", "pelvis"),
    (sk.H36M_32, "RightFoot", "r_ankle"),
    (sk.H36M_32, "Spine1", "spine"),
    (sk.H36M_32, "Neck", "thorax"),
    (sk.H36M_32, "Head", "head"),
    (sk.H36M_32, "HeadSite", "head_top"),
    (sk.H36M_32, "LeftArm", "l_shoulder"),
    (sk.H36M_32, "RightHand", "r_wrist"),
    (sk.MPI_INF_3DHP_28, "neck", "thorax"),
    (sk.MPI_INF_3DHP_28, "head", "head"),
    (sk.MPI_INF_3DHP_28, "spine", "spine"),
    (sk.MPI_INF_3DHP_28, "left_ankle", "l_ankle"),
    (sk.MPI_INF_3DHP_17, "pelvis", "pelvis"),
    (sk.MPI_INF_3DHP_17, "right_wrist", "r_wrist"),
  ],
)
def test_pose3d_mapping_by_name(source, own, common):
  assert sk.mapping(source, sk.POSE3D)[sk.POSE3D.index(common)] == source.index(own)


@pytest.mark.parametrize(
  "source,own,common",
  [
    (sk.MPII_16, "upper_neck", "neck"),
    (sk.MPII_16, "head_top", "head_top"),
    (sk.MPII_16, "r_wrist", "r_wrist"),
    (sk.POSE3D, "thorax", "neck"),
    (sk.MPI_INF_3DHP_17, "neck", "neck"),
    (sk.MPI_INF_3DHP_28, "head_top", "head_top"),
    (sk.H36M_32, "LeftForeArm", "l_elbow"),
  ],
)
def test_pose2d_mapping_by_name(source, own, common):
  assert sk.mapping(source, sk.POSE2D)[sk.POSE2D.index(common)] == source.index(own)


def test_every_set_maps_fully_into_pose2d():
  for joint_set in sk.ALL_SETS.values():
    assert (sk.mapping(joint_set, sk.POSE2D) >= 0).all(), joint_set.name


def test_mpii_has_no_pose3d_joints():
  assert (sk.mapping(sk.MPII_16, sk.POSE3D) == -1).all()


def test_mapping_into_a_native_set_is_refused():
  with pytest.raises(ValueError, match="can map only"):
    sk.mapping(sk.POSE3D, sk.MPII_16)


def test_convert_reorders_and_fills():
  joints = np.arange(16 * 2, dtype=float).reshape(16, 2)
  out = sk.convert(joints, sk.MPII_16, sk.POSE2D)
  np.testing.assert_array_equal(out[sk.POSE2D.index("neck")], joints[8])
  # LSP is a 2D-only set: nothing of it maps into the 3D set.
  assert np.isnan(sk.convert(np.zeros((2, 14, 3)), sk.POSE2D, sk.POSE3D)).all()
  # POSE3D -> POSE2D fills every 2D joint; the 17-joint test order keeps values.
  test_order = np.arange(17 * 3, dtype=float).reshape(17, 3)
  pose3d = sk.convert(test_order, sk.MPI_INF_3DHP_17, sk.POSE3D)
  np.testing.assert_array_equal(pose3d[sk.POSE3D.index("pelvis")], test_order[14])
  assert not np.isnan(sk.convert(pose3d, sk.POSE3D, sk.POSE2D)).any()
  with pytest.raises(ValueError, match="expected 16 mpii_16 joints"):
    sk.convert(np.zeros((17, 2)), sk.MPII_16, sk.POSE2D)


def test_h36m_17_parents_and_sides_match_videopose3d():
  assert sk.POSE3D.parents == (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
  left = [a for a, _ in sk.POSE3D.left_right_pairs]
  right = [b for _, b in sk.POSE3D.left_right_pairs]
  assert sorted(left + right) == sorted([4, 5, 6, 11, 12, 13] + [1, 2, 3, 14, 15, 16])
  for a, b in sk.POSE3D.left_right_pairs:
    names = {sk.POSE3D.joints[a][2:], sk.POSE3D.joints[b][2:]}
    assert len(names) == 1


@pytest.mark.parametrize(
  "joint_set,pairs",
  [
    (sk.LSP_14, [(0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9)]),
    (sk.MPII_16, [(0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)]),
    (sk.MPI_INF_3DHP_17, [(2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13)]),
    (sk.POSE3D, [(1, 4), (2, 5), (3, 6), (11, 14), (12, 15), (13, 16)]),
  ],
)
def test_flip_pairs_match_published(joint_set, pairs):
  assert joint_set.left_right_pairs == sorted(pairs)


def test_flip_permutation_is_an_involution():
  for joint_set in sk.ALL_SETS.values():
    perm = joint_set.flip_permutation
    np.testing.assert_array_equal(perm[perm], np.arange(joint_set.num_joints))


def test_native_parents_match_published():
  # metadata.xml, 0-based; VideoPose3D hangs 16 and 24 off 12 instead of 13.
  assert sk.H36M_32.parents[16] == 13 and sk.H36M_32.parents[24] == 13
  # mpii_get_joint_set.m 1-based "o1" with the pelvis as its own parent.
  published = [
    2,
    0,
    3,
    4,
    4,
    1,
    5,
    6,
    5,
    8,
    9,
    10,
    11,
    5,
    13,
    14,
    15,
    16,
    4,
    18,
    19,
    20,
    21,
    4,
    23,
    24,
    25,
    26,
  ]
  assert [p if p >= 0 else 4 for p in sk.MPI_INF_3DHP_28.parents] == published
  assert [p if p >= 0 else 14 for p in sk.MPI_INF_3DHP_17.parents] == [
    1,
    15,
    1,
    2,
    3,
    1,
    5,
    6,
    14,
    8,
    9,
    14,
    11,
    12,
    14,
    14,
    1,
  ]
  # HRNet's MPII parent ids, with the pelvis (6) as root.
  assert [p if p >= 0 else 6 for p in sk.MPII_16.parents] == [
    1,
    2,
    6,
    6,
    3,
    4,
    6,
    6,
    7,
    8,
    11,
    12,
    7,
    7,
    13,
    14,
  ]


def test_3dhp_17_is_the_relevant_subset_of_28():
  index = [sk.MPI_INF_3DHP_28.index(j) for j in sk.MPI_INF_3DHP_17.joints]
  assert index == [7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6]


def test_bones_are_a_tree():
  for joint_set in sk.ALL_SETS.values():
    assert len(joint_set.bones) == joint_set.num_joints - 1
    for joint in range(joint_set.num_joints):  # every joint reaches the root
      seen = 0
      while joint_set.parents[joint] >= 0:
        joint = joint_set.parents[joint]
        seen += 1
        assert seen <= joint_set.num_joints, joint_set.name
      assert joint == joint_set.root


def test_joint_groups_name_real_joints_and_counts():
  for _variant, groups in sk.JOINT_GROUPS_3DHP.items():
    names = [j for g in groups.values() for j in g]
    assert len(set(names)) == len(names)
    sk.POSE3D.indices(names)
  assert sum(map(len, sk.JOINT_GROUPS_3DHP_A.values())) == 17
  assert sum(map(len, sk.JOINT_GROUPS_3DHP_B.values())) == 14


def test_invalid_joint_sets_are_rejected():
  with pytest.raises(ValueError, match="not unique"):
    sk.JointSet("bad", ("a", "a"), (-1, 0))
  with pytest.raises(ValueError, match="parent"):
    sk.JointSet("bad", ("a", "b"), (-1, 1))
  with pytest.raises(ValueError, match="not back"):
    sk.JointSet("bad", ("a", "b", "c"), (-1, 0, 0), mirror={"a": "b", "b": "c", "c": "a"})
  with pytest.raises(KeyError, match="no joint 'nose'"):
    sk.POSE3D.index("nose")


def test_docs_table_is_current():
  import pathlib

  path = pathlib.Path(__file__).resolve().parents[1] / "docs" / "skeletons.md"
  assert path.read_text() == sk.markdown(), "run: python -m wild3d_tf.skeletons > docs/skeletons.md"
