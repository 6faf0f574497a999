"""Camera models in NumPy: intrinsics, H3.6M's lens distortion, world<->camera.

Conventions (all of wild3d):
* Camera frame: x right, y down, z forward, millimetres.
* Pixels: 0-based, (u, v) = (column, row), the centre of the top-left pixel at
  (0, 0). Datasets with MATLAB 1-based pixels are shifted by their readers.
* Extrinsics: ``X_cam = R @ X_world + t``. H3.6M stores the camera centre T
  instead, so ``t = -R @ T`` (:func:`extrinsics_from_center`).
* Distortion: H3.6M's own model, coefficients ``k = (k1, k2, k3)`` and
  ``p = (p1, p2)`` in metadata.xml order. The VideoPose3D camera JSON lists
  the tangential pair reversed, as ``(p2, p1)``; :func:`h36m_json_to_camera`
  undoes that.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Camera:
  """A calibrated camera.

  Attributes:
    intrinsics: (3, 3) matrix K.
    rotation: (3, 3) world-to-camera rotation R.
    translation: (3,) t in mm, with ``X_cam = R X_world + t``.
    radial: (k1, k2, k3), H3.6M model; zeros for a pinhole camera.
    tangential: (p1, p2), H3.6M model (metadata.xml order).
    size: (width, height) in pixels.
    name: camera id as the dataset spells it.
  """

  intrinsics: np.ndarray
  rotation: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
  translation: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))
  radial: tuple[float, float, float] = (0.0, 0.0, 0.0)
  tangential: tuple[float, float] = (0.0, 0.0)
  size: tuple[int, int] = (0, 0)
  name: str = ""

  def world_to_camera(self, points_world: np.ndarray) -> np.ndarray:
    return world_to_camera(points_world, self.rotation, self.translation)

  def camera_to_world(self, points_cam: np.ndarray) -> np.ndarray:
    return camera_to_world(points_cam, self.rotation, self.translation)

  def project(self, points_cam: np.ndarray) -> np.ndarray:
    return project(points_cam, self.intrinsics, self.radial, self.tangential)


def intrinsic_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
  return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


# The field of view assumed across an image's longer side when its camera is unknown: the
# default MeTRAbs users know, and wild3d's serving default (inference.default_intrinsics).
DEFAULT_FOV_DEGREES = 55.0


def intrinsics_from_fov(
  width: int, height: int, fov_degrees: float = DEFAULT_FOV_DEGREES
) -> np.ndarray:
  """Pinhole K for an image whose larger side spans ``fov_degrees``.

  The principal point is the image centre in 0-based pixels.
  """
  focal = 0.5 * max(width, height) / np.tan(np.radians(fov_degrees) / 2)
  return intrinsic_matrix(focal, focal, (width - 1) / 2, (height - 1) / 2)


def world_to_camera(
  points_world: np.ndarray, rotation: np.ndarray, translation: np.ndarray
) -> np.ndarray:
  """``R X + t`` for points shaped (..., 3)."""
  return np.asarray(points_world) @ np.asarray(rotation).T + np.asarray(translation)


def camera_to_world(
  points_cam: np.ndarray, rotation: np.ndarray, translation: np.ndarray
) -> np.ndarray:
  """Inverse of :func:`world_to_camera`: ``R^T (X - t)``."""
  return (np.asarray(points_cam) - np.asarray(translation)) @ np.asarray(rotation)


def extrinsics_from_center(rotation: np.ndarray, center: np.ndarray) -> np.ndarray:
  """Translation t for a camera with rotation R whose centre is at ``center``."""
  return -np.asarray(rotation) @ np.asarray(center)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
  """(w, x, y, z) unit quaternion -> (3, 3) rotation matrix."""
  w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
  return np.array(
    [
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
  )


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
  """(3, 3) rotation -> (w, x, y, z) with w >= 0."""
  m = np.asarray(rotation, dtype=np.float64)
  # Shepperd's method: branch on the largest diagonal term for stability.
  trace = np.trace(m)
  diag = np.diag(m)
  if trace >= diag.max():
    w = np.sqrt(1 + trace) / 2
    q = np.array(
      [
        w,
        (m[2, 1] - m[1, 2]) / (4 * w),
        (m[0, 2] - m[2, 0]) / (4 * w),
        (m[1, 0] - m[0, 1]) / (4 * w),
      ]
    )
  else:
    i = int(np.argmax(diag))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = np.sqrt(1 + m[i, i] - m[j, j] - m[k, k]) * 2
    q = np.empty(4)
    q[0] = (m[k, j] - m[j, k]) / s
    q[1 + i] = s / 4
    q[1 + j] = (m[j, i] + m[i, j]) / s
    q[1 + k] = (m[k, i] + m[i, k]) / s
  return q if q[0] >= 0 else -q


def distort_h36m(xy: np.ndarray, radial, tangential) -> np.ndarray:
  """Applies H3.6M's distortion to normalised coordinates (x, y) = (X/Z, Y/Z).

  With r2 = x^2 + y^2, radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3 and
  tan = p1 y + p2 x: x' = x (radial + tan) + p2 r2, y' = y (radial + tan) + p1 r2.
  This differs from OpenCV's tangential terms (no factor 2, different cross
  terms); using OpenCV's model with these coefficients is a bug.
  """
  xy = np.asarray(xy, dtype=np.float64)
  k1, k2, k3 = radial
  p1, p2 = tangential
  x, y = xy[..., 0], xy[..., 1]
  r2 = x * x + y * y
  radial_factor = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
  tan = p1 * y + p2 * x
  return np.stack(
    [x * (radial_factor + tan) + p2 * r2, y * (radial_factor + tan) + p1 * r2], axis=-1
  )


def undistort_h36m(
  xy_distorted: np.ndarray, radial, tangential, iterations: int = 20
) -> np.ndarray:
  """Inverts :func:`distort_h36m` by Newton's method with the analytic Jacobian."""
  target = np.asarray(xy_distorted, dtype=np.float64)
  k1, k2, k3 = radial
  p1, p2 = tangential
  xy = target.copy()
  for _ in range(iterations):
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    factor = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3 + p1 * y + p2 * x
    ex = x * factor + p2 * r2 - target[..., 0]
    ey = y * factor + p1 * r2 - target[..., 1]
    if max(np.abs(ex).max(initial=0.0), np.abs(ey).max(initial=0.0)) < 1e-13:
      break
    dr = 2 * (k1 + 2 * k2 * r2 + 3 * k3 * r2**2)  # d(radial)/dx = dr * x
    j11 = factor + x * (dr * x + p2) + 2 * p2 * x
    j12 = x * (dr * y + p1) + 2 * p2 * y
    j21 = y * (dr * x + p2) + 2 * p1 * x
    j22 = factor + y * (dr * y + p1) + 2 * p1 * y
    det = j11 * j22 - j12 * j21
    xy = xy - np.stack([(j22 * ex - j12 * ey) / det, (j11 * ey - j21 * ex) / det], axis=-1)
  return xy


