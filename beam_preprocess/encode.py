"""Canonical record -> person-centred crop -> serialized Example (pure, no Beam)."""

from __future__ import annotations

import cv2
import numpy as np

from beam_preprocess.records import BadRecord, CanonicalRecord
from wild3d_tf import geometry, schema, skeletons


def _labelled(record: CanonicalRecord) -> np.ndarray:
  return record.joints2d_labelled & np.isfinite(record.joints2d_image_px).all(-1)


def crop(record: CanonicalRecord, crop_size: int, margin: float):
  """(crop image, crop mask or None, crop_px_from_image_px (3, 3)) around the labelled 2D joints."""
  box = geometry.crop_box(record.joints2d_image_px, _labelled(record), margin=margin)
  matrix = geometry.crop_matrix(box, crop_size)
  image = cv2.warpAffine(
    np.ascontiguousarray(record.image),
    matrix[:2],
    (crop_size, crop_size),
    flags=cv2.INTER_AREA if box[2] > crop_size else cv2.INTER_LINEAR,
    borderMode=cv2.BORDER_CONSTANT,
  )
  mask = None
  if record.mask is not None:
    mask = cv2.warpAffine(record.mask, matrix[:2], (crop_size, crop_size), flags=cv2.INTER_NEAREST)
  return image, mask, matrix


def to_example(
  record: CanonicalRecord, crop_size: int = 320, margin: float = 0.35, jpeg_quality: int = 95
) -> bytes:
  """Serialized Example (``wild3d_tf.schema``) of one canonical record.

  Raises BadRecord (a dead letter) when it cannot make one: fewer than two
  labelled 2D joints, or the JPEG encoder fails.
  """
  if not isinstance(record, CanonicalRecord):
    raise TypeError(f"expected a CanonicalRecord, got {type(record).__name__}")
  key = record.key
  labelled = _labelled(record)
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
    labelled[:, None], geometry.apply_affine(np.nan_to_num(record.joints2d_image_px), matrix), 0.0
  )
  has_3d = record.joints3d_camera_mm is not None
  joints3d = record.joints3d_camera_mm if has_3d else np.zeros((skeletons.POSE3D.num_joints, 3))
  univ = record.joints3d_univ_camera_mm
  has_k = record.camera_intrinsics_image_px is not None
  height, width = record.image.shape[:2]
  return schema.to_example(
    {
      schema.KEY: key,
      schema.DATASET: record.dataset,
      schema.SPLIT: record.split,
      schema.SUBJECT: record.subject,
      schema.SEQUENCE: record.sequence,
      schema.ACTION: record.action,
      schema.CAMERA: record.camera,
      schema.FRAME: record.frame,
      schema.FRAME_VALID: int(record.frame_valid),
      schema.IMAGE_CROP_JPEG: jpeg.tobytes(),
      schema.IMAGE_CROP_SIZE_PX: (crop_size, crop_size),
      schema.IMAGE_ORIGINAL_SIZE_PX: (height, width),
      schema.CROP_PX_FROM_IMAGE_PX: matrix,
      schema.CAMERA_INTRINSICS_IMAGE_PX: record.camera_intrinsics_image_px if has_k else np.eye(3),
      schema.HAS_INTRINSICS: int(has_k),
      schema.CAMERA_DISTORTION: record.camera_distortion,
      schema.JOINTS2D_CROP_PX: joints2d,
      schema.JOINTS2D_VISIBLE: (record.joints2d_visible & labelled).astype(np.int64),
      schema.JOINTS2D_LABELLED: labelled.astype(np.int64),
      schema.JOINTS3D_CAMERA_MM: joints3d,
      schema.JOINTS3D_UNIV_CAMERA_MM: univ if univ is not None else joints3d,
      schema.HAS_3D: int(has_3d),
      schema.MASK_CROP_PNG: png,
      schema.HAS_MASK: int(mask is not None),
    }
  )
