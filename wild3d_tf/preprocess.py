"""One preprocessing for training, evaluation and serving: the crop and the mirror.

A crop is a square ``(cx, cy, side)`` in the pixels of the image it is cut
from. Training (``data.prepare``, on the stored 320 px crops) and evaluation
take the square around the labelled 2D joints (``box_around_joints``);
serving takes the square around a user's person box, or the whole image
(``box_around_person``). Both squares are the box's longer side enlarged by
``BOX_MARGIN`` on each side, so the network sees a person at the same scale
in training and in use. ``crop_matrix`` maps the square onto the network's
input grid and ``warp`` resamples the image there, antialiased when it
shrinks, so a 4000 px photo does not alias; ``warp_batch`` is the same warp
of a whole batch of the stored crops in ops XLA compiles, which the training
step runs (``data.finish_batch``). The mirror functions flip images,
2D joints, heatmaps and 3D poses left-right and swap left and right labels
(flip augmentation, flip test-time augmentation).

The keys of a prepared example (``data.prepare``'s output and the training
batch) are declared here too, once, for the pipeline, losses, trainer and
evaluation: names say frame and unit. Frames: ``input`` the network input's
pixel grid (0-based), ``image`` the grid the record's crop transform starts
from (the original image), ``virtual`` the camera rotated to look at the
crop's centre, root-relative (the network's 3D output frame), ``camera`` the
original camera.
"""

from __future__ import annotations

import math

import tensorflow as tf

from wild3d_tf import geometry_tf, skeletons

BOX_MARGIN = 0.2  # fraction of the box's longer side added on each side
MIN_BOX_SIDE = 16.0  # pixels; a single labelled joint still gives a crop
ANTIALIAS_FROM = 1.5  # ``warp`` filters before sampling where it shrinks the image this much

# --------------------------------------------------------------------------- prepared example keys

IMAGE = "image"  # (S, S, 3) uint8 network input
HEATMAPS = "heatmaps"  # (S / stride, S / stride, 14) float32 Gaussians at supervised joints
JOINTS2D_INPUT_PX = "joints2d_input_px"  # (14, 2) float32 POSE2D joints, input pixels
# The 2D losses supervise every annotated joint in the crop, occluded or not (the paper's
# supplement masks a joint only when its annotation is missing); visibility is its own label,
# which evaluation's 2D PCK counts.
JOINTS2D_SUPERVISED = "joints2d_supervised"  # (14,) float32 1 where labelled and in the crop
JOINTS2D_VISIBLE = "joints2d_visible"  # (14,) float32 1 where labelled, visible and in the crop
JOINTS3D_VIRTUAL_MM = "joints3d_virtual_mm"  # (17, 3) float32 POSE3D, virtual frame, mm
JOINTS3D_VALID = "joints3d_valid"  # (17,) optional: 1 where the 3D joint is labelled
HAS_3D = "has_3d"  # () float32 1 where the 3D label is real
# (16,) float32 the 2D-only bone-length loss's target (``DataConfig.bone_length_target``)
REFERENCE_BONE_LENGTHS_MM = "reference_bone_lengths_mm"
# () float32 1: that loss compares bone-length proportions, not lengths (target ``ratios``)
BONE_LENGTHS_SCALE_FREE = "bone_lengths_scale_free"
CAMERA_FROM_VIRTUAL = "camera_from_virtual"  # (3, 3) float64 rotation, before the flip
FLIPPED = "flipped"  # () bool the example was mirrored
INPUT_PX_FROM_IMAGE_PX = "input_px_from_image_px"  # (3, 3) float64 affine, flip included


# --------------------------------------------------------------------------- the crop


def box_around_joints(joints2d, labelled):
  """(..., 3) float64 squares (cx, cy, side) around the labelled joints, in their pixels.

  ``joints2d`` (..., J, 2) pixels and ``labelled`` (..., J) bool. The side is
  ``(1 + 2 * BOX_MARGIN)`` times the larger extent of the joints' bounding
  rectangle, at least ``MIN_BOX_SIDE``, centred on that rectangle. A pose
  with no labelled joint gets a ``MIN_BOX_SIDE`` box at the origin (a graph
  cannot raise per element).
  """
  return geometry_tf.crop_box(
    tf.cast(joints2d, tf.float64), labelled, margin=BOX_MARGIN, min_side=MIN_BOX_SIDE
  )


