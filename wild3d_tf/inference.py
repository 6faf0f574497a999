"""From a trained network to poses in the original camera: the one inference path
that evaluation, export (and so TF Serving) and the predict CLI share.

The network sees a square crop and answers in the camera that looks at the
crop's centre (the labels were rotated into it in training, datasets.md 7).
``Predictor`` runs it (optionally with flip test-time augmentation), decodes
the heatmaps to 2D joints, maps them back to original-image pixels and
rotates the 3D pose back into the original camera. Without intrinsics the
camera defaults to a 55 degree field of view across the longer image side,
principal point at the centre (MeTRAbs' convention).
"""

from __future__ import annotations

import json
import math
import pathlib

import keras
import tensorflow as tf

from wild3d_tf import geometry_tf, heatmaps, model, skeletons
from wild3d_tf.config import ModelConfig

DEFAULT_FOV_DEGREES = 55.0
# A user's person box is treated like the box around the 2D joints in training:
# the crop is the square of side (1 + 2 * margin) times its longer side.
BOX_MARGIN = 0.2
FLIP_2D = skeletons.POSE2D.flip_permutation
FLIP_3D = skeletons.POSE3D.flip_permutation


def load_network(model_dir: str) -> keras.Model:
  """The float32 network of a training run's newest checkpoint.

  Raises FileNotFoundError naming ``model_dir`` when it has no config or no
  checkpoint, and an error when the checkpoint does not fit the network, so
  a default-initialised model is never evaluated or exported by mistake.
  """
  folder = pathlib.Path(model_dir)
  config_path = folder / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{model_dir}: no config.json; not a wild3d training directory")
  latest = tf.train.latest_checkpoint(model_dir)
  if latest is None:
    raise FileNotFoundError(
      f"{model_dir}: no checkpoint (training has not saved one yet, or it was removed)"
    )
  settings = json.loads(config_path.read_text())
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("float32")  # serve in float32 whatever the training policy was
  try:
    network = model.build_model(
      config=ModelConfig(**settings["model"]), variant=settings["variant"]
    )
  finally:
    keras.config.set_dtype_policy(previous)
  status = tf.train.Checkpoint(network=network).restore(latest)
  try:
    status.expect_partial().assert_existing_objects_matched()
  except AssertionError as error:
    raise ValueError(
      f"{latest}: checkpoint does not match the network of {config_path}: {error}"
    ) from None
  return network


def default_intrinsics(height, width, fov_degrees: float = DEFAULT_FOV_DEGREES):
  """(3, 3) float32 K for an image of this size: ``fov_degrees`` across the longer side."""
  height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  focal = tf.maximum(height, width) / (2.0 * math.tan(math.radians(fov_degrees) / 2))
  return tf.stack(
    [
      tf.stack([focal, 0.0, (width - 1) / 2]),
      tf.stack([0.0, focal, (height - 1) / 2]),
      tf.constant([0.0, 0.0, 1.0]),
    ]
  )


def box_to_square(box, height, width, margin: float = BOX_MARGIN):
  """(x_min, y_min, x_max, y_max) -> (cx, cy, side); an all-zero box means the whole image."""
  height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  given = tf.reduce_any(tf.not_equal(box, 0.0))
  centre = tf.where(given, (box[:2] + box[2:]) / 2, tf.stack([(width - 1) / 2, (height - 1) / 2]))
  side = tf.where(
    given, (1 + 2 * margin) * tf.reduce_max(box[2:] - box[:2]), tf.maximum(height, width)
  )
  return tf.concat([centre, side[None]], 0)


def crop(image, square, size: int):
  """(size, size, 3) float32 crop of a (H, W, 3) uint8 image, and its (3, 3) input-from-image map.

  Large downscales go through an intermediate crop of at most 4 x ``size``
  and an antialiased resize, so a 4000 px photo does not alias; the big
  image itself is never cast to float.
  """
  factor = tf.clip_by_value(tf.round(square[2] / size), 1.0, 4.0)
  middle = tf.cast(factor, tf.int32) * size
  to_middle = geometry_tf.crop_matrix(square, tf.cast(middle, tf.float32))
  inverse = tf.linalg.inv(to_middle)
  transform = tf.reshape(inverse, [9])[:8] / inverse[2, 2]
  warped = tf.raw_ops.ImageProjectiveTransformV3(
    images=image[None],
    transforms=transform[None],
    output_shape=tf.stack([middle, middle]),
    fill_value=tf.constant(0.0),
    interpolation="BILINEAR",
    fill_mode="CONSTANT",
  )[0]
  resized = tf.image.resize(tf.cast(warped, tf.float32), [size, size], antialias=True)
  # Rounded like the training crops, which are stored as uint8.
  return tf.round(tf.clip_by_value(resized, 0.0, 255.0)), geometry_tf.crop_matrix(
    square, float(size)
  )


def unflip_pose(pose):
  """A (B, 17, 3) pose predicted on a mirrored crop, mirrored back (x negated, left and right swapped)."""
  return tf.gather(pose * [-1.0, 1.0, 1.0], FLIP_3D, axis=1)


class Predictor:
  """Runs the network on crops and maps its answers back to the original image and camera."""

  def __init__(self, network: keras.Model, flip: bool = False):
    self.network = network
    self.flip = flip
    self.input_size = network.input_shape[1]

  def on_crops(self, crops) -> dict:
    """``pose3d_crop`` (B, 17, 3) mm root-relative in the crop's camera, ``heatmaps``,
    ``joints2d_input`` (B, 14, 2) crop pixels and ``confidence`` (B, 14)."""
    outputs = self.network(crops, training=False)
    maps, pose = outputs["heatmaps"], outputs["pose3d"]
    if self.flip:
      mirrored = self.network(crops[:, :, ::-1], training=False)
      maps = (maps + tf.gather(mirrored["heatmaps"][:, :, ::-1], FLIP_2D, axis=-1)) / 2
      pose = (pose + unflip_pose(mirrored["pose3d"])) / 2
    joints, peak = heatmaps.decode(maps)
    return {
      "pose3d_crop": pose - pose[:, :1],
      "heatmaps": maps,
      "joints2d_input": joints,
      "confidence": tf.clip_by_value(peak, 0.0, 1.0),
    }

  def on_images(self, crops, image_from_input, intrinsics) -> dict:
    """Adds ``pose3d`` in the original camera and ``pose2d`` in original pixels.

    ``image_from_input`` (B, 3, 3) maps crop pixels to original pixels and
    ``intrinsics`` (B, 3, 3) is the original camera's K (pinhole).
    """
    out = self.on_crops(crops)
    image_from_input = tf.cast(image_from_input, tf.float32)
    intrinsics = tf.cast(intrinsics, tf.float32)
    half = (self.input_size - 1) / 2
    centre = geometry_tf.apply_affine(tf.fill([tf.shape(crops)[0], 1, 2], half), image_from_input)[
      :, 0
    ]
    rotation = geometry_tf.virtual_camera_rotation(
      geometry_tf.pixels_to_normalized(centre, intrinsics)
    )
    out["pose3d"] = geometry_tf.virtual_to_camera(out["pose3d_crop"], rotation)
    out["pose2d"] = geometry_tf.apply_affine(out["joints2d_input"], image_from_input)
    return out
