"""Loss golden values, masks, the projection's gradient path, replica invariance, mixed
precision, and the one declaration of the terms."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import heatmaps, losses, preprocess, skeletons
from wild3d_tf import model as model_lib
from wild3d_tf.config import ModelConfig
from wild3d_tf.losses import LossWeights

B = 4
SIZE = 64


def _labels(rng, has_3d=(1, 1, 0, 0)):
  joints2d = rng.uniform(8, 56, size=(B, 14, 2)).astype(np.float32)
  visible = np.ones((B, 14), np.float32)
  visible[1, 3] = 0
  pose = rng.normal(size=(B, 17, 3)).astype(np.float32) * 300
  pose -= pose[:, :1]
  return {
    "heatmaps": np.asarray(heatmaps.encode(joints2d, visible, size=SIZE // 16, stride=16)),
    preprocess.JOINTS2D_INPUT_PX: joints2d,
    preprocess.JOINTS2D_SUPERVISED: visible,
    "joints2d_visible": visible.copy(),  # read by the extra term of the declaration test
    preprocess.JOINTS3D_VIRTUAL_MM: pose,
    "has_3d": np.array(has_3d, np.float32),
    preprocess.REFERENCE_BONE_LENGTHS_MM: np.asarray(losses.bone_lengths(pose[::-1].copy())),
  }


def _perfect_outputs(labels):
  return {
    "heatmaps": labels["heatmaps"],
    "heatmaps_res4d": labels["heatmaps"],
    "heatmaps_res5a": labels["heatmaps"],
    "pose3d": labels[preprocess.JOINTS3D_VIRTUAL_MM],
    "pose2d": labels[preprocess.JOINTS2D_INPUT_PX],
  }


def test_heatmap_loss_golden():
  pred = np.zeros((1, 2, 2, 2), np.float32)
  target = np.zeros_like(pred)
  target[0, 0, 0, 0] = 1.0  # joint 0: one cell off by 1
  target[0, :, :, 1] = 0.5  # joint 1: four cells off by 0.5 -> 4 * 0.25 = 1
  np.testing.assert_allclose(losses.heatmap_loss(pred, target, np.array([[1.0, 1.0]])), [2.0])
  np.testing.assert_allclose(losses.heatmap_loss(pred, target, np.array([[1.0, 0.0]])), [1.0])


def test_pose_and_bone_losses_golden():
  gt = np.zeros((1, 17, 3), np.float32)
  pred = gt.copy()
  pred[0, skeletons.POSE3D.index("r_wrist")] = [300.0, 400.0, 0.0]  # 0.5 m off: 0.25 m^2
  np.testing.assert_allclose(losses.pose3d_loss(pred, gt, [1.0]), [0.25], rtol=1e-6)
  np.testing.assert_allclose(losses.pose3d_loss(pred, gt, [0.0]), [0.0])
  # The wrist is a leaf, so only the elbow->wrist bone vector changes, by the same 0.5 m.
  np.testing.assert_allclose(losses.bone_vector_loss(pred, gt, [1.0]), [0.25], rtol=1e-6)
  # Moving the elbow changes two bones (shoulder->elbow and elbow->wrist).
  pred2 = gt.copy()
  pred2[0, skeletons.POSE3D.index("r_elbow")] = [0.0, 100.0, 0.0]
  np.testing.assert_allclose(losses.bone_vector_loss(pred2, gt, [1.0]), [0.02], rtol=1e-5)


def test_bone_length_loss_golden():
  pose = np.zeros((1, 17, 3), np.float32)
  for child, parent in skeletons.POSE3D.bones:
    pose[0, child] = pose[0, parent] + [0.0, 100.0, 0.0]  # every bone 100 mm
  reference = np.full((1, 16), 100.0, np.float32)
  reference[0, 0] = 400.0  # one bone 300 mm longer in the reference: 0.09 m^2
  np.testing.assert_allclose(losses.bone_length_loss(pose, reference, [1.0]), [0.09], rtol=1e-4)
  np.testing.assert_allclose(losses.bone_length_loss(pose, reference, [0.0]), [0.0])


def _skeleton(lengths):
  """(17, 3) mm pose whose 16 bones (``BONES_3D`` order) have ``lengths``, all along +y."""
  pose = np.zeros((17, 3), np.float32)
  for (child, parent), length in zip(skeletons.POSE3D.bones, lengths):
    pose[child] = pose[parent] + [0.0, length, 0.0]
  return pose


def test_bone_length_ratios_are_scale_free_in_reference_units():
  reference = np.full((16,), 100.0, np.float32)  # total 1600 mm
  twice = _skeleton(2 * reference)  # the reference skeleton at twice its size
  changed = _skeleton(np.r_[600.0, np.full(15, 200.0)])  # one bone 3x the others; total 3600 mm
  pose = np.stack([twice, changed, twice])
  ref = np.tile(reference, (3, 1))
  mask = np.ones(3, np.float32)
  ratios = np.asarray(losses.bone_length_loss(pose, ref, mask, scale_free=[1.0, 1.0, 0.0]))
  # Proportions equal: zero, whatever the size.
  assert abs(ratios[0]) < 1e-9
  # Rescaled by 1600 / 3600: 15 bones at 800/9 mm (100/9 short), one at 2400/9 (1500/9 long):
  # (15 * 100^2 + 1500^2) / 81 mm^2.
  np.testing.assert_allclose(ratios[1], (15 * 100**2 + 1500**2) / 81 / 1e6, rtol=1e-4)
  # The flag is per sample: without it the doubled skeleton costs 16 * (100 mm)^2.
  np.testing.assert_allclose(ratios[2], 16 * 0.1**2, rtol=1e-4)
  absolute = np.asarray(losses.bone_length_loss(pose, ref, mask))
  np.testing.assert_allclose(absolute[[0, 2]], [0.16, 0.16], rtol=1e-4)


def test_rows_without_projection_drop_the_2d_only_bone_loss():
  assert LossWeights.for_ablation("no_projection").bone_2d == 0.0
  assert LossWeights.for_ablation("baseline").bone_2d == 0.0
  assert LossWeights.for_ablation("baseline").projection == 0.0
  assert LossWeights.for_ablation("no_latent_2d").bone_2d == LossWeights().bone_2d == 100.0


def test_occluded_labelled_joints_are_supervised():
  """The 2D terms and bone_2d's "has 2D" read the supervised mask, not visibility."""
  rng = np.random.default_rng(12)
  labels = _labels(rng, has_3d=(0, 0, 0, 0))
  labels["joints2d_visible"][:] = 0.0  # every joint occluded, every one annotated
  outputs = {
    k: v + rng.normal(size=v.shape).astype(np.float32) for k, v in _perfect_outputs(labels).items()
  }
  terms = {k: np.asarray(v) for k, v in losses.per_sample_terms(outputs, labels, SIZE).items()}
  for name in ("heatmap", "intermediate_heatmap", "projection", "bone_2d"):
    assert (terms[name] > 0).all(), name
  labels[preprocess.JOINTS2D_SUPERVISED][3] = 0.0  # sample 3: no annotated joint in the crop
  terms = {k: np.asarray(v) for k, v in losses.per_sample_terms(outputs, labels, SIZE).items()}
  for name in ("heatmap", "intermediate_heatmap", "projection", "bone_2d"):
    assert terms[name][3] == 0 and (terms[name][:3] > 0).all(), name


