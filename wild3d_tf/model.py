"""The network of paper Sec. 3 (Fig. 2) as a Keras 3 functional model.

    image -> f_RGB: ResNet-50 to Res4f, then Res5a without stride, 1024 channels
          -> F3D (64 channels at stride 16) = [h2D (14 heatmaps), d (50 depth features)]
             (ModelConfig.stride 8: conv4 and Res5a dilated instead of strided, F3D at stride 8)
          -> z (fully connected, 1024)
          -> f3D: 4 x FC-1024 + ReLU, residual z -> 2nd layer output, linear -> P3D (17 x 3, mm)
          -> f_c: MLP on z -> weak-perspective camera c = (cx, cy, ax, ay)
          -> p2D = (ax X + cx, ay Y + cy) for the 14 joints that have a 2D counterpart

Intermediate supervision: the first 14 channels of Res4d and Res5a are
heatmaps too. Layer names follow the paper (``f3d_fc1`` ..., ``res5a_*``)
and Keras' own ResNet-50 names below Res5a, so ImageNet weights load by name.

Units: ``pose3d`` in mm (camera frame of the crop, root-relative);
``pose2d`` and the camera's (cx, cy) in crop pixels, (ax, ay) in pixels per
mm. Outputs are float32 under mixed precision.
"""

from __future__ import annotations

import os

import keras
from keras import layers, ops
import numpy as np

from wild3d_tf import geometry_tf, skeletons
from wild3d_tf.config import ModelConfig

NUM_HEATMAPS = skeletons.POSE2D.num_joints
NUM_JOINTS = skeletons.POSE3D.num_joints
# POSE3D joints projected to compare with the 2D labels, in POSE2D order.
PROJECTED_JOINTS = skeletons.mapping(skeletons.POSE3D, skeletons.POSE2D)
_BN_EPSILON = 1.001e-5  # Keras' ResNet-50 value, so ImageNet statistics match
_BACKBONE_STRIDE = 16  # ResNet-50 to Res4f; ModelConfig.stride 8 removes conv4's stride
# The layers of the 3D stage: the lifting MLP f3D (z to f3d_out) and the camera MLP f_c. Every
# other trainable layer (stem to Res4f, Res5a, the F3D convolution) is trained in stage 1, the
# 2D pre-training (tests/test_train.py checks this against the pretrain2d losses' gradients).
STAGE2_LAYERS = ("z", "f3d_fc1", "f3d_fc2", "f3d_fc3", "f3d_fc4", "f3d_out", "fc_hidden", "fc_out")
# Canonical weak-perspective scale: a 2 m person fills the crop.
_CAMERA_MM = 2000.0


@keras.saving.register_keras_serializable(package="wild3d")
class ChannelSlice(layers.Layer):
  """The first ``count`` channels of a feature map (h2D inside F3D, Res4d, Res5a)."""

  def __init__(self, count, **kwargs):
    super().__init__(**kwargs)
    self.count = count

  def call(self, x):
    return x[..., : self.count]

  def compute_output_shape(self, input_shape):
    return input_shape[:-1] + (self.count,)

  def get_config(self):
    return {**super().get_config(), "count": self.count}


@keras.saving.register_keras_serializable(package="wild3d")
class WeakPerspectiveCamera(layers.Layer):
  """Maps f_c's raw outputs, (B, ``raw_size``), to (cx, cy, ax, ay) in crop pixels, (B, 4).

  Raw zeros give the crop centre and the scale of a 2 m person filling the
  crop, so training starts from a sensible camera; exp keeps ax, ay positive
  (image and camera y both point down). With ``tie_scales`` f_c has 3 raw outputs and
  one scale serves both axes (ax = ay); the output keeps its 4 columns.
  """

  def __init__(self, input_size, tie_scales=False, **kwargs):
    super().__init__(**kwargs)
    self.input_size = input_size
    self.tie_scales = tie_scales

  @property
  def raw_size(self) -> int:
    """f_c's output width: cx, cy and one scale per axis (or one shared scale)."""
    return 3 if self.tie_scales else 4

  def call(self, raw):
    half = self.input_size / 2
    scale = self.input_size / _CAMERA_MM * ops.exp(ops.clip(raw[..., 2:], -4.0, 4.0))
    if self.tie_scales:
      scale = ops.concatenate([scale, scale], axis=-1)
    return ops.concatenate([half + half * raw[..., :2], scale], axis=-1)

  def compute_output_shape(self, input_shape):
    return input_shape[:-1] + (4,)

  def get_config(self):
    return {**super().get_config(), "input_size": self.input_size, "tie_scales": self.tie_scales}


