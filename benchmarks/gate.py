"""The gate before any ablation: can the synthetic world show 2D data carrying over to the wild?

The paper's mechanism needs a test domain that 3D studio data cannot reach and
2D in-the-wild data can. This checks that the synthetic world has one: two
2D-only networks (stage ``pretrain2d`` of the configured recipe) differ only in
their training data, studio 2D labels (H3.6M and MPI-INF-3DHP training sets)
or in-the-wild 2D labels (MPII, LSP, LSPET: the ablation's own pre-training of
seed 0, which the ablation then reuses), and are scored by 2D PCK (visible
joints within 10 % of the crop side) on the test columns of
``benchmarks/ablation.py``. The gate passes when the wild-trained network
reaches ``RULE["wild_at_least"]`` on the main wild column and the
studio-trained one stays ``RULE["gap_at_least"]`` points below it there. If
it fails, change the world or the budget, never the test set.

  python benchmarks/gate.py --work_dir /tmp/ablation --preset bench --steps 5000 --jobs 2

Writes ``gate.json`` in the work folder (``ablation.py`` reports it), prints
the table, and exits 1 when the gate fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys

from wild3d_tf.synthetic.presets import PRESETS


def _ablation():
  """``benchmarks/ablation.py`` (a script, not a package module)."""
  path = pathlib.Path(__file__).resolve().parent / "ablation.py"
  spec = importlib.util.spec_from_file_location("ablation", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


ablation = _ablation()
RULE = {"wild_at_least": 70.0, "gap_at_least": 15.0}
STUDIO_2D = ("h36m", "mpi_inf_3dhp")


def verdict(networks: dict) -> bool:
  """``networks``: {"studio 2D": {column: pck}, "wild 2D": {...}} -> the gate's pass/fail."""
  wild = networks["wild 2D"][ablation.MAIN_WILD]
  studio = networks["studio 2D"][ablation.MAIN_WILD]
  return wild >= RULE["wild_at_least"] and wild - studio >= RULE["gap_at_least"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work_dir", required=True)
  parser.add_argument("--preset", default="bench", choices=sorted(PRESETS))
  parser.add_argument("--steps", type=int, default=5000, help="2D pre-training steps of each")
  parser.add_argument("--network", choices=sorted(ablation.CONFIG_FILES), default="tiny")
  parser.add_argument(
    "--jobs", type=int, default=1, help="trainings side by side, each on its share of the CPUs"
  )
  args = parser.parse_args()
  work = pathlib.Path(args.work_dir).resolve()
  log = []
  records = ablation.prepare_data(work, args.preset, log)
  config_file = ablation.CONFIG_FILES[args.network][0]
  runs = {
    "studio 2D": (work / "runs" / "gate" / "studio2d", [f"--datasets_2d={','.join(STUDIO_2D)}"]),
    # The ablation's pre-training of seed 0, same command: the ablation skips it afterwards.
    "wild 2D": (work / "runs" / "seed0" / "pretrain2d", []),
  }

  def job(model_dir, extra):
    def train(cores):
      ablation.pretrain_stage(
        ablation.train_command(config_file, records, model_dir, 0, args.steps, *extra),
        model_dir,
        log,
        cores,
      )

    return train

  cores = ablation.Cores(args.jobs)
  try:
    trained = [cores.submit(job(*run)) for run in runs.values()]
    for future in trained:
      future.result()
  finally:
    cores.close()
  networks = {
    name: ablation.two_d_scores(model_dir, records) for name, (model_dir, _) in runs.items()
  }
  result = {
    "rule": (
      f"Pass: the network pre-trained on wild 2D reaches {RULE['wild_at_least']:.0f} % 2D PCK on "
      f"'{ablation.MAIN_WILD}' and the one pre-trained on studio 2D stays at least "
      f"{RULE['gap_at_least']:.0f} points below it ({args.steps} steps each, seed 0)."
    ),
    "threshold": RULE,
    "columns": list(ablation.COLUMNS),
    "networks": networks,
    "passed": verdict(networks),
    "command": " ".join(
      ["python benchmarks/gate.py", f"--work_dir={work}", f"--preset={args.preset}"]
      + [f"--steps={args.steps}", f"--network={args.network}", f"--jobs={args.jobs}"]
    ),
    "log": log,
  }
  (work / ablation.GATE_FILE).write_text(json.dumps(result, indent=1) + "\n")
  print(ablation.gate_text(result), flush=True)
  sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
  main()
