"""Converts one dataset from its native files into sharded wild3d TFRecords with Apache Beam.

  python -m beam_preprocess.convert --dataset h36m --input_dir data/h36m --output_dir data/tfrecords

Writes ``<dataset>-<split>.tfrecord-SSSSS-of-NNNNN`` shards and TFDS's metadata
(``dataset_info.json``, ``features.json``: ``tfds.builder_from_directory`` reads the folder) into
``--output_dir/<dataset>/``, and ``<dataset>.dead_letter.jsonl`` and, last,
``<dataset>.manifest.json`` into ``--output_dir`` itself (several datasets share one
--output_dir, each with its own shard folder: the root is what training's --data_dir points at).
Flags it does not know must be Beam pipeline options (a misspelt flag is an error); without
--runner it runs on the DirectRunner in multi-processing mode with 2 workers, unless Beam
options given say otherwise (--direct_running_mode=in_memory).

Both folders may be local or URLs of a filesystem Beam knows (``gs://``, with
``pip install wild3d[gcp]``): every file is read and written through ``beam_preprocess.storage``
(Beam's ``FileSystems``), so Dataflow's workers read the raw datasets from cloud storage.
Before anything is written, --input_dir must hold what the dataset's download holds (each
reader's ``EXPECTED_LAYOUT``). New
shards go to a staging folder in --output_dir and replace the old ones only when the job
succeeds, so a failed run leaves the last good conversion as it was. It prints progress (records,
rejections, rate) and a summary; a known failure is one line on stderr, with the full log and
trace in the file that line names. On Dataflow:

  python -m beam_preprocess.convert --dataset h36m --input_dir gs://BUCKET/datasets/h36m \\
      --output_dir gs://BUCKET/wild3d --runner DataflowRunner --project PROJECT --region REGION \\
      --temp_location gs://BUCKET/tmp --setup_file ./setup.py --max_num_workers 32
"""

from __future__ import annotations

from wild3d_tf import cli  # first: quiets TensorFlow's and Beam's start-up before they load

# isort: split

import json
import logging as std_logging
import os
import re
import sys
import tempfile
import threading
import time
import traceback
import uuid

from absl import flags, logging
import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options import pipeline_options
from apache_beam.options.pipeline_options import PipelineOptions

from beam_preprocess import sharding, storage, transforms
from beam_preprocess.readers import h36m_cameras
from beam_preprocess.records import Options
from wild3d_tf import h36m_protocol

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, sorted(transforms.READERS), "Dataset to convert.")
flags.DEFINE_string("input_dir", None, "The dataset's own root folder (as the download unpacks).")
flags.DEFINE_string(
  "output_dir",
  None,
  "Root folder: shards go to <output_dir>/<dataset>/, the manifest and dead letters to the root.",
)
flags.DEFINE_integer(
  "num_shards", 0, "Shards per split; 0 = one per --records_per_shard records.", lower_bound=0
)
flags.DEFINE_integer(
  "records_per_shard", 1000, "Target records per shard when --num_shards is 0.", lower_bound=1
)
flags.DEFINE_integer(
  "frame_stride", 1, "Training splits: keep every n-th frame (H3.6M at 5 fps: 10).", lower_bound=1
)
flags.DEFINE_integer(
  "test_frame_stride",
  None,
  "Test splits: every n-th frame (default 64 for h36m, else 1).",
  lower_bound=1,
)
flags.DEFINE_string(
  "cameras",
  "available",
  "3DHP training cameras: available, vnect, all, relevant, mm3d_chest or a comma list of ids.",
)
flags.DEFINE_bool("valid_only", True, "3DHP test set: only frames with valid_frame = 1.")
flags.DEFINE_integer(
  "frames_per_item",
  250,
  "Video frames per work item (the unit of parallelism).",
  lower_bound=1,
)
flags.DEFINE_integer(
  "crop_size", 320, "Side of the stored person-centred crop in pixels.", lower_bound=8
)
flags.DEFINE_float(
  "crop_margin",
  0.35,
  "Crop margin around the 2D joints, a fraction of their extent per side.",
  lower_bound=0.0,
  upper_bound=10.0,
)
flags.DEFINE_float(
  "max_rejected_fraction",
  0.05,
  "Fail the job when more records than this are rejected.",
  lower_bound=0.0,
  upper_bound=1.0,
)
flags.DEFINE_integer(
  "max_mat_bytes",
  Options.max_mat_bytes,
  "Refuse a .mat/HDF5 annotation file whose variables declare more bytes than this (checked "
  "before loading: a compressed variable can inflate far beyond its file).",
  lower_bound=1,
)
flags.DEFINE_integer(
  "max_image_bytes",
  Options.max_image_bytes,
  "Refuse an image file larger than this many bytes.",
  lower_bound=1,
)
flags.DEFINE_string(
  "h36m_cameras",
  "",
  "H3.6M camera parameters: the release's metadata.xml, 3d-pose-baseline's cameras.h5 or a JSON "
  f"of VideoPose3D's values; default: the first of {', '.join(h36m_cameras.SEARCHED)} found in "
  "--input_dir.",
)
# Where a run's full log goes (a known failure prints one line naming it).
LOG_PATTERN = "wild3d-convert-{dataset}-{run_id}.log"
# Beam options added when the command line names no --runner; options the user gives win.
DEFAULT_BEAM_ARGS = (
  "--runner=DirectRunner",
  "--direct_running_mode=multi_processing",
  "--direct_num_workers=2",
  # The workers' log lines (every error's trace, twice) would flood the terminal; an error still
  # reaches this process, which prints one line and keeps the trace in its log file.
  "--default_sdk_harness_log_level=CRITICAL",
)


