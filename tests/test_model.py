"""The network of paper Sec. 3: shapes, the backbone cut, Res5a stride, weights by name."""

import h5py
import keras
from keras.src.legacy.saving import legacy_h5_format
import numpy as np
import pytest

from wild3d_tf import model as model_lib
from wild3d_tf.config import ModelConfig


@pytest.fixture(scope="module")
def full_model():
  return model_lib.build_model(ModelConfig.full(256))


def test_full_model_output_shapes(full_model):
  shapes = {name: tuple(t.shape[1:]) for name, t in full_model.output.items()}
  assert shapes == {
    "heatmaps": (16, 16, 14),
    "f3d": (16, 16, 64),
    "pose3d": (17, 3),
    "camera": (4,),
    "pose2d": (14, 2),
    "heatmaps_res4d": (16, 16, 14),
    "heatmaps_res5a": (16, 16, 14),
  }


def test_full_model_parameter_count(full_model):
  # Catches silent architecture drift; the README quotes this number.
  assert full_model.count_params() == 34_400_567


def test_backbone_stops_at_res4f_and_res5a_has_stride_1(full_model):
  names = [layer.name for layer in full_model.layers]
  assert "conv4_block6_out" in names and "conv4_block7_out" not in names
  assert not any(name.startswith("conv5_") for name in names)
  res4f = full_model.get_layer("conv4_block6_out").output
  res5a = full_model.get_layer("res5a_out").output
  assert tuple(res4f.shape[1:3]) == tuple(res5a.shape[1:3]) == (16, 16)
  assert res5a.shape[-1] == 1024
  for conv in ("res5a_0_conv", "res5a_1_conv", "res5a_2_conv", "res5a_3_conv"):
    assert full_model.get_layer(conv).strides == (1, 1)
  # Res4d is conv4_block4 (a, b, c, d): the intermediate heatmaps come from it and Res5a.
  assert (
    full_model.get_layer("heatmaps_res4d").input is full_model.get_layer("conv4_block4_out").output
  )
  assert full_model.get_layer("heatmaps_res5a").input is res5a
  # h2D is the first 14 channels of F3D.
  assert full_model.get_layer("heatmaps").input is full_model.get_layer("f3d").output


def test_lifting_mlp_topology(full_model):
  for name in ("z", "f3d_fc1", "f3d_fc2", "f3d_fc3", "f3d_fc4"):
    assert full_model.get_layer(name).units == 1024
  fc2, z, residual = (full_model.get_layer(n) for n in ("f3d_fc2", "z", "f3d_residual"))
  assert residual.input[0] is fc2.output and residual.input[1] is z.output
  assert full_model.get_layer("f3d_fc3").input is residual.output
  assert full_model.get_layer("f3d_out").units == 51


def test_tiny_variant_same_topology_smaller():
  tiny = model_lib.build_model(ModelConfig.tiny(128))
  assert tiny.name == "wild3d_tiny_128"  # the variant names the model and sets its widths
  assert tiny.get_layer("z").units == 128 and tiny.get_layer("fc_hidden").units == 32
  assert tiny.get_layer("conv1_conv").filters == 8  # 64 x 1/8
  assert {name: tuple(t.shape[1:]) for name, t in tiny.output.items()}["heatmaps"] == (8, 8, 14)
  assert tiny.count_params() < 1_000_000
  full_names = [layer.name for layer in model_lib.build_model(ModelConfig.full(256)).layers]
  assert [layer.name for layer in tiny.layers] == full_names