@keras.saving.register_keras_serializable(package="wild3d")
class Projection(layers.Layer):
  """p2D = (ax X + cx, ay Y + cy) for the POSE3D joints with a POSE2D counterpart."""

  def call(self, pose3d, camera):
    return geometry_tf.weak_perspective(ops.take(pose3d, PROJECTED_JOINTS, axis=1), camera)


@keras.saving.register_keras_serializable(package="wild3d")
class PixelNormalization(layers.Layer):
  """RGB [0, 255] -> Caffe BGR with the ImageNet mean subtracted."""

  MEAN_BGR = (103.939, 116.779, 123.68)

  def call(self, image):
    bgr = ops.cast(image, self.compute_dtype)[..., ::-1]
    return bgr - ops.convert_to_tensor(np.array(self.MEAN_BGR), self.compute_dtype)


def _conv_bn(x, filters, kernel, name, stride=1, relu=True, dilation=1):
  # No bias before a batch norm: it cancels it, so the bias would only drift on float
  # noise (differently per replica count) and leak into the moving mean.
  x = layers.Conv2D(
    filters,
    kernel,
    strides=stride,
    padding="same",
    dilation_rate=dilation,
    use_bias=False,
    name=f"{name}_conv",
  )(x)
  # Synchronized across replicas: the paper's batch of 10 split over GPUs would otherwise
  # normalise with a handful of samples, and results would depend on the replica count.
  x = layers.BatchNormalization(epsilon=_BN_EPSILON, synchronized=True, name=f"{name}_bn")(x)
  return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _bottleneck(x, filters, name, stride=1, out_filters=None, project=False, dilation=1):
  """ResNet v1 bottleneck with Keras' layer names (``conv4_block6_*``); ``dilation`` is the
  3x3 convolution's (the 1x1 ones have no spatial extent)."""
  out_filters = out_filters or 4 * filters
  if project:
    shortcut = _conv_bn(x, out_filters, 1, f"{name}_0", stride=stride, relu=False)
  else:
    shortcut = x
  x = _conv_bn(x, filters, 1, f"{name}_1", stride=stride)
  x = _conv_bn(x, filters, 3, f"{name}_2", dilation=dilation)
  x = _conv_bn(x, out_filters, 1, f"{name}_3", relu=False)
  x = layers.Add(name=f"{name}_add")([shortcut, x])
  return layers.Activation("relu", name=f"{name}_out")(x)


def _dilation(config: ModelConfig) -> int:
  """The 3x3 dilation of the layers after conv4's stride: 1 at the paper's stride 16; 2 at
  stride 8, where conv4 runs without its stride (as dilated "simple baseline" networks), so
  each 3x3 kernel keeps the pixel footprint, and the ImageNet weights their meaning."""
  return _BACKBONE_STRIDE // config.stride


