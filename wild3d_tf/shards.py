"""The converter's output folder: names of shards, dead letters and manifest, and reading them.

``beam_preprocess/sharding.py`` writes these files and training, evaluation and
the benchmarks read them (through ``data.shard_files``), both with the names
here and only through ``tf.io.gfile``, so the folder may be local or on any
filesystem TensorFlow knows (``gs://``, ``ram://``). One root folder holds several
datasets, each in its own folder ``<root>/<dataset>/`` (``dataset_dir``: the one place that
rule is spelt; TFDS reads a dataset from such a folder, ``wild3d_tf/tfds_data.py``): training's
--data_dir is the converter's --output_dir, the root.

Readers check the shards against the manifest: the file list and, where asked,
each SHA-256 (``shard_files``), and each shard's record count as it is read
(``checked_records``, ``read_checked``), so a short or corrupt shard is an
error naming it, never a smaller dataset.
"""

from __future__ import annotations

import hashlib
import json
import re

import tensorflow as tf

from wild3d_tf import schema, storage

SHARD_PATTERN = "{dataset}-{split}.tfrecord-{shard:05d}-of-{num_shards:05d}"
MANIFEST_PATTERN = "{dataset}.manifest.json"
DEAD_LETTER_PATTERN = "{dataset}.dead_letter.jsonl"
# What a writer leaves while a file is unfinished; renamed to the final name when complete.
INCOMPLETE_SUFFIX = ".incomplete"
_SPLIT = r"[A-Za-z0-9_]+"


join = storage.join  # ``folder/name`` for local paths and URLs (the converter imports it here)


def shard_name(dataset: str, split: str, shard: int, num_shards: int) -> str:
  """File name of shard ``shard`` (0-based) of ``num_shards`` of one split."""
  return SHARD_PATTERN.format(dataset=dataset, split=split, shard=shard, num_shards=num_shards)


def dataset_dir(root: str, dataset: str) -> str:
  """The folder of one converted dataset's shards and TFDS metadata under a root (--data_dir,
  the converter's --output_dir): TFDS reads one dataset per folder. Its manifest and dead
  letters stay in the root itself (``manifest_path``, ``dead_letter_path``), where users and
  tools have always found them."""
  return join(root, dataset)


def shard_path(root: str, dataset: str, split: str, shard: int, num_shards: int) -> str:
  return join(dataset_dir(root, dataset), shard_name(dataset, split, shard, num_shards))


def shard_name_regex(dataset: str, split: str | None = None) -> re.Pattern:
  """Matches the file names of a dataset's shards (one split, or any), finished or not."""
  split_part = re.escape(split) if split is not None else _SPLIT
  return re.compile(
    rf"^{re.escape(dataset)}-{split_part}\.tfrecord-\d{{5}}-of-\d{{5}}"
    rf"({re.escape(INCOMPLETE_SUFFIX)})?$"
  )


def manifest_path(root: str, dataset: str) -> str:
  """``<root>/<dataset>.manifest.json``: the index of the shards in ``dataset_dir``."""
  return join(root, MANIFEST_PATTERN.format(dataset=dataset))


def dead_letter_path(root: str, dataset: str) -> str:
  """``<root>/<dataset>.dead_letter.jsonl``: the records the converter could not use."""
  return join(root, DEAD_LETTER_PATTERN.format(dataset=dataset))


def has_manifest(root: str, dataset: str) -> bool:
  """Whether a conversion of ``dataset`` into ``root`` finished (the manifest is written last)."""
  return tf.io.gfile.exists(manifest_path(root, dataset))


def flat_shards(root: str, dataset: str) -> list[str]:
  """Names of ``dataset``'s shards lying directly in ``root``: a conversion in the layout before
  the shards moved into ``<root>/<dataset>/`` (what an error about missing shards points out)."""
  if not tf.io.gfile.isdir(root):
    return []
  pattern = shard_name_regex(dataset)
  return sorted(n for n in tf.io.gfile.listdir(root) if pattern.match(n.rstrip("/")))


