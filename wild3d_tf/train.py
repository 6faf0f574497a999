"""Trains wild3d: ``python -m wild3d_tf.train --flagfile configs/<name>.cfg [--flag=value ...]``.

Stage ``pretrain2d`` trains the 2D heatmaps on MPII + LSP (+ LSPET) with intermediate
supervision; stage ``full`` alternates 3D batches (H3.6M, MPI-INF-3DHP) and 2D-only
batches under every loss of the paper. A flagfile sets defaults, the command line
overrides them. Training resumes automatically from the newest checkpoint in
--model_dir; SIGTERM saves and exits. TensorBoard logs go to --model_dir/train.
"""

from __future__ import annotations

import json
import os
import pathlib

from absl import app, flags, logging
import keras
import numpy as np
import tensorflow as tf

from wild3d_tf import data, metrics, model, visualize
from wild3d_tf.config import DataConfig, LossWeights, ModelConfig
from wild3d_tf.trainer import Loop, LoopConfig, Trainer, make_optimizer

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "The converter's output folder (shards and manifests).")
flags.DEFINE_string("model_dir", None, "Checkpoints, TensorBoard logs and flags of this run.")
flags.DEFINE_enum("stage", "full", ["pretrain2d", "full"], "Training stage.")
flags.DEFINE_integer("max_steps", 1000, "Stop after this many global steps (batches).")
flags.DEFINE_integer("checkpoint_every", 500, "Save a checkpoint every this many steps.")
flags.DEFINE_integer(
  "log_every", 10, "Progress line and TensorBoard scalars every this many steps."
)
flags.DEFINE_enum("variant", "full", ["full", "tiny"], "Model widths (tiny: the CPU variant).")
flags.DEFINE_integer("input_size", 256, "Input crop side in pixels (multiple of 16).")
flags.DEFINE_integer("batch_size", 10, "Global batch size.")
flags.DEFINE_float("learning_rate", 0.05, "Adadelta learning rate.")
flags.DEFINE_integer("decay_steps", 60000, "Exponential decay: steps per factor of --decay_rate.")
flags.DEFINE_float("decay_rate", 0.1, "Exponential decay factor per --decay_steps.")
flags.DEFINE_enum(
  "mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"], "Keras dtype policy."
)
flags.DEFINE_bool("xla", False, "Compile the training step with XLA.")
flags.DEFINE_enum(
  "strategy",
  "default",
  ["default", "mirrored", "multiworker"],
  "tf.distribute strategy; multiworker reads TF_CONFIG.",
)
flags.DEFINE_enum(
  "ablation", "full", list(LossWeights.ABLATIONS), "Loss switches of paper Table 5."
)
flags.DEFINE_bool(
  "use_2d_data",
  True,
  "Stage full: alternate with 2D-only batches (off: the 'no 2D data' ablation).",
)
flags.DEFINE_string(
  "init_from", None, "A model_dir (e.g. of pretrain2d) whose latest network weights start this run."
)
flags.DEFINE_string(
  "imagenet_weights", None, "Keras' ResNet-50 ImageNet weights file (full variant only)."
)
flags.DEFINE_integer("seed", 0, "Seed of weights, data order and augmentation.")
flags.DEFINE_bool("deterministic", False, "Op determinism (tests, debugging; slower).")
flags.DEFINE_integer("max_nonfinite", 20, "Stop after this many consecutive non-finite losses.")
flags.DEFINE_integer(
  "image_summaries_every", 100, "Write skeleton images to TensorBoard every this many steps."
)
flags.DEFINE_string(
  "batch_digest_file", None, "Append one 'step sha256' line per batch here (resume checks)."
)
flags.DEFINE_float(
  "pretrained_lr_multiplier",
  1.0,
  "Learning-rate factor of the ImageNet layers (stem to Res4f); "
  "the paper uses 0.01 when H3.6M is the only 3D data.",
)
flags.DEFINE_integer(
  "validate_every", 0, "Every this many steps, MPJPE / PCK / AUC on --validation_dataset (0: off)."
)
flags.DEFINE_string(
  "validation_dataset", "mpi_inf_3dhp_test", "Converted dataset whose test split validates."
)
flags.DEFINE_integer("validation_batches", 20, "At most this many batches per validation.")
flags.mark_flags_as_required(["data_dir", "model_dir"])


