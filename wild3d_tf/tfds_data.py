"""Every converted dataset as a TensorFlow Datasets (TFDS) dataset: metadata beside the shards.

The converter's last step (``write_metadata``) writes TFDS's ``dataset_info.json`` and
``features.json`` into the dataset's folder (``shards.dataset_dir``: TFDS wants one dataset per
folder), over the shards already there, whose names are TFDS's default file-name template. Then

    import tensorflow_datasets as tfds
    builder = tfds.builder_from_directory("DATA_DIR/lsp")
    builder.info.splits                     # the manifest's record counts
    ds = builder.as_dataset(split="train")  # dicts keyed by schema's keys, JPEG decoded

gives records equal to ``schema.parse``'s, the crop decoded to (H, W, 3) uint8 by TFDS. The
features come from ``schema.FEATURES`` (``features``); the splits from the manifest's per-shard
record counts (no pass over the data). The TFDS version is ``SCHEMA_VERSION``.0.0. Training reads
the same folders through TFDS with ``--input_source=tfds`` (``training_records``).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from wild3d_tf import schema, shards

VERSION = f"{schema.SCHEMA_VERSION}.0.0"
FILE_FORMAT = "tfrecord"  # the "tfrecord" of shards.SHARD_PATTERN (``write_metadata`` checks)
# TFDS's default file-name template; ``write_metadata`` checks it names the manifest's shards.
FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
INFO_FILE = "dataset_info.json"  # TFDS's name; its presence marks a folder TFDS can read
# Byte features TFDS decodes as images: the crop (always a JPEG). The mask's PNG stays bytes:
# it is empty in records without a mask (``schema.HAS_MASK``), which no image decoder takes.
IMAGES = {schema.IMAGE_CROP_JPEG: "jpeg"}


def _feature(name: str, feature: schema.Feature) -> tfds.features.FeatureConnector:
  if name in IMAGES:
    return tfds.features.Image(shape=(None, None, 3), encoding_format=IMAGES[name])
  if feature.kind == "f64":  # little-endian float64 bytes, what Encoding.BYTES decodes
    return tfds.features.Tensor(
      shape=feature.shape, dtype=np.float64, encoding=tfds.features.Encoding.BYTES
    )
  if feature.kind == "int":
    return tfds.features.Tensor(shape=feature.shape, dtype=np.int64)
  if feature.kind == "string":
    return tfds.features.Text()
  return tfds.features.Tensor(shape=(), dtype=np.object_)  # bytes


def features() -> tfds.features.FeaturesDict:
  """The TFDS features of one record, one per ``schema.FEATURES`` key, under the same key.

  f64 arrays decode to float64 of the declared shape, ints to int64, strings to tf.string,
  ``IMAGES`` to (H, W, 3) uint8, other bytes stay tf.string.
  """
  return tfds.features.FeaturesDict(
    {name: _feature(name, feature) for name, feature in schema.FEATURES.items()}
  )


def dataset_info(dataset: str, manifest: dict, local_dir: str) -> tfds.core.DatasetInfo:
  """The TFDS ``DatasetInfo`` of one converted dataset: ``features()``, and one split per
  manifest split with its shards' record counts.

  ``local_dir`` is a local folder for TFDS's bookkeeping (it writes no path into the
  metadata; TFDS's paths know gs:// but not every filesystem TF does, such as ram://).
  Raises ValueError naming the manifest's shard when the name TFDS would read for it is not
  the manifest's (the two file-name templates have drifted apart).
  """
  template = tfds.core.ShardedFileTemplate(
    data_dir=local_dir,
    template=FILENAME_TEMPLATE,
    dataset_name=dataset,
    filetype_suffix=FILE_FORMAT,
  )
  splits = []
  for split, entry in sorted(manifest["splits"].items()):
    lengths = [shard["records"] for shard in entry["shards"]]
    names = template.replace(split=split).sharded_filenames(len(lengths))
    for name, shard in zip(names, entry["shards"]):
      if name != shard["file"]:
        raise ValueError(
          f"{shards.MANIFEST_PATTERN.format(dataset=dataset)}: TFDS would read {name} for the "
          f"shard {shard['file']}; the file-name templates differ"
        )
    # num_bytes 0: not in the manifest, and TFDS needs it only for download-size notes.
    splits.append(
      tfds.core.SplitInfo(
        name=split, shard_lengths=lengths, num_bytes=0, filename_template=template
      )
    )
  info = tfds.core.DatasetInfo(
    builder=tfds.core.DatasetIdentity(
      name=dataset, version=tfds.core.Version(VERSION), data_dir=local_dir, module_name=""
    ),
    features=features(),
    description=(
      f"wild3d's conversion of {dataset} (schema version {schema.SCHEMA_VERSION}, "
      "docs/schema.md); one record per person in one image."
    ),
  )
  info.set_file_format(FILE_FORMAT)
  info.set_splits(tfds.core.SplitDict(splits))
  return info


def write_metadata(root: str, dataset: str, manifest: dict, write_text) -> list[str]:
  """Writes TFDS's metadata files of one converted dataset into its folder; returns their paths.

  What ``tfds.folder_dataset.write_metadata`` writes over the shards, with the splits from
  ``manifest`` rather than a pass over every record. The files are made in a local temporary
  folder and handed, as text, to ``write_text(path, text)`` (the converter's atomic writer),
  so they reach any folder the converter writes to. Raises ValueError as ``dataset_info``.
  """
  written = []
  with tempfile.TemporaryDirectory(prefix="wild3d_tfds_") as local:
    dataset_info(dataset, manifest, local).write_to_directory(local)
    for name in sorted(os.listdir(local)):
      with open(os.path.join(local, name), encoding="utf-8") as f:
        text = f.read()
      path = shards.join(shards.dataset_dir(root, dataset), name)
      write_text(path, text)
      written.append(path)
  return written


def builder(root: str, dataset: str) -> tfds.core.DatasetBuilder:
  """TFDS's builder of one converted dataset under ``root`` (``tfds.builder_from_directory``).

  Raises FileNotFoundError naming the folder when it holds no TFDS metadata (converted before
  the converter wrote it), and ValueError naming the metadata file when its version is not
  this schema's.
  """
  folder = shards.dataset_dir(root, dataset)
  info_path = shards.join(folder, INFO_FILE)
  if not tf.io.gfile.exists(info_path):
    raise FileNotFoundError(
      f"{folder}: no TFDS metadata ({INFO_FILE}); convert {dataset} again with "
      "python -m beam_preprocess.convert, or read the shards (--input_source=shards)"
    )
  found = tfds.builder_from_directory(folder)
  if str(found.info.version) != VERSION:
    raise ValueError(
      f"{info_path}: TFDS version {found.info.version}, this code reads {VERSION} (schema "
      f"version {schema.SCHEMA_VERSION}); convert {dataset} again"
    )
  return found


# The crop stays its JPEG (``schema.parse``'s value), so both input sources feed the same
# preparation, which decodes it (``data.prepare``).
_UNDECODED = {schema.IMAGE_CROP_JPEG: tfds.decode.SkipDecoding()}


def records(root: str, dataset: str, split: str) -> tf.data.Dataset:
  """The records of one split through TFDS, in shard order, keyed and typed as ``schema.parse``
  gives them (the crop undecoded)."""
  return builder(root, dataset).as_dataset(split=split, shuffle_files=False, decoders=_UNDECODED)


def training_records(root: str, dataset: str, seed: int, shuffle_buffer: int) -> tf.data.Dataset:
  """Endless training records of one dataset through TFDS, as ``schema.parse`` gives them:
  shards and records reshuffled every epoch from ``seed``, as the shard reader does
  (``data._records``). Record counts are not checked against the manifest here (the shard
  reader does that); TFDS reads the shards its metadata lists.
  """
  found = builder(root, dataset)
  shards_in_split = len(found.info.splits["train"].shard_lengths)
  read = tfds.ReadConfig(
    shuffle_seed=seed,
    shuffle_reshuffle_each_iteration=True,
    interleave_cycle_length=min(shards_in_split, 8),
    interleave_block_length=1,
  )
  return (
    found.as_dataset(split="train", shuffle_files=True, read_config=read, decoders=_UNDECODED)
    .repeat()
    .shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  )
