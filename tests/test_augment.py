"""Augmentation batched in the training step: each batched op against its per-image reference
(serving's warp, TF's stock colour ops, the texture drawn alone), the flip, determinism."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import augment, data, preprocess, schema
from wild3d_tf.config import DataConfig


def _images(count, height=320, width=320, seed=0):
  """Random smooth-ish images in [0, 255]: noise plus gradients, so resampling is not trivial."""
  rng = np.random.default_rng(seed)
  ys, xs = np.mgrid[0:height, 0:width]
  base = (xs[None, ..., None] * rng.uniform(0.2, 0.8, (count, 1, 1, 3))) % 256
  return np.clip(base + rng.normal(0, 40, (count, height, width, 3)), 0, 255).astype(np.float32)


def _square_matrices(size, squares, angles):
  return tf.stack(
    [
      preprocess.crop_matrix(tf.constant(square, tf.float64), size, angle)
      for square, angle in zip(squares, angles)
    ]
  )


def test_warp_batch_golden_shift():
  # A 112 px square centred at (120.5, 80.5) in a 112 px crop is the image shifted by (65, 25).
  images = _images(2)
  matrices = _square_matrices(112, [[120.5, 80.5, 112.0]] * 2, [0.0, 0.0])
  warped = preprocess.warp_batch(images, matrices, 112).numpy()
  np.testing.assert_array_equal(warped, np.round(images[:, 25:137, 65:177]))


@pytest.mark.parametrize("size", [64, 256])  # antialiased (shrink 2.7 to 4.7) and direct (< 1.2)
def test_warp_batch_equals_serving_warp_per_image(size):
  images = _images(4, seed=size)
  squares = [[160.0, 150.0, 300.0], [100.0, 210.0, 180.0], [170.0, 170.0, 240.0], [60, 90, 200]]
  angles = [0.0, 0.4, -0.3, 0.1]
  matrices = _square_matrices(size, squares, angles)
  # Image 3 is a 200 x 240 crop at the top left of a zero-padded batch.
  sizes = tf.constant([[320, 320]] * 3 + [[200, 240]], tf.int32)
  padded = images.copy()
  padded[3, 200:] = 0
  padded[3, :, 240:] = 0
  batched = preprocess.warp_batch(padded, matrices, size, sizes).numpy()
  for b in range(4):
    image = padded[b, : sizes[b, 0], : sizes[b, 1]]
    reference = preprocess.warp(tf.constant(image), matrices[b], size).numpy()
    difference = np.abs(batched[b] - reference)
    # Float rounding only: a value landing on .5 may move by one grey level.
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3, (b, difference.max())
    # One image alone gives what it gives in the batch: nothing depends on the other examples.
    alone = preprocess.warp_batch(padded[b : b + 1], matrices[b : b + 1], size, sizes[b : b + 1])
    np.testing.assert_array_equal(alone.numpy()[0], batched[b])


def test_colour_jitter_batch_equals_tf_image_per_image():
  images = _images(3, 24, 24, seed=3)
  seeds = [tf.constant([s, 7], tf.int64) for s in (1, 2, 3)]
  parameters = tf.stack([augment.colour_parameters(s) for s in seeds])
  batched = augment.jitter_colours(tf.constant(images), parameters).numpy()
  for image, seed, out in zip(images, seeds, batched):
    parts = tf.random.experimental.stateless_split(seed, 3)
    reference = tf.image.stateless_random_brightness(image, 0.2 * 255.0, parts[0])
    reference = tf.image.stateless_random_contrast(reference, 0.7, 1.3, parts[1])
    reference = tf.image.stateless_random_saturation(reference, 0.7, 1.3, parts[2])
    np.testing.assert_allclose(out, tf.clip_by_value(reference, 0.0, 255.0), atol=2e-3)
  assert not np.allclose(batched[0], images[0], atol=1.0)  # it did jitter


def test_backgrounds_are_each_examples_own_and_keep_the_foreground():
  images = _images(3, 40, 48, seed=4)
  masks = np.zeros((3, 40, 48, 1), np.float32)
  masks[:, 10:30, 12:36] = 1.0  # the person
  cells = tf.stack([augment.texture_cells(tf.constant([s, 1], tf.int64)) for s in (5, 6, 7)])
  keys = tf.constant([[8, 1], [9, 1], [-10, 2**40]], tf.int64)
  use = tf.constant([True, False, True])
  out = augment.replace_backgrounds(tf.constant(images), tf.constant(masks), cells, keys, use)
  out = out.numpy()
  np.testing.assert_array_equal(out[1], images[1])  # not drawn for: unchanged
  np.testing.assert_array_equal(out[0, 10:30, 12:36], images[0, 10:30, 12:36])
  # The texture of one example, made alone with TF's own bicubic resize.
  for b in (0, 2):
    smooth = tf.image.resize(cells[b][None], [40, 48], method="bicubic")[0]
    noise = augment.texture_noise(keys[b : b + 1], 40, 48)[0]
    texture = tf.clip_by_value(smooth + noise, 0.0, 255.0).numpy()
    np.testing.assert_allclose(out[b, :10], texture[:10], atol=1e-3)
  alone = augment.replace_backgrounds(images[2:], masks[2:], cells[2:], keys[2:], use[2:])
  np.testing.assert_array_equal(alone.numpy()[0], out[2])


def test_texture_noise_golden_statistics_and_the_same_under_xla():
  # lowbias32 of 1, by hand from its definition (xor-shift 16, * 0x7feb352d, xor-shift 15,
  # * 0x846ca68b, xor-shift 16, modulo 2^32).
  assert int(augment._hash32(tf.constant([1], tf.uint32))[0]) == 1753845952
  keys = tf.constant([[3, 4], [3, 5]], tf.int64)
  noise = augment.texture_noise(keys, 64, 80).numpy()
  assert noise.shape == (2, 64, 80, 3)
  assert abs(noise.mean()) < 0.2 and abs(noise.std() - 12.0) < 0.2  # TEXTURE_NOISE, by hand
  assert np.abs(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]) < 0.02  # keys differ
  compiled = tf.function(lambda k: augment.texture_noise(k, 64, 80), jit_compile=True)(keys)
  np.testing.assert_array_equal(compiled.numpy(), noise)


def _staged(converted_tiny, count, dataset="mpi_inf_3dhp", config=None):
  folder, _ = converted_tiny
  config = config or DataConfig(data_dir=str(folder), background_probability=1.0)
  files = data.shard_files(str(folder), dataset, "train")
  records = [schema.parse(r) for r in tf.data.TFRecordDataset(files).take(count)]
  return [
    data.stage_example(r, tf.constant(11 + i, tf.int64), config, True, 64, stored_side=320)
    for i, r in enumerate(records)
  ]


def _batch(examples):
  return {k: tf.stack([e[k] for e in examples]) for k in examples[0]}


def test_finished_batch_equals_the_per_example_path(converted_tiny):
  staged = _staged(converted_tiny, 4)
  batch = _batch(staged)
  assert batch[data.NEW_BACKGROUND].numpy().all() and batch[data.JITTER_COLOUR].numpy().all()
  finished = data.finish_batch(batch, 64, 4)
  assert data.STORED_IMAGE not in finished and finished[preprocess.HEATMAPS].shape == (4, 4, 4, 14)
  for b, example in enumerate(staged):
    # The pipeline's path: TF's fused colour kernels and serving's warp, one example.
    one = data.finish_example(example, 64, 4)
    difference = np.abs(
      finished[preprocess.IMAGE][b].numpy().astype(float) - one[preprocess.IMAGE].numpy()
    )
    # Rounding again (the HSV round trip's order of operations too): a few values move by one.
    assert difference.max() <= 1 and (difference > 0).mean() < 5e-3, b
    assert one.keys() == {k: v for k, v in finished.items()}.keys()
    for key in one:
      if key != preprocess.IMAGE:
        np.testing.assert_array_equal(one[key].numpy(), finished[key][b].numpy(), err_msg=key)
  # And that path is the old chain of stock ops on the decoded crop.
  example = staged[0]
  size = example[data.STORED_SIZE].numpy()
  image = tf.cast(example[data.STORED_IMAGE][: size[0], : size[1]], tf.float32)
  mask = tf.cast(example[data.STORED_MASK][: size[0], : size[1]], tf.float32) / 255.0
  smooth = tf.image.resize(example[data.BACKGROUND_CELLS][None], size, method="bicubic")[0]
  noise = augment.texture_noise(example[data.BACKGROUND_KEYS][None], size[0], size[1])[0]
  image = image * mask + tf.clip_by_value(smooth + noise, 0.0, 255.0) * (1.0 - mask)
  shift, contrast, saturation = example[data.COLOUR].numpy()
  image = tf.image.adjust_contrast(tf.image.adjust_brightness(image, shift), contrast)
  image = tf.clip_by_value(tf.image.adjust_saturation(image, saturation), 0.0, 255.0)
  image = preprocess.warp(image, example[data.INPUT_PX_FROM_STORED_PX], 64)
  if example[preprocess.FLIPPED]:
    image = preprocess.mirror_image(image)
  first = data.finish_example(example, 64, 4)[preprocess.IMAGE].numpy()
  np.testing.assert_allclose(first, image.numpy(), atol=1)


def test_the_flip_mirrors_image_and_heatmaps(converted_tiny):
  (example,) = _staged(converted_tiny, 1, "h36m", DataConfig(data_dir="unused", flip=False))
  mirrored = dict(example)
  mirrored[preprocess.FLIPPED] = tf.constant(True)
  mirrored[preprocess.JOINTS2D_INPUT_PX] = preprocess.mirror_joints2d(
    example[preprocess.JOINTS2D_INPUT_PX], 64
  )
  mirrored[preprocess.JOINTS2D_SUPERVISED] = preprocess.swap_sides_2d(
    example[preprocess.JOINTS2D_SUPERVISED]
  )
  finished = data.finish_batch(_batch([example, mirrored]), 64, 16)
  image, heatmaps = finished[preprocess.IMAGE].numpy(), finished[preprocess.HEATMAPS]
  assert not example[preprocess.FLIPPED].numpy()
  np.testing.assert_array_equal(image[1], image[0][:, ::-1])
  np.testing.assert_allclose(heatmaps[1], preprocess.mirror_heatmaps(heatmaps[0]), atol=1e-6)
  assert heatmaps[0].numpy().max() > 0.5


def test_finishing_is_deterministic_and_xla_agrees(converted_tiny):
  batch = _batch(_staged(converted_tiny, 3))
  graph = tf.function(lambda b: data.finish_batch(b, 64, 4))
  first, second = graph(batch), graph(batch)
  for key in first:
    np.testing.assert_array_equal(first[key].numpy(), second[key].numpy(), err_msg=key)
  compiled = tf.function(lambda b: data.finish_batch(b, 64, 4), jit_compile=True)(batch)
  difference = np.abs(
    compiled[preprocess.IMAGE].numpy().astype(float) - first[preprocess.IMAGE].numpy()
  )
  assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
  np.testing.assert_allclose(compiled[preprocess.HEATMAPS], first[preprocess.HEATMAPS], atol=1e-5)


def test_prepare_in_training_is_stage_then_finish(converted_tiny):
  folder, _ = converted_tiny
  config = DataConfig(data_dir=str(folder))
  files = data.shard_files(str(folder), "mpii", "train")
  records = [schema.parse(r) for r in tf.data.TFRecordDataset(files).take(3)]
  seeds = [tf.constant(s, tf.int64) for s in (4, 5, 6)]
  batch = _batch(
    [data.stage_example(r, s, config, True, 64, stored_side=320) for r, s in zip(records, seeds)]
  )
  finished = data.finish_batch(batch, 64, 4)
  one = data.prepare(records[1], seeds[1], config, True, 64, 4)
  for key, value in one.items():
    if key == preprocess.IMAGE:
      assert np.abs(value.numpy().astype(float) - finished[key][1].numpy()).max() <= 1
    else:
      np.testing.assert_array_equal(value.numpy(), finished[key][1].numpy(), err_msg=key)


@pytest.mark.parametrize("dataset", ["h36m", "mpii"])  # lens distortion; no camera at all
def test_a_staged_batch_equals_the_examples_staged_one_by_one(converted_tiny, dataset):
  folder, _ = converted_tiny
  config = DataConfig(data_dir=str(folder), background_probability=0.5)
  bones = data.bone_length_table(str(folder), ["h36m"])
  files = data.shard_files(str(folder), dataset, "train")
  records = [schema.parse(r) for r in tf.data.TFRecordDataset(files).take(6)]
  seeds = [tf.constant(30 + i, tf.int64) for i in range(6)]
  one_by_one = [
    data.stage_example(r, s, config, True, 64, bones, stored_side=320)
    for r, s in zip(records, seeds)
  ]
  decoded = _batch(
    [
      data.decode_example(r, s, config, True, bones, stored_side=320)
      for r, s in zip(records, seeds)
    ]
  )
  staged = data.stage_batch(decoded, 64)
  assert staged.keys() == one_by_one[0].keys()
  flips = staged[preprocess.FLIPPED].numpy()
  assert 0 < flips.sum() < 6  # both kinds of example in the batch
  for b, example in enumerate(one_by_one):
    for key, value in example.items():
      # float64 geometry may round differently batched (the camera rotation by 1e-16)
      np.testing.assert_allclose(staged[key][b].numpy(), value.numpy(), rtol=1e-12, err_msg=key)
  if dataset == "h36m":  # the undistorted ray is not the distorted one: the lens is used
    assert np.abs(staged[preprocess.CAMERA_FROM_VIRTUAL].numpy() - np.eye(3)).max() > 1e-3


def test_a_crop_larger_than_the_batch_side_is_named(converted_tiny):
  folder, _ = converted_tiny
  files = data.shard_files(str(folder), "mpii", "train")
  record = schema.parse(next(iter(tf.data.TFRecordDataset(files))))
  config = DataConfig(data_dir=str(folder))
  with pytest.raises(tf.errors.InvalidArgumentError, match="larger than the 100 px side"):
    data.stage_example(record, tf.constant(0, tf.int64), config, True, 64, stored_side=100)


def test_the_gpu_benchmark_says_in_one_line_that_there_is_no_gpu(tmp_path):
  root = pathlib.Path(__file__).resolve().parents[1]
  script = root / "benchmarks" / "gpu_train_speed.py"
  result = subprocess.run(
    [sys.executable, str(script), "--data_dir", str(tmp_path)],
    env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3"},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 1 and result.stdout == ""
  assert result.stderr.strip().splitlines()[-1] == (
    "gpu_train_speed: no GPU visible to TensorFlow; nothing measured (this benchmark needs one)"
  )
