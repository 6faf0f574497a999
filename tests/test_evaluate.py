"""Evaluation as the paper does it.

Golden values through the whole record -> crop -> camera path.
"""

import json
import re
import shutil
import subprocess
import sys

from conftest import NATIVE_FOLDERS, convert_dataset, record_ends
import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import evaluate, export, geometry, inference, preprocess, shards, skeletons

WRIST = skeletons.POSE3D.joints.index("l_wrist")


def _run(data_dir, offset_mm, tmp_path, dataset="mpi_inf_3dhp_test"):
  """Evaluates a stand-in predictor.

  It predicts the ground truth (moved by ``offset_mm`` in the camera frame) in the crop frame.
  """
  offset = np.zeros((17, 3))
  offset[WRIST, 0] = offset_mm
  key = "joints3d_univ_camera" if dataset == "mpi_inf_3dhp_test" else "joints3d_camera"

  def predict(batch):
    rotation = batch[preprocess.CAMERA_FROM_VIRTUAL].numpy()
    return geometry.camera_to_virtual(batch[key].numpy() + offset, rotation)

  arrays = evaluate.collect(evaluate.test_batches(str(data_dir), dataset, 64, 8), predict)
  report = evaluate.report_for(dataset, arrays)
  return evaluate.write_outputs(report, arrays, str(tmp_path), {"dataset": dataset}), arrays


def test_ground_truth_scores_zero_mm_and_full_pck(converted_tiny, tmp_path):
  data_dir, manifests = converted_tiny
  results, arrays = _run(data_dir, 0.0, tmp_path)
  assert results["frames"] == manifests["mpi_inf_3dhp_test"]["splits"]["test"]["records"]
  for protocol in ("unscaled", "scaled", "procrustes"):
    for subset, row in results["protocols"][protocol]["subsets"].items():
      if row["frames"]:
        assert row["pck"] == 100.0 and row["mpjpe"] == pytest.approx(0.0, abs=1e-6), (
          protocol,
          subset,
        )
        # PCK counts errors strictly below each threshold, so the 0 mm threshold scores 0:
        # AUC = 30/31.
        assert row["auc"] == pytest.approx(100 * 30 / 31)
  for name in ("results.json", "results.md", "pck_curve.png", "predictions.npz"):
    assert (tmp_path / name).stat().st_size > 0
  # The univ ground truth differs from annot3 (a different scale), so the choice matters.
  assert np.abs(arrays["gt_univ"] - arrays["gt_annot3"]).max() > 1.0


def test_a_known_wrist_offset_gives_the_hand_computed_tables(converted_tiny, tmp_path):
  results, arrays = _run(converted_tiny[0], 200.0, tmp_path)
  unscaled = results["protocols"]["unscaled"]
  # 17 joints counted by PCK (group variant A), one of them 200 mm off in every frame.
  expected = {"pck": 100 * 16 / 17, "auc": 100 * 30 / 31 * 16 / 17, "mpjpe": 200 / 17}
  for row in (
    unscaled["subsets"]["All"],
    *unscaled["by_activity"].values(),
    *unscaled["by_sequence"].values(),
  ):
    for name, value in expected.items():
      assert row[name] == pytest.approx(value, abs=1e-6), name
  wrist = unscaled["joint_groups"]["Wrist"]
  assert (wrist["pck"], wrist["mpjpe"]) == (pytest.approx(50.0), pytest.approx(100.0))
  assert wrist["auc"] == pytest.approx(50 * 30 / 31)
  assert unscaled["per_joint_mpjpe"]["l_wrist"] == pytest.approx(200.0)
  assert unscaled["per_joint_mpjpe"]["r_wrist"] == pytest.approx(0.0, abs=1e-6)
  # Scene columns hold what the sequences give: synthetic TS1/TS2 are GS, TS5/TS6 outdoor.
  sequences = set(arrays["sequence"])
  assert (unscaled["subsets"]["GS"]["frames"] > 0) == bool(sequences & {"TS1", "TS2"})
  markdown = (tmp_path / "results.md").read_text()
  assert "| unscaled |" in markdown and "| Wrist | 50.0 | 48.4 | 100.0 |" in markdown


def test_h36m_per_action_tables(converted_tiny, tmp_path):
  results, arrays = _run(converted_tiny[0], 200.0, tmp_path, dataset="h36m")
  actions = results["protocols"]["unscaled"]["by_action"]
  assert set(actions) == set(arrays["action"]) and len(actions) >= 2
  for row in actions.values():
    assert row["mpjpe"] == pytest.approx(200 / 17)
  assert set(arrays["subject"]) <= {"S9", "S11"}