def test_projection_loss_golden():
  gt = np.zeros((1, 14, 2), np.float32)
  pred = gt.copy()
  pred[0, 0] = [32.0, 0.0]  # half of a 64 px crop: 0.25
  pred[0, 1] = [64.0, 0.0]  # a whole crop, but invisible
  visible = np.ones((1, 14), np.float32)
  visible[0, 1] = 0
  np.testing.assert_allclose(losses.projection_loss(pred, gt, visible, 64), [0.25])


def test_every_term_is_zero_at_the_ground_truth():
  labels = _labels(np.random.default_rng(0))
  labels[preprocess.REFERENCE_BONE_LENGTHS_MM] = np.asarray(
    losses.bone_lengths(labels[preprocess.JOINTS3D_VIRTUAL_MM])
  )
  terms = losses.per_sample_terms(_perfect_outputs(labels), labels, SIZE)
  assert set(terms) == {
    "heatmap",
    "intermediate_heatmap",
    "pose3d",
    "bone_3d",
    "projection",
    "bone_2d",
  }
  for name, value in terms.items():
    np.testing.assert_allclose(np.asarray(value), 0.0, atol=1e-6, err_msg=name)


def test_terms_apply_only_to_samples_with_their_labels():
  rng = np.random.default_rng(1)
  labels = _labels(rng)
  outputs = {
    k: v + rng.normal(size=v.shape).astype(np.float32) for k, v in _perfect_outputs(labels).items()
  }
  terms = {k: np.asarray(v) for k, v in losses.per_sample_terms(outputs, labels, SIZE).items()}
  assert (terms["pose3d"][2:] == 0).all() and (terms["pose3d"][:2] > 0).all()
  assert (terms["bone_3d"][2:] == 0).all()
  assert (terms["bone_2d"][:2] == 0).all() and (terms["bone_2d"][2:] > 0).all()
  assert (terms["projection"] > 0).all()