def box_around_person(box, height, width):
  """(..., 3) float64 squares (cx, cy, side) for person boxes, or for the whole image.

  ``box`` (..., 4) is (x_min, y_min, x_max, y_max) pixels, treated like the
  rectangle around the 2D joints in training (``box_around_joints``); all
  zeros means no box: the square of the image's longer side, centred.
  ``height`` and ``width`` (...) the image's size.
  """
  box = tf.cast(box, tf.float64)
  height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
  corners = tf.reshape(box, tf.concat([tf.shape(box)[:-1], [2, 2]], 0))
  square = box_around_joints(corners, tf.ones(tf.shape(corners)[:-1], tf.bool))
  whole = tf.stack([(width - 1) / 2, (height - 1) / 2, tf.maximum(height, width)], -1)
  return tf.where(tf.reduce_any(tf.not_equal(box, 0.0), -1, keepdims=True), square, whole)


def crop_matrix(square, size: int, angle=0.0):
  """(..., 3, 3) float64 affine maps from image pixels to the pixels of a ``size`` crop.

  The square (..., 3) (cx, cy, side) fills the crop edge to edge (its left
  edge goes to -0.5 and its right edge to ``size - 0.5``, pixel centres
  consistent), then the content turns by ``angle`` radians (a scalar or
  (...)) about the crop's centre: with y pointing down, a positive angle
  takes a point right of the centre below it (clockwise on screen).
  """
  half = (size - 1) / 2
  square = tf.cast(square, tf.float64)
  angle = tf.cast(angle, tf.float64) + tf.zeros_like(square[..., 0])
  c, s = tf.cos(angle), tf.sin(angle)
  zero, one = tf.zeros_like(c), tf.ones_like(c)
  turn = tf.stack(
    [
      tf.stack([c, -s, half - c * half + s * half], -1),
      tf.stack([s, c, half - s * half - c * half], -1),
      tf.stack([zero, zero, one], -1),
    ],
    -2,
  )
  return turn @ geometry_tf.crop_matrix(square, float(size))


def shrink(input_from_image):
  """(B,) float64: how many times each (B, 3, 3) float64 map shrinks the image, per side."""
  m = input_from_image
  # The determinant written out: XLA has no MatrixDeterminant.
  return tf.math.rsqrt(tf.abs(m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]))


def _regions(input_from_image, extent, size: int, margin):
  """The rectangle of each image that the ``size`` output grid reads, ``margin`` pixels more,
  clipped to the image: (low, high) (B, 2) float64 (x, y), its first pixel and one past its last.

  ``input_from_image`` (B, 3, 3) float64, ``extent`` (B, 2) float64 each image's (width,
  height), ``margin`` (B,) float64 pixels.
  """
  edge = [-0.5, size - 0.5]
  corners = tf.constant([[x, y, 1.0] for x in edge for y in edge], tf.float64)
  points = tf.einsum("kj,bij->bki", corners, tf.linalg.inv(input_from_image))
  points = points[..., :2] / points[..., 2:]
  margin = margin[:, None]
  low = tf.clip_by_value(tf.floor(tf.reduce_min(points, 1)) - margin, 0.0, extent - 1.0)
  high = tf.clip_by_value(tf.math.ceil(tf.reduce_max(points, 1)) + margin + 1, low + 1.0, extent)
  return low, high


