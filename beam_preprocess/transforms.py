"""The Beam pipeline of one dataset.

Work items -> records and dead letters -> shards -> manifest.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
import traceback
import uuid

import apache_beam as beam
from apache_beam.metrics import Metrics
import numpy as np

from beam_preprocess import encode, sharding, storage
from beam_preprocess.readers import h36m, lsp, mpi_inf_3dhp, mpi_inf_3dhp_test, mpii
from beam_preprocess.records import BadRecord, CanonicalRecord, Options
from wild3d_tf import schema, skeletons, tfds_data

DEAD = "dead_letter"
PROGRESS_SECONDS = 10.0  # how often a worker prints its progress


class ConversionFailed(RuntimeError):
  """A conversion that must not count as done (over its rejection budget); a one-line message."""


class InputDirError(ValueError):
  """--input_dir is missing, empty or not the dataset's download; the message is one line."""


# dataset id -> (work_items, raw_records, to_record)
READERS = {
  "h36m": (h36m.work_items, h36m.raw_records, h36m.to_record),
  "mpi_inf_3dhp": (mpi_inf_3dhp.work_items, mpi_inf_3dhp.raw_records, mpi_inf_3dhp.to_record),
  "mpi_inf_3dhp_test": (
    mpi_inf_3dhp_test.work_items,
    mpi_inf_3dhp_test.raw_records,
    mpi_inf_3dhp_test.to_record,
  ),
  "mpii": (mpii.work_items, mpii.raw_records, mpii.to_record),
  "lsp": (
    functools.partial(lsp.work_items, dataset="lsp"),
    lsp.raw_records,
    functools.partial(lsp.to_record, dataset="lsp"),
  ),
  "lspet": (
    functools.partial(lsp.work_items, dataset="lspet"),
    lsp.raw_records,
    functools.partial(lsp.to_record, dataset="lspet"),
  ),
}
# dataset id -> globs that must each match something under its --input_dir
EXPECTED_LAYOUTS = {
  "h36m": h36m.EXPECTED_LAYOUT,
  "mpi_inf_3dhp": mpi_inf_3dhp.EXPECTED_LAYOUT,
  "mpi_inf_3dhp_test": mpi_inf_3dhp_test.EXPECTED_LAYOUT,
  "mpii": mpii.EXPECTED_LAYOUT,
  "lsp": lsp.EXPECTED_LAYOUT,
  "lspet": lsp.EXPECTED_LAYOUT,
}
BONES = skeletons.POSE3D.bones


def check_input_dir(dataset: str, input_dir) -> None:
  """Raises InputDirError, naming the folder and what the dataset expects there, unless
  ``input_dir`` (a local folder or a URL, ``storage``) is a folder where each of
  ``EXPECTED_LAYOUTS[dataset]`` matches a path."""
  expected = ", ".join(EXPECTED_LAYOUTS[dataset])
  root = str(input_dir)
  where = f"--input_dir {input_dir}"
  if storage.is_url(root):
    if not storage.is_dir(root):  # an object store has no empty folders
      raise InputDirError(f"{where} holds no file (a {dataset} download holds {expected})")
  elif not os.path.exists(root):
    raise InputDirError(f"{where} does not exist (a {dataset} download holds {expected})")
  elif not os.path.isdir(root):
    raise InputDirError(f"{where} is not a folder (a {dataset} download holds {expected})")
  elif not storage.has_entries(root):
    raise InputDirError(f"{where} is empty (a {dataset} download holds {expected})")
  missing = [p for p in EXPECTED_LAYOUTS[dataset] if not storage.glob(root, p)]
  if len(missing) == len(EXPECTED_LAYOUTS[dataset]):
    raise InputDirError(f"{where} is not a {dataset} download: it holds none of {expected}")
  if missing:
    raise InputDirError(
      f"{where} lacks {', '.join(missing)} (a {dataset} download holds {expected})"
    )


# Checks a reader makes of its input with the conversion options, before any work: H3.6M needs
# one camera file (--h36m_cameras, or one found in --input_dir).
INPUT_CHECKS = {"h36m": h36m.check_input}


