"""Crop boxes, perspective correction, Procrustes, scale alignment and flips."""

import numpy as np
import pytest

from wild3d_tf import cameras, geometry, skeletons


def _random_rotation(rng):
  q = rng.normal(size=4)
  return cameras.quaternion_to_matrix(q)


def test_crop_box_golden():
  joints = np.array([[10.0, 20.0], [110.0, 60.0], [500.0, 500.0]])
  visible = np.array([True, True, False])
  # extent 100 x 40 -> side 100 * (1 + 2 * 0.25) = 150, centre (60, 40).
  np.testing.assert_allclose(geometry.crop_box(joints, visible, margin=0.25), [60.0, 40.0, 150.0])
  np.testing.assert_allclose(
    geometry.crop_box(joints[:1], margin=0.25, min_side=32), [10.0, 20.0, 32.0]
  )


def test_crop_box_ignores_nan_joints_and_rejects_empty_poses():
  joints = np.array([[[0.0, 0.0], [np.nan, np.nan], [10.0, 10.0]]])
  np.testing.assert_allclose(geometry.crop_box(joints, margin=0.0), [[5.0, 5.0, 16.0]])
  with pytest.raises(ValueError, match="no visible joints"):
    geometry.crop_box(np.zeros((2, 3, 2)), np.array([[True] * 3, [False] * 3]), margin=0.2)


def test_crop_matrix_maps_box_edges_to_crop_edges():
  box = np.array([100.0, 50.0, 40.0])
  m = geometry.crop_matrix(box, out_size=8)
  corners = np.array([[80.0, 30.0], [120.0, 70.0], [100.0, 50.0]])
  np.testing.assert_allclose(
    geometry.apply_affine(corners, m), [[-0.5, -0.5], [7.5, 7.5], [3.5, 3.5]]
  )
  back = geometry.apply_affine(geometry.apply_affine(corners, m), np.linalg.inv(m))
  np.testing.assert_allclose(back, corners, atol=1e-12)


def test_crop_intrinsics_project_like_crop_of_projection():
  rng = np.random.default_rng(0)
  k = cameras.intrinsic_matrix(1500.0, 1500.0, 1024.0, 1024.0)
  points = rng.uniform([-500, -900, 3000], [500, 900, 4000], size=(17, 3))
  m = geometry.crop_matrix(np.array([900.0, 1100.0, 700.0]), 256)
  np.testing.assert_allclose(
    cameras.project(points, geometry.crop_intrinsics(k, m)),
    geometry.apply_affine(cameras.project(points, k), m),
    atol=1e-9,
  )


def test_virtual_rotation_maps_crop_centre_ray_to_optical_axis():
  k = cameras.intrinsic_matrix(1500.0, 1400.0, 1000.0, 1050.0)
  center_px = np.array([1700.0, 300.0])
  ray = cameras.pixels_to_normalized(center_px, k)
  rotation = geometry.virtual_camera_rotation(ray)
  np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
  assert np.isclose(np.linalg.det(rotation), 1.0)
  # A point on the ray through the crop centre sits on the virtual optical axis.
  point = 3000.0 * np.append(ray, 1.0)
  virt = geometry.camera_to_virtual(point[None], rotation)[0]
  np.testing.assert_allclose(virt[:2], 0.0, atol=1e-9)
  assert virt[2] > 0
  # No roll: the virtual x axis has no y component in camera coordinates.
  assert abs(rotation[1, 0]) < 1e-15


def test_virtual_rotation_is_yaw_then_pitch():
  x, y = 0.3, -0.2
  m = np.sqrt(1 + x * x)
  yaw, pitch = np.arctan(x), -np.arctan(y / m)
  ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
  rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
  np.testing.assert_allclose(
    geometry.virtual_camera_rotation(np.array([x, y])), ry @ rx, atol=1e-12
  )


