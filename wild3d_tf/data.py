"""tf.data over the converter's shards: parse, decode, augment, make targets, batch.

Every random decision comes from a stateless seed drawn per element by
``Dataset.random`` and the pipeline holds no Python, so the iterator can be
checkpointed and a resumed run sees exactly the batches an uninterrupted run
would. Augmentation moves the image, the 2D joints and the 3D joints
together: scale, rotation and translation of the crop, horizontal flip with
left/right swap, colour jitter and background replacement. The 3D labels are
rotated into the camera that looks at the final crop's centre (perspective
correction, datasets.md 7), then by the crop's in-plane rotation, then
mirrored with the flip, and made root-relative.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib

import numpy as np
import tensorflow as tf

from wild3d_tf import geometry_tf, heatmaps, schema, skeletons
from wild3d_tf.config import DataConfig

FLIP_2D = skeletons.POSE2D.flip_permutation
FLIP_3D = skeletons.POSE3D.flip_permutation


# --------------------------------------------------------------------------- shards


def load_manifest(data_dir: str, dataset: str) -> dict:
  path = pathlib.Path(data_dir) / f"{dataset}.manifest.json"
  if not path.is_file():
    raise FileNotFoundError(
      f"no manifest for {dataset} in {data_dir} ({path.name}): the conversion did not "
      "finish, or never ran; run python -m beam_preprocess.convert"
    )
  return json.loads(path.read_text())


def shard_files(data_dir: str, dataset: str, split: str, check_digests: bool = False) -> list[str]:
  """The shards the manifest lists, checked against the folder (and their SHA-256 if asked)."""
  manifest = load_manifest(data_dir, dataset)
  if split not in manifest["splits"]:
    return []
  listed = [entry["file"] for entry in manifest["splits"][split]["shards"]]
  present = {p.name for p in pathlib.Path(data_dir).glob(f"{dataset}-{split}.tfrecord-*")}
  missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
  if missing or extra:
    raise FileNotFoundError(
      f"{data_dir}: shards of {dataset}/{split} differ from its manifest: "
      f"missing {missing}, not listed {extra}"
    )
  if check_digests:
    for entry in manifest["splits"][split]["shards"]:
      digest = hashlib.sha256((pathlib.Path(data_dir) / entry["file"]).read_bytes()).hexdigest()
      if digest != entry["sha256"]:
        raise ValueError(
          f"{entry['file']}: SHA-256 {digest} differs from the manifest's {entry['sha256']}"
        )
  return [str(pathlib.Path(data_dir) / name) for name in listed]


def bone_length_table(data_dir: str, datasets=("h36m", "mpi_inf_3dhp")) -> np.ndarray:
  """(subjects, 16) mean bone lengths (mm) of the training subjects of the 3D datasets present."""
  rows = []
  for dataset in datasets:
    if (pathlib.Path(data_dir) / f"{dataset}.manifest.json").is_file():
      rows += list(load_manifest(data_dir, dataset)["bone_lengths_mm"].get("train", {}).values())
  if not rows:
    raise ValueError(
      f"no training-subject bone lengths in the manifests of {datasets} under {data_dir}"
    )
  return np.array(rows, np.float32)


# --------------------------------------------------------------------------- one example


def _affine(config: DataConfig, center, side, training: bool, seed):
  """(3, 3) map from stored-crop pixels to input pixels, the in-plane angle and the flip flag."""
  size = config.input_size
  seeds = tf.random.experimental.stateless_split(seed, 4)
  if training:
    scale = 1.0 + tf.random.stateless_uniform(
      [], seeds[0], -config.scale_range, config.scale_range, tf.float64
    )
    angle = tf.random.stateless_uniform([], seeds[1], -1.0, 1.0, tf.float64) * math.radians(
      config.rotation_degrees
    )
    shift = (
      tf.random.stateless_uniform([2], seeds[2], -config.shift, config.shift, tf.float64) * side
    )
    flip = config.flip & (tf.random.stateless_uniform([], seeds[3], 0, 1, tf.float64) < 0.5)
  else:
    scale, angle, shift, flip = (
      tf.constant(1.0, tf.float64),
      tf.constant(0.0, tf.float64),
      tf.zeros([2], tf.float64),
      tf.constant(False),
    )
  k = size / (side * scale)
  c, s = tf.cos(angle), tf.sin(angle)
  half = (size - 1) / 2
  origin = center + shift
  zero = tf.constant(0.0, tf.float64)
  one = tf.constant(1.0, tf.float64)
  # input = R(angle) * k * (x - origin) + half
  matrix = tf.stack(
    [
      tf.stack([k * c, -k * s, half - k * (c * origin[0] - s * origin[1])]),
      tf.stack([k * s, k * c, half - k * (s * origin[0] + c * origin[1])]),
      tf.stack([zero, zero, one]),
    ]
  )
  mirror = tf.constant([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], tf.float64)
  matrix = tf.where(flip, mirror @ matrix, matrix)
  return matrix, angle, flip


def _warp(image, matrix, size):
  inverse = tf.linalg.inv(matrix)
  transform = tf.cast(tf.reshape(inverse, [9])[:8] / inverse[2, 2], tf.float32)
  return tf.raw_ops.ImageProjectiveTransformV3(
    images=image[None],
    transforms=transform[None],
    output_shape=tf.constant([size, size], tf.int32),
    fill_value=tf.constant(0.0),
    interpolation="BILINEAR",
    fill_mode="CONSTANT",
  )[0]


def _background(seed, shape):
  """A random smooth texture, used where a foreground mask lets us replace the studio."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  coarse = tf.random.stateless_uniform([6, 6, 3], seeds[0], 0.0, 255.0)
  smooth = tf.image.resize(coarse[None], shape[:2], method="bicubic")[0]
  return tf.clip_by_value(
    smooth + tf.random.stateless_normal(shape, seeds[1], 0.0, 12.0), 0.0, 255.0
  )


