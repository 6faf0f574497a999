"""Beam conversion: readers on their own, end to end on the synthetic data, dead letters, determinism."""

import filecmp
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
from beam_preprocess.records import BadRecord, Options
from wild3d_tf import geometry, schema, skeletons


def _records(output_dir, dataset, split):
  files = sorted(pathlib.Path(output_dir).glob(f"{dataset}-{split}.tfrecord-*"))
  return [schema.decode_numpy(r.numpy()) for f in files for r in tf.data.TFRecordDataset(str(f))]


@pytest.fixture(scope="module")
def converted(converted_tiny):
  return converted_tiny


# ------------------------------------------------------------ readers on their own


@pytest.mark.parametrize("dataset", sorted(INPUTS))
def test_each_reader_in_a_test_pipeline(dataset, synthetic_tiny):
  root = synthetic_tiny / INPUTS[dataset]
  items, bad = transforms.READERS[dataset][0](root, Options(test_frame_stride=64))
  assert items and not bad
  # The keys the reader should produce, computed without Beam.
  expected = []
  for item in items:
    for raw in transforms.READERS[dataset][1](root, item, Options(test_frame_stride=64)):
      expected.append(transforms.READERS[dataset][2](raw)["key"])
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
  assert len(set(expected)) == len(expected)


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
  np.testing.assert_array_equal(record["joints2d"][0], [10.0, 20.0])
  assert record["visible"][:13].all() and not record["visible"][13] and record["split"] == "train"
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
  assert (
    not lspet["labelled"][0] and np.isnan(lspet["joints2d"][0]).all() and lspet["visible"][1:].all()
  )


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
    back = geometry.apply_affine(record["joints2d"], np.linalg.inv(record["crop/from_image"]))
    np.testing.assert_allclose(
      back, skeletons.convert(d2, skeletons.H36M_32, skeletons.POSE2D), atol=1e-3
    )
    np.testing.assert_array_equal(
      record["joints3d"],
      skeletons.convert(mono.reshape(32, 3), skeletons.H36M_32, skeletons.POSE3D),
    )
    assert record["has_3d"] == 1 and record["camera/has_intrinsics"] == 1
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
    back = geometry.apply_affine(record["joints2d"], np.linalg.inv(record["crop/from_image"]))
    np.testing.assert_allclose(
      back, skeletons.convert(native2, skeletons.MPI_INF_3DHP_28, skeletons.POSE2D), atol=1e-3
    )
    np.testing.assert_array_equal(
      record["joints3d"], skeletons.convert(native3, skeletons.MPI_INF_3DHP_28, skeletons.POSE3D)
    )
    assert record["has_mask"] == 1
    mask = tf.io.decode_png(record["mask/encoded"]).numpy()[..., 0]
    pelvis = np.round(record["joints2d"][skeletons.POSE2D.index("r_hip")]).astype(int)
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
      record["joints3d"],
      skeletons.convert(annot3[record["frame"]], skeletons.MPI_INF_3DHP_17, skeletons.POSE3D),
    )
    projected = geometry.apply_affine(
      (record["joints3d"] / record["joints3d"][:, 2:])[:, :2]
      @ record["camera/intrinsics"][:2, :2].T
      + record["camera/intrinsics"][:2, 2],
      record["crop/from_image"],
    )
    np.testing.assert_allclose(
      skeletons.convert(projected, skeletons.POSE3D, skeletons.POSE2D),
      record["joints2d"],
      atol=1e-3,
    )


def test_2d_records_give_back_the_native_annotations(converted, synthetic_tiny):
  out, manifests = converted
  lsp_joints = scipy.io.loadmat(synthetic_tiny / "lsp/joints.mat")["joints"]
  records = _records(out, "lsp", "train") + _records(out, "lsp", "test")
  assert len(records) == 8 and {r["split"] for r in records} == {"train", "test"}
  for record in records:
    native = lsp_joints[:2, :, record["frame"]].T - 1.0
    back = geometry.apply_affine(record["joints2d"], np.linalg.inv(record["crop/from_image"]))
    np.testing.assert_allclose(back, native, atol=1e-3)
    np.testing.assert_array_equal(
      record["joints2d/visible"], lsp_joints[2, :, record["frame"]] == 0
    )
    assert record["has_3d"] == 0 and record["camera/has_intrinsics"] == 0
  release = scipy.io.loadmat(
    synthetic_tiny / "mpii/mpii_human_pose_v1_u12_1.mat", struct_as_record=False, squeeze_me=True
  )["RELEASE"]
  for record in _records(out, "mpii", "train"):
    rect = np.atleast_1d(release.annolist[record["frame"]].annorect)[
      int(record["key"].rsplit("/", 1)[1])
    ]
    back = geometry.apply_affine(record["joints2d"], np.linalg.inv(record["crop/from_image"]))
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
      assert sum(1 for _ in tf.data.TFRecordDataset(str(out / shard["file"]))) == shard["records"]
      import hashlib

      assert hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
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
  path = root / "mpii_human_pose_v1_u12_1.mat"
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
  assert [(r["file"], r["field"], r["reason"]) for r in rows] == [
    ("S1/Seq1/imageSequence/video_2.avi", "video", "cannot open video")
  ]
  assert manifest["splits"]["train"]["records"] == 8
  annot = scipy.io.loadmat(root / "S1/Seq1/annot.mat")
  del annot["univ_annot3"]
  scipy.io.savemat(root / "S1/Seq1/annot.mat", annot)
  with pytest.raises(RuntimeError, match="1 of 1 records rejected, over the budget"):
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
  with pytest.raises(RuntimeError, match="1 of 1 records rejected"):
    _convert("lsp", root, tmp_path / "out")
  [row] = [
    json.loads(line) for line in (tmp_path / "out/lsp.dead_letter.jsonl").read_text().splitlines()
  ]
  assert row["field"] == "joints" and "expected (3, 14) x N" in row["reason"]


# ------------------------------------------------------------ determinism and re-runs


@pytest.mark.slow
def test_two_runs_give_byte_identical_output_and_reruns_leave_no_stale_shards(
  synthetic_tiny, tmp_path
):
  for run in ("a", "b"):
    _convert("h36m", synthetic_tiny / "h36m", tmp_path / run, "--num_shards=3")
  names = sorted(p.name for p in (tmp_path / "a").iterdir())
  assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
  assert "h36m-train.tfrecord-00002-of-00003" in names
  for name in names:
    assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name
  _convert("h36m", synthetic_tiny / "h36m", tmp_path / "a", "--num_shards=2")
  shards = sorted(p.name for p in (tmp_path / "a").glob("h36m-*.tfrecord-*"))
  assert shards == [
    "h36m-test.tfrecord-00000-of-00002",
    "h36m-test.tfrecord-00001-of-00002",
    "h36m-train.tfrecord-00000-of-00002",
    "h36m-train.tfrecord-00001-of-00002",
  ]


def test_shard_assignment_depends_only_on_keys():
  keys = [f"k{i}" for i in range(100)]
  assert [sharding.shard_of(k, 7) for k in keys] == [
    sharding.shard_of(k, 7) for k in reversed(keys)
  ][::-1]
  assert len({sharding.shard_of(k, 7) for k in keys}) == 7
  with pytest.raises(ValueError, match="duplicate record key 'k1'"):
    sharding.write_shard("/tmp/wild3d_dup.tfrecord", [("k1", b"a"), ("k1", b"b")])
