"""Training images/s of the full network on one GPU with mixed precision and XLA, with and
without the input pipeline attached: does the GPU wait for its inputs?

Rows, all in one process on the same network (``--network full``: the paper's widths at
256 px), mixed_float16, the training step compiled with XLA (``LoopConfig.jit_compile``):

1. network alone (baseline): the same two batches, finished beforehand and kept in GPU
   memory, stepped over and over: what the GPU does when it never waits.
2. + augmentation in the step: the same batches staged (``data.stage_example``'s: decoded
   crops, matrices, draws) in GPU memory, ``data.finish_batch`` running inside the step.
3. + the real tf.data pipeline, augmentation in the step (``DataConfig.augment_in_step``,
   train.py's default): staged batches read, decoded and staged by the CPU as training reads
   them. Its ratio to row 1 is the answer: near 1, the GPU never waits.
4. + the real tf.data pipeline, augmentation on the CPU (``--noaugment_in_step``).

Without a GPU it prints one line saying so and exits with status 1: there is nothing to
measure. Converted data is needed for the batches (``--data_dir``; any conversion with the
stage's datasets, e.g. the synthetic ``tiny`` one: the images' content does not change the
cost).

  python benchmarks/gpu_train_speed.py --data_dir TFRECORDS [--batch_size 64] [--seconds 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

NO_GPU = (
  "gpu_train_speed: no GPU visible to TensorFlow; nothing measured (this benchmark needs one)"
)


def _steps_per_second(loop, batches, seconds):
  """Steps/s of ``loop.step`` over ``batches`` (a list, cycled, or an iterator), each step
  waited for (``.numpy()``, as ``Loop.run`` does); the first, compiling, step is not timed."""
  next_batch = (lambda i: batches[i % len(batches)]) if isinstance(batches, list) else None
  if next_batch is None:
    iterator = batches
    next_batch = lambda i: next(iterator)  # noqa: E731
  loop.step(next_batch(0)).numpy()
  steps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    loop.step(next_batch(steps)).numpy()
    steps += 1
  return steps / (time.perf_counter() - start)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True, help="converted TFRecords")
  parser.add_argument("--batch_size", type=int, default=64, help="global batch per step")
  parser.add_argument("--seconds", type=float, default=20.0, help="per row")
  parser.add_argument("--network", default="full", choices=["full", "tiny"])
  parser.add_argument("--input_size", type=int, default=256)
  args = parser.parse_args(argv)

  import tensorflow as tf

  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    sys.exit(NO_GPU)

  import keras

  from wild3d_tf import data, model
  from wild3d_tf.config import DataConfig, LoopConfig, ModelConfig
  from wild3d_tf.losses import LossWeights
  from wild3d_tf.trainer import Loop, Trainer, make_optimizer

  keras.config.set_dtype_policy("mixed_float16")
  model_config = ModelConfig.for_variant(args.network, args.input_size)
  size, heatmap_size = model_config.input_size, model_config.heatmap_size

  def loop_for(in_step, tmp):
    keras.utils.set_random_seed(0)
    config = DataConfig(
      data_dir=args.data_dir,
      batch_size=args.batch_size,
      shuffle_buffer=256,
      augment_in_step=in_step,
    )
    dataset = data.training_dataset(config, "full", input_size=size, heatmap_size=heatmap_size)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    trainer = Trainer(model.build_model(model_config), LossWeights(), args.batch_size, size)
    trainer.compile(optimizer=make_optimizer(0.05, 1000, 0.5, step, True))
    loop_config = LoopConfig(tmp, 0, jit_compile=True)
    return Loop(tf.distribute.get_strategy(), trainer, dataset, loop_config, step)

  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    loop = loop_for(True, f"{tmp}/memory")
    staged = [next(loop.iterator) for _ in range(2)]  # a 3D batch and a 2D-only one
    with tf.device("/GPU:0"):
      staged = [tf.nest.map_structure(tf.identity, b) for b in staged]
      finish = tf.function(lambda b: data.finish_batch(b, size, heatmap_size), jit_compile=True)
      finished = [finish(b) for b in staged]
    rows.append(("network alone: finished batches in GPU memory (baseline)", finished, loop))
    rows.append(("+ augmentation in the step: staged batches in GPU memory", staged, loop))
    rows.append(("+ tf.data pipeline, augmentation in the step", loop.iterator, loop))
    pipeline_cpu = loop_for(False, f"{tmp}/cpu")
    rows.append(
      ("+ tf.data pipeline, augmentation on the CPU", pipeline_cpu.iterator, pipeline_cpu)
    )
    rates = [
      (name, _steps_per_second(loop_, batches, args.seconds)) for name, batches, loop_ in rows
    ]
  base = rates[0][1]
  print(
    f"{gpus[0].name} ({tf.config.experimental.get_device_details(gpus[0]).get('device_name')}), "
    f"{args.network} network, {size} px, batch {args.batch_size}, mixed_float16, XLA"
  )
  print()
  print("| training step | steps/s | images/s | ratio to the network alone |")
  print("|---|---|---|---|")
  for name, steps in rates:
    print(f"| {name} | {steps:.2f} | {steps * args.batch_size:.0f} | {steps / base:.2f} |")


if __name__ == "__main__":
  main()