def prefilter_plan(input_from_image, image_sizes, size: int):
  """What ``prefilter`` does to each of a batch of images, from their sizes alone.

  ``input_from_image`` (B, 3, 3) maps each image's pixels to the ``size``
  output grid; ``image_sizes`` (B, 2) int its (height, width). Returns a dict
  of (B, ...) tensors, one image's row of each being what ``reduce_region``
  takes: "start", "stop" (B, 2) int32 (x, y), the rectangle of the image the
  grid reads plus the filters' reach, clipped to the image; "antialias" (B,)
  bool, whether the map shrinks ``ANTIALIAS_FROM`` times or more; "reduced"
  (B, 2) int32 (height, width) the rectangle's size at the output's scale;
  "input_from_pixels" (B, 3, 3) float64, the map from what ``reduce_region``
  returns to the output grid: "input_from_reduced" where the plan
  antialiases, "input_from_region" (from the rectangle itself) elsewhere.
  Worked out for a whole batch in one go, so serving makes it before
  decoding, from the headers' sizes, and ``warp_batch`` shares it.
  """
  matrices = tf.cast(input_from_image, tf.float64)
  extent = tf.cast(tf.reverse(image_sizes, [1]), tf.float64)  # (B, 2) width, height
  shrinks = shrink(matrices)
  # The margin covers the bilinear neighbours and the antialiasing filter's reach.
  low, high = _regions(matrices, extent, size, 2.0 + tf.math.ceil(shrinks))
  input_from_region = matrices @ _translations(low)
  lengths = high - low
  reduced = tf.maximum(tf.round(lengths / shrinks[:, None]), 1.0)
  scale = reduced / lengths
  # Half-pixel centres: reduced pixel = scale * (pixel + 0.5) - 0.5.
  reduced_from_region = _translations((scale - 1) / 2) @ tf.linalg.diag(
    tf.concat([scale, tf.ones_like(scale[:, :1])], 1)
  )
  antialias = shrinks >= ANTIALIAS_FROM
  input_from_reduced = input_from_region @ tf.linalg.inv(reduced_from_region)
  return {
    "start": tf.cast(low, tf.int32),
    "stop": tf.cast(high, tf.int32),
    "antialias": antialias,
    "reduced": tf.cast(tf.reverse(reduced, [1]), tf.int32),
    "input_from_region": input_from_region,
    "input_from_reduced": input_from_reduced,
    "input_from_pixels": tf.where(antialias[:, None, None], input_from_reduced, input_from_region),
  }


def reduce_region(image, plan):
  """(h, w, C) float32: the part of one (H, W, C) image (any real dtype) that its row of
  ``prefilter_plan`` names, reduced with an antialiasing (triangle) filter where the plan says
  so. Only that part is read, so a large uint8 photo is never converted whole."""
  start, stop = plan["start"], plan["stop"]
  pixels = image[start[1] : stop[1], start[0] : stop[0]]
  return tf.cond(
    plan["antialias"],
    lambda: tf.cast(tf.image.resize(pixels, plan["reduced"], antialias=True), tf.float32),
    lambda: tf.cast(pixels, tf.float32),
  )


def prefilter(image, input_from_image, size: int):
  """The part of ``warp`` that reads the image: what ``resample`` samples.

  ``image`` (H, W, C) any real dtype, ``input_from_image`` (3, 3) maps its
  pixels to the ``size`` output grid. Returns ``pixels`` (h, w, C) float32,
  the rectangle of the image the grid reads (plus the filters' reach,
  clipped to the image), reduced with an antialiasing (triangle) filter to
  the output's scale where the map shrinks ``ANTIALIAS_FROM`` times or more,
  and ``input_from_pixels`` (3, 3) float64, the map from ``pixels`` to the
  output grid: ``prefilter_plan`` for one image, then ``reduce_region``.
  ``pixels`` is about the output's size (at most about ``ANTIALIAS_FROM``
  times it per side for a map without rotation), so a batch of them pads
  cheaply into one ``resample`` call.
  """
  plan = prefilter_plan(input_from_image[None], tf.shape(image)[None, :2], size)
  plan = {key: value[0] for key, value in plan.items()}
  return reduce_region(image, plan), plan["input_from_pixels"]


