"""The graph-side twins agree with the NumPy originals, eagerly and inside tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import cameras, geometry, geometry_tf, skeletons


@pytest.fixture
def rng():
  return np.random.default_rng(7)


def _in_dataset(fn, *args):
  """Runs fn inside a tf.data map (graph mode), returning NumPy."""
  ds = tf.data.Dataset.from_tensors(tuple(tf.constant(a) for a in args)).map(fn)
  return next(iter(ds)).numpy()


def _both(fn, *args):
  eager = np.asarray(fn(*[tf.constant(a) for a in args]))
  graph = _in_dataset(fn, *args)
  np.testing.assert_allclose(eager, graph, rtol=1e-12, atol=1e-9)
  return eager


def test_weak_perspective(rng):
  points, camera = rng.normal(size=(4, 17, 3)), rng.normal(size=(4, 4))
  np.testing.assert_allclose(
    _both(geometry_tf.weak_perspective, points, camera),
    cameras.weak_perspective(points, camera),
    atol=1e-9,
  )


def test_project_and_normalize(rng):
  k = np.stack(
    [
      cameras.intrinsic_matrix(*rng.uniform([900, 900, 400, 400], [1600, 1600, 600, 600]))
      for _ in range(3)
    ]
  )
  points = rng.uniform([-900, -900, 2000], [900, 900, 6000], size=(3, 17, 3))
  np.testing.assert_allclose(
    _both(geometry_tf.project, points, k),
    np.stack([cameras.project(p, kk) for p, kk in zip(points, k)]),
    atol=1e-9,
  )
  uv = rng.uniform(0, 1000, size=(3, 2))
  np.testing.assert_allclose(
    _both(geometry_tf.pixels_to_normalized, uv, k),
    np.stack([cameras.pixels_to_normalized(u, kk) for u, kk in zip(uv, k)]),
    atol=1e-12,
  )


def test_virtual_rotation_and_its_use(rng):
  rays = rng.uniform(-0.7, 0.7, size=(5, 2))
  rotation = _both(geometry_tf.virtual_camera_rotation, rays)
  np.testing.assert_allclose(rotation, geometry.virtual_camera_rotation(rays), atol=1e-12)
  poses = rng.normal(size=(5, 17, 3)) * 300
  np.testing.assert_allclose(
    _both(geometry_tf.camera_to_virtual, poses, rotation),
    geometry.camera_to_virtual(poses, rotation),
    atol=1e-9,
  )
  np.testing.assert_allclose(
    _both(geometry_tf.virtual_to_camera, poses, rotation),
    geometry.virtual_to_camera(poses, rotation),
    atol=1e-9,
  )


def test_crop_box_matrix_and_affine(rng):
  joints = rng.uniform(0, 500, size=(4, 14, 2))
  visible = rng.uniform(size=(4, 14)) > 0.3
  visible[:, 0] = True
  boxes = _both(lambda j, v: geometry_tf.crop_box(j, v, margin=0.2, min_side=16.0), joints, visible)
  np.testing.assert_allclose(boxes, geometry.crop_box(joints, visible, margin=0.2), atol=1e-9)
  matrices = _both(lambda b: geometry_tf.crop_matrix(b, 256), boxes)
  np.testing.assert_allclose(
    matrices, np.stack([geometry.crop_matrix(b, 256) for b in boxes]), atol=1e-9
  )
  np.testing.assert_allclose(
    _both(geometry_tf.apply_affine, joints, matrices),
    np.stack([geometry.apply_affine(j, m) for j, m in zip(joints, matrices)]),
    atol=1e-9,
  )


def test_crop_box_without_visible_joints_is_finite():
  box = geometry_tf.crop_box(
    tf.zeros((1, 14, 2), tf.float64), tf.zeros((1, 14), tf.bool), margin=0.2, min_side=16.0
  )
  np.testing.assert_allclose(box, [[0.0, 0.0, 16.0]])


def test_flip(rng):
  perm = skeletons.POSE2D.flip_permutation
  joints2d = rng.uniform(0, 255, size=(3, 14, 2))
  np.testing.assert_allclose(
    _both(lambda j: geometry_tf.flip_joints(j, perm, 256.0), joints2d),
    geometry.flip_joints(joints2d, skeletons.POSE2D, 256.0),
  )
  perm3 = skeletons.POSE3D.flip_permutation
  joints3d = rng.normal(size=(3, 17, 3))
  np.testing.assert_allclose(
    _both(lambda j: geometry_tf.flip_joints(j, perm3), joints3d),
    geometry.flip_joints(joints3d, skeletons.POSE3D),
  )


def test_undistort(rng):
  radial, tangential = (-0.2071, 0.2478, -0.00308), (-0.001424, -0.000976)
  xy = rng.uniform(-0.45, 0.45, size=(6, 2))
  distorted = cameras.distort_h36m(xy, radial, tangential)
  coefficients = np.broadcast_to(np.array([*radial, *tangential]), (6, 5))
  np.testing.assert_allclose(
    _both(geometry_tf.undistort_h36m, distorted, coefficients), xy, atol=1e-12
  )
  np.testing.assert_allclose(
    _both(geometry_tf.undistort_h36m, xy, np.zeros((6, 5))), xy, atol=1e-15
  )
