"""Trains wild3d: ``python -m wild3d_tf.train --flagfile configs/<name>.cfg [--flag=value ...]``.

Stage ``pretrain2d`` trains the 2D heatmaps on the --datasets_2d (MPII, LSP, LSPET)
with intermediate supervision and needs no 3D dataset; stage ``full`` alternates 3D
batches of the --datasets_3d (H3.6M, MPI-INF-3DHP) and 2D-only batches under every loss
of the paper (step by step, or both in every step: --batch_composition). A flagfile
sets defaults, the command line overrides them.
``run_config_from_flags`` turns the flags into one ``config.RunConfig``, written to
--model_dir/config.json, which evaluation, export and prediction read back. Training
resumes automatically from the newest complete checkpoint in --model_dir, which one
training at a time may use (``checkpoints``: its training.lock); SIGTERM or Ctrl-C saves and
exits with status 143 or 130 (``EXIT_STATUS_STOPPED``).
TensorBoard logs go to --model_dir/train. ``--verbosity=1`` shows TensorFlow's start-up
log lines (``wild3d_tf.cli``).
"""

from __future__ import annotations

from wild3d_tf import cli  # first: quiets TensorFlow's start-up before it is imported

# isort: split

import dataclasses
import itertools
import json
import sys
import types

from absl import flags, logging
import keras
import numpy as np
import tensorflow as tf

from wild3d_tf import checkpoints, config, data, metrics, model, preprocess, storage, visualize
from wild3d_tf.config import DataConfig, LoopConfig, ModelConfig, OptimizerConfig, RunConfig
from wild3d_tf.losses import LossWeights
from wild3d_tf.trainer import CALIBRATION_FILE, GRADIENT_GROUPS, Loop, Trainer, make_optimizer

FLAGS = flags.FLAGS
_DATA, _LOOP, _OPT = DataConfig("."), LoopConfig(".", 0), OptimizerConfig()  # flag defaults


FLAGS_FILE = "flags.txt"  # in the model_dir: the command line's flags, as absl writes a flagfile

# Exit status of a run stopped by a signal after saving (128 + the signal number, the shell's
# convention): distinct from success (0), errors (1) and usage errors.
EXIT_STATUS_STOPPED = {"SIGTERM": 128 + 15, "SIGINT": 128 + 2}


def _known_datasets(names: list[str], allowed: tuple) -> bool:
  return bool(names) and all(name in allowed for name in names) and len(set(names)) == len(names)


