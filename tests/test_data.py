"""Augmentation moves image, 2D and 3D labels together; manifests guard the shards."""

import dataclasses
import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import data, geometry, losses, preprocess, schema, skeletons
from wild3d_tf.config import DataConfig, ModelConfig
from wild3d_tf.losses import LossWeights

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
  shard = sorted(copy.glob("lsp/lsp-train.tfrecord-*"))[0]
  shard.unlink()
  with pytest.raises(FileNotFoundError, match="missing"):
    data.shard_files(str(copy), "lsp", "train")
  (copy / "lspet/lspet-train.tfrecord-00000-of-00001").write_bytes(b"x")
  with pytest.raises(ValueError, match="SHA-256"):
    data.shard_files(str(copy), "lspet", "train", check_digests=True)
  with pytest.raises(FileNotFoundError, match="no manifest for coco"):
    data.shard_files(str(copy), "coco", "train")


def test_datasets_are_mixed_throughout_in_proportion_to_their_records(converted_tiny):
  folder, manifests = converted_tiny
  config = DataConfig.tiny(str(folder))
  counts = {d: manifests[d]["splits"]["train"]["records"] for d in ("h36m", "mpi_inf_3dhp")}
  # Read back in NumPy: an eager graph-side parse per record cost about 0.1 s each.
  names = [
    schema.decode_numpy(r.numpy())[schema.DATASET]
    for r in data.mixed_records(config, counts, 0).take(400)
  ]
  share = counts["h36m"] / sum(counts.values())
  for window in (names[:100], names[300:]):  # not one dataset after the other
    assert abs(window.count("h36m") / len(window) - share) < 0.2, (window.count("h36m"), share)
  assert names == [
    schema.decode_numpy(r.numpy())[schema.DATASET]
    for r in data.mixed_records(config, counts, 0).take(400)
  ]


def test_streams_alternate_and_pipeline_is_deterministic(converted_tiny):
  folder, _ = converted_tiny
  config = dataclasses.replace(DataConfig.tiny(str(folder)), augment_in_step=False)
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


def test_joint_masks_2d_golden():
  joints = np.full((14, 2), 32.0)
  joints[3] = [-1.0, 10.0]  # labelled and visible, left of a 64 px crop
  joints[4] = [63.0, 0.0]  # on the last pixel centres: inside
  joints[5] = [10.0, 63.5]  # below the last row
  labelled = np.ones(14, bool)
  labelled[2] = False  # not annotated (its coordinates mean nothing)
  visible = labelled.copy()
  visible[1] = False  # annotated but occluded
  supervised, seen = data.joint_masks_2d(tf.constant(joints), labelled, visible, 64)
  expected = np.ones(14, bool)
  expected[[2, 3, 5]] = False
  np.testing.assert_array_equal(supervised.numpy(), expected)
  expected[1] = False
  np.testing.assert_array_equal(seen.numpy(), expected)


def _fully_labelled_record(folder, dataset="lsp"):
  return next(
    dict(r)
    for r in _records(folder, dataset, "train")
    if (r[schema.JOINTS2D_LABELLED].numpy() > 0).all()
  )


