"""The loss terms of the paper's supplement (Sec. 1), masked per sample and joint.

Every term is a pure function returning one float32 value per sample, so a
batch may mix 2D-only and 3D samples: a term is zero for samples without the
label it needs. Units are normalised so the paper's weights balance: 3D
errors in metres, 2D errors as a fraction of the crop side.

``total`` sums the weighted terms over the batch and divides by the *global*
batch size, so under tf.distribute the per-replica losses add up to the
single-device loss (no extra 1/num_replicas scaling is needed). When one step
holds a 3D batch and a 2D-only batch (``DataConfig.batch_composition``
``within_step``), the divisor is the batch size of one kind, so each term is
the sum of the two kinds' means, as two steps of whole batches would see them.

The 2D terms supervise the joints of ``preprocess.JOINTS2D_SUPERVISED``:
annotated and inside the crop, occluded or not (the paper's supplement masks
a joint only when its annotation is missing).

A term is declared once, in ``TERMS``: its name, its per-sample function,
the labels it reads and its default weight. ``LossWeights`` (the weights'
fields), the trainer's trackers and logged scalars, and the label keys a
training batch must carry all derive from that tuple.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import math

from keras import ops
import numpy as np

from wild3d_tf import preprocess, skeletons

_MM_PER_M = 1000.0
BONES_3D = np.array(skeletons.POSE3D.bones)  # (16, 2) child, parent


def _f32(x):
  return ops.cast(x, "float32")


def heatmap_loss(pred, target, supervised):
  """sum_k b_k ||m_k - m_k^GT||^2 over (B, H, W, K) maps; ``supervised`` (B, K) is b."""
  squared = ops.sum(ops.square(_f32(pred) - _f32(target)), axis=(1, 2))
  return ops.sum(squared * _f32(supervised), axis=-1)


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


def bone_length_loss(pred, reference_lengths, mask, scale_free=None):
  """sum over bones of (||Parent(J) - J|| - ||Parent(J^S) - J^S||)^2, in m^2; (B,).

  ``pred`` (B, 17, 3) mm; ``reference_lengths`` (B, 16) mm, the bones of the
  target skeleton S (``DataConfig.bone_length_target``: a training subject
  drawn per sample as the paper, or the training subjects' mean skeleton);
  ``mask`` (B,) selects the 2D-only samples.

  ``scale_free`` (B,), optional, 1 where the loss compares proportions (target
  ``ratios``): each predicted bone's share of the predicted 16 bones' total
  length against the reference's share, r_b = l_b / sum(l). To keep the
  weight's meaning, the shares are multiplied by the reference's total length
  and compared in metres: sum_b (L^S (r_b - r_b^S))^2, i.e. the predicted
  skeleton rescaled to the reference's total length against the reference.
  A pose that is the reference skeleton at any scale costs zero, and the
  pose's overall size gets no gradient; a shape error costs about what it
  costs the absolute loss (the default weight stays 100). The predicted total
  is floored at 1 mm so a collapsed pose cannot divide by zero.
  """
  lengths = bone_lengths(pred)
  reference = _f32(reference_lengths)
  if scale_free is not None:
    scale = ops.sum(reference, axis=-1, keepdims=True) / ops.maximum(
      ops.sum(lengths, axis=-1, keepdims=True), 1.0
    )
    free = ops.expand_dims(_f32(scale_free), -1)
    lengths = free * lengths * scale + (1.0 - free) * lengths
  diff = (lengths - reference) / _MM_PER_M
  return ops.sum(ops.square(diff), axis=-1) * _f32(mask)


def projection_loss(pred2d, target2d, supervised, input_size):
  """||p2D - p2D^GT||^2 over (B, 14, 2) crop pixels, as a fraction of the crop side;
  ``supervised`` (B, 14) masks the joints."""
  squared = ops.sum(ops.square((_f32(pred2d) - _f32(target2d)) / input_size), axis=-1)
  return ops.sum(squared * _f32(supervised), axis=-1)


@dataclasses.dataclass(frozen=True)
class LossTerm:
  """One loss term: ``fn(outputs, labels, input_size)`` -> (B,) float32, unweighted.

  ``labels`` are the keys of the training batch ``fn`` reads (the trainer passes
  exactly these, so a missing one is a KeyError naming it); ``optional_labels``
  are passed when the batch has them. ``weight`` is the default weight (paper
  supplement Sec. 1, Eq. 6).
  """

  name: str
  fn: Callable
  labels: tuple[str, ...]
  weight: float
  optional_labels: tuple[str, ...] = ()


def _has_2d(labels):
  supervised = ops.cast(labels[preprocess.JOINTS2D_SUPERVISED], "bool")
  return ops.cast(ops.any(supervised, axis=-1), "float32")


def _both_heatmap_stages(outputs, labels):
  return heatmap_loss(
    outputs["heatmaps_res4d"], labels[preprocess.HEATMAPS], labels[preprocess.JOINTS2D_SUPERVISED]
  ) + heatmap_loss(
    outputs["heatmaps_res5a"], labels[preprocess.HEATMAPS], labels[preprocess.JOINTS2D_SUPERVISED]
  )


def _against_3d_labels(loss):
  """A term's function comparing the predicted pose with the 3D labels: ``loss(pred, target,
  has_3d, valid)`` on the root-relative crop-camera joints, per-joint validity when present."""
  return lambda out, lab, size: loss(
    out["pose3d"],
    lab[preprocess.JOINTS3D_VIRTUAL_MM],
    lab[preprocess.HAS_3D],
    lab.get(preprocess.JOINTS3D_VALID),
  )


TERMS = (
  LossTerm(
    "heatmap",
    lambda out, lab, size: heatmap_loss(
      out["heatmaps"], lab[preprocess.HEATMAPS], lab[preprocess.JOINTS2D_SUPERVISED]
    ),
    (preprocess.HEATMAPS, preprocess.JOINTS2D_SUPERVISED),
    0.1,
  ),
  LossTerm(
    "intermediate_heatmap",
    lambda out, lab, size: _both_heatmap_stages(out, lab),
    (preprocess.HEATMAPS, preprocess.JOINTS2D_SUPERVISED),
    0.1,
  ),
  LossTerm(
    "pose3d",
    _against_3d_labels(pose3d_loss),
    (preprocess.JOINTS3D_VIRTUAL_MM, preprocess.HAS_3D),
    10.0,
    optional_labels=(preprocess.JOINTS3D_VALID,),
  ),
  LossTerm(
    "bone_3d",
    _against_3d_labels(bone_vector_loss),
    (preprocess.JOINTS3D_VIRTUAL_MM, preprocess.HAS_3D),
    10.0,
    optional_labels=(preprocess.JOINTS3D_VALID,),
  ),
  LossTerm(
    # 2D-only samples with at least one supervised joint, against the target the data built
    # (``DataConfig.bone_length_target``); without the scale-free flag, absolute lengths.
    "bone_2d",
    lambda out, lab, size: bone_length_loss(
      out["pose3d"],
      lab[preprocess.REFERENCE_BONE_LENGTHS_MM],
      (1.0 - _f32(lab[preprocess.HAS_3D])) * _has_2d(lab),
      lab.get(preprocess.BONE_LENGTHS_SCALE_FREE),
    ),
    (preprocess.REFERENCE_BONE_LENGTHS_MM, preprocess.HAS_3D, preprocess.JOINTS2D_SUPERVISED),
    100.0,
    optional_labels=(preprocess.BONE_LENGTHS_SCALE_FREE,),
  ),
  LossTerm(
    "projection",
    lambda out, lab, size: projection_loss(
      out["pose2d"], lab[preprocess.JOINTS2D_INPUT_PX], lab[preprocess.JOINTS2D_SUPERVISED], size
    ),
    (preprocess.JOINTS2D_INPUT_PX, preprocess.JOINTS2D_SUPERVISED),
    10.0,
  ),
)


def label_keys(terms=TERMS) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(required, optional) label keys the terms read, each in declaration order, no repeats."""
  required = tuple(dict.fromkeys(k for t in terms for k in t.labels))
  optional = tuple(dict.fromkeys(k for t in terms for k in t.optional_labels if k not in required))
  return required, optional