def make_strategy(name: str) -> tf.distribute.Strategy:
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multiworker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


def _is_chief(strategy) -> bool:
  resolver = strategy.cluster_resolver
  return resolver.task_type in (None, "chief") or (
    resolver.task_type == "worker" and resolver.task_id == 0
  )


def summary_hook(writer, trainer: Trainer, optimizer, every_images: int):
  def hook(step, logs, rate, wait_fraction, batch):
    with writer.as_default(step=step):
      for name, value in logs.items():
        tf.summary.scalar(f"loss/{name}", value)
      tf.summary.scalar("train/steps_per_second", rate)
      tf.summary.scalar("train/input_wait_fraction", wait_fraction)
      inner = getattr(optimizer, "inner_optimizer", optimizer)
      for index, sub in enumerate(
        getattr(inner, "optimizers", [inner])
      ):  # MultiOptimizer: one per group
        tf.summary.scalar(
          f"train/learning_rate_{index}", float(keras.ops.convert_to_numpy(sub.learning_rate))
        )
      if hasattr(optimizer, "dynamic_scale"):
        tf.summary.scalar("train/loss_scale", float(optimizer.dynamic_scale.numpy()))
      if every_images and step % every_images == 0:
        tf.summary.image("skeletons", _skeleton_images(trainer.network, batch), max_outputs=4)
    writer.flush()

  return hook


def _skeleton_images(network, batch, count: int = 4) -> np.ndarray:
  """Predicted (projected) 2D skeletons in red/blue over the inputs, ground truth in white."""
  images = batch["image"][:count]
  outputs = network(images, training=False)
  pictures = []
  for i in range(len(images)):
    fig = visualize.plt.figure(figsize=(2.5, 2.5))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(images[i].numpy())
    visible = batch["joints2d_visible"][i].numpy() > 0
    ax.scatter(*batch["joints2d"][i].numpy()[visible].T, s=10, c="white")
    visualize.draw_skeleton_2d(ax, outputs["pose2d"][i].numpy())
    ax.axis("off")
    pictures.append(tf.io.decode_png(visualize.figure_to_png(fig)).numpy()[..., :3])
  return np.stack(pictures)


def validation_hook(network, data_config: DataConfig, dataset: str, batches: int, writer):
  """MPJPE, PCK and AUC (3 protocols) of the network on a test split, to TensorBoard.

  Predictions and labels are both in the crop's rotated camera; rotations keep
  distances, so the numbers equal those in the original camera. The labels are
  the true-scale joints (annot3 for 3DHP); ``wild3d_tf.evaluate`` is the tool for
  the paper's protocol on the universal skeleton.
  """
  files = data.shard_files(data_config.data_dir, dataset, "test")
  examples = (
    data.examples(files, data_config, training=False, seed=0)
    .batch(data_config.batch_size)
    .take(batches)
  )
  predict = tf.function(lambda images: network(images, training=False)["pose3d"])

  def hook(step):
    predictions, truths = [], []
    for batch in examples:
      predictions.append(predict(batch["image"]).numpy())
      truths.append(batch["joints3d"].numpy())
    prediction = np.concatenate(predictions).astype(np.float64)
    report = metrics.Report.from_poses(
      prediction - prediction[:, :1], np.concatenate(truths).astype(np.float64)
    )
    with writer.as_default(step=step):
      for protocol in metrics.PROTOCOLS:
        summary = report.summary(protocol)
        for name in ("mpjpe", "pck", "auc"):
          tf.summary.scalar(f"validation_{protocol}/{name}", summary[name])
    summary = report.summary("unscaled")
    print(
      f"validation at step {step} on {dataset} ({summary['frames']} poses): MPJPE {summary['mpjpe']:.1f} mm, "
      f"PCK {summary['pck']:.1f}, AUC {summary['auc']:.1f}",
      flush=True,
    )

  return hook