def project(
  points_cam: np.ndarray, intrinsics: np.ndarray, radial=(0.0, 0.0, 0.0), tangential=(0.0, 0.0)
) -> np.ndarray:
  """Projects camera-frame points (..., 3) to pixels (..., 2)."""
  points_cam = np.asarray(points_cam, dtype=np.float64)
  xy = points_cam[..., :2] / points_cam[..., 2:3]
  if any(radial) or any(tangential):
    xy = distort_h36m(xy, radial, tangential)
  k = np.asarray(intrinsics, dtype=np.float64)
  return np.stack(
    [k[0, 0] * xy[..., 0] + k[0, 1] * xy[..., 1] + k[0, 2], k[1, 1] * xy[..., 1] + k[1, 2]], axis=-1
  )


def pixels_to_normalized(
  uv: np.ndarray, intrinsics: np.ndarray, radial=(0.0, 0.0, 0.0), tangential=(0.0, 0.0)
) -> np.ndarray:
  """Pixels (..., 2) -> undistorted normalised coordinates (X/Z, Y/Z)."""
  uv = np.asarray(uv, dtype=np.float64)
  k = np.asarray(intrinsics, dtype=np.float64)
  y = (uv[..., 1] - k[1, 2]) / k[1, 1]
  x = (uv[..., 0] - k[0, 2] - k[0, 1] * y) / k[0, 0]
  xy = np.stack([x, y], axis=-1)
  if any(radial) or any(tangential):
    xy = undistort_h36m(xy, radial, tangential)
  return xy