def test_projection_is_weak_perspective_of_pose3d():
  tiny = model_lib.build_model(ModelConfig.tiny(64))
  images = np.random.default_rng(0).uniform(0, 255, size=(2, 64, 64, 3)).astype(np.float32)
  out = tiny(images)
  pose3d, camera = np.asarray(out["pose3d"]), np.asarray(out["camera"])
  projected = pose3d[:, model_lib.PROJECTED_JOINTS]
  expected = np.stack(
    [
      camera[:, None, 2] * projected[..., 0] + camera[:, None, 0],
      camera[:, None, 3] * projected[..., 1] + camera[:, None, 1],
    ],
    axis=-1,
  )
  np.testing.assert_allclose(np.asarray(out["pose2d"]), expected, rtol=1e-5, atol=1e-3)
  # f_c's last layer starts at zero: crop centre and the 2 m-person scale.
  np.testing.assert_allclose(camera, [[32, 32, 64 / 2000, 64 / 2000]] * 2, rtol=1e-6)


@pytest.mark.parametrize(
  "config", [ModelConfig.tiny(64), ModelConfig("tiny", 64, stride=8, tie_camera_scales=True)]
)
def test_model_round_trips_through_keras_format(tmp_path, config):
  tiny = model_lib.build_model(config)
  path = tmp_path / "tiny.keras"
  tiny.save(path)
  again = keras.saving.load_model(path)
  images = np.random.default_rng(1).uniform(0, 255, size=(1, 64, 64, 3)).astype(np.float32)
  for name, value in tiny(images).items():
    np.testing.assert_allclose(
      np.asarray(again(images)[name]), np.asarray(value), rtol=1e-5, atol=1e-5
    )


def test_imagenet_weights_load_by_name_from_a_local_file(tmp_path):
  # A stand-in for Keras' ImageNet file: same format (legacy HDF5 weights of
  # keras.applications.ResNet50 without top), random values, random BN statistics.
  keras.utils.set_random_seed(3)
  reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
  rng = np.random.default_rng(3)
  for layer in reference.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      gamma, beta, mean, variance = layer.get_weights()
      layer.set_weights(
        [gamma, beta, rng.normal(size=mean.shape), rng.uniform(0.5, 2.0, size=variance.shape)]
      )
    elif isinstance(layer, keras.layers.Conv2D):
      kernel, bias = layer.get_weights()
      layer.set_weights([kernel, rng.normal(size=bias.shape)])
  path = str(tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
  with h5py.File(path, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, reference)
  model = model_lib.build_model(ModelConfig.full(64), imagenet_weights=path)
  np.testing.assert_array_equal(
    model.get_layer("conv4_block6_3_conv").kernel.numpy(),
    reference.get_layer("conv4_block6_3_conv").kernel.numpy(),
  )
  # Our convs have no bias (the batch norm cancels it): the file's biases are folded into
  # the moving means, so inference up to Res4f matches Keras' own network on the same image.
  image = np.random.default_rng(4).uniform(0, 255, size=(2, 64, 64, 3)).astype(np.float32)
  ours = keras.Model(model.input, model.get_layer("conv4_block6_out").output)(image, training=False)
  theirs = keras.Model(reference.input, reference.get_layer("conv4_block6_out").output)(
    keras.applications.resnet50.preprocess_input(image.copy()), training=False
  )
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-4, atol=1e-3)


def test_missing_weights_file_and_bad_arguments_are_clear():
  with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
    model_lib.build_model(ModelConfig.tiny(64), imagenet_weights="/nonexistent/resnet50.h5")
  with pytest.raises(ValueError, match="variant must be one of"):
    ModelConfig(variant="huge")
  with pytest.raises(TypeError, match="takes a ModelConfig"):
    model_lib.build_model(64)  # the old (input_size, variant) signature
  with pytest.raises(ValueError, match="multiple of 16"):
    ModelConfig(input_size=100)