def _backbone(image, config: ModelConfig):
  """ResNet-50 stem, conv2, conv3, conv4 (to Res4f); returns (Res4d, Res4f), at stride
  ``config.stride`` (16: as ResNet-50; 8: conv4 without stride, its 3x3 convolutions dilated)."""
  c = config.channels
  # The stem sees raw mean-subtracted pixels (+-150): in float16 its kernel
  # gradient, a sum of pixel x gradient over the whole image, overflows, so
  # it stays float32 under mixed precision (measured: NaN on the first step).
  x = layers.ZeroPadding2D(3, dtype="float32", name="conv1_pad")(image)
  x = layers.Conv2D(c(64), 7, strides=2, use_bias=False, dtype="float32", name="conv1_conv")(x)
  x = layers.BatchNormalization(
    epsilon=_BN_EPSILON, synchronized=True, dtype="float32", name="conv1_bn"
  )(x)
  x = layers.Activation("relu", name="conv1_relu")(x)
  x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
  x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
  outputs = {}
  dilation = _dilation(config)
  conv4 = (256, 6, 2) if dilation == 1 else (256, 6, 1)
  for stage, (filters, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), conv4], start=2):
    for block in range(1, blocks + 1):
      name = f"conv{stage}_block{block}"
      x = _bottleneck(
        x,
        c(filters),
        name,
        stride=stride if block == 1 else 1,
        project=block == 1,
        dilation=dilation if stage == 4 else 1,
      )
      outputs[name] = x
  return outputs["conv4_block4"], outputs["conv4_block6"]


def build_model(config: ModelConfig, imagenet_weights: str | None = None) -> keras.Model:
  """Builds the functional model.

  Args:
    config: the variant (``full``: the paper's widths; ``tiny``: 1/8 width,
      128-wide fully connected layers, the CPU variant for tests and the
      demo), the input size (``ModelConfig.full(256)``, ``.tiny(128)``, or
      a training run's ``config.load(model_dir).model``), the output stride
      (16 or 8) and whether the camera's two scales are tied.
    imagenet_weights: path to Keras' ResNet-50 ImageNet file
      ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`` (full width
      only). Nothing is downloaded; without it the backbone starts random.
  Returns:
    A ``keras.Model`` named ``wild3d_<variant>_<input_size>`` taking uint8 or
    float RGB images in [0, 255] of shape (B, input_size, input_size, 3), with
    outputs ``heatmaps`` (B, s, s, 14), ``f3d`` (B, s, s, 64), ``pose3d``
    (B, 17, 3) mm, ``camera`` (B, 4), ``pose2d`` (B, 14, 2) crop pixels,
    ``heatmaps_res4d`` and ``heatmaps_res5a`` (B, s, s, 14), with
    s = ``config.heatmap_size``.
  Raises:
    TypeError when ``config`` is not a ModelConfig; FileNotFoundError or
    ValueError from ``load_imagenet_backbone``.
  """
  if not isinstance(config, ModelConfig):
    raise TypeError(f"build_model takes a ModelConfig; got {config!r}")
  c = config.channels
  image = keras.Input((config.input_size, config.input_size, 3), name="image")
  # Caffe-style ImageNet normalisation (RGB -> BGR, mean subtracted), as the
  # Keras ResNet-50 weights expect; inside the graph so serving matches.
  x = PixelNormalization(dtype="float32", name="pixel_normalization")(image)
  res4d, res4f = _backbone(x, config)
  # Res5a: no stride, so F3D keeps the backbone's stride; 1024 instead of 2048 channels.
  # At stride 8 its 3x3 is dilated like conv4's: the same pixel footprint as the paper's.
  res5a = _bottleneck(
    res4f,
    c(512),
    "res5a",
    stride=1,
    out_filters=c(1024),
    project=True,
    dilation=_dilation(config),
  )
  f3d = layers.Conv2D(config.f3d_channels, 1, name="f3d_conv")(res5a)
  f3d = layers.Activation("linear", dtype="float32", name="f3d")(f3d)
  heatmaps = ChannelSlice(NUM_HEATMAPS, dtype="float32", name="heatmaps")(f3d)
  heatmaps_res4d = ChannelSlice(NUM_HEATMAPS, dtype="float32", name="heatmaps_res4d")(res4d)
  heatmaps_res5a = ChannelSlice(NUM_HEATMAPS, dtype="float32", name="heatmaps_res5a")(res5a)

  width = config.latent_size
  z = layers.Flatten(name="f3d_flatten")(f3d)
  z = layers.Dense(width, activation="relu", name="z")(z)
  h = layers.Dense(width, activation="relu", name="f3d_fc1")(z)
  h = layers.Dense(width, activation="relu", name="f3d_fc2")(h)
  h = layers.Add(name="f3d_residual")([h, z])
  h = layers.Dense(width, activation="relu", name="f3d_fc3")(h)
  h = layers.Dense(width, activation="relu", name="f3d_fc4")(h)
  # The network regresses metres; the constant factor keeps its outputs O(1).
  # Starts near the zero pose: a random 2 m pose would make the bone losses
  # of the first steps dominate everything else by orders of magnitude.
  p3d = layers.Dense(
    NUM_JOINTS * 3, kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3), name="f3d_out"
  )(h)
  p3d = layers.Reshape((NUM_JOINTS, 3), name="f3d_reshape")(p3d)
  pose3d = layers.Rescaling(1000.0, dtype="float32", name="pose3d")(p3d)

  camera_layer = WeakPerspectiveCamera(
    config.input_size, tie_scales=config.tie_camera_scales, dtype="float32", name="camera"
  )
  cam = layers.Dense(config.camera_hidden, activation="relu", name="fc_hidden")(z)
  cam = layers.Dense(camera_layer.raw_size, kernel_initializer="zeros", name="fc_out")(cam)
  camera = camera_layer(cam)
  pose2d = Projection(dtype="float32", name="pose2d")(pose3d, camera)

  model = keras.Model(
    image,
    {
      "heatmaps": heatmaps,
      "f3d": f3d,
      "pose3d": pose3d,
      "camera": camera,
      "pose2d": pose2d,
      "heatmaps_res4d": heatmaps_res4d,
      "heatmaps_res5a": heatmaps_res5a,
    },
    name=f"wild3d_{config.variant}_{config.input_size}",
  )
  if imagenet_weights is not None:
    load_imagenet_backbone(model, imagenet_weights)
  return model