def test_virtual_rotation_at_principal_point_is_identity_and_round_trips():
  np.testing.assert_allclose(geometry.virtual_camera_rotation(np.zeros(2)), np.eye(3))
  rng = np.random.default_rng(1)
  rotations = geometry.virtual_camera_rotation(rng.uniform(-0.6, 0.6, size=(4, 2)))
  poses = rng.normal(size=(4, 17, 3)) * 300
  np.testing.assert_allclose(
    geometry.virtual_to_camera(geometry.camera_to_virtual(poses, rotations), rotations),
    poses,
    atol=1e-9,
  )


def test_procrustes_recovers_known_similarity():
  rng = np.random.default_rng(2)
  for _ in range(10):
    pred = rng.normal(size=(17, 3)) * 300
    rotation = _random_rotation(rng)
    scale, translation = rng.uniform(0.5, 2.0), rng.normal(size=3) * 100
    gt = scale * pred @ rotation.T + translation
    aligned, s, r, t = geometry.procrustes(pred, gt)
    np.testing.assert_allclose(aligned, gt, atol=1e-6)
    np.testing.assert_allclose(s, scale, atol=1e-6)
    np.testing.assert_allclose(r, rotation, atol=1e-6)
    np.testing.assert_allclose(t, translation, atol=1e-6)


def test_procrustes_never_returns_a_reflection():
  rng = np.random.default_rng(3)
  pred = rng.normal(size=(8, 17, 3)) * 300
  mirrored = pred * np.array([-1.0, 1.0, 1.0])  # best orthogonal fit is a reflection
  aligned, _, rotation, _ = geometry.procrustes(pred, mirrored)
  np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-9)
  assert (np.abs(aligned - mirrored).max(axis=(1, 2)) > 1.0).all()


def test_procrustes_batched_equals_loop():
  rng = np.random.default_rng(4)
  pred, gt = rng.normal(size=(2, 5, 17, 3))
  batched = geometry.procrustes(pred, gt)[0]
  looped = np.stack([geometry.procrustes(p, g)[0] for p, g in zip(pred, gt)])
  np.testing.assert_allclose(batched, looped, atol=1e-12)


def test_scale_align_golden():
  gt = np.array([[[1.0, 0, 0], [0, 2.0, 0]]])
  np.testing.assert_allclose(geometry.scale_align(gt * 0.5, gt), gt)
  # <P_hat, P> / <P_hat, P_hat> with P_hat = (1,0,0),(0,1,0): (1 + 2) / 2 = 1.5.
  pred = np.array([[[1.0, 0, 0], [0, 1.0, 0]]])
  np.testing.assert_allclose(geometry.scale_align(pred, gt), pred * 1.5)
  np.testing.assert_array_equal(geometry.scale_align(np.zeros_like(gt), gt), 0)


@pytest.mark.parametrize(
  "joint_set", [skeletons.POSE3D, skeletons.POSE2D, skeletons.H36M_32, skeletons.MPII_16]
)
def test_flip_twice_is_identity(joint_set):
  rng = np.random.default_rng(5)
  joints3d = rng.normal(size=(3, joint_set.num_joints, 3))
  np.testing.assert_allclose(
    geometry.flip_joints(geometry.flip_joints(joints3d, joint_set), joint_set), joints3d
  )
  joints2d = rng.uniform(0, 200, size=(3, joint_set.num_joints, 2))
  twice = geometry.flip_joints(geometry.flip_joints(joints2d, joint_set, 200), joint_set, 200)
  np.testing.assert_allclose(twice, joints2d)


def test_flip_swaps_labels_and_mirrors_pixels():
  joints = np.zeros((14, 2))
  joints[skeletons.POSE2D.index("r_wrist")] = [10.0, 5.0]
  flipped = geometry.flip_joints(joints, skeletons.POSE2D, image_width=100)
  np.testing.assert_allclose(flipped[skeletons.POSE2D.index("l_wrist")], [89.0, 5.0])
  np.testing.assert_allclose(flipped[skeletons.POSE2D.index("neck")], [99.0, 0.0])


def test_root_relative():
  pose = np.arange(17 * 3, dtype=float).reshape(17, 3)
  out = geometry.root_relative(pose)
  np.testing.assert_array_equal(out[0], 0)
  np.testing.assert_array_equal(out[5], pose[5] - pose[0])
