"""Augmentation moves image, 2D and 3D labels together; manifests guard the shards."""

import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import data, geometry, preprocess, schema, skeletons
from wild3d_tf.config import DataConfig, ModelConfig

P2, P3 = skeletons.POSE2D, skeletons.POSE3D


def _records(folder, dataset, split):
  files = data.shard_files(str(folder), dataset, split)
  return [schema.parse(r) for r in tf.data.TFRecordDataset(files)]


def _marker_record(record, joint):
  """The record with its image replaced by black and a white 5 x 5 square at one joint."""
  image = np.zeros((320, 320, 3), np.uint8)
  x, y = np.round(record[schema.JOINTS2D_CROP_PX].numpy()[joint]).astype(int)
  image[y - 2 : y + 3, x - 2 : x + 3] = 255
  out = dict(record)
  out[schema.IMAGE_CROP_JPEG] = tf.constant(cv2.imencode(".png", image)[1].tobytes())
  out[schema.HAS_MASK] = tf.constant(0, tf.int64)
  return out, np.array([x, y], float)


def test_a_marker_at_a_joint_lands_at_the_transformed_joint(converted_tiny):
  folder, _ = converted_tiny
  config = DataConfig.tiny(str(folder))
  record = _records(folder, "lsp", "train")[0]
  joint = P2.index("r_wrist")
  marked, _ = _marker_record(record, joint)
  flips, checked = set(), 0
  for seed in range(16):
    out = data.prepare(marked, tf.constant(seed, tf.int64), config, True, 128, heatmap_size=None)
    image = out[preprocess.IMAGE].numpy().max(-1).astype(float)
    ys, xs = np.nonzero(image > 0.5 * image.max())
    centroid = np.array([xs.mean(), ys.mean()])
    flipped = bool(out[preprocess.FLIPPED].numpy())
    flips.add(flipped)
    label = P2.flip_permutation[joint] if flipped else joint  # the flip renames r_wrist to l_wrist
    target = out[preprocess.JOINTS2D_INPUT_PX].numpy()[label]
    if not ((target > 4) & (target < 123)).all():
      continue  # the marker is cut by the frame edge; its centroid would not be the joint
    checked += 1
    np.testing.assert_allclose(
      centroid, out[preprocess.JOINTS2D_INPUT_PX].numpy()[label], atol=1.0, err_msg=f"seed {seed}"
    )
  assert flips == {True, False} and checked >= 8


def test_flip_mirrors_and_swaps_2d_and_3d(converted_tiny):
  folder, _ = converted_tiny
  config = DataConfig(
    data_dir=str(folder),
    scale_range=0.0,
    rotation_degrees=0.0,
    shift=0.0,
    color=False,
    background_probability=0.0,
  )
  record = _records(folder, "h36m", "train")[3]
  outs = {}
  for seed in range(20):
    out = data.prepare(record, tf.constant(seed, tf.int64), config, True, 128, heatmap_size=None)
    outs.setdefault(bool(out[preprocess.FLIPPED].numpy()), out)
  plain, flipped = outs[False], outs[True]
  np.testing.assert_allclose(
    flipped[preprocess.JOINTS2D_INPUT_PX].numpy(),
    geometry.flip_joints(plain[preprocess.JOINTS2D_INPUT_PX].numpy(), P2, image_width=128),
    atol=1e-4,
  )
  np.testing.assert_allclose(
    flipped[preprocess.JOINTS3D_VIRTUAL_MM].numpy(),
    geometry.flip_joints(plain[preprocess.JOINTS3D_VIRTUAL_MM].numpy(), P3),
    atol=1e-3,
  )
  np.testing.assert_array_equal(
    flipped[preprocess.IMAGE].numpy(), plain[preprocess.IMAGE].numpy()[:, ::-1]
  )


def _orthographic_residual(pose3d, joints2d):
  """RMS residual of the best scale + translation from (X, Y) of the 3D joints to the 2D joints."""
  xy = skeletons.convert(pose3d, P3, P2)[:, :2]
  a = np.concatenate([xy.reshape(-1, 1), np.kron(np.ones((14, 1)), np.eye(2))], axis=1)
  solution, *_ = np.linalg.lstsq(a, joints2d.reshape(-1), rcond=None)
  return np.sqrt(np.mean((a @ solution - joints2d.reshape(-1)) ** 2)), solution[0]


