"""Every benchmark with one command: refreshes the measured blocks of docs/benchmarks.md and,
with the ablation, writes docs/results.md.

Each benchmark script prints Markdown; its block in docs/benchmarks.md (between
``<!-- run_all: NAME -->`` and ``<!-- end run_all: NAME -->``) is replaced by
the command, the date, the machine and that output. The prose around the
blocks (what the rows mean, readings) is kept; rerunning on another machine
changes the figures, not the explanations, so read them against the dates.

  python benchmarks/run_all.py                      # everything, the ablation at its default budget
  python benchmarks/run_all.py --only synthetic_speed convert_speed
  python benchmarks/run_all.py --skip ablation
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
# name -> command lines (arguments after ``python``); {data} is converted synthetic tiny data.
BENCHMARKS = {
  "model_speed": [["benchmarks/model_speed.py", "--seconds", "8"]],
  "synthetic_speed": [["benchmarks/synthetic_speed.py", "--preset", "tiny"]],
  "convert_speed": [
    ["benchmarks/convert_speed.py", "--preset", "small", "--dataset", "mpi_inf_3dhp_test"],
    ["benchmarks/convert_speed.py", "--preset", "small", "--dataset", "lsp"],
  ],
  "convert_memory": [["benchmarks/convert_memory.py", "--frames", "500", "2000", "--side", "2048"]],
  "train_speed": [["benchmarks/train_speed.py", "--data_dir", "{data}", "--seconds", "6"]],
  "input_speed": [["benchmarks/input_speed.py", "--data_dir", "{data}", "--seconds", "6"]],
  "side_by_side": [["benchmarks/side_by_side.py", "--data_dir", "{data}", "--steps", "400"]],
  "startup_speed": [["benchmarks/startup_speed.py", "--data_dir", "{data}"]],
  "serving_speed": [
    ["benchmarks/serving_speed.py", "--variants", "tiny", "full", "--seconds", "30"],
    [
      "benchmarks/serving_speed.py",
      "--variants",
      "tiny",
      "full",
      "--photos",
      "demo",
      "--seconds",
      "30",
    ],
  ],
  # The gate and the ablation write docs/results.md (through the ablation) and gate.json.
  "gate": [
    ["benchmarks/gate.py", "--work_dir", "{work}/ablation", "--preset", "bench", "--jobs", "2"],
  ],
  "ablation": [
    [
      "benchmarks/ablation.py",
      "--work_dir",
      "{work}/ablation",
      "--preset",
      "bench",
      "--seeds",
      "0",
      "1",
      "2",
      "--jobs",
      "2",
      "--output",
      "docs/results.md",
    ]
  ],
}
# Benchmarks whose results go to docs/results.md (written by the ablation), not to DOC.
REPORT_ELSEWHERE = ("gate", "ablation")


def replace_block(text: str, name: str, body: str, source: str = "docs/benchmarks.md") -> str:
  """``text`` with the block of ``name`` holding ``body``; the markers must exist exactly once."""
  begin, end = f"<!-- run_all: {name} -->", f"<!-- end run_all: {name} -->"
  pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
  found = len(pattern.findall(text))
  if found != 1:
    raise ValueError(f"{source}: expected one block '{begin}' ... '{end}', found {found}")
  return pattern.sub(lambda _: f"{begin}\n{body.rstrip()}\n{end}", text)


def markdown(output: str) -> str:
  """A script's printout with a blank line before each table, which Markdown needs to render it."""
  lines = []
  for line in output.strip().splitlines():
    if line.startswith("|") and lines and lines[-1] and not lines[-1].startswith("|"):
      lines.append("")
    lines.append(line)
  return "\n".join(lines)


def machine() -> str:
  import tensorflow as tf

  return (
    f"{platform.machine()}, {os.cpu_count()} cores, "
    f"Python {platform.python_version()}, TF {tf.__version__}"
  )


def prepare_tiny_data(work: pathlib.Path) -> pathlib.Path:
  from wild3d_tf import shards
  from wild3d_tf.synthetic.generate import conversion_commands

  native, records = work / "tiny", work / "tiny_tfrecords"
  if not shards.is_current(str(records), "lspet"):  # the last one converted; another version: again
    subprocess.run(
      [sys.executable, "-m", "wild3d_tf.synthetic", f"--out={native}", "--preset=tiny"], check=True
    )
    for command in conversion_commands(native, records).values():
      subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
  return records


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run just these")
  parser.add_argument(
    "--skip", nargs="+", choices=sorted(BENCHMARKS), default=[], help="leave these out"
  )
  parser.add_argument("--work_dir", help="scratch folder (default: a temporary one)")
  args = parser.parse_args()
  names = [n for n in (args.only or BENCHMARKS) if n not in args.skip]
  work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="wild3d_bench_")).resolve()
  text = DOC.read_text()
  for name in names:  # fail before hours of measuring, not after
    if name not in REPORT_ELSEWHERE:
      replace_block(text, name, "")
  stamp = f"{datetime.date.today().isoformat()}, {machine()}"
  for name in names:
    outputs = []
    for command in BENCHMARKS[name]:
      filled = [
        part.format(data=prepare_tiny_data(work) if part == "{data}" else "", work=work)
        for part in command
      ]
      shown = "python " + " ".join(filled)
      print(f"$ {shown}", flush=True)
      run = subprocess.run([sys.executable, *filled], cwd=ROOT, stdout=subprocess.PIPE, text=True)
      if run.returncode:
        raise SystemExit(f"{name}: `{shown}` failed with exit code {run.returncode}")
      outputs.append(
        f"Command: `{shown}` ({stamp}; written by `python benchmarks/run_all.py`)\n\n"
        f"{markdown(run.stdout)}\n"
      )
      print(run.stdout, flush=True)
    if name not in REPORT_ELSEWHERE:
      text = replace_block(DOC.read_text(), name, "\n".join(outputs))
      DOC.write_text(text)
  print(
    f"refreshed {', '.join(n for n in names if n not in REPORT_ELSEWHERE)} in {DOC}; "
    f"scratch in {work}"
  )


if __name__ == "__main__":
  main()
