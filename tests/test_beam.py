"""Beam conversion: readers alone, end to end on the synthetic data, dead letters, determinism."""

import filecmp
import hashlib
import json
import pathlib
import shutil

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
import cdflib
from conftest import NATIVE_FOLDERS as INPUTS
from conftest import convert_dataset as _convert
import h5py
import numpy as np
import pytest
import scipy.io
import tensorflow as tf

from beam_preprocess import sharding, transforms
from beam_preprocess.readers import h36m, lsp, mpii
from beam_preprocess.records import BadRecord, CanonicalRecord, Options
from wild3d_tf import geometry, schema, shards, skeletons


def _records(output_dir, dataset, split):
  files = shards.shard_files(str(output_dir), dataset, split)
  return [schema.decode_numpy(r.numpy(), f) for f in files for r in tf.data.TFRecordDataset(f)]


@pytest.fixture(scope="module")
def converted(converted_tiny):
  return converted_tiny


# ------------------------------------------------------------ readers on their own


# The keys each reader must produce from the tiny synthetic data, from its native layout: H3.6M
# S1 (train, every frame) has 2 takes x 4 cameras x 10 frames, the videos of cameras 55011271 and
# 60457274 a frame short; S9 (test, every 64th frame) gives frame 0. 3DHP S1/Seq1 has videos for
# cameras 0 and 2, 8 frames each. MPII: the people with 2 or more points in the training images.
H36M_CAMERAS = ("54138969", "55011271", "58860488", "60457274")
MPII_PEOPLE = (
  "031320956.jpg/0",
  "061590179.jpg/0",  # its person 1 has one point: no crop
  "307245685.jpg/0",
  "307245685.jpg/1",
  "377875203.jpg/0",
  "394869837.jpg/0",
  "394869837.jpg/1",
)  # 531600835.jpg is a test image (img_train 0)


def _expected_keys(dataset, root):
  if dataset == "h36m":
    keys = [
      f"h36m/S1/{take}/{camera}/{frame:06d}"
      for take in ("Directions 1", "Walking 1")
      for camera in H36M_CAMERAS
      for frame in range(9 if camera in ("55011271", "60457274") else 10)
    ]
    return keys + [
      f"h36m/S9/{take}/{camera}/000000"
      for take in ("Directions 1", "Walking 1")
      for camera in H36M_CAMERAS
    ]
  if dataset == "mpi_inf_3dhp":
    return [f"mpi_inf_3dhp/S1/Seq1/{camera}/{frame:06d}" for camera in (0, 2) for frame in range(8)]
  if dataset == "mpi_inf_3dhp_test":
    keys = []
    for sequence in sorted(p.name for p in root.iterdir() if p.name.startswith("TS")):
      with h5py.File(root / sequence / "annot_data.mat", "r") as f:
        valid = np.flatnonzero(f["valid_frame"][:, 0] > 0)
      keys += [f"mpi_inf_3dhp_test/{sequence}/{frame:06d}" for frame in valid]
    return keys
  if dataset == "mpii":
    return [f"mpii/{person}" for person in MPII_PEOPLE]
  return [f"{dataset}/{p.name}" for p in sorted((root / "images").iterdir())]  # lsp, lspet


@pytest.mark.parametrize("dataset", sorted(INPUTS))
def test_each_reader_in_a_test_pipeline(dataset, synthetic_tiny):
  root = synthetic_tiny / INPUTS[dataset]
  items, bad = transforms.READERS[dataset][0](root, Options(test_frame_stride=64))
  assert items and not bad
  expected = _expected_keys(dataset, root)
  assert len(set(expected)) == len(expected) > 0
  with BeamTestPipeline() as p:
    out = (
      p
      | beam.Create(items)
      | beam.ParDo(
        transforms.ReadAndEncode(dataset, str(root), Options(test_frame_stride=64))
      ).with_outputs(transforms.DEAD, main="records")
    )
    assert_that(out.records | beam.Map(lambda r: r["key"]), equal_to(expected), label="keys")
    assert_that(out[transforms.DEAD], equal_to([]), label="no_dead_letters")


