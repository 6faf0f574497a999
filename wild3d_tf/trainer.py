"""The one place that joins model, losses, weights and optimizer: ``Trainer.train_step``
and the custom ``strategy.run`` loop around it.

Why a custom loop rather than ``Model.fit``: with Keras 3.15 on TF 2.21, ``fit``
fails under MultiWorkerMirroredStrategy, and a distributed iterator cannot be
checkpointed (docs/reliability.md, "Training: exact resume"). The loop keeps one plain,
checkpointed tf.data iterator of global batches on the host and gives each
replica its slice with ``experimental_distribute_values_from_function``; the
same code runs on one device, MirroredStrategy and MultiWorkerMirroredStrategy.

Steps are counted by our own ``global_step``, which advances on every batch:
``optimizer.iterations`` does not advance when the loss scaler skips an
overflowed float16 step. A step whose loss is not finite on any replica is
skipped (no update) and counted; ``max_nonfinite`` consecutive ones stop
training with an error naming the step range. A step whose loss is finite but
whose update the loss scaler drops (float16 gradients overflowed) is counted
apart; both counts are in the progress line and TensorBoard.

SIGTERM (a scheduler's pre-emption) and SIGINT (Ctrl-C) both save a checkpoint
after the current step and stop; ``run``'s result names the signal
(``stopped_by``) so the entry point can exit with a non-zero status.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import time

import keras
import tensorflow as tf

from wild3d_tf import checkpoints, losses, preprocess
from wild3d_tf.config import LoopConfig
from wild3d_tf.losses import LossWeights


class NonFiniteLossError(RuntimeError):
  pass


class Trainer(keras.Model):
  """Owns the functional network; ``train_step`` takes a per-replica batch dict.

  ``weights`` (a ``losses.LossWeights``) brings its term declaration
  (``weights.TERMS``): the loss computed, the labels read from the batch and
  the trackers logged all follow from it. ``global_batch_size`` divides the
  summed losses (``losses.total``); ``input_size`` is the crop side in pixels
  (``ModelConfig.input_size``) that normalises the projection loss.

  Loss values are reported through ``keras.metrics.Mean`` trackers (listed in
  ``metrics`` so they reset), since raw tensors returned from a replica read
  as 0.0 under MirroredStrategy.
  """

  def __init__(
    self,
    network: keras.Model,
    weights: LossWeights,
    global_batch_size: int,
    input_size: int,
    **kwargs,
  ):
    super().__init__(**kwargs)
    self.network = network
    self.loss_weights = weights
    self.global_batch_size = global_batch_size
    self.input_size = input_size
    self.label_keys, self.optional_label_keys = losses.label_keys(weights.TERMS)
    names = ("loss",) + tuple(term.name for term in weights.TERMS)
    self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

  @property
  def metrics(self):
    return list(self.trackers.values())

  def compile(self, optimizer, jit_compile=None, **kwargs):
    """Sets the optimizer. XLA is a setting of the loop that runs the step
    (``LoopConfig.jit_compile``): Keras' ``jit_compile`` only reaches
    ``fit``, which this trainer does not use, so asking for it here raises."""
    if jit_compile:
      raise ValueError(
        "Trainer.compile(jit_compile=...) has no effect on the custom loop; "
        "use LoopConfig(jit_compile=True) (train.py --xla)"
      )
    super().compile(optimizer=optimizer, jit_compile=False, **kwargs)

  def labels(self, batch: dict) -> dict:
    """The labels the loss terms read: each required key (KeyError naming it when absent)
    and the optional ones the batch has."""
    missing = [k for k in self.label_keys if k not in batch]
    if missing:
      raise KeyError(f"the training batch has no {missing}, which the loss terms read")
    return {k: batch[k] for k in self.label_keys + self.optional_label_keys if k in batch}

  def call(self, images, training=False):
    return self.network(images, training=training)

  def train_step(self, batch):
    labels = self.labels(batch)
    with tf.GradientTape() as tape:
      outputs = self.network(batch[preprocess.IMAGE], training=True)
      loss, terms = losses.total(
        outputs, labels, self.loss_weights, self.global_batch_size, self.input_size
      )
      scaled = self.optimizer.scale_loss(loss)
    variables = self.network.trainable_variables
    grads = tape.gradient(scaled, variables)
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context else 1
    bad = tf.cast(tf.logical_not(tf.math.is_finite(loss)), tf.int32)
    if context is not None:
      bad = context.all_reduce(tf.distribute.ReduceOp.SUM, bad)
    finite = tf.equal(bad, 0)

    # Pre-training leaves the lifting and camera MLPs without gradients.
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    # The LossScaleOptimizer (always used, see make_optimizer) skips the update
    # when any gradient is non-finite; a tf.cond here would wrap the optimizer's
    # cross-replica all-reduce, which tf.distribute does not allow.
    self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
    # Losses are sums over the replica's samples divided by the global batch:
    # times the replica count, the trackers' cross-replica mean is the global value.
    for name, value in (("loss", loss), *terms.items()):
      if name in self.trackers:
        self.trackers[name].update_state(
          tf.where(finite, value * replicas, 0.0), sample_weight=tf.cast(finite, tf.float32)
        )
    return finite


def is_pretrained(variable) -> bool:
  """Variables of the ImageNet part (stem to Res4f, Keras' ``conv*`` names).

  Res5a and the heads are new."""
  return variable.path.startswith("conv")


def make_optimizer(
  learning_rate: float,
  decay_steps: int,
  decay_rate: float,
  global_step: tf.Variable,
  mixed_float16: bool,
  pretrained_lr_multiplier: float = 1.0,
) -> keras.optimizers.Optimizer:
  """Adadelta (the paper's "momentum 0.9" is rho), learning rate decayed on *our* global step.

  Always wrapped in a LossScaleOptimizer, which skips updates with non-finite
  gradients on every replica alike: with dynamic scaling from 2^15 under
  mixed_float16, and in float32 with a scale of 1 that effectively never grows
  (it only halves on a skipped step, which does not change float32 updates).
  """
  schedule = keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps, decay_rate)

  def adadelta(multiplier):
    return keras.optimizers.Adadelta(
      learning_rate=lambda: multiplier * schedule(global_step), rho=0.9, epsilon=1e-6
    )

  optimizer = adadelta(1.0)
  if pretrained_lr_multiplier != 1.0:
    # Paper Sec. 4.2: pre-trained layers learn 100x slower when H3.6M is the only 3D data.
    pretrained = adadelta(pretrained_lr_multiplier)
    heads = optimizer
    optimizer = keras.optimizers.MultiOptimizer(lambda v: pretrained if is_pretrained(v) else heads)
  if mixed_float16:
    return keras.optimizers.LossScaleOptimizer(optimizer)
  return keras.optimizers.LossScaleOptimizer(
    optimizer, initial_scale=1.0, dynamic_growth_steps=2**30
  )


class Loop:
  """Runs ``Trainer.train_step`` under a strategy with checkpoints, progress and summaries."""

  def __init__(
    self,
    strategy: tf.distribute.Strategy,
    trainer: Trainer,
    dataset: tf.data.Dataset,
    config: LoopConfig,
    global_step: tf.Variable,
    summary_hook=None,
    periodic=(),
  ):
    self.strategy, self.trainer, self.config = strategy, trainer, config
    self.global_step = global_step
    self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
    self.consecutive_bad = tf.Variable(
      0, dtype=tf.int64, trainable=False, name="consecutive_nonfinite"
    )
    # Steps whose loss was finite but whose update the loss scaler dropped (float16
    # gradients overflowed at the current scale): honest counts of what did not train.
    self.loss_scale_skipped = tf.Variable(
      0, dtype=tf.int64, trainable=False, name="loss_scale_skipped_steps"
    )
    self.iterator = iter(dataset)
    optimizer = trainer.optimizer
    with strategy.scope():
      optimizer.build(trainer.network.trainable_variables)
    self.checkpoint = tf.train.Checkpoint(
      network=trainer.network,
      optimizer=optimizer,
      global_step=global_step,
      skipped=self.skipped,
      consecutive_bad=self.consecutive_bad,
      loss_scale_skipped=self.loss_scale_skipped,
      iterator=self.iterator,
    )
    self.manager = self._manager()
    self.summary_hook = summary_hook
    self.periodic = list(periodic)  # (every, fn(step)) pairs, e.g. validation
    self.history = []  # logs per log interval: {"step": ..., "loss": ..., term: ...}
    self._stop_requested = None  # the signal number that asked us to save and stop
    self._compiled_step = tf.function(self._distributed_step, jit_compile=config.jit_compile)

  def skip_counts(self) -> dict:
    """Steps without an update since the run began (checkpointed, so across resumes):
    ``nonfinite`` (the loss was not finite) and ``loss_scale`` (the loss was finite but the
    loss scaler dropped the update because scaled gradients overflowed)."""
    return {
      "nonfinite": int(self.skipped.numpy()),
      "loss_scale": int(self.loss_scale_skipped.numpy()),
    }

  def step(self, batch: dict):
    """One training step on a global batch (a dict of (global_batch, ...) tensors), compiled
    with XLA when ``LoopConfig.jit_compile``; returns a bool tensor, False when the loss was
    not finite on some replica and the update was skipped. Does not advance ``global_step``
    (``run`` does), so benchmarks may time it alone."""
    return self._compiled_step(batch)

  def _distributed_step(self, batch):
    replicas = self.strategy.num_replicas_in_sync
    per_replica = batch[preprocess.IMAGE].shape[0] // replicas

    def slice_for(context):
      start = context.replica_id_in_sync_group * per_replica
      return {k: v[start : start + per_replica] for k, v in batch.items()}

    distributed = self.strategy.experimental_distribute_values_from_function(slice_for)
    finite = self.strategy.run(self.trainer.train_step, args=(distributed,))
    return self.strategy.experimental_local_results(finite)[0]

  def _manager(self) -> tf.train.CheckpointManager:
    return tf.train.CheckpointManager(
      self.checkpoint,
      self.config.model_dir,
      max_to_keep=self.config.keep_checkpoints,
      checkpoint_name=checkpoints.CHECKPOINT_NAME,
    )

  def restore(self) -> bool:
    """Resumes from the newest complete, readable checkpoint in model_dir (see ``checkpoints``).

    Leftovers of interrupted saves are removed first; a damaged newest checkpoint is named
    in a warning and the one before it restored. Returns False when model_dir holds no
    checkpoint; raises ``checkpoints.CheckpointError`` naming the file when ckpt-* files are
    there but none can be restored, or when they hold another network.
    """
    model_dir = self.config.model_dir
    checkpoints.clean_temporaries(model_dir)
    latest = checkpoints.restore_with_fallback(self.checkpoint, model_dir)
    if latest:
      # The state file may just have been rewritten: the manager reads it only when created.
      self.manager = self._manager()
      logging.info("resumed from %s at step %d", latest, int(self.global_step.numpy()))
    return bool(latest)

  def _on_stop_signal(self, signum, frame):
    del frame
    self._stop_requested = signum

  STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def run(self) -> dict:
    """Trains to ``max_steps`` or until SIGTERM/SIGINT; returns the summary: ``step``,
    ``skipped``, ``loss_scale_skipped``, ``seconds``, ``history``, the last logged losses and
    ``stopped_by`` (the signal's name, or None when training reached ``max_steps``)."""
    previous = {s: signal.signal(s, self._on_stop_signal) for s in self.STOP_SIGNALS}
    try:
      return self._run()
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)

  def _run(self) -> dict:
    config = self.config
    start_step = int(self.global_step.numpy())
    started = time.perf_counter()
    last_log, last_log_step = started, start_step
    wait = 0.0
    logs = {}
    while int(self.global_step.numpy()) < config.max_steps:
      fetch = time.perf_counter()
      batch = next(self.iterator)
      wait += time.perf_counter() - fetch
      # The optimizer counts the updates it applies: a finite step that leaves the count
      # unchanged was dropped by the loss scaler.
      updates_before = int(self.trainer.optimizer.iterations.numpy())
      finite = bool(self.step(batch).numpy())
      step = int(self.global_step.assign_add(1).numpy())
      if finite and int(self.trainer.optimizer.iterations.numpy()) == updates_before:
        self.loss_scale_skipped.assign_add(1)
        logging.info(
          "step %d: gradients overflowed at the current loss scale, update dropped (%d so far)",
          step,
          int(self.loss_scale_skipped.numpy()),
        )
      if config.batch_digest_file:
        digest = hashlib.sha256(
          batch[preprocess.IMAGE].numpy().tobytes()
          + batch[preprocess.JOINTS2D_INPUT_PX].numpy().tobytes()
        ).hexdigest()
        with open(config.batch_digest_file, "a") as f:
          f.write(f"{step} {digest}\n")
      if finite:
        self.consecutive_bad.assign(0)
      else:
        self.skipped.assign_add(1)
        self.consecutive_bad.assign_add(1)
        logging.warning(
          "step %d: non-finite loss, update skipped (%d skipped so far)",
          step,
          int(self.skipped.numpy()),
        )
        if int(self.consecutive_bad.numpy()) >= config.max_nonfinite:
          first = step - int(self.consecutive_bad.numpy()) + 1
          raise NonFiniteLossError(
            f"loss non-finite for {config.max_nonfinite} consecutive steps ({first}..{step}); "
            f"last good checkpoint: {self.manager.latest_checkpoint}"
          )
      if step % config.log_every == 0 or step == config.max_steps:
        now = time.perf_counter()
        rate = (step - last_log_step) / max(now - last_log, 1e-9)
        logs = {name: float(m.result().numpy()) for name, m in self.trainer.trackers.items()}
        self.history.append({"step": step, **logs})
        eta = (config.max_steps - step) / max(rate, 1e-9)
        skips = self.skip_counts()
        print(
          f"step {step}/{config.max_steps}  loss {logs['loss']:.4f}  {rate:.2f} steps/s  "
          f"input wait {100 * wait / max(now - last_log, 1e-9):.0f}%  "
          f"skipped {skips['nonfinite']} non-finite, {skips['loss_scale']} loss-scale  "
          f"ETA {eta:.0f} s",
          flush=True,
        )
        if self.summary_hook:
          self.summary_hook(step, logs, rate, wait / max(now - last_log, 1e-9), batch, skips)
        for tracker in self.trainer.trackers.values():
          tracker.reset_state()
        last_log, last_log_step, wait = now, step, 0.0
      for every, fn in self.periodic:
        if every and step % every == 0:
          fn(step)
      if step % config.checkpoint_every == 0 or self._stop_requested:
        self.manager.save(checkpoint_number=step)
        if self._stop_requested:
          name = signal.Signals(self._stop_requested).name
          logging.warning("%s: saved step %d and stopping", name, step)
          break
    step = int(self.global_step.numpy())
    latest = self.manager.latest_checkpoint
    if latest is None or not latest.endswith(f"-{step}"):
      self.manager.save(checkpoint_number=step)
    return {
      "step": int(self.global_step.numpy()),
      "skipped": int(self.skipped.numpy()),
      "loss_scale_skipped": int(self.loss_scale_skipped.numpy()),
      "stopped_by": signal.Signals(self._stop_requested).name if self._stop_requested else None,
      "seconds": time.perf_counter() - started,
      "history": self.history,
      **logs,
    }
