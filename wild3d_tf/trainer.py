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

import dataclasses
import hashlib
import logging
import math
import signal
import time

import keras
import tensorflow as tf

from wild3d_tf import checkpoints, data, losses, model, preprocess
from wild3d_tf.config import OPTIMIZERS, LoopConfig
from wild3d_tf.losses import LossWeights


class NonFiniteLossError(RuntimeError):
  pass


# The variable groups of the per-term gradient norms (``Trainer.measure_terms``): ``trunk``, the
# layers trained in stage 1 (``is_pretrained``: stem to Res5a and the F3D convolution), and
# ``heads``, the 3D stage's lifting and camera MLPs (``model.STAGE2_LAYERS``).
GRADIENT_GROUPS = ("trunk", "heads")
# ``Trainer.calibrated_weights`` matches every active term's weighted gradient norm to that of
# the first active term here: pose3d in stage full (every Table 5 row has it), heatmap in
# pre-training.
CALIBRATION_REFERENCES = ("pose3d", "heatmap")
# Written into the model_dir by a calibrating run (train.py --calibrate_loss_weights).
CALIBRATION_FILE = "loss_calibration.json"


@dataclasses.dataclass(frozen=True)
class TermGradient:
  """One loss term on one batch, unweighted: ``loss`` is L_t as ``losses.total`` scales it (the
  batch's sum over samples divided by the global batch size), ``norm`` the L2 norm over every
  trainable variable of dL_t/dtheta, ``groups`` that norm over each of ``GRADIENT_GROUPS``.
  A value that is not finite (e.g. an overflow under mixed_float16) is NaN."""

  loss: float
  norm: float
  groups: dict