def define_flags():
  """Defines train's flags; called when run as a program (importing train defines none, so
  other entry points and tests can share one process with it)."""
  flags.DEFINE_string("data_dir", None, "The converter's output folder (shards and manifests).")
  flags.DEFINE_string(
    "model_dir", None, "Checkpoints, TensorBoard logs and config.json of this run."
  )
  flags.DEFINE_enum("stage", "full", list(config.STAGES), "Training stage.")
  flags.DEFINE_integer("max_steps", 1000, "Stop after this many global steps (batches).")
  flags.DEFINE_integer("checkpoint_every", 500, "Save a checkpoint every this many steps.")
  flags.DEFINE_integer(
    "keep_checkpoints", _LOOP.keep_checkpoints, "Keep this many newest checkpoints (older deleted)."
  )
  flags.DEFINE_integer(
    "log_every", 10, "Progress line and TensorBoard scalars every this many steps."
  )
  flags.DEFINE_enum(
    "variant", "full", list(config.VARIANTS), "Model widths (tiny: the CPU variant)."
  )
  flags.DEFINE_integer(
    "input_size", 256, "Input crop side in pixels (a multiple of --heatmap_stride)."
  )
  flags.DEFINE_integer(
    "heatmap_stride",
    ModelConfig().stride,
    f"Input pixels per heatmap cell, one of {', '.join(map(str, config.STRIDES))}: 16 is the "
    "paper's; 8 runs conv4 and Res5a dilated instead of strided (16x16 heatmaps at 128 px).",
  )
  flags.DEFINE_bool(
    "tie_camera_scales",
    ModelConfig().tie_camera_scales,
    "One weak-perspective scale for both image axes (ax = ay); off: the paper's (cx, cy, ax, ay).",
  )
  flags.DEFINE_integer("batch_size", _DATA.batch_size, "Global batch size.")
  flags.DEFINE_list(
    "datasets_2d",
    list(config.DATASETS_2D),
    "2D (in-the-wild) training datasets, a comma list of "
    f"{', '.join(config.DATASETS_2D_ALLOWED)} (3D sets give their 2D labels).",
  )
  flags.DEFINE_list(
    "datasets_3d",
    list(config.DATASETS_3D),
    f"3D (studio) training datasets, a comma list of {', '.join(config.DATASETS_3D)} "
    "(stage full; --datasets_3d=h36m trains on H3.6M alone).",
  )
  flags.DEFINE_integer(
    "shuffle_buffer", _DATA.shuffle_buffer, "Records in each dataset's shuffle buffer."
  )
  flags.DEFINE_float(
    "scale_range", _DATA.scale_range, "Augmentation: crop scale factor in 1 +- this."
  )
  flags.DEFINE_float(
    "rotation_degrees", _DATA.rotation_degrees, "Augmentation: in-plane rotation up to +- this."
  )
  flags.DEFINE_float(
    "shift", _DATA.shift, "Augmentation: crop shift up to +- this fraction of the box side."
  )
  flags.DEFINE_bool("flip", _DATA.flip, "Augmentation: horizontal flip (left/right swapped).")
  flags.DEFINE_bool("color", _DATA.color, "Augmentation: brightness, contrast, saturation jitter.")
  flags.DEFINE_float(
    "background_probability",
    _DATA.background_probability,
    "Augmentation: chance of a random background where the record has a foreground mask.",
  )
  flags.DEFINE_bool(
    "augment_in_step",
    _DATA.augment_in_step,
    "Warp, colour jitter, new backgrounds and heatmap targets run batched inside the training "
    "step (--augment_in_step) or per example in the tf.data pipeline (--noaugment_in_step); "
    "unset: in the step when TensorFlow sees a GPU or TPU, else in the pipeline. The same "
    "batches either way, but for float rounding.",
  )
  flags.DEFINE_enum(
    "optimizer",
    _OPT.optimizer,
    list(config.OPTIMIZERS),
    "adadelta (rho 0.9, epsilon 1e-6: the paper's) or adam (Keras' betas; a deviation for small "
    "CPU budgets, where it learns faster in few steps: give it a smaller --learning_rate).",
  )
  flags.DEFINE_float("learning_rate", _OPT.learning_rate, "Learning rate of --optimizer.")
  flags.DEFINE_integer(
    "decay_steps", _OPT.decay_steps, "Exponential decay: steps per factor of --decay_rate."
  )
  flags.DEFINE_float("decay_rate", _OPT.decay_rate, "Exponential decay factor per --decay_steps.")
  flags.DEFINE_enum(
    "mixed_precision", "none", ["none", "mixed_float16", "mixed_bfloat16"], "Keras dtype policy."
  )
  flags.DEFINE_bool("xla", False, "Compile the training step with XLA (LoopConfig.jit_compile).")
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
  flags.DEFINE_enum(
    "batch_composition",
    _DATA.batch_composition,
    list(config.BATCH_COMPOSITIONS),
    "Stage full: across_steps alternates whole 3D and 2D-only batches step by step (the "
    "paper's); within_step gives every step one batch of each kind (2 x --batch_size samples), "
    "one update, each kind's mean loss counting as across steps.",
  )
  flags.DEFINE_enum(
    "bone_length_target",
    _DATA.bone_length_target,
    list(config.BONE_LENGTH_TARGETS),
    "Target of the 2D-only bone-length loss: a random training subject's bones per sample (the "
    "paper's), the training subjects' mean skeleton, or its proportions (scale-free).",
  )
  flags.DEFINE_string(
    "init_from",
    None,
    "A model_dir (e.g. of pretrain2d) or checkpoint whose network weights start this run; it "
    "must hold every weight of this network and variant.",
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
  flags.DEFINE_integer(
    "gradient_norms_every",
    0,
    "Every this many steps (0: off), TensorBoard gradient_norm/<term> (the L2 norm over all "
    "weights of the weighted term's gradient), gradient_norm_trunk|heads/<term> (over the "
    "layers trained in stage 1 | the lifting and camera MLPs) and weighted_loss/<term>, for the "
    "active terms. Measured on the batches of steps N-1 and N (after their updates; under "
    "across_steps one of each kind) and logged at step N, each term averaged over those of the "
    "two it applies to (non-zero gradient), as --calibrate_loss_weights averages. Costs about "
    "two training steps' forward and one backward pass per active term, twice.",
  )
  flags.DEFINE_bool(
    "calibrate_loss_weights",
    False,
    "A fresh run replaces the loss weights (the paper's, or --ablation's) by weights under "
    "which every active term's weighted gradient norm equals the reference term's (pose3d; "
    "heatmap in pretrain2d), measured over --calibration_batches training batches before the "
    "first step; it writes them to config.json and the measurement to "
    "loss_calibration.json. A resumed run reads them back from config.json.",
  )
  flags.DEFINE_integer(
    "calibration_batches",
    20,
    "Training batches --calibrate_loss_weights measures on (a separate iterator over the "
    "training data: the checkpointed one is untouched). A term's norm is its mean over the "
    "batches it applies to.",
  )
  flags.DEFINE_string(
    "batch_digest_file", None, "Append one 'step sha256' line per batch here (resume checks)."
  )
  flags.DEFINE_float(
    "pretrained_lr_multiplier",
    _OPT.pretrained_lr_multiplier,
    "Learning-rate factor of the layers trained in stage 1 (the 2D pre-training: stem to Res4f, "
    "Res5a, the F3D convolution); the lifting and camera MLPs keep the full rate. The paper "
    "uses 0.01 when H3.6M is the only 3D data.",
  )
  flags.DEFINE_integer(
    "validate_every",
    0,
    "Every this many steps, MPJPE / PCK / AUC on --validation_dataset (0: off).",
  )
  flags.DEFINE_string(
    "validation_dataset", "mpi_inf_3dhp_test", "Converted dataset whose test split validates."
  )
  flags.DEFINE_integer("validation_batches", 20, "At most this many batches per validation.")
  flags.DEFINE_bool(
    "verify_shards",
    _DATA.verify_shard_digests,
    "Check every training and validation shard's SHA-256 against its manifest before training "
    "(a full read; record counts are always checked as shards are read).",
  )
  flags.DEFINE_enum(
    "input_source",
    _DATA.input_source,
    list(config.INPUT_SOURCES),
    "Read the training data from the shards (each one's record count checked as it is read) or "
    "through TFDS (tfds.builder_from_directory over --data_dir/<dataset>, written by the "
    "converter); the shards are checked against the manifests either way.",
  )
  flags.mark_flags_as_required(["data_dir", "model_dir"])

  flags.register_validator(
    "datasets_2d",
    lambda names: _known_datasets(names, config.DATASETS_2D_ALLOWED),
    f"--datasets_2d must list distinct names from {', '.join(config.DATASETS_2D_ALLOWED)}",
  )
  flags.register_validator(
    "datasets_3d",
    lambda names: _known_datasets(names, config.DATASETS_3D),
    f"--datasets_3d must list distinct names from {', '.join(config.DATASETS_3D)}",
  )


def run_config_from_flags(f=FLAGS) -> RunConfig:
  """The run's whole configuration from the flags: the one place flags become settings.

  Raises ValueError naming the setting when a value is out of range.
  """
  model_config = ModelConfig(
    variant=f.variant,
    input_size=f.input_size,
    stride=f.heatmap_stride,
    tie_camera_scales=f.tie_camera_scales,
  )
  return RunConfig(
    model=model_config,
    data=DataConfig(
      data_dir=f.data_dir,
      batch_size=f.batch_size,
      datasets_2d=tuple(f.datasets_2d),
      datasets_3d=tuple(f.datasets_3d),
      scale_range=f.scale_range,
      rotation_degrees=f.rotation_degrees,
      shift=f.shift,
      flip=f.flip,
      color=f.color,
      background_probability=f.background_probability,
      shuffle_buffer=f.shuffle_buffer,
      seed=f.seed,
      verify_shard_digests=f.verify_shards,
      input_source=f.input_source,
      bone_length_target=f.bone_length_target,
      batch_composition=f.batch_composition,
      augment_in_step=f.augment_in_step,
    ),
    loss=(
      LossWeights.pretrain2d() if f.stage == "pretrain2d" else LossWeights.for_ablation(f.ablation)
    ),
    optimizer=OptimizerConfig(
      learning_rate=f.learning_rate,
      decay_steps=f.decay_steps,
      decay_rate=f.decay_rate,
      pretrained_lr_multiplier=f.pretrained_lr_multiplier,
      mixed_precision=f.mixed_precision,
      optimizer=f.optimizer,
    ),
    loop=LoopConfig(
      model_dir=f.model_dir,
      max_steps=f.max_steps,
      checkpoint_every=f.checkpoint_every,
      log_every=f.log_every,
      max_nonfinite=f.max_nonfinite,
      keep_checkpoints=f.keep_checkpoints,
      batch_digest_file=f.batch_digest_file,
      jit_compile=f.xla,
    ),
    stage=f.stage,
    use_2d_data=f.use_2d_data,
    strategy=f.strategy,
    deterministic=f.deterministic,
    init_from=f.init_from,
    imagenet_weights=f.imagenet_weights,
    validate_every=f.validate_every,
    validation_dataset=f.validation_dataset,
    validation_batches=f.validation_batches,
    image_summaries_every=f.image_summaries_every,
    gradient_norms_every=f.gradient_norms_every,
    calibrate_loss_weights=f.calibrate_loss_weights,
    calibration_batches=f.calibration_batches,
  )


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
  def hook(step, logs, rate, wait_fraction, batch, skips):
    with writer.as_default(step=step):
      for name, value in logs.items():
        tf.summary.scalar(f"loss/{name}", value)
      for name, count in skips.items():  # steps without an update, by cause
        tf.summary.scalar(f"train/skipped_steps_{name}", count)
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
        shown = trainer.finish({key: value[:4] for key, value in batch.items()})
        tf.summary.image("skeletons", _skeleton_images(trainer.network, shown), max_outputs=4)
    writer.flush()

  return hook


def gradient_norm_hook(writer, trainer: Trainer, every: int):
  """fn(step, batch) for ``Loop(after_step=...)``: every ``every`` steps, TensorBoard scalars
  of the trainer's active terms (``Trainer.measure_terms``): ``gradient_norm/<term>``, the
  L2 norm of the weighted term's gradient over all trainable variables,
  ``gradient_norm_<group>/<term>`` over each of ``trainer.GRADIENT_GROUPS``, and
  ``weighted_loss/<term>``, w_t L_t.

  Under across_steps consecutive batches differ in kind (bone_2d has no gradient on a 3D
  batch, pose3d none on a 2D-only one), so one batch would show half the terms, and a period
  of even length always the same half. The batches of steps N-1 and N are measured (after
  their updates) and step N logs each term's mean over those of the two where its gradient
  is non-zero, as ``Trainer.calibrated_weights`` averages; a term with a gradient on
  neither logs 0 (NaN when one was not finite).
  """
  previous = {}  # {"step": ..., "measured": ...} of the last measured step

  def hook(step, batch):
    logs_now = step % every == 0
    if not logs_now and (step + 1) % every:
      return
    measured = trainer.measure_terms(batch)
    if logs_now:
      batches = [measured]
      if previous.get("step") == step - 1:
        batches.insert(0, previous["measured"])
      weights = trainer.loss_weights
      with writer.as_default(step=step):
        for name in measured:
          # NaN > 0 is False; with a gradient on neither batch the mean is 0 (or NaN).
          applied = [m[name] for m in batches if m[name].norm > 0] or [m[name] for m in batches]
          weight = getattr(weights, name)
          tf.summary.scalar(f"gradient_norm/{name}", weight * np.mean([m.norm for m in applied]))
          for group in GRADIENT_GROUPS:
            tf.summary.scalar(
              f"gradient_norm_{group}/{name}",
              weight * np.mean([m.groups[group] for m in applied]),
            )
          tf.summary.scalar(f"weighted_loss/{name}", weight * np.mean([m.loss for m in applied]))
      writer.flush()
    previous.update(step=step, measured=measured)

  return hook


def _skeleton_images(network, batch, count: int = 4) -> np.ndarray:
  """Predicted (projected) 2D skeletons in red/blue over the inputs, the supervised 2D labels
  (occluded ones too: what the losses train toward) in white."""
  images = batch[preprocess.IMAGE][:count]
  outputs = network(images, training=False)
  pictures = []
  for i in range(len(images)):
    fig = visualize.plt.figure(figsize=(2.5, 2.5))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(images[i].numpy())
    supervised = batch[preprocess.JOINTS2D_SUPERVISED][i].numpy() > 0
    ax.scatter(*batch[preprocess.JOINTS2D_INPUT_PX][i].numpy()[supervised].T, s=10, c="white")
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
  input_size = network.input_shape[1]  # the crops this network was built for
  files = data.shard_files(
    data_config.data_dir, dataset, "test", check_digests=data_config.verify_shard_digests
  )
  examples = (
    data.examples(
      files, data_config, training=False, seed=0, input_size=input_size, heatmap_size=None
    )
    .batch(data_config.batch_size)
    .take(batches)
  )
  predict = tf.function(lambda images: network(images, training=False)["pose3d"], autograph=False)

  def hook(step):
    predictions, truths = [], []
    for batch in examples:
      predictions.append(predict(batch[preprocess.IMAGE]).numpy())
      truths.append(batch[preprocess.JOINTS3D_VIRTUAL_MM].numpy())
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
      f"validation at step {step} on {dataset} ({summary['frames']} poses): "
      f"MPJPE {summary['mpjpe']:.1f} mm, "
      f"PCK {summary['pck']:.1f}, AUC {summary['auc']:.1f}",
      flush=True,
    )

  return hook


