"""Two trainings side by side, each pinned to its share of the cores, against one on all of them.

The gate and the ablation (``--jobs``, ``ablation.Cores``) run independent trainings two at a
time on a 2-core machine because the tiny network's step does not keep two cores busy. This
measures that choice with the benchmark's own stage-1 command (configs/bench_pretrain2d.cfg,
``ablation.train_command``): the training steps per second of one run on every core (baseline),
then of ``--jobs`` runs at once, each pinned by ``ablation.Cores``. Rates are the trainings' own
logged steps/s over the second half of each run (start-up and tracing excluded).

  python benchmarks/side_by_side.py --data_dir TFRECORDS [--steps 400] [--jobs 2]
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tempfile

import numpy as np

# benchmarks/ablation.py is a script beside this one, not a package module.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import ablation  # noqa: E402

RATE = re.compile(r"^step (\d+)/\d+ .* ([0-9.]+) steps/s", re.M)


def logged_rate(log_text: str) -> float:
  """Mean of the logged steps/s over the second half of the run's steps."""
  rows = [(int(step), float(rate)) for step, rate in RATE.findall(log_text)]
  if not rows:
    raise ValueError("no 'step N/M ... steps/s' line in the training log")
  last = rows[-1][0]
  return float(np.mean([rate for step, rate in rows if step > last / 2]))


def rates(data_dir: str, steps: int, jobs: int, work: pathlib.Path) -> list[float]:
  """Steps/s of each of ``jobs`` trainings run at once (1: one run, unpinned)."""
  cores = ablation.Cores(jobs)
  logs = [work / f"jobs{jobs}_{i}.log" for i in range(jobs)]

  def job(i):
    def train(pinned):
      command = ablation.train_command(
        ablation.CONFIG_FILES["tiny"][0], data_dir, work / f"jobs{jobs}_{i}", i, steps
      )
      command[command.index(f"--checkpoint_every={max(steps // 4, 1)}")] = (
        f"--checkpoint_every={steps}"
      )
      with open(logs[i], "w") as out:
        ablation.stage(command, [], cores=pinned, output=out)

    return train

  try:
    for future in [cores.submit(job(i)) for i in range(jobs)]:
      future.result()
  finally:
    cores.close()
  return [logged_rate(log.read_text()) for log in logs]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True, help="converted bench (or tiny) data")
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--jobs", type=int, default=2)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    work = pathlib.Path(tmp)
    alone = rates(args.data_dir, args.steps, 1, work)[0]
    together = rates(args.data_dir, args.steps, args.jobs, work)
  print(f"| tiny stage-1 training ({args.steps} steps, batch 8, 128 px) | steps/s | ratio |")
  print("|---|---|---|")
  print(f"| one run on every core (baseline) | {alone:.2f} | 1.00 |")
  for i, rate in enumerate(together):
    print(f"| run {i + 1} of {args.jobs} side by side, pinned | {rate:.2f} | {rate / alone:.2f} |")
  total = sum(together)
  print(f"| all {args.jobs} side by side | {total:.2f} | {total / alone:.2f} |")


if __name__ == "__main__":
  sys.exit(main())