def _color(image, seed):
  seeds = tf.random.experimental.stateless_split(seed, 3)
  image = tf.image.stateless_random_brightness(image, 0.2 * 255.0, seeds[0])
  image = tf.image.stateless_random_contrast(image, 0.7, 1.3, seeds[1])
  image = tf.image.stateless_random_saturation(image, 0.7, 1.3, seeds[2])
  return tf.clip_by_value(image, 0.0, 255.0)


def prepare(record: dict, seed, config: DataConfig, training: bool, bone_table=None) -> dict:
  """One parsed record (``schema.parse``) -> model input and targets.

  Returns ``image`` (S, S, 3) uint8, ``heatmaps`` (S/16, S/16, 14),
  ``joints2d`` (14, 2) input pixels, ``joints2d_visible`` (14,),
  ``joints3d`` (17, 3) mm root-relative in the crop's camera, ``has_3d``,
  ``reference_bone_lengths`` (16,), ``crop_rotation`` (3, 3) virtual-to-camera
  (before the flip), ``flipped``, and ``input_from_image`` (3, 3).
  """
  size = config.input_size
  seeds = tf.random.experimental.stateless_split(
    tf.stack([seed, tf.constant(config.seed, tf.int64)]), 5
  )
  image = tf.cast(tf.io.decode_jpeg(record["image/encoded"], channels=3), tf.float32)
  if training:

    def replaced():
      mask = tf.cast(tf.io.decode_png(record["mask/encoded"], channels=1), tf.float32) / 255.0
      return image * mask + _background(seeds[0], tf.shape(image)) * (1.0 - mask)

    use = (record["has_mask"] > 0) & (
      tf.random.stateless_uniform([], seeds[1]) < config.background_probability
    )
    image = tf.cond(use, replaced, lambda: image)
    if config.color:
      image = _color(image, seeds[2])

  labelled = record["joints2d/labelled"] > 0
  box = geometry_tf.crop_box(record["joints2d"], labelled, margin=config.box_margin, min_side=16.0)
  matrix, angle, flip = _affine(config, box[:2], box[2], training, seeds[3])
  image = tf.cast(tf.round(tf.clip_by_value(_warp(image, matrix, size), 0.0, 255.0)), tf.uint8)

  joints2d = geometry_tf.apply_affine(record["joints2d"], matrix)
  inside = tf.reduce_all((joints2d >= 0) & (joints2d <= size - 1), axis=-1)
  visible = (record["joints2d/visible"] > 0) & inside
  joints2d = tf.where(flip, tf.gather(joints2d, FLIP_2D), joints2d)
  visible = tf.where(flip, tf.gather(visible, FLIP_2D), visible)

  # Perspective correction: the ray through the final crop's centre, in the original camera.
  input_from_image = matrix @ record["crop/from_image"]
  center = tf.linalg.solve(
    input_from_image, tf.constant([[(size - 1) / 2], [(size - 1) / 2], [1.0]], tf.float64)
  )
  center = center[:2, 0] / center[2, 0]
  ray = geometry_tf.undistort_h36m(
    geometry_tf.pixels_to_normalized(center, record["camera/intrinsics"]),
    record["camera/distortion"],
  )
  rotation = tf.where(
    record["camera/has_intrinsics"] > 0,
    geometry_tf.virtual_camera_rotation(ray),
    tf.eye(3, dtype=tf.float64),
  )
  c, s = tf.cos(angle), tf.sin(angle)
  zero, one = tf.constant(0.0, tf.float64), tf.constant(1.0, tf.float64)
  in_plane = tf.stack(
    [tf.stack([c, -s, zero]), tf.stack([s, c, zero]), tf.stack([zero, zero, one])]
  )
  joints3d = geometry_tf.camera_to_virtual(record["joints3d"], rotation) @ tf.transpose(in_plane)
  joints3d = joints3d - joints3d[:1]
  mirrored = tf.gather(joints3d * tf.constant([-1.0, 1.0, 1.0], tf.float64), FLIP_3D)
  joints3d = tf.where(flip, mirrored, joints3d)

  if bone_table is not None:
    table = tf.constant(bone_table, tf.float32)
    index = tf.random.stateless_uniform([], seeds[4], 0, tf.shape(table)[0], tf.int32)
    reference = tf.gather(table, index)
  else:
    reference = tf.zeros([len(skeletons.POSE3D.bones)], tf.float32)
  return {
    "image": image,
    "heatmaps": heatmaps.encode(tf.cast(joints2d, tf.float32), visible, size // 16),
    "joints2d": tf.cast(joints2d, tf.float32),
    "joints2d_visible": tf.cast(visible, tf.float32),
    "joints3d": tf.cast(joints3d, tf.float32),
    "has_3d": tf.cast(record["has_3d"], tf.float32),
    "reference_bone_lengths": reference,
    "crop_rotation": rotation,
    "flipped": flip,
    "input_from_image": input_from_image,
  }


# --------------------------------------------------------------------------- streams


def _prepared(
  serialized: tf.data.Dataset, config: DataConfig, training: bool, seed: int, bone_table
) -> tf.data.Dataset:
  ds = tf.data.Dataset.zip((serialized, tf.data.Dataset.random(seed=seed)))
  return ds.map(
    lambda record, s: prepare(schema.parse(record), s, config, training, bone_table),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )


def _records(files: list[str], training: bool, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
  """Serialized records of some shards; endless, shards and records reshuffled every epoch, when training."""
  if not files:
    raise ValueError("no shards to read")
  ds = tf.data.Dataset.from_tensor_slices(files)
  if training:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
  ds = ds.interleave(
    tf.data.TFRecordDataset,
    cycle_length=min(len(files), 8),
    block_length=1,
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  return ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True) if training else ds


def examples(
  files: list[str], config: DataConfig, training: bool, seed: int, bone_table=None
) -> tf.data.Dataset:
  """Unbatched prepared examples of some shards; endless and shuffled when training."""
  return _prepared(
    _records(files, training, seed, config.shuffle_buffer), config, training, seed, bone_table
  )


def mixed_examples(config: DataConfig, datasets, seed: int, bone_table=None) -> tf.data.Dataset:
  """Endless prepared training examples of several converted datasets (``mixed_records``)."""
  return _prepared(mixed_records(config, datasets, seed), config, True, seed, bone_table)


def mixed_records(config: DataConfig, datasets, seed: int) -> tf.data.Dataset:
  """Endless serialized training records of several converted datasets, mixed throughout.

  Each dataset is its own shuffled stream and the streams are sampled in
  proportion to their training records, so any stretch of the stream holds
  the datasets as the whole does. (One interleave over the shards listed
  dataset by dataset streamed the datasets in long phases, which showed in
  training curves as periodic jumps of the 3D loss.)
  """
  files = {d: shard_files(config.data_dir, d, "train") for d in datasets}
  files = {d: f for d, f in files.items() if f}
  if not files:
    raise ValueError(
      f"{config.data_dir}: no training shards of {tuple(datasets)}; convert them first"
    )
  streams = [
    _records(shards, True, seed + index, config.shuffle_buffer)
    for index, shards in enumerate(files.values())
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


def training_dataset(
  config: DataConfig, stage: str, global_batch_size: int | None = None
) -> tf.data.Dataset:
  """Batches for ``pretrain2d`` (2D stream only), ``full`` (2D and 3D batches alternating)
  or ``full3d`` (3D only: the "no 2D data" ablation).

  Alternating whole batches (rather than mixing samples) gives every batch one
  domain and one set of labels, as the design card's train_step expects, and
  keeps shapes static: the losses are masked by what each sample carries, so
  one traced step serves both kinds.
  """
  batch = global_batch_size or config.batch_size
  bones = bone_length_table(config.data_dir)
  stream_2d = mixed_examples(config, config.datasets_2d, config.seed, bones).batch(
    batch, drop_remainder=True
  )
  if stage == "pretrain2d":
    return stream_2d.prefetch(tf.data.AUTOTUNE)
  if stage not in ("full", "full3d"):
    raise ValueError(f"unknown stage {stage!r}; expected pretrain2d, full or full3d (no 2D data)")
  stream_3d = mixed_examples(config, config.datasets_3d, config.seed + 1, bones).batch(
    batch, drop_remainder=True
  )
  if stage == "full3d":
    return stream_3d.prefetch(tf.data.AUTOTUNE)
  choice = tf.data.Dataset.range(2).repeat()
  return tf.data.Dataset.choose_from_datasets([stream_3d, stream_2d], choice).prefetch(
    tf.data.AUTOTUNE
  )
