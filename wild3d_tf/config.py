"""Frozen configuration dataclasses; entry points build them from flags."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes and widths of the network of paper Sec. 3 (``model.build_model``).

  ``width`` multiplies every ResNet-50 channel count (stem, bottlenecks and
  Res5a) and the 1024-wide fully connected layers; the topology (blocks,
  strides, the 64-channel F3D, 14 heatmaps, 17 joints) never changes.
  """

  input_size: int = 256
  width: float = 1.0
  f3d_channels: int = 64
  latent_size: int = 1024
  camera_hidden: int = 256
  stride: int = 16

  def __post_init__(self):
    if self.input_size % self.stride or self.input_size < 2 * self.stride:
      raise ValueError(
        f"input_size must be a multiple of {self.stride} and at least "
        f"{2 * self.stride}; got {self.input_size}"
      )
    if not 0 < self.width <= 1:
      raise ValueError(f"width must be in (0, 1]; got {self.width}")

  @property
  def heatmap_size(self) -> int:
    return self.input_size // self.stride

  def channels(self, full: int) -> int:
    return max(4, int(round(full * self.width)))

  @classmethod
  def full(cls, input_size: int = 256) -> ModelConfig:
    return cls(input_size=input_size)

  @classmethod
  def tiny(cls, input_size: int = 128) -> ModelConfig:
    return cls(input_size=input_size, width=0.125, latent_size=128, camera_hidden=32)


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """Weights of the supplement's total loss (Sec. 1, Eq. 6).

  Zero switches a term off; the ablations of paper Table 5 are presets of
  :meth:`for_ablation`. Removing the 2D data is a data setting, not a weight.
  """

  heatmap: float = 0.1
  intermediate_heatmap: float = 0.1
  pose3d: float = 10.0
  bone_3d: float = 10.0
  bone_2d: float = 100.0
  projection: float = 10.0

  ABLATIONS = ("full", "no_latent_2d", "no_projection", "baseline")

  @classmethod
  def pretrain2d(cls) -> LossWeights:
    """Stage 1 of the paper: 2D heatmaps only, with intermediate supervision."""
    return cls(pose3d=0.0, bone_3d=0.0, bone_2d=0.0, projection=0.0)

  @classmethod
  def for_ablation(cls, name: str) -> LossWeights:
    """``full``; ``no_latent_2d`` (no explicit 2D heatmap loss on F3D);
    ``no_projection`` (no 3D-to-2D projection loss); ``baseline`` (neither:
    direct 3D regression with the bone losses)."""
    if name == "full":
      return cls()
    if name == "no_latent_2d":
      return cls(heatmap=0.0, intermediate_heatmap=0.0)
    if name == "no_projection":
      return cls(projection=0.0)
    if name == "baseline":
      return cls(heatmap=0.0, intermediate_heatmap=0.0, projection=0.0)
    raise ValueError(f"unknown ablation {name!r}; expected one of {cls.ABLATIONS}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The tf.data input pipeline (``data.py``)."""

  data_dir: str
  input_size: int = 256
  batch_size: int = 10
  datasets_2d: tuple = ("mpii", "lsp", "lspet")
  datasets_3d: tuple = ("h36m", "mpi_inf_3dhp")
  # Augmentation: scale factor range, in-plane rotation, translation (fraction of the box),
  # horizontal flip, colour jitter, background replacement where a mask exists.
  scale_range: float = 0.25
  rotation_degrees: float = 30.0
  shift: float = 0.1
  flip: bool = True
  color: bool = True
  background_probability: float = 0.5
  box_margin: float = 0.2  # the tight box around the 2D joints, as at test time
  shuffle_buffer: int = 1000
  seed: int = 0

  @classmethod
  def tiny(cls, data_dir: str) -> DataConfig:
    return cls(data_dir=data_dir, input_size=128, batch_size=8, shuffle_buffer=64)