def run(flags_values=FLAGS) -> dict:
  f = flags_values
  keras.utils.set_random_seed(f.seed)
  if f.deterministic:
    tf.config.experimental.enable_op_determinism()
  if f.mixed_precision != "none":
    keras.config.set_dtype_policy(f.mixed_precision)
  os.makedirs(f.model_dir, exist_ok=True)
  pathlib.Path(f.model_dir, "flags.txt").write_text(f.flags_into_string())
  strategy = make_strategy(f.strategy)
  model_config = (
    ModelConfig.tiny(f.input_size) if f.variant == "tiny" else ModelConfig.full(f.input_size)
  )
  data_config = DataConfig(
    data_dir=f.data_dir,
    input_size=f.input_size,
    batch_size=f.batch_size,
    seed=f.seed,
    shuffle_buffer=64 if f.variant == "tiny" else 1000,
  )
  weights = (
    LossWeights.pretrain2d() if f.stage == "pretrain2d" else LossWeights.for_ablation(f.ablation)
  )
  pathlib.Path(f.model_dir, "config.json").write_text(
    json.dumps(
      {
        "model": model_config.__dict__,
        "data": data_config.__dict__,
        "loss_weights": weights.__dict__,
        "stage": f.stage,
        "variant": f.variant,
      },
      indent=1,
      default=str,
    )
  )
  if f.batch_size % strategy.num_replicas_in_sync:
    raise ValueError(
      f"--batch_size {f.batch_size} does not split over {strategy.num_replicas_in_sync} replicas"
    )
  dataset = data.training_dataset(
    data_config,
    "full"
    if f.stage == "full" and f.use_2d_data
    else ("pretrain2d" if f.stage == "pretrain2d" else "full3d"),
    f.batch_size,
  )
  with strategy.scope():
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    network = model.build_model(
      config=model_config, variant=f.variant, imagenet_weights=f.imagenet_weights
    )
    if f.init_from:
      latest = tf.train.latest_checkpoint(f.init_from)
      if latest is None:
        raise FileNotFoundError(f"--init_from {f.init_from}: no checkpoint there")
      tf.train.Checkpoint(network=network).restore(latest).expect_partial()
      logging.info("initialised the network from %s", latest)
    trainer = Trainer(network, weights, f.batch_size)
    optimizer = make_optimizer(
      f.learning_rate,
      f.decay_steps,
      f.decay_rate,
      global_step,
      f.mixed_precision == "mixed_float16",
      f.pretrained_lr_multiplier,
    )
    trainer.compile(optimizer=optimizer, jit_compile=f.xla)
  model_dir = f.model_dir
  if f.strategy == "multiworker" and not _is_chief(strategy):
    # Every worker takes part in saving; only the chief's copy is the run's.
    model_dir = os.path.join(f.model_dir, f"worker_{strategy.cluster_resolver.task_id}")
  writer = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
  loop = Loop(
    strategy,
    trainer,
    dataset,
    LoopConfig(
      model_dir,
      f.max_steps,
      f.checkpoint_every,
      f.log_every,
      f.max_nonfinite,
      batch_digest_file=f.batch_digest_file,
    ),
    global_step,
    summary_hook(writer, trainer, optimizer, f.image_summaries_every),
    periodic=[
      (
        f.validate_every,
        validation_hook(network, data_config, f.validation_dataset, f.validation_batches, writer),
      )
    ]
    if f.validate_every
    else [],
  )
  if f.xla:
    loop._step_fn = tf.function(loop._distributed_step, jit_compile=True)
  loop.restore()
  return loop.run()


def main(argv):
  del argv
  result = run()
  print(
    f"done: step {result['step']}, {result['skipped']} skipped, {result['seconds']:.0f} s; "
    f"checkpoints in {FLAGS.model_dir}"
  )


if __name__ == "__main__":
  app.run(main)
