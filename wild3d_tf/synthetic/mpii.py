"""MPII Human Pose in its native layout (docs/datasets.md, MPII Human Pose).

    mpii/mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat
                                        the RELEASE struct (annolist, img_train, version,
                                        single_person, act, video_list)
    mpii/images/<9 digits>.jpg          frames of 1280 x 720 (times the preset's scale)

Coordinates are MATLAB 1-based pixels. Joints outside the frame are left out
of ``annopoints.point``; ``is_visible`` comes from the depth buffer. The
awkward cases of the real file are reproduced on purpose: single-person
images whose ``annorect`` squeezes to a scalar struct, a person with a
single annotated point, one empty ``is_visible`` and one given as a string,
and test images whose rects carry only ``scale`` and ``objpos``.
"""

from __future__ import annotations

import pathlib
import zlib

import numpy as np

from wild3d_tf import cameras, skeletons
from wild3d_tf.synthetic import formats, wild
from wild3d_tf.synthetic.presets import Preset

MPII = skeletons.MPII_16
ANNOTATION_FILE = "mpii_human_pose_v1_u12_1.mat"
ANNOTATION_FOLDER = "mpii_human_pose_v1_u12_2"


def _struct_array(records: list[dict], fields: tuple) -> np.ndarray:
  """A 1 x n MATLAB struct array."""
  array = np.empty((1, len(records)), dtype=[(f, object) for f in fields])
  for i, record in enumerate(records):
    for f in fields:
      array[0, i][f] = record[f]
  return array


def _rect(uv, visible, width, height, person_height, head_box, test, rng, quirks):
  objpos = _struct_array(
    [{"x": float(np.mean(uv[:, 0]) + 1), "y": float(np.mean(uv[:, 1]) + 1)}], ("x", "y")
  )
  rect = {"scale": float(person_height / 200.0), "objpos": objpos}
  if test:
    return rect, ("scale", "objpos")
  inside = (uv[:, 0] >= 0) & (uv[:, 0] <= width - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= height - 1)
  ids = np.flatnonzero(inside)
  if quirks.get("single_point"):
    ids = ids[:1]
  points = []
  for n, joint in enumerate(ids):
    flag = int(visible[joint])
    if quirks.get("empty_visible") and n == 0:
      flag = np.zeros((0, 0))
    elif quirks.get("string_visible") and n == 0:
      flag = str(flag)
    points.append(
      {
        "id": int(joint),
        "x": float(uv[joint, 0] + 1),
        "y": float(uv[joint, 1] + 1),
        "is_visible": flag,
      }
    )
  annopoints = _struct_array(
    [{"point": _struct_array(points, ("id", "x", "y", "is_visible"))}], ("point",)
  )
  x1, y1, x2, y2 = head_box + 1
  rect.update(
    {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2), "annopoints": annopoints}
  )
  return rect, ("x1", "y1", "x2", "y2", "annopoints", "scale", "objpos")


def write(root: pathlib.Path, preset: Preset, seed: int, samples: list | None = None) -> None:
  out = pathlib.Path(root) / "mpii"
  rng = np.random.default_rng([seed, zlib.crc32(b"mpii")])
  width, height = int(round(1280 * preset.mpii_scale)), int(round(720 * preset.mpii_scale))
  annolist, img_train, single_person, act = [], [], [], []
  names = rng.choice(10**9, size=preset.mpii_images, replace=False)
  for i in range(preset.mpii_images):
    test = i % 5 == 4
    count = 1 if i % 3 == 0 else 2
    f = 0.5 * width / np.tan(np.radians(rng.uniform(25, 35)))
    camera = wild.elevated_camera(
      cameras.intrinsic_matrix(f, f, width / 2, height / 2), (width, height), rng
    )
    people = [
      wild.random_person(
        rng, rng.uniform(3500, 7000), offset_x=(p - (count - 1) / 2) * 1300 + rng.uniform(-300, 300)
      )
      for p in range(count)
    ]
    image, annotations = wild.photo(camera, people, rng, MPII)
    name = f"{names[i]:09d}.jpg"
    formats.write_jpeg(out / "images" / name, image)
    rects, fields = [], None
    for p, (uv, visible) in enumerate(annotations):
      head = (uv[MPII.index("head_top")] + uv[MPII.index("upper_neck")]) / 2
      side = 1.1 * np.linalg.norm(uv[MPII.index("head_top")] - uv[MPII.index("upper_neck")])
      quirks = {
        "empty_visible": i == 1 and p == 0,
        "string_visible": i == 2 and p == 0,
        "single_point": i == 1 and p == 1,
      }
      person_height = np.ptp(uv[:, 1])
      rect, fields = _rect(
        uv,
        visible,
        width,
        height,
        person_height,
        np.array([head[0] - side / 2, head[1] - side / 2, head[0] + side / 2, head[1] + side / 2]),
        test,
        rng,
        quirks,
      )
      rects.append(rect)
      if samples is not None and len(samples) < 6 and not test:
        samples.append((image, uv))
    annolist.append(
      {
        "image": _struct_array([{"name": name}], ("name",)),
        "annorect": _struct_array(rects, fields),
        "frame_sec": float(rng.integers(1, 300)),
        "vididx": float(i % 3 + 1),
      }
    )
    img_train.append(0.0 if test else 1.0)
    single_person.append(
      np.arange(1, count + 1, dtype=np.float64)[:, None]
      if count == 1 or abs(people[0][2][0, 0] - people[-1][2][0, 0]) > 1000
      else np.zeros((0, 0))
    )
    act.append(
      {"act_name": "synthetic athletics", "cat_name": "sports", "act_id": float(i % 7 + 1)}
    )
  single = np.empty((len(single_person), 1), object)
  for i, value in enumerate(single_person):
    single[i, 0] = value
  videos = np.empty((1, 3), object)
  for v in range(3):
    videos[0, v] = f"synthetic{v:02d}"
  release = _struct_array(
    [
      {
        "annolist": _struct_array(annolist, ("image", "annorect", "frame_sec", "vididx")),
        "img_train": np.array([img_train]),
        "version": "12",
        "single_person": single,
        "act": _struct_array(act, ("act_name", "cat_name", "act_id")).T,
        "video_list": videos,
      }
    ],
    ("annolist", "img_train", "version", "single_person", "act", "video_list"),
  )
  # Where the release's annotation zip unpacks it (its own folder beside images/).
  (out / ANNOTATION_FOLDER).mkdir(parents=True, exist_ok=True)
  formats.savemat(out / ANNOTATION_FOLDER / ANNOTATION_FILE, {"RELEASE": release})