def weak_perspective(points3d: np.ndarray, camera: np.ndarray) -> np.ndarray:
  """The paper's projection: ``(ax X + cx, ay Y + cy)``.

  Args:
    points3d: (..., J, 3).
    camera: (..., 4) as (cx, cy, ax, ay).
  Returns:
    (..., J, 2).
  """
  points3d = np.asarray(points3d)
  camera = np.asarray(camera)[..., None, :]
  return np.stack(
    [
      camera[..., 2] * points3d[..., 0] + camera[..., 0],
      camera[..., 3] * points3d[..., 1] + camera[..., 1],
    ],
    axis=-1,
  )


def h36m_json_to_camera(intrinsic: dict, extrinsic: dict, name: str = "") -> Camera:
  """A camera from VideoPose3D's published entries (common/h36m_dataset.py), as stored in mm.

  ``intrinsic``: center, focal_length, radial_distortion, tangential_distortion
  (listed as (p2, p1)), res_w, res_h (optional). ``extrinsic``: orientation
  (w, x, y, z), the camera-to-world rotation R^T, and translation, the camera
  centre in mm. Raises KeyError, TypeError or ValueError for a malformed entry.
  """
  p2, p1 = intrinsic["tangential_distortion"]
  return h36m_camera(
    quaternion_to_matrix(extrinsic["orientation"]).T,
    extrinsic["translation"],
    intrinsic["focal_length"],
    intrinsic["center"],
    intrinsic["radial_distortion"],
    (p1, p2),
    (intrinsic.get("res_w", 0), intrinsic.get("res_h", 0)),
    name or intrinsic.get("id", ""),
  )


def camera_to_h36m_json(camera: Camera) -> tuple[dict, dict]:
  """Inverse of :func:`h36m_json_to_camera`."""
  k = camera.intrinsics
  intrinsic = {
    "id": camera.name,
    "center": [float(k[0, 2]), float(k[1, 2])],
    "focal_length": [float(k[0, 0]), float(k[1, 1])],
    "radial_distortion": [float(v) for v in camera.radial],
    "tangential_distortion": [float(camera.tangential[1]), float(camera.tangential[0])],
    "res_w": int(camera.size[0]),
    "res_h": int(camera.size[1]),
  }
  center = -camera.rotation.T @ camera.translation
  extrinsic = {
    "orientation": matrix_to_quaternion(camera.rotation.T).tolist(),
    "translation": center.tolist(),
  }
  return intrinsic, extrinsic


# Human3.6M's metadata.xml keeps every camera in one vector ``w0`` of 300 numbers: for camera c
# (1..4, the order of H36M_CAMERA_IDS) and subject s (1..11), 6 extrinsic numbers at
# 6 * ((c - 1) * 11 + (s - 1)): Euler angles (a, b, c) in radians with R = Rx(a) Ry(b) Rz(c)
# (world to camera), then the camera centre T in mm (X_cam = R (X_world - T)); after the 264
# extrinsic numbers, 9 intrinsic numbers per camera at 264 + 9 * (c - 1): fx, fy, cx, cy (pixels),
# k1, k2, k3, p1, p2. The official MATLAB code decodes it so; 3d-pose-baseline (src/cameras.py)
# and VideoPose3D's published values agree (docs/datasets.md, Human3.6M cameras).
H36M_CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")
H36M_W0_SUBJECTS = 11
H36M_W0_LENGTH = 6 * H36M_W0_SUBJECTS * len(H36M_CAMERA_IDS) + 9 * len(H36M_CAMERA_IDS)


def h36m_euler_rotation(angles) -> np.ndarray:
  """(3, 3) world-to-camera R = Rx(a) @ Ry(b) @ Rz(c) of metadata.xml's angles (a, b, c), rad."""
  a, b, c = (float(v) for v in angles)
  rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
  ry = np.array([[np.cos(b), 0.0, np.sin(b)], [0.0, 1.0, 0.0], [-np.sin(b), 0.0, np.cos(b)]])
  rz = np.array([[np.cos(c), -np.sin(c), 0.0], [np.sin(c), np.cos(c), 0.0], [0.0, 0.0, 1.0]])
  return rx @ ry @ rz


