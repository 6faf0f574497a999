"""Forward and forward+backward images/s of the wild3d model on this machine, plus FLOPs.

Baseline in the same process: Keras' stock ResNet-50 (no top) at the same
input size, so the ratio column survives noisy machines.

  python benchmarks/model_speed.py [--batch 8] [--seconds 10]
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
from tensorflow.python.profiler import model_analyzer, option_builder

from wild3d_tf import model as model_lib
from wild3d_tf.config import ModelConfig


def flops_per_image(model, size):
  fn = tf.function(lambda x: model(x, training=False))
  concrete = fn.get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32))
  graph = convert_variables_to_constants_v2(concrete).graph
  opts = option_builder.ProfileOptionBuilder.float_operation()
  opts["output"] = "none"
  return model_analyzer.profile(graph, options=opts).total_float_ops


def images_per_second(fn, images, seconds):
  fn(images)  # trace and warm up
  fn(images)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    fn(images)
    count += 1
  return count * len(images) / (time.perf_counter() - start)


def measure(model, size, batch, seconds):
  images = tf.constant(
    np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
  )
  forward = tf.function(lambda x: model(x, training=False))

  @tf.function
  def forward_backward(x):
    with tf.GradientTape() as tape:
      outputs = model(x, training=True)
      loss = tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32)) for v in tf.nest.flatten(outputs)])
    return tape.gradient(loss, model.trainable_variables)

  return images_per_second(forward, images, seconds), images_per_second(
    forward_backward, images, seconds
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seconds", type=float, default=10.0)
  args = parser.parse_args()
  rows = []
  for model_config in (ModelConfig.full(), ModelConfig.tiny()):
    variant, size = model_config.variant, model_config.input_size
    baseline = keras.applications.ResNet50(
      include_top=False, weights=None, input_shape=(size, size, 3)
    )
    base_fwd, base_bwd = measure(baseline, size, args.batch, args.seconds)
    model = model_lib.build_model(model_config)
    fwd, bwd = measure(model, size, args.batch, args.seconds)
    rows.append(
      (
        variant,
        size,
        model.count_params(),
        flops_per_image(model, size) / 1e9,
        flops_per_image(baseline, size) / 1e9,
        fwd,
        bwd,
        fwd / base_fwd,
        bwd / base_bwd,
      )
    )
  print(
    f"batch {args.batch}, {args.seconds:.0f} s per measurement, tf {tf.__version__}, "
    f"{tf.config.threading.get_inter_op_parallelism_threads() or 'default'} inter-op threads"
  )
  print(
    "| variant | input | parameters | GFLOPs/image | ResNet-50 GFLOPs/image | forward img/s | "
    "fwd+bwd img/s | forward / ResNet-50 | fwd+bwd / ResNet-50 |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(
      f"| {r[0]} | {r[1]} | {r[2]:,} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.1f} | {r[6]:.1f} | "
      f"{r[7]:.2f} | {r[8]:.2f} |"
    )


if __name__ == "__main__":
  main()
