"""Latency at batch 1 and throughput at batch 32 of the exported serving signature,
with and without XLA.

Each variant is exported with ``wild3d_tf.export``, reloaded with
``tf.saved_model.load`` (the graph TF Serving runs) and driven with 640x480
JPEGs through ``serving_default``. Baseline in the same process: the Keras
network alone on ready-made crops of the same batch, so the ratios say what
decoding, checking, cropping and the camera geometry cost, and what XLA buys.

  python benchmarks/serving_speed.py [--variant tiny|full] [--seconds 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import cv2
import keras
import numpy as np
import tensorflow as tf

from wild3d_tf import export
from wild3d_tf import model as model_lib
from wild3d_tf.config import VARIANTS, ModelConfig


def timings(fn, seconds):
  """Per-call seconds over at least ``seconds`` of calls (after two warm-up calls)."""
  fn()
  fn()
  samples, start = [], time.perf_counter()
  while time.perf_counter() - start < seconds or len(samples) < 5:
    begin = time.perf_counter()
    fn()
    samples.append(time.perf_counter() - begin)
  return np.array(samples)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--variant", choices=list(VARIANTS), default="tiny")
  parser.add_argument("--seconds", type=float, default=10.0)
  args = parser.parse_args()
  model_config = ModelConfig.for_variant(args.variant)
  size = model_config.input_size
  keras.utils.set_random_seed(0)
  network = model_lib.build_model(model_config)
  rng = np.random.default_rng(0)
  photos = [
    cv2.imencode(".jpg", (rng.random((480, 640, 3)) * 255).astype(np.uint8))[1].tobytes()
    for _ in range(32)
  ]
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    signatures = {}
    for xla in (False, True):
      path = export.export_saved_model(network, tmp, model_name=f"xla{int(xla)}", xla=xla)
      signatures[xla] = tf.saved_model.load(str(path)).signatures["serving_default"]
    raw = tf.function(lambda x: network(x, training=False)["pose3d"])
    for batch in (1, 32):
      crops = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32))
      inputs = {
        "images": tf.constant(photos[:batch]),
        "boxes": tf.zeros([batch, 4]),
        "intrinsics": tf.zeros([batch, 4]),
      }
      base = timings(lambda crops=crops: raw(crops).numpy(), args.seconds)
      rows.append((batch, "Keras network on crops (baseline)", base, base))
      for xla, signature in signatures.items():
        t = timings(lambda s=signature, i=inputs: s(**i)["pose3d"].numpy(), args.seconds)
        rows.append((batch, f"serving_default, JPEG 640x480{', XLA' if xla else ''}", t, base))
  print(f"variant {args.variant}, input {size}, TF {tf.__version__}")
  print(
    "| batch | what | p50 latency ms | p99 latency ms | images/s | ratio to baseline (images/s) |"
  )
  print("|---|---|---|---|---|---|")
  for batch, what, t, base in rows:
    rate, base_rate = batch / np.median(t), batch / np.median(base)
    print(
      f"| {batch} | {what} | {1000 * np.median(t):.1f} | {1000 * np.percentile(t, 99):.1f} | "
      f"{rate:.1f} | {rate / base_rate:.2f} |"
    )


if __name__ == "__main__":
  main()