class UsageError(ValueError):
  """A command line this program refuses (an unknown flag, a missing one); one line."""


def beam_options(args: list[str]) -> PipelineOptions:
  """The Beam pipeline options of ``args`` (what our flags left), with ``DEFAULT_BEAM_ARGS`` in
  front when no --runner is given, so a --direct_running_mode given alone is honoured.

  Raises UsageError naming every argument that no Beam options class knows (a misspelt flag of
  ours would otherwise be silently dropped by Beam).
  """
  parser = pipeline_options._BeamArgumentParser(allow_abbrev=False)
  classes = {str(c): c for c in PipelineOptions.__subclasses__()}  # as Beam's own parsing
  for cls in classes.values():
    cls._add_argparse_args(parser)
  _, unknown = parser.parse_known_args(args)
  if unknown:
    raise UsageError(
      f"unknown flag(s) {' '.join(unknown)}: neither a flag of this program "
      "(--helpfull lists them) nor a Beam pipeline option"
    )
  if not any(a == "--runner" or a.startswith("--runner=") for a in args):
    args = [*DEFAULT_BEAM_ARGS, *args]  # argparse keeps the last value: the user's win
  return PipelineOptions(args)


def run(argv=None, run_id: str | None = None) -> dict:
  """Parses our flags from argv, hands the rest to Beam, runs, and returns the manifest.

  Raises UsageError or absl's flags.Error for a bad command line,
  transforms.InputDirError when --input_dir is not the dataset's download or lacks
  what its reader needs, such as H3.6M's camera file (both before --output_dir is
  touched) and transforms.ConversionFailed (possibly
  wrapped by Beam) when the job fails; a failed job leaves the shards and
  manifest of the last good run in --output_dir as they were.
  """
  argv = list(sys.argv if argv is None else argv)
  FLAGS.unparse_flags()  # a second run() in one process must not inherit the first one's flags
  rest = FLAGS(argv, known_only=True)
  # Unknown flags first: a misspelt required flag is named as what it is, not as missing.
  pipeline_opts = beam_options(rest[1:])
  # The checks and the discovery below read --input_dir here, before the job starts: with the
  # job's own options (project, credentials), as its workers will.
  FileSystems.set_options(pipeline_opts)
  for name in ("dataset", "input_dir", "output_dir"):
    if getattr(FLAGS, name) is None:
      raise UsageError(f"--{name} is required")
  transforms.check_input_dir(FLAGS.dataset, FLAGS.input_dir)
  test_stride = FLAGS.test_frame_stride or (
    h36m_protocol.TEST_FRAME_STRIDE if FLAGS.dataset == "h36m" else 1
  )
  options = Options(
    frame_stride=FLAGS.frame_stride,
    test_frame_stride=test_stride,
    cameras=FLAGS.cameras,
    valid_only=FLAGS.valid_only,
    frames_per_item=FLAGS.frames_per_item,
    crop_size=FLAGS.crop_size,
    crop_margin=FLAGS.crop_margin,
    max_mat_bytes=FLAGS.max_mat_bytes,
    max_image_bytes=FLAGS.max_image_bytes,
    h36m_cameras=FLAGS.h36m_cameras,
  )
  transforms.check_reader_input(FLAGS.dataset, FLAGS.input_dir, options)
  run_id = run_id or uuid.uuid4().hex[:12]
  storage.makedirs(FLAGS.output_dir)
  convert = transforms.ConvertDataset(
    FLAGS.dataset,
    FLAGS.input_dir,
    FLAGS.output_dir,
    options,
    FLAGS.num_shards,
    FLAGS.records_per_shard,
    FLAGS.max_rejected_fraction,
    run_id=run_id,
  )
  try:
    with beam.Pipeline(options=pipeline_opts) as pipeline:
      _ = pipeline | "Convert" >> convert
  finally:  # a job that failed anywhere leaves no staged shards behind
    sharding.discard_staged(convert.staging)
  return json.loads(storage.read_text(sharding.manifest_path(FLAGS.output_dir, FLAGS.dataset)))