def check_reader_input(dataset: str, input_dir, options: Options) -> None:
  """Raises InputDirError with the reader's one-line reason when ``INPUT_CHECKS`` of the
  dataset refuses ``input_dir`` under ``options`` (e.g. no H3.6M camera file)."""
  check = INPUT_CHECKS.get(dataset)
  if check is None:
    return
  try:
    check(str(input_dir), options)
  except ValueError as error:  # the readers' own error types (h36m_cameras.CameraFileError)
    raise InputDirError(str(error)) from None


def _error_row(dataset: str, error: Exception, item) -> dict:
  if isinstance(error, BadRecord):
    return error.row(dataset)
  return {
    "dataset": dataset,
    "file": "-",
    "record": json.dumps(_describe(item), sort_keys=True, default=str)[:200],
    "field": "-",
    "reason": f"{type(error).__name__}: {error}",
    "error": type(error).__name__,
    "traceback": traceback.format_exc(limit=3),
  }


def _describe(item):
  """A work item as a dead-letter row names it: its frame range instead of the frame list."""
  if not isinstance(item, dict):
    return item
  out = {k: v for k, v in item.items() if k not in ("frames", "joints", "people")}
  if item.get("frames"):
    out["frames"] = f"{item['frames'][0]}-{item['frames'][-1]}"
  return out


def expected_records(items: list[dict], discovery_errors: list[BadRecord]) -> dict[str, int]:
  """Records per split that discovery promises: each item's ``records`` (1 where it does not
  say) and the records each discovery dead letter stands for ("" where its split is unknown)."""
  expected = {}
  for item in items:
    split = item.get("split", "")
    expected[split] = expected.get(split, 0) + int(item.get("records", 1))
  for error in discovery_errors:
    expected[error.split] = expected.get(error.split, 0) + error.records
  return expected


class ReadAndEncode(beam.DoFn):
  """Work item -> (record summary with serialized Example) on the main output, dead letters tagged.

  Losses are counted in records: each dead-letter row has ``records`` (how many
  records it stands for) and ``split``. A work item that fails part-way (a missing
  or unreadable video, a broken annotation file) gives one row standing for every
  record it had not yet yielded of the ``records`` discovery promised, and an item
  that ends short of that number gives a row for the shortfall. The ``rejected``
  counter counts records, ``lost_items`` the failed items.

  Idempotent: the same item always gives the same outputs, so a retried
  bundle changes nothing.
  """

  def __init__(self, dataset: str, input_dir: str, options: Options):
    self.dataset, self.input_dir, self.options = dataset, input_dir, options
    self.records = Metrics.counter(dataset, "records")
    self.rejected = Metrics.counter(dataset, "rejected")
    self.lost_items = Metrics.counter(dataset, "lost_items")
    self.progress = Progress(dataset)

  def setup(self):
    self.progress = Progress(self.dataset)  # the clock starts where the worker does

  def _dead(self, row: dict, records: int, split: str):
    self.rejected.inc(records)
    self.progress.add(rejected=records)
    return beam.pvalue.TaggedOutput(DEAD, {**row, "records": records, "split": split})

  def process(self, item):
    _, raw_records, to_record = READERS[self.dataset]
    root = self.input_dir
    expected, split = int(item.get("records", 1)), item.get("split", "")
    done = 0  # records of this item yielded or rejected so far
    try:
      for raw in raw_records(root, item, self.options):
        if isinstance(raw, BadRecord):
          done += raw.records
          yield self._dead(raw.row(self.dataset), raw.records, raw.split or split)
          continue
        done += 1
        try:
          record = to_record(raw)
          serialized = encode.to_example(
            record, self.options.crop_size, self.options.crop_margin, self.options.jpeg_quality
          )
        except Exception as error:  # every failure of one record becomes a dead letter
          yield self._dead(_error_row(self.dataset, error, raw.get("file", item)), 1, split)
          continue
        self.records.inc()
        self.progress.add(records=1)
        yield summarise(record, serialized)
    except Exception as error:  # the item (a file, a video) failed: its remaining records are lost
      self.lost_items.inc()
      row = _error_row(self.dataset, error, item)
      if row["record"] == "-" and isinstance(item.get("frames"), list) and item["frames"]:
        row["record"] = f"frames {item['frames'][0]}-{item['frames'][-1]}"  # which range was lost
      yield self._dead(row, max(expected - done, 1), split)
      return
    if done < expected:  # e.g. an annotation shorter than the item's frame range
      self.lost_items.inc()
      row = {
        "dataset": self.dataset,
        "file": "-",
        "record": json.dumps(_describe(item), sort_keys=True, default=str)[:200],
        "field": "records",
        "reason": f"the work item gave {done} of the {expected} records discovery counted",
        "error": "Shortfall",
      }
      yield self._dead(row, expected - done, split)