def _finite_or_nan(value) -> float:
  value = float(value)
  return value if math.isfinite(value) else math.nan


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
    self._measure_functions = {}  # the compiled measure_terms, by the tuple of active terms

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

  def finish(self, batch: dict) -> dict:
    """``batch`` ready for the network: a batch of ``data.stage_example``'s examples (the training
    pipeline's, ``DataConfig.augment_in_step``) through ``data.finish_batch`` at this
    trainer's input size and its network's heatmap side; a prepared batch as it is. Runs
    where it is called: inside ``train_step`` on the replica's device; eagerly to look at a
    batch's images (train.py's image summaries)."""
    if data.STORED_IMAGE not in batch:
      return batch
    heatmap_size = self.network.output["heatmaps"].shape[1]
    return data.finish_batch(batch, self.input_size, heatmap_size)

  def train_step(self, batch):
    batch = self.finish(batch)
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

    # Some layers get no gradient (pre-training: the lifting and camera MLPs; no projection:
    # the camera MLP). keras' MultiOptimizer (make_optimizer's learning-rate split) wants one
    # gradient per variable it was built for, so it gets zeros there: a zero gradient leaves
    # the variable and its Adadelta/Adam slots exactly as they are while the slots are zero,
    # and they stay zero, since which layers the loss reaches is fixed by the loss weights,
    # the same at every step (tests/test_train.py checks both optimizers). A single optimizer
    # takes the shorter list: no all-reduce and update of zeros for the MLPs in pre-training.
    if isinstance(
      getattr(self.optimizer, "inner_optimizer", self.optimizer), keras.optimizers.MultiOptimizer
    ):
      grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
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

  def active_terms(self) -> tuple[str, ...]:
    """The names of the terms whose weight is not zero, in ``losses.TERMS`` order."""
    weights = self.loss_weights
    return tuple(t.name for t in weights.TERMS if getattr(weights, t.name) != 0)

  def measure_terms(self, batch: dict) -> dict[str, TermGradient]:
    """{term: ``TermGradient``} of every active term on ``batch`` (a global batch dict as the
    loop reads it), unweighted, with the network in training mode as ``train_step`` runs it.

    One forward pass on a persistent tape and one ``tape.gradient`` per term, compiled once
    per set of active terms (the weights' values do not enter, so calibration and logging
    share one trace). The whole global batch is measured on one device in the strategy's
    cross-replica context: the gradient of the global loss, as the replicas' summed update
    sees it. Nothing changes: no update, and the batch-norm moving statistics that a
    training-mode call moves are put back, so measuring never alters what a checkpoint
    holds. Sums of squares are taken in float64, gradients cast from float16/bfloat16
    without loss scaling (a norm needs none; an overflow reads NaN). A term that does not
    apply to the batch (bone_2d on a 3D batch) has norm 0.
    """
    active = self.active_terms()
    function = self._measure_functions.get(active)
    if function is None:
      function = tf.function(lambda b: self._measure(active, b), autograph=False)
      self._measure_functions[active] = function
    moving = [(v, v.numpy()) for v in self.network.non_trainable_variables]
    try:
      measured = function(batch)
    finally:
      for variable, value in moving:
        variable.assign(value)
    return {
      name: TermGradient(
        loss=_finite_or_nan(loss),
        norm=_finite_or_nan(norms[0]),
        groups={g: _finite_or_nan(n) for g, n in zip(GRADIENT_GROUPS, norms[1:])},
      )
      for name, (loss, norms) in measured.items()
    }

  def _measure(self, active, batch):
    batch = self.finish(batch)
    labels = self.labels(batch)
    variables = self.network.trainable_variables
    in_trunk = [is_pretrained(v) for v in variables]
    with tf.GradientTape(persistent=True) as tape:
      outputs = self.network(batch[preprocess.IMAGE], training=True)
      _, terms = losses.total(
        outputs, labels, self.loss_weights, self.global_batch_size, self.input_size
      )
    measured = {}
    for name in active:
      squares = {group: tf.constant(0.0, tf.float64) for group in GRADIENT_GROUPS}
      for grad, trunk in zip(tape.gradient(terms[name], variables), in_trunk):
        if grad is not None:  # a layer the term does not reach
          group = GRADIENT_GROUPS[0] if trunk else GRADIENT_GROUPS[1]
          squares[group] += tf.reduce_sum(tf.square(tf.cast(grad, tf.float64)))
      group_norms = [tf.sqrt(squares[group]) for group in GRADIENT_GROUPS]
      measured[name] = (terms[name], tf.stack([tf.sqrt(sum(squares.values())), *group_norms]))
    del tape
    return measured

  def term_gradient_norms(self, batch: dict) -> dict[str, float]:
    """{term: ||d(w_t L_t)/dtheta||} of each active term on ``batch``: the L2 norm over all
    trainable variables of the weighted term's gradient (``measure_terms``' norm times the
    weight ``w_t``), L_t scaled as ``losses.total`` scales it. NaN when not finite."""
    weights = self.loss_weights
    return {
      name: getattr(weights, name) * measured.norm
      for name, measured in self.measure_terms(batch).items()
    }

  def calibrated_weights(self, batches) -> tuple[LossWeights, dict]:
    """Loss weights under which every active term's weighted gradient norm equals the
    reference term's, measured on ``batches`` (an iterable of global batch dicts).

    For each active term t, g_t is the mean of ``measure_terms``' unweighted norm over the
    batches where it is finite and non-zero (across_steps' 3D batches carry no bone_2d
    gradient, its 2D-only batches no pose3d one); the reference r is the first active term
    of ``CALIBRATION_REFERENCES`` and keeps its weight; the others get
    w_t = w_r * g_r / g_t (equal shares: each term's gradient as large as the reference's
    where it applies). Inactive terms stay 0. The weights are not set here: give them to
    the trainer (``loss_weights``) before its training step is first traced.

    Returns (weights, report), the report a JSON-ready dict: ``reference``, ``batches``,
    and per term ``terms[t]``: ``batches`` (where it applied), ``gradient_norm`` g_t,
    ``gradient_norm_by_group`` (the mean per ``GRADIENT_GROUPS``), ``weight_before``,
    ``weight_after``, ``weighted_gradient_norm_before`` and ``..._after`` (weight times g_t).
    Measured on the network as it is: right after initialisation (or --init_from) the
    heads are untrained, so the norms describe the start of training, not its course.
    Raises ValueError when no term of ``CALIBRATION_REFERENCES`` is active or an active
    term had no finite non-zero gradient on any batch (too few batches).
    """
    before = self.loss_weights
    active = self.active_terms()
    reference = next((t for t in CALIBRATION_REFERENCES if t in active), None)
    if reference is None:
      raise ValueError(
        f"loss calibration needs an active reference term, one of {CALIBRATION_REFERENCES}; "
        f"active terms: {active}"
      )
    sums = {name: [0.0] * (1 + len(GRADIENT_GROUPS)) for name in active}
    counts = dict.fromkeys(active, 0)
    count = 0
    for batch in batches:
      count += 1
      for name, measured in self.measure_terms(batch).items():
        if math.isfinite(measured.norm) and measured.norm > 0:
          values = [measured.norm, *(measured.groups[g] for g in GRADIENT_GROUPS)]
          sums[name] = [a + b for a, b in zip(sums[name], values)]
          counts[name] += 1
    missing = [name for name in active if not counts[name]]
    if missing:
      raise ValueError(
        f"--calibration_batches={count}: no finite non-zero gradient of {', '.join(missing)} "
        "on any calibration batch; give more batches"
      )
    means = {name: [value / counts[name] for value in sums[name]] for name in active}
    target = getattr(before, reference) * means[reference][0]
    after = dataclasses.replace(
      before,
      **{name: target / means[name][0] for name in active if name != reference},
    )
    report = {"reference": reference, "batches": count, "terms": {}}
    for name in active:
      norm = means[name][0]
      report["terms"][name] = {
        "batches": counts[name],
        "gradient_norm": norm,
        "gradient_norm_by_group": dict(zip(GRADIENT_GROUPS, means[name][1:])),
        "weight_before": getattr(before, name),
        "weight_after": getattr(after, name),
        "weighted_gradient_norm_before": getattr(before, name) * norm,
        "weighted_gradient_norm_after": getattr(after, name) * norm,
      }
    return after, report