@pytest.mark.parametrize("dataset", ["h36m", "mpi_inf_3dhp"])
def test_3d_labels_follow_the_2d_augmentation(converted_tiny, dataset):
  folder, _ = converted_tiny
  config = DataConfig.tiny(str(folder))
  for record in _records(folder, dataset, "train")[:4]:
    for seed in range(4):
      out = data.prepare(record, tf.constant(seed, tf.int64), config, True, 128, heatmap_size=None)
      residual, scale = _orthographic_residual(
        out[preprocess.JOINTS3D_VIRTUAL_MM].numpy(), out[preprocess.JOINTS2D_INPUT_PX].numpy()
      )
      # Perspective makes it inexact; a wrong rotation or flip would leave tens of pixels.
      assert residual < 2.5 and scale > 0, (residual, scale)


def test_perspective_correction_round_trips_to_the_camera_frame(converted_tiny):
  folder, _ = converted_tiny
  config = DataConfig.tiny(str(folder))
  for record in _records(folder, "mpi_inf_3dhp_test", "test")[:5]:
    out = data.prepare(record, tf.constant(0, tf.int64), config, False, 128, heatmap_size=None)
    camera = geometry.virtual_to_camera(
      out[preprocess.JOINTS3D_VIRTUAL_MM].numpy().astype(np.float64),
      out[preprocess.CAMERA_FROM_VIRTUAL].numpy(),
    )
    truth = record[schema.JOINTS3D_CAMERA_MM].numpy()
    np.testing.assert_allclose(camera, truth - truth[:1], atol=1e-3)
    assert not np.allclose(out[preprocess.CAMERA_FROM_VIRTUAL].numpy(), np.eye(3), atol=1e-3)


def test_heatmaps_decode_to_the_joints(converted_tiny):
  from wild3d_tf import heatmaps

  folder, _ = converted_tiny
  config = DataConfig.tiny(str(folder))
  record = _records(folder, "lspet", "train")[0]
  heatmap_size = ModelConfig.tiny(128).heatmap_size
  out = data.prepare(record, tf.constant(1, tf.int64), config, True, 128, heatmap_size=heatmap_size)
  decoded, _ = heatmaps.decode(out[preprocess.HEATMAPS][None], stride=128 // heatmap_size)
  visible = out[preprocess.JOINTS2D_VISIBLE].numpy() > 0
  np.testing.assert_allclose(
    decoded.numpy()[0][visible], out[preprocess.JOINTS2D_INPUT_PX].numpy()[visible], atol=0.05
  )


def test_manifest_mismatch_is_refused(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  copy = tmp_path / "copy"
  shutil.copytree(folder, copy)
  shard = sorted(copy.glob("lsp-train.tfrecord-*"))[0]
  shard.unlink()
  with pytest.raises(FileNotFoundError, match="missing"):
    data.shard_files(str(copy), "lsp", "train")
  (copy / "lspet-train.tfrecord-00000-of-00001").write_bytes(b"x")
  with pytest.raises(ValueError, match="SHA-256"):
    data.shard_files(str(copy), "lspet", "train", check_digests=True)
  with pytest.raises(FileNotFoundError, match="no manifest for coco"):
    data.shard_files(str(copy), "coco", "train")


def test_datasets_are_mixed_throughout_in_proportion_to_their_records(converted_tiny):
  folder, manifests = converted_tiny
  config = DataConfig.tiny(str(folder))
  counts = {d: manifests[d]["splits"]["train"]["records"] for d in ("h36m", "mpi_inf_3dhp")}
  names = [
    schema.parse(r)[schema.DATASET].numpy().decode()
    for r in data.mixed_records(config, counts, 0).take(400)
  ]
  share = counts["h36m"] / sum(counts.values())
  for window in (names[:100], names[300:]):  # not one dataset after the other
    assert abs(window.count("h36m") / len(window) - share) < 0.2, (window.count("h36m"), share)
  assert names == [
    schema.parse(r)[schema.DATASET].numpy().decode()
    for r in data.mixed_records(config, counts, 0).take(400)
  ]


def test_streams_alternate_and_pipeline_is_deterministic(converted_tiny):
  folder, _ = converted_tiny
  config = DataConfig.tiny(str(folder))
  heatmap_size = ModelConfig.tiny(128).heatmap_size

  def batches(count):
    return list(
      data.training_dataset(config, "full", input_size=128, heatmap_size=heatmap_size).take(count)
    )

  first = batches(6)
  assert [b[preprocess.HAS_3D].numpy().mean() for b in first] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
  assert first[0][preprocess.HEATMAPS].shape[1:] == (heatmap_size, heatmap_size, 14)
  one = [b[preprocess.IMAGE].numpy() for b in batches(3)]
  two = [b[preprocess.IMAGE].numpy() for b in batches(3)]
  for a, b in zip(one, two):
    np.testing.assert_array_equal(a, b)
