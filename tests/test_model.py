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


def test_model_round_trips_through_keras_format(tmp_path):
  tiny = model_lib.build_model(ModelConfig.tiny(64))
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