def test_stride_8_gives_16x16_maps_from_a_dilated_conv4_and_the_same_weights():
  config = ModelConfig(variant="tiny", input_size=128, stride=8)
  assert config.heatmap_size == 16
  tiny = model_lib.build_model(config)
  shapes = {name: tuple(t.shape[1:3]) for name, t in tiny.output.items() if len(t.shape) == 4}
  assert set(shapes.values()) == {(16, 16)} and len(shapes) == 4
  assert tiny.get_layer("conv3_block1_1_conv").strides == (2, 2)  # conv3 keeps its stride
  for name in ("conv4_block1_0_conv", "conv4_block1_1_conv"):
    assert tiny.get_layer(name).strides == (1, 1)
  for block in range(1, 7):
    assert tiny.get_layer(f"conv4_block{block}_2_conv").dilation_rate == (2, 2)
  assert tiny.get_layer("res5a_2_conv").dilation_rate == (2, 2)
  assert tiny.get_layer("conv3_block4_2_conv").dilation_rate == (1, 1)
  # Every weight but z's (it reads the flattened F3D, 4x the cells) has the stride-16 shape,
  # so ImageNet weights and layer names carry over.
  paper = model_lib.build_model(ModelConfig.tiny(128))
  ours = {v.path: tuple(v.shape) for v in tiny.weights}
  theirs = {v.path: tuple(v.shape) for v in paper.weights}
  assert ours.keys() == theirs.keys()
  assert {p for p in ours if ours[p] != theirs[p]} == {"z/kernel"}
  assert ours["z/kernel"] == (16 * 16 * 64, 128)


class _TargetsAsOutput:
  """A stand-in network whose heatmaps are rendered training targets."""

  def __init__(self, maps, input_size):
    self.maps, self.input_shape = maps, (None, input_size, input_size, 3)

  def __call__(self, crops, training=False):
    return {"heatmaps": self.maps, "pose3d": np.zeros((len(crops), 17, 3), np.float32)}


@pytest.mark.parametrize("stride", [16, 8])
def test_inference_decodes_targets_of_either_stride_back_to_the_joints(stride):
  from wild3d_tf import heatmaps, inference

  config = ModelConfig(variant="tiny", input_size=128, stride=stride)
  joints = np.random.default_rng(0).uniform(12, 116, size=(2, 14, 2)).astype(np.float32)
  # As data.prepare renders the targets: at the model's heatmap side and stride.
  maps = heatmaps.encode(
    joints, np.ones((2, 14), np.float32), config.heatmap_size, stride=config.stride
  )
  assert tuple(maps.shape) == (2, config.heatmap_size, config.heatmap_size, 14)
  crops = np.zeros((2, 128, 128, 3), np.uint8)
  decoded = inference.Predictor(_TargetsAsOutput(maps, 128)).on_crops(crops)["joints2d_input"]
  np.testing.assert_allclose(np.asarray(decoded), joints, atol=1.0)


def test_tied_camera_scales_are_equal_and_untied_ones_are_not():
  rng = np.random.default_rng(5)
  images = rng.uniform(0, 255, size=(3, 64, 64, 3)).astype(np.float32)
  cameras = {}
  for tie in (False, True):
    keras.utils.set_random_seed(0)
    tiny = model_lib.build_model(ModelConfig(variant="tiny", input_size=64, tie_camera_scales=tie))
    fc_out = tiny.get_layer("fc_out")
    assert fc_out.units == (3 if tie else 4)  # one raw scale when tied
    # f_c's last layer starts at zero (ax = ay = the 2 m scale): give it random weights.
    fc_out.set_weights([rng.normal(0, 0.5, size=w.shape) for w in fc_out.get_weights()])
    cameras[tie] = np.asarray(tiny(images)["camera"])
    assert cameras[tie].shape == (3, 4)
  np.testing.assert_array_equal(cameras[True][:, 2], cameras[True][:, 3])
  assert np.abs(cameras[False][:, 2] - cameras[False][:, 3]).min() > 1e-4
  assert np.all(cameras[True][:, 2:] > 0)


def test_bad_strides_name_the_flag():
  with pytest.raises(ValueError, match=r"--heatmap_stride\) must be one of \(16, 8\); got 4"):
    ModelConfig(stride=4)
  with pytest.raises(ValueError, match="multiple of 8"):
    ModelConfig(input_size=100, stride=8)