def resample(pixels, input_from_pixels, size: int):
  """(B, size, size, C) float32 bilinear samples of a batch, rounded to integers in [0, 255].

  ``pixels`` (B, h, w, C) float32 (``prefilter``'s outputs, zero-padded at
  the bottom and right to a common size: bilinear sampling reads zeros
  outside an image, so the padding changes no output) and
  ``input_from_pixels`` (B, 3, 3) their maps to the output grid. One call for
  the whole batch: ``tf.image.crop_and_resize`` where no map of the batch
  rotates (every serving crop; about twice as fast on a CPU), else
  ``ImageProjectiveTransformV3``; both read zeros outside the image the same
  way (a sample up to a pixel outside blends with zero), so they differ only
  by float rounding (a grey level on a few values in 100,000), and a crop is
  bit for bit the same alone and in any batch of unrotated maps. The result
  is rounded like the stored uint8 crops training reads.
  """
  inverse = tf.linalg.inv(tf.cast(input_from_pixels, tf.float64))  # output -> pixels
  axis_aligned = tf.reduce_all(
    tf.equal(inverse[:, 0, 1], 0.0)
    & tf.equal(inverse[:, 1, 0], 0.0)
    & tf.reduce_all(tf.equal(inverse[:, 2], [0.0, 0.0, 1.0]), 1)
  )

  def crop_and_resize():
    # A pixel of zeros before every image, and at least one after, so a sample less than a pixel
    # outside blends with zero as in ImageProjectiveTransformV3 (crop_and_resize would give the
    # fill value instead). The padded sides less one are powers of two: the op takes box corners
    # divided by them and multiplies back, which is then exact, so a crop's samples do not
    # depend on how far the batch pads it (bit-identical alone and batched).
    content = tf.shape(pixels)[1:3] + 1  # what the last padded pixel's index must reach
    last = 2.0 ** tf.math.ceil(tf.math.log(tf.cast(content, tf.float64)) / math.log(2.0))
    after = tf.cast(last, tf.int32) + 1 - content
    padded = tf.pad(pixels, [[0, 0], [1, after[0]], [1, after[1]], [0, 0]])
    first_y, first_x = inverse[:, 1, 2] + 1, inverse[:, 0, 2] + 1
    last_y = first_y + inverse[:, 1, 1] * (size - 1)
    last_x = first_x + inverse[:, 0, 0] * (size - 1)
    boxes = tf.stack([first_y / last[0], first_x / last[1], last_y / last[0], last_x / last[1]], 1)
    return tf.image.crop_and_resize(
      padded,
      tf.cast(boxes, tf.float32),
      tf.range(tf.shape(pixels)[0]),
      [size, size],
      extrapolation_value=0.0,
    )

  def projective():
    transforms = tf.reshape(inverse, [-1, 9])[:, :8] / inverse[:, 2, 2:]
    return tf.raw_ops.ImageProjectiveTransformV3(
      images=pixels,
      transforms=tf.cast(transforms, tf.float32),
      output_shape=tf.constant([size, size], tf.int32),
      fill_value=tf.constant(0.0),
      interpolation="BILINEAR",
      fill_mode="CONSTANT",
    )

  resampled = tf.cond(axis_aligned, crop_and_resize, projective)
  return tf.round(tf.clip_by_value(resampled, 0.0, 255.0))


def warp(image, input_from_image, size: int):
  """(size, size, C) float32 resampling of an (H, W, C) image, integers in [0, 255].

  ``input_from_image`` (3, 3) maps image pixels to output pixels (e.g.
  ``crop_matrix``); outside the image reads zeros. Where the map shrinks the
  image ``ANTIALIAS_FROM`` times or more, the part of the image it reads is
  first reduced to the output's scale with an antialiasing (triangle)
  filter, so a large photo does not alias; then (and otherwise directly) the
  output is sampled bilinearly. Only that part is converted to float, so a
  uint8 photo and the same photo in float32 give the same crop, and a large
  uint8 photo is never converted whole. The result is rounded like the
  stored uint8 crops training reads. It is ``prefilter`` then ``resample``;
  a batch of images of different sizes is ``prefilter`` per image, padded,
  and one ``resample`` (``serving_module``), to the same values.
  """
  pixels, input_from_pixels = prefilter(image, input_from_image, size)
  return resample(pixels[None], input_from_pixels[None], size)[0]


def crop(image, square, size: int):
  """(size, size, 3) float32 crop of an (H, W, 3) image and its (3, 3) float64 input-from-image map.

  ``square`` (3,) is (cx, cy, side) in the image's pixels (``box_around_joints``,
  ``box_around_person``); no rotation.
  """
  matrix = crop_matrix(square, size)
  return warp(image, matrix, size), matrix


# --------------------------------------------------------------------------- the batched warp


def _translations(offsets):
  """(B, 3, 3) float64 translations by (B, 2) offsets (x, y)."""
  eye = tf.eye(3, batch_shape=tf.shape(offsets)[:1], dtype=tf.float64)
  return eye + tf.pad(offsets[:, :, None], [[0, 0], [0, 1], [2, 0]])


