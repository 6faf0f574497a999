"""The record contract: the Example schema, its version check, its generated doc and the canonical
record every reader hands to the encoder."""

import dataclasses
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from beam_preprocess import encode
from beam_preprocess.records import BadRecord, CanonicalRecord
from wild3d_tf import schema, skeletons

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _canonical(**changes) -> CanonicalRecord:
  """A valid LSP-like record: 14 joints on a diagonal of a 100 x 80 image, joint 13 unlabelled."""
  joints = np.stack([np.arange(14) * 5.0 + 10.0, np.arange(14) * 4.0 + 8.0], -1)
  labelled = np.ones(14, bool)
  labelled[13] = False
  joints[13] = np.nan
  values = dict(
    key="lsp/im0001.jpg",
    dataset="lsp",
    split="train",
    subject="",
    sequence="im0001.jpg",
    action="",
    camera="",
    frame=0,
    image=np.full((80, 100, 3), 7, np.uint8),
    mask=None,
    joints2d_image_px=joints,
    joints2d_labelled=labelled,
    joints2d_visible=labelled.copy(),
    camera_intrinsics_image_px=None,
    camera_distortion=np.zeros(5),
    joints3d_camera_mm=None,
    joints3d_univ_camera_mm=None,
  )
  values.update(changes)
  return CanonicalRecord(**values)


# ------------------------------------------------------------ the declaration


def test_keys_name_frame_and_unit_and_are_declared_once():
  names = list(schema.FEATURES)
  assert len(names) == len(set(names))
  for name, feature in schema.FEATURES.items():
    if feature.kind == "f64" and name not in (schema.CAMERA_DISTORTION,):
      assert name.rsplit("/", 1)[1].endswith(("_px", "_mm")), name  # frame and unit in the name
  # The spellings of version 1 are gone.
  for old in ("joints2d", "joints3d", "joints3d/univ", "image/encoded", "crop/from_image"):
    assert old not in schema.FEATURES
  assert schema.FEATURES[schema.JOINTS3D_CAMERA_MM].shape == (skeletons.POSE3D.num_joints, 3)
  assert schema.FEATURES[schema.JOINTS2D_CROP_PX].shape == (skeletons.POSE2D.num_joints, 2)
  assert schema.SCHEMA_VERSION == 3


def test_canonical_record_fields_mirror_the_record_keys():
  """Each geometric field of the canonical record has its record key's name, in the image frame."""
  fields = {f.name for f in dataclasses.fields(CanonicalRecord)}
  for key in (
    schema.JOINTS2D_LABELLED,
    schema.JOINTS2D_VISIBLE,
    schema.JOINTS3D_CAMERA_MM,
    schema.JOINTS3D_UNIV_CAMERA_MM,
    schema.CAMERA_INTRINSICS_IMAGE_PX,
    schema.CAMERA_DISTORTION,
  ):
    assert key.replace("/", "_") in fields, key
  assert "joints2d_image_px" in fields  # the record stores it in the crop: joints2d/crop_px


def test_docs_schema_is_current():
  path = ROOT / "docs" / "schema.md"
  assert path.read_text() == schema.markdown(), "run: python -m wild3d_tf.schema > docs/schema.md"


# ------------------------------------------------------------ round trip and version


def test_encode_round_trips_a_canonical_record_through_both_decoders():
  pose = np.arange(51, dtype=np.float64).reshape(17, 3) + [0.0, 0.0, 4000.0]
  k = np.array([[1000.0, 0.0, 49.5], [0.0, 1000.0, 39.5], [0.0, 0.0, 1.0]])
  record = _canonical(
    joints3d_camera_mm=pose, camera_intrinsics_image_px=k, camera_distortion=np.arange(5.0)
  )
  serialized = encode.to_example(record, crop_size=64, margin=0.2)
  numpy_record = schema.decode_numpy(serialized)
  graph_record = {k: v.numpy() for k, v in schema.parse(tf.constant(serialized)).items()}
  for decoded in (numpy_record, graph_record):
    np.testing.assert_array_equal(decoded[schema.JOINTS3D_CAMERA_MM], pose)
    np.testing.assert_array_equal(decoded[schema.JOINTS3D_UNIV_CAMERA_MM], pose)  # no univ: a copy
    np.testing.assert_array_equal(decoded[schema.CAMERA_INTRINSICS_IMAGE_PX], k)
    np.testing.assert_array_equal(decoded[schema.CAMERA_DISTORTION], np.arange(5.0))
    crop_from_image = decoded[schema.CROP_PX_FROM_IMAGE_PX]
    back = np.c_[decoded[schema.JOINTS2D_CROP_PX], np.ones(14)] @ np.linalg.inv(crop_from_image).T
    np.testing.assert_allclose(back[:13, :2], record.joints2d_image_px[:13], atol=1e-9)
    np.testing.assert_array_equal(decoded[schema.JOINTS2D_CROP_PX][13], [0.0, 0.0])
    np.testing.assert_array_equal(decoded[schema.JOINTS2D_LABELLED], [1] * 13 + [0])
    np.testing.assert_array_equal(decoded[schema.IMAGE_ORIGINAL_SIZE_PX], [80, 100])
    assert decoded[schema.HAS_3D] == 1 and decoded[schema.HAS_INTRINSICS] == 1
    assert decoded[schema.HAS_MASK] == 0 and decoded[schema.VERSION] == 3
  assert numpy_record[schema.KEY] == "lsp/im0001.jpg"


