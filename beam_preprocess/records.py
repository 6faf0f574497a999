"""What readers hand to the encoder: canonical records, bad records and conversion options.

A canonical record (a dict) carries one person in one image in wild3d's
conventions: POSE2D joints in 0-based original pixels (NaN where unlabelled),
POSE3D joints in the camera frame in mm, the original RGB image, the camera.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np


class BadRecord(Exception):
  """A record (or a whole file) that cannot be converted; becomes one dead-letter row."""

  def __init__(self, file: str, record: str, field: str, reason: str):
    super().__init__(f"{file} [{record}] {field}: {reason}")
    self.file, self.record, self.field, self.reason = str(file), str(record), field, reason

  def row(self, dataset: str) -> dict:
    return {
      "dataset": dataset,
      "file": self.file,
      "record": self.record,
      "field": self.field,
      "reason": self.reason,
      "error": "BadRecord",
    }


@dataclasses.dataclass(frozen=True)
class Options:
  """Frame selection and crop settings (flags of ``beam_preprocess.convert``)."""

  frame_stride: int = 1  # training splits: every n-th frame
  test_frame_stride: int = 1  # test splits (H3.6M's protocol: 64)
  cameras: str = "available"  # 3DHP training: "available", "vnect", "all" or "0,2,4"
  valid_only: bool = True  # 3DHP test: valid frames only
  frames_per_item: int = 250  # video frames one work item decodes
  crop_size: int = 320
  crop_margin: float = 0.35
  jpeg_quality: int = 95


def safe_path(root: os.PathLike, relative: str, file: str, record: str) -> pathlib.Path:
  """``root / relative`` if it stays inside ``root`` and is a regular file, else BadRecord."""
  text = str(relative)
  if (
    not text
    or "\x00" in text
    or "\\" in text
    or os.path.isabs(text)
    or ".." in pathlib.PurePosixPath(text).parts
  ):
    raise BadRecord(file, record, "path", f"path {text!r} leaves the dataset root")
  root = pathlib.Path(root).resolve()
  path = (root / text).resolve()
  if root not in path.parents:
    raise BadRecord(file, record, "path", f"path {text!r} leaves the dataset root")
  if not path.exists():
    raise BadRecord(file, record, "path", f"missing file {text}")
  if not path.is_file():
    raise BadRecord(file, record, "path", f"{text} is not a regular file")
  return path


def check_finite(value, file: str, record: str, field: str) -> np.ndarray:
  value = np.asarray(value, np.float64)
  if not np.isfinite(value).all():
    raise BadRecord(file, record, field, "non-finite coordinates")
  return value


def relative(path: os.PathLike, root: os.PathLike) -> str:
  return str(pathlib.Path(path).relative_to(root))


def inside_image(joints2d: np.ndarray, image: np.ndarray) -> np.ndarray:
  """(J,) bool: 0-based pixel joints that fall inside the image."""
  height, width = image.shape[:2]
  return (joints2d >= 0).all(-1) & (joints2d[:, 0] <= width - 1) & (joints2d[:, 1] <= height - 1)