def _validate_weights(self):
  for field in dataclasses.fields(self):
    value = getattr(self, field.name)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
      raise ValueError(f"loss weight {field.name} must be a finite number >= 0; got {value!r}")


ABLATIONS = ("full", "no_latent_2d", "no_projection", "baseline")


def _pretrain2d(cls):
  """Stage 1 of the paper: 2D heatmaps only, with intermediate supervision."""
  return cls(**{t.name: 0.0 for t in cls.TERMS if "heatmap" not in t.name})


def _for_ablation(cls, name: str):
  """The loss switches of paper Table 5: ``full``; ``no_latent_2d`` (no explicit
  2D heatmap loss on F3D); ``no_projection`` (no 3D-to-2D projection loss);
  ``baseline`` (neither: direct 3D regression with the 3D bone loss).

  The rows without projection also drop the 2D-only bone-length loss
  (``bone_2d``): without the projection nothing ties a 2D-only sample's 3D
  pose to its image, so that loss's target carries no information about the
  image and would only pull every 2D-only prediction toward a skeleton."""
  if name == "full":
    return cls()
  if name == "no_latent_2d":
    return cls(heatmap=0.0, intermediate_heatmap=0.0)
  if name == "no_projection":
    return cls(projection=0.0, bone_2d=0.0)
  if name == "baseline":
    return cls(heatmap=0.0, intermediate_heatmap=0.0, projection=0.0, bone_2d=0.0)
  raise ValueError(f"unknown ablation {name!r}; expected one of {ABLATIONS}")


