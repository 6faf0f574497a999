"""Input pipeline examples/s (with and without the geometric warp) and training steps/s on CPU.

Baselines in the same process: JPEG decoding alone for the pipeline, and a
forward pass for the training step, so the ratios survive noisy machines.

  python benchmarks/train_speed.py --data_dir TFRECORDS [--seconds 10]
"""

from __future__ import annotations

import argparse
import time

import keras
import tensorflow as tf

from wild3d_tf import data, model, preprocess, schema
from wild3d_tf.config import DataConfig, LoopConfig, ModelConfig
from wild3d_tf.losses import LossWeights
from wild3d_tf.trainer import Loop, Trainer, make_optimizer


def rate(dataset, seconds, per_element=1):
  """Elements (times ``per_element``) per second drawn from ``dataset`` for ``seconds``."""
  iterator = iter(dataset)
  next(iterator)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(iterator)
    count += 1
  return count * per_element / (time.perf_counter() - start)


def one_core(dataset):
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  return dataset.with_options(options)


def pipeline_rates(data_dir, size, seconds):
  """Per-core examples/s: JPEG decode alone, the warp alone, and the whole example pipeline."""
  config = DataConfig(data_dir=data_dir, shuffle_buffer=64)
  files = data.shard_files(data_dir, "h36m", "train") + data.shard_files(
    data_dir, "mpi_inf_3dhp", "train"
  )
  decoded = tf.data.TFRecordDataset(files).map(
    lambda s: tf.io.decode_jpeg(schema.parse(s)[schema.IMAGE_CROP_JPEG])
  )
  decode = one_core(decoded.repeat())
  images = list(decoded.take(8))
  matrix = tf.constant([[0.8, 0.1, 5.0], [-0.1, 0.8, 7.0], [0.0, 0.0, 1.0]], tf.float64)
  warp = one_core(
    tf.data.Dataset.from_tensor_slices(tf.stack(images))
    .repeat()
    .map(lambda image: preprocess.warp(tf.cast(image, tf.float32), matrix, size))
  )
  full = one_core(
    data.examples(
      files, config, True, 0, input_size=size, heatmap_size=ModelConfig.full(size).heatmap_size
    )
  )
  return rate(decode, seconds), rate(warp, seconds), rate(full, seconds)


def train_rate(data_dir, model_config: ModelConfig, batch, seconds, tmp):
  keras.utils.set_random_seed(0)
  size = model_config.input_size
  config = DataConfig(data_dir=data_dir, batch_size=batch, shuffle_buffer=64)
  dataset = data.training_dataset(
    config, "full", input_size=size, heatmap_size=model_config.heatmap_size
  )
  step = tf.Variable(0, dtype=tf.int64, trainable=False)
  network = model.build_model(model_config)
  trainer = Trainer(network, LossWeights(), batch, size)
  trainer.compile(optimizer=make_optimizer(0.05, 1000, 0.5, step, False))
  loop = Loop(tf.distribute.get_strategy(), trainer, dataset, LoopConfig(tmp, 0), step)
  batches = list(dataset.take(2))
  loop.step(batches[0])
  forward = tf.function(lambda x: network(x, training=False))
  # The training stream's batches are staged (augmentation runs in the step): the forward
  # baseline reads their finished images.
  images = [trainer.finish(b)[preprocess.IMAGE] for b in batches]
  forward(images[0])
  steps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    loop.step(batches[steps % 2])
    steps += 1
  step_rate = steps / (time.perf_counter() - start)
  forwards, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    forward(images[forwards % 2])
    forwards += 1
  return step_rate, forwards / (time.perf_counter() - start)


def main():
  import tempfile

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--seconds", type=float, default=10.0)
  args = parser.parse_args()
  decode, warp, full = pipeline_rates(args.data_dir, 256, args.seconds)
  print("| input pipeline, one core | examples/s | ratio to decode |")
  print("|---|---|---|")
  print(f"| JPEG decode of the stored 320 px crop (baseline) | {decode:.0f} | 1.00 |")
  print(
    f"| geometric warp to 256 px alone (ImageProjectiveTransformV3) | {warp:.0f} | "
    f"{warp / decode:.2f} |"
  )
  print(
    f"| whole example: parse, decode, colour, warp, labels, heatmaps | {full:.0f} | "
    f"{full / decode:.2f} |"
  )
  print()
  print("| model | input | batch | train steps/s | forward batches/s (baseline) | step / forward |")
  print("|---|---|---|---|---|---|")
  with tempfile.TemporaryDirectory() as tmp:
    # The batches of configs/tiny_full.cfg and configs/full.cfg.
    for model_config, batch in ((ModelConfig.tiny(), 8), (ModelConfig.full(), 10)):
      steps, forwards = train_rate(args.data_dir, model_config, batch, args.seconds, tmp)
      variant, size = model_config.variant, model_config.input_size
      print(
        f"| {variant} | {size} | {batch} | {steps:.2f} | {forwards:.2f} | {steps / forwards:.2f} |"
      )


if __name__ == "__main__":
  main()
