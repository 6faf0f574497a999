"""The input pipeline's CPU part per core, the cost augmentation adds to a training step, and
tiny training end to end, each against a baseline measured in the same process.

Augmentation's image work (new backgrounds, colour jitter, the warp, the flip, heatmap targets:
``data.finish_batch``) runs inside the training step (``DataConfig.augment_in_step``); the CPU
keeps parse, decode and the per-example draws (``data.decode_example``) and the matrices and
labels, computed once per batch (``data.stage_batch``). Rows:

1. examples/s of that CPU part on one core (``threading.private_threadpool_size = 1``, as
   benchmarks/train_speed.py measures per core), batched as training batches them, at 256 px;
   the baseline is JPEG decoding of the same stored crops alone. Also the same staging one
   example at a time (``data.stage_example``, the path before ``stage_batch``) and the whole
   example on the CPU (``data.prepare``: ``stage_example`` then ``finish_example``, evaluation's
   path), for scale.
2. a training step on a staged batch (the moved work included) against the same step on the
   same batch finished beforehand: the ratio is what the moved work adds to a step here.
3. tiny training end to end (``configs/tiny_full.cfg``'s network, input and batch; the real
   tf.data stream, default threads), augmentation in the step against augmentation in the
   pipeline.

  python benchmarks/input_speed.py --data_dir TFRECORDS [--seconds 10] [--variants tiny full]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import keras
import tensorflow as tf

# The rate loop and the one-core option of benchmarks/train_speed.py (a script beside this one).
from train_speed import one_core, rate

from wild3d_tf import data, model, preprocess, schema
from wild3d_tf.config import DataConfig, LoopConfig, ModelConfig
from wild3d_tf.losses import LossWeights
from wild3d_tf.trainer import Loop, Trainer, make_optimizer

STORED_SIDE = 320  # the converter's default crop (beam_preprocess.convert --crop_size)
BATCH = 8  # configs/tiny_full.cfg's
# The networks the step rows time: (variant, input size, batch) of configs/tiny_full.cfg and
# configs/full.cfg.
STEP_SETTINGS = {"tiny": (128, 8), "full": (256, 10)}


def _files(data_dir):
  return data.shard_files(data_dir, "h36m", "train") + data.shard_files(
    data_dir, "mpi_inf_3dhp", "train"
  )


def cpu_rates(data_dir, size, seconds):
  """Per-core examples/s: (decode alone, the staged CPU part as training runs it, the same
  staged one example at a time, the whole example as before)."""
  config = DataConfig(data_dir=data_dir, shuffle_buffer=64)
  records = tf.data.TFRecordDataset(_files(data_dir)).repeat()
  decode = records.map(lambda s: tf.io.decode_jpeg(schema.parse(s)[schema.IMAGE_CROP_JPEG]))
  numbered = tf.data.Dataset.zip((records, tf.data.Dataset.random(seed=0)))
  per_batch = (
    numbered.map(
      lambda s, seed: data.decode_example(
        schema.parse(s), seed, config, True, stored_side=STORED_SIDE
      )
    )
    .batch(BATCH, drop_remainder=True)
    .map(lambda batch: data.stage_batch(batch, size))
  )
  per_example = numbered.map(
    lambda s, seed: data.stage_example(
      schema.parse(s), seed, config, True, size, stored_side=STORED_SIDE
    )
  ).batch(BATCH, drop_remainder=True)
  whole = data.examples(_files(data_dir), config, True, 0, input_size=size, heatmap_size=size // 16)
  return (
    rate(one_core(decode), seconds),
    rate(one_core(per_batch), seconds, BATCH),
    rate(one_core(per_example), seconds, BATCH),
    rate(one_core(whole), seconds),
  )


def _loop(model_config, config, tmp):
  keras.utils.set_random_seed(0)
  size = model_config.input_size
  dataset = data.training_dataset(
    config, "full", input_size=size, heatmap_size=model_config.heatmap_size
  )
  step = tf.Variable(0, dtype=tf.int64, trainable=False)
  trainer = Trainer(model.build_model(model_config), LossWeights(), config.batch_size, size)
  trainer.compile(optimizer=make_optimizer(0.05, 1000, 0.5, step, False))
  return Loop(tf.distribute.get_strategy(), trainer, dataset, LoopConfig(tmp, 0), step)


def _steps_per_second(loop, batches, seconds):
  loop.step(batches[0]).numpy()  # traced and compiled outside the timing
  steps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    loop.step(batches[steps % len(batches)]).numpy()
    steps += 1
  return steps / (time.perf_counter() - start)


def step_cost(data_dir, variant, seconds, tmp):
  """(steps/s on staged batches, steps/s on the same batches finished beforehand, finish_batch
  alone batches/s): the moved work's share of a step."""
  size, batch = STEP_SETTINGS[variant]
  model_config = ModelConfig.for_variant(variant, size)
  config = DataConfig(data_dir=data_dir, batch_size=batch, shuffle_buffer=64, augment_in_step=True)
  loop = _loop(model_config, config, tmp)
  staged = [next(loop.iterator) for _ in range(2)]  # a 3D batch and a 2D-only one
  heatmap_size = model_config.heatmap_size
  finish = tf.function(lambda b: data.finish_batch(b, size, heatmap_size))
  finished = [finish(b) for b in staged]
  with_work = _steps_per_second(loop, staged, seconds)
  without = _steps_per_second(loop, finished, seconds)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    finish(staged[count % 2])[preprocess.IMAGE].numpy()
    count += 1
  return with_work, without, count / (time.perf_counter() - start)