def test_masked_joint_gets_zero_gradient():
  labels = _labels(np.random.default_rng(2))
  rng = np.random.default_rng(3)
  hm = tf.Variable(
    labels["heatmaps"] + rng.normal(size=labels["heatmaps"].shape).astype(np.float32)
  )
  pose2d = tf.Variable(labels[preprocess.JOINTS2D_INPUT_PX] + 5.0)
  pose3d = tf.Variable(labels[preprocess.JOINTS3D_VIRTUAL_MM] + 50.0)
  valid = np.ones((B, 17), np.float32)
  valid[0, 5] = 0
  with tf.GradientTape() as tape:
    loss = (
      tf.reduce_sum(
        losses.heatmap_loss(hm, labels["heatmaps"], labels[preprocess.JOINTS2D_SUPERVISED])
      )
      + tf.reduce_sum(
        losses.projection_loss(
          pose2d,
          labels[preprocess.JOINTS2D_INPUT_PX],
          labels[preprocess.JOINTS2D_SUPERVISED],
          SIZE,
        )
      )
      + tf.reduce_sum(
        losses.pose3d_loss(pose3d, labels[preprocess.JOINTS3D_VIRTUAL_MM], labels["has_3d"], valid)
      )
      + tf.reduce_sum(
        losses.bone_vector_loss(
          pose3d, labels[preprocess.JOINTS3D_VIRTUAL_MM], labels["has_3d"], valid
        )
      )
    )
  g_hm, g_2d, g_3d = (g.numpy() for g in tape.gradient(loss, [hm, pose2d, pose3d]))
  assert np.abs(g_hm[1, ..., 3]).max() == 0 and np.abs(g_hm[1, ..., 2]).max() > 0
  assert np.abs(g_2d[1, 3]).max() == 0 and np.abs(g_2d[1, 2]).max() > 0
  assert np.abs(g_3d[0, 5]).max() == 0 and np.abs(g_3d[0, 4]).max() > 0
  assert np.abs(g_3d[2:]).max() == 0  # 2D-only samples: no 3D gradient from the 3D terms