class Progress:
  """Prints a worker's records converted and rejected and its rate to stderr, at most once every
  ``PROGRESS_SECONDS`` (a long conversion shows it is alive; a short one prints nothing)."""

  def __init__(self, dataset: str):
    self.dataset, self.records, self.rejected = dataset, 0, 0
    self.start = self.last = time.monotonic()

  def add(self, records: int = 0, rejected: int = 0) -> None:
    self.records += records
    self.rejected += rejected
    now = time.monotonic()
    if now - self.last >= PROGRESS_SECONDS:
      self.last = now
      rate = self.records / max(now - self.start, 1e-9)
      print(
        f"{self.dataset}: {self.records} records converted, {self.rejected} rejected, "
        f"{rate:.1f} records/s (worker {os.getpid()}, {now - self.start:.0f} s)",
        file=sys.stderr,
        flush=True,
      )


def summarise(record: CanonicalRecord, serialized: bytes) -> dict:
  """What later stages need of one record: provenance, bone lengths (micrometres), the Example."""
  bones = None
  if record.joints3d_camera_mm is not None:
    pose = record.joints3d_camera_mm
    bones = [int(round(1000 * np.linalg.norm(pose[c] - pose[p]))) for c, p in BONES]  # micrometres
  return {
    "key": record.key,
    "split": record.split,
    "subject": record.subject,
    "action": record.action,
    "camera": record.camera,
    "bones_um": bones,
    "example": serialized,
  }


def _split(summary):
  return summary["split"]


def _assign_shard(summary, counts, num_shards, records_per_shard):
  total = sharding.num_shards_for(counts[summary["split"]], num_shards, records_per_shard)
  return (summary["split"], sharding.shard_of(summary["key"], total), total), (
    summary["key"],
    summary["example"],
  )


def _count_keys(summary):
  return [f"{name}={summary[name]}" for name in ("split", "subject", "action", "camera")]


def _bone_sums(summary):
  if summary["bones_um"] is not None:  # integer micrometres: sums are exact in any order
    yield f"{summary['split']}/{summary['subject']}", np.array(summary["bones_um"] + [1], np.int64)


class WriteShard(beam.DoFn):
  """Writes one shard into ``output_dir`` (the run's staging folder)."""

  def __init__(self, output_dir: str, dataset: str):
    self.output_dir, self.dataset = output_dir, dataset

  def setup(self):
    storage.makedirs(self.output_dir)

  def process(self, element):
    (split, shard, total), records = element
    path = sharding.shard_path(self.output_dir, self.dataset, split, shard, total)
    info = sharding.write_shard(path, list(records))
    yield {"split": split, "shard": shard, "num_shards": total, **info}


