"""The converter's folder has one set of names, read through tf.io.gfile by training and validation:
shards converted into a local folder and copied under a URL (TF's in-memory ``ram://`` standing in
for ``gs://``) are listed, checked against their manifests and read there. The converter itself
writes through Beam's FileSystems, which does not know ``ram://``; its writing to a URL is tested
on ``gs://`` against a GCS emulator (tests/test_cloud_storage.py)."""

import dataclasses
import json
import re
import subprocess
import sys

from conftest import convert_dataset as _convert
from conftest import record_ends, upload_tree
import numpy as np
import pytest
import tensorflow as tf

from beam_preprocess import sharding
from wild3d_tf import data, schema, shards
from wild3d_tf.config import DataConfig


@pytest.fixture
def url(request):
  """A fresh folder on TF's in-memory filesystem (process-wide, so named after the test)."""
  return f"ram://wild3d/{request.node.name}/records"


def test_names_are_hand_checkable():
  assert shards.shard_name("h36m", "train", 2, 3) == "h36m-train.tfrecord-00002-of-00003"
  # One folder per dataset under the root (TFDS reads a dataset from its own folder).
  assert shards.dataset_dir("gs://b/x/", "h36m") == "gs://b/x/h36m"
  assert shards.shard_path("gs://b/x/", "h36m", "test", 0, 1) == (
    "gs://b/x/h36m/h36m-test.tfrecord-00000-of-00001"
  )
  assert shards.manifest_path("gs://b/x", "lsp") == "gs://b/x/lsp.manifest.json"
  assert shards.dead_letter_path("/d", "mpii") == "/d/mpii.dead_letter.jsonl"
  # The converter writes through the same functions.
  assert sharding.shard_path is shards.shard_path and sharding.manifest_path is shards.manifest_path
  lsp_train = shards.shard_name_regex("lsp", "train")
  assert lsp_train.match("lsp-train.tfrecord-00000-of-00001")
  assert lsp_train.match("lsp-train.tfrecord-00000-of-00001.incomplete")
  assert not lsp_train.match("lspet-train.tfrecord-00000-of-00001")
  assert not lsp_train.match("lsp-test.tfrecord-00000-of-00001")
  any_split = shards.shard_name_regex("mpi_inf_3dhp")
  assert any_split.match("mpi_inf_3dhp-train.tfrecord-00001-of-00002")
  assert not any_split.match("mpi_inf_3dhp_test-test.tfrecord-00000-of-00001")
  assert not any_split.match("mpi_inf_3dhp.manifest.json")


def test_converted_shards_under_a_url_are_readable_by_training(synthetic_tiny, url, tmp_path):
  manifests = {
    dataset: _convert(dataset, synthetic_tiny / dataset, tmp_path, "--num_shards=2")
    for dataset in ("lsp", "lspet")
  }
  # The converter left the 14 files listed below and nothing else (no staging folder, no
  # .incomplete shard); they are read back under the URL.
  assert upload_tree(tmp_path, url) == 14
  assert sorted(n.rstrip("/") for n in tf.io.gfile.listdir(url) if "." not in n) == ["lsp", "lspet"]
  # (ram:// lists by prefix: listdir of lsp/ would also show lspet/ and lsp.manifest.json.)
  listed = [
    p.rpartition("/")[2] for d in ("lsp", "lspet") for p in tf.io.gfile.glob(f"{url}/{d}/*")
  ]
  assert sorted(listed) == [
    "dataset_info.json",  # TFDS's metadata, one pair per dataset folder
    "dataset_info.json",
    "features.json",
    "features.json",
    "lsp-test.tfrecord-00000-of-00002",
    "lsp-test.tfrecord-00001-of-00002",
    "lsp-train.tfrecord-00000-of-00002",
    "lsp-train.tfrecord-00001-of-00002",
    "lspet-train.tfrecord-00000-of-00002",
    "lspet-train.tfrecord-00001-of-00002",
  ]
  # The manifests and dead letters lie in the root, where they always were.
  assert sorted(p.rpartition("/")[2] for p in tf.io.gfile.glob(f"{url}/*.*")) == [
    "lsp.dead_letter.jsonl",
    "lsp.manifest.json",
    "lspet.dead_letter.jsonl",
    "lspet.manifest.json",
  ]
  assert data.load_manifest(url, "lsp") == manifests["lsp"]
  assert shards.converted_datasets(url) == ["lsp", "lspet"]
  assert shards.is_current(url, "lsp") and not shards.is_current(url, "mpii")
  assert shards.converted_datasets(f"{url}/absent") == []
  files = data.shard_files(url, "lsp", "train", check_digests=True)
  assert files == [
    f"{url}/lsp/lsp-train.tfrecord-00000-of-00002",
    f"{url}/lsp/lsp-train.tfrecord-00001-of-00002",
  ]
  config = DataConfig.tiny(url)
  prepared = list(
    data.examples(files, config, training=False, seed=0, input_size=64, heatmap_size=None)
  )
  assert len(prepared) == manifests["lsp"]["splits"]["train"]["records"] == 4
  assert prepared[0]["image"].shape == (64, 64, 3)
  keys = {
    schema.parse(r)[schema.KEY].numpy().decode()
    for r in data.mixed_records(config, ["lsp", "lspet"], seed=0).take(64)
  }
  assert len(keys) == 4 + 8 and {k.split("/")[0] for k in keys} == {"lsp", "lspet"}