def test_projection_loss_of_a_2d_only_sample_trains_the_lifting_mlp():
  keras.utils.set_random_seed(0)
  model = model_lib.build_model(ModelConfig.tiny(SIZE))
  labels = _labels(np.random.default_rng(4), has_3d=(0, 0, 0, 0))
  image = np.random.default_rng(5).uniform(0, 255, size=(B, SIZE, SIZE, 3)).astype(np.float32)
  lifting = [model.get_layer(n).kernel for n in ("f3d_fc1", "f3d_fc4", "f3d_out")]
  with tf.GradientTape() as tape:
    outputs = model(image, training=True)
    loss = tf.reduce_sum(
      losses.projection_loss(
        outputs["pose2d"],
        labels[preprocess.JOINTS2D_INPUT_PX],
        labels[preprocess.JOINTS2D_SUPERVISED],
        SIZE,
      )
    )
  for grad in tape.gradient(loss, lifting):
    assert np.abs(grad.numpy()).max() > 0


def test_total_is_invariant_to_splitting_the_batch_over_replicas():
  rng = np.random.default_rng(6)
  labels = _labels(rng)
  outputs = {
    k: v + rng.normal(size=v.shape).astype(np.float32) * 3
    for k, v in _perfect_outputs(labels).items()
  }
  weights = LossWeights()
  whole, _ = losses.total(outputs, labels, weights, global_batch_size=B, input_size=SIZE)
  halves = [
    losses.total(
      {k: v[s] for k, v in outputs.items()},
      {k: v[s] for k, v in labels.items()},
      weights,
      global_batch_size=B,
      input_size=SIZE,
    )[0]
    for s in (slice(0, 2), slice(2, 4))
  ]
  np.testing.assert_allclose(float(halves[0] + halves[1]), float(whole), rtol=1e-6)


def test_total_weights_golden_and_ablations():
  labels = _labels(np.random.default_rng(7))
  outputs = {k: v + 1.0 for k, v in _perfect_outputs(labels).items()}
  _, terms = losses.total(outputs, labels, LossWeights(), B, SIZE)
  terms = {k: float(v) for k, v in terms.items()}
  expected = (
    0.1 * terms["heatmap"]
    + 0.1 * terms["intermediate_heatmap"]
    + 10 * terms["pose3d"]
    + 10 * terms["bone_3d"]
    + 100 * terms["bone_2d"]
    + 10 * terms["projection"]
  )
  np.testing.assert_allclose(
    float(losses.total(outputs, labels, LossWeights(), B, SIZE)[0]), expected, rtol=1e-6
  )
  no_projection = float(
    losses.total(outputs, labels, LossWeights.for_ablation("no_projection"), B, SIZE)[0]
  )
  # A row without projection drops the 2D-only bone-length loss too (its target says nothing
  # about the image once no projection ties the 3D pose to it).
  np.testing.assert_allclose(
    no_projection, expected - 10 * terms["projection"] - 100 * terms["bone_2d"], rtol=1e-6
  )
  pretrain = float(losses.total(outputs, labels, LossWeights.pretrain2d(), B, SIZE)[0])
  np.testing.assert_allclose(
    pretrain, 0.1 * (terms["heatmap"] + terms["intermediate_heatmap"]), rtol=1e-6
  )
  with pytest.raises(ValueError, match="unknown ablation"):
    LossWeights.for_ablation("no_bones")


