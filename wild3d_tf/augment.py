"""Training augmentation: random crop jitter, flip, colour jitter and background replacement.

Pure functions of tensors and stateless seeds ((2,) int64, e.g. from
``tf.random.experimental.stateless_split``): the same seed gives the same
augmentation, so a resumed run sees exactly the batches an uninterrupted
run would. The draws are made per example on the CPU (``data.stage_example``: the
crop's jitter and flip, the colour factors, which examples get a new
background); the image work runs on whole batches inside the training step
(``data.finish_batch``: ``replace_backgrounds``, ``jitter_colours``), where an
accelerator does it. The geometry (crop matrix, warp, mirror) is
``preprocess``'s, shared with serving.
"""

from __future__ import annotations

import math

import tensorflow as tf


def crop_jitter(seed, scale_range: float, rotation_degrees: float, shift: float, flip: bool):
  """The random draws of ``jitter_square``: ((4,) float64, () bool).

  The (4,) holds the side's factor, uniform in ``1 +- scale_range``, the
  in-plane angle (radians), uniform in ``+- rotation_degrees``, and the
  centre's shift along x and y in box sides, each uniform in ``+- shift``; the
  bool is the flip, a fair coin when ``flip`` allows it. ``NO_CROP_JITTER``
  (and no flip) leaves a square as it is.
  """
  seeds = tf.random.experimental.stateless_split(seed, 4)
  scale = 1.0 + tf.random.stateless_uniform([1], seeds[0], -scale_range, scale_range, tf.float64)
  angle = tf.random.stateless_uniform([1], seeds[1], -1.0, 1.0, tf.float64) * math.radians(
    rotation_degrees
  )
  offset = tf.random.stateless_uniform([2], seeds[2], -shift, shift, tf.float64)
  flipped = flip & (tf.random.stateless_uniform([], seeds[3], 0, 1, tf.float64) < 0.5)
  return tf.concat([scale, angle, offset], 0), flipped


NO_CROP_JITTER = (1.0, 0.0, 0.0, 0.0)  # crop_jitter's draws of an unchanged square


def jitter_square(square, jitter):
  """``square`` (3,) float64 (cx, cy, side) pixels moved by ``crop_jitter``'s (4,) draws:
  the side scaled, the centre shifted by the draws times the side. Returns (square (3,)
  float64, angle () float64 radians). Arithmetic only (no random op), so ``tf.vectorized_map``
  runs it on a batch as one."""
  square = tf.cast(square, tf.float64)
  jitter = tf.cast(jitter, tf.float64)
  centre = square[:2] + jitter[2:] * square[2]
  return tf.concat([centre, [square[2] * jitter[0]]], 0), jitter[1]


def coin(seed, probability: float):
  """() bool, true with ``probability``."""
  return tf.random.stateless_uniform([], seed) < probability


TEXTURE_CELLS = 6  # the background texture's random grid, bicubically enlarged to the image
TEXTURE_NOISE = 12.0  # grey levels: the standard deviation of the texture's pixel noise
BRIGHTNESS = 0.2 * 255.0  # colour jitter: brightness shift up to this many grey levels
CONTRAST = (0.7, 1.3)  # contrast factor range
SATURATION = (0.7, 1.3)  # saturation factor range


def _bicubic_matrix(cells: int, side):
  """(side, cells) float32: ``tf.image.resize(..., method="bicubic")`` of a ``cells`` long axis to
  ``side`` as a matrix (the resize of each unit vector). A Python int ``side`` (a static shape)
  gives a constant computed eagerly once per trace, since XLA has no bicubic resize; a tensor
  (a shape known only when run) gives the resize op in the graph."""
  if isinstance(side, int):
    with tf.init_scope():
      return _bicubic_matrix(cells, tf.constant(side))
  units = tf.eye(cells)[:, None, :]  # (cells, 1, cells): one unit vector per channel
  return tf.image.resize(units, tf.stack([side, 1]), method="bicubic")[:, 0, :]