def _worker_dir(model_dir: str, task_id: int) -> str:
  """Where a non-chief worker of a multi-worker run saves (only the chief's copy is the run's)."""
  return storage.join(model_dir, f"worker_{task_id}")


def _own_dir(run_config: RunConfig) -> str:
  """The folder this process saves checkpoints to: the model_dir, or a worker's own."""
  if run_config.strategy == "multiworker":
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()  # reads TF_CONFIG
    if not _is_chief(types.SimpleNamespace(cluster_resolver=resolver)):
      return _worker_dir(run_config.loop.model_dir, resolver.task_id)
  return run_config.loop.model_dir


def run(run_config: RunConfig, flags_text: str | None = None) -> dict:
  """``_train`` holding the lock of the folder it saves to (``checkpoints.ModelDirLock``).

  Raises ``checkpoints.ModelDirInUse`` naming the model_dir and the lock, before anything
  is written there, when another training holds it.
  """
  with checkpoints.ModelDirLock(_own_dir(run_config)):
    return _train(run_config, flags_text)


def _train(run_config: RunConfig, flags_text: str | None = None) -> dict:
  """Trains as ``run_config`` says; returns ``Loop.run``'s summary (step, skipped, seconds...).

  Writes ``config.json`` (and ``flags.txt`` when ``flags_text`` is given) into
  the model_dir first, then resumes from its newest checkpoint if there is one.
  """
  rc = run_config
  keras.utils.set_random_seed(rc.data.seed)
  if rc.deterministic:
    tf.config.experimental.enable_op_determinism()
  if rc.optimizer.mixed_precision != "none":
    keras.config.set_dtype_policy(rc.optimizer.mixed_precision)
  strategy = make_strategy(rc.strategy)
  batch_size = rc.data.batch_size
  if batch_size % strategy.num_replicas_in_sync:
    raise ValueError(
      f"--batch_size {batch_size} does not split over {strategy.num_replicas_in_sync} replicas"
    )
  dataset = data.training_dataset(
    rc.data, rc.data_stage, input_size=rc.model.input_size, heatmap_size=rc.model.heatmap_size
  )
  model_dir = rc.loop.model_dir
  rc = resumed_loss_weights(rc)  # before config.json is rewritten: it holds them
  rc.save(model_dir)  # once the data is found, so a wrong --data_dir leaves no run folder
  if flags_text is not None:
    storage.write_text(storage.join(model_dir, FLAGS_FILE), flags_text)
  with strategy.scope():
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    network = model.build_model(rc.model, imagenet_weights=rc.imagenet_weights)
    if rc.init_from:
      # Every weight or an error naming the checkpoint and the mismatch: never a partial start.
      latest = checkpoints.init_network(network, rc.init_from, rc.model.variant)
      logging.info("initialised the network from %s", latest)
    # The losses divide by the batch of one kind: a within_step batch holds two of them.
    trainer = Trainer(network, rc.loss, batch_size, rc.model.input_size)
    optimizer = make_optimizer(
      rc.optimizer.learning_rate,
      rc.optimizer.decay_steps,
      rc.optimizer.decay_rate,
      global_step,
      rc.optimizer.mixed_precision == "mixed_float16",
      rc.optimizer.pretrained_lr_multiplier,
      rc.optimizer.optimizer,
    )
    trainer.compile(optimizer=optimizer)
  loop_config = rc.loop
  if rc.strategy == "multiworker" and not _is_chief(strategy):
    # Every worker takes part in saving; only the chief's copy is the run's.
    worker_dir = _worker_dir(model_dir, strategy.cluster_resolver.task_id)
    loop_config = dataclasses.replace(loop_config, model_dir=worker_dir)
  writer = tf.summary.create_file_writer(storage.join(loop_config.model_dir, "train"))
  periodic = []
  if rc.validate_every:
    hook = validation_hook(network, rc.data, rc.validation_dataset, rc.validation_batches, writer)
    periodic.append((rc.validate_every, hook))
  loop = Loop(
    strategy,
    trainer,
    dataset,
    loop_config,
    global_step,
    summary_hook(writer, trainer, optimizer, rc.image_summaries_every),
    periodic=periodic,
    after_step=(
      [gradient_norm_hook(writer, trainer, rc.gradient_norms_every)]
      if rc.gradient_norms_every
      else []
    ),
  )
  if not loop.restore() and rc.calibrate_loss_weights:
    # A fresh run: measured on a second iterator over the same dataset definition (its first
    # batches, the ones training starts with), so the checkpointed iterator stays untouched.
    # Before the first step, which traces train_step with the trainer's weights.
    calibrated, report = trainer.calibrated_weights(
      itertools.islice(iter(dataset), rc.calibration_batches)
    )
    trainer.loss_weights = calibrated
    rc = dataclasses.replace(rc, loss=calibrated)
    rc.save(model_dir)
    storage.write_text(storage.join(model_dir, CALIBRATION_FILE), json.dumps(report, indent=1))
    print(calibration_table(report), flush=True)
  return loop.run()


