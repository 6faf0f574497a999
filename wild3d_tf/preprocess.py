"""One preprocessing for training, evaluation and serving: the crop and the mirror.

A crop is a square ``(cx, cy, side)`` in the pixels of the image it is cut
from. Training (``data.prepare``, on the stored 320 px crops) and evaluation
take the square around the labelled 2D joints (``box_around_joints``);
serving takes the square around a user's person box, or the whole image
(``box_around_person``). Both squares are the box's longer side enlarged by
``BOX_MARGIN`` on each side, so the network sees a person at the same scale
in training and in use. ``crop_matrix`` maps the square onto the network's
input grid and ``warp`` resamples the image there, antialiased when it
shrinks, so a 4000 px photo does not alias. The mirror functions flip images,
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
  """(3,) float64 square (cx, cy, side) for a person box, or for the whole image.

  ``box`` (4,) is (x_min, y_min, x_max, y_max) pixels, treated like the
  rectangle around the 2D joints in training (``box_around_joints``); all
  zeros means no box: the square of the image's longer side, centred.
  """
  box = tf.cast(box, tf.float64)
  height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
  square = box_around_joints(tf.reshape(box, [2, 2]), tf.constant([True, True]))
  whole = tf.stack([(width - 1) / 2, (height - 1) / 2, tf.maximum(height, width)])
  return tf.where(tf.reduce_any(tf.not_equal(box, 0.0)), square, whole)


def crop_matrix(square, size: int, angle=0.0):
  """(3, 3) float64 affine map from image pixels to the pixels of a ``size`` crop.

  The square (cx, cy, side) fills the crop edge to edge (its left edge goes
  to -0.5 and its right edge to ``size - 0.5``, pixel centres consistent),
  then the content turns by ``angle`` radians about the crop's centre: with
  y pointing down, a positive angle takes a point right of the centre below
  it (clockwise on screen).
  """
  half = (size - 1) / 2
  angle = tf.cast(angle, tf.float64)
  c, s = tf.cos(angle), tf.sin(angle)
  zero, one = tf.zeros_like(c), tf.ones_like(c)
  turn = tf.stack(
    [
      tf.stack([c, -s, half - c * half + s * half]),
      tf.stack([s, c, half - s * half - c * half]),
      tf.stack([zero, zero, one]),
    ]
  )
  return turn @ geometry_tf.crop_matrix(tf.cast(square, tf.float64), float(size))


def _sample(image, input_from_image, size):
  """Bilinear samples of a float32 ``image`` on a ``size`` grid, zeros outside."""
  inverse = tf.linalg.inv(input_from_image)
  transform = tf.cast(tf.reshape(inverse, [9])[:8] / inverse[2, 2], tf.float32)
  return tf.raw_ops.ImageProjectiveTransformV3(
    images=image[None],
    transforms=transform[None],
    output_shape=tf.constant([size, size], tf.int32),
    fill_value=tf.constant(0.0),
    interpolation="BILINEAR",
    fill_mode="CONSTANT",
  )[0]


def _translation(x, y):
  zero, one = tf.zeros_like(x), tf.ones_like(x)
  return tf.stack([tf.stack([one, zero, x]), tf.stack([zero, one, y]), tf.stack([zero, zero, one])])


def _region(image, input_from_image, size, margin):
  """The rectangle of the image the output grid reads, ``margin`` pixels more, clipped to the image.

  Returns (pixels (h, w, C) in the image's dtype, the map from them to output pixels).
  """
  image_from_input = tf.linalg.inv(input_from_image)
  edge = [-0.5, size - 0.5]
  corners = tf.constant([[x, y, 1.0] for x in edge for y in edge], tf.float64)
  points = corners @ tf.transpose(image_from_input)
  points = points[:, :2] / points[:, 2:]
  extent = tf.cast(tf.shape(image)[1::-1], tf.float64)  # (width, height)
  low = tf.clip_by_value(tf.floor(tf.reduce_min(points, 0)) - margin, 0.0, extent - 1.0)
  high = tf.clip_by_value(tf.math.ceil(tf.reduce_max(points, 0)) + margin + 1, low + 1.0, extent)
  start, stop = tf.cast(low, tf.int32), tf.cast(high, tf.int32)
  pixels = image[start[1] : stop[1], start[0] : stop[0]]
  return pixels, input_from_image @ _translation(low[0], low[1])


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
  stored uint8 crops training reads.
  """
  input_from_image = tf.cast(input_from_image, tf.float64)
  shrink = tf.math.rsqrt(tf.abs(tf.linalg.det(input_from_image[:2, :2])))
  # The margin covers the bilinear neighbours and the antialiasing filter's reach.
  pixels, input_from_pixels = _region(image, input_from_image, size, 2.0 + tf.math.ceil(shrink))

  def direct():
    return _sample(tf.cast(pixels, tf.float32), input_from_pixels, size)

  def antialiased():
    extent = tf.cast(tf.shape(pixels)[1::-1], tf.float64)  # (width, height)
    reduced = tf.maximum(tf.round(extent / shrink), 1.0)
    scale = reduced / extent
    # Half-pixel centres: reduced pixel = scale * (pixel + 0.5) - 0.5.
    reduced_from_pixels = _translation((scale[0] - 1) / 2, (scale[1] - 1) / 2) @ tf.linalg.diag(
      tf.concat([scale, [1.0]], 0)
    )
    small = tf.image.resize(pixels, tf.cast(reduced[::-1], tf.int32), antialias=True)
    return _sample(small, input_from_pixels @ tf.linalg.inv(reduced_from_pixels), size)

  resampled = tf.cond(shrink >= ANTIALIAS_FROM, antialiased, direct)
  return tf.round(tf.clip_by_value(resampled, 0.0, 255.0))


def crop(image, square, size: int):
  """(size, size, 3) float32 crop of an (H, W, 3) image and its (3, 3) float64 input-from-image map.

  ``square`` (3,) is (cx, cy, side) in the image's pixels (``box_around_joints``,
  ``box_around_person``); no rotation.
  """
  matrix = crop_matrix(square, size)
  return warp(image, matrix, size), matrix


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
