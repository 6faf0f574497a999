"""How much of a model's 3DHP test score depends on its batch-norm statistics.

Variants trained on alternating studio 3D and in-the-wild 2D batches keep
moving means and variances averaged over both domains. This re-estimates
them from the studio 3D training batches alone (forward passes in training
mode, no weight update) and evaluates the 3DHP-format test set before and
after, per scene, under the scaled protocol.

  python benchmarks/bn_statistics.py --checkpoint RUN --data_dir TFRECORDS [--batches 400]
"""

from __future__ import annotations

import argparse
import dataclasses

import tensorflow as tf

from wild3d_tf import data, evaluate, inference
from wild3d_tf.config import load


def scene_pck(network, data_dir: str) -> dict:
  predictor = inference.Predictor(network)
  predict = tf.function(lambda crops: predictor.on_crops(crops)["pose3d_crop"])
  batches = evaluate.test_batches(data_dir, "mpi_inf_3dhp_test", predictor.input_size, 32)
  arrays = evaluate.collect(batches, lambda batch: predict(tf.cast(batch["image"], tf.float32)))
  report = evaluate.report_for("mpi_inf_3dhp_test", arrays)
  return {scene: report.summary("scaled", mask)["pck"] for scene, mask in report.subsets.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--data_dir", required=True)
  parser.add_argument(
    "--batches", type=int, default=400, help="studio 3D training batches of 8 to re-estimate from"
  )
  parser.add_argument("--seed", type=int, default=5)
  args = parser.parse_args()
  network = inference.load_network(args.checkpoint)
  before = scene_pck(network, args.data_dir)
  # The run's own input pipeline (crop size, augmentation, 3D datasets) from its config.json.
  run = load(args.checkpoint)
  config = dataclasses.replace(run.data, data_dir=args.data_dir, batch_size=8, seed=args.seed)
  # Training mode updates the moving statistics (momentum 0.99: 400 batches forget the old ones).
  for batch in (
    data.mixed_examples(
      config, config.datasets_3d, args.seed, input_size=run.model.input_size, heatmap_size=None
    )
    .batch(8)
    .take(args.batches)
  ):
    network(tf.cast(batch["image"], tf.float32), training=True)
  after = scene_pck(network, args.data_dir)
  print(
    f"{args.checkpoint}: scaled 3D PCK per scene, as trained -> batch-norm statistics "
    f"re-estimated on {args.batches} studio 3D batches"
  )
  print("| scene | as trained | re-estimated |\n|---|---|---|")
  for scene in before:
    print(f"| {scene} | {before[scene]:.1f} | {after[scene]:.1f} |")


if __name__ == "__main__":
  main()