# What the declaration promises per dataset: 3D joints, a 3DHP universal skeleton, a camera, masks.
CONTENT = {
  "h36m": (True, False, True, False),
  "mpi_inf_3dhp": (True, True, True, True),
  "mpi_inf_3dhp_test": (True, True, True, False),
  "mpii": (False, False, False, False),
  "lsp": (False, False, False, False),
  "lspet": (False, False, False, False),
}


@pytest.mark.parametrize("dataset", sorted(INPUTS))
def test_every_reader_produces_canonical_records(dataset, synthetic_tiny):
  root = synthetic_tiny / INPUTS[dataset]
  work_items, raw_records, to_record = transforms.READERS[dataset]
  options = Options(test_frame_stride=64)
  items, _ = work_items(root, options)
  has_3d, has_univ, has_camera, has_mask = CONTENT[dataset]
  count = 0
  for item in items[:2]:
    for raw in raw_records(root, item, options):
      record = to_record(raw)
      # Its type checked every field's shape and dtype when it was made (test_schema.py).
      assert type(record) is CanonicalRecord
      assert record.dataset == dataset and record.key.startswith(f"{dataset}/")
      assert record.split in ("train", "test")
      assert (record.joints3d_camera_mm is not None) == has_3d
      assert (record.joints3d_univ_camera_mm is not None) == has_univ
      assert (record.camera_intrinsics_image_px is not None) == has_camera
      assert (record.mask is not None) == has_mask
      labelled = record.joints2d_labelled
      if has_camera and has_3d:  # 0-based pixels of the camera's projection, within a pixel
        k, pose = record.camera_intrinsics_image_px, record.joints3d_camera_mm
        projected = skeletons.convert(
          (pose / pose[:, 2:])[:, :2] @ k[:2, :2].T + k[:2, 2], skeletons.POSE3D, skeletons.POSE2D
        )
        if dataset != "h36m":  # H3.6M's 2D labels include its lens distortion
          np.testing.assert_allclose(
            projected[labelled], record.joints2d_image_px[labelled], atol=1.0
          )
      count += 1
  assert count > 0


def test_h36m_action_names():
  assert h36m.action_of("Directions 1") == "Directions"
  assert h36m.action_of("TakingPhoto") == "Photo"
  assert h36m.action_of("WalkingDog 2") == "WalkDog"
  assert h36m.action_of("SittingDown 1") == "SittingDown"


def test_lsp_to_record_inverts_the_flag_and_moves_to_0_based():
  joints = np.array([[11.0, 21.0, 0.0]] * 13 + [[31.0, 41.0, 1.0]])
  image = np.zeros((50, 50, 3), np.uint8)
  record = lsp.to_record(
    {"index": 0, "count": 2, "image_name": "im0001.jpg", "image": image, "joints": joints},
    dataset="lsp",
  )
  np.testing.assert_array_equal(record.joints2d_image_px[0], [10.0, 20.0])
  assert record.joints2d_visible[:13].all() and not record.joints2d_visible[13]
  assert record.split == "train"
  lspet = lsp.to_record(
    {
      "index": 0,
      "count": 1,
      "image_name": "im00001.jpg",
      "image": image,
      "joints": np.array([[-1.0, -1.0, 0.0]] + [[11.0, 21.0, 1.0]] * 13),
    },
    dataset="lspet",
  )
  assert not lspet.joints2d_labelled[0] and np.isnan(lspet.joints2d_image_px[0]).all()
  assert lspet.joints2d_visible[1:].all()


def test_mpii_people_of_handles_the_quirks():
  class S:  # a stand-in for scipy's mat_struct
    def __init__(self, **kw):
      self.__dict__.update(kw)

  points = [
    S(id=9, x=11.0, y=21.0, is_visible=np.zeros((0, 0))),
    S(id=8, x=5.0, y=6.0, is_visible="0"),
    S(id=0, x=1.0, y=1.0, is_visible=1),
  ]
  entry = S(annorect=S(annopoints=S(point=np.array(points, dtype=object))))  # squeezed single rect
  [person] = mpii.people_of(entry, "annolist(1)")
  np.testing.assert_array_equal(person["joints"][9], [10.0, 20.0])
  assert (
    person["visible"][9] == 1 and person["visible"][8] == 0 and np.isnan(person["joints"][5]).all()
  )
  one_point = S(annorect=S(annopoints=S(point=S(id=9, x=1.0, y=1.0, is_visible=1))))
  assert mpii.people_of(one_point, "annolist(2)") == []  # one joint cannot define a crop
  with pytest.raises(BadRecord, match="joint id 16"):
    bad = np.array([S(id=16, x=1.0, y=1.0, is_visible=1)] * 2, dtype=object)
    mpii.people_of(S(annorect=S(annopoints=S(point=bad))), "r")


