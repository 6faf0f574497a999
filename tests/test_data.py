"""Augmentation moves image, 2D and 3D labels together; manifests guard the shards."""

import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import data, geometry, schema, skeletons
from wild3d_tf.config import DataConfig

P2, P3 = skeletons.POSE2D, skeletons.POSE3D


def _records(folder, dataset, split):
  files = data.shard_files(str(folder), dataset, split)
  return [schema.parse(r) for r in tf.data.TFRecordDataset(files)]


def _marker_record(record, joint):
  """The record with its image replaced by black and a white 5 x 5 square at one joint."""
  image = np.zeros((320, 320, 3), np.uint8)
  x, y = np.round(record["joints2d"].numpy()[joint]).astype(int)
  image[y - 2 : y + 3, x - 2 : x + 3] = 255
  out = dict(record)
  out["image/encoded"] = tf.constant(cv2.imencode(".png", image)[1].tobytes())
  out["has_mask"] = tf.constant(0, tf.int64)
  return out, np.array([x, y], float)


def test_a_marker_at_a_joint_lands_at_the_transformed_joint(converted_tiny):
  folder, _ = converted_tiny
  config = DataConfig.tiny(str(folder))
  record = _records(folder, "lsp", "train")[0]
  joint = P2.index("r_wrist")
  marked, _ = _marker_record(record, joint)
  flips, checked = set(), 0
  for seed in range(16):
    out = data.prepare(marked, tf.constant(seed, tf.int64), config, training=True)
    image = out["image"].numpy().max(-1).astype(float)
    ys, xs = np.nonzero(image > 0.5 * image.max())
    centroid = np.array([xs.mean(), ys.mean()])
    flipped = bool(out["flipped"].numpy())
    flips.add(flipped)
    label = P2.flip_permutation[joint] if flipped else joint  # the flip renames r_wrist to l_wrist
    target = out["joints2d"].numpy()[label]
    if not ((target > 4) & (target < 123)).all():
      continue  # the marker is cut by the frame edge; its centroid would not be the joint
    checked += 1
    np.testing.assert_allclose(
      centroid, out["joints2d"].numpy()[label], atol=1.0, err_msg=f"seed {seed}"
    )
  assert flips == {True, False} and checked >= 8


def test_flip_mirrors_and_swaps_2d_and_3d(converted_tiny):
  folder, _ = converted_tiny
  config = DataConfig(
    data_dir=str(folder),
    input_size=128,
    scale_range=0.0,
    rotation_degrees=0.0,
    shift=0.0,
    color=False,
    background_probability=0.0,
  )
  record = _records(folder, "h36m", "train")[3]
  outs = {}
  for seed in range(20):
    out = data.prepare(record, tf.constant(seed, tf.int64), config, training=True)
    outs.setdefault(bool(out["flipped"].numpy()), out)
  plain, flipped = outs[False], outs[True]
  np.testing.assert_allclose(
    flipped["joints2d"].numpy(),
    geometry.flip_joints(plain["joints2d"].numpy(), P2, image_width=128),
    atol=1e-4,
  )
  np.testing.assert_allclose(
    flipped["joints3d"].numpy(), geometry.flip_joints(plain["joints3d"].numpy(), P3), atol=1e-3
  )
  np.testing.assert_array_equal(flipped["image"].numpy(), plain["image"].numpy()[:, ::-1])


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
      out = data.prepare(record, tf.constant(seed, tf.int64), config, training=True)
      residual, scale = _orthographic_residual(out["joints3d"].numpy(), out["joints2d"].numpy())
      # Perspective makes it inexact; a wrong rotation or flip would leave tens of pixels.
      assert residual < 2.5 and scale > 0, (residual, scale)


def test_perspective_correction_round_trips_to_the_camera_frame(converted_tiny):
  folder, _ = converted_tiny
  config = DataConfig.tiny(str(folder))
  for record in _records(folder, "mpi_inf_3dhp_test", "test")[:5]:
    out = data.prepare(record, tf.constant(0, tf.int64), config, training=False)
    camera = geometry.virtual_to_camera(
      out["joints3d"].numpy().astype(np.float64), out["crop_rotation"].numpy()
    )
    truth = record["joints3d"].numpy()
    np.testing.assert_allclose(camera, truth - truth[:1], atol=1e-3)
    assert not np.allclose(out["crop_rotation"].numpy(), np.eye(3), atol=1e-3)


def test_heatmaps_decode_to_the_joints(converted_tiny):
  from wild3d_tf import heatmaps

  folder, _ = converted_tiny
  config = DataConfig.tiny(str(folder))
  out = data.prepare(
    _records(folder, "lspet", "train")[0], tf.constant(1, tf.int64), config, training=True
  )
  decoded, _ = heatmaps.decode(out["heatmaps"][None])
  visible = out["joints2d_visible"].numpy() > 0
  np.testing.assert_allclose(
    decoded.numpy()[0][visible], out["joints2d"].numpy()[visible], atol=0.05
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
    schema.parse(r)["dataset"].numpy().decode()
    for r in data.mixed_records(config, counts, 0).take(400)
  ]
  share = counts["h36m"] / sum(counts.values())
  for window in (names[:100], names[300:]):  # not one dataset after the other
    assert abs(window.count("h36m") / len(window) - share) < 0.2, (window.count("h36m"), share)
  assert names == [
    schema.parse(r)["dataset"].numpy().decode()
    for r in data.mixed_records(config, counts, 0).take(400)
  ]


def test_streams_alternate_and_pipeline_is_deterministic(converted_tiny):
  folder, _ = converted_tiny
  config = DataConfig.tiny(str(folder))
  first = [b["has_3d"].numpy().mean() for b in data.training_dataset(config, "full").take(6)]
  assert first == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
  one = [b["image"].numpy() for b in data.training_dataset(config, "full").take(3)]
  two = [b["image"].numpy() for b in data.training_dataset(config, "full").take(3)]
  for a, b in zip(one, two):
    np.testing.assert_array_equal(a, b)
