"""What readers hand to the encoder: canonical records, bad records and conversion options.

A ``CanonicalRecord`` carries one person in one image in wild3d's
conventions: POSE2D joints in 0-based original pixels (NaN where unlabelled),
POSE3D joints in the original camera's frame in mm, the original RGB image,
the camera. Every reader's ``to_record`` returns one; ``encode.to_example``
crops it into a record of ``wild3d_tf.schema``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from beam_preprocess import storage
from wild3d_tf import skeletons

NUM_2D = skeletons.POSE2D.num_joints
NUM_3D = skeletons.POSE3D.num_joints


class BadRecord(Exception):
  """A record, or a whole unit of work (a file, a video, a frame range), that cannot be converted.

  Becomes one dead-letter row that stands for ``records`` lost records (1 for a
  single record; every record a lost unit would have produced otherwise) of
  ``split`` ("" where not known), so budgets and manifests count records, not rows.
  """

  def __init__(
    self, file: str, record: str, field: str, reason: str, records: int = 1, split: str = ""
  ):
    super().__init__(f"{file} [{record}] {field}: {reason}")
    self.file, self.record, self.field, self.reason = str(file), str(record), field, reason
    self.records, self.split = int(records), str(split)

  def counting(self, records: int, split: str) -> BadRecord:
    """The same failure standing for ``records`` lost records (at least 1) of ``split``."""
    return BadRecord(self.file, self.record, self.field, self.reason, max(int(records), 1), split)

  def row(self, dataset: str) -> dict:
    return {
      "dataset": dataset,
      "file": self.file,
      "record": self.record,
      "field": self.field,
      "reason": self.reason,
      "error": "BadRecord",
      "records": self.records,
      "split": self.split,
    }


def _bad(key: str, field: str, reason: str) -> BadRecord:
  # The reader's file is not known here; the key names the record.
  return BadRecord("-", key, field, reason)


def _check_array(key, name, value, shape, dtype, optional=False):
  """BadRecord unless ``value`` is an ndarray of ``shape`` (None: any length) and ``dtype``."""
  if value is None and optional:
    return
  if not isinstance(value, np.ndarray):
    raise _bad(key, name, f"{type(value).__name__}, expected an ndarray")
  if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
    expected = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
    raise _bad(key, name, f"shape {value.shape}, expected {expected}")
  if value.dtype != dtype:
    raise _bad(key, name, f"dtype {value.dtype}, expected {np.dtype(dtype)}")


@dataclasses.dataclass(frozen=True, eq=False)
class CanonicalRecord:
  """One person in one image, as every reader hands it to the encoder.

  Field names follow ``wild3d_tf.schema.NAMING`` with ``_`` for ``/``: the
  frame (``image``: the original image's pixel grid, 0-based, x right, y
  down; ``camera``: the original camera's frame, absolute) and the unit.
  ``__post_init__`` checks every type, shape and dtype and raises BadRecord
  (a dead letter) naming the record's key and the field.

  Provenance (str): key (unique, stable), dataset, split, subject, sequence,
  action, camera ("" where a dataset has none); frame (int, 0-based).
  image: (H, W, 3) uint8 RGB original image.
  mask: (H, W) uint8 foreground mask (0 or 255) of the image, or None.
  joints2d_image_px: (14, 2) float64 POSE2D, original pixels, 0-based; NaN
    exactly where not labelled.
  joints2d_labelled: (14,) bool, the dataset gives the joint.
  joints2d_visible: (14,) bool, labelled and visible (never set where not labelled).
  camera_intrinsics_image_px: (3, 3) float64 K (camera frame to original
    pixels), or None where unknown (MPII, LSP).
  camera_distortion: (5,) float64 H3.6M model (k1, k2, k3, p1, p2); zeros where none.
  joints3d_camera_mm: (17, 3) float64 POSE3D, original camera frame, mm, or None.
  joints3d_univ_camera_mm: (17, 3) float64 3DHP universal skeleton, or None
    (then the encoder stores joints3d_camera_mm in its place).
  frame_valid: bool, the dataset's test protocol scores this frame (``frame/valid``); False
    only for the 3DHP test set's frames outside ``valid_frame``.
  """

  key: str
  dataset: str
  split: str
  subject: str
  sequence: str
  action: str
  camera: str
  frame: int
  image: np.ndarray
  mask: np.ndarray | None
  joints2d_image_px: np.ndarray
  joints2d_labelled: np.ndarray
  joints2d_visible: np.ndarray
  camera_intrinsics_image_px: np.ndarray | None
  camera_distortion: np.ndarray
  joints3d_camera_mm: np.ndarray | None
  joints3d_univ_camera_mm: np.ndarray | None
  frame_valid: bool = True

  def __post_init__(self):
    key = self.key
    for name in ("key", "dataset", "split", "subject", "sequence", "action", "camera"):
      if not isinstance(getattr(self, name), str):
        raise _bad(key, name, f"{type(getattr(self, name)).__name__}, expected str")
    if not key:
      raise _bad("?", "key", "empty")
    if isinstance(self.frame, bool) or not isinstance(self.frame, int | np.integer):
      raise _bad(key, "frame", f"{type(self.frame).__name__}, expected int")
    if not isinstance(self.frame_valid, bool | np.bool_):
      raise _bad(key, "frame_valid", f"{type(self.frame_valid).__name__}, expected bool")
    _check_array(key, "image", self.image, (None, None, 3), np.uint8)
    _check_array(key, "mask", self.mask, self.image.shape[:2], np.uint8, optional=True)
    _check_array(key, "joints2d_image_px", self.joints2d_image_px, (NUM_2D, 2), np.float64)
    _check_array(key, "joints2d_labelled", self.joints2d_labelled, (NUM_2D,), np.bool_)
    _check_array(key, "joints2d_visible", self.joints2d_visible, (NUM_2D,), np.bool_)
    _check_array(
      key, "camera_intrinsics_image_px", self.camera_intrinsics_image_px, (3, 3), np.float64, True
    )
    _check_array(key, "camera_distortion", self.camera_distortion, (5,), np.float64)
    _check_array(key, "joints3d_camera_mm", self.joints3d_camera_mm, (NUM_3D, 3), np.float64, True)
    _check_array(
      key, "joints3d_univ_camera_mm", self.joints3d_univ_camera_mm, (NUM_3D, 3), np.float64, True
    )
    finite = np.isfinite(self.joints2d_image_px)
    if (finite.all(-1) != self.joints2d_labelled).any() or (finite.any(-1) & ~finite.all(-1)).any():
      raise _bad(key, "joints2d_image_px", "not finite exactly where labelled")
    if (self.joints2d_visible & ~self.joints2d_labelled).any():
      raise _bad(key, "joints2d_visible", "set where not labelled")
    for name in ("camera_intrinsics_image_px", "joints3d_camera_mm", "joints3d_univ_camera_mm"):
      value = getattr(self, name)
      if value is not None and not np.isfinite(value).all():
        raise _bad(key, name, "non-finite values")
    if self.joints3d_univ_camera_mm is not None and self.joints3d_camera_mm is None:
      raise _bad(key, "joints3d_univ_camera_mm", "given without joints3d_camera_mm")


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
  # Bounds on what one input file may make a worker allocate (--max_mat_bytes, --max_image_bytes):
  # 3DHP's largest annot.mat declares about 0.4 GB; real photos are a few MB.
  max_mat_bytes: int = 1 << 30
  max_image_bytes: int = 64 << 20
  # H3.6M camera file (--h36m_cameras); "" = look for one in the input root.
  h36m_cameras: str = ""


def safe_path(root, relative: str, file: str, record: str) -> str:
  """The path of ``relative`` under ``root`` (a local folder or a URL, ``storage``) if it stays
  inside ``root`` and is a regular file, else BadRecord naming ``file`` and ``record``.

  ``relative`` comes from an annotation or a work item: absolute paths, ``..``, backslashes and
  NUL are refused for every root; a local path is also resolved (symlinks) and must stay under
  the resolved root. Object stores have no links, so a URL's check is the lexical one.
  """
  text = str(relative)
  if (
    not text
    or "\x00" in text
    or "\\" in text
    or os.path.isabs(text)
    or ".." in pathlib.PurePosixPath(text).parts
  ):
    raise BadRecord(file, record, "path", f"path {text!r} leaves the dataset root")
  if storage.is_url(root):
    path = storage.join(root, text)
    if not storage.is_file(path):
      raise BadRecord(file, record, "path", f"missing file {text}")
    return path
  root = pathlib.Path(root).resolve()
  path = (root / text).resolve()
  if root not in path.parents:
    raise BadRecord(file, record, "path", f"path {text!r} leaves the dataset root")
  if not path.exists():
    raise BadRecord(file, record, "path", f"missing file {text}")
  if not path.is_file():
    raise BadRecord(file, record, "path", f"{text} is not a regular file")
  return str(path)


def check_finite(value, file: str, record: str, field: str) -> np.ndarray:
  value = np.asarray(value, np.float64)
  if not np.isfinite(value).all():
    raise BadRecord(file, record, field, "non-finite coordinates")
  return value


def relative(path, root) -> str:
  """``path`` relative to ``root`` (local paths or URLs), ``/``-separated."""
  return storage.relative(path, root)


def inside_image(joints2d: np.ndarray, image: np.ndarray) -> np.ndarray:
  """(J,) bool: 0-based pixel joints that fall inside the image."""
  height, width = image.shape[:2]
  return (joints2d >= 0).all(-1) & (joints2d[:, 0] <= width - 1) & (joints2d[:, 1] <= height - 1)


class Discovery(tuple):
  """What a reader's ``work_items`` returns: the pair (items, bad) and, as ``skipped``, the
  inputs it set aside on purpose: reason -> {"records": r, ...} (the manifest's "skipped")."""

  skipped: dict

  def __new__(cls, items: list, bad: list, skipped: dict | None = None):
    discovery = super().__new__(cls, (items, bad))
    discovery.skipped = dict(skipped or {})
    return discovery