def resumed_loss_weights(rc: RunConfig) -> RunConfig:
  """``rc`` with the calibrated loss weights of the run it resumes.

  With ``calibrate_loss_weights`` and a checkpoint in the folder this process saves to, the
  run resumes: its weights are the ones calibrated when it began, read back from
  ``<model_dir>/config.json``, never measured again. Otherwise ``rc`` unchanged. Raises
  ValueError naming the model_dir when that run was not calibrated, or calibrated another
  set of active terms (another --ablation or --stage).
  """
  own = _own_dir(rc)
  if not (
    rc.calibrate_loss_weights
    and tf.io.gfile.isdir(own)
    and checkpoints.find_latest_complete(own) is not None
  ):
    return rc
  model_dir = rc.loop.model_dir
  previous = config.load(model_dir)
  if not previous.calibrate_loss_weights:
    raise ValueError(
      f"--calibrate_loss_weights: {model_dir} holds checkpoints of a run with uncalibrated loss "
      "weights; resume it without the flag or start a new --model_dir"
    )
  active = {name for name, w in dataclasses.asdict(rc.loss).items() if w}
  before = {name for name, w in dataclasses.asdict(previous.loss).items() if w}
  if active != before:
    raise ValueError(
      f"--calibrate_loss_weights: {model_dir} was calibrated for the terms {sorted(before)}, "
      f"this run has {sorted(active)} (another --ablation or --stage); use a new --model_dir"
    )
  return dataclasses.replace(rc, loss=previous.loss)


