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
import re

import tensorflow as tf

SHARD_PATTERN = "{dataset}-{split}.tfrecord-{shard:05d}-of-{num_shards:05d}"


def key_hash(key: str) -> str:
  return hashlib.sha256(key.encode("utf-8")).hexdigest()


def num_shards_for(records: int, num_shards: int, records_per_shard: int) -> int:
  return num_shards if num_shards > 0 else max(1, math.ceil(records / records_per_shard))


def shard_of(key: str, num_shards: int) -> int:
  return int(key_hash(key)[:15], 16) % num_shards


def shard_path(output_dir: str, dataset: str, split: str, shard: int, num_shards: int) -> str:
  return f"{output_dir}/" + SHARD_PATTERN.format(
    dataset=dataset, split=split, shard=shard, num_shards=num_shards
  )


def write_shard(path: str, records: list[tuple[str, bytes]]) -> dict:
  """Writes (key, serialized) records ordered by key hash; returns count and SHA-256 of the file."""
  ordered = sorted(records, key=lambda kv: key_hash(kv[0]))
  for (a, _), (b, _) in zip(ordered, ordered[1:]):
    if a == b:
      raise ValueError(f"duplicate record key {a!r} in {path}")
  temporary = path + ".incomplete"
  with tf.io.TFRecordWriter(temporary) as writer:
    for _, serialized in ordered:
      writer.write(serialized)
  tf.io.gfile.rename(temporary, path, overwrite=True)
  with tf.io.gfile.GFile(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  logging.info("wrote %s (%d records)", path, len(ordered))
  return {"file": path.rsplit("/", 1)[-1], "records": len(ordered), "sha256": digest}


def remove_stale_shards(output_dir: str, dataset: str, keep: set[str]) -> list[str]:
  """Deletes this dataset's shards (any split, any shard count) that are not in ``keep``."""
  pattern = re.compile(
    rf"^{re.escape(dataset)}-[A-Za-z0-9_]+\.tfrecord-\d{{5}}-of-\d{{5}}(\.incomplete)?$"
  )
  removed = []
  for name in tf.io.gfile.listdir(output_dir):
    if pattern.match(name) and name not in keep:
      tf.io.gfile.remove(f"{output_dir}/{name}")
      removed.append(name)
  return sorted(removed)


def write_text_atomically(path: str, text: str) -> None:
  """Writes under a temporary name and renames, so readers never see half a file (local or gs://)."""
  temporary = path + ".incomplete"
  with tf.io.gfile.GFile(temporary, "w") as f:
    f.write(text)
  tf.io.gfile.rename(temporary, path, overwrite=True)


def write_json_atomically(path: str, data: dict) -> None:
  write_text_atomically(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def manifest_path(output_dir: str, dataset: str) -> str:
  return f"{output_dir}/{dataset}.manifest.json"


def dead_letter_path(output_dir: str, dataset: str) -> str:
  return f"{output_dir}/{dataset}.dead_letter.jsonl"
