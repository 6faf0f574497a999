"""The one tf.train.Example schema every converted dataset uses (docs/schema.md).

The Beam converter writes it (``to_example``), the input pipeline reads it
(``parse``); nothing else knows the feature keys. Joints, cameras and the
crop transform are stored as little-endian float64 bytes, so a record gives
back the native annotations exactly (tf.train.Example floats are float32).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from wild3d_tf import skeletons

SCHEMA_VERSION = 1
NUM_2D = skeletons.POSE2D.num_joints
NUM_3D = skeletons.POSE3D.num_joints

# name -> (kind, shape); kind: "bytes", "int", "string" (utf-8) or "f64" (float64 bytes).
FEATURES = {
  "key": ("string", ()),  # unique and stable: dataset/subject/sequence/camera/frame
  "dataset": ("string", ()),
  "split": ("string", ()),
  "subject": ("string", ()),
  "sequence": ("string", ()),  # take, sequence, test sequence or image name
  "action": ("string", ()),  # action (H3.6M) or activity (3DHP); "" where none
  "camera": ("string", ()),
  "frame": ("int", ()),  # 0-based frame index in the native sequence
  "image/encoded": ("bytes", ()),  # JPEG of the person-centred crop
  "image/size": ("int", (2,)),  # crop (height, width)
  "image/original_size": ("int", (2,)),  # original (height, width)
  "crop/from_image": ("f64", (3, 3)),  # original pixels -> crop pixels
  "camera/intrinsics": ("f64", (3, 3)),  # of the original image
  "camera/has_intrinsics": ("int", ()),
  "camera/distortion": ("f64", (5,)),  # H3.6M model: k1, k2, k3, p1, p2
  "joints2d": ("f64", (NUM_2D, 2)),  # POSE2D, crop pixels (0-based)
  "joints2d/visible": ("int", (NUM_2D,)),  # 1 labelled and visible, 0 otherwise
  "joints2d/labelled": ("int", (NUM_2D,)),  # 1 labelled (visible or occluded)
  "joints3d": ("f64", (NUM_3D, 3)),  # POSE3D, camera frame, mm (absolute)
  "joints3d/univ": ("f64", (NUM_3D, 3)),  # 3DHP universal skeleton, else = joints3d
  "has_3d": ("int", ()),
  "mask/encoded": ("bytes", ()),  # PNG of the crop's foreground mask, b"" where none
  "has_mask": ("int", ()),
  "schema_version": ("int", ()),
}


def _feature(kind, value):
  if kind == "bytes":
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(value)]))
  if kind == "string":
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(value).encode("utf-8")]))
  if kind == "int":
    return tf.train.Feature(
      int64_list=tf.train.Int64List(value=np.atleast_1d(np.asarray(value, np.int64)).tolist())
    )
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[np.asarray(value, "<f8").tobytes()]))


def to_example(record: dict) -> bytes:
  """Serialises a record dict (keys of ``FEATURES`` except schema_version) deterministically."""
  missing = set(FEATURES) - set(record) - {"schema_version"}
  if missing:
    raise KeyError(f"record {record.get('key', '?')} lacks {sorted(missing)}")
  features = {}
  for name, (kind, shape) in FEATURES.items():
    value = SCHEMA_VERSION if name == "schema_version" else record[name]
    if kind in ("f64", "int") and np.shape(value) != shape:
      raise ValueError(
        f"record {record['key']}: {name} has shape {np.shape(value)}, schema says {shape}"
      )
    features[name] = _feature(kind, value)
  example = tf.train.Example(features=tf.train.Features(feature=features))
  return example.SerializeToString(deterministic=True)


def decode_numpy(serialized: bytes) -> dict:
  """The record back as NumPy/Python values (tools and tests)."""
  example = tf.train.Example.FromString(serialized)
  out = {}
  for name, (kind, shape) in FEATURES.items():
    feature = example.features.feature[name]
    if kind == "int":
      values = np.array(feature.int64_list.value, np.int64)
      out[name] = int(values[0]) if shape == () else values.reshape(shape)
    elif kind == "string":
      out[name] = feature.bytes_list.value[0].decode("utf-8")
    elif kind == "bytes":
      out[name] = feature.bytes_list.value[0]
    else:
      out[name] = np.frombuffer(feature.bytes_list.value[0], "<f8").reshape(shape)
  return out


_PARSE_SPEC = {
  name: tf.io.FixedLenFeature(
    [np.prod(shape, dtype=int)] if kind == "int" and shape else [],
    tf.int64 if kind == "int" else tf.string,
  )
  for name, (kind, shape) in FEATURES.items()
}


def parse(serialized: tf.Tensor) -> dict:
  """Graph-side parse of one serialized Example into tensors (float64 arrays reshaped)."""
  raw = tf.io.parse_single_example(serialized, _PARSE_SPEC)
  out = {}
  for name, (kind, shape) in FEATURES.items():
    value = raw[name]
    if kind == "f64":
      value = tf.reshape(tf.io.decode_raw(value, tf.float64, little_endian=True), shape)
    out[name] = value
  return out