def finalize(
  _,
  dataset,
  output_dir,
  shards,
  dead,
  counts,
  count_keys,
  bone_sums,
  options,
  max_rejected_fraction,
  expected=None,
  staging=None,
  skipped=None,
):
  """Fills empty shards, writes dead letters, checks the budget, then replaces the old shards
  by the new ones, writes TFDS's metadata (``tfds_data.write_metadata``) and the manifest.

  Rejections count records (each dead-letter row's ``records``): the job fails
  when they exceed ``max_rejected_fraction`` of written + rejected. ``expected``
  (split -> records discovery promised) goes into the manifest beside the records
  written and rejected of each split. The shards were written into ``staging``
  (default ``output_dir``); they replace the dataset's shards in ``output_dir``
  only when the budget holds, and the manifest is written last. A failed job
  (ConversionFailed) discards them and leaves the old shards and manifest as they were.
  """
  expected = expected or {}
  staging = staging or output_dir
  storage.makedirs(staging)
  rows = sorted(dead, key=lambda r: (r["file"], r["record"], r["field"], r["reason"]))
  lost = {}  # split -> rejected records
  for row in rows:
    lost[row.get("split", "")] = lost.get(row.get("split", ""), 0) + row.get("records", 1)
  written = {(s["split"], s["shard"]): s for s in shards}
  splits = {}
  for split in sorted(set(counts) | {s for s in expected if s}):
    records = counts.get(split, 0)
    total = next((s["num_shards"] for s in shards if s["split"] == split), 0)
    entries = []
    for shard in range(total):
      if (split, shard) not in written:  # a shard no key hashed to: still part of the set
        written[(split, shard)] = {
          "split": split,
          "shard": shard,
          "num_shards": total,
          **sharding.write_shard(sharding.shard_path(staging, dataset, split, shard, total), []),
        }
      entry = written[(split, shard)]
      entries.append({k: entry[k] for k in ("file", "records", "sha256")})
    splits[split] = {
      "records": records,
      "expected": expected.get(split, records),
      "rejected": lost.get(split, 0),
      "shards": entries,
    }
  sharding.write_text_atomically(
    sharding.dead_letter_path(output_dir, dataset),
    "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows),
  )
  accepted = sum(counts.values())
  rejected = sum(lost.values())
  if rejected and rejected > max_rejected_fraction * (accepted + rejected):
    per_split = ", ".join(
      f"{split or 'split unknown'}: {count} lost, {counts.get(split, 0)} written"
      + (f" of {expected[split]} expected" if split in expected else "")
      for split, count in sorted(lost.items())
    )
    if staging != output_dir:
      sharding.discard_staged(staging)
    first = rows[0]
    first_reason = (str(first["reason"]).splitlines() or [""])[0]
    raise ConversionFailed(
      f"{dataset}: {rejected} of {accepted + rejected} records rejected, over the budget of "
      f"{max_rejected_fraction:.1%} ({per_split}; {len(rows)} dead-letter rows, e.g. "
      f"{first['file']} [{first['record']}] {first['field']}: {first_reason}); reasons in "
      f"{sharding.dead_letter_path(output_dir, dataset)}; no manifest written, the shards and "
      "manifest of the last good run are kept"
    )
  by_reason = {}  # records per reason
  for row in rows:
    reason = f"{row['field']}: {row['reason'].split(':')[0]}"
    by_reason[reason] = by_reason.get(reason, 0) + row.get("records", 1)
  breakdown = {}
  for key, count in count_keys:
    name, value = key.split("=", 1)
    breakdown.setdefault(name, {})[value] = count
  bones = {}
  for split_subject, sums in sorted(bone_sums):
    split, subject = split_subject.split("/", 1)
    bones.setdefault(split, {})[subject] = [round(v / sums[-1] / 1000.0, 3) for v in sums[:-1]]
  manifest = {
    "dataset": dataset,
    "schema_version": schema.SCHEMA_VERSION,
    "splits": splits,
    "rejected": {
      "total": rejected,
      "rows": len(rows),
      "split_unknown": lost.get("", 0),
      "by_reason": dict(sorted(by_reason.items())),
      "dead_letter_file": sharding.dead_letter_path(output_dir, dataset).rsplit("/", 1)[-1],
    },
    "counts": {k: dict(sorted(v.items())) for k, v in sorted(breakdown.items())},
    # Inputs a reader sets aside on purpose (e.g. H3.6M takes outside the protocol), by reason.
    "skipped": dict(sorted((skipped or {}).items())),
    "bone_lengths_mm": bones,
    "bones": [f"{skeletons.POSE3D.joints[p]}->{skeletons.POSE3D.joints[c]}" for c, p in BONES],
    "options": {k: getattr(options, k) for k in sorted(vars(options))},
  }
  files = {s["file"] for v in splits.values() for s in v["shards"]}
  if staging != output_dir:
    removed = sharding.commit_staged(staging, output_dir, dataset, files)
  else:
    removed = sharding.remove_stale_shards(output_dir, dataset, files)
  if removed:
    logging.info("removed %d stale shards of %s: %s", len(removed), dataset, removed[:5])
  # TFDS's metadata over the new shards, before the manifest: whoever finds the manifest finds
  # a complete dataset, TFDS's view of it included (splits from the manifest, no extra pass).
  tfds_data.write_metadata(output_dir, dataset, manifest, sharding.write_text_atomically)
  sharding.write_json_atomically(sharding.manifest_path(output_dir, dataset), manifest)
  logging.info(
    "%s: %d records in %s, %d rejected",
    dataset,
    accepted,
    {k: len(v["shards"]) for k, v in splits.items()},
    rejected,
  )
  return manifest