def calibration_table(report: dict) -> str:
  """``Trainer.calibrated_weights``' report as the lines a calibrating run prints."""
  lines = [
    f"loss weights calibrated on {report['batches']} batches (reference {report['reference']}; "
    f"saved to {CALIBRATION_FILE}):",
    f"  {'term':<22}{'batches':>8}{'grad norm':>12}{'weight':>12}{'-> weight':>12}"
    f"{'weighted':>12}{'-> weighted':>12}",
  ]
  for name, row in report["terms"].items():
    lines.append(
      f"  {name:<22}{row['batches']:>8}{row['gradient_norm']:>12.4g}{row['weight_before']:>12.4g}"
      f"{row['weight_after']:>12.4g}{row['weighted_gradient_norm_before']:>12.4g}"
      f"{row['weighted_gradient_norm_after']:>12.4g}"
    )
  return "\n".join(lines)


def main(argv):
  del argv
  try:  # bad settings and a wrong --data_dir: one line, no traceback
    run_config = run_config_from_flags(FLAGS)
    data.require_manifests(
      run_config.data.data_dir, data.stage_datasets(run_config.data, run_config.data_stage)
    )
    resumed_loss_weights(run_config)  # a calibration that cannot resume: one line, too
  except (ValueError, FileNotFoundError) as error:
    sys.exit(f"error: {error}")
  result = run(run_config, FLAGS.flags_into_string())
  if result["stopped_by"]:
    # A pre-empted run is not a finished one: job systems must see a failure and rerun it,
    # which resumes from the checkpoint just saved. 128 + the signal, as a shell reports it.
    print(
      f"stopped by {result['stopped_by']} at step {result['step']}; checkpoint saved in "
      f"{FLAGS.model_dir}: run the same command to resume",
      flush=True,
    )
    sys.exit(EXIT_STATUS_STOPPED[result["stopped_by"]])
  print(
    f"done: step {result['step']}, {result['skipped']} skipped (non-finite loss), "
    f"{result['loss_scale_skipped']} dropped by the loss scaler, {result['seconds']:.0f} s; "
    f"checkpoints in {FLAGS.model_dir}"
  )


if __name__ == "__main__":
  define_flags()
  cli.run(main)