# ------------------------------------------------------------ end to end


def test_h36m_records_give_back_the_native_annotations(converted, synthetic_tiny):
  out, manifests = converted
  assert (
    manifests["h36m"]["splits"]["train"]["records"] == 2 * 4 * 10 - 2 * 2
  )  # S1: cams 2, 4 a frame less
  assert manifests["h36m"]["splits"]["test"]["records"] == 2 * 4  # S9, every 64th frame: frame 0
  for record in _records(out, "h36m", "train") + _records(out, "h36m", "test"):
    _, subject, take, camera, frame = record["key"].split("/")
    base = synthetic_tiny / "h36m" / subject / "MyPoseFeatures"
    d2 = cdflib.CDF(str(base / "D2_Positions" / f"{take}.{camera}.cdf"))["Pose"][
      0, int(frame)
    ].reshape(32, 2)
    mono = cdflib.CDF(str(base / "D3_Positions_mono" / f"{take}.{camera}.cdf"))["Pose"][
      0, int(frame)
    ]
    back = geometry.apply_affine(
      record[schema.JOINTS2D_CROP_PX], np.linalg.inv(record[schema.CROP_PX_FROM_IMAGE_PX])
    )
    np.testing.assert_allclose(
      back, skeletons.convert(d2, skeletons.H36M_32, skeletons.POSE2D), atol=1e-3
    )
    np.testing.assert_array_equal(
      record[schema.JOINTS3D_CAMERA_MM],
      skeletons.convert(mono.reshape(32, 3), skeletons.H36M_32, skeletons.POSE3D),
    )
    assert record[schema.HAS_3D] == 1 and record[schema.HAS_INTRINSICS] == 1
    assert record["action"] in ("Directions", "Walking")


def test_3dhp_records_give_back_the_native_annotations(converted, synthetic_tiny):
  out, manifests = converted
  annot = scipy.io.loadmat(synthetic_tiny / "mpi_inf_3dhp/S1/Seq1/annot.mat")
  records = _records(out, "mpi_inf_3dhp", "train")
  assert len(records) == 2 * 8  # cameras 0 and 2 have videos
  for record in records:
    _, _, _, camera, frame = record["key"].split("/")
    native2 = annot["annot2"][int(camera)][0][int(frame)].reshape(28, 2)
    native3 = annot["annot3"][int(camera)][0][int(frame)].reshape(28, 3)
    back = geometry.apply_affine(
      record[schema.JOINTS2D_CROP_PX], np.linalg.inv(record[schema.CROP_PX_FROM_IMAGE_PX])
    )
    np.testing.assert_allclose(
      back, skeletons.convert(native2, skeletons.MPI_INF_3DHP_28, skeletons.POSE2D), atol=1e-3
    )
    np.testing.assert_array_equal(
      record[schema.JOINTS3D_CAMERA_MM],
      skeletons.convert(native3, skeletons.MPI_INF_3DHP_28, skeletons.POSE3D),
    )
    assert record[schema.HAS_MASK] == 1
    mask = tf.io.decode_png(record[schema.MASK_CROP_PNG]).numpy()[..., 0]
    pelvis = np.round(record[schema.JOINTS2D_CROP_PX][skeletons.POSE2D.index("r_hip")]).astype(int)
    assert mask[pelvis[1], pelvis[0]] == 255 and mask[0, 0] == 0


