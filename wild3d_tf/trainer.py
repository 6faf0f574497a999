"""The one place that joins model, losses, weights and optimizer: ``Trainer.train_step``
and the custom ``strategy.run`` loop around it.

Why a custom loop rather than ``Model.fit``: with Keras 3.15 on TF 2.21, ``fit``
fails under MultiWorkerMirroredStrategy, and a distributed iterator cannot be
checkpointed (reliability.md 0.1). The loop therefore keeps one plain,
checkpointed tf.data iterator of global batches on the host and gives each
replica its slice with ``experimental_distribute_values_from_function``; the
same code runs on one device, MirroredStrategy and MultiWorkerMirroredStrategy.

Steps are counted by our own ``global_step``, which advances on every batch:
``optimizer.iterations`` does not advance when the loss scaler skips an
overflowed float16 step. A step whose loss is not finite on any replica is
skipped (no update) and counted; ``max_nonfinite`` consecutive ones stop
training with an error naming the step range.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import signal
import time

import keras
import tensorflow as tf

from wild3d_tf import losses
from wild3d_tf.config import LossWeights

LABEL_KEYS = (
  "heatmaps",
  "joints2d",
  "joints2d_visible",
  "joints3d",
  "has_3d",
  "reference_bone_lengths",
)
TERMS = ("heatmap", "intermediate_heatmap", "pose3d", "bone_3d", "bone_2d", "projection")


class NonFiniteLossError(RuntimeError):
  pass


class Trainer(keras.Model):
  """Owns the functional network; ``train_step`` takes a per-replica batch dict.

  Loss values are reported through ``keras.metrics.Mean`` trackers (listed in
  ``metrics`` so they reset), since raw tensors returned from a replica read
  as 0.0 under MirroredStrategy.
  """

  def __init__(self, network: keras.Model, weights: LossWeights, global_batch_size: int, **kwargs):
    super().__init__(**kwargs)
    self.network = network
    self.loss_weights = weights
    self.global_batch_size = global_batch_size
    self.input_size = network.input_shape[1]
    self.trackers = {name: keras.metrics.Mean(name=name) for name in ("loss",) + TERMS}

  @property
  def metrics(self):
    return list(self.trackers.values())

  def call(self, images, training=False):
    return self.network(images, training=training)

  def train_step(self, batch):
    labels = {k: batch[k] for k in LABEL_KEYS}
    with tf.GradientTape() as tape:
      outputs = self.network(batch["image"], training=True)
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
  """Variables of the ImageNet part (stem to Res4f, Keras' ``conv*`` names); Res5a and the heads are new."""
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


@dataclasses.dataclass
class LoopConfig:
  model_dir: str
  max_steps: int
  checkpoint_every: int = 1000
  log_every: int = 10
  max_nonfinite: int = 20
  keep_checkpoints: int = 3
  batch_digest_file: str | None = (
    None  # one "step sha256" line per batch, to check resumed data order
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
      iterator=self.iterator,
    )
    self.manager = tf.train.CheckpointManager(
      self.checkpoint, config.model_dir, max_to_keep=config.keep_checkpoints
    )
    self.summary_hook = summary_hook
    self.periodic = list(periodic)  # (every, fn(step)) pairs, e.g. validation
    self.history = []  # logs per log interval: {"step": ..., "loss": ..., term: ...}
    self._stop_requested = False
    self._step_fn = tf.function(self._distributed_step)

  def _distributed_step(self, batch):
    replicas = self.strategy.num_replicas_in_sync
    per_replica = batch["image"].shape[0] // replicas

    def slice_for(context):
      start = context.replica_id_in_sync_group * per_replica
      return {k: v[start : start + per_replica] for k, v in batch.items()}

    distributed = self.strategy.experimental_distribute_values_from_function(slice_for)
    finite = self.strategy.run(self.trainer.train_step, args=(distributed,))
    return self.strategy.experimental_local_results(finite)[0]

  def restore(self) -> bool:
    latest = self.manager.latest_checkpoint
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      logging.info("resumed from %s at step %d", latest, int(self.global_step.numpy()))
    return bool(latest)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self._stop_requested = True

  def run(self) -> dict:
    previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    try:
      return self._run()
    finally:
      signal.signal(signal.SIGTERM, previous)

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
      finite = bool(self._step_fn(batch).numpy())
      step = int(self.global_step.assign_add(1).numpy())
      if config.batch_digest_file:
        digest = hashlib.sha256(
          batch["image"].numpy().tobytes() + batch["joints2d"].numpy().tobytes()
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
            f"loss non-finite for {config.max_nonfinite} consecutive steps ({first}..{step}); last good "
            f"checkpoint: {self.manager.latest_checkpoint}"
          )
      if step % config.log_every == 0 or step == config.max_steps:
        now = time.perf_counter()
        rate = (step - last_log_step) / max(now - last_log, 1e-9)
        logs = {name: float(m.result().numpy()) for name, m in self.trainer.trackers.items()}
        self.history.append({"step": step, **logs})
        eta = (config.max_steps - step) / max(rate, 1e-9)
        print(
          f"step {step}/{config.max_steps}  loss {logs['loss']:.4f}  {rate:.2f} steps/s  "
          f"input wait {100 * wait / max(now - last_log, 1e-9):.0f}%  ETA {eta:.0f} s",
          flush=True,
        )
        if self.summary_hook:
          self.summary_hook(step, logs, rate, wait / max(now - last_log, 1e-9), batch)
        for tracker in self.trainer.trackers.values():
          tracker.reset_state()
        last_log, last_log_step, wait = now, step, 0.0
      for every, fn in self.periodic:
        if every and step % every == 0:
          fn(step)
      if step % config.checkpoint_every == 0 or self._stop_requested:
        self.manager.save(checkpoint_number=step)
        if self._stop_requested:
          logging.info("SIGTERM: saved step %d and stopping", step)
          break
    step = int(self.global_step.numpy())
    latest = self.manager.latest_checkpoint
    if latest is None or not latest.endswith(f"-{step}"):
      self.manager.save(checkpoint_number=step)
    return {
      "step": int(self.global_step.numpy()),
      "skipped": int(self.skipped.numpy()),
      "seconds": time.perf_counter() - started,
      "history": self.history,
      **logs,
    }