def is_current(folder: str, dataset: str) -> bool:
  """Whether ``folder`` holds a finished conversion of ``dataset`` under this ``SCHEMA_VERSION``
  (what a tool that reuses converted data checks before skipping the conversion)."""
  try:
    load_manifest(folder, dataset)
  except (FileNotFoundError, schema.SchemaVersionError):
    return False
  return True


def converted_datasets(root: str) -> list[str]:
  """The datasets whose conversion into ``root`` finished (their manifest is there), sorted."""
  if not tf.io.gfile.isdir(root):
    return []
  suffix = MANIFEST_PATTERN.format(dataset="")
  names = (n.rstrip("/") for n in tf.io.gfile.listdir(root))
  return sorted(n[: -len(suffix)] for n in names if n.endswith(suffix) and not n.startswith("."))


def load_manifest(data_dir: str, dataset: str) -> dict:
  """The manifest of one converted dataset.

  Raises FileNotFoundError when there is none (the conversion did not finish
  or never ran) and ``schema.SchemaVersionError``, naming the manifest and
  both versions, when it was written under another schema version.
  """
  path = manifest_path(data_dir, dataset)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
      f"no manifest for {dataset} in {data_dir} ({path}): the conversion did not finish, or "
      "never ran; run python -m beam_preprocess.convert"
    )
  with tf.io.gfile.GFile(path, "r") as f:
    try:
      manifest = json.load(f)
    except ValueError as error:
      raise ValueError(f"{path}: not a JSON manifest ({error})") from None
  found = manifest.get("schema_version", "missing") if isinstance(manifest, dict) else "missing"
  if found != schema.SCHEMA_VERSION:
    raise schema.version_error(path, found)
  return manifest


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, "rb") as f:
    while chunk := f.read(1 << 22):
      digest.update(chunk)
  return digest.hexdigest()


def shard_files(data_dir: str, dataset: str, split: str, check_digests: bool = False) -> list[str]:
  """Paths of the shards the manifest lists for one split, in manifest order; [] without the split.

  ``data_dir`` is the root; the shards are in ``dataset_dir(data_dir, dataset)``,
  which must hold exactly those shards of the split (FileNotFoundError names the
  missing and the unlisted ones); with ``check_digests`` each file's SHA-256 must
  equal the manifest's (ValueError names the file).
  """
  manifest = load_manifest(data_dir, dataset)
  if split not in manifest["splits"]:
    return []
  folder = dataset_dir(data_dir, dataset)
  entries = manifest["splits"][split]["shards"]
  listed = [entry["file"] for entry in entries]
  pattern = shard_name_regex(dataset, split)
  names = tf.io.gfile.listdir(folder) if tf.io.gfile.isdir(folder) else []
  present = {name for name in names if pattern.match(name.rstrip("/"))}
  missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
  if missing and flat_shards(data_dir, dataset):
    raise FileNotFoundError(
      f"{data_dir}: the shards of {dataset} lie directly in it, the layout before each "
      f"dataset's shards moved into {folder}; convert again (python -m beam_preprocess.convert)"
    )
  if missing or extra:
    raise FileNotFoundError(
      f"{folder}: shards of {dataset}/{split} differ from its manifest: "
      f"missing {missing}, not listed {extra}"
    )
  if check_digests:
    for entry in entries:
      digest = file_sha256(join(folder, entry["file"]))
      if digest != entry["sha256"]:
        raise ValueError(
          f"{join(folder, entry['file'])}: SHA-256 {digest} differs from the manifest's "
          f"{entry['sha256']}"
        )
  return [join(folder, name) for name in listed]


_SHARD_NAME = re.compile(rf"^(?P<dataset>.+)-(?P<split>{_SPLIT})\.tfrecord-\d{{5}}-of-\d{{5}}$")