def test_occluded_labelled_joints_are_supervised_and_get_heatmaps(converted_tiny):
  from wild3d_tf import heatmaps

  folder, _ = converted_tiny
  record = _fully_labelled_record(folder)
  wrist, ankle = P2.index("r_wrist"), P2.index("l_ankle")
  labelled = np.ones(14, np.int64)
  labelled[ankle] = 0
  visible = labelled.copy()
  visible[wrist] = 0
  record[schema.JOINTS2D_LABELLED] = tf.constant(labelled)
  record[schema.JOINTS2D_VISIBLE] = tf.constant(visible)
  heatmap_size = ModelConfig.tiny(128).heatmap_size
  out = data.prepare(
    record, tf.constant(0, tf.int64), DataConfig.tiny(str(folder)), False, 128, heatmap_size
  )
  # The crop surrounds the labelled joints: every one is inside, so supervised == labelled.
  np.testing.assert_array_equal(out[preprocess.JOINTS2D_SUPERVISED].numpy(), labelled)
  np.testing.assert_array_equal(out[preprocess.JOINTS2D_VISIBLE].numpy(), visible)
  maps = out[preprocess.HEATMAPS].numpy()
  assert maps[..., ankle].max() == 0  # not annotated: no target
  decoded, peaks = heatmaps.decode(maps[None], stride=128 // heatmap_size)
  assert peaks.numpy()[0, wrist] > 0.5  # occluded but annotated: a target at the joint
  np.testing.assert_allclose(
    decoded.numpy()[0, wrist], out[preprocess.JOINTS2D_INPUT_PX].numpy()[wrist], atol=0.05
  )


def test_labelled_joints_outside_the_crop_are_not_supervised(converted_tiny):
  folder, _ = converted_tiny
  record = _fully_labelled_record(folder)
  # Large shifts, nothing else: some seed pushes joints out of the crop.
  config = DataConfig(
    data_dir=str(folder),
    scale_range=0.0,
    rotation_degrees=0.0,
    shift=0.45,
    flip=False,
    color=False,
    background_probability=0.0,
  )
  for seed in range(32):
    out = data.prepare(record, tf.constant(seed, tf.int64), config, True, 64, heatmap_size=4)
    joints = out[preprocess.JOINTS2D_INPUT_PX].numpy()
    inside = ((joints >= 0) & (joints <= 63)).all(-1)
    if not inside.all():
      break
  assert not inside.all() and inside.any()
  np.testing.assert_array_equal(out[preprocess.JOINTS2D_SUPERVISED].numpy(), inside)
  assert out[preprocess.HEATMAPS].numpy()[..., ~inside].max() == 0


def test_bone_length_targets(converted_tiny):
  folder, _ = converted_tiny
  record = _records(folder, "lsp", "train")[0]
  bones = 10.0 * np.arange(16)
  table = np.stack([100.0 + bones, 300.0 + bones]).astype(np.float32)

  def targets(target):
    config = DataConfig(data_dir=str(folder), bone_length_target=target)
    outs = [
      data.prepare(record, tf.constant(s, tf.int64), config, True, 64, None, bone_table=table)
      for s in range(8)
    ]
    return (
      np.stack([o[preprocess.REFERENCE_BONE_LENGTHS_MM].numpy() for o in outs]),
      {float(o[preprocess.BONE_LENGTHS_SCALE_FREE].numpy()) for o in outs},
    )

  drawn, flags = targets("random_subject")  # the paper's: one subject's row per sample
  assert flags == {0.0} and {int(d[0]) for d in drawn} == {100, 300}
  np.testing.assert_array_equal(drawn[:, 1:] - drawn[:, :1], np.tile(bones[1:], (8, 1)))
  mean, flags = targets("mean_skeleton")
  assert flags == {0.0}
  np.testing.assert_array_equal(mean, np.tile(200.0 + bones, (8, 1)))
  ratios, flags = targets("ratios")  # the mean skeleton, compared by proportions
  assert flags == {1.0}
  np.testing.assert_array_equal(ratios, mean)
  with pytest.raises(ValueError, match="--bone_length_target"):
    DataConfig(data_dir="d", bone_length_target="median")


def _within_and_across(folder, steps):
  config = dataclasses.replace(DataConfig.tiny(str(folder)), augment_in_step=False)
  heatmap_size = ModelConfig.tiny(64).heatmap_size

  def batches(composition, count):
    return list(
      data.training_dataset(
        dataclasses.replace(config, batch_composition=composition),
        "full",
        input_size=64,
        heatmap_size=heatmap_size,
      ).take(count)
    )

  return config, batches("within_step", steps), batches("across_steps", 2 * steps)


def _outputs(batch):
  """Network-like outputs near the labels, a function of each sample alone."""
  hm = batch[preprocess.HEATMAPS] + 0.25
  return {
    "heatmaps": hm,
    "heatmaps_res4d": hm,
    "heatmaps_res5a": hm,
    "pose3d": batch[preprocess.JOINTS3D_VIRTUAL_MM] * 1.5 + 40.0,
    "pose2d": batch[preprocess.JOINTS2D_INPUT_PX] + 3.0,
  }


def test_within_step_batches_hold_both_kinds_and_their_loss_sums_both_means(converted_tiny):
  folder, _ = converted_tiny
  config, within, across = _within_and_across(folder, 2)
  size = config.batch_size
  for k, batch in enumerate(within):
    assert batch[preprocess.IMAGE].shape[0] == 2 * size
    has_3d = batch[preprocess.HAS_3D].numpy()
    np.testing.assert_array_equal(has_3d, [1.0, 0.0] * size)
    # Each half is the batch across_steps reads at steps 2k and 2k + 1, sample for sample.
    for key, value in batch.items():
      np.testing.assert_array_equal(value.numpy()[0::2], across[2 * k][key].numpy(), err_msg=key)
      np.testing.assert_array_equal(value.numpy()[1::2], across[2 * k + 1][key].numpy())
    # The loop's per-replica slices (contiguous) hold both kinds alike, e.g. over 2 replicas.
    assert [has_3d[r * size : (r + 1) * size].mean() for r in range(2)] == [0.5, 0.5]
    # Divided by the batch of one kind, the step's loss is the sum of the two kinds' mean losses.
    whole, terms = losses.total(_outputs(batch), batch, LossWeights(), size, 64)
    parts = [
      losses.total(_outputs(across[i]), across[i], LossWeights(), size, 64)
      for i in (2 * k, 2 * k + 1)
    ]
    assert float(parts[0][0]) > 0 and float(parts[1][0]) > 0
    np.testing.assert_allclose(float(whole), float(parts[0][0] + parts[1][0]), rtol=1e-5)
    for name, value in terms.items():
      np.testing.assert_allclose(
        float(value), float(parts[0][1][name] + parts[1][1][name]), rtol=1e-5, atol=1e-9
      )


def test_a_within_step_stream_resumes_exactly_from_a_checkpoint(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  config = dataclasses.replace(
    DataConfig.tiny(str(folder)), batch_composition="within_step", augment_in_step=True
  )
  dataset = data.training_dataset(config, "full", input_size=64, heatmap_size=4)
  iterator = iter(dataset)
  next(iterator)
  saved = tf.train.Checkpoint(iterator=iterator).save(str(tmp_path / "it"))
  expected = [next(iterator) for _ in range(2)]  # staged batches: crops, labels, draws
  again = iter(dataset)
  tf.train.Checkpoint(iterator=again).restore(saved)
  for batch in expected:
    resumed = next(again)
    assert resumed.keys() == batch.keys() and data.STORED_IMAGE in batch
    for key, value in batch.items():
      np.testing.assert_array_equal(resumed[key].numpy(), value.numpy(), err_msg=key)
