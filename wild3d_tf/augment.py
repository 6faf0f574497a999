"""Training augmentation: random crop jitter, flip, colour jitter and background replacement.

Pure functions of tensors and stateless seeds ((2,) int64, e.g. from
``tf.random.experimental.stateless_split``): the same seed gives the same
augmentation, so a resumed run sees exactly the batches an uninterrupted
run would. ``data.prepare`` applies them to one example; the geometry they
drive (crop matrix, warp, mirror) is ``preprocess``'s, shared with serving.
"""

from __future__ import annotations

import math

import tensorflow as tf


def jitter_square(
  square,
  seed,
  scale_range: float,
  rotation_degrees: float,
  shift: float,
  flip: bool,
):
  """A random scale, shift, in-plane rotation and flip of a crop square.

  ``square`` (3,) float64 (cx, cy, side) pixels. The side is multiplied by a
  factor uniform in ``1 +- scale_range``, the centre moved by up to ``shift``
  times the side along each axis, the angle (radians) is uniform in
  ``+- rotation_degrees`` and the flip is a fair coin when ``flip`` allows it.
  Returns (square (3,) float64, angle () float64, flip () bool).
  """
  seeds = tf.random.experimental.stateless_split(seed, 4)
  square = tf.cast(square, tf.float64)
  scale = 1.0 + tf.random.stateless_uniform([], seeds[0], -scale_range, scale_range, tf.float64)
  angle = tf.random.stateless_uniform([], seeds[1], -1.0, 1.0, tf.float64) * math.radians(
    rotation_degrees
  )
  offset = tf.random.stateless_uniform([2], seeds[2], -shift, shift, tf.float64) * square[2]
  flipped = flip & (tf.random.stateless_uniform([], seeds[3], 0, 1, tf.float64) < 0.5)
  return tf.concat([square[:2] + offset, [square[2] * scale]], 0), angle, flipped


def coin(seed, probability: float):
  """() bool, true with ``probability``."""
  return tf.random.stateless_uniform([], seed) < probability


def background_texture(seed, shape):
  """(H, W, 3) float32 random smooth texture in [0, 255] for ``shape`` (H, W, 3)."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  coarse = tf.random.stateless_uniform([6, 6, 3], seeds[0], 0.0, 255.0)
  smooth = tf.image.resize(coarse[None], shape[:2], method="bicubic")[0]
  return tf.clip_by_value(
    smooth + tf.random.stateless_normal(shape, seeds[1], 0.0, 12.0), 0.0, 255.0
  )


def replace_background(image, mask, seed):
  """(H, W, 3) float32 image with a random texture where the (H, W, 1) mask in [0, 1] is 0.

  The mask is the foreground (a studio's person mask), so the studio's
  background is replaced and the person kept.
  """
  return image * mask + background_texture(seed, tf.shape(image)) * (1.0 - mask)


def jitter_colour(image, seed):
  """(H, W, 3) float32 image in [0, 255] with random brightness, contrast and saturation."""
  seeds = tf.random.experimental.stateless_split(seed, 3)
  image = tf.image.stateless_random_brightness(image, 0.2 * 255.0, seeds[0])
  image = tf.image.stateless_random_contrast(image, 0.7, 1.3, seeds[1])
  image = tf.image.stateless_random_saturation(image, 0.7, 1.3, seeds[2])
  return tf.clip_by_value(image, 0.0, 255.0)
