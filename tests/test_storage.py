"""beam_preprocess.storage without a cloud: URL paths kept intact, the root check on URLs, the
spool, and the TFRecord framing the converter writes everywhere (tests/test_cloud_storage.py
runs the same code against a GCS emulator)."""

import numpy as np
import pytest
import tensorflow as tf

from beam_preprocess import sharding, storage
from beam_preprocess.records import BadRecord, safe_path


def test_urls_are_joined_split_and_made_relative_without_pathlib():
  assert (
    storage.join("gs://b/raw/", "lsp", "images/im0001.jpg") == "gs://b/raw/lsp/images/im0001.jpg"
  )
  assert storage.join("gs://b", "joints.mat") == "gs://b/joints.mat"
  assert storage.join("/data/lsp", "images/im0001.jpg") == "/data/lsp/images/im0001.jpg"
  assert storage.is_url("gs://b/x") and not storage.is_url("/data/gs:/x")
  assert not storage.is_url("relative/folder")
  assert storage.name("gs://b/S1/Videos/Walking 1.54138969.mp4") == "Walking 1.54138969.mp4"
  assert storage.relative("gs://b/raw/S1/Seq1/annot.mat", "gs://b/raw/") == "S1/Seq1/annot.mat"
  assert storage.relative("/d/raw/S1/annot.mat", "/d/raw") == "S1/annot.mat"
  with pytest.raises(ValueError, match="gs://b/other/x is not under gs://b/raw"):
    storage.relative("gs://b/other/x", "gs://b/raw")


@pytest.mark.parametrize(
  "relative", ["../mpii/images/x.jpg", "images/../../x.jpg", "/etc/passwd", "images\\x.jpg", ""]
)
def test_a_path_leaving_a_url_root_is_refused_before_any_request(relative):
  # No emulator runs here: a request would fail with another error than this one.
  with pytest.raises(BadRecord) as refused:
    safe_path("gs://no-such-bucket-wild3d/lsp", relative, "joints.mat", "image 7")
  assert (
    str(refused.value) == f"joints.mat [image 7] path: path {relative!r} leaves the dataset root"
  )


def test_local_paths_are_handed_on_unchanged(tmp_path):
  path = tmp_path / "pose.cdf"
  path.write_bytes(b"\x00" * 10)
  with storage.local_copy(path, max_bytes=1) as local:  # no spool, so no limit applies either
    assert local == str(path)
  with storage.source(path) as readable:
    assert readable == str(path)
  assert storage.glob(tmp_path, "*.cdf") == [str(path)]
  assert storage.listdir(tmp_path / "none") == []


@pytest.mark.parametrize("size", [0, 1, 255, 70_000])
def test_tfrecord_framing_equals_tensorflows_writer(tmp_path, size):
  payload = np.random.default_rng(size).integers(0, 256, size, np.uint8).tobytes()
  path = str(tmp_path / "tf.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(payload)
    writer.write(b"second")
  with open(path, "rb") as f:
    assert sharding.tfrecord(payload) + sharding.tfrecord(b"second") == f.read()
