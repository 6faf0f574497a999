"""Renders synthetic people as shaded 3D capsules with a z-buffer.

Each pixel's ray comes from the camera's own model, lens distortion included
(the undistorted ray of every pixel is computed once per camera), so the
picture agrees with the 2D annotations, which are projections through the
same model. Capsules give perspective foreshortening and correct occlusion;
left and right limbs wear different colours, as clothing often does. Every
body has a front: a nose, two eyes and a chest mark (``Palette``), so a
horizontally flipped back view does not look like a front view.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from wild3d_tf import cameras, skeletons

P3 = skeletons.POSE3D
# From a surface towards the light: up and to the left of the camera.
# From a surface towards the light: up and to the left of the camera.
_LIGHT = np.array([-0.3, -0.6, -1.0]) / np.linalg.norm([-0.3, -0.6, -1.0])
UPPER, LOWER = 1, 2  # mask labels: 3DHP FGmasks G (upper body) and B (lower body)


@dataclasses.dataclass(frozen=True)
class Palette:
  """RGB colours (0-255) of one person. ``face_mark`` (nose), ``eyes`` and ``chest_mark`` mark
  the front in both domains: a horizontal flip of a back view cannot fake them."""

  torso: tuple
  left: tuple
  right: tuple
  legs_left: tuple
  legs_right: tuple
  skin: tuple
  face_mark: tuple
  eyes: tuple
  chest_mark: tuple

  @classmethod
  def random(cls, rng: np.random.Generator, wild: bool) -> Palette:
    def colour(lo=30, hi=230):
      return tuple(float(c) for c in rng.uniform(lo, hi, 3))

    if wild:  # varied clothing
      torso, pants = colour(), colour()
      # The chest mark contrasts with the shirt in brightness, the nose with the (light) skin.
      dark_shirt = float(np.mean(torso)) < 130
      chest = colour(175, 250) if dark_shirt else colour(5, 70)
      return cls(
        torso,
        colour(),
        torso,
        colour(),
        pants,
        colour(120, 230),
        face_mark=colour(10, 100),
        eyes=colour(0, 35),
        chest_mark=chest,
      )
    # Studio: few colours; left sleeve and trouser leg marked, as in motion-capture suits.
    torso = (60.0, 60.0, 170.0) if rng.uniform() < 0.5 else (170.0, 60.0, 60.0)
    return cls(
      torso,
      (230.0, 200.0, 40.0),
      torso,
      (230.0, 200.0, 40.0),
      (50.0, 50.0, 50.0),
      (190.0, 150.0, 120.0),
      face_mark=(150.0, 40.0, 40.0),
      eyes=(20.0, 20.0, 20.0),
      chest_mark=(240.0, 240.0, 240.0),
    )


@dataclasses.dataclass(frozen=True)
class Capsule:
  a: np.ndarray
  b: np.ndarray
  radius: float
  colour: tuple
  label: int


def body_capsules(points: dict, girth: float, palette: Palette) -> list[Capsule]:
  """Capsules for one person from ``body.named_points`` (single frame, camera frame, mm)."""
  g = girth
  caps = [
    Capsule(points["pelvis"], points["thorax"], 115 * g, palette.torso, UPPER),
    Capsule(points["l_hip"], points["l_shoulder"], 70 * g, palette.torso, UPPER),
    Capsule(points["r_hip"], points["r_shoulder"], 70 * g, palette.torso, UPPER),
    Capsule(points["thorax"], points["head"], 45 * g, palette.skin, UPPER),
    Capsule(points["head_centre"], points["head_centre"], 95 * g, palette.skin, UPPER),
  ]
  # Front marks: spheres half out of the head and the chest (the z-buffer hides them from
  # behind). Their offsets from the anchors are for girth 1 and scale with the radii.
  for name, anchor, radius, colour in (
    ("nose", "head_centre", 28, palette.face_mark),
    ("l_eye", "head_centre", 14, palette.eyes),
    ("r_eye", "head_centre", 14, palette.eyes),
    ("chest_mark", "chest_centre", 58, palette.chest_mark),
  ):
    centre = points[anchor] + g * (points[name] - points[anchor])
    caps.append(Capsule(centre, centre, radius * g, colour, UPPER))
  for side, arm, leg in (
    ("l", palette.left, palette.legs_left),
    ("r", palette.right, palette.legs_right),
  ):
    caps += [
      Capsule(points[f"{side}_shoulder"], points[f"{side}_elbow"], 45 * g, arm, UPPER),
      Capsule(points[f"{side}_elbow"], points[f"{side}_wrist"], 38 * g, arm, UPPER),
      Capsule(points[f"{side}_wrist"], points[f"{side}_hand"], 35 * g, palette.skin, UPPER),
      Capsule(points[f"{side}_hip"], points[f"{side}_knee"], 70 * g, leg, LOWER),
      Capsule(points[f"{side}_knee"], points[f"{side}_ankle"], 52 * g, leg, LOWER),
      Capsule(points[f"{side}_ankle"], points[f"{side}_toe"], 40 * g, (40.0, 35.0, 30.0), LOWER),
    ]
  return caps


# Radius of the body around each POSE3D joint, for the visibility test.
JOINT_RADIUS = np.array(
  [115, 70, 70, 52, 70, 70, 52, 115, 115, 60, 95, 50, 45, 38, 50, 45, 38], float
)


@functools.lru_cache(maxsize=32)
def _rays(k_key: tuple, radial: tuple, tangential: tuple, width: int, height: int) -> np.ndarray:
  """(H, W, 2) undistorted normalised ray of every pixel centre."""
  k = np.array(k_key).reshape(3, 3)
  u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
  return cameras.pixels_to_normalized(np.stack([u, v], -1), k, radial, tangential)


def pixel_rays(camera: cameras.Camera) -> np.ndarray:
  return _rays(
    tuple(np.asarray(camera.intrinsics, float).ravel()),
    tuple(camera.radial),
    tuple(camera.tangential),
    camera.size[0],
    camera.size[1],
  )


def render(background: np.ndarray, capsules: list[Capsule], camera: cameras.Camera):
  """Draws capsules over a (H, W, 3) uint8 background.

  Returns (image uint8, depth (H, W) mm with inf where empty, labels (H, W)
  uint8 with 0 background, UPPER, LOWER).
  """
  height, width = background.shape[:2]
  rays = pixel_rays(camera)
  image = background.astype(np.float32)
  depth = np.full((height, width), np.inf)
  labels = np.zeros((height, width), np.uint8)
  for cap in capsules:
    ends = np.stack([cap.a, cap.b])
    if (ends[:, 2] < cap.radius + 50).any():
      continue  # behind or at the camera
    uv = camera.project(ends)
    reach = camera.intrinsics[0, 0] * cap.radius / ends[:, 2].min() + 3
    x0, y0 = np.floor(uv.min(0) - reach).astype(int)
    x1, y1 = np.ceil(uv.max(0) + reach).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
    if x0 > x1 or y0 > y1:
      continue
    ray = np.concatenate(
      [rays[y0 : y1 + 1, x0 : x1 + 1], np.ones((y1 - y0 + 1, x1 - x0 + 1, 1))], -1
    )
    # Closest point between each ray t*d and the segment a + s*(b - a).
    a, axis = cap.a, cap.b - cap.a
    dd = np.sum(ray * ray, -1)
    da = ray @ a
    du = ray @ axis
    uu = float(axis @ axis)
    au = float(a @ axis)
    if uu > 1e-9:
      s = np.clip((du * da / dd - au) / np.maximum(uu - du * du / dd, 1e-9), 0.0, 1.0)
    else:
      s = np.zeros_like(dd)
    centre = a + s[..., None] * axis
    t = np.sum(ray * centre, -1) / dd
    offset = t[..., None] * ray - centre
    dist2 = np.sum(offset * offset, -1)
    hit = dist2 < cap.radius**2
    t_enter = t - np.sqrt(np.maximum(cap.radius**2 - dist2, 0.0) / dd)
    window = depth[y0 : y1 + 1, x0 : x1 + 1]
    front = hit & (t_enter < window)
    if not front.any():
      continue
    normal = (t_enter[..., None] * ray - centre) / cap.radius
    shade = 0.35 + 0.65 * np.clip(normal @ _LIGHT, 0.0, 1.0)
    window[front] = t_enter[front]
    labels[y0 : y1 + 1, x0 : x1 + 1][front] = cap.label
    image[y0 : y1 + 1, x0 : x1 + 1][front] = shade[front][:, None] * np.array(
      cap.colour, np.float32
    )
  return np.clip(image, 0, 255).astype(np.uint8), depth, labels


def visibility(
  joints_cam: np.ndarray, uv: np.ndarray, depth: np.ndarray, radius=JOINT_RADIUS
) -> np.ndarray:
  """(J,) bool: inside the image and not hidden behind another surface.

  A joint sits inside its own limb, whose surface is ``radius`` in front of
  it; anything nearer than that (with a 40 mm tolerance) occludes it.
  """
  height, width = depth.shape
  u = np.round(uv[:, 0]).astype(int)
  v = np.round(uv[:, 1]).astype(int)
  inside = (u >= 0) & (u < width) & (v >= 0) & (v < height) & (joints_cam[:, 2] > 0)
  seen = np.zeros(len(uv), bool)
  seen[inside] = depth[v[inside], u[inside]] >= joints_cam[inside, 2] - radius[inside] - 40.0
  return seen


def background(kind: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
  """``green`` (green screen), ``studio`` (plain room) or ``wild`` (textured clutter)."""
  y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
  if kind == "green":
    base = np.array([40, 150, 60], np.float32) * (0.85 + 0.15 * y)
    image = np.broadcast_to(base, (height, width, 3)).copy()
  elif kind == "studio":
    wall = np.array(rng.uniform(120, 180, 3), np.float32)
    floor = wall * 0.6
    image = np.where(y < 0.55, wall, floor) * np.ones((height, width, 1), np.float32)
  elif kind == "wild":
    image = np.empty((height, width, 3), np.float32)
    image[:] = rng.uniform(40, 200, 3) * (0.7 + 0.6 * y)
    for _ in range(int(rng.integers(12, 30))):
      colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
      cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
      size = int(rng.integers(width // 30 + 2, width // 4 + 3))
      if rng.uniform() < 0.5:
        cv2.rectangle(
          image, (cx, cy), (cx + size, cy + int(size * rng.uniform(0.3, 3))), colour, -1
        )
      else:
        cv2.ellipse(
          image,
          (cx, cy),
          (size, int(size * rng.uniform(0.3, 1.5))),
          float(rng.uniform(0, 180)),
          0,
          360,
          colour,
          -1,
        )
    # Out of focus, as behind a photographed person: blurred in proportion to the frame, so
    # clutter has no sharp limb-like edges (thin stripes, which did, are gone).
    image = cv2.GaussianBlur(image, (0, 0), max(1.2, width / 200))
  else:
    raise ValueError(f"unknown background kind {kind!r}")
  noise = rng.normal(0, 4.0, (height, width, 1)).astype(np.float32)
  return np.clip(image + noise, 0, 255).astype(np.uint8)
