"""The loss terms of the paper's supplement (Sec. 1), masked per sample and joint.

Every term is a pure function returning one float32 value per sample, so a
batch may mix 2D-only and 3D samples: a term is zero for samples without the
label it needs. Units are normalised so the paper's weights balance: 3D
errors in metres, 2D errors as a fraction of the crop side.

``total`` sums the weighted terms over the batch and divides by the *global*
batch size, so under tf.distribute the per-replica losses add up to the
single-device loss (no extra 1/num_replicas scaling is needed).
"""

from __future__ import annotations

from collections.abc import Mapping

from keras import ops
import numpy as np
import tensorflow as tf

from wild3d_tf import skeletons
from wild3d_tf.config import LossWeights

_MM_PER_M = 1000.0
BONES_3D = np.array(skeletons.POSE3D.bones)  # (16, 2) child, parent


def _f32(x):
  return ops.cast(x, "float32")


def heatmap_loss(pred, target, visible):
  """sum_k b_k ||m_k - m_k^GT||^2 over (B, H, W, K) maps; ``visible`` (B, K)."""
  squared = ops.sum(ops.square(_f32(pred) - _f32(target)), axis=(1, 2))
  return ops.sum(squared * _f32(visible), axis=-1)


def pose3d_loss(pred, target, has_3d, valid=None):
  """||P3D - P^GT||^2 over (B, 17, 3) mm poses, in m^2; ``valid`` (B, 17) optional."""
  squared = ops.sum(ops.square((_f32(pred) - _f32(target)) / _MM_PER_M), axis=-1)
  if valid is not None:
    squared = squared * _f32(valid)
  return ops.sum(squared, axis=-1) * _f32(has_3d)


def _bone_vectors(pose):
  return ops.take(pose, BONES_3D[:, 0], axis=1) - ops.take(pose, BONES_3D[:, 1], axis=1)


def bone_valid(valid):
  """(B, 16) a bone counts when both of its joints are valid."""
  valid = _f32(valid)
  return ops.take(valid, BONES_3D[:, 0], axis=1) * ops.take(valid, BONES_3D[:, 1], axis=1)


def bone_vector_loss(pred, target, has_3d, valid=None):
  """sum over bones of ||(Parent(J) - J) - (Parent(J^GT) - J^GT)||^2, in m^2 (3D samples)."""
  diff = (_bone_vectors(_f32(pred)) - _bone_vectors(_f32(target))) / _MM_PER_M
  squared = ops.sum(ops.square(diff), axis=-1)
  if valid is not None:
    squared = squared * bone_valid(valid)
  return ops.sum(squared, axis=-1) * _f32(has_3d)


def bone_lengths(pose):
  """(B, 16) bone lengths of (B, 17, 3) poses; the epsilon keeps the gradient finite at 0."""
  vectors = _bone_vectors(_f32(pose))
  return ops.sqrt(ops.sum(ops.square(vectors), axis=-1) + 1e-8)


def bone_length_loss(pred, reference_lengths, mask):
  """sum over bones of (||Parent(J) - J|| - ||Parent(J^S) - J^S||)^2, in m^2.

  ``reference_lengths`` (B, 16) mm come from a training subject S drawn at
  random per sample; ``mask`` (B,) selects the 2D-only samples.
  """
  diff = (bone_lengths(pred) - _f32(reference_lengths)) / _MM_PER_M
  return ops.sum(ops.square(diff), axis=-1) * _f32(mask)


def projection_loss(pred2d, target2d, visible, input_size):
  """||p2D - p2D^GT||^2 over (B, 14, 2) crop pixels, as a fraction of the crop side."""
  squared = ops.sum(ops.square((_f32(pred2d) - _f32(target2d)) / input_size), axis=-1)
  return ops.sum(squared * _f32(visible), axis=-1)


def per_sample_terms(outputs: Mapping, labels: Mapping, input_size: int) -> dict:
  """Each loss term per sample, unweighted.

  Labels: ``heatmaps`` (B, s, s, 14), ``joints2d`` (B, 14, 2) crop pixels,
  ``joints2d_visible`` (B, 14), ``joints3d`` (B, 17, 3) mm root-relative in
  the crop's camera frame, ``has_3d`` (B,), optionally ``joints3d_valid``
  (B, 17), and ``reference_bone_lengths`` (B, 16) mm for 2D-only samples.
  """
  visible = labels["joints2d_visible"]
  has_3d = _f32(labels["has_3d"])
  valid = labels.get("joints3d_valid")
  has_2d = ops.cast(ops.any(ops.cast(visible, "bool"), axis=-1), "float32")
  terms = {
    "heatmap": heatmap_loss(outputs["heatmaps"], labels["heatmaps"], visible),
    "intermediate_heatmap": (
      heatmap_loss(outputs["heatmaps_res4d"], labels["heatmaps"], visible)
      + heatmap_loss(outputs["heatmaps_res5a"], labels["heatmaps"], visible)
    ),
    "pose3d": pose3d_loss(outputs["pose3d"], labels["joints3d"], has_3d, valid),
    "bone_3d": bone_vector_loss(outputs["pose3d"], labels["joints3d"], has_3d, valid),
    "projection": projection_loss(outputs["pose2d"], labels["joints2d"], visible, input_size),
  }
  if "reference_bone_lengths" in labels:
    terms["bone_2d"] = bone_length_loss(
      outputs["pose3d"], labels["reference_bone_lengths"], (1.0 - has_3d) * has_2d
    )
  return terms


def total(
  outputs: Mapping, labels: Mapping, weights: LossWeights, global_batch_size: int, input_size: int
):
  """(scalar total, {term: scalar}) with sums divided by ``global_batch_size``.

  The per-term scalars are unweighted, for logging; the total is weighted.
  """
  terms = {
    name: ops.sum(value) / global_batch_size
    for name, value in per_sample_terms(outputs, labels, input_size).items()
  }
  loss = sum(
    getattr(weights, name) * value for name, value in terms.items() if getattr(weights, name) != 0
  )
  return loss, terms


def sample_reference_bone_lengths(table, batch_size: int, seed):
  """(batch, 16) rows of a (subjects, 16) bone-length table, one random subject per sample.

  ``seed`` is a stateless seed pair, so a resumed run draws the same subjects.
  """
  table = tf.convert_to_tensor(table, tf.float32)
  index = tf.random.stateless_uniform([batch_size], seed, 0, tf.shape(table)[0], dtype=tf.int32)
  return tf.gather(table, index)
