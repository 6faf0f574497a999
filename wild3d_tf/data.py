"""tf.data over the converter's shards: parse, decode, augment, make targets, batch.

Every random decision comes from a stateless seed drawn per element by
``Dataset.random`` and the pipeline holds no Python, so the iterator can be
checkpointed and a resumed run sees exactly the batches an uninterrupted run
would. Augmentation moves the image, the 2D joints and the 3D joints
together: scale, rotation and translation of the crop, horizontal flip with
left/right swap, colour jitter and background replacement. The 3D labels are
rotated into the camera that looks at the final crop's centre (perspective
correction, docs/datasets.md), then by the crop's in-plane rotation, then
mirrored with the flip, and made root-relative. The crop (box, matrix, warp,
mirror) is ``preprocess``'s, the one serving uses; the random draws are
``augment``'s; the prepared example's keys are declared in ``preprocess``.

The work is split where it runs best: per example on the CPU,
``decode_example`` parses, decodes and draws (the crop's jitter, flip, colour
factors, which examples get a new background); per batch on the CPU,
``stage_batch`` computes the crop's matrix and every label (small float64 ops
that cost far more one example at a time); per batch, ``finish_batch`` does
the image work (new backgrounds, colour jitter, the warp,
the flip, heatmap targets) with plain TF ops that XLA compiles, inside the
training step (``trainer.Trainer``), so an accelerator does it
(``DataConfig.augment_in_step``; off, the pipeline runs it per example,
``finish_example``, between ``stage_batch`` and the final batching).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from wild3d_tf import (
  augment,
  geometry_tf,
  heatmaps,
  preprocess,
  schema,
  shards,
  skeletons,
  tfds_data,
)
from wild3d_tf.config import DataConfig

# --------------------------------------------------------------------------- shards


# The converter's folder is named and read in ``shards`` (through tf.io.gfile, so gs:// works);
# ``data.load_manifest`` and ``data.shard_files`` stay the names callers use.
load_manifest = shards.load_manifest
shard_files = shards.shard_files


def require_manifests(data_dir: str, datasets) -> None:
  """Raises FileNotFoundError unless ``data_dir`` holds the manifest of every one of ``datasets``.

  The message names the missing datasets, their manifest file names and the
  folder, and says when the folder holds no manifest at all (a wrong
  --data_dir rather than a missing conversion).
  """
  missing = [d for d in datasets if not shards.has_manifest(data_dir, d)]
  if not missing:
    return
  root = len(shards.join(data_dir, ""))  # names relative to the root
  names = ", ".join(shards.manifest_path(data_dir, d)[root:] for d in missing)
  if not tf.io.gfile.isdir(data_dir):
    where = f"--data_dir {data_dir} does not exist"
  elif not shards.converted_datasets(data_dir):
    where = f"--data_dir {data_dir} holds no converted dataset at all (no *.manifest.json)"
  else:
    where = f"--data_dir {data_dir} has no conversion of {', '.join(missing)}"
  raise FileNotFoundError(
    f"{where}; expected {names} (the converter's --output_dir: "
    "python -m beam_preprocess.convert --dataset=NAME --output_dir=DATA_DIR)"
  )


def bone_length_table(data_dir: str, datasets) -> np.ndarray:
  """(subjects, 16) mean bone lengths (mm) of the training subjects of ``datasets`` (3D ones).

  Raises FileNotFoundError naming a dataset without a manifest in ``data_dir``
  and ValueError when their manifests list no training subject.
  """
  require_manifests(data_dir, datasets)
  rows = []
  for dataset in datasets:
    rows += list(load_manifest(data_dir, dataset)["bone_lengths_mm"].get("train", {}).values())
  if not rows:
    raise ValueError(
      f"no training-subject bone lengths in the manifests of {tuple(datasets)} under {data_dir}"
    )
  return np.array(rows, np.float32)


# --------------------------------------------------------------------------- one example


def joint_masks_2d(joints2d, labelled, visible, size: int):
  """(supervised, visible): (..., J) bool masks of 2D joints in a ``size`` px crop.

  ``joints2d`` (..., J, 2) in the crop's input pixels; ``labelled`` and
  ``visible`` (..., J) bool, the record's flags. A joint is *supervised* (the
  2D losses and heatmap targets use it) when it is labelled and inside the
  crop (pixel centres 0 to ``size - 1``), occluded or not: the paper's
  supplement masks a joint only when its annotation is missing. It is
  *visible* when it is also flagged visible (evaluation's 2D PCK).
  """
  inside = tf.reduce_all((joints2d >= 0) & (joints2d <= size - 1), axis=-1)
  return labelled & inside, visible & labelled & inside


def reference_bone_lengths(bone_table, target: str, seed):
  """The 2D-only bone-length loss's target for one sample: ((16,) float32 mm, () float32 flag).

  ``bone_table`` (subjects, 16) mm is ``bone_length_table``'s; ``target`` one
  of ``config.BONE_LENGTH_TARGETS``: ``random_subject`` a row drawn with the
  stateless ``seed`` (the paper's), ``mean_skeleton`` the rows' mean,
  ``ratios`` the rows' mean with the flag set (``preprocess.BONE_LENGTHS_SCALE_FREE``:
  the loss compares proportions, ``losses.bone_length_loss``). A None table
  gives zeros (pre-training, whose weights leave the loss out).
  """
  flag = tf.constant(float(target == "ratios"), tf.float32)
  if bone_table is None:
    return tf.zeros([len(skeletons.POSE3D.bones)], tf.float32), flag
  if target == "random_subject":
    table = tf.constant(bone_table, tf.float32)
    index = tf.random.stateless_uniform([], seed, 0, tf.shape(table)[0], tf.int32)
    return tf.gather(table, index), flag
  return tf.constant(np.mean(np.asarray(bone_table, np.float64), axis=0), tf.float32), flag


# The keys ``stage_example`` adds to an example's labels for ``finish_batch``, which does the
# image work of a whole batch inside the training step and removes them.
STORED_IMAGE = "stored_image"  # (N, N, 3) uint8 the record's decoded crop, zero-padded to N
STORED_SIZE = "stored_size"  # (2,) int32 the crop's (height, width) before the padding
STORED_MASK = "stored_mask"  # (N, N, 1) uint8 its foreground mask where NEW_BACKGROUND, else 255
NEW_BACKGROUND = "new_background"  # () bool replace the background (augment.replace_backgrounds)
BACKGROUND_CELLS = "background_cells"  # (6, 6, 3) float32 its coarse grid (augment.texture_cells)
BACKGROUND_KEYS = "background_keys"  # (2,) int64 its pixel noise's keys (augment.texture_noise)
COLOUR = "colour"  # (3,) float32 augment.colour_parameters
JITTER_COLOUR = "jitter_colour"  # () bool apply COLOUR
INPUT_PX_FROM_STORED_PX = "input_px_from_stored_px"  # (3, 3) float64 the crop, before the flip
STAGED_KEYS = (
  STORED_IMAGE,
  STORED_SIZE,
  STORED_MASK,
  NEW_BACKGROUND,
  BACKGROUND_CELLS,
  BACKGROUND_KEYS,
  COLOUR,
  JITTER_COLOUR,
  INPUT_PX_FROM_STORED_PX,
)


# The record's fields ``stage_labels`` reads.
LABEL_FIELDS = (
  schema.JOINTS2D_CROP_PX,
  schema.JOINTS2D_LABELLED,
  schema.JOINTS2D_VISIBLE,
  schema.CROP_PX_FROM_IMAGE_PX,
  schema.CAMERA_INTRINSICS_IMAGE_PX,
  schema.CAMERA_DISTORTION,
  schema.HAS_INTRINSICS,
  schema.JOINTS3D_CAMERA_MM,
  schema.HAS_3D,
)
CROP_JITTER = "crop_jitter"  # (4,) float64 augment.crop_jitter's draws, until staged


def example_seeds(seed, config: DataConfig):
  """(5, 2) int64 stateless seeds of one example from its ``Dataset.random`` draw and the run's
  seed: [0] new background, [1] whether to use it, [2] colour, [3] crop jitter, [4] bone
  lengths."""
  return tf.random.experimental.stateless_split(
    tf.stack([seed, tf.constant(config.seed, tf.int64)]), 5
  )


def stored_pixels(
  record: dict, seeds, config: DataConfig, training: bool, stored_side: int | None = None
) -> dict:
  """The per-example image part of ``stage_example``: ``STORED_IMAGE``, ``STORED_SIZE``,
  ``STORED_MASK`` and ``NEW_BACKGROUND`` (the mask is decoded only where a new background was
  drawn). ``stored_side`` pads the crop and mask with zeros to that square side, so examples of
  crops stored at several sizes batch (None: as decoded); a crop larger than it raises
  InvalidArgumentError naming the record and the side."""
  image = tf.io.decode_jpeg(record[schema.IMAGE_CROP_JPEG], channels=3)
  stored_size = tf.shape(image)[:2]
  opaque = lambda: tf.fill([stored_size[0], stored_size[1], 1], tf.constant(255, tf.uint8))  # noqa: E731
  if training:
    use = (record[schema.HAS_MASK] > 0) & augment.coin(seeds[1], config.background_probability)
    mask = tf.cond(use, lambda: tf.io.decode_png(record[schema.MASK_CROP_PNG], channels=1), opaque)
  else:
    use, mask = tf.constant(False), opaque()
  if stored_side is not None:
    with tf.control_dependencies(
      [
        tf.debugging.Assert(
          tf.reduce_all(stored_size <= stored_side),
          [
            f"a stored crop is larger than the {stored_side} px side of the batch (the "
            "manifests' crop_size); record and (height, width):",
            record[schema.KEY],
            stored_size,
          ],
        )
      ]
    ):
      image = tf.image.pad_to_bounding_box(image, 0, 0, stored_side, stored_side)
      mask = tf.image.pad_to_bounding_box(mask, 0, 0, stored_side, stored_side)

  return {STORED_IMAGE: image, STORED_SIZE: stored_size, STORED_MASK: mask, NEW_BACKGROUND: use}


def example_draws(seeds, config: DataConfig, training: bool, bone_table=None) -> dict:
  """Every random draw of one example but whether it gets a new background (``stored_pixels``):
  ``CROP_JITTER`` and ``preprocess.FLIPPED`` (``augment.crop_jitter``; none when not
  training), the reference bone lengths and their flag (``reference_bone_lengths``), and
  ``BACKGROUND_CELLS``, ``BACKGROUND_KEYS``, ``COLOUR`` and ``JITTER_COLOUR``. Random ops stay
  per example: ``tf.vectorized_map`` has no converter for TF's stateless random ops (it would
  loop over the batch one example at a time)."""
  if training:
    jitter, flip = augment.crop_jitter(
      seeds[3], config.scale_range, config.rotation_degrees, config.shift, config.flip
    )
  else:
    jitter, flip = tf.constant(augment.NO_CROP_JITTER, tf.float64), tf.constant(False)
  reference, scale_free = reference_bone_lengths(bone_table, config.bone_length_target, seeds[4])
  background = tf.random.experimental.stateless_split(seeds[0], 2)
  return {
    CROP_JITTER: jitter,
    preprocess.FLIPPED: flip,
    preprocess.REFERENCE_BONE_LENGTHS_MM: reference,
    preprocess.BONE_LENGTHS_SCALE_FREE: scale_free,
    BACKGROUND_CELLS: augment.texture_cells(background[0]),
    BACKGROUND_KEYS: background[1],
    COLOUR: augment.colour_parameters(seeds[2]),
    JITTER_COLOUR: tf.constant(training and config.color),
  }


def stage_labels(record: dict, jitter, flip, input_size: int) -> dict:
  """The arithmetic part of ``stage_example`` for one example: the crop's matrix and every
  label, from the record's ``LABEL_FIELDS`` and the example's ``CROP_JITTER`` and flip
  (``example_draws``). No random op and no image work, so ``stage_batch`` runs it on a whole
  batch at once (``tf.vectorized_map``)."""
  size = input_size
  labelled = record[schema.JOINTS2D_LABELLED] > 0
  square = preprocess.box_around_joints(record[schema.JOINTS2D_CROP_PX], labelled)
  square, angle = augment.jitter_square(square, jitter)
  matrix = preprocess.crop_matrix(square, size, angle)

  joints2d = geometry_tf.apply_affine(record[schema.JOINTS2D_CROP_PX], matrix)
  supervised, visible = joint_masks_2d(
    joints2d, labelled, record[schema.JOINTS2D_VISIBLE] > 0, size
  )
  joints2d = tf.where(flip, preprocess.mirror_joints2d(joints2d, size), joints2d)
  supervised = tf.where(flip, preprocess.swap_sides_2d(supervised), supervised)
  visible = tf.where(flip, preprocess.swap_sides_2d(visible), visible)

  # Perspective correction: the ray through the final crop's centre, in the original camera.
  input_from_image = matrix @ record[schema.CROP_PX_FROM_IMAGE_PX]
  center = tf.linalg.solve(
    input_from_image, tf.constant([[(size - 1) / 2], [(size - 1) / 2], [1.0]], tf.float64)
  )
  center = center[:2, 0] / center[2, 0]
  ray = geometry_tf.undistort_h36m(
    geometry_tf.pixels_to_normalized(center, record[schema.CAMERA_INTRINSICS_IMAGE_PX]),
    record[schema.CAMERA_DISTORTION],
  )
  rotation = tf.where(
    record[schema.HAS_INTRINSICS] > 0,
    geometry_tf.virtual_camera_rotation(ray),
    tf.eye(3, dtype=tf.float64),
  )
  c, s = tf.cos(angle), tf.sin(angle)
  zero, one = tf.constant(0.0, tf.float64), tf.constant(1.0, tf.float64)
  in_plane = tf.stack(
    [tf.stack([c, -s, zero]), tf.stack([s, c, zero]), tf.stack([zero, zero, one])]
  )
  joints3d = geometry_tf.camera_to_virtual(
    record[schema.JOINTS3D_CAMERA_MM], rotation
  ) @ tf.transpose(in_plane)
  joints3d = joints3d - joints3d[:1]
  joints3d = tf.where(flip, preprocess.mirror_pose3d(joints3d), joints3d)
  input_from_image = tf.where(
    flip, preprocess.mirror_matrix(size) @ input_from_image, input_from_image
  )

  return {
    preprocess.JOINTS2D_INPUT_PX: tf.cast(joints2d, tf.float32),
    preprocess.JOINTS2D_SUPERVISED: tf.cast(supervised, tf.float32),
    preprocess.JOINTS2D_VISIBLE: tf.cast(visible, tf.float32),
    preprocess.JOINTS3D_VIRTUAL_MM: tf.cast(joints3d, tf.float32),
    preprocess.HAS_3D: tf.cast(record[schema.HAS_3D], tf.float32),
    preprocess.CAMERA_FROM_VIRTUAL: rotation,
    preprocess.INPUT_PX_FROM_IMAGE_PX: input_from_image,
    INPUT_PX_FROM_STORED_PX: matrix,
  }


def stage_example(
  record: dict,
  seed,
  config: DataConfig,
  training: bool,
  input_size: int,
  bone_table=None,
  stored_side: int | None = None,
) -> dict:
  """The CPU's part of ``prepare``: decode, draw, and every label; no image work but decoding.

  Takes ``prepare``'s arguments and returns its labels (all its keys but ``IMAGE`` and
  ``HEATMAPS``) and ``STAGED_KEYS``: the decoded crop and mask, the crop's matrix, the colour
  factors and the new background's coarse grid and noise keys, from which ``finish_batch``
  makes the images and heatmaps of a whole batch (``finish_example``: of this one example).
  ``stored_side``: ``stored_pixels``'. A batch of these, with the arithmetic done once for the
  whole batch, is ``stage_batch`` of a batch of ``decode_example``'s.
  """
  seeds = example_seeds(seed, config)
  draws = example_draws(seeds, config, training, bone_table)
  jitter = draws.pop(CROP_JITTER)
  return {
    **stage_labels(record, jitter, draws[preprocess.FLIPPED], input_size),
    **draws,
    **stored_pixels(record, seeds, config, training, stored_side),
  }


# The pipeline's functions (here and below, each marked do_not_convert) are traced as written:
# they branch on Python values only, and AutoGraph's source conversion was most of a pipeline's
# build time (docs/benchmarks.md, "Training start-up"); a tensor-valued `if` fails when traced.
@tf.autograph.experimental.do_not_convert
def decode_example(
  record: dict,
  seed,
  config: DataConfig,
  training: bool,
  bone_table=None,
  stored_side: int | None = None,
) -> dict:
  """The per-example part of a staged batch (``stage_example``'s arguments but the input
  size): ``stored_pixels``, ``example_draws`` and the record's ``LABEL_FIELDS``; batch these,
  then ``stage_batch``."""
  seeds = example_seeds(seed, config)
  return {
    **stored_pixels(record, seeds, config, training, stored_side),
    **example_draws(seeds, config, training, bone_table),
    **{key: record[key] for key in LABEL_FIELDS},
  }


# A tf.function so that streams whose fields have the same shapes (the 3D and the 2D-only stream
# of a stage) share one trace: tf.vectorized_map's conversion takes seconds per trace.
@functools.partial(tf.function, autograph=False)
def _staged_labels(fields: dict, input_size: int) -> dict:
  return tf.vectorized_map(
    lambda one: stage_labels(one, one[CROP_JITTER], one[preprocess.FLIPPED], input_size), fields
  )


@tf.autograph.experimental.do_not_convert
def stage_batch(batch: dict, input_size: int) -> dict:
  """A batch of ``decode_example``'s -> the batch of ``stage_example``'s, equal to it but for
  float64 rounding: ``stage_labels`` vectorised over the batch (``tf.vectorized_map``), since
  its few hundred small ops per example (H3.6M's undistortion alone is ten Newton steps) cost
  the CPU more than decoding when run one example at a time (docs/benchmarks.md)."""
  labels = _staged_labels(
    {key: batch[key] for key in (*LABEL_FIELDS, CROP_JITTER, preprocess.FLIPPED)}, input_size
  )
  kept = {key: value for key, value in batch.items() if key not in (*LABEL_FIELDS, CROP_JITTER)}
  return {**labels, **kept}


def _with_heatmaps(prepared: dict, input_size: int, heatmap_size: int | None) -> dict:
  if heatmap_size is not None:
    prepared[preprocess.HEATMAPS] = heatmaps.encode(
      prepared[preprocess.JOINTS2D_INPUT_PX],
      prepared[preprocess.JOINTS2D_SUPERVISED],
      heatmap_size,
      stride=input_size // heatmap_size,
    )
  return prepared


@tf.autograph.experimental.do_not_convert
def finish_batch(batch: dict, input_size: int, heatmap_size: int | None) -> dict:
  """A batch of ``stage_example``'s examples -> the batch of ``prepare``'s (the step's input).

  The image work, on the whole batch: the new backgrounds (``augment.replace_backgrounds``)
  and colour jitter (``augment.jitter_colours``) on the stored crops, the warp to the
  ``input_size`` crop (``preprocess.warp_batch``), the flip, and the heatmap targets of
  ``heatmap_size`` (None: none). Every example's result depends on its own values alone, so
  a replica's slice of a batch gives that slice of the batch's result, up to float rounding
  (in graph mode the warp's matrix products take other kernels at another batch size, which
  moves a few values by one grey level). Plain TF ops that XLA
  compiles: ``trainer.Trainer`` runs it inside the training step, on the accelerator when
  there is one. ``STAGED_KEYS`` are removed; ``IMAGE`` (B, S, S, 3) uint8 and ``HEATMAPS``
  are added.
  """
  images = tf.cast(batch[STORED_IMAGE], tf.float32)
  masks = tf.cast(batch[STORED_MASK], tf.float32) / 255.0
  images = augment.replace_backgrounds(
    images, masks, batch[BACKGROUND_CELLS], batch[BACKGROUND_KEYS], batch[NEW_BACKGROUND]
  )
  jitter = batch[JITTER_COLOUR]
  images = tf.cond(
    tf.reduce_any(jitter),
    lambda: tf.where(
      jitter[:, None, None, None], augment.jitter_colours(images, batch[COLOUR]), images
    ),
    lambda: images,
  )
  images = preprocess.warp_batch(
    images, batch[INPUT_PX_FROM_STORED_PX], input_size, batch[STORED_SIZE]
  )
  flip = batch[preprocess.FLIPPED][:, None, None, None]
  prepared = {k: v for k, v in batch.items() if k not in STAGED_KEYS}
  prepared[preprocess.IMAGE] = tf.cast(
    tf.where(flip, preprocess.mirror_image(images), images), tf.uint8
  )
  return _with_heatmaps(prepared, input_size, heatmap_size)


@tf.autograph.experimental.do_not_convert
def prepare(
  record: dict,
  seed,
  config: DataConfig,
  training: bool,
  input_size: int,
  heatmap_size: int | None,
  bone_table=None,
) -> dict:
  """One parsed record (``schema.parse``) -> model input and targets (``preprocess``'s keys).

  The crop is ``preprocess``'s square around the labelled 2D joints, jittered
  and flipped by ``augment`` when ``training``. ``input_size`` S and
  ``heatmap_size`` are the network's (``ModelConfig.input_size`` and
  ``.heatmap_size``: the model owns both); a None ``heatmap_size`` leaves the
  heatmap targets out (evaluation, lifting). Returns:
  ``IMAGE`` (S, S, 3) uint8, ``HEATMAPS`` (heatmap_size, heatmap_size, 14),
  ``JOINTS2D_INPUT_PX`` (14, 2), ``JOINTS2D_SUPERVISED`` and
  ``JOINTS2D_VISIBLE`` (14,) (``joint_masks_2d``; heatmap targets are drawn
  at the supervised joints), ``JOINTS3D_VIRTUAL_MM`` (17, 3) root-relative,
  ``HAS_3D``, ``REFERENCE_BONE_LENGTHS_MM`` (16,) and
  ``BONE_LENGTHS_SCALE_FREE`` (``reference_bone_lengths`` of ``bone_table``
  and ``config.bone_length_target``), ``CAMERA_FROM_VIRTUAL`` (3, 3) (before
  the flip), ``FLIPPED`` and ``INPUT_PX_FROM_IMAGE_PX`` (3, 3).

  ``stage_example`` then ``finish_example``: the CPU's per-example path (evaluation, and
  training with ``DataConfig.augment_in_step`` off); without ``training``, serving's crop
  (``preprocess.warp``) bit for bit.
  """
  staged = stage_example(record, seed, config, training, input_size, bone_table)
  return finish_example(staged, input_size, heatmap_size)


@tf.autograph.experimental.do_not_convert
def finish_example(staged: dict, input_size: int, heatmap_size: int | None) -> dict:
  """``finish_batch`` for one of ``stage_example``'s examples, in the ops that are fastest on a
  CPU (TF's fused colour kernels, serving's ``preprocess.warp``): the input pipeline's path.

  The same transforms with the same draws as ``finish_batch``'s; the results agree but for
  float rounding (tests/test_augment.py pins them together: a value may move by one grey
  level). ``finish_batch`` is written for a whole batch on an accelerator and for XLA; on a CPU
  this per-example path costs a fraction of it.
  """
  image = tf.cast(staged[STORED_IMAGE], tf.float32)
  if staged[STORED_IMAGE].shape[0] is not None:  # zero-padded: the crop's own pixels
    image = image[: staged[STORED_SIZE][0], : staged[STORED_SIZE][1]]

  def replaced():
    size = tf.shape(image)
    mask = tf.cast(staged[STORED_MASK][: size[0], : size[1]], tf.float32) / 255.0
    texture = augment.background_textures(
      staged[BACKGROUND_CELLS][None], staged[BACKGROUND_KEYS][None], size[0], size[1]
    )[0]
    return image * mask + texture * (1.0 - mask)

  image = tf.cond(staged[NEW_BACKGROUND], replaced, lambda: image)

  def jittered():
    shift, contrast, saturation = tf.unstack(staged[COLOUR])
    out = tf.image.adjust_contrast(tf.image.adjust_brightness(image, shift), contrast)
    return tf.clip_by_value(tf.image.adjust_saturation(out, saturation), 0.0, 255.0)

  image = tf.cond(staged[JITTER_COLOUR], jittered, lambda: image)
  image = preprocess.warp(image, staged[INPUT_PX_FROM_STORED_PX], input_size)
  image = tf.cond(staged[preprocess.FLIPPED], lambda: preprocess.mirror_image(image), lambda: image)
  prepared = {k: v for k, v in staged.items() if k not in STAGED_KEYS}
  prepared[preprocess.IMAGE] = tf.cast(image, tf.uint8)
  return _with_heatmaps(prepared, input_size, heatmap_size)


# --------------------------------------------------------------------------- streams


def _prepared(
  serialized: tf.data.Dataset,
  config: DataConfig,
  training: bool,
  seed: int,
  bone_table,
  input_size: int,
  heatmap_size: int | None,
) -> tf.data.Dataset:
  ds = tf.data.Dataset.zip((serialized, tf.data.Dataset.random(seed=seed)))
  return ds.map(
    lambda record, s: prepare(
      parsed(record), s, config, training, input_size, heatmap_size, bone_table
    ),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )


def _records(files: list[str], training: bool, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
  """Serialized records of some shards; when training endless, shards and records reshuffled
  every epoch.

  Each shard is checked against the record count its manifest lists as it is
  read (``shards.checked_records``): a short, corrupt or longer shard raises
  InvalidArgumentError naming the file, the counts and the record.
  """
  if not files:
    raise ValueError("no shards to read")
  ds = tf.data.Dataset.from_tensor_slices(
    (tf.constant(files, tf.string), tf.constant(shards.listed_records(files), tf.int64))
  )
  if training:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
  ds = ds.interleave(
    shards.checked_records,
    cycle_length=min(len(files), 8),
    block_length=1,
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  return ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True) if training else ds


def examples(
  files: list[str],
  config: DataConfig,
  training: bool,
  seed: int,
  bone_table=None,
  *,
  input_size: int,
  heatmap_size: int | None,
) -> tf.data.Dataset:
  """Unbatched prepared examples of some shards; endless and shuffled when training.

  ``input_size`` and ``heatmap_size``: the network's (``ModelConfig``); a None
  ``heatmap_size`` makes no heatmap targets.
  """
  records = _records(files, training, seed, config.shuffle_buffer)
  return _prepared(records, config, training, seed, bone_table, input_size, heatmap_size)


def mixed_examples(
  config: DataConfig,
  datasets,
  seed: int,
  bone_table=None,
  *,
  input_size: int,
  heatmap_size: int | None,
) -> tf.data.Dataset:
  """Endless prepared training examples of several converted datasets (``mixed_records``).

  ``input_size`` and ``heatmap_size``: the network's (``ModelConfig``); a None
  ``heatmap_size`` makes no heatmap targets.
  """
  records = mixed_records(config, datasets, seed)
  return _prepared(records, config, True, seed, bone_table, input_size, heatmap_size)


def parsed(record) -> dict:
  """``schema.parse`` of a serialized record; a record TFDS read is a dict of the same keys and
  values already (``tfds_data.training_records``)."""
  return record if isinstance(record, dict) else schema.parse(record)


def mixed_records(config: DataConfig, datasets, seed: int) -> tf.data.Dataset:
  """Endless training records of several converted datasets, mixed throughout: serialized,
  or with ``config.input_source`` "tfds" as TFDS reads them (``schema.parse``'s dicts, the
  crop still its JPEG: ``tfds_data.training_records``); ``parsed`` takes either.

  Each dataset is its own shuffled stream and the streams are sampled in
  proportion to their training records, so any stretch of the stream holds
  the datasets as the whole does. (One interleave over the shards listed
  dataset by dataset streamed the datasets in long phases, which showed in
  training curves as periodic jumps of the 3D loss.)

  Every one of ``datasets`` must be converted into ``config.data_dir`` with a
  training split: FileNotFoundError names the dataset and the folder otherwise
  (a requested dataset is never silently left out).
  """
  if not datasets:
    raise ValueError("no datasets to read")
  require_manifests(config.data_dir, datasets)
  # Checked against the manifests whichever source reads them (TFDS lists the same shards).
  files = {
    d: shard_files(config.data_dir, d, "train", check_digests=config.verify_shard_digests)
    for d in datasets
  }
  empty = [d for d, f in files.items() if not f]
  if empty:
    raise FileNotFoundError(
      f"--data_dir {config.data_dir}: no training shards of {', '.join(empty)} "
      "(their manifests list no train split)"
    )
  streams = [
    tfds_data.training_records(config.data_dir, dataset, seed + index, config.shuffle_buffer)
    if config.input_source == "tfds"
    else _records(paths, True, seed + index, config.shuffle_buffer)
    for index, (dataset, paths) in enumerate(files.items())
  ]
  counts = [
    load_manifest(config.data_dir, dataset)["splits"]["train"]["records"] for dataset in files
  ]
  weights = [c / sum(counts) for c in counts]
  return (
    streams[0]
    if len(streams) == 1
    else tf.data.Dataset.sample_from_datasets(streams, weights, seed=seed)
  )


TRAINING_STAGES = ("pretrain2d", "full", "full3d")


def stage_datasets(config: DataConfig, stage: str) -> tuple[str, ...]:
  """The datasets ``training_dataset`` reads for ``stage``: pre-training only the 2D ones."""
  if stage not in TRAINING_STAGES:
    raise ValueError(f"unknown stage {stage!r}; expected one of {TRAINING_STAGES}")
  return {
    "pretrain2d": config.datasets_2d,
    "full": config.datasets_3d + config.datasets_2d,
    "full3d": config.datasets_3d,
  }[stage]


def training_dataset(
  config: DataConfig, stage: str, *, input_size: int, heatmap_size: int
) -> tf.data.Dataset:
  """Batches of ``config.batch_size`` (the global batch) for ``pretrain2d`` (the 2D datasets
  only), ``full`` (3D and 2D-only data, ``config.batch_composition``) or ``full3d`` (3D only:
  the "no 2D data" ablation), from ``config.datasets_2d`` and ``config.datasets_3d``.

  Stage ``full`` with ``across_steps`` (the paper's design card) alternates
  whole batches, a 3D one then a 2D-only one: every batch has one domain and
  one set of labels. With ``within_step`` every batch holds one batch of each
  kind, 2 * ``batch_size`` samples interleaved 3D, 2D, 3D, 2D...
  (``interleave_samples``), for one update on both; the losses still divide
  by ``batch_size`` (the trainer's ``global_batch_size``), so each kind's mean
  counts as it does across steps and step k's loss is the sum of the losses
  of across_steps' batches 2k and 2k + 1. Shapes are static either way: the
  losses are masked by what each sample carries, so one traced step serves
  every batch. ``input_size`` and ``heatmap_size`` are the network's
  (``ModelConfig``): the sides of the crops and heatmap targets.

  Where augmentation runs is ``augments_in_step(config)``'s: in the training step, the batches
  are ``stage_example``'s (decoded crops, labels and the per-example draws), the image work
  left to ``finish_batch`` (``trainer.Trainer`` does it; call it yourself to look at the
  images); in the pipeline, every example is finished here (``finish_example``). The same
  batches result but for float rounding (a grey level here and there).

  Only the datasets the stage reads must be converted: pre-training needs no
  3D dataset. With 3D data, samples carry reference bone lengths of the 3D
  datasets' training subjects (the ``bone_2d`` loss of samples without 3D
  labels); pre-training's carry zeros there, which its weights ignore.
  Raises ValueError on an unknown stage and FileNotFoundError naming a
  requested dataset missing from ``config.data_dir`` (``require_manifests``).
  """
  require_manifests(config.data_dir, stage_datasets(config, stage))
  batch = config.batch_size
  bones = None if stage == "pretrain2d" else bone_length_table(config.data_dir, config.datasets_3d)
  in_step = augments_in_step(config)
  # Decoded crops are padded to one side so that they batch (finish_example reads the crop's own).
  stored_side = stored_crop_side(config.data_dir, stage_datasets(config, stage))

  def stream(datasets, seed):
    # Decoding and the draws per example, the label arithmetic per batch (stage_batch); in the
    # pipeline's path the image work then runs per example again (finish_example).
    records = mixed_records(config, datasets, seed)
    staged = (
      tf.data.Dataset.zip((records, tf.data.Dataset.random(seed=seed)))
      .map(
        lambda record, s: decode_example(parsed(record), s, config, True, bones, stored_side),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
      )
      .batch(batch, drop_remainder=True)
      .map(
        lambda b: stage_batch(b, input_size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
      )
    )
    if in_step:
      return staged
    finished = staged.unbatch().map(
      lambda example: finish_example(example, input_size, heatmap_size),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
    return finished.batch(batch, drop_remainder=True)

  if stage != "full3d":
    stream_2d = stream(config.datasets_2d, config.seed)
  if stage == "pretrain2d":
    return stream_2d.prefetch(tf.data.AUTOTUNE)
  stream_3d = stream(config.datasets_3d, config.seed + 1)
  if stage == "full3d":
    return stream_3d.prefetch(tf.data.AUTOTUNE)
  if config.batch_composition == "within_step":
    return (
      tf.data.Dataset.zip((stream_3d, stream_2d)).map(interleave_samples).prefetch(tf.data.AUTOTUNE)
    )
  choice = tf.data.Dataset.range(2).repeat()
  return tf.data.Dataset.choose_from_datasets([stream_3d, stream_2d], choice).prefetch(
    tf.data.AUTOTUNE
  )


def augments_in_step(config: DataConfig) -> bool:
  """Whether augmentation's image work runs in the training step: ``config.augment_in_step``,
  or where that is None (the default), whether TensorFlow sees an accelerator (a GPU or TPU).
  On a CPU alone, the pipeline's parallel per-example path (``finish_example``) is the faster
  one and overlaps the step (docs/benchmarks.md, "Augmentation inside the training step")."""
  if config.augment_in_step is not None:
    return config.augment_in_step
  return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def stored_crop_side(data_dir: str, datasets) -> int:
  """The largest side (pixels) of the crops the converter stored for ``datasets``: their
  manifests' ``options.crop_size`` (beam_preprocess.convert --crop_size). ValueError names a
  manifest without it (a conversion older than the option)."""
  sides = []
  for dataset in datasets:
    side = load_manifest(data_dir, dataset).get("options", {}).get("crop_size")
    if side is None:
      raise ValueError(
        f"the {dataset} manifest in {data_dir} has no options.crop_size; convert it again"
      )
    sides.append(int(side))
  return max(sides)


@tf.autograph.experimental.do_not_convert
def interleave_samples(first: dict, second: dict) -> dict:
  """One batch of 2B samples from two of B with the same keys: first[0], second[0], first[1]...

  Interleaved rather than concatenated so that every contiguous slice of an
  even length, such as the trainer's per-replica slices under a
  MirroredStrategy (``Loop._distributed_step``), holds as many samples of one
  batch as of the other. Shapes stay static (B must be).
  """
  merged = {}
  for key, value in first.items():
    pair = tf.stack([value, second[key]], axis=1)  # (B, 2, ...)
    merged[key] = tf.reshape(pair, [2 * value.shape[0], *value.shape[1:]])
  return merged
