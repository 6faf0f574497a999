"""Canonical record -> person-centred crop -> serialized Example (pure, no Beam)."""

from __future__ import annotations

import cv2
import numpy as np

from beam_preprocess.records import BadRecord
from wild3d_tf import geometry, schema, skeletons


def crop(record: dict, crop_size: int, margin: float):
  """(crop image, crop mask or None, crop_from_image (3, 3)) around the labelled 2D joints."""
  labelled = record["labelled"] & np.isfinite(record["joints2d"]).all(-1)
  box = geometry.crop_box(record["joints2d"], labelled, margin=margin)
  matrix = geometry.crop_matrix(box, crop_size)
  image = cv2.warpAffine(
    np.ascontiguousarray(record["image"]),
    matrix[:2],
    (crop_size, crop_size),
    flags=cv2.INTER_AREA if box[2] > crop_size else cv2.INTER_LINEAR,
    borderMode=cv2.BORDER_CONSTANT,
  )
  mask = None
  if record.get("mask") is not None:
    mask = cv2.warpAffine(
      record["mask"], matrix[:2], (crop_size, crop_size), flags=cv2.INTER_NEAREST
    )
  return image, mask, matrix


def to_example(
  record: dict, crop_size: int = 320, margin: float = 0.35, jpeg_quality: int = 95
) -> bytes:
  """Serialized Example of one canonical record; BadRecord when it cannot make one."""
  key = record["key"]
  if record["image"].ndim != 3 or record["image"].shape[2] != 3:
    raise BadRecord(key, key, "image", f"image shape {record['image'].shape}, expected (H, W, 3)")
  labelled = record["labelled"] & np.isfinite(record["joints2d"]).all(-1)
  if labelled.sum() < 2:
    raise BadRecord(key, key, "joints2d", f"{labelled.sum()} labelled 2D joints, need 2")
  image, mask, matrix = crop(record, crop_size, margin)
  ok, jpeg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
  if not ok:
    raise BadRecord(key, key, "image", "JPEG encoding failed")
  png = b""
  if mask is not None:
    ok, encoded = cv2.imencode(".png", mask)
    png = encoded.tobytes()
  joints2d = np.where(
    labelled[:, None], geometry.apply_affine(np.nan_to_num(record["joints2d"]), matrix), 0.0
  )
  has_3d = record["joints3d"] is not None
  joints3d = record["joints3d"] if has_3d else np.zeros((skeletons.POSE3D.num_joints, 3))
  univ = record["joints3d_univ"] if record.get("joints3d_univ") is not None else joints3d
  has_k = record["intrinsics"] is not None
  height, width = record["image"].shape[:2]
  return schema.to_example(
    {
      "key": key,
      "dataset": record["dataset"],
      "split": record["split"],
      "subject": record["subject"],
      "sequence": record["sequence"],
      "action": record["action"],
      "camera": record["camera"],
      "frame": record["frame"],
      "image/encoded": jpeg.tobytes(),
      "image/size": (crop_size, crop_size),
      "image/original_size": (height, width),
      "crop/from_image": matrix,
      "camera/intrinsics": record["intrinsics"] if has_k else np.eye(3),
      "camera/has_intrinsics": int(has_k),
      "camera/distortion": record["distortion"],
      "joints2d": joints2d,
      "joints2d/visible": (record["visible"] & labelled).astype(np.int64),
      "joints2d/labelled": labelled.astype(np.int64),
      "joints3d": joints3d,
      "joints3d/univ": univ,
      "has_3d": int(has_3d),
      "mask/encoded": png,
      "has_mask": int(mask is not None),
    }
  )
