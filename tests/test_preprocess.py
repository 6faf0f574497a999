"""The one crop (box, matrix, warp) of training and serving, the mirror, and the heatmap size."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import data, heatmaps, preprocess, schema, skeletons
from wild3d_tf.config import DataConfig, ModelConfig

P2, P3 = skeletons.POSE2D, skeletons.POSE3D


def _record(image, joints2d, labelled):
  """A parsed record (``schema.parse``) of an RGB uint8 image with some labelled 2D joints.

  The record's crop is the image itself (identity transform), with no camera and no 3D pose.
  """
  values = {}
  for name, feature in schema.FEATURES.items():
    if feature.kind == "string":
      values[name] = ""
    elif feature.kind == "bytes":
      values[name] = b""
    else:
      values[name] = np.zeros(feature.shape, np.int64 if feature.kind == "int" else np.float64)
  full = np.zeros((P2.num_joints, 2))
  full[: len(joints2d)] = joints2d
  flags = np.zeros(P2.num_joints, np.int64)
  flags[: len(joints2d)] = labelled
  values.update(
    {
      schema.KEY: "test/0",
      schema.IMAGE_CROP_JPEG: cv2.imencode(".png", image[..., ::-1])[1].tobytes(),  # lossless
      schema.CROP_PX_FROM_IMAGE_PX: np.eye(3),
      schema.CAMERA_INTRINSICS_IMAGE_PX: np.eye(3),
      schema.JOINTS2D_CROP_PX: full,
      schema.JOINTS2D_LABELLED: flags,
      schema.JOINTS2D_VISIBLE: flags,
    }
  )
  return schema.parse(tf.constant(schema.to_example(values)))


def _random_image(height, width, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _prepare(record, size, heatmap_size=None):
  config = DataConfig(data_dir="unused")
  return data.prepare(
    record, tf.constant(0, tf.int64), config, False, size, heatmap_size=heatmap_size
  )


def test_a_known_box_lands_known_pixels_in_training_and_serving():
  # Box x 100..141, y 40.5..120.5: the longer side 80 with the 0.2 margin is a 112 px square
  # centred at (120.5, 80.5), so a 112 px crop is the image shifted by (65, 25), unscaled.
  assert preprocess.BOX_MARGIN == 0.2
  image = _random_image(200, 240)
  expected = image[25:137, 65:177].astype(np.float32)
  box = tf.constant([100.0, 40.5, 141.0, 120.5])
  square = preprocess.box_around_person(box, 200, 240)
  np.testing.assert_allclose(square, [120.5, 80.5, 112.0])
  served, matrix = preprocess.crop(tf.constant(image), square, 112)  # serving: uint8 photo
  np.testing.assert_array_equal(served, expected)
  np.testing.assert_allclose(matrix, [[1, 0, -65], [0, 1, -25], [0, 0, 1]], atol=1e-12)
  # Training and evaluation: the same square around labelled joints at the box's corners.
  corners = [[100.0, 40.5], [141.0, 120.5], [0.0, 0.0]]  # the third joint is not labelled
  prepared = _prepare(_record(image, corners, [1, 1, 0]), 112)
  np.testing.assert_array_equal(prepared[preprocess.IMAGE], expected.astype(np.uint8))
  np.testing.assert_allclose(prepared[preprocess.INPUT_PX_FROM_IMAGE_PX], matrix, atol=1e-12)


def test_training_and_serving_crop_a_downscaled_rotated_box_alike():
  image = _random_image(300, 400, seed=1)
  box = tf.constant([50.3, 20.7, 251.9, 290.2])
  square = preprocess.box_around_person(box, 300, 400)
  served, _ = preprocess.crop(tf.constant(image), square, 64)
  corners = [[50.3, 20.7], [251.9, 290.2]]
  prepared = _prepare(_record(image, corners, [1, 1]), 64)
  np.testing.assert_array_equal(prepared[preprocess.IMAGE], served.numpy().astype(np.uint8))
  # The dtype does not matter: training warps float32 (after colour jitter), serving uint8.
  for angle in (0.0, 0.4):
    for size in (64, 256):  # antialiased (shrink 5.9) and direct (shrink 1.47)
      matrix = preprocess.crop_matrix(square, size, angle)
      np.testing.assert_array_equal(
        preprocess.warp(tf.constant(image), matrix, size),
        preprocess.warp(tf.constant(image, tf.float32), matrix, size),
      )


def test_a_large_downscale_does_not_alias():
  # Vertical stripes one pixel wide: any honest 7.8x reduction is a flat grey (127.5), while
  # point samples at a non-integer step land on black, white and the blends between.
  image = np.zeros((1100, 1100, 3), np.uint8)
  image[:, ::2] = 255
  square = tf.constant([549.5, 549.5, 1000.0])
  crop, _ = preprocess.crop(tf.constant(image), square, 128)
  np.testing.assert_allclose(crop.numpy(), 127.5, atol=1.5)


def test_crop_matrix_golden():
  square = tf.constant([100.0, 50.0, 40.0])
  matrix = preprocess.crop_matrix(square, 20).numpy()
  # The square's left edge (80) goes to -0.5, its right edge (120) to 19.5, centres to 9.5.
  np.testing.assert_allclose(matrix @ [80.0, 30.0, 1.0], [-0.5, -0.5, 1.0])
  np.testing.assert_allclose(matrix @ [120.0, 70.0, 1.0], [19.5, 19.5, 1.0])
  turned = preprocess.crop_matrix(square, 20, np.pi / 2).numpy()
  np.testing.assert_allclose(turned @ [100.0, 50.0, 1.0], [9.5, 9.5, 1.0], atol=1e-12)
  # A quarter turn takes the point on the right of the centre below it (y points down).
  np.testing.assert_allclose(turned @ [120.0, 50.0, 1.0], [9.5, 19.5, 1.0], atol=1e-12)


def test_whole_image_when_no_box():
  np.testing.assert_allclose(
    preprocess.box_around_person(tf.zeros([4]), 300, 200), [99.5, 149.5, 300.0]
  )


def test_mirror_functions_swap_left_and_right_and_are_involutions():
  # Golden: LSP order (r_ankle .. l_ankle, r_wrist .. l_wrist, neck, head_top).
  np.testing.assert_array_equal(
    preprocess.swap_sides_2d(tf.range(14)), [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13]
  )
  joints2d = np.zeros((14, 2))
  joints2d[P2.index("r_wrist")] = [10.0, 5.0]
  joints2d[P2.index("neck")] = [0.0, 7.0]
  mirrored = preprocess.mirror_joints2d(tf.constant(joints2d), 100).numpy()
  np.testing.assert_allclose(mirrored[P2.index("l_wrist")], [89.0, 5.0])
  np.testing.assert_allclose(mirrored[P2.index("neck")], [99.0, 7.0])
  pose = np.zeros((17, 3))
  pose[P3.index("l_elbow")] = [100.0, -20.0, 30.0]
  mirrored3d = preprocess.mirror_pose3d(tf.constant(pose)).numpy()
  np.testing.assert_allclose(mirrored3d[P3.index("r_elbow")], [-100.0, -20.0, 30.0])
  np.testing.assert_allclose(mirrored3d[P3.index("l_elbow")], [0.0, 0.0, 0.0])

  rng = np.random.default_rng(0)
  for mirror, value in (
    (lambda x: preprocess.mirror_joints2d(x, 64), rng.uniform(0, 63, (2, 14, 2))),
    (preprocess.mirror_pose3d, rng.normal(size=(2, 17, 3))),
    (preprocess.mirror_heatmaps, rng.uniform(size=(2, 4, 4, 14))),
    (preprocess.swap_sides_2d, rng.uniform(size=(2, 14))),
    (preprocess.mirror_image, rng.uniform(size=(2, 5, 6, 3))),
  ):
    once = mirror(tf.constant(value)).numpy()
    assert not np.allclose(once, value)
    np.testing.assert_allclose(mirror(tf.constant(once)), value, atol=1e-12)


def test_mirrored_heatmaps_are_the_heatmaps_of_mirrored_joints():
  joints = np.random.default_rng(1).uniform(0, 255, (14, 2)).astype(np.float32)
  visible = np.ones(14, np.float32)
  maps = heatmaps.encode(joints, visible, 16, stride=16)
  np.testing.assert_allclose(
    preprocess.mirror_heatmaps(maps),
    heatmaps.encode(preprocess.mirror_joints2d(joints, 256), visible, 16, stride=16),
    atol=1e-5,
  )


@pytest.mark.parametrize("size, stride, expected", [(96, 16, 6), (128, 8, 16)])
def test_heatmap_size_follows_the_model_config(size, stride, expected):
  joints = np.array([[20.0, 30.0], [70.0, 110.0], [45.0, 60.0]])
  record = _record(_random_image(128, 128), joints, [1, 1, 1])
  heatmap_size = ModelConfig(input_size=size, stride=stride).heatmap_size
  assert heatmap_size == expected
  prepared = _prepare(record, size, heatmap_size)
  assert prepared[preprocess.HEATMAPS].shape == (heatmap_size, heatmap_size, P2.num_joints)
  decoded, _ = heatmaps.decode(prepared[preprocess.HEATMAPS][None], stride=size // heatmap_size)
  np.testing.assert_allclose(decoded[0, :3], prepared[preprocess.JOINTS2D_INPUT_PX][:3], atol=0.05)
  assert preprocess.HEATMAPS not in _prepare(record, size, None)
