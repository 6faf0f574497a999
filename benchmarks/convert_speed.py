"""Records/s of the Beam converter with 1 and 2 DirectRunner worker processes.

Baseline in the same process: the same conversion with the in-memory runner
(one thread, no process start), so the ratios show what multi-processing buys
on this machine.

  python benchmarks/convert_speed.py [--preset small] [--dataset h36m]
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

from beam_preprocess import convert
from wild3d_tf.synthetic import generate

FOLDERS = {"mpi_inf_3dhp_test": "mpi_inf_3dhp_test_set"}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="small")
  parser.add_argument("--dataset", default="h36m")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    source = pathlib.Path(tmp) / "native"
    writer = {"lspet": "lsp", "mpi_inf_3dhp_test": "mpi_inf_3dhp_test_set"}.get(
      args.dataset, args.dataset
    )
    generate.generate(str(source), args.preset, 0, datasets=[writer])
    modes = [
      ("in_memory (baseline)", ["--direct_running_mode=in_memory"]),
      (
        "multi_processing, 1 worker",
        ["--direct_running_mode=multi_processing", "--direct_num_workers=1"],
      ),
      (
        "multi_processing, 2 workers",
        ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
      ),
    ]
    rows = []
    for name, extra in modes:
      out = pathlib.Path(tmp) / name.split()[0]
      start = time.perf_counter()
      manifest = convert.run(
        [
          "convert",
          f"--dataset={args.dataset}",
          f"--input_dir={source / FOLDERS.get(args.dataset, args.dataset)}",
          f"--output_dir={out}",
          "--runner=DirectRunner",
          *extra,
        ]
      )
      seconds = time.perf_counter() - start
      records = sum(s["records"] for s in manifest["splits"].values())
      rows.append((name, records, seconds))
  base = rows[0][1] / rows[0][2]
  print(f"dataset {args.dataset}, preset {args.preset}")
  print("| mode | records | seconds | records/s | ratio to in_memory |")
  print("|---|---|---|---|---|")
  for name, records, seconds in rows:
    print(
      f"| {name} | {records} | {seconds:.1f} | {records / seconds:.1f} "
      f"| {records / seconds / base:.2f} |"
    )


if __name__ == "__main__":
  main()
