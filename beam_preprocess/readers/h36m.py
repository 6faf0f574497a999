"""Human3.6M: CDF poses, the VideoPose3D-style camera JSON and MP4 videos (datasets.md 1)."""

from __future__ import annotations

import json
import pathlib
import re

import cdflib
import numpy as np

from beam_preprocess import media
from beam_preprocess.records import (
  BadRecord,
  Options,
  check_finite,
  inside_image,
  relative,
  safe_path,
)
from wild3d_tf import cameras, skeletons

DATASET = "h36m"
TEST_SUBJECTS = ("S9", "S11")
CANONICAL_ACTIONS = {
  "TakingPhoto": "Photo",
  "WalkingDog": "WalkDog",
  "WalkingTogether": "WalkTogether",
}


def action_of(take: str) -> str:
  """'Directions 1' -> 'Directions'; S1's 'TakingPhoto' -> 'Photo'."""
  name = re.sub(r"\s+\d+$", "", take)
  return CANONICAL_ACTIONS.get(name, name)


def _cdf(path: pathlib.Path, width: int, file: str) -> np.ndarray:
  try:
    pose = cdflib.CDF(str(path)).varget("Pose")
  except Exception as error:  # cdflib raises many kinds for broken files
    raise BadRecord(file, "-", "Pose", f"unreadable CDF: {error}") from None
  pose = np.asarray(pose, np.float64)
  if pose.ndim != 3 or pose.shape[0] != 1 or pose.shape[2] != width:
    raise BadRecord(file, "-", "Pose", f"shape {pose.shape}, expected (1, N, {width})")
  return pose[0]


def work_items(root: pathlib.Path, options: Options):
  """One item per (subject, take, camera) and range of frames; bad rows for unreadable files."""
  items, bad = [], []
  for mono in sorted(root.glob("S*/MyPoseFeatures/D3_Positions_mono/*.cdf")):
    subject = mono.parts[-4]
    take, camera = mono.stem.rsplit(".", 1)
    file = relative(mono, root)
    try:
      count = len(_cdf(mono, 96, file))
    except BadRecord as error:
      bad.append(error)
      continue
    stride = options.test_frame_stride if subject in TEST_SUBJECTS else options.frame_stride
    frames = list(range(0, count, stride))
    for start in range(0, len(frames), options.frames_per_item):
      items.append(
        {
          "subject": subject,
          "take": take,
          "camera": camera,
          "frames": frames[start : start + options.frames_per_item],
        }
      )
  return items, bad


def raw_records(root: pathlib.Path, item: dict, options: Options):
  subject, take, camera = item["subject"], item["take"], item["camera"]
  features = root / subject / "MyPoseFeatures"
  mono_file = f"{subject}/MyPoseFeatures/D3_Positions_mono/{take}.{camera}.cdf"
  mono = _cdf(features / "D3_Positions_mono" / f"{take}.{camera}.cdf", 96, mono_file)
  d2_file = f"{subject}/MyPoseFeatures/D2_Positions/{take}.{camera}.cdf"
  d2 = _cdf(safe_path(root, d2_file, d2_file, "-"), 64, d2_file)
  try:
    calibration = json.loads(safe_path(root, "cameras.json", "cameras.json", "-").read_text())
    intrinsic, extrinsic = (
      calibration["intrinsic"][camera],
      calibration["extrinsic"][subject][camera],
    )
  except (KeyError, ValueError) as error:
    raise BadRecord(
      "cameras.json", f"{subject}/{camera}", "camera", f"missing or malformed: {error}"
    ) from None
  video_file = f"{subject}/Videos/{take}.{camera}.mp4"
  video = safe_path(root, video_file, video_file, "-")
  frames = [f for f in item["frames"] if f < min(len(mono), len(d2))]
  for frame, image in media.read_video_frames(video, frames, video_file):
    if isinstance(image, BadRecord):
      yield image
      continue
    yield {
      "subject": subject,
      "take": take,
      "camera": camera,
      "frame": frame,
      "image": image,
      "mono": mono[frame],
      "d2": d2[frame],
      "intrinsic": intrinsic,
      "extrinsic": extrinsic,
      "file": mono_file,
    }


def to_record(raw: dict) -> dict:
  """Native H3.6M values of one frame -> canonical record."""
  record_id = f"frame {raw['frame']}"
  joints3d = check_finite(raw["mono"], raw["file"], record_id, "D3_Positions_mono").reshape(32, 3)
  joints2d = check_finite(raw["d2"], raw["file"], record_id, "D2_Positions").reshape(32, 2)
  camera = cameras.h36m_json_to_camera(raw["intrinsic"], raw["extrinsic"], raw["camera"])
  k = camera.intrinsics
  if not (k[0, 0] > 0 and k[1, 1] > 0):
    raise BadRecord(
      "cameras.json",
      raw["camera"],
      "focal_length",
      f"non-positive focal length {k[0, 0]}, {k[1, 1]}",
    )
  pose2d = skeletons.convert(joints2d, skeletons.H36M_32, skeletons.POSE2D)
  inside = inside_image(pose2d, raw["image"])
  test = raw["subject"] in TEST_SUBJECTS
  return {
    "key": f"{DATASET}/{raw['subject']}/{raw['take']}/{raw['camera']}/{raw['frame']:06d}",
    "dataset": DATASET,
    "split": "test" if test else "train",
    "subject": raw["subject"],
    "sequence": raw["take"],
    "action": action_of(raw["take"]),
    "camera": raw["camera"],
    "frame": raw["frame"],
    "image": raw["image"],
    "mask": None,
    "intrinsics": k,
    "distortion": np.array([*camera.radial, *camera.tangential]),
    "joints2d": pose2d,
    "labelled": np.ones(14, bool),
    "visible": inside,
    "joints3d": skeletons.convert(joints3d, skeletons.H36M_32, skeletons.POSE3D),
    "joints3d_univ": None,
  }
