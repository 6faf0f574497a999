"""A reader for BVH motion capture: hierarchy, channels and forward kinematics.

Used to put real CMU motion (``../shared/data/cmu_mocap``) into the synthetic
datasets. BVH rotations are Euler angles in degrees applied in the order the
CHANNELS line lists them, as intrinsic rotations (R = R_first @ R_second @ ...).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from wild3d_tf import skeletons

_AXES = {"X": 0, "Y": 1, "Z": 2}


@dataclasses.dataclass(frozen=True)
class Motion:
  """Joint positions of a BVH file.

  Attributes:
    joint_set: names ("<joint>_end" for end sites) and parents from the file.
    positions: (frames, joints, 3) world positions in the file's units.
    frame_time: seconds per frame.
  """

  joint_set: skeletons.JointSet
  positions: np.ndarray
  frame_time: float


def _rotation(axis: int, degrees: np.ndarray) -> np.ndarray:
  """(N, 3, 3) rotations about one axis."""
  c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
  out = np.zeros(degrees.shape + (3, 3))
  i, j = [a for a in range(3) if a != axis]
  out[..., axis, axis] = 1
  out[..., i, i], out[..., i, j], out[..., j, i], out[..., j, j] = c, -s, s, c
  return out


def read(path: str | os.PathLike) -> Motion:
  """Parses a BVH file and returns its joint positions for every frame."""
  names, parents, offsets, channels = [], [], [], []
  stack, pending = [], None
  with open(path, encoding="utf-8") as f:
    lines = iter(enumerate(f, 1))
    for _number, line in lines:
      tokens = line.split()
      if not tokens:
        continue
      head = tokens[0]
      if head in ("ROOT", "JOINT", "End"):
        name = tokens[1] if head != "End" else names[stack[-1]] + "_end"
        names.append(name)
        parents.append(stack[-1] if stack else -1)
        offsets.append(np.zeros(3))
        channels.append([])
        pending = len(names) - 1
      elif head == "{":
        stack.append(pending)
      elif head == "}":
        stack.pop()
      elif head == "OFFSET":
        offsets[stack[-1]] = np.array([float(v) for v in tokens[1:4]])
      elif head == "CHANNELS":
        channels[stack[-1]] = tokens[2 : 2 + int(tokens[1])]
      elif head == "MOTION":
        break
    num_frames = int(next(lines)[1].split(":")[1])
    frame_time = float(next(lines)[1].split(":")[1])
    rows = [list(map(float, line.split())) for _, line in lines if line.strip()]
  data = np.array(rows)
  width = sum(len(c) for c in channels)
  if data.shape != (num_frames, width):
    raise ValueError(
      f"{path}: motion block is {data.shape}, header says {num_frames} frames x {width} channels"
    )

  world_rot = [None] * len(names)
  world_pos = np.zeros((num_frames, len(names), 3))
  column = 0
  for joint, joint_channels in enumerate(channels):
    local_pos = np.broadcast_to(offsets[joint], (num_frames, 3)).copy()
    local_rot = np.broadcast_to(np.eye(3), (num_frames, 3, 3))
    for channel in joint_channels:
      values = data[:, column]
      column += 1
      axis = _AXES[channel[0]]
      if channel.endswith("position"):
        local_pos[:, axis] += values
      else:
        local_rot = local_rot @ _rotation(axis, values)
    parent = parents[joint]
    if parent < 0:
      world_rot[joint], world_pos[:, joint] = local_rot, local_pos
    else:
      world_rot[joint] = world_rot[parent] @ local_rot
      world_pos[:, joint] = world_pos[:, parent] + np.einsum(
        "nij,nj->ni", world_rot[parent], local_pos
      )
  joint_set = skeletons.JointSet(
    name=f"bvh:{os.path.basename(path)}",
    joints=tuple(names),
    parents=tuple(parents),
    to_pose3d={k: v for k, v in skeletons.CMU_BVH_TO_POSE3D.items() if k in names},
  )
  return Motion(joint_set, world_pos, frame_time)


def to_pose3d_camera_convention(motion: Motion, units_to_mm: float = 1000.0) -> np.ndarray:
  """(frames, 17, 3) POSE3D joints in mm with y down, as the camera frame uses.

  BVH is y-up; a rotation of 180 degrees about x (y -> -y, z -> -z) keeps the
  skeleton right-handed, so left stays left.
  """
  pose = skeletons.convert(motion.positions, motion.joint_set, skeletons.POSE3D) * units_to_mm
  if np.isnan(pose).any():
    missing = [skeletons.POSE3D.joints[j] for j in np.flatnonzero(np.isnan(pose).any(axis=(0, 2)))]
    raise ValueError(f"{motion.joint_set.name}: no joint for {missing}")
  return pose * np.array([1.0, -1.0, -1.0])
