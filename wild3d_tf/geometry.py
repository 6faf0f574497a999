"""Crop geometry, perspective correction and pose alignment, in NumPy.

The graph-side twins the data pipeline, model and serving need live in
``geometry_tf.py`` and are tested to agree with these.
"""

from __future__ import annotations

import numpy as np

from wild3d_tf import skeletons

# --------------------------------------------------------------------------
# Crop boxes. A box is (cx, cy, side): a square in original-image pixels.


def crop_box(
  joints2d: np.ndarray,
  visible: np.ndarray | None = None,
  *,
  margin: float,
  min_side: float = 16.0,
) -> np.ndarray:
  """The square box around the visible joints, enlarged by ``margin``.

  The side is ``(1 + 2 * margin) * max(width, height)`` of the joints' bounding
  rectangle (``margin`` is added on each side), centred on that rectangle.

  Args:
    joints2d: (..., J, 2) pixels.
    visible: (..., J) bool; all joints when None. A pose with no visible joint
      raises, naming how many there are.
    margin: fraction of the larger extent added on each side (no default: the
      network's crop uses ``preprocess.BOX_MARGIN``, the converter its own).
    min_side: lower bound on the side in pixels (a single joint gives 0).
  Returns:
    (..., 3) boxes (cx, cy, side).
  """
  joints2d = np.asarray(joints2d, dtype=np.float64)
  if visible is None:
    visible = np.isfinite(joints2d).all(axis=-1)
  visible = np.asarray(visible, dtype=bool)
  if not visible.any(axis=-1).all():
    raise ValueError(
      f"crop_box: a pose has no visible joints ({int((~visible.any(axis=-1)).sum())} of them)"
    )
  lo = np.min(np.where(visible[..., None], joints2d, np.inf), axis=-2)
  hi = np.max(np.where(visible[..., None], joints2d, -np.inf), axis=-2)
  center = (lo + hi) / 2
  side = np.maximum((1 + 2 * margin) * np.max(hi - lo, axis=-1), min_side)
  return np.concatenate([center, side[..., None]], axis=-1)


def crop_matrix(box: np.ndarray, out_size: int) -> np.ndarray:
  """(3, 3) affine map from original pixels to the pixels of a resized crop.

  Pixel centres are kept consistent: the box's left edge ``cx - side/2`` maps
  to the crop's left edge ``-0.5`` and the right edge to ``out_size - 0.5``.
  """
  cx, cy, side = np.asarray(box, dtype=np.float64)
  scale = out_size / side
  return np.array(
    [
      [scale, 0.0, (out_size - 1) / 2 - scale * cx],
      [0.0, scale, (out_size - 1) / 2 - scale * cy],
      [0.0, 0.0, 1.0],
    ]
  )


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """Applies a (3, 3) affine/projective matrix to (..., 2) points."""
  points = np.asarray(points, dtype=np.float64)
  homog = np.concatenate([points, np.ones_like(points[..., :1])], axis=-1) @ np.asarray(matrix).T
  return homog[..., :2] / homog[..., 2:3]


def crop_intrinsics(intrinsics: np.ndarray, crop_from_image: np.ndarray) -> np.ndarray:
  """The intrinsics of a crop: ``crop_from_image @ K``."""
  return np.asarray(crop_from_image) @ np.asarray(intrinsics)


# --------------------------------------------------------------------------
# Perspective correction (docs/datasets.md, perspective correction).


def virtual_camera_rotation(normalized_center: np.ndarray) -> np.ndarray:
  """Rotation from the virtual camera that looks at a crop to the real one.

  Args:
    normalized_center: (..., 2) the crop centre's ray (x, y) = K^-1 (u, v, 1),
      undistorted. Use :func:`wild3d_tf.cameras.pixels_to_normalized`.
  Returns:
    (..., 3, 3) R whose columns are the virtual axes in camera coordinates:
    the third is the ray through the crop centre, the first stays in the
    camera's x-z plane (no roll). ``P_cam = R P_virt``; labels for training
    are ``P_virt = R^T P_cam``.
  """
  xy = np.asarray(normalized_center, dtype=np.float64)
  x, y = xy[..., 0], xy[..., 1]
  n = np.sqrt(1 + x * x + y * y)
  m = np.sqrt(1 + x * x)
  zero = np.zeros_like(x)
  col0 = np.stack([1 / m, zero, -x / m], axis=-1)
  col1 = np.stack([-x * y / (n * m), m / n, -y / (n * m)], axis=-1)
  col2 = np.stack([x / n, y / n, 1 / n], axis=-1)
  return np.stack([col0, col1, col2], axis=-1)