def _sample_batch(images, input_from_source, size: int, offset, limit):
  """(B, size, size, C) bilinear samples, as ``resample``'s ImageProjectiveTransformV3 takes them.

  ``images`` (B, H, W, C) float32; ``input_from_source`` (B, 3, 3) float64 affine maps from a
  source rectangle's pixels to output pixels; the source rectangle of image b starts at
  ``offset[b]`` (x, y) and is ``limit[b]`` (width, height) pixels large (int32): reads outside
  it are zeros. Written with gathers, so XLA compiles it; the arithmetic is the op's.
  """
  inverse = tf.linalg.inv(input_from_source)
  transform = tf.cast(tf.reshape(inverse, [-1, 9])[:, :6] / inverse[:, 2:3, 2], tf.float32)
  grid = tf.range(size, dtype=tf.float32)
  out_x, out_y = grid[None, None, :], grid[None, :, None]
  t = [transform[:, i, None, None] for i in range(6)]
  x = t[0] * out_x + t[1] * out_y + t[2]  # (B, size, size) source pixels
  y = t[3] * out_x + t[4] * out_y + t[5]
  x_floor, y_floor = tf.floor(x), tf.floor(y)
  x_ceil, y_ceil = x_floor + 1, y_floor + 1
  shape = tf.shape(images)
  flat = tf.reshape(images, [shape[0], shape[1] * shape[2], shape[3]])
  offset = tf.cast(offset, tf.int32)[:, :, None, None]
  limit = tf.cast(limit, tf.int32)[:, :, None, None]

  def read(row, col):
    row, col = tf.cast(row, tf.int32), tf.cast(col, tf.int32)
    inside = (col >= 0) & (col < limit[:, 0]) & (row >= 0) & (row < limit[:, 1])
    index = tf.where(inside, (row + offset[:, 1]) * shape[2] + col + offset[:, 0], 0)
    values = tf.gather(flat, tf.reshape(index, [shape[0], -1]), batch_dims=1)
    values = tf.reshape(values, [shape[0], size, size, shape[3]])
    return tf.where(inside[..., None], values, 0.0)

  wx0, wx1 = (x_ceil - x)[..., None], (x - x_floor)[..., None]
  top = wx0 * read(y_floor, x_floor) + wx1 * read(y_floor, x_ceil)
  bottom = wx0 * read(y_ceil, x_floor) + wx1 * read(y_ceil, x_ceil)
  return (y_ceil - y)[..., None] * top + (y - y_floor)[..., None] * bottom


def _triangle_weights(starts, lengths, reduced, rows: int, columns: int):
  """(B, rows, columns) float32 matrices of ``tf.image.resize(..., antialias=True)`` (bilinear:
  a triangle filter widened by the reduction) along one axis, as its ScaleAndTranslate kernel
  computes them: output pixel i < ``reduced[b]`` of a segment of ``lengths[b]`` source pixels
  starting at ``starts[b]``; rows at and past ``reduced[b]`` are zero."""
  lengths_f, reduced_f = tf.cast(lengths, tf.float32), tf.cast(reduced, tf.float32)
  inv_scale = 1.0 / (reduced_f / lengths_f)[:, None, None]
  kernel_scale = tf.maximum(inv_scale, 1.0)
  sample = (tf.range(rows, dtype=tf.float32)[None, :, None] + 0.5) * inv_scale
  source = tf.range(columns)[None, None, :] - tf.cast(starts, tf.int32)[:, None, None]
  first = tf.math.ceil(sample - kernel_scale - 0.5)
  last = tf.floor(sample + kernel_scale - 0.5)
  source_f = tf.cast(source, tf.float32)
  inside = (
    (source >= 0)
    & (source < tf.cast(lengths, tf.int32)[:, None, None])
    & (source_f >= first)
    & (source_f <= last)
    & (tf.range(rows)[None, :, None] < tf.cast(reduced, tf.int32)[:, None, None])
  )
  weights = tf.maximum(0.0, 1.0 - tf.abs((source_f + 0.5 - sample) * (1.0 / kernel_scale)))
  weights = tf.where(inside, weights, 0.0)
  total = tf.reduce_sum(weights, -1, keepdims=True)
  return tf.where(total > 0, weights * (1.0 / tf.where(total > 0, total, 1.0)), 0.0)