def weights_class(terms=TERMS) -> type:
  """A frozen dataclass with one float field per term, defaulting to the term's weight.

  ``TERMS`` (the class attribute) is the declaration it was made from, so
  ``total`` and the trainer need nothing but an instance. Zero switches a
  term off; negative or non-finite weights raise ValueError naming the term.
  """
  names = [t.name for t in terms]
  if len(set(names)) != len(names):
    raise ValueError(f"loss term names repeat: {names}")
  return dataclasses.make_dataclass(
    "LossWeights",
    [(t.name, float, dataclasses.field(default=t.weight)) for t in terms],
    frozen=True,
    namespace={
      "__doc__": "Weights of the total loss (supplement Sec. 1, Eq. 6), one field per term of "
      "``losses.TERMS``. Zero switches a term off; the ablations of paper Table 5 are presets "
      "of ``for_ablation``. Removing the 2D data is a data setting, not a weight.",
      "__module__": __name__,
      "__post_init__": _validate_weights,
      "TERMS": tuple(terms),
      "ABLATIONS": ABLATIONS,
      "pretrain2d": classmethod(_pretrain2d),
      "for_ablation": classmethod(_for_ablation),
    },
  )


LossWeights = weights_class(TERMS)


def per_sample_terms(outputs: Mapping, labels: Mapping, input_size: int, terms=TERMS) -> dict:
  """Each loss term per sample, unweighted: {name: (B,) float32}, in declaration order.

  Labels (keys ``preprocess``'s): ``HEATMAPS`` (B, s, s, 14),
  ``JOINTS2D_INPUT_PX`` (B, 14, 2), ``JOINTS2D_SUPERVISED`` (B, 14),
  ``JOINTS3D_VIRTUAL_MM`` (B, 17, 3) root-relative in the crop's camera
  frame, ``HAS_3D`` (B,), optionally ``JOINTS3D_VALID`` (B, 17), and
  ``REFERENCE_BONE_LENGTHS_MM`` (B, 16) for 2D-only samples, optionally
  with ``BONE_LENGTHS_SCALE_FREE`` (B,) (absent: absolute lengths).
  ``input_size`` is the crop side in pixels.
  """
  return {term.name: term.fn(outputs, labels, input_size) for term in terms}


def total(outputs: Mapping, labels: Mapping, weights, global_batch_size: int, input_size: int):
  """(scalar total, {term: scalar}) with sums divided by ``global_batch_size``.

  ``global_batch_size`` is the global batch of one kind, ``DataConfig.batch_size``:
  also when a step holds a 3D and a 2D-only batch of that size (``within_step``).

  ``weights`` is a ``LossWeights`` (or a ``weights_class(terms)`` instance):
  its ``TERMS`` are the terms computed. The per-term scalars are unweighted,
  for logging; the total is weighted, terms of weight zero left out.
  """
  terms = {
    name: ops.sum(value) / global_batch_size
    for name, value in per_sample_terms(outputs, labels, input_size, weights.TERMS).items()
  }
  loss = sum(
    getattr(weights, name) * value for name, value in terms.items() if getattr(weights, name) != 0
  )
  return loss, terms
