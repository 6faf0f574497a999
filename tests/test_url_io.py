"""Training, evaluation, export, prediction and lifting read and write URLs through tf.io.gfile.

TF's in-memory ``ram://`` filesystem stands in for ``gs://`` (TF's gs:// client takes the same
tf.io.gfile paths and cannot be pointed at a local emulator): the converted shards are copied
there, and every folder a run writes (model_dir, export_dir, evaluation and prediction output,
the lifter) is a ram:// URL. Each result must equal the same step run on local folders.
"""

import dataclasses
import json
import os
import pathlib

from conftest import tiny_run_config, upload_tree
import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import (
  checkpoints,
  config,
  evaluate,
  export,
  image_guard,
  inference,
  lifting,
  losses,
  predict,
  storage,
  train,
)
from wild3d_tf.losses import LossWeights
from wild3d_tf.trainer import CALIBRATION_FILE

# One worker runs the module (make test's --dist loadgroup): its `runs` fixture trains three
# times, and under plain --dist load both workers built it.
pytestmark = pytest.mark.xdist_group("url_io")

PHOTO = pathlib.Path(__file__).resolve().parents[1] / "wild3d_tf/demo_data/astronaut.png"
ROOT = "ram://wild3d_url_io"


def _weights(prefix: str) -> dict:
  reader = tf.compat.v1.train.NewCheckpointReader(prefix)  # (load_checkpoint: see checkpoints)
  return {
    name: reader.get_tensor(name)
    for name in reader.get_variable_to_shape_map()
    # values only: not the object graph (its Python-side names count objects of the process)
    if not any(part in name for part in ("save_counter", "iterator", "_CHECKPOINTABLE_OBJECT"))
  }


