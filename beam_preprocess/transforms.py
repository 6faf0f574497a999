"""The Beam pipeline of one dataset: work items -> records and dead letters -> shards -> manifest."""

from __future__ import annotations

import functools
import json
import logging
import pathlib
import traceback

import apache_beam as beam
from apache_beam.metrics import Metrics
import numpy as np

from beam_preprocess import encode, sharding
from beam_preprocess.readers import h36m, lsp, mpi_inf_3dhp, mpi_inf_3dhp_test, mpii
from beam_preprocess.records import BadRecord, Options
from wild3d_tf import schema, skeletons

DEAD = "dead_letter"
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
BONES = skeletons.POSE3D.bones


def _error_row(dataset: str, error: Exception, item) -> dict:
  if isinstance(error, BadRecord):
    return error.row(dataset)
  return {
    "dataset": dataset,
    "file": "-",
    "record": json.dumps(item, sort_keys=True, default=str)[:200],
    "field": "-",
    "reason": f"{type(error).__name__}: {error}",
    "error": type(error).__name__,
    "traceback": traceback.format_exc(limit=3),
  }


class ReadAndEncode(beam.DoFn):
  """Work item -> (record summary with serialized Example) on the main output, dead letters tagged.

  Idempotent: the same item always gives the same outputs, so a retried
  bundle changes nothing.
  """

  def __init__(self, dataset: str, input_dir: str, options: Options):
    self.dataset, self.input_dir, self.options = dataset, input_dir, options
    self.records = Metrics.counter(dataset, "records")
    self.rejected = Metrics.counter(dataset, "rejected")

  def process(self, item):
    _, raw_records, to_record = READERS[self.dataset]
    root = pathlib.Path(self.input_dir)
    try:
      for raw in raw_records(root, item, self.options):
        if isinstance(raw, BadRecord):
          self.rejected.inc()
          yield beam.pvalue.TaggedOutput(DEAD, raw.row(self.dataset))
          continue
        try:
          record = to_record(raw)
          serialized = encode.to_example(
            record, self.options.crop_size, self.options.crop_margin, self.options.jpeg_quality
          )
        except Exception as error:  # every failure of one record becomes a dead letter
          self.rejected.inc()
          yield beam.pvalue.TaggedOutput(
            DEAD, _error_row(self.dataset, error, raw.get("file", item))
          )
          continue
        self.records.inc()
        yield summarise(record, serialized)
    except Exception as error:  # the whole item (a file) failed
      self.rejected.inc()
      yield beam.pvalue.TaggedOutput(DEAD, _error_row(self.dataset, error, item))


def summarise(record: dict, serialized: bytes) -> dict:
  bones = None
  if record["joints3d"] is not None:
    pose = record["joints3d"]
    bones = [int(round(1000 * np.linalg.norm(pose[c] - pose[p]))) for c, p in BONES]  # micrometres
  return {
    "key": record["key"],
    "split": record["split"],
    "subject": record["subject"],
    "action": record["action"],
    "camera": record["camera"],
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
  def __init__(self, output_dir: str, dataset: str):
    self.output_dir, self.dataset = output_dir, dataset

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
):
  """Fills empty shards, writes dead letters, drops stale shards, checks the budget, writes the manifest."""
  written = {(s["split"], s["shard"]): s for s in shards}
  splits = {}
  for split, records in sorted(counts.items()):
    total = next(s["num_shards"] for s in shards if s["split"] == split)
    entries = []
    for shard in range(total):
      if (split, shard) not in written:  # a shard no key hashed to: still part of the set
        written[(split, shard)] = {
          "split": split,
          "shard": shard,
          "num_shards": total,
          **sharding.write_shard(sharding.shard_path(output_dir, dataset, split, shard, total), []),
        }
      entry = written[(split, shard)]
      entries.append({k: entry[k] for k in ("file", "records", "sha256")})
    splits[split] = {"records": records, "shards": entries}
  rows = sorted(dead, key=lambda r: (r["file"], r["record"], r["field"], r["reason"]))
  sharding.write_text_atomically(
    sharding.dead_letter_path(output_dir, dataset),
    "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows),
  )
  removed = sharding.remove_stale_shards(
    output_dir, dataset, {s["file"] for v in splits.values() for s in v["shards"]}
  )
  if removed:
    logging.info("removed %d stale shards of %s: %s", len(removed), dataset, removed[:5])
  accepted = sum(counts.values())
  rejected = len(rows)
  if rejected and rejected > max_rejected_fraction * (accepted + rejected):
    raise RuntimeError(
      f"{dataset}: {rejected} of {accepted + rejected} records rejected, over the budget of "
      f"{max_rejected_fraction:.1%}; reasons in {sharding.dead_letter_path(output_dir, dataset)}; "
      "no manifest written"
    )
  by_reason = {}
  for row in rows:
    reason = f"{row['field']}: {row['reason'].split(':')[0]}"
    by_reason[reason] = by_reason.get(reason, 0) + 1
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
      "by_reason": dict(sorted(by_reason.items())),
      "dead_letter_file": sharding.dead_letter_path(output_dir, dataset).rsplit("/", 1)[-1],
    },
    "counts": {k: dict(sorted(v.items())) for k, v in sorted(breakdown.items())},
    "bone_lengths_mm": bones,
    "bones": [f"{skeletons.POSE3D.joints[p]}->{skeletons.POSE3D.joints[c]}" for c, p in BONES],
    "options": {k: getattr(options, k) for k in sorted(vars(options))},
  }
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
  """PBegin -> PCollection of the manifest dict (one element), having written shards and dead letters."""

  def __init__(
    self,
    dataset,
    input_dir,
    output_dir,
    options: Options,
    num_shards=0,
    records_per_shard=1000,
    max_rejected_fraction=0.05,
  ):
    super().__init__()
    if dataset not in READERS:
      raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(READERS)}")
    self.dataset, self.input_dir, self.output_dir = dataset, str(input_dir), str(output_dir)
    self.options, self.num_shards, self.records_per_shard = options, num_shards, records_per_shard
    self.max_rejected_fraction = max_rejected_fraction

  def expand(self, pbegin):
    work_items = READERS[self.dataset][0]
    items, discovery_errors = work_items(pathlib.Path(self.input_dir), self.options)
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
      | "WriteShards" >> beam.ParDo(WriteShard(self.output_dir, self.dataset))
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
      )
    )


def _sum_arrays(values):
  total = None
  for value in values:
    total = np.array(value, np.int64) if total is None else total + value
  return total