def _version_1_record() -> bytes:
  """A record as version 1 wrote it: other key names, schema_version 1."""
  features = {
    "key": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"h36m/S1/x/1/000000"])),
    "joints3d": tf.train.Feature(bytes_list=tf.train.BytesList(value=[np.zeros(51).tobytes()])),
    "schema_version": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
  }
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def test_a_record_of_another_version_is_refused_with_both_versions_named():
  old = _version_1_record()
  with pytest.raises(schema.SchemaVersionError) as error:
    schema.decode_numpy(old, "h36m-train.tfrecord-00000-of-00001")
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith("h36m-train.tfrecord-00000-of-00001 [h36m/S1/x/1/000000]: ")
  assert "schema version 1, this code reads version 3" in message
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    schema.parse(tf.constant(old))
  assert "record h36m/S1/x/1/000000 has schema version 1, this code reads version 3" in str(
    error.value
  )
  # The same inside tf.data, where parse runs as a graph.
  ds = tf.data.Dataset.from_tensors(tf.constant(old)).map(schema.parse)
  with pytest.raises(tf.errors.InvalidArgumentError, match="this code reads version 3"):
    next(iter(ds))


# ------------------------------------------------------------ the canonical record checks itself


@pytest.mark.parametrize(
  "changes,field,reason",
  [
    ({"image": np.zeros((80, 100), np.uint8)}, "image", "shape (80, 100), expected (any, any, 3)"),
    ({"image": np.zeros((80, 100, 3), np.float32)}, "image", "dtype float32, expected uint8"),
    ({"mask": np.zeros((80, 99), np.uint8)}, "mask", "shape (80, 99), expected (80, 100)"),
    ({"joints2d_image_px": np.zeros((16, 2))}, "joints2d_image_px", "shape (16, 2)"),
    ({"joints2d_labelled": np.ones(14, np.int64)}, "joints2d_labelled", "dtype int64"),
    ({"joints2d_labelled": np.ones(14, bool)}, "joints2d_image_px", "finite exactly where"),
    ({"joints2d_visible": np.ones(14, bool)}, "joints2d_visible", "set where not labelled"),
    ({"camera_intrinsics_image_px": np.eye(3)[:2]}, "camera_intrinsics_image_px", "shape (2, 3)"),
    ({"camera_distortion": [0.0] * 5}, "camera_distortion", "list, expected an ndarray"),
    ({"joints3d_camera_mm": np.zeros((32, 3))}, "joints3d_camera_mm", "expected (17, 3)"),
    ({"joints3d_camera_mm": np.full((17, 3), np.nan)}, "joints3d_camera_mm", "non-finite"),
    ({"joints3d_univ_camera_mm": np.zeros((17, 3))}, "joints3d_univ_camera_mm", "without"),
    ({"frame": 1.0}, "frame", "float, expected int"),
    ({"camera": 54138969}, "camera", "int, expected str"),
    ({"frame_valid": 1}, "frame_valid", "int, expected bool"),
  ],
)
def test_a_record_that_breaks_the_declaration_is_a_bad_record_naming_the_field(
  changes, field, reason
):
  with pytest.raises(BadRecord) as error:
    _canonical(**changes)
  assert error.value.field == field and error.value.record == "lsp/im0001.jpg"
  assert reason in error.value.reason


def test_the_encoder_takes_only_canonical_records():
  assert isinstance(encode.to_example(_canonical(), crop_size=32), bytes)
  with pytest.raises(TypeError, match="expected a CanonicalRecord, got dict"):
    encode.to_example(dataclasses.asdict(_canonical()))


def test_the_valid_flag_reaches_the_record():
  """Every reader's default is 1; the 3DHP test set's frames outside valid_frame carry 0."""
  for valid, stored in ((True, 1), (False, 0)):
    serialized = encode.to_example(_canonical(frame_valid=valid), crop_size=32)
    assert schema.decode_numpy(serialized)[schema.FRAME_VALID] == stored
    assert int(schema.parse(tf.constant(serialized))[schema.FRAME_VALID]) == stored
  assert _canonical().frame_valid is True
