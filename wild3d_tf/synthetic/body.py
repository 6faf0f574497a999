"""Synthetic people: per-subject skeletons, joint-angle motions, retargeted CMU motion.

A pose is built by forward kinematics over the POSE3D tree: every bone has a
rest direction in the body frame (x = the person's left, y down, z = the
person's back; the person faces -z) and a rotation from Euler angles within
joint limits, composed down the chain. Bone lengths are per subject. Motions
are smooth: each angle is a base value plus a few sinusoids, per action.

Besides the 17 POSE3D joints a body has the extra points the native
skeletons need (toes, hands, clavicles, upper spine), so each dataset writer
fills its own joint set from one set of named points.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wild3d_tf import skeletons

P3 = skeletons.POSE3D
BONES = P3.bones  # (child, parent) in POSE3D indices

# Rest direction of the bone ending at each joint (unit vectors, body frame).
_REST = {
  "r_hip": (-1, 0.15, 0),
  "r_knee": (0, 1, 0),
  "r_ankle": (0, 1, 0),
  "l_hip": (1, 0.15, 0),
  "l_knee": (0, 1, 0),
  "l_ankle": (0, 1, 0),
  "spine": (0, -1, 0),
  "thorax": (0, -1, 0),
  "head": (0, -1, -0.15),
  "head_top": (0, -1, 0.1),
  "l_shoulder": (1, -0.1, 0),
  "l_elbow": (0, 1, 0),
  "l_wrist": (0, 1, 0),
  "r_shoulder": (-1, -0.1, 0),
  "r_elbow": (0, 1, 0),
  "r_wrist": (0, 1, 0),
}

# Mean bone lengths in mm (roughly H3.6M's subjects), the bone ending at each joint.
MEAN_LENGTHS = {
  "r_hip": 132,
  "r_knee": 442,
  "r_ankle": 454,
  "l_hip": 132,
  "l_knee": 442,
  "l_ankle": 454,
  "spine": 233,
  "thorax": 257,
  "head": 121,
  "head_top": 115,
  "l_shoulder": 151,
  "l_elbow": 278,
  "l_wrist": 251,
  "r_shoulder": 151,
  "r_elbow": 278,
  "r_wrist": 251,
}

# Joint angles (degrees): (flexion about x, abduction about z, twist about y) per
# bone, with limits. Positive flexion swings a downward bone towards -z (forward).
ANGLES = (
  "pelvis_yaw",
  "pelvis_pitch",
  "pelvis_roll",
  "spine_flex",
  "spine_side",
  "spine_twist",
  "neck_flex",
  "neck_side",
  "l_hip_flex",
  "l_hip_abd",
  "l_knee_flex",
  "r_hip_flex",
  "r_hip_abd",
  "r_knee_flex",
  "l_sho_flex",
  "l_sho_abd",
  "l_elbow_flex",
  "r_sho_flex",
  "r_sho_abd",
  "r_elbow_flex",
)
LIMITS = {
  "pelvis_yaw": (-180, 180),
  "pelvis_pitch": (-60, 60),
  "pelvis_roll": (-30, 30),
  "spine_flex": (-20, 70),
  "spine_side": (-30, 30),
  "spine_twist": (-40, 40),
  "neck_flex": (-40, 50),
  "neck_side": (-30, 30),
  "l_hip_flex": (-30, 125),
  "l_hip_abd": (-15, 60),
  "l_knee_flex": (0, 150),
  "r_hip_flex": (-30, 125),
  "r_hip_abd": (-15, 60),
  "r_knee_flex": (0, 150),
  "l_sho_flex": (-50, 180),
  "l_sho_abd": (-10, 160),
  "l_elbow_flex": (0, 150),
  "r_sho_flex": (-50, 180),
  "r_sho_abd": (-10, 160),
  "r_elbow_flex": (0, 150),
}


def _rx(deg):
  a = np.radians(deg)
  c, s = np.cos(a), np.sin(a)
  one, zero = np.ones_like(a), np.zeros_like(a)
  return np.stack(
    [np.stack([one, zero, zero], -1), np.stack([zero, c, -s], -1), np.stack([zero, s, c], -1)], -2
  )


def _ry(deg):
  a = np.radians(deg)
  c, s = np.cos(a), np.sin(a)
  one, zero = np.ones_like(a), np.zeros_like(a)
  return np.stack(
    [np.stack([c, zero, s], -1), np.stack([zero, one, zero], -1), np.stack([-s, zero, c], -1)], -2
  )


def _rz(deg):
  a = np.radians(deg)
  c, s = np.cos(a), np.sin(a)
  one, zero = np.ones_like(a), np.zeros_like(a)
  return np.stack(
    [np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1), np.stack([zero, zero, one], -1)], -2
  )


@dataclasses.dataclass(frozen=True)
class Subject:
  """A person: bone lengths (mm, per POSE3D child joint) and widths for rendering."""

  name: str
  lengths: dict
  girth: float  # multiplies limb radii

  @classmethod
  def random(cls, name: str, rng: np.random.Generator, scale: float | None = None) -> Subject:
    scale = rng.uniform(0.88, 1.08) if scale is None else scale
    lengths = {j: float(v * scale * rng.uniform(0.95, 1.05)) for j, v in MEAN_LENGTHS.items()}
    for side in ("knee", "ankle", "elbow", "wrist", "hip", "shoulder"):  # symmetric limbs
      lengths[f"r_{side}"] = lengths[f"l_{side}"]
    return cls(name, lengths, float(rng.uniform(0.85, 1.2)))

  def bone_lengths(self) -> np.ndarray:
    """(16,) in the order of ``POSE3D.bones``."""
    return np.array([self.lengths[P3.joints[c]] for c, _ in BONES])


def forward_kinematics(angles: dict, subject: Subject) -> np.ndarray:
  """(F, 17, 3) root-relative body-frame poses from per-frame angle arrays (F,)."""
  frames = len(angles["pelvis_yaw"])
  a = {k: np.clip(np.asarray(angles.get(k, np.zeros(frames)), float), *LIMITS[k]) for k in ANGLES}
  root = _ry(a["pelvis_yaw"]) @ _rx(a["pelvis_pitch"]) @ _rz(a["pelvis_roll"])
  # An upward bone bends forward (-z) under a positive rotation about x.
  torso = root @ _rx(a["spine_flex"]) @ _rz(a["spine_side"]) @ _ry(a["spine_twist"])
  neck = torso @ _rx(a["neck_flex"]) @ _rz(a["neck_side"])
  frame_of = {
    "r_hip": root,
    "l_hip": root,
    "spine": root,
    "thorax": torso,
    "head": neck,
    "head_top": neck,
    "l_shoulder": torso,
    "r_shoulder": torso,
  }
  for side, sign in (("l", -1.0), ("r", 1.0)):  # abduction moves a left limb to +x
    hip = root @ _rx(-a[f"{side}_hip_flex"]) @ _rz(sign * a[f"{side}_hip_abd"])
    frame_of[f"{side}_knee"] = hip
    frame_of[f"{side}_ankle"] = hip @ _rx(a[f"{side}_knee_flex"])
    shoulder = torso @ _rx(-a[f"{side}_sho_flex"]) @ _rz(sign * a[f"{side}_sho_abd"])
    frame_of[f"{side}_elbow"] = shoulder
    frame_of[f"{side}_wrist"] = shoulder @ _rx(-a[f"{side}_elbow_flex"])
  pose = np.zeros((frames, P3.num_joints, 3))
  for child, parent in BONES:  # parents come before children in POSE3D order
    name = P3.joints[child]
    rest = np.array(_REST[name], float)
    rest /= np.linalg.norm(rest)
    pose[:, child] = pose[:, parent] + subject.lengths[name] * (frame_of[name] @ rest)
  return pose


# Action styles: base angles and sinusoid amplitudes (degrees) and walking speed.
@dataclasses.dataclass(frozen=True)
class Style:
  walk: float = 0.0  # mm per second
  base: tuple = ()  # (angle, degrees) pairs
  swing: float = 10.0  # amplitude of the random slow motions
  period: float = 3.0  # seconds


STUDIO_STYLES = {
  "Directions": Style(base=(("r_sho_flex", 60),), swing=15),
  "Discussion": Style(swing=18),
  "Eating": Style(base=(("r_elbow_flex", 110), ("l_elbow_flex", 90), ("r_sho_flex", 20)), swing=8),
  "Greeting": Style(base=(("r_sho_abd", 100),), swing=20, period=1.5),
  "Phoning": Style(base=(("r_elbow_flex", 140), ("r_sho_flex", 40)), swing=8),
  "Posing": Style(base=(("l_sho_abd", 70), ("r_sho_abd", 70)), swing=12),
  "Purchases": Style(walk=300, swing=12),
  "Sitting": Style(
    base=(("l_hip_flex", 90), ("r_hip_flex", 90), ("l_knee_flex", 90), ("r_knee_flex", 90)), swing=6
  ),
  "SittingDown": Style(
    base=(
      ("l_hip_flex", 60),
      ("r_hip_flex", 60),
      ("l_knee_flex", 70),
      ("r_knee_flex", 70),
      ("spine_flex", 25),
    ),
    swing=25,
    period=4.0,
  ),
  "Smoking": Style(base=(("l_elbow_flex", 120), ("l_sho_flex", 30)), swing=8),
  "Photo": Style(
    base=(("l_elbow_flex", 120), ("r_elbow_flex", 120), ("l_sho_flex", 70), ("r_sho_flex", 70)),
    swing=8,
  ),
  "Waiting": Style(swing=8, period=5.0),
  "Walking": Style(walk=1300, swing=6),
  "WalkDog": Style(walk=900, base=(("r_sho_flex", 30),), swing=8),
  "WalkTogether": Style(walk=1000, swing=6),
}
ACTIONS = tuple(STUDIO_STYLES)


def motion_angles(
  style: Style, frames: int, fps: float, rng: np.random.Generator, wild: bool = False
) -> dict:
  """Per-frame angles for one take: base + slow sinusoids (+ a gait when walking).

  ``wild`` widens everything: athletic, varied poses as in MPII/LSP (twice the swing and a
  random base pose at 35 % of each joint's range: at 3x and 50 % the bench's 2D-only tiny
  network reached 44 % 2D PCK on TS5 in 3,000 steps, at 2x and 35 % 60 %; docs/synthetic.md).
  """
  t = np.arange(frames) / fps
  angles = {k: np.zeros(frames) for k in ANGLES}
  for name, value in style.base:
    angles[name] += value
  swing = style.swing * (2.0 if wild else 1.0)
  for name in ANGLES:
    if name == "pelvis_yaw":
      continue
    lo, hi = LIMITS[name]
    if wild:
      angles[name] += rng.uniform(lo, hi) * 0.35  # a random athletic base pose
    for k in range(2):
      period = style.period * rng.uniform(0.6, 1.6) / (k + 1)
      amp = swing * rng.uniform(0.3, 1.0) * (0.3 if name.startswith("pelvis") else 1.0)
      angles[name] += amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
  if style.walk:
    phase = 2 * np.pi * t * style.walk / 1400.0  # about one stride per 1.4 m
    for side, sign in (("l", 1), ("r", -1)):
      angles[f"{side}_hip_flex"] += 25 * sign * np.sin(phase)
      angles[f"{side}_knee_flex"] += 30 * (1 + np.sin(phase * sign + 1.2))
      angles[f"{side}_sho_flex"] += -20 * sign * np.sin(phase)
      angles[f"{side}_elbow_flex"] += 15
  angles["pelvis_yaw"] = rng.uniform(-180, 180) + np.cumsum(rng.normal(0, 0.4, frames)) * (
    3 if wild else 1
  )
  for name in ("l_knee_flex", "r_knee_flex", "l_elbow_flex", "r_elbow_flex"):
    angles[name] = np.abs(angles[name])
  return angles


def trajectory(style: Style, yaw_degrees: np.ndarray, fps: float) -> np.ndarray:
  """(F, 3) pelvis positions on the floor plane (mm) for a walking style."""
  heading = np.radians(yaw_degrees)
  step = style.walk / fps
  velocity = np.stack(
    [-np.sin(heading) * step, np.zeros_like(heading), -np.cos(heading) * step], -1
  )
  return np.cumsum(velocity, axis=0)


def retarget(poses: np.ndarray, subject: Subject) -> np.ndarray:
  """Keeps every bone's direction from ``poses`` (F, 17, 3) and sets the subject's lengths."""
  out = np.zeros_like(poses)
  out[:, 0] = poses[:, 0]
  for child, parent in BONES:
    direction = poses[:, child] - poses[:, parent]
    direction /= np.maximum(np.linalg.norm(direction, axis=-1, keepdims=True), 1e-9)
    out[:, child] = out[:, parent] + subject.lengths[P3.joints[child]] * direction
  return out


def floor_offset(poses: np.ndarray) -> np.ndarray:
  """(F,) vertical shift that puts the lower ankle 80 mm above the floor (y = 0, y down)."""
  lowest = poses[:, [P3.index("l_ankle"), P3.index("r_ankle")], 1].max(axis=1)
  return -80.0 - lowest


def named_points(pose: np.ndarray) -> dict[str, np.ndarray]:
  """POSE3D joints plus the extra points of the native skeletons, (..., 3) each.

  Feet point forward from the ankles (the body's -z, turned with the pelvis),
  hands continue the forearms; clavicles and the upper spine interpolate. The
  front marks (``_front_marks``: nose, eyes, chest mark and their anchors) face
  where the shoulders and the head face.
  """
  j = {name: pose[..., i, :] for i, name in enumerate(P3.joints)}
  hips_axis = j["l_hip"] - j["r_hip"]
  up = j["thorax"] - j["pelvis"]
  forward = np.cross(hips_axis, up)  # x (left) cross -y (up) = -z: the way the body faces
  forward /= np.maximum(np.linalg.norm(forward, axis=-1, keepdims=True), 1e-9)
  down = -up / np.maximum(np.linalg.norm(up, axis=-1, keepdims=True), 1e-9)
  points = dict(j)
  for side in ("l", "r"):
    ankle, elbow, wrist = j[f"{side}_ankle"], j[f"{side}_elbow"], j[f"{side}_wrist"]
    points[f"{side}_foot"] = ankle + 100 * forward + 50 * down
    points[f"{side}_toe"] = ankle + 170 * forward + 60 * down
    forearm = (wrist - elbow) / np.maximum(
      np.linalg.norm(wrist - elbow, axis=-1, keepdims=True), 1e-9
    )
    points[f"{side}_hand"] = wrist + 80 * forearm
    points[f"{side}_hand_tip"] = wrist + 160 * forearm
    points[f"{side}_thumb"] = wrist + 40 * forearm + 30 * forward
    points[f"{side}_thumb_tip"] = wrist + 70 * forearm + 50 * forward
    points[f"{side}_clavicle"] = 0.7 * j["thorax"] + 0.3 * j[f"{side}_shoulder"]
  # MPII and LSP annotate the upper neck; POSE3D's thorax is the neck base.
  points["upper_neck"] = j["thorax"] + 0.45 * (j["head"] - j["thorax"])
  for k, w in ((2, 0.35), (3, 0.6), (4, 0.85)):
    points[f"spine{k}"] = (1 - w) * j["spine"] + w * j["thorax"]
  points.update(_front_marks(j))
  return points


# Where the front marks sit on a body of girth 1 (mm): a flip cannot turn a back into a front.
# The renderer scales each mark's offset from its anchor (head_centre, chest_centre) by the
# subject's girth, as it scales the radii of the head and torso around the same anchors.
_NOSE_OUT = 85.0  # from the head's centre, forward, level with it (clear of the head joint)
_EYE_OUT, _EYE_SIDE, _EYE_UP = 78.0, 32.0, 22.0
_CHEST_OUT = 80.0  # from the pelvis-thorax axis, forward
_CHEST_AT = 0.72  # fraction of the way from pelvis to thorax


def _front_marks(j: dict) -> dict:
  """Face and chest marks: ``head_centre``, ``nose``, ``l_eye``, ``r_eye``, ``chest_centre``,
  ``chest_mark`` (..., 3), facing where the shoulders and the head face."""

  def unit(v):
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)

  across = j["l_shoulder"] - j["r_shoulder"]  # to the person's left
  head_up = unit(j["head_top"] - j["head"])
  # left x up = forward (x left, -y up: (1,0,0) x (0,-1,0) = (0,0,-1), the way the body faces).
  face = unit(np.cross(across, head_up))
  side = unit(np.cross(head_up, face))  # to the person's left
  centre = 0.5 * (j["head"] + j["head_top"])
  chest_axis = j["thorax"] - j["pelvis"]
  chest_forward = unit(np.cross(across, chest_axis))
  chest_centre = j["pelvis"] + _CHEST_AT * chest_axis
  eye = centre + _EYE_OUT * face + _EYE_UP * head_up
  return {
    "head_centre": centre,
    "nose": centre + _NOSE_OUT * face,
    "l_eye": eye + _EYE_SIDE * side,
    "r_eye": eye - _EYE_SIDE * side,
    "chest_centre": chest_centre,
    "chest_mark": chest_centre + _CHEST_OUT * chest_forward,
  }


# How each native skeleton is filled from the named points.
H36M_32_POINTS = {
  "Hips": "pelvis",
  "RightUpLeg": "r_hip",
  "RightLeg": "r_knee",
  "RightFoot": "r_ankle",
  "RightToeBase": "r_foot",
  "RightToeSite": "r_toe",
  "LeftUpLeg": "l_hip",
  "LeftLeg": "l_knee",
  "LeftFoot": "l_ankle",
  "LeftToeBase": "l_foot",
  "LeftToeSite": "l_toe",
  "Spine": "pelvis",
  "Spine1": "spine",
  "Neck": "thorax",
  "Head": "head",
  "HeadSite": "head_top",
  "LeftShoulder": "thorax",
  "LeftArm": "l_shoulder",
  "LeftForeArm": "l_elbow",
  "LeftHand": "l_wrist",
  "LeftHandThumb": "l_thumb",
  "LeftThumbSite": "l_thumb_tip",
  "L_Wrist_End": "l_hand",
  "LeftWristSite": "l_hand_tip",
  "RightShoulder": "thorax",
  "RightArm": "r_shoulder",
  "RightForeArm": "r_elbow",
  "RightHand": "r_wrist",
  "RightHandThumb": "r_thumb",
  "RightThumbSite": "r_thumb_tip",
  "R_Wrist_End": "r_hand",
  "RightWristSite": "r_hand_tip",
}

MPI_INF_3DHP_28_POINTS = {
  "spine3": "spine3",
  "spine4": "spine4",
  "spine2": "spine2",
  "spine": "spine",
  "pelvis": "pelvis",
  "neck": "thorax",
  "head": "head",
  "head_top": "head_top",
  "left_clavicle": "l_clavicle",
  "left_shoulder": "l_shoulder",
  "left_elbow": "l_elbow",
  "left_wrist": "l_wrist",
  "left_hand": "l_hand",
  "right_clavicle": "r_clavicle",
  "right_shoulder": "r_shoulder",
  "right_elbow": "r_elbow",
  "right_wrist": "r_wrist",
  "right_hand": "r_hand",
  "left_hip": "l_hip",
  "left_knee": "l_knee",
  "left_ankle": "l_ankle",
  "left_foot": "l_foot",
  "left_toe": "l_toe",
  "right_hip": "r_hip",
  "right_knee": "r_knee",
  "right_ankle": "r_ankle",
  "right_foot": "r_foot",
  "right_toe": "r_toe",
}


MPII_16_POINTS = {
  **{n: n for n in skeletons.MPII_16.joints if n in P3.joints},
  "upper_neck": "upper_neck",
}
LSP_14_POINTS = {**{n: n for n in skeletons.LSP_14.joints if n in P3.joints}, "neck": "upper_neck"}
_POINT_TABLES = {
  "h36m_32": H36M_32_POINTS,
  "mpi_inf_3dhp_28": MPI_INF_3DHP_28_POINTS,
  "mpi_inf_3dhp_17": MPI_INF_3DHP_28_POINTS,
  "mpii_16": MPII_16_POINTS,
  "lsp_14": LSP_14_POINTS,
}


def native_joints(pose: np.ndarray, joint_set: skeletons.JointSet) -> np.ndarray:
  """(..., J, 3) joints of a native ``joint_set`` for POSE3D ``pose``.

  The joints are as the dataset defines them.
  """
  points = named_points(pose)
  table = _POINT_TABLES[joint_set.name]
  return np.stack([points[table[name]] for name in joint_set.joints], axis=-2)