def listed_records(files: list[str]) -> list[int]:
  """The record count the manifest lists for each of ``files`` (shard paths, any folders).

  Each shard's manifest is the one of its dataset beside it (``<root>/<dataset>/``,
  both read from the path). Raises ValueError naming a path that is not a shard
  name, not in its dataset's folder or not listed by its manifest,
  FileNotFoundError when there is no manifest.
  """
  manifests, counts = {}, []
  for path in files:
    folder, _, name = str(path).rpartition("/")
    match = _SHARD_NAME.match(name)
    if not match:
      raise ValueError(f"{path}: not a shard name ({SHARD_PATTERN}); no manifest vouches for it")
    dataset, split = match["dataset"], match["split"]
    root, _, own = folder.rpartition("/")
    if own != dataset:
      raise ValueError(f"{path}: not in a folder {dataset}/ (<root>/<dataset>/<shard>)")
    root = root or ("/" if folder.startswith("/") else ".")
    if (root, dataset) not in manifests:
      manifests[root, dataset] = load_manifest(root, dataset)
    entries = manifests[root, dataset]["splits"].get(split, {}).get("shards", [])
    records = [entry["records"] for entry in entries if entry["file"] == name]
    if not records:
      raise ValueError(f"{path}: not listed in {manifest_path(root, dataset)}")
    counts.append(int(records[0]))
  return counts


def checked_records(path, records) -> tf.data.Dataset:
  """The serialized records of one shard, failing unless it holds exactly ``records`` of them.

  ``path`` and ``records`` may be tensors (an interleave over shards passes
  them). Checked lazily, as the shard is read, so the check costs no extra
  pass: a shard that ends early (cut at a record boundary reads as a shorter
  file without error), holds a corrupt record (CRC mismatch) or a record cut
  in half, raises InvalidArgumentError "PATH: N records read, its manifest
  lists M: record N is corrupt or missing" when its stream ends; one longer
  than listed raises when record M + 1 arrives.
  """
  path = tf.convert_to_tensor(path, tf.string)
  expected = tf.cast(records, tf.int64)
  # TFRecordDataset's own DataLossError ("corrupted record at OFFSET") names no file; its
  # reader moves to the next file after an error, so ignoring it ends this shard's stream at
  # the bad record, and the count below names the shard and the record. (The original
  # message is logged as a warning.)
  read = tf.data.TFRecordDataset(path).ignore_errors(log_warning=True)
  end = tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(False)))
  items = read.map(lambda record: (record, tf.constant(True))).concatenate(end)

  def count_and_check(n, item):
    record, real = item
    n = n + tf.cast(real, tf.int64)

    def fail():  # the message is built only when the check fails
      text = lambda v: tf.strings.as_string(v)
      message = tf.where(
        real,
        tf.strings.join(
          [path, ": more than ", text(expected), " records, its manifest lists ", text(expected)]
        ),
        tf.strings.join(
          [
            path,
            ": ",
            text(n),
            " records read, its manifest lists ",
            text(expected),
            ": record ",
            text(n),
            " (0-based) is corrupt or missing",
          ]
        ),
      )
      note = " (a damaged or replaced shard; convert the dataset again)"
      with tf.control_dependencies(
        [tf.debugging.Assert(False, [tf.strings.join([message, note])])]
      ):
        return tf.identity(n)

    ok = tf.where(real, n <= expected, tf.equal(n, expected))
    return tf.cond(ok, lambda: n, fail), (record, real)

  return (
    items.scan(tf.constant(0, tf.int64), count_and_check)
    .filter(lambda record, real: real)
    .map(lambda record, real: record)
  )


def read_checked(files: list[str]) -> tf.data.Dataset:
  """The serialized records of ``files`` in order, each shard checked by ``checked_records``
  against the count its manifest lists (``listed_records``)."""
  counts = listed_records(files)
  return tf.data.Dataset.from_tensor_slices(
    (tf.constant(files, tf.string), tf.constant(counts, tf.int64))
  ).flat_map(checked_records)
