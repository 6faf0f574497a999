"""Evaluation as the paper does it: golden values through the whole record -> crop -> camera path."""

import json
import subprocess
import sys

import numpy as np
import pytest

from wild3d_tf import evaluate, export, geometry, inference, skeletons

WRIST = skeletons.POSE3D.joints.index("l_wrist")


def _run(data_dir, offset_mm, tmp_path, dataset="mpi_inf_3dhp_test"):
  """Evaluates a stand-in predictor: the ground truth (moved by ``offset_mm`` in the camera frame) in the crop frame."""
  offset = np.zeros((17, 3))
  offset[WRIST, 0] = offset_mm
  key = "joints3d_univ_camera" if dataset == "mpi_inf_3dhp_test" else "joints3d_camera"

  def predict(batch):
    return geometry.camera_to_virtual(batch[key].numpy() + offset, batch["crop_rotation"].numpy())

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
        # PCK counts errors strictly below each threshold, so the 0 mm threshold scores 0: AUC = 30/31.
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
      lambda batch: predict(batch["image"]),
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
  other["model"]["latent_size"] = 96  # a checkpoint of another network
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