def h36m_euler_angles(rotation: np.ndarray) -> np.ndarray:
  """Inverse of :func:`h36m_euler_rotation`: (a, b, c) with b in [-pi/2, pi/2].

  R = Rx(a) Ry(b) Rz(c) has R[0, 2] = sin b, R[0, 0] = cos b cos c,
  R[0, 1] = -cos b sin c, R[1, 2] = -sin a cos b, R[2, 2] = cos a cos b.
  """
  m = np.asarray(rotation, np.float64)
  b = np.arcsin(np.clip(m[0, 2], -1.0, 1.0))
  return np.array([np.arctan2(-m[1, 2], m[2, 2]), b, np.arctan2(-m[0, 1], m[0, 0])])


def h36m_w0_offsets(subject: int, camera_index: int) -> tuple[int, int]:
  """(extrinsic, intrinsic) start indices in ``w0`` of subject number 1..11, camera 0..3.

  Raises ValueError outside those ranges.
  """
  if not (1 <= subject <= H36M_W0_SUBJECTS and 0 <= camera_index < len(H36M_CAMERA_IDS)):
    raise ValueError(f"no w0 entry for subject {subject}, camera index {camera_index}")
  extrinsic = 6 * (camera_index * H36M_W0_SUBJECTS + (subject - 1))
  return extrinsic, 6 * H36M_W0_SUBJECTS * len(H36M_CAMERA_IDS) + 9 * camera_index


def h36m_camera(
  rotation: np.ndarray, center, focal, principal, radial, tangential, size=(0, 0), name=""
) -> Camera:
  """A Camera from H3.6M's parameters: R (world to camera), the centre T in mm, f and c in
  pixels, (k1, k2, k3) and (p1, p2) in metadata.xml order. Every H3.6M camera source
  (metadata.xml, cameras.h5, VideoPose3D's values) is decoded through here."""
  rotation = np.asarray(rotation, np.float64).reshape(3, 3)
  return Camera(
    intrinsics=intrinsic_matrix(*(float(v) for v in focal), *(float(v) for v in principal)),
    rotation=rotation,
    translation=extrinsics_from_center(rotation, np.asarray(center, np.float64).reshape(3)),
    radial=tuple(float(v) for v in radial),
    tangential=tuple(float(v) for v in tangential),
    size=(int(size[0]), int(size[1])),
    name=str(name),
  )


def camera_from_h36m_w0(w0, subject: int, camera_index: int, size=(0, 0)) -> Camera:
  """The camera of subject number 1..11 and camera index 0..3 (H36M_CAMERA_IDS) in ``w0``.

  ``w0``: (300,) numbers of metadata.xml. Raises ValueError for another length.
  """
  w0 = np.asarray(w0, np.float64).reshape(-1)
  if w0.shape != (H36M_W0_LENGTH,):
    raise ValueError(f"w0 holds {w0.size} numbers, expected {H36M_W0_LENGTH}")
  ext, intr = h36m_w0_offsets(subject, camera_index)
  i = w0[intr : intr + 9]
  return h36m_camera(
    h36m_euler_rotation(w0[ext : ext + 3]),
    w0[ext + 3 : ext + 6],
    i[0:2],
    i[2:4],
    i[4:7],
    i[7:9],
    size,
    H36M_CAMERA_IDS[camera_index],
  )


def h36m_w0_entry(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
  """(6 extrinsic numbers, 9 intrinsic numbers) of ``camera`` as ``w0`` holds them.

  Intrinsics must have no skew (H3.6M's model has none); raises ValueError otherwise.
  """
  k = camera.intrinsics
  if k[0, 1] != 0:
    raise ValueError(f"camera {camera.name}: H3.6M's model has no skew, K[0, 1] = {k[0, 1]}")
  center = -camera.rotation.T @ camera.translation
  extrinsic = np.concatenate([h36m_euler_angles(camera.rotation), center])
  intrinsic = np.array(
    [k[0, 0], k[1, 1], k[0, 2], k[1, 2], *camera.radial, *camera.tangential], np.float64
  )
  return extrinsic, intrinsic