def warp_batch(images, input_from_image, size: int, image_sizes=None):
  """(B, size, size, C) float32 ``warp`` of each of a batch of images, integers in [0, 255].

  ``images`` (B, H, W, C), any real dtype; image b's own pixels fill the top left
  ``image_sizes[b]`` (int32 (B, 2): height, width) of a zero-padded batch (None: all H x W).
  ``input_from_image`` (B, 3, 3) maps each image's pixels to output pixels: similarity maps
  (rotation, uniform scale, translation: ``crop_matrix``'s), which bound the reduced grid of
  the antialiasing below. The same computation as ``warp``'s, batched: the same region of each
  image and reduced grid (``prefilter_plan``), the same antialiasing (the triangle filter of
  ``tf.image.resize``, here as two matrix products) where the map shrinks by ``ANTIALIAS_FROM``
  or more, the same bilinear sampling (here gathers); it equals ``warp`` but for float
  rounding, which moves a value that lands on .5 by one grey level. Plain TF ops that XLA
  compiles, for the training step (``data.finish_batch``).
  """
  images = tf.cast(images, tf.float32)
  matrices = tf.cast(input_from_image, tf.float64)
  shape = tf.shape(images)
  if image_sizes is None:
    image_sizes = tf.tile(shape[None, 1:3], [shape[0], 1])
  plan = prefilter_plan(matrices, image_sizes, size)
  start = plan["start"]
  lengths = plan["stop"] - start  # (B, 2) width, height
  direct = _sample_batch(images, plan["input_from_region"], size, start, lengths)
  antialias = plan["antialias"]

  def antialiased():
    reduced = tf.reverse(plan["reduced"], [1])  # (B, 2) width, height
    # The reduced grid's sides: at most the image's over the least shrink, and for a
    # similarity map at most the output's diagonal and the margins over the shrink.
    bounds = []
    for side in images.shape[1:3]:
      bound = int(math.ceil(size * math.sqrt(2.0) + 8.5))
      bounds.append(bound if side is None else min(bound, int(side / ANTIALIAS_FROM + 0.5) + 1))
    rows = _triangle_weights(start[:, 1], lengths[:, 1], reduced[:, 1], bounds[0], shape[1])
    columns = _triangle_weights(start[:, 0], lengths[:, 0], reduced[:, 0], bounds[1], shape[2])
    small = tf.einsum("brh,bhwc->brwc", rows, images)
    small = tf.einsum("bsw,brwc->brsc", columns, small)
    zero = tf.zeros_like(start)
    return _sample_batch(small, plan["input_from_reduced"], size, zero, reduced)

  resampled = tf.cond(
    tf.reduce_any(antialias),
    lambda: tf.where(antialias[:, None, None, None], antialiased(), direct),
    lambda: direct,
  )
  return tf.round(tf.clip_by_value(resampled, 0.0, 255.0))


# --------------------------------------------------------------------------- the mirror


def mirror_matrix(width: int):
  """(3, 3) float64 affine map x -> width - 1 - x of pixels (``mirror_image``'s columns)."""
  return tf.constant([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], tf.float64)


def mirror_image(images):
  """(..., H, W, C) images with their columns reversed."""
  return tf.reverse(images, [-2])


def mirror_joints2d(joints2d, width):
  """(..., 14, 2) POSE2D pixels of an image ``width`` wide, mirrored: x -> width - 1 - x, left and
  right swapped (a left wrist becomes the right wrist of the mirrored person)."""
  return geometry_tf.flip_joints(joints2d, skeletons.POSE2D.flip_permutation, width)


def swap_sides_2d(values):
  """(..., 14) per-joint POSE2D values (visibility) with left and right swapped."""
  return tf.gather(values, skeletons.POSE2D.flip_permutation, axis=-1)


def mirror_heatmaps(maps):
  """(..., H, W, 14) POSE2D heatmaps of an image, as the mirrored image's heatmaps."""
  return tf.gather(tf.reverse(maps, [-2]), skeletons.POSE2D.flip_permutation, axis=-1)


def mirror_pose3d(pose):
  """(..., 17, 3) POSE3D points mirrored in the camera's y-z plane: x negated, left and right
  swapped. Its own inverse."""
  return geometry_tf.flip_joints(pose, skeletons.POSE3D.flip_permutation)
