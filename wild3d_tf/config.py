"""Frozen configuration dataclasses: one ``RunConfig`` per training run.

``wild3d_tf.train`` builds the ``RunConfig`` from its flags in one function
and writes it to ``<model_dir>/config.json`` (``RunConfig.save``); evaluation,
export, prediction, lifting and the benchmarks read it back with
``load(model_dir)``. Each setting lives in one field: the crop side is
``ModelConfig.input_size``, the global batch ``DataConfig.batch_size``, the
network's widths follow from ``ModelConfig.variant``, the dataset lists are
``DataConfig.datasets_2d``/``datasets_3d``.
"""

from __future__ import annotations

import dataclasses
import json
import typing

import tensorflow as tf

from wild3d_tf import storage
from wild3d_tf.losses import LossWeights

CONFIG_FILE = "config.json"  # in a training run's model_dir


@dataclasses.dataclass(frozen=True)
class _Widths:
  width: float  # multiplies every ResNet-50 channel count (stem, bottlenecks, Res5a)
  latent_size: int  # the fully connected layers of the lifting MLP
  camera_hidden: int
  input_size: int  # the input side the variant is run at unless told otherwise


# ``full``: the paper's widths; ``tiny``: 1/8 width and narrow MLPs, the CPU variant of the
# tests and the demo. The topology (blocks, strides, 64-channel F3D, 14 heatmaps, 17 joints)
# is the same.
VARIANTS = {"full": _Widths(1.0, 1024, 256, 256), "tiny": _Widths(0.125, 128, 32, 128)}
# Output strides of the backbone (input pixels per heatmap cell): 16 is the paper's; 8 runs
# conv4 and Res5a without stride (dilated), e.g. 16x16 heatmaps for the tiny network at 128 px.
STRIDES = (16, 8)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes and widths of the network of paper Sec. 3 (``model.build_model``).

  ``variant`` names the widths (``VARIANTS``); ``input_size`` is the square
  crop side in pixels, a multiple of ``stride`` (the heatmaps' stride, one of
  ``STRIDES``: train.py --heatmap_stride). ``tie_camera_scales``: the weak-perspective
  camera has one scale for both image axes (ax = ay; train.py --tie_camera_scales); off
  is the paper's (cx, cy, ax, ay). Raises ValueError naming the field on a bad value.
  """

  variant: str = "full"
  input_size: int = 256
  f3d_channels: int = 64
  stride: int = 16
  tie_camera_scales: bool = False

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f"variant must be one of {tuple(VARIANTS)}; got {self.variant!r}")
    if self.stride not in STRIDES:
      raise ValueError(
        f"stride (train.py --heatmap_stride) must be one of {STRIDES}; got {self.stride!r}"
      )
    if self.input_size % self.stride or self.input_size < 2 * self.stride:
      raise ValueError(
        f"input_size must be a multiple of {self.stride} and at least "
        f"{2 * self.stride}; got {self.input_size}"
      )

  @property
  def width(self) -> float:
    return VARIANTS[self.variant].width

  @property
  def latent_size(self) -> int:
    return VARIANTS[self.variant].latent_size

  @property
  def camera_hidden(self) -> int:
    return VARIANTS[self.variant].camera_hidden

  @property
  def heatmap_size(self) -> int:
    """Side of the heatmaps and of F3D: ``input_size / stride``."""
    return self.input_size // self.stride

  def channels(self, full: int) -> int:
    return max(4, int(round(full * self.width)))

  @classmethod
  def for_variant(cls, variant: str, input_size: int | None = None) -> ModelConfig:
    """The named variant at ``input_size`` (default: the variant's own, 256 or 128)."""
    if variant not in VARIANTS:
      raise ValueError(f"variant must be one of {tuple(VARIANTS)}; got {variant!r}")
    return cls(variant=variant, input_size=input_size or VARIANTS[variant].input_size)

  @classmethod
  def full(cls, input_size: int | None = None) -> ModelConfig:
    return cls.for_variant("full", input_size)

  @classmethod
  def tiny(cls, input_size: int | None = None) -> ModelConfig:
    return cls.for_variant("tiny", input_size)


# The training datasets a run may select (the converter's dataset names): 2D in-the-wild
# and 3D studio data. The defaults are the paper's (Sec. 4.2).
DATASETS_2D = ("mpii", "lsp", "lspet")
DATASETS_3D = ("h36m", "mpi_inf_3dhp")
# The 2D stream may also read 3D sets for their 2D labels (e.g. a 2D network pre-trained on
# studio data alone: benchmarks/gate.py); the default is the paper's.
DATASETS_2D_ALLOWED = DATASETS_2D + DATASETS_3D
# The target of the 2D-only bone-length loss (``data.prepare`` builds it from the 3D training
# subjects' bone-length table, ``losses.bone_length_loss`` compares): a random training
# subject's bones per sample (the paper's), the subjects' mean skeleton, or the mean
# skeleton's proportions (scale-free).
BONE_LENGTH_TARGETS = ("random_subject", "mean_skeleton", "ratios")
# How stage full feeds 3D and 2D-only data: whole batches of one kind alternating step by step
# (the paper's design card), or one batch of each kind per step, one update on both.
BATCH_COMPOSITIONS = ("across_steps", "within_step")
# Where training reads the converted datasets: the shards through the manifests (each shard's
# record count checked as it is read), or TFDS over the same folders (``tfds_data``).
INPUT_SOURCES = ("shards", "tfds")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The tf.data input pipeline (``data.py``).

  ``batch_size`` is the global batch of one kind (split over replicas by the
  trainer); with ``batch_composition`` ``within_step`` a stage-full step reads
  one such batch of 3D and one of 2D-only samples, 2 * ``batch_size`` in all,
  and the losses still divide by ``batch_size``. ``bone_length_target`` is one
  of ``BONE_LENGTH_TARGETS``, ``batch_composition`` one of
  ``BATCH_COMPOSITIONS``. The crop and heatmap sides are the model's
  (``ModelConfig``), handed to the ``data`` functions as arguments, so they
  have one owner. Raises ValueError naming the field on a bad value.
  """

  data_dir: str
  batch_size: int = 10
  datasets_2d: tuple = DATASETS_2D
  datasets_3d: tuple = DATASETS_3D
  # Augmentation: scale factor range, in-plane rotation, translation (fraction of the box),
  # horizontal flip, colour jitter, background replacement where a mask exists.
  scale_range: float = 0.25
  rotation_degrees: float = 30.0
  shift: float = 0.1
  flip: bool = True
  color: bool = True
  background_probability: float = 0.5
  # (The crop box's margin is preprocess.BOX_MARGIN: one setting for training and serving.)
  shuffle_buffer: int = 1000
  seed: int = 0
  # Check each shard's SHA-256 against its manifest before reading (a full read of every shard;
  # record counts are always checked, as the shards are read).
  verify_shard_digests: bool = False
  input_source: str = "shards"  # one of INPUT_SOURCES
  bone_length_target: str = "random_subject"
  batch_composition: str = "across_steps"
  # Where augmentation's image work runs: batched in the training step (True, data.finish_batch),
  # per example in the tf.data pipeline (False, data.finish_example), or None: in the step when
  # TensorFlow sees a GPU or TPU, else in the pipeline (data.augments_in_step).
  augment_in_step: bool | None = None

  def __post_init__(self):
    for name, allowed in (("datasets_2d", DATASETS_2D_ALLOWED), ("datasets_3d", DATASETS_3D)):
      value = getattr(self, name)
      if isinstance(value, str) or not all(d in allowed for d in value):
        raise ValueError(f"{name} must be a tuple of names from {allowed}; got {value!r}")
      if len(set(value)) != len(value):
        raise ValueError(f"{name} names a dataset twice: {value!r}")
      object.__setattr__(self, name, tuple(value))
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
    if not 0 <= self.scale_range < 1:
      raise ValueError(f"scale_range must be in [0, 1); got {self.scale_range}")
    if not 0 <= self.background_probability <= 1:
      raise ValueError(
        f"background_probability must be in [0, 1]; got {self.background_probability}"
      )
    if self.rotation_degrees < 0 or self.shift < 0 or self.shuffle_buffer < 1:
      raise ValueError(
        "rotation_degrees and shift must be >= 0 and shuffle_buffer >= 1; got "
        f"{self.rotation_degrees}, {self.shift}, {self.shuffle_buffer}"
      )
    for name, allowed in (
      ("bone_length_target", BONE_LENGTH_TARGETS),
      ("batch_composition", BATCH_COMPOSITIONS),
      ("input_source", INPUT_SOURCES),
    ):
      if getattr(self, name) not in allowed:
        raise ValueError(
          f"{name} (train.py --{name}) must be one of {allowed}; got {getattr(self, name)!r}"
        )

  @classmethod
  def tiny(cls, data_dir: str) -> DataConfig:
    return cls(data_dir=data_dir, batch_size=8, shuffle_buffer=64)


# The optimizers ``trainer.make_optimizer`` builds: Adadelta (rho 0.9, eps 1e-6) is the paper's;
# Adam (Keras' betas) is a deviation for small CPU budgets, where it learns faster in few steps.
OPTIMIZERS = ("adadelta", "adam")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The optimizer with exponential decay (``trainer.make_optimizer``); the dtype policy."""

  learning_rate: float = 0.05
  decay_steps: int = 60000
  decay_rate: float = 0.1
  # Learning-rate factor of the layers trained in stage 1 (the 2D pre-training: stem to Res4f,
  # Res5a, the F3D convolution); the paper uses 0.01 when H3.6M is the only 3D data.
  pretrained_lr_multiplier: float = 1.0
  mixed_precision: str = "none"  # a Keras dtype policy: none, mixed_float16, mixed_bfloat16
  optimizer: str = "adadelta"  # one of OPTIMIZERS

  def __post_init__(self):
    if self.mixed_precision not in ("none", "mixed_float16", "mixed_bfloat16"):
      raise ValueError(f"mixed_precision: unknown policy {self.mixed_precision!r}")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(
        f"optimizer (train.py --optimizer) must be one of {OPTIMIZERS}; got {self.optimizer!r}"
      )


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """The custom training loop (``trainer.Loop``).

  ``jit_compile`` compiles the whole distributed step with XLA (the public
  way to use XLA for training; ``Model.compile(jit_compile=...)`` has no
  effect on the custom loop). ``batch_digest_file``: one ``step sha256``
  line per batch is appended there, to check a resumed run's data order.
  """

  model_dir: str
  max_steps: int
  checkpoint_every: int = 1000
  log_every: int = 10
  max_nonfinite: int = 20
  keep_checkpoints: int = 3
  batch_digest_file: str | None = None
  jit_compile: bool = False

  def __post_init__(self):
    for name in ("checkpoint_every", "log_every", "max_nonfinite", "keep_checkpoints"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")


STAGES = ("pretrain2d", "full")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything a training run was started with; ``<model_dir>/config.json`` holds it.

  ``stage``: ``pretrain2d`` (2D heatmaps on the 2D datasets) or ``full`` (every
  loss; 3D and 2D-only batches alternate unless ``use_2d_data`` is off).
  The remaining fields are the run's side settings (strategy, initialisation,
  validation and TensorBoard images). ``loss`` holds the weights the run trains
  with: with ``calibrate_loss_weights``, the calibrated ones once the run has begun.
  """

  model: ModelConfig
  data: DataConfig
  loss: LossWeights
  optimizer: OptimizerConfig
  loop: LoopConfig
  stage: str = "full"
  use_2d_data: bool = True
  strategy: str = "default"
  deterministic: bool = False
  init_from: str | None = None
  imagenet_weights: str | None = None
  validate_every: int = 0
  validation_dataset: str = "mpi_inf_3dhp_test"
  validation_batches: int = 20
  image_summaries_every: int = 100
  # Per-term gradient norms and weighted losses to TensorBoard every this many steps (0: off).
  gradient_norms_every: int = 0
  # A fresh run replaces ``loss`` by weights calibrated from the per-term gradient norms of
  # ``calibration_batches`` training batches (``Trainer.calibrated_weights``) and saves them
  # here, so a resumed run reads them back instead of measuring again.
  calibrate_loss_weights: bool = False
  calibration_batches: int = 20

  def __post_init__(self):
    if self.stage not in STAGES:
      raise ValueError(f"stage must be one of {STAGES}; got {self.stage!r}")
    if self.gradient_norms_every < 0:
      raise ValueError(
        f"gradient_norms_every (train.py --gradient_norms_every) must be >= 0; "
        f"got {self.gradient_norms_every}"
      )
    if self.calibration_batches < 1:
      raise ValueError(
        f"calibration_batches (train.py --calibration_batches) must be >= 1; "
        f"got {self.calibration_batches}"
      )

  @property
  def data_stage(self) -> str:
    """The stream ``data.training_dataset`` makes: pretrain2d, full or full3d (no 2D data)."""
    if self.stage == "pretrain2d":
      return "pretrain2d"
    return "full" if self.use_2d_data else "full3d"

  def to_json(self) -> str:
    values = dataclasses.asdict(self)
    return json.dumps(values, indent=1)

  @classmethod
  def from_json(cls, text: str, source: str = "config.json") -> RunConfig:
    """The inverse of ``to_json``. Raises ValueError naming ``source`` and the key on an
    unknown or missing field or a bad value."""
    try:
      values = json.loads(text)
    except ValueError as error:
      raise ValueError(f"{source}: not JSON ({error})") from None
    try:
      return _build(cls, values, "")
    except (TypeError, ValueError) as error:
      raise ValueError(f"{source}: {error}") from None

  def save(self, model_dir: str) -> str:
    """Writes ``<model_dir>/config.json`` (any filesystem tf.io.gfile knows); returns its path."""
    return storage.write_text(config_path(model_dir), self.to_json())


def config_path(model_dir: str) -> str:
  return storage.join(model_dir, CONFIG_FILE)


def load(model_dir: str) -> RunConfig:
  """The ``RunConfig`` of a training run. Raises FileNotFoundError naming ``model_dir`` when
  it holds no config.json, ValueError naming the file when it does not parse."""
  path = config_path(model_dir)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{model_dir}: no {CONFIG_FILE}; not a wild3d training directory")
  with tf.io.gfile.GFile(path, "r") as f:
    return RunConfig.from_json(f.read(), source=path)


def _build(cls, values, prefix: str):
  """A ``cls`` dataclass from JSON values: nested dataclasses recursively, lists to tuples."""
  if not isinstance(values, dict):
    raise ValueError(f"{prefix or 'the top level'} must be an object; got {values!r}")
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(f"unknown key(s) {[prefix + k for k in unknown]}")
  kwargs = {}
  for name, value in values.items():
    hint = hints[name]
    if dataclasses.is_dataclass(hint):
      value = _build(hint, value, f"{prefix}{name}.")
    elif isinstance(value, list):
      value = tuple(value)
    kwargs[name] = value
  try:
    return cls(**kwargs)
  except TypeError as error:  # a required field is missing
    raise ValueError(f"{prefix or cls.__name__ + ': '}{error}") from None