def test_shards_that_differ_from_the_manifest_are_refused_under_a_url(
  synthetic_tiny, url, tmp_path
):
  _convert("lsp", synthetic_tiny / "lsp", tmp_path)
  upload_tree(tmp_path, url)
  [shard] = data.shard_files(url, "lsp", "test")
  tf.io.gfile.copy(shard, f"{url}/lsp/lsp-test.tfrecord-00000-of-00002")
  with pytest.raises(FileNotFoundError, match=r"not listed \['lsp-test.tfrecord-00000-of-00002'\]"):
    data.shard_files(url, "lsp", "test")
  tf.io.gfile.remove(shard)
  with pytest.raises(FileNotFoundError, match=r"missing \['lsp-test.tfrecord-00000-of-00001'\]"):
    data.shard_files(url, "lsp", "test")
  [train] = data.shard_files(url, "lsp", "train")
  _write(train, "x")
  with pytest.raises(ValueError, match="lsp-train.tfrecord-00000-of-00001: SHA-256"):
    data.shard_files(url, "lsp", "train", check_digests=True)
  assert data.shard_files(url, "lsp", "val") == []
  with pytest.raises(
    FileNotFoundError, match=r"no manifest for mpii in ram://.*mpii.manifest.json"
  ):
    data.shard_files(url, "mpii", "train")


def _write(path, text):
  if tf.io.gfile.exists(path):  # ram:// does not truncate a file opened for writing
    tf.io.gfile.remove(path)
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(text)


def test_a_manifest_of_another_version_is_refused_naming_it(url):
  path = shards.manifest_path(url, "h36m")
  tf.io.gfile.makedirs(url)
  _write(path, json.dumps({"dataset": "h36m", "schema_version": 1, "splits": {}}))
  assert not shards.is_current(url, "h36m")  # a tool reusing converted data converts again
  with pytest.raises(schema.SchemaVersionError) as error:
    data.load_manifest(url, "h36m")
  assert str(error.value) == (
    f"{path}: schema version 1, this code reads version {schema.SCHEMA_VERSION}; convert the "
    "dataset again with python -m beam_preprocess.convert"
  )
  _write(path, json.dumps({"dataset": "h36m", "splits": {}}))
  with pytest.raises(schema.SchemaVersionError, match="schema version missing"):
    data.shard_files(url, "h36m", "train")
  _write(path, "{")
  with pytest.raises(ValueError, match="h36m.manifest.json: not a JSON manifest"):
    data.load_manifest(url, "h36m")


def test_a_conversion_in_the_flat_layout_is_named_as_such(synthetic_tiny, url, tmp_path):
  """Before each dataset's shards had a folder, they lay directly in --data_dir beside the
  manifest (which is still there): reading them names the old layout."""
  local = tmp_path / "flat"
  _convert("lsp", synthetic_tiny / "lsp", str(local), "--num_shards=1")
  for name in list((local / "lsp").iterdir()):
    name.rename(local / name.name)  # the shards as the old layout placed them
  (local / "lsp").rmdir()
  upload_tree(local, url)
  data.require_manifests(url, ["lsp"])  # the manifest is where it always was
  assert shards.converted_datasets(url) == ["lsp"]
  with pytest.raises(
    FileNotFoundError,
    match=r"the shards of lsp lie directly in it, the layout before each dataset's shards moved "
    r"into ram://.*/lsp; convert again",
  ):
    data.shard_files(url, "lsp", "train")


def test_bone_lengths_are_read_from_manifests_under_a_url(url):
  tf.io.gfile.makedirs(url)
  manifest = {
    "schema_version": schema.SCHEMA_VERSION,
    "splits": {},
    "bone_lengths_mm": {"train": {"S1": [1.0] * 16, "S5": [2.0] * 16}, "test": {"S9": [9.0] * 16}},
  }
  _write(shards.manifest_path(url, "h36m"), json.dumps(manifest))
  table = data.bone_length_table(url, ("h36m",))
  np.testing.assert_array_equal(table, [[1.0] * 16, [2.0] * 16])  # the training subjects


def _read(path) -> bytes:
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def _write_bytes(path, blob: bytes):
  tf.io.gfile.remove(path)  # ram:// does not truncate a file opened for writing
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(blob)


def _read_all(dataset):
  for _ in dataset:
    pass


