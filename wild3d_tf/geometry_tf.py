"""Graph-side twins of ``cameras``/``geometry`` for the data pipeline, model and serving.

Written with ``keras.ops`` so the same function runs inside a Keras model,
a ``tf.data`` map and a serving signature. Each is tested against its NumPy
original. Pinhole only: readers undistort before anything reaches the graph.
"""

from __future__ import annotations

from keras import ops


def weak_perspective(points3d, camera):
  """``(ax X + cx, ay Y + cy)``; points (..., J, 3), camera (..., 4) = (cx, cy, ax, ay)."""
  camera = ops.expand_dims(camera, -2)
  return ops.stack(
    [
      camera[..., 2] * points3d[..., 0] + camera[..., 0],
      camera[..., 3] * points3d[..., 1] + camera[..., 1],
    ],
    axis=-1,
  )


def project(points_cam, intrinsics):
  """Pinhole projection of (..., J, 3) camera-frame points with (..., 3, 3) K."""
  xy = points_cam[..., :2] / points_cam[..., 2:3]
  k = ops.expand_dims(intrinsics, -3)
  return ops.stack(
    [
      k[..., 0, 0] * xy[..., 0] + k[..., 0, 1] * xy[..., 1] + k[..., 0, 2],
      k[..., 1, 1] * xy[..., 1] + k[..., 1, 2],
    ],
    axis=-1,
  )


def pixels_to_normalized(uv, intrinsics):
  """(..., 2) pixels -> (X/Z, Y/Z) with (..., 3, 3) K (no distortion)."""
  y = (uv[..., 1] - intrinsics[..., 1, 2]) / intrinsics[..., 1, 1]
  x = (uv[..., 0] - intrinsics[..., 0, 2] - intrinsics[..., 0, 1] * y) / intrinsics[..., 0, 0]
  return ops.stack([x, y], axis=-1)


def virtual_camera_rotation(normalized_center):
  """(..., 3, 3) virtual-to-camera rotation for a crop centred on ray (x, y, 1)."""
  x, y = normalized_center[..., 0], normalized_center[..., 1]
  n = ops.sqrt(1 + x * x + y * y)
  m = ops.sqrt(1 + x * x)
  zero = ops.zeros_like(x)
  col0 = ops.stack([1 / m, zero, -x / m], axis=-1)
  col1 = ops.stack([-x * y / (n * m), m / n, -y / (n * m)], axis=-1)
  col2 = ops.stack([x / n, y / n, 1 / n], axis=-1)
  return ops.stack([col0, col1, col2], axis=-1)


def camera_to_virtual(points_cam, rotation):
  return ops.matmul(points_cam, rotation)


def virtual_to_camera(points_virt, rotation):
  return ops.matmul(points_virt, ops.swapaxes(rotation, -1, -2))


def crop_box(joints2d, visible, margin, min_side=16.0):
  """(..., 3) square boxes (cx, cy, side) around the visible joints; ``margin`` as in
  ``geometry.crop_box`` (the network's crop: ``preprocess.box_around_joints``).

  A pose with no visible joint gets a box of ``min_side`` at the origin (the
  graph cannot raise per element; callers mask such samples).
  """
  big = 1e9
  vis = ops.expand_dims(ops.cast(visible, "bool"), -1)
  lo = ops.min(ops.where(vis, joints2d, big), axis=-2)
  hi = ops.max(ops.where(vis, joints2d, -big), axis=-2)
  any_visible = ops.any(vis, axis=(-1, -2))
  lo = ops.where(any_visible[..., None], lo, 0.0)
  hi = ops.where(any_visible[..., None], hi, 0.0)
  side = ops.maximum((1 + 2 * margin) * ops.max(hi - lo, axis=-1), min_side)
  return ops.concatenate([(lo + hi) / 2, side[..., None]], axis=-1)


def crop_matrix(box, out_size):
  """(..., 3, 3) affine maps from original pixels to ``out_size`` crop pixels."""
  cx, cy, side = box[..., 0], box[..., 1], box[..., 2]
  scale = out_size / side
  half = (out_size - 1) / 2
  zero, one = ops.zeros_like(cx), ops.ones_like(cx)
  return ops.stack(
    [
      ops.stack([scale, zero, half - scale * cx], axis=-1),
      ops.stack([zero, scale, half - scale * cy], axis=-1),
      ops.stack([zero, zero, one], axis=-1),
    ],
    axis=-2,
  )


def apply_affine(points, matrix):
  """(..., J, 2) points through (..., 3, 3) matrices."""
  homog = ops.concatenate([points, ops.ones_like(points[..., :1])], axis=-1)
  out = ops.matmul(homog, ops.swapaxes(matrix, -1, -2))
  return out[..., :2] / out[..., 2:3]


def flip_joints(joints, flip_permutation, image_width=None):
  """Left-right mirror with label swap; pixels when ``image_width`` is given, else 3D."""
  x = -joints[..., 0] if image_width is None else image_width - 1 - joints[..., 0]
  mirrored = ops.concatenate([x[..., None], joints[..., 1:]], axis=-1)
  return ops.take(mirrored, flip_permutation, axis=-2)


def undistort_h36m(xy, distortion, iterations: int = 10):
  """Inverse of H3.6M's distortion for (..., 2) normalised points.

  ``distortion`` is (..., 5) = k1, k2, k3, p1, p2.

  Newton's method with the analytic Jacobian, a fixed number of steps (the
  graph cannot stop early); ten reach float64 precision for H3.6M's lenses.
  """
  k1, k2, k3, p1, p2 = (distortion[..., i : i + 1] for i in range(5))
  target = xy
  for _ in range(iterations):
    x, y = xy[..., 0:1], xy[..., 1:2]
    r2 = x * x + y * y
    factor = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2 + p1 * y + p2 * x
    ex = x * factor + p2 * r2 - target[..., 0:1]
    ey = y * factor + p1 * r2 - target[..., 1:2]
    dr = 2 * (k1 + 2 * k2 * r2 + 3 * k3 * r2 * r2)
    j11 = factor + x * (dr * x + p2) + 2 * p2 * x
    j12 = x * (dr * y + p1) + 2 * p2 * y
    j21 = y * (dr * x + p2) + 2 * p1 * x
    j22 = factor + y * (dr * y + p1) + 2 * p1 * y
    det = j11 * j22 - j12 * j21
    xy = xy - ops.concatenate([(j22 * ex - j12 * ey) / det, (j11 * ey - j21 * ex) / det], axis=-1)
  return xy