def trained_in_stage1(variable_path: str) -> bool:
  """Whether a network variable (its Keras ``path``, ``<layer>/<weight>``) belongs to a layer
  trained in stage 1 (the 2D pre-training), i.e. not to one of ``STAGE2_LAYERS``."""
  return variable_path.split("/", 1)[0] not in STAGE2_LAYERS


def load_imagenet_backbone(model: keras.Model, weights_path: str) -> int:
  """Copies ImageNet weights into the layers below Res5a, by Keras layer name.

  Returns the number of layers loaded. Raises when the file is missing or a
  shape differs (a ``tiny`` model cannot take full-width weights).
  """
  if not os.path.isfile(weights_path):
    raise FileNotFoundError(
      f"ImageNet weights file not found: {weights_path} (expected Keras' "
      "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5; nothing is downloaded)"
    )
  reference = keras.applications.ResNet50(
    include_top=False, weights=weights_path, input_shape=model.input_shape[1:]
  )
  loaded = 0
  folded = {}
  names = {own.name for own in model.layers}
  for layer in reference.layers:
    if not layer.weights:
      continue
    target = model.get_layer(layer.name) if layer.name in names else None
    if target is None:
      continue  # conv5 of the reference: Res5a here is new and trained from scratch
    values = layer.get_weights()
    if isinstance(layer, layers.Conv2D) and len(values) == 2 and not target.use_bias:
      # Keras' file has conv biases; ours has none, so the bias moves into the
      # following batch norm's moving mean: BN(Wx + b) with mean m == BN(Wx) with m - b.
      values, bias = values[:1], values[1]
      norm = model.get_layer(layer.name[: -len("conv")] + "bn")
      reference_norm = reference.get_layer(norm.name)
      folded[norm.name] = (reference_norm, bias)
    for mine, theirs in zip(target.weights, values):
      if tuple(mine.shape) != tuple(theirs.shape):
        raise ValueError(
          f"{weights_path}: layer {layer.name} weight of shape {tuple(theirs.shape)} does not fit "
          f"{tuple(mine.shape)}"
        )
    target.set_weights(values)
    loaded += 1
  for name, (reference_norm, bias) in folded.items():
    gamma, beta, mean, variance = reference_norm.get_weights()
    model.get_layer(name).set_weights([gamma, beta, mean - bias, variance])
  return loaded