def _scalars(model_dir: str) -> dict:
  """{tag: [(step, value)]} of a run's TensorBoard scalars, read through tf.io.gfile."""
  found = {}
  for path in sorted(tf.io.gfile.glob(storage.join(model_dir, "train", "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        found.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
  return found


def _run_config(model_dir, data_dir, steps):
  rc = dataclasses.replace(
    tiny_run_config(model_dir, data_dir=data_dir, log_every=1, checkpoint_every=2),
    deterministic=True,
    image_summaries_every=0,
    calibrate_loss_weights=True,
    calibration_batches=2,
    gradient_norms_every=2,
  )
  return dataclasses.replace(rc, loop=dataclasses.replace(rc.loop, max_steps=steps))


@pytest.fixture(scope="module")
def runs(converted_tiny, tmp_path_factory):
  """(local data_dir, ram:// data_dir, local model_dir, ram:// model_dir, the resumed run's
  train.run result): the same tiny run, its loss weights calibrated and its gradient norms
  logged, trained on each; the ram:// one stopped after 2 steps and resumed to 3."""
  folder, manifests = converted_tiny
  data_url = f"{ROOT}/records"
  shards = sum(len(split["shards"]) for m in manifests.values() for split in m["splits"].values())
  # and per dataset its manifest, dead letters and TFDS's dataset_info.json and features.json
  assert upload_tree(folder, data_url) == shards + 4 * len(manifests)
  local_run = tmp_path_factory.mktemp("url_io") / "run"
  url_run = f"{ROOT}/runs/full"
  train.run(_run_config(str(local_run), str(folder), 3), flags_text="--flags\n")
  first = train.run(_run_config(url_run, data_url, 2), flags_text="--flags\n")
  assert first["step"] == 2
  resumed = train.run(_run_config(url_run, data_url, 3), flags_text="--flags\n")
  assert resumed["step"] == 3  # resumed from ram://.../ckpt-2, not started again
  return str(folder), data_url, str(local_run), url_run, resumed


def test_training_under_a_url_writes_and_resumes_what_a_local_run_does(runs):
  _, _, local_run, url_run, _ = runs
  url_prefix = checkpoints.find_latest_complete(url_run)
  local_prefix = checkpoints.find_latest_complete(local_run)
  assert url_prefix == f"{url_run}/ckpt-3" and local_prefix.endswith("/ckpt-3")
  assert tf.io.gfile.exists(f"{url_run}/ckpt-2.index")  # the checkpoint it resumed from
  url_weights, local_weights = _weights(url_prefix), _weights(local_prefix)
  assert url_weights.keys() == local_weights.keys() and any("optimizer" in k for k in url_weights)
  for name in local_weights:  # deterministic ops, same seed, same batches: bit for bit
    np.testing.assert_array_equal(url_weights[name], local_weights[name], err_msg=name)
  # config.json (calibrated weights), flags.txt and loss_calibration.json, read back from ram://.
  assert config.load(url_run).loss == config.load(local_run).loss
  assert config.load(url_run).data.data_dir == f"{ROOT}/records"
  assert storage.read_text(f"{url_run}/{train.FLAGS_FILE}") == "--flags\n"
  url_report = json.loads(storage.read_text(f"{url_run}/{CALIBRATION_FILE}"))
  local_report = json.loads(pathlib.Path(local_run, CALIBRATION_FILE).read_text())
  assert url_report == local_report and url_report["batches"] == 2
  # TensorBoard: every scalar the local run logged, at the same steps with the same values.
  url_scalars, local_scalars = _scalars(url_run), _scalars(local_run)
  losses_logged = [tag for tag in local_scalars if tag.startswith("loss/")]
  assert losses_logged and [s for s, _ in local_scalars[losses_logged[0]]] == [1, 2, 3]
  for tag, values in local_scalars.items():
    if tag in ("train/steps_per_second", "train/input_wait_fraction"):
      continue  # wall-clock measures
    assert url_scalars[tag] == values, tag
  assert not tf.io.gfile.exists(f"{url_run}/{checkpoints.LOCK_FILE}")  # released


def test_a_calibrated_run_logs_saves_and_resumes_with_its_weights(runs):
  # The ram:// run: calibrated over 2 batches at its start, stopped at step 2, resumed to 3 with
  # the flags of the start (the paper's weights). That the resume did not measure again is the
  # bitwise equality with the uninterrupted local run above (other batches, other weights).
  _, _, _, url_run, resumed = runs
  saved = config.load(url_run)
  report = json.loads(storage.read_text(f"{url_run}/{CALIBRATION_FILE}"))
  assert saved.calibrate_loss_weights and report["batches"] == 2
  assert saved.loss != LossWeights()
  for name, row in report["terms"].items():
    assert row["weight_before"] == getattr(LossWeights(), name)
    assert row["weight_after"] == getattr(saved.loss, name)
  events = _scalars(url_run)
  # Logged at step 2 from steps 1 and 2 (a 3D and a 2D-only batch): every term is seen.
  for name in ("pose3d", "bone_2d", "projection"):
    assert [step for step, _ in events[f"gradient_norm/{name}"]] == [2], name
    assert events[f"gradient_norm/{name}"][0][1] > 0 and f"weighted_loss/{name}" in events
    assert f"gradient_norm_heads/{name}" in events
  # config.json's weights trained after the resume: the loss at its logged step is the sum of
  # the calibrated weighted terms.
  weighted = sum(getattr(saved.loss, t.name) * resumed[t.name] for t in losses.TERMS)
  paper = sum(getattr(LossWeights(), t.name) * resumed[t.name] for t in losses.TERMS)
  assert resumed["loss"] == pytest.approx(weighted, rel=1e-5)
  assert abs(paper - weighted) > 1e-3 * weighted


def test_evaluation_reads_and_writes_urls_with_the_local_numbers(runs):
  local_data, data_url, local_run, url_run, _ = runs
  results = {}
  for name, data_dir, model_dir, out in (
    ("local", local_data, local_run, os.path.join(os.path.dirname(local_run), "evaluation")),
    ("url", data_url, url_run, f"{ROOT}/evaluation"),
  ):
    size, predict_crops = evaluate.crop_predictor(model_dir, None, flip=False)
    batches = evaluate.test_batches(data_dir, "mpi_inf_3dhp_test", size, 4)
    arrays = evaluate.collect(batches, lambda batch, p=predict_crops: p(batch["image"]))
    report = evaluate.report_for("mpi_inf_3dhp_test", arrays)
    evaluate.write_outputs(report, arrays, out, {"dataset": "mpi_inf_3dhp_test"})
    results[name] = json.loads(storage.read_text(storage.join(out, "results.json")))
    with tf.io.gfile.GFile(storage.join(out, "predictions.npz"), "rb") as f:
      assert np.load(f)["pred"].shape == (results[name]["frames_read"], 17, 3)
    assert tf.io.gfile.stat(storage.join(out, "pck_curve.png")).length > 1000
    assert storage.read_text(storage.join(out, "results.md")).startswith("# mpi_inf_3dhp_test")
  assert results["url"]["frames"] > 0
  assert results["url"] == results["local"]


def test_export_and_prediction_write_urls(runs, tmp_path):
  _, _, local_run, url_run, _ = runs
  network = inference.load_network(url_run)
  version = export.export_saved_model(network, f"{ROOT}/export")
  assert version == f"{ROOT}/export/wild3d/1"
  assert export.next_version(f"{ROOT}/export/wild3d") == 2
  assert not [n for n in tf.io.gfile.listdir(f"{ROOT}/export/wild3d") if "staging" in n]
  meta = json.loads(storage.read_text(f"{version}/assets.extra/wild3d.json"))
  assert meta["input_size"] == 64
  signature = tf.saved_model.load(version).signatures["serving_default"]
  zeros = np.zeros(4, np.float32)
  local_out, url_out = str(tmp_path / "predictions"), f"{ROOT}/predictions"
  for out in (local_out, url_out):
    assert not predict.predict_files(
      [str(PHOTO)], signature, image_guard.Limits(), zeros, zeros, out
    )
  url_json = json.loads(storage.read_text(f"{url_out}/astronaut.json"))
  assert url_json == json.loads(pathlib.Path(local_out, "astronaut.json").read_text())
  # The exported network is the trained one: its crops' poses equal the Keras network's.
  crops = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
  served = tf.saved_model.load(version).signatures["serve_crops"]
  eye = np.tile(np.array([[64, 0, 31.5], [0, 64, 31.5], [0, 0, 1]], np.float32), (2, 1, 1))
  keras_pose = inference.Predictor(inference.load_network(local_run)).on_crops(crops)
  np.testing.assert_allclose(
    served(crops=crops, intrinsics=eye)["pose3d_crop"].numpy(),
    keras_pose["pose3d_crop"].numpy(),
    atol=1e-3,
  )


def test_a_lifter_saves_to_and_loads_from_a_url():
  rng = np.random.default_rng(0)
  lifter = lifting.Lifter(
    lifting.build_lifter(width=16),
    {
      "input_size": 64,
      "x_mean": rng.normal(size=28).tolist(),
      "x_std": np.ones(28).tolist(),
      "y_mean": rng.normal(size=48).tolist(),
      "y_std": np.ones(48).tolist(),
    },
  )
  lifter.save(f"{ROOT}/lifter")
  loaded = lifting.Lifter.load(f"{ROOT}/lifter")
  joints = rng.uniform(0, 63, (3, 14, 2)).astype(np.float32)
  np.testing.assert_allclose(loaded(joints).numpy(), lifter(joints).numpy(), atol=1e-6)
  with pytest.raises(FileNotFoundError, match=f"^{ROOT}/nothing: no lifter.keras"):
    lifting.Lifter.load(f"{ROOT}/nothing")