def _lsp_train(synthetic_tiny, url, local_dir):
  """The one train shard of the synthetic LSP (4 records), converted into ``local_dir`` and copied
  under ``url``: its URL and its bytes."""
  manifest = _convert("lsp", synthetic_tiny / "lsp", local_dir)
  upload_tree(local_dir, url)
  [train] = data.shard_files(url, "lsp", "train")
  blob = _read(train)
  assert len(record_ends(blob)) == manifest["splits"]["train"]["shards"][0]["records"] == 4
  return train, blob


def test_a_shard_cut_at_a_record_boundary_fails_training_and_validation(
  synthetic_tiny, url, tmp_path
):
  train, blob = _lsp_train(synthetic_tiny, url, tmp_path)
  _write_bytes(train, blob[: record_ends(blob)[2]])
  assert sum(1 for _ in tf.data.TFRecordDataset(train)) == 3  # TF reads 3 records, no error
  message = re.escape(
    f"{train}: 3 records read, its manifest lists 4: record 3 (0-based) is corrupt or missing"
  )
  config = DataConfig.tiny(url)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    _read_all(data.mixed_records(config, ["lsp"], seed=0).take(64))  # training
  files = data.shard_files(url, "lsp", "train")  # the file list is still the manifest's
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):  # validation's reading
    _read_all(
      data.examples(files, config, training=False, seed=0, input_size=64, heatmap_size=None)
    )


def test_a_flipped_byte_fails_naming_the_shard_and_the_record(synthetic_tiny, url, tmp_path):
  train, blob = _lsp_train(synthetic_tiny, url, tmp_path)
  damaged = bytearray(blob)
  damaged[record_ends(blob)[0] + 12 + 40] ^= 0x01  # in record 1's payload: its CRC fails
  _write_bytes(train, bytes(damaged))
  with pytest.raises(tf.errors.DataLossError, match="corrupted record"):  # TF names no file
    _read_all(tf.data.TFRecordDataset(train))
  message = re.escape(f"{train}: 1 records read, its manifest lists 4: record 1 (0-based)")
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    _read_all(data.mixed_records(DataConfig.tiny(url), ["lsp"], seed=0).take(64))
  with pytest.raises(ValueError, match="lsp-train.tfrecord-00000-of-00001: SHA-256"):
    data.shard_files(url, "lsp", "train", check_digests=True)
  verified = dataclasses.replace(DataConfig.tiny(url), verify_shard_digests=True)  # --verify_shards
  with pytest.raises(ValueError, match="lsp-train.tfrecord-00000-of-00001: SHA-256"):
    data.mixed_records(verified, ["lsp"], seed=0)  # before anything is read
  # A record cut in half (a shard cut inside a record) is one more corrupt record.
  _write_bytes(train, blob[: record_ends(blob)[1] + 30])
  cut = re.escape(f"{train}: 2 records read, its manifest lists 4: record 2 (0-based)")
  with pytest.raises(tf.errors.InvalidArgumentError, match=cut):
    _read_all(shards.read_checked([train]))


def test_a_shard_longer_than_its_manifest_fails_and_unlisted_files_are_refused(
  synthetic_tiny, url, tmp_path
):
  train, blob = _lsp_train(synthetic_tiny, url, tmp_path)
  _write_bytes(train, blob + blob[: record_ends(blob)[0]])  # record 0 once more
  with pytest.raises(
    tf.errors.InvalidArgumentError, match=re.escape(f"{train}: more than 4 records")
  ):
    _read_all(shards.read_checked([train]))
  assert shards.listed_records([train]) == [4]
  with pytest.raises(ValueError, match="not a shard name"):
    shards.listed_records([f"{url}/lsp.manifest.json"])
  with pytest.raises(ValueError, match="lsp-val.tfrecord-00000-of-00001: not listed in"):
    shards.listed_records([f"{url}/lsp/lsp-val.tfrecord-00000-of-00001"])
  with pytest.raises(ValueError, match="lsp-train.tfrecord-00000-of-00001: not in a folder lsp/"):
    shards.listed_records([f"{url}/lsp-train.tfrecord-00000-of-00001"])  # the flat layout


def test_verify_shards_is_a_training_flag_off_by_default():
  # In a subprocess: train's (required) flags would stay in this process's FLAGS.
  script = (
    "import sys; from absl import flags; from wild3d_tf import train; train.define_flags(); "
    "flags.FLAGS(['train', '--data_dir=d', '--model_dir=m', *sys.argv[1:]]); "
    "print(train.run_config_from_flags().data.verify_shard_digests)"
  )
  for extra, expected in (([], "False"), (["--verify_shards"], "True")):
    run = subprocess.run(
      [sys.executable, "-c", script, *extra], capture_output=True, text=True, check=True
    )
    assert run.stdout.strip().splitlines()[-1] == expected