def end_to_end(data_dir, seconds, tmp):
  """Tiny training steps/s over the real stream: (augmentation in the step, in the pipeline)."""
  size, batch = STEP_SETTINGS["tiny"]
  rates = []
  for in_step in (True, False):
    config = DataConfig(
      data_dir=data_dir, batch_size=batch, shuffle_buffer=64, augment_in_step=in_step
    )
    loop = _loop(ModelConfig.tiny(size), config, f"{tmp}/{in_step}")
    loop.step(next(loop.iterator)).numpy()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      loop.step(next(loop.iterator)).numpy()
      steps += 1
    rates.append(steps / (time.perf_counter() - start))
  return rates


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True, help="converted TFRecords (h36m, 3DHP, ...)")
  parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
  parser.add_argument(
    "--variants", nargs="+", default=["tiny", "full"], choices=list(STEP_SETTINGS)
  )
  args = parser.parse_args()
  decode, staged, one_by_one, whole = cpu_rates(args.data_dir, 256, args.seconds)
  print("| CPU part of the input pipeline, one core, 256 px | examples/s | ratio to decode |")
  print("|---|---|---|")
  print(f"| JPEG decode of the stored 320 px crop (baseline) | {decode:.0f} | 1.00 |")
  print(
    "| staged example (augmentation in the step): parse, decode, mask where drawn, draws per "
    f"example; matrices and labels per batch of {BATCH} (data.stage_batch) | {staged:.0f} | "
    f"{staged / decode:.2f} |"
  )
  print(
    "| the same staged one example at a time (data.stage_example, before stage_batch) | "
    f"{one_by_one:.0f} | {one_by_one / decode:.2f} |"
  )
  print(
    "| whole example on the CPU (augmentation in the pipeline): also new background, colour, "
    f"warp, heatmaps | {whole:.0f} | {whole / decode:.2f} |"
  )
  print()
  print(
    "| model | input | batch | step on staged batches (steps/s) | step on finished batches "
    "(baseline, steps/s) | step time ratio | finish_batch alone (batches/s) |"
  )
  print("|---|---|---|---|---|---|---|")
  with tempfile.TemporaryDirectory() as tmp:
    for variant in args.variants:
      with_work, without, finish = step_cost(args.data_dir, variant, args.seconds, tmp)
      size, batch = STEP_SETTINGS[variant]
      print(
        f"| {variant} | {size} | {batch} | {with_work:.2f} | {without:.2f} | "
        f"{without / with_work:.2f} | {finish:.1f} |"
      )
    print()
    in_step, in_pipeline = end_to_end(args.data_dir, args.seconds, tmp)
    print("| tiny training end to end (128 px, batch 8, real stream) | steps/s | ratio |")
    print("|---|---|---|")
    print(f"| augmentation in the tf.data pipeline (baseline) | {in_pipeline:.2f} | 1.00 |")
    print(f"| augmentation in the training step | {in_step:.2f} | {in_step / in_pipeline:.2f} |")


if __name__ == "__main__":
  main()
