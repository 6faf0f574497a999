"""Converts one dataset from its native files into sharded wild3d TFRecords with Apache Beam.

  python -m beam_preprocess.convert --dataset h36m --input_dir data/h36m --output_dir data/tfrecords

Writes ``<dataset>-<split>.tfrecord-SSSSS-of-NNNNN`` shards, ``<dataset>.dead_letter.jsonl`` and,
last, ``<dataset>.manifest.json`` into --output_dir (several datasets share one folder: it is
what training's --data_dir points at). Flags it does not know are Beam pipeline options; without
--runner it runs on the DirectRunner in multi-processing mode. On Dataflow:

  python -m beam_preprocess.convert --dataset h36m --input_dir gs://BUCKET/h36m \\
      --output_dir gs://BUCKET/wild3d --runner DataflowRunner --project PROJECT --region REGION \\
      --temp_location gs://BUCKET/tmp --setup_file ./setup.py --max_num_workers 32
"""

from __future__ import annotations

import json
import sys

from absl import flags, logging
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
import tensorflow as tf

from beam_preprocess import sharding, transforms
from beam_preprocess.records import Options

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, sorted(transforms.READERS), "Dataset to convert.")
flags.DEFINE_string("input_dir", None, "The dataset's own root folder (as the download unpacks).")
flags.DEFINE_string("output_dir", None, "Folder for shards, dead letters and the manifest.")
flags.DEFINE_integer("num_shards", 0, "Shards per split; 0 = one per --records_per_shard records.")
flags.DEFINE_integer("records_per_shard", 1000, "Target records per shard when --num_shards is 0.")
flags.DEFINE_integer(
  "frame_stride", 1, "Training splits: keep every n-th frame (H3.6M at 5 fps: 10)."
)
flags.DEFINE_integer(
  "test_frame_stride", None, "Test splits: every n-th frame (default 64 for h36m, else 1)."
)
flags.DEFINE_string(
  "cameras",
  "available",
  "3DHP training cameras: available, vnect, all, relevant, mm3d_chest or a comma list of ids.",
)
flags.DEFINE_bool("valid_only", True, "3DHP test set: only frames with valid_frame = 1.")
flags.DEFINE_integer(
  "frames_per_item", 250, "Video frames per work item (the unit of parallelism)."
)
flags.DEFINE_integer("crop_size", 320, "Side of the stored person-centred crop in pixels.")
flags.DEFINE_float(
  "crop_margin", 0.35, "Crop margin around the 2D joints, a fraction of their extent per side."
)
flags.DEFINE_float(
  "max_rejected_fraction", 0.05, "Fail the job when more records than this are rejected."
)


def run(argv=None) -> dict:
  """Parses our flags from argv, hands the rest to Beam, runs, and returns the manifest."""
  argv = list(sys.argv if argv is None else argv)
  FLAGS.unparse_flags()  # a second run() in one process must not inherit the first one's flags
  rest = FLAGS(argv, known_only=True)
  for name in ("dataset", "input_dir", "output_dir"):
    if getattr(FLAGS, name) is None:
      raise flags.IllegalFlagValueError(f"--{name} is required")
  beam_args = rest[1:]
  if not any(a.startswith("--runner") for a in beam_args):
    beam_args += [
      "--runner=DirectRunner",
      "--direct_running_mode=multi_processing",
      "--direct_num_workers=2",
    ]
  test_stride = FLAGS.test_frame_stride or (64 if FLAGS.dataset == "h36m" else 1)
  options = Options(
    frame_stride=FLAGS.frame_stride,
    test_frame_stride=test_stride,
    cameras=FLAGS.cameras,
    valid_only=FLAGS.valid_only,
    frames_per_item=FLAGS.frames_per_item,
    crop_size=FLAGS.crop_size,
    crop_margin=FLAGS.crop_margin,
  )
  tf.io.gfile.makedirs(FLAGS.output_dir)
  manifest = sharding.manifest_path(FLAGS.output_dir, FLAGS.dataset)
  if tf.io.gfile.exists(manifest):  # the old manifest would vouch for shards this run rewrites
    tf.io.gfile.remove(manifest)
  pipeline_options = PipelineOptions(beam_args)
  with beam.Pipeline(options=pipeline_options) as pipeline:
    _ = pipeline | "Convert" >> transforms.ConvertDataset(
      FLAGS.dataset,
      FLAGS.input_dir,
      FLAGS.output_dir,
      options,
      FLAGS.num_shards,
      FLAGS.records_per_shard,
      FLAGS.max_rejected_fraction,
    )
  with tf.io.gfile.GFile(manifest) as f:
    return json.load(f)


def main():
  logging.set_verbosity(logging.INFO)
  manifest = run()
  splits = {k: v["records"] for k, v in manifest["splits"].items()}
  print(
    f"{manifest['dataset']}: {splits} records, {manifest['rejected']['total']} rejected "
    f"-> {FLAGS.output_dir}"
  )


if __name__ == "__main__":
  main()