def test_3dhp_test_records_use_valid_frames_and_fitted_intrinsics(converted, synthetic_tiny):
  out, manifests = converted
  records = _records(out, "mpi_inf_3dhp_test", "test")
  with h5py.File(synthetic_tiny / "mpi_inf_3dhp_test_set/TS1/annot_data.mat", "r") as f:
    valid = f["valid_frame"][:, 0] > 0
    annot3 = f["annot3"][:, 0]
  ts1 = sorted((r for r in records if r["sequence"] == "TS1"), key=lambda r: r["frame"])
  assert [r["frame"] for r in ts1] == list(np.flatnonzero(valid))
  for record in ts1:
    np.testing.assert_array_equal(
      record[schema.JOINTS3D_CAMERA_MM],
      skeletons.convert(annot3[record["frame"]], skeletons.MPI_INF_3DHP_17, skeletons.POSE3D),
    )
    projected = geometry.apply_affine(
      (record[schema.JOINTS3D_CAMERA_MM] / record[schema.JOINTS3D_CAMERA_MM][:, 2:])[:, :2]
      @ record[schema.CAMERA_INTRINSICS_IMAGE_PX][:2, :2].T
      + record[schema.CAMERA_INTRINSICS_IMAGE_PX][:2, 2],
      record[schema.CROP_PX_FROM_IMAGE_PX],
    )
    np.testing.assert_allclose(
      skeletons.convert(projected, skeletons.POSE3D, skeletons.POSE2D),
      record[schema.JOINTS2D_CROP_PX],
      atol=1e-3,
    )


def test_2d_records_give_back_the_native_annotations(converted, synthetic_tiny):
  out, manifests = converted
  lsp_joints = scipy.io.loadmat(synthetic_tiny / "lsp/joints.mat")["joints"]
  records = _records(out, "lsp", "train") + _records(out, "lsp", "test")
  assert len(records) == 8 and {r["split"] for r in records} == {"train", "test"}
  for record in records:
    native = lsp_joints[:2, :, record["frame"]].T - 1.0
    back = geometry.apply_affine(
      record[schema.JOINTS2D_CROP_PX], np.linalg.inv(record[schema.CROP_PX_FROM_IMAGE_PX])
    )
    np.testing.assert_allclose(back, native, atol=1e-3)
    np.testing.assert_array_equal(
      record[schema.JOINTS2D_VISIBLE], lsp_joints[2, :, record["frame"]] == 0
    )
    assert record[schema.HAS_3D] == 0 and record[schema.HAS_INTRINSICS] == 0
  release = scipy.io.loadmat(
    synthetic_tiny / "mpii/mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat",
    struct_as_record=False,
    squeeze_me=True,
  )["RELEASE"]
  for record in _records(out, "mpii", "train"):
    rect = np.atleast_1d(release.annolist[record["frame"]].annorect)[
      int(record["key"].rsplit("/", 1)[1])
    ]
    back = geometry.apply_affine(
      record[schema.JOINTS2D_CROP_PX], np.linalg.inv(record[schema.CROP_PX_FROM_IMAGE_PX])
    )
    for point in np.atleast_1d(rect.annopoints.point):
      target = skeletons.mapping(skeletons.MPII_16, skeletons.POSE2D).tolist()
      if point.id in target:
        np.testing.assert_allclose(
          back[target.index(point.id)], [point.x - 1, point.y - 1], atol=1e-3
        )
  assert len(_records(out, "lspet", "train")) == 8


