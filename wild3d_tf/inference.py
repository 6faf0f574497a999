"""From a trained network to poses in the original camera: the one inference path
that evaluation, export (and so TF Serving) and the predict CLI share.

The network sees a square crop and answers in the camera that looks at the
crop's centre (the labels were rotated into it in training; perspective
correction in docs/datasets.md).
``Predictor`` runs it (optionally with flip test-time augmentation), decodes
the heatmaps to 2D joints, maps them back to original-image pixels and
rotates the 3D pose back into the original camera. Without intrinsics the
camera defaults to ``cameras.DEFAULT_FOV_DEGREES`` across the longer image
side, principal point at the centre (MeTRAbs' convention). The crop itself
(box, matrix, resampling, mirror) is ``preprocess``'s, shared with training.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from wild3d_tf import checkpoints, config, geometry_tf, heatmaps, model, preprocess
from wild3d_tf.cameras import DEFAULT_FOV_DEGREES


def load_network(model_dir: str) -> keras.Model:
  """The float32 network of a training run's newest checkpoint, built from the run's
  ``config.json`` (``config.load``).

  Raises FileNotFoundError naming ``model_dir`` when it has no config or no
  checkpoint, ``checkpoints.CheckpointError`` naming the files when ckpt-* files are there
  but none is complete, ValueError naming config.json when it does not parse, and
  ValueError when the checkpoint does not fit the network, so a
  default-initialised model is never evaluated or exported by mistake.
  """
  run_config = config.load(model_dir)
  latest = checkpoints.find_latest_complete(model_dir)  # not fooled by a lost state file
  if latest is None:
    raise FileNotFoundError(
      f"{model_dir}: no checkpoint (training has not saved one yet, or it was removed)"
    )
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("float32")  # serve in float32 whatever the training policy was
  try:
    network = model.build_model(run_config.model)
  finally:
    keras.config.set_dtype_policy(previous)
  status = tf.train.Checkpoint(network=network).restore(latest)
  try:
    status.expect_partial().assert_existing_objects_matched()
  except AssertionError as error:
    source = config.config_path(model_dir)
    raise ValueError(
      f"{latest}: checkpoint does not match the network of {source}: {error}"
    ) from None
  return network


def default_intrinsics(height, width, fov_degrees: float = DEFAULT_FOV_DEGREES):
  """(..., 3, 3) float32 K for images of this size (``height``, ``width`` (...)):
  ``fov_degrees`` across the longer side, the principal point at the image's centre."""
  height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  focal = tf.maximum(height, width) / (2.0 * math.tan(math.radians(fov_degrees) / 2))
  return intrinsics_matrix(focal, focal, (width - 1) / 2, (height - 1) / 2)


def intrinsics_matrix(fx, fy, cx, cy):
  """(..., 3, 3) K of focal lengths and principal points (...), pixels."""
  zero = tf.zeros_like(fx)
  return tf.stack(
    [
      tf.stack([fx, zero, cx], -1),
      tf.stack([zero, fy, cy], -1),
      tf.stack([zero, zero, tf.ones_like(fx)], -1),
    ],
    -2,
  )


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
      mirrored = self.network(preprocess.mirror_image(crops), training=False)
      maps = (maps + preprocess.mirror_heatmaps(mirrored["heatmaps"])) / 2
      pose = (pose + preprocess.mirror_pose3d(mirrored["pose3d"])) / 2
    # The stride follows from the network's shapes (ModelConfig.stride), not a typed 16.
    joints, peak = heatmaps.decode(maps, stride=self.input_size // maps.shape[1])
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