class ConvertDataset(beam.PTransform):
  """PBegin -> PCollection of the manifest dict (one element).

  Writes the shards and dead letters on the way.
  """

  def __init__(
    self,
    dataset,
    input_dir,
    output_dir,
    options: Options,
    num_shards=0,
    records_per_shard=1000,
    max_rejected_fraction=0.05,
    run_id=None,
  ):
    super().__init__()
    if dataset not in READERS:
      raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(READERS)}")
    self.dataset, self.input_dir, self.output_dir = dataset, str(input_dir), str(output_dir)
    self.options, self.num_shards, self.records_per_shard = options, num_shards, records_per_shard
    self.max_rejected_fraction = max_rejected_fraction
    # Shards go to a folder of this run and replace the old ones only if the job succeeds.
    self.staging = sharding.staging_dir(self.output_dir, dataset, run_id or uuid.uuid4().hex[:12])

  def expand(self, pbegin):
    work_items = READERS[self.dataset][0]
    found = work_items(self.input_dir, self.options)
    items, discovery_errors = found
    skipped = getattr(found, "skipped", {})  # records.Discovery: inputs set aside on purpose
    logging.info(
      "%s: %d work items, %d files rejected at discovery",
      self.dataset,
      len(items),
      len(discovery_errors),
    )
    p = pbegin.pipeline
    converted = (
      pbegin
      | "WorkItems" >> beam.Create(items)
      | "Spread" >> beam.Reshuffle()
      | "ReadAndEncode"
      >> beam.ParDo(ReadAndEncode(self.dataset, self.input_dir, self.options)).with_outputs(
        DEAD, main="records"
      )
    )
    dead = (
      converted[DEAD],
      p | "DiscoveryErrors" >> beam.Create([e.row(self.dataset) for e in discovery_errors]),
    ) | "AllDeadLetters" >> beam.Flatten()
    records = converted.records
    counts = (
      records | "Splits" >> beam.Map(_split) | "CountSplits" >> beam.combiners.Count.PerElement()
    )
    shards = (
      records
      | "AssignShard"
      >> beam.Map(
        _assign_shard,
        counts=beam.pvalue.AsDict(counts),
        num_shards=self.num_shards,
        records_per_shard=self.records_per_shard,
      )
      | "GroupShards" >> beam.GroupByKey()
      | "WriteShards" >> beam.ParDo(WriteShard(self.staging, self.dataset))
    )
    count_keys = (
      records
      | "CountKeys" >> beam.FlatMap(_count_keys)
      | "Count" >> beam.combiners.Count.PerElement()
    )
    bone_sums = (
      records | "Bones" >> beam.FlatMap(_bone_sums) | "SumBones" >> beam.CombinePerKey(_sum_arrays)
    )
    return (
      p
      | "Finalize" >> beam.Create([None])
      | "WriteManifest"
      >> beam.Map(
        finalize,
        dataset=self.dataset,
        output_dir=self.output_dir,
        shards=beam.pvalue.AsList(shards),
        dead=beam.pvalue.AsList(dead),
        counts=beam.pvalue.AsDict(counts),
        count_keys=beam.pvalue.AsList(count_keys),
        bone_sums=beam.pvalue.AsList(bone_sums),
        options=self.options,
        max_rejected_fraction=self.max_rejected_fraction,
        expected=expected_records(items, discovery_errors),
        skipped=skipped,
        staging=self.staging,
      )
    )


def _sum_arrays(values):
  total = None
  for value in values:
    total = np.array(value, np.int64) if total is None else total + value
  return total