def test_manifest_counts_bones_and_digests(converted):
  out, manifests = converted
  manifest = json.loads((out / "h36m.manifest.json").read_text())
  assert manifest == manifests["h36m"]
  assert manifest["bone_lengths_mm"].keys() == {"train", "test"}
  assert (
    set(manifest["bone_lengths_mm"]["train"]) == {"S1"}
    and len(manifest["bone_lengths_mm"]["train"]["S1"]) == 16
  )
  assert manifest["counts"]["camera"]["54138969"] == 20 + 2
  for split in manifest["splits"].values():
    for shard in split["shards"]:
      assert (
        sum(1 for _ in tf.data.TFRecordDataset(str(out / "h36m" / shard["file"])))
        == shard["records"]
      )
      assert (
        hashlib.sha256((out / "h36m" / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
      )
  assert (out / "h36m.dead_letter.jsonl").read_text() == ""


# ------------------------------------------------------------ bad input and budgets


def _lsp_copy(synthetic_tiny, tmp_path):
  root = tmp_path / "lsp"
  shutil.copytree(synthetic_tiny / "lsp", root)
  return root


@pytest.mark.parametrize(
  "damage,field,reason",
  [
    (lambda root: (root / "images/im0003.jpg").unlink(), "path", "missing file images/im0003.jpg"),
    (
      lambda root: (root / "images/im0003.jpg").write_bytes(b"GIF89a" + b"\0" * 100),
      "image",
      "not a JPEG or PNG",
    ),
    (
      lambda root: (root / "images/im0003.jpg").write_bytes(
        (root / "images/im0003.jpg").read_bytes()[:600]
      ),
      "image",
      "truncated JPEG",
    ),
  ],
)
def test_a_bad_image_gives_one_dead_letter_and_the_rest_converts(
  synthetic_tiny, tmp_path, damage, field, reason
):
  root = _lsp_copy(synthetic_tiny, tmp_path)
  damage(root)
  manifest = _convert("lsp", root, tmp_path / "out", "--max_rejected_fraction=0.2")
  rows = [
    json.loads(line) for line in (tmp_path / "out/lsp.dead_letter.jsonl").read_text().splitlines()
  ]
  assert len(rows) == 1 and rows[0]["field"] == field and reason in rows[0]["reason"]
  assert rows[0]["record"] == "image 3"
  assert sum(s["records"] for s in manifest["splits"].values()) == 7


def test_non_finite_coordinates_and_path_escapes_are_dead_letters(synthetic_tiny, tmp_path):
  root = tmp_path / "mpii"
  shutil.copytree(synthetic_tiny / "mpii", root)
  # The .mat moved next to images/, as users often do: read there too.
  path = root / "mpii_human_pose_v1_u12_1.mat"
  (root / "mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat").rename(path)
  mat = scipy.io.loadmat(path)
  release = mat["RELEASE"]
  release[0, 0]["annolist"][0, 0]["image"][0, 0]["name"] = np.array(["../../etc/passwd"])
  point = release[0, 0]["annolist"][0, 3]["annorect"][0, 0]["annopoints"][0, 0]["point"][0, 0]
  point["x"] = np.array([[np.nan]])
  scipy.io.savemat(path, mat)
  manifest = _convert("mpii", root, tmp_path / "out", "--max_rejected_fraction=0.5")
  rows = [
    json.loads(line) for line in (tmp_path / "out/mpii.dead_letter.jsonl").read_text().splitlines()
  ]
  reasons = sorted((r["record"], r["field"], r["reason"]) for r in rows)
  assert reasons == [
    ("annolist(1)", "path", "path 'images/../../etc/passwd' leaves the dataset root"),
    ("annolist(4).annorect(1)", "annopoints", "non-finite coordinates"),
  ]
  assert manifest["rejected"]["total"] == 2


def test_a_corrupt_video_and_a_broken_mat_are_dead_letters(synthetic_tiny, tmp_path):
  root = tmp_path / "mpi_inf_3dhp"
  shutil.copytree(synthetic_tiny / "mpi_inf_3dhp", root)
  (root / "S1/Seq1/imageSequence/video_2.avi").write_bytes(b"\0" * 4096)
  manifest = _convert("mpi_inf_3dhp", root, tmp_path / "out", "--max_rejected_fraction=0.5")
  rows = [
    json.loads(line)
    for line in (tmp_path / "out/mpi_inf_3dhp.dead_letter.jsonl").read_text().splitlines()
  ]
  assert [(r["file"], r["field"], r["reason"], r["records"]) for r in rows] == [
    ("S1/Seq1/imageSequence/video_2.avi", "video", "cannot open video", 8)  # all its frames
  ]
  train = manifest["splits"]["train"]
  assert (train["records"], train["expected"], train["rejected"]) == (8, 16, 8)
  annot = scipy.io.loadmat(root / "S1/Seq1/annot.mat")
  del annot["univ_annot3"]
  scipy.io.savemat(root / "S1/Seq1/annot.mat", annot)
  # The sequence's records, counted from the video headers: video_0's 8 (video_2 is zeroed).
  with pytest.raises(RuntimeError, match="8 of 8 records rejected, over the budget"):
    _convert("mpi_inf_3dhp", root, tmp_path / "out2")
  rows = [
    json.loads(line)
    for line in (tmp_path / "out2/mpi_inf_3dhp.dead_letter.jsonl").read_text().splitlines()
  ]
  assert [(r["file"], r["field"], r["reason"]) for r in rows] == [
    ("S1/Seq1/annot.mat", "univ_annot3", "missing field")
  ]
  assert not (tmp_path / "out2/mpi_inf_3dhp.manifest.json").exists()


def test_wrong_shapes_are_dead_letters_that_fail_the_budget(synthetic_tiny, tmp_path):
  root = _lsp_copy(synthetic_tiny, tmp_path)
  joints = scipy.io.loadmat(root / "joints.mat")["joints"]
  scipy.io.savemat(
    root / "joints.mat", {"joints": joints.transpose(1, 0, 2)}
  )  # 14 x 3 x N: LSPET's layout
  with pytest.raises(RuntimeError, match="8 of 8 records rejected"):  # one per image in images/
    _convert("lsp", root, tmp_path / "out")
  [row] = [
    json.loads(line) for line in (tmp_path / "out/lsp.dead_letter.jsonl").read_text().splitlines()
  ]
  assert row["field"] == "joints" and "expected (3, 14) x N" in row["reason"]
  assert row["records"] == 8


# ------------------------------------------------------------ determinism and re-runs


@pytest.mark.slow
def test_two_runs_give_byte_identical_output_and_reruns_leave_no_stale_shards(
  synthetic_tiny, tmp_path
):
  for run in ("a", "b"):
    _convert("h36m", synthetic_tiny / "h36m", tmp_path / run, "--num_shards=3")
  # <output_dir>/<dataset>/ for the shards; the manifest and the dead letters in the root.
  root = ["h36m", "h36m.dead_letter.jsonl", "h36m.manifest.json"]
  assert sorted(p.name for p in (tmp_path / "a").iterdir()) == root
  names = sorted(p.name for p in (tmp_path / "a/h36m").iterdir())
  assert names == sorted(p.name for p in (tmp_path / "b/h36m").iterdir())
  assert "h36m-train.tfrecord-00002-of-00003" in names and "dataset_info.json" in names
  for name in names:
    assert filecmp.cmp(tmp_path / "a/h36m" / name, tmp_path / "b/h36m" / name, shallow=False), name
  _convert("h36m", synthetic_tiny / "h36m", tmp_path / "a", "--num_shards=2")
  shards = sorted(p.name for p in (tmp_path / "a/h36m").glob("h36m-*.tfrecord-*"))
  assert shards == [
    "h36m-test.tfrecord-00000-of-00002",
    "h36m-test.tfrecord-00001-of-00002",
    "h36m-train.tfrecord-00000-of-00002",
    "h36m-train.tfrecord-00001-of-00002",
  ]


# SHA-256 of one-letter keys, first 15 hex digits (sha256("a") = ca978112ca1bbdcafac231b3...):
# a ca978112ca1bbdc, b 3e23e8160039594, c 2e7d2c03a9507ae, d 18ac3e7343f0168, e 3f79bb7b435b053.


def test_a_keys_shard_is_its_hash_modulo_the_shard_count():
  assert [sharding.shard_of(k, 7) for k in "abcde"] == [4, 2, 4, 6, 1]
  assert [sharding.shard_of(k, 3) for k in "abcde"] == [0, 0, 0, 2, 0]
  for key in (f"h36m/S1/Walking 1/54138969/{i:06d}" for i in range(50)):
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    assert sharding.shard_of(key, 7) == int(digest[:15], 16) % 7


def test_records_in_a_shard_are_ordered_by_key_hash(tmp_path):
  path = str(tmp_path / "one.tfrecord")
  info = sharding.write_shard(path, [(k, k.encode()) for k in "abcde"])
  assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == [b"d", b"c", b"b", b"e", b"a"]
  content = pathlib.Path(path).read_bytes()
  assert info == {
    "file": "one.tfrecord",
    "records": 5,
    "sha256": hashlib.sha256(content).hexdigest(),
  }
  sharding.write_shard(path, [(k, k.encode()) for k in "ebadc"])  # any arrival order
  assert pathlib.Path(path).read_bytes() == content
  assert not (tmp_path / "one.tfrecord.incomplete").exists()
  with pytest.raises(ValueError, match="duplicate record key 'k1'"):
    sharding.write_shard(str(tmp_path / "dup.tfrecord"), [("k1", b"a"), ("k1", b"b")])
