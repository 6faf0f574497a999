"""Cameras and takes: where the synthetic people are, how they move, who looks at them."""

from __future__ import annotations

import functools
import pathlib

import numpy as np

from wild3d_tf import cameras, skeletons
from wild3d_tf.synthetic import body, bvh

CMU_DIR = pathlib.Path(__file__).resolve().parent / "data"
P3 = skeletons.POSE3D


def look_at(center: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(R, t) of a camera at ``center`` looking at ``target``, no roll (world y points down)."""
  z = np.asarray(target, float) - np.asarray(center, float)
  z /= np.linalg.norm(z)
  x = np.cross([0.0, 1.0, 0.0], z)
  x /= np.linalg.norm(x)
  rotation = np.stack([x, np.cross(z, x), z])
  return rotation, cameras.extrinsics_from_center(rotation, center)


def ring_camera(
  azimuth_deg: float,
  distance: float,
  height: float,
  target_height: float,
  intrinsics: np.ndarray,
  size: tuple,
  name: str,
  radial=(0.0, 0.0, 0.0),
  tangential=(0.0, 0.0),
) -> cameras.Camera:
  """A camera on a circle around the origin, ``height`` mm above the floor (y = 0, y down)."""
  a = np.radians(azimuth_deg)
  center = np.array([distance * np.sin(a), -height, -distance * np.cos(a)])
  rotation, translation = look_at(center, np.array([0.0, -target_height, 0.0]))
  return cameras.Camera(
    np.asarray(intrinsics, float),
    rotation,
    translation,
    tuple(radial),
    tuple(tangential),
    (int(size[0]), int(size[1])),
    name,
  )


@functools.cache
def cmu_motions() -> tuple[np.ndarray, ...]:
  """The shipped CMU takes as POSE3D poses at 120 fps, mm, y down."""
  return tuple(
    bvh.to_pose3d_camera_convention(bvh.read(path)) for path in sorted(CMU_DIR.glob("*.bvh"))
  )


def take(
  style: body.Style,
  subject: body.Subject,
  frames: int,
  fps: float,
  rng: np.random.Generator,
  wild: bool = False,
  use_cmu: bool = False,
  area: float = 1500.0,
) -> np.ndarray:
  """(frames, 17, 3) world poses (mm, y down, floor at y = 0) of one take.

  ``use_cmu`` takes a stretch of real CMU motion, retargeted to the subject
  and turned to a random heading; otherwise angles from ``style``. The
  pelvis stays within ``area`` mm of the origin.
  """
  if use_cmu:
    source = cmu_motions()[int(rng.integers(len(cmu_motions())))]
    step = max(1, int(round(120 / fps)))
    start = int(rng.integers(0, max(1, len(source) - frames * step)))
    poses = source[start : start + frames * step : step]
    poses = np.concatenate([poses, np.repeat(poses[-1:], frames - len(poses), 0)])
    yaw = np.radians(rng.uniform(-180, 180))
    turn = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    poses = body.retarget(poses, subject) @ turn.T
    poses = poses - poses[:1, :1] * np.array([1.0, 0.0, 1.0])
  else:
    angles = body.motion_angles(style, frames, fps, rng, wild=wild)
    poses = (
      body.forward_kinematics(angles, subject)
      + body.trajectory(style, angles["pelvis_yaw"], fps)[:, None]
    )
  start = rng.uniform(-0.5, 0.5, 2) * area
  poses = poses + np.array([start[0], 0.0, start[1]])
  # Keep the walk inside the capture area by folding it back at the edges.
  for axis in (0, 2):
    root = poses[:, 0, axis]
    folded = area - np.abs((root + area) % (4 * area) - 2 * area)
    poses[..., axis] += (folded - root)[:, None]
  poses[..., 1] += body.floor_offset(poses)[:, None]
  return poses
