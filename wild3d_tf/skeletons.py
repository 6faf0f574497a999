"""Every joint set wild3d knows, and the only place that writes joint indices.

Two common sets carry the model's labels:

* ``POSE3D`` -- the 17-joint 3D set in H3.6M order (the order VideoPose3D and
  MMPose call "H36M-17"; NOT the SPIN/HMR regressor order, which lists the
  left leg first).
* ``POSE2D`` -- the 14-joint 2D set in LSP order, the set all four datasets
  share and the model's heatmap channels.

Every native skeleton (H3.6M 32, MPI-INF-3DHP 28 and its 17-joint test order,
MPII 16, LSP 14) maps into them by joint *name*: each set declares which of its
joints corresponds to which common joint, and :func:`mapping` derives the
index lists from those names. The index lists in ``docs/skeletons.md`` are
derived, never typed, and the tests compare them with the published ones.

Names follow the dataset's own vocabulary where it has one; the H3.6M
metadata calls six different joints "Site", so those are renamed after the
joint they end (``HeadSite``, ``LeftToeSite`` ...).
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class JointSet:
  """A named skeleton.

  Attributes:
    name: identifier, e.g. ``"h36m_17"``.
    joints: joint names, index order.
    parents: kinematic parent index per joint, -1 for the root(s).
    mirror: joint name -> the name of its left/right partner (both directions).
    to_pose3d: own joint name -> ``POSE3D`` joint name, for joints that have
      a counterpart in the common 3D set.
    to_pose2d: own joint name -> ``POSE2D`` joint name.
  """

  name: str
  joints: tuple[str, ...]
  parents: tuple[int, ...]
  mirror: Mapping[str, str] = dataclasses.field(default_factory=dict)
  to_pose3d: Mapping[str, str] = dataclasses.field(default_factory=dict)
  to_pose2d: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if len(set(self.joints)) != len(self.joints):
      raise ValueError(f"{self.name}: joint names are not unique")
    if len(self.parents) != len(self.joints):
      raise ValueError(f"{self.name}: {len(self.parents)} parents for {len(self.joints)} joints")
    for child, parent in enumerate(self.parents):
      if not -1 <= parent < len(self.joints) or parent == child:
        raise ValueError(f"{self.name}: joint {child} has parent {parent}")
    for table in ("mirror", "to_pose3d", "to_pose2d"):
      unknown = set(getattr(self, table)) - set(self.joints)
      if unknown:
        raise ValueError(f"{self.name}.{table} names unknown joints {sorted(unknown)}")
    for a, b in self.mirror.items():
      if self.mirror.get(b) != a:
        raise ValueError(f"{self.name}: mirror of {a!r} is {b!r} but not back")

  @property
  def num_joints(self) -> int:
    return len(self.joints)

  def index(self, joint: str) -> int:
    try:
      return self.joints.index(joint)
    except ValueError:
      raise KeyError(f"{self.name} has no joint {joint!r}; it has {self.joints}") from None

  def indices(self, joints) -> list[int]:
    return [self.index(j) for j in joints]

  @property
  def root(self) -> int:
    return self.parents.index(-1)

  @property
  def bones(self) -> list[tuple[int, int]]:
    """(child, parent) index pairs, one per non-root joint."""
    return [(c, p) for c, p in enumerate(self.parents) if p >= 0]

  @property
  def flip_permutation(self) -> np.ndarray:
    """Index array that swaps left and right joints (identity elsewhere)."""
    return np.array([self.index(self.mirror.get(j, j)) for j in self.joints])

  @property
  def left_right_pairs(self) -> list[tuple[int, int]]:
    """(left, right) index pairs, ordered by the left index."""
    pairs = {tuple(sorted((self.index(a), self.index(b)))) for a, b in self.mirror.items()}
    return sorted(pairs)


def _mirror_by_prefix(joints, left: str, right: str) -> dict[str, str]:
  """Pairs joints whose names differ only by a left/right prefix."""
  table = {}
  for name in joints:
    for this, other in ((left, right), (right, left)):
      if name.startswith(this) and other + name[len(this) :] in joints:
        table[name] = other + name[len(this) :]
  return table


def _parents_by_name(joints, parent_names: Mapping[str, str | None]) -> tuple[int, ...]:
  return tuple(-1 if parent_names[j] is None else joints.index(parent_names[j]) for j in joints)


def _identity(joints) -> dict[str, str]:
  return {j: j for j in joints}


# --------------------------------------------------------------------------
# Common sets.

_POSE3D_JOINTS = (
  "pelvis",
  "r_hip",
  "r_knee",
  "r_ankle",
  "l_hip",
  "l_knee",
  "l_ankle",
  "spine",
  "thorax",
  "head",
  "head_top",
  "l_shoulder",
  "l_elbow",
  "l_wrist",
  "r_shoulder",
  "r_elbow",
  "r_wrist",
)

_POSE2D_JOINTS = (
  "r_ankle",
  "r_knee",
  "r_hip",
  "l_hip",
  "l_knee",
  "l_ankle",
  "r_wrist",
  "r_elbow",
  "r_shoulder",
  "l_shoulder",
  "l_elbow",
  "l_wrist",
  "neck",
  "head_top",
)

# LSP's "neck" is the upper neck, H3.6M's "thorax" the neck base; the 2D
# mapping of every 3D set pairs them anyway (as HMR and SPIN do), because it
# is the nearest joint the 3D sets have.
_POSE3D_TO_POSE2D = {**_identity(set(_POSE3D_JOINTS) & set(_POSE2D_JOINTS)), "thorax": "neck"}

POSE3D = JointSet(
  name="h36m_17",
  joints=_POSE3D_JOINTS,
  parents=(-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15),
  mirror=_mirror_by_prefix(_POSE3D_JOINTS, "l_", "r_"),
  to_pose3d=_identity(_POSE3D_JOINTS),
  to_pose2d=_POSE3D_TO_POSE2D,
)
H36M_17 = POSE3D

POSE2D = JointSet(
  name="lsp_14",
  joints=_POSE2D_JOINTS,
  # LSP has no pelvis: legs and arms hang off the neck, the neck is the root.
  parents=_parents_by_name(
    _POSE2D_JOINTS,
    {
      "r_ankle": "r_knee",
      "r_knee": "r_hip",
      "r_hip": "neck",
      "l_ankle": "l_knee",
      "l_knee": "l_hip",
      "l_hip": "neck",
      "r_wrist": "r_elbow",
      "r_elbow": "r_shoulder",
      "r_shoulder": "neck",
      "l_wrist": "l_elbow",
      "l_elbow": "l_shoulder",
      "l_shoulder": "neck",
      "neck": None,
      "head_top": "neck",
    },
  ),
  mirror=_mirror_by_prefix(_POSE2D_JOINTS, "l_", "r_"),
  to_pose2d=_identity(_POSE2D_JOINTS),
)
LSP_14 = POSE2D

# --------------------------------------------------------------------------
# Native skeletons.

_H36M_32_JOINTS = (
  "Hips",
  "RightUpLeg",
  "RightLeg",
  "RightFoot",
  "RightToeBase",
  "RightToeSite",
  "LeftUpLeg",
  "LeftLeg",
  "LeftFoot",
  "LeftToeBase",
  "LeftToeSite",
  "Spine",
  "Spine1",
  "Neck",
  "Head",
  "HeadSite",
  "LeftShoulder",
  "LeftArm",
  "LeftForeArm",
  "LeftHand",
  "LeftHandThumb",
  "LeftThumbSite",
  "L_Wrist_End",
  "LeftWristSite",
  "RightShoulder",
  "RightArm",
  "RightForeArm",
  "RightHand",
  "RightHandThumb",
  "RightThumbSite",
  "R_Wrist_End",
  "RightWristSite",
)

_H36M_32_TO_POSE3D = {
  "Hips": "pelvis",
  "RightUpLeg": "r_hip",
  "RightLeg": "r_knee",
  "RightFoot": "r_ankle",
  "LeftUpLeg": "l_hip",
  "LeftLeg": "l_knee",
  "LeftFoot": "l_ankle",
  "Spine1": "spine",
  "Neck": "thorax",
  "Head": "head",
  "HeadSite": "head_top",
  "LeftArm": "l_shoulder",
  "LeftForeArm": "l_elbow",
  "LeftHand": "l_wrist",
  "RightArm": "r_shoulder",
  "RightForeArm": "r_elbow",
  "RightHand": "r_wrist",
}

H36M_32 = JointSet(
  name="h36m_32",
  joints=_H36M_32_JOINTS,
  # metadata.xml's skel_pos tree (1-based there).
  parents=(
    -1,
    0,
    1,
    2,
    3,
    4,
    0,
    6,
    7,
    8,
    9,
    0,
    11,
    12,
    13,
    14,
    13,
    16,
    17,
    18,
    19,
    20,
    19,
    22,
    13,
    24,
    25,
    26,
    27,
    28,
    27,
    30,
  ),
  mirror={
    **_mirror_by_prefix(_H36M_32_JOINTS, "Left", "Right"),
    **_mirror_by_prefix(_H36M_32_JOINTS, "L_", "R_"),
  },
  to_pose3d=_H36M_32_TO_POSE3D,
  to_pose2d={
    k: _POSE3D_TO_POSE2D[v] for k, v in _H36M_32_TO_POSE3D.items() if v in _POSE3D_TO_POSE2D
  },
)

_MPI_INF_3DHP_28_JOINTS = (
  "spine3",
  "spine4",
  "spine2",
  "spine",
  "pelvis",
  "neck",
  "head",
  "head_top",
  "left_clavicle",
  "left_shoulder",
  "left_elbow",
  "left_wrist",
  "left_hand",
  "right_clavicle",
  "right_shoulder",
  "right_elbow",
  "right_wrist",
  "right_hand",
  "left_hip",
  "left_knee",
  "left_ankle",
  "left_foot",
  "left_toe",
  "right_hip",
  "right_knee",
  "right_ankle",
  "right_foot",
  "right_toe",
)

# 3DHP's "neck" is the neck base (H3.6M thorax) and its "head" the H3.6M head
# joint; both sets call the top of the head head_top.
_MPI_INF_3DHP_TO_POSE3D = {
  "pelvis": "pelvis",
  "right_hip": "r_hip",
  "right_knee": "r_knee",
  "right_ankle": "r_ankle",
  "left_hip": "l_hip",
  "left_knee": "l_knee",
  "left_ankle": "l_ankle",
  "spine": "spine",
  "neck": "thorax",
  "head": "head",
  "head_top": "head_top",
  "left_shoulder": "l_shoulder",
  "left_elbow": "l_elbow",
  "left_wrist": "l_wrist",
  "right_shoulder": "r_shoulder",
  "right_elbow": "r_elbow",
  "right_wrist": "r_wrist",
}
_MPI_INF_3DHP_TO_POSE2D = {
  k: _POSE3D_TO_POSE2D[v] for k, v in _MPI_INF_3DHP_TO_POSE3D.items() if v in _POSE3D_TO_POSE2D
}

MPI_INF_3DHP_28 = JointSet(
  name="mpi_inf_3dhp_28",
  joints=_MPI_INF_3DHP_28_JOINTS,
  # mpii_get_joint_set.m; the pelvis is its own parent there, the root here.
  parents=(
    2,
    0,
    3,
    4,
    -1,
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
  ),
  mirror=_mirror_by_prefix(_MPI_INF_3DHP_28_JOINTS, "left_", "right_"),
  to_pose3d=_MPI_INF_3DHP_TO_POSE3D,
  to_pose2d=_MPI_INF_3DHP_TO_POSE2D,
)

# The "relevant" 17 joints in the order of the test set's annot_data.mat.
_MPI_INF_3DHP_17_JOINTS = (
  "head_top",
  "neck",
  "right_shoulder",
  "right_elbow",
  "right_wrist",
  "left_shoulder",
  "left_elbow",
  "left_wrist",
  "right_hip",
  "right_knee",
  "right_ankle",
  "left_hip",
  "left_knee",
  "left_ankle",
  "pelvis",
  "spine",
  "head",
)

MPI_INF_3DHP_17 = JointSet(
  name="mpi_inf_3dhp_17",
  joints=_MPI_INF_3DHP_17_JOINTS,
  parents=(1, 15, 1, 2, 3, 1, 5, 6, 14, 8, 9, 14, 11, 12, -1, 14, 1),
  mirror=_mirror_by_prefix(_MPI_INF_3DHP_17_JOINTS, "left_", "right_"),
  to_pose3d=_MPI_INF_3DHP_TO_POSE3D,
  to_pose2d=_MPI_INF_3DHP_TO_POSE2D,
)

_MPII_16_JOINTS = (
  "r_ankle",
  "r_knee",
  "r_hip",
  "l_hip",
  "l_knee",
  "l_ankle",
  "pelvis",
  "thorax",
  "upper_neck",
  "head_top",
  "r_wrist",
  "r_elbow",
  "r_shoulder",
  "l_shoulder",
  "l_elbow",
  "l_wrist",
)

MPII_16 = JointSet(
  name="mpii_16",
  joints=_MPII_16_JOINTS,
  parents=_parents_by_name(
    _MPII_16_JOINTS,
    {
      "r_ankle": "r_knee",
      "r_knee": "r_hip",
      "r_hip": "pelvis",
      "l_ankle": "l_knee",
      "l_knee": "l_hip",
      "l_hip": "pelvis",
      "pelvis": None,
      "thorax": "pelvis",
      "upper_neck": "thorax",
      "head_top": "upper_neck",
      "r_wrist": "r_elbow",
      "r_elbow": "r_shoulder",
      "r_shoulder": "thorax",
      "l_wrist": "l_elbow",
      "l_elbow": "l_shoulder",
      "l_shoulder": "thorax",
    },
  ),
  mirror=_mirror_by_prefix(_MPII_16_JOINTS, "l_", "r_"),
  # MPII's upper neck is the joint LSP annotates as "neck".
  to_pose2d={**_identity(set(_MPII_16_JOINTS) & set(_POSE2D_JOINTS)), "upper_neck": "neck"},
)

ALL_SETS: dict[str, JointSet] = {
  s.name: s for s in (H36M_17, LSP_14, H36M_32, MPI_INF_3DHP_28, MPI_INF_3DHP_17, MPII_16)
}


# --------------------------------------------------------------------------
# Mappings.


def mapping(source: JointSet, target: JointSet) -> np.ndarray:
  """Index of each ``target`` joint in ``source``, -1 where it has none.

  ``target`` must be one of the common sets (``POSE3D`` or ``POSE2D``); the
  correspondence comes from ``source.to_pose3d`` / ``source.to_pose2d``.
  """
  if target is POSE3D:
    table = source.to_pose3d
  elif target is POSE2D:
    table = source.to_pose2d
  else:
    raise ValueError(f"can map only into {POSE3D.name} or {POSE2D.name}, not {target.name}")
  index = np.full(target.num_joints, -1, dtype=np.int64)
  for own, common in table.items():
    index[target.index(common)] = source.index(own)
  return index


def convert(
  joints: np.ndarray, source: JointSet, target: JointSet, fill: float = np.nan
) -> np.ndarray:
  """Re-orders ``(..., source.num_joints, D)`` joints into ``target``'s order.

  Target joints without a source counterpart get ``fill``.
  """
  joints = np.asarray(joints)
  if joints.shape[-2] != source.num_joints:
    raise ValueError(
      f"expected {source.num_joints} {source.name} joints on axis -2, got shape {joints.shape}"
    )
  index = mapping(source, target)
  out = np.take(joints, np.maximum(index, 0), axis=-2).astype(np.result_type(joints, np.float32))
  out[..., index < 0, :] = fill
  return out


# --------------------------------------------------------------------------
# Evaluation joint groups of MPI-INF-3DHP (mpii_get_pck_auc_joint_groups.m),
# by POSE3D names. Two variants circulate; A is the default (see docs/metrics.md).

JOINT_GROUPS_3DHP_A = {  # all 17 joints; the root counts (error 0 after centring)
  "Head": ("head_top", "head"),
  "Neck": ("thorax",),
  "Shou": ("l_shoulder", "r_shoulder"),
  "Elbow": ("l_elbow", "r_elbow"),
  "Wrist": ("l_wrist", "r_wrist"),
  "Spine": ("spine",),
  "Hip": ("r_hip", "l_hip", "pelvis"),
  "Knee": ("l_knee", "r_knee"),
  "Ankle": ("l_ankle", "r_ankle"),
}

JOINT_GROUPS_3DHP_B = {  # 14 joints: no spine, head or pelvis
  "Head": ("head_top",),
  "Neck": ("thorax",),
  "Shou": ("l_shoulder", "r_shoulder"),
  "Elbow": ("l_elbow", "r_elbow"),
  "Wrist": ("l_wrist", "r_wrist"),
  "Hip": ("r_hip", "l_hip"),
  "Knee": ("l_knee", "r_knee"),
  "Ankle": ("l_ankle", "r_ankle"),
}

JOINT_GROUPS_3DHP = {"A": JOINT_GROUPS_3DHP_A, "B": JOINT_GROUPS_3DHP_B}


# --------------------------------------------------------------------------
# CMU motion capture (3dsMax-friendly BVH conversion, as in ../shared/data).
# The skeleton comes from the file; only the names that matter are fixed here.
# End sites are named "<joint>_end" by wild3d_tf.synthetic.bvh.

CMU_BVH_TO_POSE3D = {
  "Hips": "pelvis",
  "RightHip": "r_hip",
  "RightKnee": "r_knee",
  "RightAnkle": "r_ankle",
  "LeftHip": "l_hip",
  "LeftKnee": "l_knee",
  "LeftAnkle": "l_ankle",
  "Chest": "spine",
  "lowerneck": "thorax",
  "Head": "head",
  "Head_end": "head_top",
  "LeftShoulder": "l_shoulder",
  "LeftElbow": "l_elbow",
  "LeftWrist": "l_wrist",
  "RightShoulder": "r_shoulder",
  "RightElbow": "r_elbow",
  "RightWrist": "r_wrist",
}


def markdown() -> str:
  """The mapping tables of docs/skeletons.md, derived from the names above."""
  lines = ["# Joint sets (generated by `python -m wild3d_tf.skeletons`; do not edit)", ""]
  for joint_set in ALL_SETS.values():
    lines += [
      f"## {joint_set.name} ({joint_set.num_joints} joints)",
      "",
      "| index | joint | parent | mirror | -> POSE3D | -> POSE2D |",
      "|---|---|---|---|---|---|",
    ]
    for i, joint in enumerate(joint_set.joints):
      parent = joint_set.parents[i]
      lines.append(
        f"| {i} | {joint} | {joint_set.joints[parent] if parent >= 0 else '-'} | "
        f"{joint_set.mirror.get(joint, '-')} | {joint_set.to_pose3d.get(joint, '-')} | "
        f"{joint_set.to_pose2d.get(joint, '-')} |"
      )
    lines.append("")
  lines += [
    "## Index lists into the common sets",
    "",
    "| source | into POSE3D (h36m_17 order) | into POSE2D (lsp_14 order) |",
    "|---|---|---|",
  ]
  for joint_set in ALL_SETS.values():
    lines.append(
      f"| {joint_set.name} | `{mapping(joint_set, POSE3D).tolist()}` | "
      f"`{mapping(joint_set, POSE2D).tolist()}` |"
    )
  lines += ["", "-1 marks a common joint the source does not have.", ""]
  return "\n".join(lines)


if __name__ == "__main__":
  print(markdown(), end="")