def is_pretrained(variable) -> bool:
  """Whether ``variable`` belongs to a layer trained in stage 1, the 2D pre-training (stem to
  Res4f, Res5a and the F3D convolution): ``model.trained_in_stage1`` of its path. The lifting
  and camera MLPs (``model.STAGE2_LAYERS``) are new in the 3D stage."""
  return model.trained_in_stage1(variable.path)


def make_optimizer(
  learning_rate: float,
  decay_steps: int,
  decay_rate: float,
  global_step: tf.Variable,
  mixed_float16: bool,
  pretrained_lr_multiplier: float = 1.0,
  optimizer: str = "adadelta",
) -> keras.optimizers.LossScaleOptimizer:
  """The training optimizer, its learning rate decayed exponentially on *our* global step.

  ``optimizer`` is one of ``config.OPTIMIZERS``: ``adadelta`` (the paper; its "momentum 0.9"
  is rho, epsilon 1e-6) or ``adam`` (Keras' betas and epsilon; a deviation that learns faster
  in a few CPU steps). ``pretrained_lr_multiplier`` other than 1 scales the learning rate of
  the layers trained in stage 1 (``is_pretrained``) through a ``keras.optimizers.MultiOptimizer``
  of two optimizers of that kind; the 3D-stage MLPs keep the full rate.

  Always wrapped in a LossScaleOptimizer, which skips updates with non-finite
  gradients on every replica alike: with dynamic scaling from 2^15 under
  mixed_float16, and in float32 with a scale of 1 that effectively never grows
  (it only halves on a skipped step, which does not change float32 updates).
  Raises ValueError naming --optimizer for an unknown optimizer.
  """
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
  schedule = keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps, decay_rate)

  def make(multiplier):
    rate = lambda: multiplier * schedule(global_step)  # noqa: E731
    if optimizer == "adam":
      return keras.optimizers.Adam(learning_rate=rate)
    return keras.optimizers.Adadelta(learning_rate=rate, rho=0.9, epsilon=1e-6)

  inner = make(1.0)
  if pretrained_lr_multiplier != 1.0:
    # Paper Sec. 4.2: the layers trained in stage 1 learn 100x slower when H3.6M is the only
    # 3D data. The MultiOptimizer wants a gradient for every variable: Trainer.train_step
    # gives zeros where the loss does not reach.
    stage1 = make(pretrained_lr_multiplier)
    heads = inner
    inner = keras.optimizers.MultiOptimizer(lambda v: stage1 if is_pretrained(v) else heads)
  if mixed_float16:
    return keras.optimizers.LossScaleOptimizer(inner)
  return keras.optimizers.LossScaleOptimizer(inner, initial_scale=1.0, dynamic_growth_steps=2**30)


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
    after_step=(),
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
    # fn(step, batch) after every step, given the step's global batch (gradient norms): each
    # decides itself whether to act.
    self.after_step = list(after_step)
    self.history = []  # logs per log interval: {"step": ..., "loss": ..., term: ...}
    self._stop_requested = None  # the signal number that asked us to save and stop
    # Traced as written (every branch of the step is on Python values; the skip of a
    # non-finite update is a cond): AutoGraph's source conversion cost about a quarter of
    # the trace, which every training start pays.
    self._compiled_step = tf.function(
      self._distributed_step, jit_compile=config.jit_compile, autograph=False
    )

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
    per_replica = batch[preprocess.JOINTS2D_INPUT_PX].shape[0] // replicas  # staged or prepared

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
        # Every tensor, so a staged batch (``data.stage_example``'s: crops, matrices, draws) and a
        # prepared one are both pinned down whole.
        digest = hashlib.sha256(
          b"".join(batch[key].numpy().tobytes() for key in sorted(batch))
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
      for fn in self.after_step:
        fn(step, batch)
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