def _hash32(x):
  """uint32 -> uint32, a well-mixed integer hash (Wellons' "lowbias32": xor-shift, multiply)."""
  for shift, factor in ((16, 0x7FEB352D), (15, 0x846CA68B)):
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(shift, tf.uint32)))
    x = x * tf.constant(factor, tf.uint32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def texture_noise(keys, height, width):
  """(B, height, width, 3) float32 pixel noise, mean 0, standard deviation ``TEXTURE_NOISE``.

  ``keys`` (B, 2) int64 (e.g. stateless seeds): noise b is a function of ``keys[b]`` alone.
  Integer hashing of the pixel's index rather than a random op, because XLA's random ops
  draw other numbers than TF's kernels: this noise is bit for bit the same on the CPU, on a
  GPU and under XLA, so the training step gives the same batch with and without --xla. Each
  value is the sum of the four bytes of a 32-bit hash (a discrete Irwin-Hall sum, close to a
  Gaussian within +-3.5 sigma), centred and scaled.
  """
  keys = tf.cast(tf.bitwise.bitwise_and(keys, 0xFFFFFFFF), tf.uint32)[:, None, :]
  index = tf.cast(tf.range(height * width * 3), tf.uint32)[None, :]
  bits = _hash32(
    tf.bitwise.bitwise_xor(_hash32(tf.bitwise.bitwise_xor(index, keys[..., 0])), keys[..., 1])
  )
  total = tf.zeros_like(bits)
  for shift in (0, 8, 16, 24):
    byte = tf.bitwise.right_shift(bits, tf.constant(shift, tf.uint32))
    total += tf.bitwise.bitwise_and(byte, tf.constant(255, tf.uint32))
  # Four bytes uniform in 0..255: mean 510, variance 4 * (256^2 - 1) / 12.
  scale = TEXTURE_NOISE / math.sqrt(4 * (256**2 - 1) / 12)
  noise = (tf.cast(total, tf.float32) - 510.0) * scale
  return tf.reshape(noise, tf.stack([-1, height, width, 3]))


def texture_cells(seed):
  """(TEXTURE_CELLS, TEXTURE_CELLS, 3) float32 uniform in [0, 255]: a texture's coarse grid."""
  return tf.random.stateless_uniform([TEXTURE_CELLS, TEXTURE_CELLS, 3], seed, 0.0, 255.0)


def background_textures(cells, keys, height, width):
  """(B, height, width, 3) float32 random smooth textures in [0, 255].

  ``cells`` (B, TEXTURE_CELLS, TEXTURE_CELLS, 3) coarse grids (``texture_cells``, drawn per
  example), enlarged bicubically to the image by two matrix products, plus ``texture_noise``
  of ``keys`` (B, 2) int64, clipped: texture b is a function of example b's values alone, so
  a batch's textures do not depend on its other examples (or on how replicas slice it).
  ``height`` and ``width``: Python ints where the shape is static (XLA needs them), else
  scalar int32 tensors. Every op compiles with XLA.
  """
  cells = tf.cast(cells, tf.float32)
  side = TEXTURE_CELLS
  smooth = tf.einsum(
    "hi,bijc,wj->bhwc", _bicubic_matrix(side, height), cells, _bicubic_matrix(side, width)
  )
  return tf.clip_by_value(smooth + texture_noise(keys, height, width), 0.0, 255.0)


def replace_backgrounds(images, masks, cells, keys, use):
  """(B, H, W, 3) float32 images with a random texture (``background_textures`` of ``cells``
  and ``keys``) where the (B, H, W, 1) mask in [0, 1] is 0, for the examples where ``use``
  (B,) bool; the others unchanged.

  The mask is the foreground (a studio's person mask), so the studio's
  background is replaced and the person kept.
  """
  height = images.shape[1] if images.shape[1] is not None else tf.shape(images)[1]
  width = images.shape[2] if images.shape[2] is not None else tf.shape(images)[2]

  def replaced():
    textures = background_textures(cells, keys, height, width)
    return tf.where(use[:, None, None, None], images * masks + textures * (1.0 - masks), images)

  return tf.cond(tf.reduce_any(use), replaced, lambda: images)


def colour_parameters(seed):
  """(3,) float32 (brightness shift in grey levels, contrast factor, saturation factor) drawn
  as ``tf.image.stateless_random_brightness``, ``..._contrast`` and ``..._saturation`` draw
  them from the three seeds ``seed`` splits into."""
  seeds = tf.random.experimental.stateless_split(seed, 3)
  return tf.stack(
    [
      tf.random.stateless_uniform([], seeds[0], -BRIGHTNESS, BRIGHTNESS),
      tf.random.stateless_uniform([], seeds[1], *CONTRAST),
      tf.random.stateless_uniform([], seeds[2], *SATURATION),
    ]
  )


def jitter_colours(images, parameters):
  """(B, H, W, 3) float32 images in [0, 255] with ``colour_parameters``' (B, 3) applied, clipped.

  Brightness adds the shift; contrast scales each channel about its mean over the image;
  saturation scales the HSV saturation (clipped to [0, 1]): what ``tf.image.adjust_brightness``,
  ``adjust_contrast`` and ``adjust_saturation`` do to one image, with a factor per image.
  """
  shift, contrast, saturation = (parameters[:, i, None, None, None] for i in range(3))
  images = images + shift
  mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
  images = (images - mean) * contrast + mean
  hue, sat, value = tf.unstack(tf.image.rgb_to_hsv(images), axis=-1)
  sat = tf.clip_by_value(sat * saturation[..., 0], 0.0, 1.0)
  images = tf.image.hsv_to_rgb(tf.stack([hue, sat, value], axis=-1))
  return tf.clip_by_value(images, 0.0, 255.0)