def _one_line(error: BaseException) -> str:
  """The line a person reads for ``error``: our own message, not Beam's stacked traces."""
  text = re.sub(r"\s*\[while running '[^']*'\]", "", str(error))  # Beam's step names
  # A worker's failure comes back as text quoting the original exception's class and message.
  found = re.findall(r"(?:ConversionFailed|InputDirError|BadRecord): (.+)", text)
  if found:
    return found[-1].strip()
  first = (text.strip().splitlines() or [""])[0]
  if isinstance(error, (transforms.ConversionFailed, transforms.InputDirError, UsageError)):
    return first
  if isinstance(error, flags.Error):
    return first
  return f"{type(error).__name__}: {first}"


def _quiet_logging(log_path: str) -> std_logging.Handler:
  """Sends every log record (Beam's, absl's, ours) to ``log_path`` instead of the terminal."""
  handler = std_logging.FileHandler(log_path)
  handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
  root = std_logging.getLogger()
  for old in list(root.handlers):
    root.removeHandler(old)
  root.addHandler(handler)
  root.setLevel(std_logging.INFO)
  logging.set_verbosity(logging.INFO)
  return handler


class _StderrToLog:
  """Sends this process's and its workers' stderr (file descriptor 2, so C++ and subprocess output
  too) to the log file, except the progress lines, which go on to the terminal."""

  KEEP = re.compile(rb"^\S+: \d+ records converted, ")

  def __init__(self, log_path: str):
    self.log_path = log_path

  def __enter__(self):
    sys.stderr.flush()
    self.terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    self.thread = threading.Thread(target=self._pump, args=(read_end,), daemon=True)
    self.thread.start()
    return self

  def _pump(self, read_end: int) -> None:
    with os.fdopen(read_end, "rb") as pipe, open(self.log_path, "ab") as log:
      for line in pipe:
        if self.KEEP.match(line):
          os.write(self.terminal, line)
        else:
          log.write(line)
          log.flush()

  def __exit__(self, *exc):
    sys.stderr.flush()
    os.dup2(self.terminal, 2)  # closes the pipe's last writer: the pump reads to its end
    os.close(self.terminal)
    self.thread.join(timeout=10)
    return False


def main():
  if cli.help_requested(sys.argv):  # without app.run absl has no --help: answer it here
    print(__doc__)
    print(FLAGS.main_module_help())
    sys.exit(0)
  run_id = uuid.uuid4().hex[:12]
  args = sys.argv[1:]
  named = [a.split("=", 1)[1] for a in args if a.startswith("--dataset=")]
  named += [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--dataset"]
  dataset = named[-1] if named else "dataset"
  log_path = os.path.join(
    tempfile.gettempdir(), LOG_PATTERN.format(dataset=re.sub(r"\W", "_", dataset), run_id=run_id)
  )
  handler = _quiet_logging(log_path)
  start = time.monotonic()
  try:
    with _StderrToLog(log_path):
      manifest = run(run_id=run_id)
  except (flags.Error, UsageError, transforms.InputDirError) as error:
    print(f"convert: error: {_one_line(error)}", file=sys.stderr, flush=True)
    handler.close()
    os.remove(log_path)  # nothing ran: the line says all there is
    sys.exit(2)
  except Exception as error:  # the job failed: one line here, the whole story in the log
    std_logging.getLogger(__name__).error("conversion failed:\n%s", traceback.format_exc())
    handler.flush()
    print(
      f"convert: failed: {_one_line(error)} (full log and trace: {log_path})",
      file=sys.stderr,
      flush=True,
    )
    sys.exit(1)
  seconds = time.monotonic() - start
  written = {k: v["records"] for k, v in manifest["splits"].items()}
  total = sum(written.values())
  print(
    f"{manifest['dataset']}: {written} records, {manifest['rejected']['total']} rejected "
    f"in {seconds:.0f} s ({total / max(seconds, 1e-9):.1f} records/s) -> {FLAGS.output_dir}",
    flush=True,
  )
  handler.close()
  os.remove(log_path)  # kept only when something failed


if __name__ == "__main__":
  main()