def camera_to_virtual(points_cam: np.ndarray, rotation: np.ndarray) -> np.ndarray:
  """``R^T P`` for (..., J, 3) points and (..., 3, 3) rotations."""
  return np.asarray(points_cam) @ np.asarray(rotation)


def virtual_to_camera(points_virt: np.ndarray, rotation: np.ndarray) -> np.ndarray:
  """``R P`` for (..., J, 3) points and (..., 3, 3) rotations."""
  return np.asarray(points_virt) @ np.swapaxes(np.asarray(rotation), -1, -2)


# --------------------------------------------------------------------------
# Alignment of a predicted pose to the ground truth (per pose).


def scale_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """Least-squares scale: ``s* P_hat`` with ``s* = <P_hat, P> / <P_hat, P_hat>``.

  Args:
    pred, gt: (..., J, 3), root-relative.
  Returns:
    The scaled prediction, same shape. An all-zero prediction stays zero.
  """
  pred = np.asarray(pred, dtype=np.float64)
  gt = np.asarray(gt, dtype=np.float64)
  num = np.sum(pred * gt, axis=(-1, -2), keepdims=True)
  den = np.sum(pred * pred, axis=(-1, -2), keepdims=True)
  return pred * np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def procrustes(pred: np.ndarray, gt: np.ndarray):
  """Similarity transform (s, R, t) minimising ``sum ||s R p_j + t - g_j||^2``.

  Rotations only: when the best orthogonal map is a reflection the smallest
  singular direction is flipped (Umeyama), so ``det R = +1`` always.

  Args:
    pred, gt: (..., J, 3).
  Returns:
    (aligned, scale, rotation, translation) with shapes (..., J, 3), (...),
    (..., 3, 3), (..., 3); ``aligned = s * pred @ R^T + t``.
  """
  pred = np.asarray(pred, dtype=np.float64)
  gt = np.asarray(gt, dtype=np.float64)
  mu_pred = pred.mean(axis=-2, keepdims=True)
  mu_gt = gt.mean(axis=-2, keepdims=True)
  x = pred - mu_pred
  y = gt - mu_gt
  cov = np.swapaxes(x, -1, -2) @ y  # (..., 3, 3) = sum_j x_j y_j^T
  u, sigma, vt = np.linalg.svd(cov)
  v = np.swapaxes(vt, -1, -2)
  d = np.ones_like(sigma)
  d[..., -1] = np.sign(np.linalg.det(v @ np.swapaxes(u, -1, -2)))
  d[..., -1] = np.where(d[..., -1] == 0, 1.0, d[..., -1])
  rotation = v @ (d[..., :, None] * np.swapaxes(u, -1, -2))
  var = np.sum(x * x, axis=(-1, -2))
  scale = np.divide(np.sum(sigma * d, axis=-1), var, out=np.zeros_like(var), where=var > 0)
  rotated_mean = np.einsum("...ij,...j->...i", rotation, mu_pred[..., 0, :])
  translation = mu_gt[..., 0, :] - scale[..., None] * rotated_mean
  aligned = (
    scale[..., None, None] * (pred @ np.swapaxes(rotation, -1, -2)) + translation[..., None, :]
  )
  return aligned, scale, rotation, translation


# --------------------------------------------------------------------------
# Horizontal flip.


def flip_joints(
  joints: np.ndarray, joint_set: skeletons.JointSet, image_width: float | None = None
) -> np.ndarray:
  """Mirrors joints left-right and swaps left/right joint labels.

  Args:
    joints: (..., J, 2) pixels when ``image_width`` is given (x -> W - 1 - x),
      else (..., J, 3) camera-frame points (X -> -X).
    joint_set: the set the joints are in.
  """
  joints = np.array(joints, dtype=np.float64)
  if image_width is None:
    joints[..., 0] = -joints[..., 0]
  else:
    joints[..., 0] = image_width - 1 - joints[..., 0]
  return joints[..., joint_set.flip_permutation, :]


def root_relative(
  joints3d: np.ndarray, joint_set: skeletons.JointSet = skeletons.POSE3D
) -> np.ndarray:
  """Subtracts the root joint, (..., J, 3)."""
  joints3d = np.asarray(joints3d, dtype=np.float64)
  return joints3d - joints3d[..., joint_set.root : joint_set.root + 1, :]
