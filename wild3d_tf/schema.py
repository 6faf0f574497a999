"""The one tf.train.Example schema every converted dataset uses (docs/schema.md is generated here).

The Beam converter writes it (``to_example``), the input pipeline reads it
(``parse``), tools read it with ``decode_numpy``; nothing else spells a
feature key: readers import the constants below. Joints, cameras and the
crop transform are stored as little-endian float64 bytes, so a record gives
back the native annotations exactly (tf.train.Example floats are float32).

Key names say frame and unit (``NAMING``): ``joints3d/camera_mm`` is the
POSE3D skeleton in the original camera's frame in millimetres, absolute;
``joints2d/crop_px`` the POSE2D joints in the stored crop's pixels.

    python -m wild3d_tf.schema > docs/schema.md
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from wild3d_tf import skeletons

SCHEMA_VERSION = 3
NUM_2D = skeletons.POSE2D.num_joints
NUM_3D = skeletons.POSE3D.num_joints

NAMING = """\
A key is `<group>/<content>`. Every array with a geometric meaning ends in `<frame>_<unit>`:
frames `image` (the original image's pixel grid, 0-based, x right, y down), `crop` (the stored
crop's pixel grid, 0-based) and `camera` (the original camera's 3D frame: x right, y down,
z forward, absolute, not root-relative); units `px` and `mm`. A transform is named
`<to>_from_<from>`. `has_<group>` (0 or 1) says whether a group carries data; where it does not,
its arrays hold the placeholder named in the table. Per-joint flags are `joints2d/labelled`
(the dataset gives the joint) and `joints2d/visible` (labelled and visible), the only spellings
of labelled and visible. In Python the same names are written with `_` for `/`
(`joints2d/visible` is the canonical record's `joints2d_visible`).
"""

# Feature keys: import these, never type the strings.
KEY = "key"
DATASET = "dataset"
SPLIT = "split"
SUBJECT = "subject"
SEQUENCE = "sequence"
ACTION = "action"
CAMERA = "camera"
FRAME = "frame"
FRAME_VALID = "frame/valid"
IMAGE_CROP_JPEG = "image/crop_jpeg"
IMAGE_CROP_SIZE_PX = "image/crop_size_px"
IMAGE_ORIGINAL_SIZE_PX = "image/original_size_px"
CROP_PX_FROM_IMAGE_PX = "crop/crop_px_from_image_px"
CAMERA_INTRINSICS_IMAGE_PX = "camera/intrinsics_image_px"
CAMERA_DISTORTION = "camera/distortion"
HAS_INTRINSICS = "has_intrinsics"
JOINTS2D_CROP_PX = "joints2d/crop_px"
JOINTS2D_LABELLED = "joints2d/labelled"
JOINTS2D_VISIBLE = "joints2d/visible"
JOINTS3D_CAMERA_MM = "joints3d/camera_mm"
JOINTS3D_UNIV_CAMERA_MM = "joints3d_univ/camera_mm"
HAS_3D = "has_3d"
MASK_CROP_PNG = "mask/crop_png"
HAS_MASK = "has_mask"
VERSION = "schema_version"


@dataclasses.dataclass(frozen=True)
class Feature:
  """One feature: ``kind`` is "bytes", "int" (int64), "string" (utf-8) or "f64" (float64 bytes)."""

  kind: str
  shape: tuple[int, ...]
  meaning: str


FEATURES: dict[str, Feature] = {
  KEY: Feature(
    "string",
    (),
    "unique, stable id: `<dataset>/<subject>/<sequence>/<camera>/<frame>` (datasets without "
    "some parts omit them)",
  ),
  DATASET: Feature("string", (), "dataset id, as `python -m beam_preprocess.convert --dataset`"),
  SPLIT: Feature("string", (), "`train` or `test`"),
  SUBJECT: Feature("string", (), "subject (H3.6M, 3DHP) or test sequence; empty where none"),
  SEQUENCE: Feature("string", (), "take, sequence, test sequence or image name"),
  ACTION: Feature("string", (), "H3.6M action or 3DHP test activity; empty where none"),
  CAMERA: Feature("string", (), "camera id; empty where none"),
  FRAME: Feature("int", (), "0-based frame (or image) index in the native data"),
  FRAME_VALID: Feature(
    "int",
    (),
    "1 where the dataset's test protocol scores the frame; 0 only for the 3DHP test set's "
    "frames outside `valid_frame` (kept by `--novalid_only`), which evaluation skips",
  ),
  IMAGE_CROP_JPEG: Feature("bytes", (), "JPEG of the person-centred square crop (RGB)"),
  IMAGE_CROP_SIZE_PX: Feature("int", (2,), "crop (height, width), 320 x 320 by default"),
  IMAGE_ORIGINAL_SIZE_PX: Feature("int", (2,), "(height, width) of the original image"),
  CROP_PX_FROM_IMAGE_PX: Feature(
    "f64", (3, 3), "affine map from original-image pixels to crop pixels; its inverse maps back"
  ),
  CAMERA_INTRINSICS_IMAGE_PX: Feature(
    "f64",
    (3, 3),
    "K: camera frame to original-image pixels (the 3DHP test set's is fitted by least squares); "
    "identity where `has_intrinsics` is 0",
  ),
  CAMERA_DISTORTION: Feature(
    "f64", (5,), "H3.6M model (k1, k2, k3, p1, p2) of normalised coordinates; zeros elsewhere"
  ),
  HAS_INTRINSICS: Feature("int", (), "1 for H3.6M and 3DHP, 0 for MPII and LSP"),
  JOINTS2D_CROP_PX: Feature(
    "f64", (NUM_2D, 2), "POSE2D (LSP order), crop pixels, 0-based; 0 where unlabelled"
  ),
  JOINTS2D_LABELLED: Feature("int", (NUM_2D,), "1 where the dataset gives the joint"),
  JOINTS2D_VISIBLE: Feature(
    "int",
    (NUM_2D,),
    "1 where labelled and visible (occlusion flags of MPII and LSP; inside the image for H3.6M "
    "and 3DHP)",
  ),
  JOINTS3D_CAMERA_MM: Feature(
    "f64",
    (NUM_3D, 3),
    "POSE3D (H3.6M order), original camera frame, mm, absolute; zeros without 3D",
  ),
  JOINTS3D_UNIV_CAMERA_MM: Feature(
    "f64",
    (NUM_3D, 3),
    "3DHP's universal skeleton (univ_annot3), original camera frame, mm; equal to "
    "`joints3d/camera_mm` elsewhere",
  ),
  HAS_3D: Feature("int", (), "1 for H3.6M and 3DHP"),
  MASK_CROP_PNG: Feature(
    "bytes",
    (),
    "PNG of the crop's foreground mask (3DHP training FG masks, R channel); empty elsewhere",
  ),
  HAS_MASK: Feature("int", (), "1 where a mask is stored"),
  VERSION: Feature("int", (), f"{SCHEMA_VERSION}, checked by every reader"),
}


class SchemaVersionError(ValueError):
  """A record or manifest written under another schema version."""


def version_error(source: str, found) -> SchemaVersionError:
  """The one message for a record or manifest of another version (``source`` names it)."""
  return SchemaVersionError(
    f"{source}: schema version {found}, this code reads version {SCHEMA_VERSION}; "
    "convert the dataset again with python -m beam_preprocess.convert"
  )


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
  """Serialises a record (keys of ``FEATURES`` except ``VERSION``) deterministically.

  f64 and int values must have the declared shape; KeyError names missing keys,
  ValueError a wrong shape, each with the record's key.
  """
  missing = set(FEATURES) - set(record) - {VERSION}
  if missing:
    raise KeyError(f"record {record.get(KEY, '?')} lacks {sorted(missing)}")
  features = {}
  for name, feature in FEATURES.items():
    value = SCHEMA_VERSION if name == VERSION else record[name]
    if feature.kind in ("f64", "int") and np.shape(value) != feature.shape:
      raise ValueError(
        f"record {record[KEY]}: {name} has shape {np.shape(value)}, schema says {feature.shape}"
      )
    features[name] = _feature(feature.kind, value)
  example = tf.train.Example(features=tf.train.Features(feature=features))
  return example.SerializeToString(deterministic=True)


def decode_numpy(serialized: bytes, source: str = "record") -> dict:
  """The record back as NumPy/Python values (tools and tests), keyed by ``FEATURES``.

  ``source`` names the shard (or other origin) in errors: SchemaVersionError
  when the record was written under another ``SCHEMA_VERSION``.
  """
  example = tf.train.Example.FromString(serialized)
  version = example.features.feature[VERSION].int64_list.value
  if list(version) != [SCHEMA_VERSION]:
    key = example.features.feature[KEY].bytes_list.value
    where = f"{source} [{key[0].decode('utf-8', 'replace')}]" if key else source
    raise version_error(where, version[0] if version else "missing")
  out = {}
  for name, feature in FEATURES.items():
    kind, shape = feature.kind, feature.shape
    value = example.features.feature[name]
    if kind == "int":
      values = np.array(value.int64_list.value, np.int64)
      out[name] = int(values[0]) if shape == () else values.reshape(shape)
    elif kind == "string":
      out[name] = value.bytes_list.value[0].decode("utf-8")
    elif kind == "bytes":
      out[name] = value.bytes_list.value[0]
    else:
      out[name] = np.frombuffer(value.bytes_list.value[0], "<f8").reshape(shape)
  return out


_PARSE_SPEC = {
  name: tf.io.FixedLenFeature(
    [np.prod(f.shape, dtype=int)] if f.kind == "int" and f.shape else [],
    tf.int64 if f.kind == "int" else tf.string,
  )
  for name, f in FEATURES.items()
}
# Read first and alone, so a record of another version fails on its version, not on a key it lacks.
_VERSION_SPEC = {
  VERSION: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
  KEY: tf.io.FixedLenFeature([], tf.string, default_value="?"),
}


def parse(serialized: tf.Tensor) -> dict:
  """Graph-side parse of one serialized Example into tensors keyed by ``FEATURES``.

  f64 features come back as float64 of their declared shape, int as int64,
  strings and bytes as tf.string. A record of another ``SCHEMA_VERSION`` raises
  InvalidArgumentError whose message names the record's key, its version and
  the version expected.
  """
  head = tf.io.parse_single_example(serialized, _VERSION_SPEC)
  check = tf.debugging.Assert(
    tf.equal(head[VERSION], SCHEMA_VERSION),
    [
      tf.strings.join(
        [
          "record ",
          head[KEY],
          " has schema version ",
          tf.where(head[VERSION] < 0, "none", tf.strings.as_string(head[VERSION])),
          f", this code reads version {SCHEMA_VERSION}; convert the dataset again with "
          "python -m beam_preprocess.convert",
        ]
      )
    ],
  )
  with tf.control_dependencies([check]):
    raw = tf.io.parse_single_example(serialized, _PARSE_SPEC)
  out = {}
  for name, feature in FEATURES.items():
    value = raw[name]
    if feature.kind == "f64":
      value = tf.reshape(tf.io.decode_raw(value, tf.float64, little_endian=True), feature.shape)
    out[name] = value
  return out


_TYPES = {"bytes": "bytes", "string": "string", "int": "int64", "f64": "float64"}


def markdown() -> str:
  """docs/schema.md: the feature table from ``FEATURES`` and the file names of ``shards``."""
  from wild3d_tf import shards  # imported here: shards imports this module for the version

  constants = {v: k for k, v in globals().items() if k.isupper() and isinstance(v, str)}
  lines = [
    f"# The wild3d Example schema (version {SCHEMA_VERSION})",
    "",
    "Generated by `python -m wild3d_tf.schema > docs/schema.md` from `wild3d_tf/schema.py`; do not",
    "edit. Every converted dataset is a set of TFRecord shards of `tf.train.Example`s with the",
    "features below (`schema.to_example` writes them, `schema.parse` reads them in tf.data,",
    "`schema.decode_numpy` in tools). One record is one person in one image. Code names a feature",
    "by its constant (`schema.JOINTS3D_CAMERA_MM`), never by the string.",
    "",
    "## Naming",
    "",
    NAMING.rstrip(),
    "",
    "## Features",
    "",
    "| feature | constant | type | meaning |",
    "|---|---|---|---|",
  ]
  for name, feature in FEATURES.items():
    shape = f"[{','.join(map(str, feature.shape))}]" if feature.shape else ""
    lines.append(
      f"| `{name}` | `{constants.get(name, '-')}` | {_TYPES[feature.kind]}{shape} | "
      f"{feature.meaning} |"
    )
  lines += [
    "",
    "Why float64 bytes rather than float features: `tf.train.Example` floats are float32, and a",
    "record must give back the native annotations exactly (tested: 3D bit for bit, 2D within",
    "1e-3 px after undoing the crop). `schema.parse` decodes them with `tf.io.decode_raw`.",
    "",
    "The crop is the square around the labelled 2D joints with a margin added on each side",
    "(`--crop_margin`), so training-time augmentation (scale, rotation, translation) has room; the",
    "3D joints stay in the original camera frame, and the perspective correction of a crop is",
    f"computed from `{CAMERA_INTRINSICS_IMAGE_PX}`, `{CROP_PX_FROM_IMAGE_PX}` and the crop chosen",
    "at training time.",
    "",
    "## Versions",
    "",
    f"`{VERSION}` is written into every record and every manifest. `schema.parse`,",
    "`schema.decode_numpy` and `shards.load_manifest` refuse another version with one line that",
    "names the record or manifest and both versions; convert the dataset again. Version 2 gave",
    "the keys their frame and unit (version 1: `joints2d`, `joints3d`, `joints3d/univ`,",
    "`image/encoded`, `crop/from_image`, `camera/intrinsics`, `camera/has_intrinsics`, ...);",
    f"version 3 added `{FRAME_VALID}`.",
    "",
    "## Files beside the shards",
    "",
    "Named in `wild3d_tf/shards.py`, which the converter and training both use; training's I/O",
    "goes through `tf.io.gfile`, so a folder may be local or `gs://`. Each dataset's shards have",
    "their own folder under the converter's `--output_dir` (training's `--data_dir`):",
    "`<output_dir>/<dataset>/` (`shards.dataset_dir`) holds them and TFDS's metadata,",
    "`dataset_info.json` and `features.json` (`wild3d_tf/tfds_data.py`: these features, the",
    "manifest's splits), so `tfds.builder_from_directory(\"<output_dir>/<dataset>\")` reads it.",
    "The dead letters and the manifest lie in `<output_dir>` itself.",
    "",
    f"* `{shards.SHARD_PATTERN}`: shards; membership and order are a function",
    "  of the record keys (SHA-256), so re-runs are byte-identical.",
    f"* `{shards.DEAD_LETTER_PATTERN}`: one JSON line per rejected record or file: dataset,",
    "  file, record, field, reason, `records` (how many records the line stands for: 1 for a",
    "  record, every record a lost video, frame range or annotation file would have given) and",
    '  `split` ("" where not known).',
    f"* `{shards.MANIFEST_PATTERN}`, written last: the schema version; per split the records",
    "  written, `expected` (what discovery counted) and `rejected`, and per shard its record",
    "  count and SHA-256 (training, validation and evaluation check each shard's count as they",
    "  read it, and its SHA-256 where asked: `shards.checked_records`, `shards.shard_files`);",
    "  rejections in records (`total`, dead-letter `rows`, by reason); counts",
    "  per split, subject, action and camera; mean bone lengths per split and subject (mm, bones",
    "  listed by name) for the 2D-only bone loss; the options used. No manifest means the",
    "  conversion did not finish (or exceeded its rejection budget). A run stages its shards and",
    "  replaces the dataset's only when it succeeds.",
    "",
  ]
  return "\n".join(lines)


if __name__ == "__main__":
  print(markdown(), end="")
