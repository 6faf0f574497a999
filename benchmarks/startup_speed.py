"""Training start-up on CPU: what a run pays before its first step, counted in steady steps.

In one process, for one stage's input pipeline and the tiny network: building
the pipeline (``data.training_dataset``, which traces its functions), drawing
its first batch, then the training step traced as ``trainer.Loop`` traces it
(without AutoGraph) and, beside it, traced with AutoGraph (how it was traced
before 2026-12-01): the trace (``get_concrete_function``), the first call
(graph optimisation) and the mean of steady steps; the AutoGraph variant runs second, on
warm caches (its trace is the comparison's weak side). Every figure is given in
seconds and as a multiple of the steady step of the same process (the
baseline), so the ratios survive a noisy machine. Tests and the demo start
dozens of runs: this is most of their time.

  python benchmarks/startup_speed.py --data_dir TFRECORDS [--stage full] [--input_size 64]
      [--steps 10]
"""

from __future__ import annotations

import argparse
import time

import keras
import tensorflow as tf

from wild3d_tf import data, model
from wild3d_tf.config import DataConfig, ModelConfig
from wild3d_tf.losses import LossWeights
from wild3d_tf.trainer import Trainer, make_optimizer


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def step_costs(size: int, batches: list, autograph: bool) -> dict:
  """Seconds to trace the step, to run its first call, and per steady step."""
  keras.utils.set_random_seed(0)
  trainer = Trainer(model.build_model(ModelConfig.tiny(size)), LossWeights(), 8, size)
  trainer.compile(optimizer=make_optimizer(0.05, 1000, 0.5, tf.Variable(0, dtype=tf.int64), False))
  trainer.optimizer.build(trainer.network.trainable_variables)
  step = tf.function(trainer.train_step, autograph=autograph)
  _, trace = timed(lambda: step.get_concrete_function(batches[0]))
  _, first = timed(lambda: bool(step(batches[0])))
  _, steady = timed(lambda: [bool(step(b)) for b in batches[1:]])
  return {"trace": trace, "first call": first, "steady": steady / (len(batches) - 1)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True, help="converted TFRecords (all datasets)")
  parser.add_argument("--stage", default="full", choices=["pretrain2d", "full", "full3d"])
  parser.add_argument("--input_size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10, help="steady steps timed after the first")
  args = parser.parse_args()
  if args.steps < 1:
    parser.error(f"--steps {args.steps}: at least 1 steady step is needed as the baseline")
  size = args.input_size
  config = DataConfig(data_dir=args.data_dir, batch_size=8, shuffle_buffer=32)
  try:
    pipeline, build = timed(
      lambda: data.training_dataset(
        config, args.stage, input_size=size, heatmap_size=ModelConfig.tiny(size).heatmap_size
      )
    )
  except FileNotFoundError as e:  # names the folder and the datasets it lacks
    raise SystemExit(str(e)) from None
  iterator = iter(pipeline)
  first, first_batch = timed(lambda: next(iterator))
  batches = [first, *(next(iterator) for _ in range(args.steps))]
  costs = {autograph: step_costs(size, batches, autograph) for autograph in (False, True)}
  steady = costs[False]["steady"]
  rows = [
    ("input pipeline: build (traces its functions)", build),
    ("input pipeline: first batch", first_batch),
    *((f"step without AutoGraph (Loop's): {k}", v) for k, v in costs[False].items()),
    *((f"step with AutoGraph (before): {k}", v) for k, v in costs[True].items()),
  ]
  print(
    f"stage {args.stage}, tiny network at {size} px, batch 8, augmentation in the step, "
    f"TF {tf.__version__}; baseline: the steady step without AutoGraph ({steady * 1e3:.0f} ms)\n"
  )
  print("| what | seconds | in steady steps |\n|---|---|---|")
  for name, seconds in rows:
    print(f"| {name} | {seconds:.2f} | {seconds / steady:.0f} |")


if __name__ == "__main__":
  main()
