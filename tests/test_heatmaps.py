"""Gaussian heatmap targets and their decoding are an inverse pair."""

import numpy as np
import tensorflow as tf

from wild3d_tf import heatmaps


def test_encode_golden_peak_and_cell_centres():
  # Pixel 7.5 is the centre of cell 0; pixel 39.5 the centre of cell 2.
  joints = np.array([[[7.5, 39.5]]], dtype=np.float32)
  maps = np.asarray(heatmaps.encode(joints, np.ones((1, 1)), size=4, stride=16))
  assert maps.shape == (1, 4, 4, 1)
  assert maps[0, 2, 0, 0] == 1.0  # row 2 (y), column 0 (x)
  np.testing.assert_allclose(maps[0, 2, 1, 0], np.exp(-0.5), rtol=1e-6)
  np.testing.assert_allclose(maps[0, 3, 1, 0], np.exp(-1.0), rtol=1e-6)


def test_invisible_joints_give_empty_maps():
  maps = np.asarray(
    heatmaps.encode(np.full((2, 3, 2), 30.0), np.array([[1, 0, 1], [0, 0, 0]]), size=8, stride=16)
  )
  assert maps[0, ..., 1].max() == 0 and maps[1].max() == 0 and maps[0, ..., 0].max() > 0.5


def test_encode_decode_round_trip():
  rng = np.random.default_rng(0)
  joints = rng.uniform(20, 236, size=(3, 14, 2)).astype(np.float32)
  maps = heatmaps.encode(joints, np.ones((3, 14)), size=16, stride=16)
  decoded, confidence = heatmaps.decode(maps, stride=16)
  np.testing.assert_allclose(np.asarray(decoded), joints, atol=1e-2)
  assert (np.asarray(confidence) > 0.6).all()


def test_decode_inside_tf_data():
  joints = np.array([[[100.0, 60.0], [33.3, 201.7]]], dtype=np.float32)
  ds = tf.data.Dataset.from_tensors(joints).map(
    lambda j: heatmaps.decode(heatmaps.encode(j, tf.ones((1, 2)), size=16, stride=16), stride=16)[0]
  )
  np.testing.assert_allclose(next(iter(ds)).numpy(), joints, atol=1e-2)


def test_joints_in_the_border_cells_decode_too():
  joints = np.array(
    [[[3.0, 5.0], [252.0, 250.0], [120.0, 255.0]]], dtype=np.float32
  )  # within the outer cells
  decoded, _ = heatmaps.decode(
    heatmaps.encode(joints, np.ones((1, 3)), size=16, stride=16), stride=16
  )
  np.testing.assert_allclose(np.asarray(decoded), joints, atol=1e-2)
