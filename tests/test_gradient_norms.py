"""Per-term gradient norms (Trainer.measure_terms / term_gradient_norms), loss-weight calibration
(Trainer.calibrated_weights) and what train.py makes of them: TensorBoard scalars, config.json,
loss_calibration.json, and a resume that does not measure again (a calibrated run itself is
trained once for the suite, in tests/test_url_io.py's `runs`)."""

import dataclasses
import itertools

from conftest import tiny_run_config, write_checkpoint
import keras
import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import data, losses, model, preprocess, train
from wild3d_tf.config import DataConfig, ModelConfig
from wild3d_tf.losses import LossWeights
from wild3d_tf.trainer import Trainer


@pytest.fixture(scope="module")
def four_batches(converted_tiny):
  """The first four global batches (8) of the full stage at 64 px: 3D, 2D-only, 3D, 2D-only."""
  folder, _ = converted_tiny
  # Finished in the pipeline: _direct_norm feeds the images to the network itself.
  config = DataConfig(data_dir=str(folder), batch_size=8, shuffle_buffer=16, augment_in_step=False)
  stream = data.training_dataset(
    config, "full", input_size=64, heatmap_size=ModelConfig.tiny(64).heatmap_size
  )
  batches = list(itertools.islice(iter(stream), 4))
  assert [bool(b[preprocess.HAS_3D].numpy().all()) for b in batches] == [True, False] * 2
  return batches


@pytest.fixture(scope="module")
def network():
  keras.utils.set_random_seed(0)
  return model.build_model(ModelConfig.tiny(64))


def _direct_norm(network, batch, weights, term):
  """||d(w_t L_t)/dtheta|| by one plain tape on that term alone."""
  trainer = Trainer(network, weights, 8, 64)
  with tf.GradientTape() as tape:
    outputs = network(batch[preprocess.IMAGE], training=True)
    _, terms = losses.total(outputs, trainer.labels(batch), weights, 8, 64)
    weighted = getattr(weights, term) * terms[term]
  grads = [g for g in tape.gradient(weighted, network.trainable_variables) if g is not None]
  return float(np.sqrt(sum(np.sum(np.square(g.numpy().astype(np.float64))) for g in grads)))


@pytest.mark.xdist_group("gradient_norms")  # one worker builds the module fixtures
def test_term_gradient_norms_are_the_weighted_terms_gradient_norms(network, four_batches):
  batch = four_batches[0]  # a 3D batch
  paper = LossWeights()
  moving = {v.path: v.numpy() for v in network.non_trainable_variables}
  trainer = Trainer(network, paper, 8, 64)
  norms = trainer.term_gradient_norms(batch)
  assert list(norms) == [t.name for t in losses.TERMS]  # every term active, in order
  assert norms["bone_2d"] == 0.0 and norms["pose3d"] > 0 and norms["projection"] > 0
  # Measuring trains nothing: batch-norm statistics (moved by a training-mode call) are back.
  for v in network.non_trainable_variables:
    np.testing.assert_array_equal(v.numpy(), moving[v.path], err_msg=v.path)
  for term in ("pose3d", "projection", "heatmap"):
    assert norms[term] == pytest.approx(_direct_norm(network, batch, paper, term), rel=1e-5)
  # Three times the weight, three times the norm (the same trace: weights do not enter it).
  trainer.loss_weights = dataclasses.replace(paper, pose3d=3 * paper.pose3d)
  again = trainer.term_gradient_norms(batch)
  assert again["pose3d"] == pytest.approx(3 * norms["pose3d"], rel=1e-6)
  assert again["projection"] == pytest.approx(norms["projection"], rel=1e-6)
  # The groups split the norm: trunk and heads add up in squares.
  measured = trainer.measure_terms(batch)["pose3d"]
  assert measured.groups["trunk"] > 0 and measured.groups["heads"] > 0
  assert np.hypot(measured.groups["trunk"], measured.groups["heads"]) == pytest.approx(
    measured.norm, rel=1e-6
  )
  # A zero weight: no entry (pre-training weighs the 3D terms 0); its terms reach no head.
  pretraining = Trainer(network, LossWeights.pretrain2d(), 8, 64).measure_terms(batch)
  assert list(pretraining) == [
    t.name for t in losses.TERMS if getattr(LossWeights.pretrain2d(), t.name) != 0
  ]
  assert len(pretraining) < len(losses.TERMS) and "pose3d" not in pretraining
  heatmap = pretraining["heatmap"]
  assert heatmap.groups["heads"] == 0.0 and heatmap.groups["trunk"] > 0


@pytest.mark.xdist_group("gradient_norms")  # one worker builds the module fixtures
def test_calibration_equalises_the_weighted_gradient_norms(network, four_batches):
  trainer = Trainer(network, LossWeights(), 8, 64)
  calibrated, report = trainer.calibrated_weights(four_batches)
  assert report["reference"] == "pose3d" and report["batches"] == 4
  assert calibrated.pose3d == LossWeights().pose3d  # the reference keeps its weight
  # Each kind of term applies on the batches of its kind: 3D ones on 2, bone_2d on 2.
  assert report["terms"]["pose3d"]["batches"] == 2 and report["terms"]["bone_2d"]["batches"] == 2
  assert report["terms"]["projection"]["batches"] == 4
  trainer.loss_weights = calibrated
  measured = [trainer.term_gradient_norms(b) for b in four_batches]
  means = {n: np.mean([m[n] for m in measured if m[n] > 0]) for n in trainer.active_terms()}
  target = report["terms"]["pose3d"]["weighted_gradient_norm_after"]
  for name, value in means.items():
    assert value == pytest.approx(target, rel=1e-3), name
    assert report["terms"][name]["weight_after"] == getattr(calibrated, name)
  # Before calibration they were far apart (the point): the check above is not idle.
  before = [row["weighted_gradient_norm_before"] for row in report["terms"].values()]
  assert max(before) / min(before) > 2
  # Inactive terms stay off; too few batches to see a term is an error naming it.
  off, _ = Trainer(network, LossWeights.for_ablation("baseline"), 8, 64).calibrated_weights(
    four_batches[:1]
  )
  assert off.projection == 0.0 and off.bone_2d == 0.0 and off.heatmap == 0.0
  with pytest.raises(ValueError, match=r"--calibration_batches=1: .* bone_2d on any"):
    trainer.calibrated_weights(four_batches[:1])


# A calibrated run trained, logged, saved and resumed: tests/test_url_io.py (its `runs`).


def test_resuming_an_uncalibrated_run_with_calibration_is_refused(tmp_path):
  write_checkpoint(tmp_path)  # config.json without calibration and a checkpoint
  flags = dataclasses.replace(tiny_run_config(tmp_path), calibrate_loss_weights=True)
  with pytest.raises(ValueError, match=f"{tmp_path} holds checkpoints of a run with uncalibrated"):
    train.resumed_loss_weights(flags)
  fresh = tiny_run_config(tmp_path / "new")
  assert train.resumed_loss_weights(dataclasses.replace(fresh, calibrate_loss_weights=True)) == (
    dataclasses.replace(fresh, calibrate_loss_weights=True)
  )
