"""Every converted dataset is a TFDS dataset: tfds.builder_from_directory reads it with the
manifest's split counts and gives schema.parse's values, the crop decoded by TFDS; training can
read its input through TFDS."""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from wild3d_tf import data, schema, shards, tfds_data
from wild3d_tf.config import DataConfig, ModelConfig


def _shard_records(folder, dataset, split):
  """schema.parse of the split's records, read from the shards in manifest order."""
  files = shards.shard_files(str(folder), dataset, split)
  return list(shards.read_checked(files).map(schema.parse))


def test_every_converted_dataset_loads_with_the_manifests_splits_and_schema_values(converted_tiny):
  folder, manifests = converted_tiny
  assert sorted(manifests) == sorted(shards.converted_datasets(str(folder)))
  for dataset, manifest in manifests.items():
    builder = tfds.builder_from_directory(str(folder / dataset))
    assert (
      builder.info.name == dataset and str(builder.info.version) == f"{schema.SCHEMA_VERSION}.0.0"
    )
    assert set(builder.info.splits) == set(manifest["splits"]), dataset
    for split, entry in manifest["splits"].items():
      info = builder.info.splits[split]
      assert info.num_examples == entry["records"] > 0, (dataset, split)
      assert info.shard_lengths == [s["records"] for s in entry["shards"]], (dataset, split)
      read = list(builder.as_dataset(split=split, shuffle_files=False))
      parsed = _shard_records(folder, dataset, split)
      assert len(read) == len(parsed) == entry["records"]
      for got, expected in zip(read, parsed):
        assert set(got) == set(schema.FEATURES)
        for key in schema.FEATURES:
          want = expected[key]
          if key == schema.IMAGE_CROP_JPEG:  # TFDS decodes the crop
            want = tf.io.decode_jpeg(want, channels=3)
          assert got[key].dtype == want.dtype and got[key].shape == want.shape, (dataset, key)
          np.testing.assert_array_equal(got[key].numpy(), want.numpy(), err_msg=f"{dataset} {key}")


def test_the_readme_command_prints_the_manifests_counts(converted_tiny):
  folder, manifests = converted_tiny
  command = (
    "import tensorflow_datasets as tfds; "
    f"print(tfds.builder_from_directory('{folder}/lsp').info.splits)"
  )
  out = subprocess.run(
    [sys.executable, "-c", command], capture_output=True, text=True, check=True
  ).stdout
  splits = manifests["lsp"]["splits"]
  assert out.strip().splitlines()[-1] == (
    f"{{'test': <SplitInfo num_examples={splits['test']['records']}, num_shards=1>, "
    f"'train': <SplitInfo num_examples={splits['train']['records']}, num_shards=1>}}"
  )


def test_the_metadata_equals_tfds_own_over_the_shards(converted_tiny, tmp_path):
  """tfds.folder_dataset.write_metadata, counting every record itself, writes the same features
  and the same splits as the converter does from its manifest."""
  folder, _ = converted_tiny
  copy = tmp_path / "h36m"
  shutil.copytree(folder / "h36m", copy)
  ours = {
    name: json.loads((copy / name).read_text()) for name in ("dataset_info.json", "features.json")
  }
  for name in ours:
    (copy / name).unlink()
  tfds.folder_dataset.write_metadata(
    data_dir=str(copy),
    features=tfds_data.features(),
    split_infos=None,  # TFDS reads every shard to count
    version=tfds_data.VERSION,
    description=ours["dataset_info.json"]["description"],
    check_data=True,
  )
  theirs = {name: json.loads((copy / name).read_text()) for name in ours}
  assert theirs["features.json"] == ours["features.json"]
  for split in theirs["dataset_info.json"]["splits"]:
    split.pop("numBytes", None)  # not in the manifest; ours says 0
  for split in ours["dataset_info.json"]["splits"]:
    split.pop("numBytes", None)
  assert theirs["dataset_info.json"] == ours["dataset_info.json"]


def test_training_reads_the_same_records_through_tfds(converted_tiny):
  folder, manifests = converted_tiny
  config = DataConfig(data_dir=str(folder), batch_size=8, shuffle_buffer=16, input_source="tfds")
  streamed = list(data.mixed_records(config, ["lsp", "lspet"], seed=0).take(48))
  assert all(isinstance(r, dict) for r in streamed)
  keys = {r[schema.KEY].numpy().decode() for r in streamed}
  expected = {
    r[schema.KEY].numpy().decode()
    for d in ("lsp", "lspet")
    for r in _shard_records(folder, d, "train")
  }
  assert keys == expected  # every training record of both, none of the test split
  # Same record, either source: data.parsed gives the same dict.
  by_key = {
    r[schema.KEY].numpy(): r for d in ("lsp", "lspet") for r in _shard_records(folder, d, "train")
  }
  one = streamed[0]
  for key in schema.FEATURES:
    np.testing.assert_array_equal(
      data.parsed(one)[key].numpy(), by_key[one[schema.KEY].numpy()][key].numpy(), err_msg=key
    )
  # Seeded: the same stream again.
  again = [r[schema.KEY].numpy() for r in data.mixed_records(config, ["lsp", "lspet"], 0).take(48)]
  assert again == [r[schema.KEY].numpy() for r in streamed]
  heatmap_size = ModelConfig.tiny(64).heatmap_size
  batch = next(
    iter(data.training_dataset(config, "pretrain2d", input_size=64, heatmap_size=heatmap_size))
  )
  shard_batch = next(
    iter(
      data.training_dataset(
        dataclasses.replace(config, input_source="shards"),
        "pretrain2d",
        input_size=64,
        heatmap_size=heatmap_size,
      )
    )
  )
  assert batch.keys() == shard_batch.keys()
  for key in batch:
    assert batch[key].shape == shard_batch[key].shape and batch[key].dtype == shard_batch[key].dtype


def test_a_folder_without_tfds_metadata_is_one_line_naming_it(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  shutil.copytree(folder / "lsp", tmp_path / "lsp")
  shutil.copy(shards.manifest_path(str(folder), "lsp"), tmp_path)
  (tmp_path / "lsp" / tfds_data.INFO_FILE).unlink()
  with pytest.raises(FileNotFoundError, match=rf"^{tmp_path}/lsp: no TFDS metadata \(dataset_info"):
    tfds_data.builder(str(tmp_path), "lsp")
  config = DataConfig(data_dir=str(tmp_path), input_source="tfds", datasets_2d=("lsp",))
  with pytest.raises(FileNotFoundError, match="--input_source=shards"):
    data.mixed_records(config, ["lsp"], 0)
  with pytest.raises(ValueError, match="input_source .* must be one of"):
    DataConfig(data_dir=".", input_source="gcs")
