"""The Martinez-style lifting baseline: standardisation, learning, persistence, evaluation."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from wild3d_tf import evaluate, inference, lifting


def _stats(input_size=64):
  rng = np.random.default_rng(0)
  return {
    "input_size": input_size,
    "x_mean": rng.normal(size=28).astype(np.float32),
    "x_std": rng.uniform(0.5, 2, 28).astype(np.float32),
    "y_mean": rng.normal(0, 100, 48).astype(np.float32),
    "y_std": rng.uniform(10, 200, 48).astype(np.float32),
  }


def test_a_silent_network_answers_the_mean_pose_with_the_root_at_zero():
  network = lifting.build_lifter(width=32)
  last = network.layers[-1]
  last.set_weights([np.zeros_like(w) for w in last.get_weights()])
  stats = _stats()
  pose = np.asarray(
    lifting.Lifter(network, stats)(np.random.default_rng(1).uniform(0, 63, (3, 14, 2)))
  )
  assert pose.shape == (3, 17, 3)
  np.testing.assert_array_equal(pose[:, 0], 0.0)
  np.testing.assert_allclose(
    pose[:, 1:], np.broadcast_to(stats["y_mean"].reshape(16, 3), (3, 16, 3)), rtol=1e-6
  )


def test_crop_pixels_are_centred_on_the_crop():
  centred = lifting.Lifter._centre(np.array([[[0.0, 63.0], [31.5, 31.5]] + [[0.0, 0.0]] * 12]), 64)
  np.testing.assert_allclose(centred[0, :4], [-1.0, 1.0, 0.0, 0.0])


def test_it_learns_depth_that_the_2d_joints_determine():
  # Poses from a two-parameter family whose depth is a fixed function of the 2D pose:
  # a lifter must recover it, the mean pose cannot.
  rng = np.random.default_rng(0)
  mean, basis = rng.normal(0, 300, (17, 3)), rng.normal(0, 150, (2, 17, 3))
  mean[0], basis[:, 0] = 0.0, 0.0

  def sample(n):
    coefficients = rng.uniform(-1, 1, (n, 2))
    poses = mean + np.einsum("nk,kjd->njd", coefficients, basis)
    joints2d = 31.5 + poses[:, :14, :2] / 30.0  # orthographic, into a 64 px crop
    return joints2d.astype(np.float32), poses.astype(np.float32)

  train_2d, train_3d = sample(2000)
  test_2d, test_3d = sample(200)
  lifter = lifting.Lifter.fit(train_2d, train_3d, 64, epochs=30, width=128, verbose=0)
  error = np.linalg.norm(np.asarray(lifter(test_2d)) - test_3d, axis=-1).mean()
  mean_pose_error = np.linalg.norm(train_3d.mean(0) - test_3d, axis=-1).mean()
  assert error < 0.35 * mean_pose_error, (error, mean_pose_error)


def test_saved_lifter_answers_the_same_and_missing_files_are_named(tmp_path):
  lifter = lifting.Lifter(lifting.build_lifter(width=32), _stats())
  joints = np.random.default_rng(2).uniform(0, 63, (4, 14, 2)).astype(np.float32)
  lifter.save(str(tmp_path / "lifter"))
  np.testing.assert_allclose(
    lifting.Lifter.load(str(tmp_path / "lifter"))(joints), lifter(joints), atol=1e-5
  )
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no lifter.keras"):
    lifting.Lifter.load(str(tmp_path))


def test_pairs_come_from_the_3d_sets_and_the_predictor_lifts_the_networks_2d(
  converted_tiny, tiny_checkpoint, tmp_path
):
  data_dir, (model_dir, network) = str(converted_tiny[0]), tiny_checkpoint
  joints2d, joints3d = lifting.training_pairs(data_dir, 64, 20, seed=0, batch_size=8)
  assert joints2d.shape == (20, 14, 2) and joints3d.shape == (20, 17, 3)
  np.testing.assert_allclose(joints3d[:, 0], 0.0, atol=1e-3)  # crop-camera, root-relative targets
  constant = lambda images: np.full((images.shape[0], 14, 2), 5.0, np.float32)
  predicted, _ = lifting.training_pairs(data_dir, 64, 20, seed=0, predict_2d=constant, batch_size=8)
  np.testing.assert_array_equal(predicted, 5.0)

  lifter = lifting.Lifter(lifting.build_lifter(width=32), _stats())
  lifter.save(str(tmp_path / "lifter"))
  size, predict = lifting.crop_predictor(str(model_dir), str(tmp_path / "lifter"), flip=False)
  assert size == 64
  batch = next(iter(evaluate.test_batches(data_dir, "mpi_inf_3dhp_test", size, 4, max_examples=4)))
  joints = inference.Predictor(network).on_crops(keras.ops.cast(batch["image"], "float32"))[
    "joints2d_input"
  ]
  np.testing.assert_allclose(predict(batch["image"]), lifter(joints), atol=1e-3)

  (tmp_path / "other").mkdir()
  bigger = dict(_stats(128))
  lifting.Lifter(lifting.build_lifter(width=32), bigger).save(str(tmp_path / "other"))
  with pytest.raises(ValueError, match="128 px crops"):
    lifting.crop_predictor(str(model_dir), str(tmp_path / "other"), flip=False)


@pytest.mark.slow
def test_lifting_and_evaluate_clis(converted_tiny, tiny_checkpoint, tmp_path):
  data_dir, model_dir = converted_tiny[0], tiny_checkpoint[0]
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "wild3d_tf.lifting",
      f"--checkpoint={model_dir}",
      f"--data_dir={data_dir}",
      f"--output_dir={tmp_path / 'lifter'}",
      "--examples=64",
      "--epochs=2",
      "--width=64",
    ],
    capture_output=True,
    text=True,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "wild3d_tf.evaluate",
      f"--checkpoint={model_dir}",
      f"--lifter={tmp_path / 'lifter'}",
      f"--data_dir={data_dir}",
      f"--output_dir={tmp_path / 'eval'}",
    ],
    capture_output=True,
    text=True,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads((tmp_path / "eval" / "results.json").read_text())
  assert results["lifter"] == str(tmp_path / "lifter") and results["frames"] > 0
  assert np.isfinite(results["protocols"]["procrustes"]["subsets"]["All"]["mpjpe"])