def test_checkpoint_and_saved_model_evaluate_alike(converted_tiny, tiny_checkpoint, tiny_export):
  data_dir = str(converted_tiny[0])
  poses = {}
  for source, flip in (
    ("checkpoint", False),
    ("saved_model", False),
    ("checkpoint", True),
    ("saved_model", True),
  ):
    kwargs = (
      {"checkpoint": str(tiny_checkpoint[0]), "saved_model": None}
      if source == "checkpoint"
      else {"checkpoint": None, "saved_model": str(tiny_export)}
    )
    size, predict = evaluate.crop_predictor(**kwargs, flip=flip)
    assert size == 64
    arrays = evaluate.collect(
      evaluate.test_batches(data_dir, "mpi_inf_3dhp_test", size, 8, max_examples=10),
      lambda batch, predict=predict: predict(batch[preprocess.IMAGE]),
    )
    poses[source, flip] = arrays["pred"]
  np.testing.assert_allclose(poses["checkpoint", False], poses["saved_model", False], atol=1e-3)
  np.testing.assert_allclose(poses["checkpoint", True], poses["saved_model", True], atol=1e-3)
  assert np.abs(poses["checkpoint", True] - poses["checkpoint", False]).max() > 1e-3


def test_unusable_model_dirs_are_refused_by_name(tmp_path, tiny_checkpoint):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no config.json"):
    inference.load_network(str(tmp_path))
  (tmp_path / "config.json").write_text((tiny_checkpoint[0] / "config.json").read_text())
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no checkpoint"):
    inference.load_network(str(tmp_path))
  other = json.loads((tiny_checkpoint[0] / "config.json").read_text())
  other["model"]["input_size"] = 128  # a checkpoint of another network (its Dense shapes)
  mismatched = tmp_path / "mismatched"
  mismatched.mkdir()
  for f in tiny_checkpoint[0].glob("*ckpt*"):
    (mismatched / f.name).write_bytes(f.read_bytes())
  (mismatched / "checkpoint").write_text((tiny_checkpoint[0] / "checkpoint").read_text())
  (mismatched / "config.json").write_text(json.dumps(other))
  with pytest.raises(ValueError):
    inference.load_network(str(mismatched))


@pytest.mark.slow
def test_evaluate_and_export_clis(converted_tiny, tiny_checkpoint, tmp_path):
  out = tmp_path / "eval"
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "wild3d_tf.evaluate",
      f"--checkpoint={tiny_checkpoint[0]}",
      f"--data_dir={converted_tiny[0]}",
      "--dataset=h36m",
      f"--output_dir={out}",
    ],
    capture_output=True,
    text=True,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  assert (
    results["dataset"] == "h36m"
    and results["frames"] > 0
    and "by_action" in results["protocols"]["procrustes"]
  )
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "wild3d_tf.export",
      f"--checkpoint={tiny_checkpoint[0]}",
      f"--export_dir={tmp_path / 'export'}",
      "--version=5",
    ],
    capture_output=True,
    text=True,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  assert (tmp_path / "export" / "wild3d" / "5" / "saved_model.pb").is_file()
  assert (tmp_path / "export" / "wild3d" / "5" / "assets.extra" / export.WARMUP_FILE).is_file()


@pytest.mark.slow
def test_main_job_end_to_end_with_a_small_budget(tmp_path):
  """The twin of `make demo`: every stage, with 20 training steps per stage."""
  out = tmp_path / "demo"
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "wild3d_tf.demo",
      f"--output_dir={out}",
      "--pretrain_steps=20",
      "--full_steps=20",
    ],
    capture_output=True,
    text=True,
  )
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  for stage in range(1, 9):
    assert f"== {stage}/8" in run.stdout
  assert json.loads((out / "evaluation" / "results.json").read_text())["frames"] > 0
  assert (out / "export" / "wild3d" / "1" / "saved_model.pb").is_file()
  assert (out / "predictions" / "astronaut.json").is_file() and (
    out / "predictions" / "astronaut.png"
  ).is_file()
  assert len(list((out / "predictions").glob("img_*.json"))) == 1
  assert (out / "runs" / "full" / "checkpoint").is_file()


# --------------------------------------------------------------------------- the frames scored

TEST_SET = "mpi_inf_3dhp_test"


def _copy_test_set(folder, to):
  """A copy of the converted 3DHP test set (manifest and shards) to damage; its first shard."""
  shutil.copytree(folder / TEST_SET, to / TEST_SET)  # its shard folder: <root>/<dataset>/
  shutil.copy(shards.manifest_path(str(folder), TEST_SET), to)  # and its manifest, in the root
  return shards.shard_files(str(to), TEST_SET, "test")[0]


def _zeros(batch):
  return np.zeros((len(batch[preprocess.IMAGE]), 17, 3))


