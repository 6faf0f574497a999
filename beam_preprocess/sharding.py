"""Deterministic shards and the manifest written last.

Shard membership and record order depend only on the record keys (a SHA-256
of each key), not on the runner's bundling, so a re-run gives byte-identical
shards. Files are written under a temporary name and renamed; the manifest,
with per-shard record counts and digests, is written last, so a reader that
finds it finds a complete dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import struct

import google_crc32c

from beam_preprocess import storage

# The file names are training's too, so they have one owner, wild3d_tf/shards.py; the path
# functions are re-exported for the converter.
from wild3d_tf.shards import INCOMPLETE_SUFFIX, dataset_dir, join, shard_name_regex
from wild3d_tf.shards import dead_letter_path as dead_letter_path
from wild3d_tf.shards import manifest_path as manifest_path
from wild3d_tf.shards import shard_path as shard_path


def key_hash(key: str) -> str:
  return hashlib.sha256(key.encode("utf-8")).hexdigest()


def num_shards_for(records: int, num_shards: int, records_per_shard: int) -> int:
  return num_shards if num_shards > 0 else max(1, math.ceil(records / records_per_shard))


def shard_of(key: str, num_shards: int) -> int:
  return int(key_hash(key)[:15], 16) % num_shards


def _masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC-32C: rotated right by 15 bits plus a constant (tensorflow's
  tsl/lib/hash/crc32c.h, Mask)."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(serialized: bytes) -> bytes:
  """One TFRecord as ``tf.io.TFRecordWriter`` writes it uncompressed: length (uint64, little
  endian), its masked CRC-32C (uint32), the data, the data's masked CRC-32C. Written here so
  that shards reach any filesystem Beam knows (``storage``), byte for byte as TensorFlow's."""
  length = struct.pack("<Q", len(serialized))
  return (
    length
    + struct.pack("<I", _masked_crc32c(length))
    + serialized
    + struct.pack("<I", _masked_crc32c(serialized))
  )


def write_shard(path: str, records: list[tuple[str, bytes]]) -> dict:
  """Writes (key, serialized) records ordered by key hash; returns count and SHA-256 of the file."""
  ordered = sorted(records, key=lambda kv: key_hash(kv[0]))
  for (a, _), (b, _) in zip(ordered, ordered[1:]):
    if a == b:
      raise ValueError(f"duplicate record key {a!r} in {path}")
  temporary = path + INCOMPLETE_SUFFIX
  storage.makedirs(path.rpartition("/")[0] or ".")  # the dataset's folder (shards.dataset_dir)
  digest = hashlib.sha256()
  with storage.create(temporary) as writer:
    for _, serialized in ordered:
      framed = tfrecord(serialized)
      writer.write(framed)
      digest.update(framed)
  storage.rename(temporary, path)
  digest = digest.hexdigest()
  logging.info("wrote %s (%d records)", path, len(ordered))
  return {"file": path.rsplit("/", 1)[-1], "records": len(ordered), "sha256": digest}


def remove_stale_shards(output_dir: str, dataset: str, keep: set[str]) -> list[str]:
  """Deletes this dataset's shards (any split, any shard count) that are not in ``keep``."""
  pattern = shard_name_regex(dataset)
  folder = dataset_dir(output_dir, dataset)
  removed = []
  for name in storage.listdir(folder):
    if pattern.match(name) and name not in keep:
      storage.remove(join(folder, name))
      removed.append(name)
  return sorted(removed)


def write_text_atomically(path: str, text: str) -> None:
  """Writes under a temporary name and renames, so readers never see half a file (local or gs://)."""
  temporary = path + INCOMPLETE_SUFFIX
  storage.makedirs(path.rpartition("/")[0] or ".")
  storage.write_text(temporary, text)
  storage.rename(temporary, path)


def write_json_atomically(path: str, data: dict) -> None:
  write_text_atomically(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


# A run writes its shards here and moves them into the output folder only when it succeeds, so a
# failed or mistaken run never touches the shards and manifest of the last good one. The leading
# dot and the name keep it out of every shard listing.
STAGING_PATTERN = ".staging-{dataset}-{run_id}"


def staging_dir(output_dir: str, dataset: str, run_id: str) -> str:
  return join(output_dir, STAGING_PATTERN.format(dataset=dataset, run_id=run_id))


def commit_staged(staging: str, output_dir: str, dataset: str, files: set[str]) -> list[str]:
  """Replaces the dataset's shards in ``output_dir`` by the staged ``files``; returns the removed
  stale shard names. The old manifest goes first (from here on it would vouch for other shards),
  the staging folder last; the caller writes the new manifest after this returns."""
  manifest = manifest_path(output_dir, dataset)
  if storage.is_file(manifest):
    storage.remove(manifest)
  source, target = dataset_dir(staging, dataset), dataset_dir(output_dir, dataset)
  storage.makedirs(target)
  for name in sorted(files):
    storage.rename(join(source, name), join(target, name))
  removed = remove_stale_shards(output_dir, dataset, files)
  discard_staged(staging)
  return removed


def discard_staged(staging: str) -> None:
  """Removes a staging folder and what it holds (nothing happens if there is none)."""
  storage.rmtree(staging)
