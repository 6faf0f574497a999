"""In-the-wild photos for MPII, LSP and LSPET: varied people, poses, cameras and clutter."""

from __future__ import annotations

import numpy as np

from wild3d_tf import cameras, skeletons
from wild3d_tf.synthetic import body, render

# The share of in-the-wild people doing an everyday activity as the studio's actors do (the rest
# an athletic variant of one). MPII is organised by everyday activities, which include what
# H3.6M's and 3DHP's actors perform, so real 2D data covers the studio's kind of poses; with
# athletic poses only, the gate's wild-2D network missed the wrists of TS5's studio poses
# (docs/synthetic.md).
EVERYDAY_FRACTION = 0.5


def random_person(rng: np.random.Generator, distance: float, offset_x: float = 0.0):
  """(subject, palette, POSE3D pose (17, 3) in a camera frame) of one person in the wild: an
  everyday activity (``EVERYDAY_FRACTION``) or an athletic variant of one."""
  subject = body.Subject.random(f"wild{int(rng.integers(1 << 30))}", rng)
  style = body.STUDIO_STYLES[str(rng.choice(body.ACTIONS))]
  athletic = bool(rng.uniform() >= EVERYDAY_FRACTION)
  angles = body.motion_angles(style, 1, 30.0, rng, wild=athletic)
  angles["pelvis_yaw"] = np.array([rng.uniform(-180, 180)])
  pose = body.forward_kinematics(angles, subject)[0]
  pose = pose - pose.mean(0) + np.array([offset_x, 0.0, distance])
  return subject, render.Palette.random(rng, wild=True), pose


def elevated_camera(intrinsics, size, rng, max_elevation=25.0) -> cameras.Camera:
  """A camera at the origin tilted up or down (varied elevation, no roll)."""
  tilt = np.radians(rng.uniform(-max_elevation, max_elevation))
  rotation = np.array(
    [[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]]
  )
  return cameras.Camera(np.asarray(intrinsics, float), rotation, np.zeros(3), size=size)


def photo(camera: cameras.Camera, people, rng: np.random.Generator, joint_set: skeletons.JointSet):
  """Renders people over clutter; returns (image, [(joints2d (J, 2), visible (J,))] per person).

  ``people`` are (subject, palette, pose) in the frame of a level camera; the
  camera's rotation turns each person about the point of the optical axis at
  the person's depth, so a tilted camera looks down or up at the person, who
  stays where the level camera saw them (rotating the points about the camera
  itself would swing people out of the picture once the tilt passes half the
  field of view).
  """
  plate = render.background("wild", camera.size[0], camera.size[1], rng)
  capsules, posed = [], []
  for subject, palette, pose in people:
    pivot = np.array([0.0, 0.0, pose[:, 2].mean()])
    pose_cam = (pose - pivot) @ camera.rotation.T + pivot
    capsules += render.body_capsules(body.named_points(pose_cam), subject.girth, palette)
    posed.append(pose_cam)
  image, depth, _ = render.render(plate, capsules, camera)
  annotations = []
  for pose_cam in posed:
    joints3d = body.native_joints(pose_cam, joint_set)
    uv = camera.project(joints3d)
    # Visibility from the depth buffer, with each joint's nearest POSE3D radius.
    radius = _radius_for(joint_set)
    annotations.append((uv, render.visibility(joints3d, uv, depth, radius)))
  return image, annotations


def _radius_for(joint_set: skeletons.JointSet) -> np.ndarray:
  table = {"mpii_16": body.MPII_16_POINTS, "lsp_14": body.LSP_14_POINTS}[joint_set.name]
  radius = dict(zip(skeletons.POSE3D.joints, render.JOINT_RADIUS))
  radius["upper_neck"] = 45.0
  return np.array([radius[table[name]] for name in joint_set.joints])