def test_a_short_or_damaged_test_set_is_an_error_not_a_smaller_table(converted_tiny, tmp_path):
  shard = _copy_test_set(converted_tiny[0], tmp_path / "short")
  data_dir = str(tmp_path / "short")
  blob = open(shard, "rb").read()
  ends = record_ends(blob)
  listed = shards.listed_records([shard])[0]
  assert len(ends) == listed >= 2
  with open(shard, "wb") as f:
    f.write(blob[: ends[-2]])  # one record fewer, cut at a record boundary
  # Evaluation checks digests by default: the cut shard is refused before anything is scored.
  with pytest.raises(ValueError, match=f"{shard.rsplit('/', 1)[1]}: SHA-256"):
    evaluate.test_batches(data_dir, TEST_SET, 64, 8)
  # Without digests the record count still catches it, naming the shard and both counts.
  message = re.escape(f"{shard}: {listed - 1} records read, its manifest lists {listed}")
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    evaluate.collect(evaluate.test_batches(data_dir, TEST_SET, 64, 8, verify_digests=False), _zeros)
  damaged = bytearray(blob)
  damaged[ends[0] + 12 + 40] ^= 0x01  # record 1's payload: its CRC fails
  with open(shard, "wb") as f:
    f.write(bytes(damaged))
  message = re.escape(f"{shard}: 1 records read, its manifest lists {listed}: record 1 (0-based)")
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    evaluate.collect(evaluate.test_batches(data_dir, TEST_SET, 64, 8, verify_digests=False), _zeros)


def test_a_novalid_only_test_set_is_scored_over_its_valid_frames(
  synthetic_tiny, converted_tiny, tmp_path
):
  out = tmp_path / "all_frames"
  manifest = convert_dataset(
    TEST_SET, synthetic_tiny / NATIVE_FOLDERS[TEST_SET], out, "--novalid_only"
  )
  read = manifest["splits"]["test"]["records"]
  valid = converted_tiny[1][TEST_SET]["splits"]["test"]["records"]  # the default: valid only
  assert read > valid > 0

  def predict(batch):  # the ground truth, but the left wrist 1 m off in the invalid frames
    offset = np.zeros((len(batch[evaluate.VALID]), 17, 3))
    offset[~batch[evaluate.VALID].numpy(), WRIST, 0] = 1000.0
    pose = batch["joints3d_univ_camera"].numpy() + offset
    return geometry.camera_to_virtual(pose, batch[preprocess.CAMERA_FROM_VIRTUAL].numpy())

  arrays = evaluate.collect(evaluate.test_batches(str(out), TEST_SET, 64, 8), predict)
  assert len(arrays["pred"]) == read and int(arrays[evaluate.VALID].sum()) == valid
  results = evaluate.write_outputs(
    evaluate.report_for(TEST_SET, arrays), arrays, str(tmp_path / "eval"), {"dataset": TEST_SET}
  )
  on_disk = json.loads((tmp_path / "eval" / "results.json").read_text())
  for numbers in (results, on_disk):
    assert numbers["frames"] == valid and numbers["frames_read"] == read
    assert numbers["frames_skipped_invalid"] == read - valid
    row = numbers["protocols"]["unscaled"]["subsets"]["All"]
    assert row["frames"] == valid and row["mpjpe"] == pytest.approx(0.0, abs=1e-6)
  assert (
    f"{valid} poses scored ({read - valid} invalid frames skipped)"
    in (tmp_path / "eval" / "results.md").read_text()
  )


def test_h36m_reports_the_pooled_and_the_per_action_average():
  """Left wrist 10 mm off in action A's frame, 30 mm in B's three: MPJPE pooled over frames
  (10 + 90) / 4 / 17 mm, mean of the per-action values (10 + 30) / 2 / 17 mm; a fifth, invalid
  frame 1 m off is not scored."""
  poses = np.zeros((5, 17, 3))
  pred = poses.copy()
  pred[:, WRIST, 0] = [10.0, 30.0, 30.0, 30.0, 1000.0]
  arrays = {
    "pred": pred,
    "gt_annot3": poses,
    "gt_univ": poses,
    evaluate.VALID: np.array([True, True, True, True, False]),
    "action": np.array(["A", "B", "B", "B", "B"]),
    "subject": np.array(["S9"] * 5),
  }
  results = evaluate.report_for("h36m", arrays).to_json()
  unscaled = results["protocols"]["unscaled"]
  assert unscaled["subsets"]["All"]["mpjpe"] == pytest.approx(25.0 / 17)
  assert unscaled["mean_over_action"]["mpjpe"] == pytest.approx(20.0 / 17)
  assert unscaled["by_action"]["B"]["frames"] == 3
  assert set(results["averages"]) == {"subsets", "mean_over_action"}
  arrays[evaluate.VALID][:] = False
  with pytest.raises(ValueError, match="none of the 5 test frames read is valid"):
    evaluate.report_for("h36m", arrays)