@pytest.mark.slow
def test_one_mixed_float16_training_step_is_finite():
  keras.config.set_dtype_policy("mixed_float16")
  try:
    keras.utils.set_random_seed(0)
    model = model_lib.build_model(ModelConfig.tiny(SIZE))
    assert model.get_layer("res5a_2_conv").compute_dtype == "float16"
    assert model.get_layer("conv1_conv").compute_dtype == "float32"  # see model.py
    labels = _labels(np.random.default_rng(8))
    image = np.random.default_rng(9).uniform(0, 255, size=(B, SIZE, SIZE, 3)).astype(np.float32)

    def step(optimizer):
      with tf.GradientTape() as tape:
        outputs = model(image, training=True)
        loss, _ = losses.total(outputs, labels, LossWeights(), B, SIZE)
        scaled = optimizer.scale_loss(loss)
      grads = tape.gradient(scaled, model.trainable_variables)
      optimizer.apply(grads, model.trainable_variables)
      return outputs, loss, grads

    with tf.GradientTape() as tape:
      outputs = model(image, training=True)
      loss, terms = losses.total(outputs, labels, LossWeights(), B, SIZE)
    for name in ("pose3d", "pose2d", "heatmaps", "camera"):
      assert outputs[name].dtype == tf.float32, name
    assert loss.dtype == tf.float32 and all(t.dtype == tf.float32 for t in terms.values())
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(np.isfinite(g.numpy()).all() for g in grads), "unscaled gradients must be finite"

    # The dynamic loss scale starts at 2^15 and halves on overflow, skipping
    # those steps (optimizer.iterations stays put) until a step applies.
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adadelta(0.05, rho=0.9))
    before = [v.numpy().copy() for v in model.trainable_variables]
    for attempt in range(16):  # noqa: B007 (read after the loop)
      _, loss, _ = step(optimizer)
      assert np.isfinite(float(loss))
      if int(optimizer.iterations.numpy()) == 1:
        break
    assert int(optimizer.iterations.numpy()) == 1, "no step applied within 16 loss-scale halvings"
    assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** (15 - attempt)
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
    changed = sum(
      not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)
    )
    assert changed > len(before) // 2
  finally:
    keras.config.set_dtype_policy("float32")


def test_a_term_added_to_the_declaration_is_weighted_and_logged():
  from keras import ops

  from wild3d_tf.trainer import Trainer, make_optimizer

  # One declaration: the count of visible joints per sample, weight 0.5.
  extra = losses.LossTerm(
    "visible_joints",
    lambda out, lab, size: ops.sum(lab["joints2d_visible"], axis=-1),
    ("joints2d_visible",),
    0.5,
  )
  weights_type = losses.weights_class(losses.TERMS + (extra,))
  weights = weights_type()
  assert weights.visible_joints == 0.5 and weights.pose3d == LossWeights().pose3d
  assert weights_type.for_ablation("no_projection").visible_joints == 0.5
  with pytest.raises(ValueError, match="visible_joints"):
    weights_type(visible_joints=-1.0)
  with pytest.raises(ValueError, match="repeat"):
    losses.weights_class(losses.TERMS + (losses.TERMS[0],))

  labels = _labels(np.random.default_rng(10))
  outputs = {k: v + 1.0 for k, v in _perfect_outputs(labels).items()}
  visible_per_sample = labels["joints2d_visible"].sum() / B  # 55 of 56 joints over 4 samples
  assert visible_per_sample == 55 / 4
  base, _ = losses.total(outputs, labels, LossWeights(), B, SIZE)
  loss, terms = losses.total(outputs, labels, weights, B, SIZE)
  assert float(terms["visible_joints"]) == visible_per_sample
  np.testing.assert_allclose(float(loss), float(base) + 0.5 * 55 / 4, rtol=1e-6)

  # The trainer logs it: a tracker of its own, reporting the unweighted value of the step.
  keras.utils.set_random_seed(0)
  trainer = Trainer(model_lib.build_model(ModelConfig.tiny(SIZE)), weights, B, SIZE)
  trainer.compile(optimizer=make_optimizer(0.05, 1000, 0.5, tf.Variable(0, dtype=tf.int64), False))
  trainer.optimizer.build(trainer.network.trainable_variables)
  assert list(trainer.trackers) == ["loss", *(t.name for t in losses.TERMS), "visible_joints"]
  image = np.random.default_rng(11).uniform(0, 255, size=(B, SIZE, SIZE, 3)).astype(np.float32)
  assert bool(trainer.train_step({"image": image, **labels}))  # eagerly: tracing costs 10x
  assert float(trainer.trackers["visible_joints"].result()) == visible_per_sample
  with pytest.raises(KeyError, match="joints2d_visible"):
    trainer.labels({k: v for k, v in labels.items() if k != "joints2d_visible"})
