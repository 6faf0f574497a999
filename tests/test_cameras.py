"""Projection with known intrinsics and distortion; extrinsics; the camera JSON round trip."""

import numpy as np

from wild3d_tf import cameras


def test_pinhole_projection_golden():
  k = cameras.intrinsic_matrix(1000.0, 800.0, 500.0, 400.0)
  points = np.array([[0.0, 0.0, 2000.0], [200.0, -100.0, 2000.0], [1000.0, 500.0, 5000.0]])
  # u = fx X/Z + cx, v = fy Y/Z + cy, by hand.
  expected = np.array([[500.0, 400.0], [600.0, 360.0], [700.0, 480.0]])
  np.testing.assert_allclose(cameras.project(points, k), expected, atol=1e-9)


def test_h36m_distortion_golden():
  # x = 0.1, y = 0.2: r2 = 0.05; radial = 1 + 0.1*0.05 + 0.01*0.0025 + 0.001*0.000125
  # = 1.005025125; tan = p1 y + p2 x = 0.01*0.2 + 0.02*0.1 = 0.004;
  # x' = 0.1 * 1.009025125 + 0.02 * 0.05 = 0.1019025125
  # y' = 0.2 * 1.009025125 + 0.01 * 0.05 = 0.202305025
  xy = cameras.distort_h36m(np.array([0.1, 0.2]), (0.1, 0.01, 0.001), (0.01, 0.02))
  np.testing.assert_allclose(xy, [0.1019025125, 0.202305025], rtol=0, atol=1e-12)
  k = cameras.intrinsic_matrix(1000.0, 1000.0, 500.0, 500.0)
  uv = cameras.project(np.array([100.0, 200.0, 1000.0]), k, (0.1, 0.01, 0.001), (0.01, 0.02))
  np.testing.assert_allclose(uv, [601.9025125, 702.305025], atol=1e-9)


def test_h36m_model_differs_from_opencv_tangential():
  # OpenCV: x' = x*radial + 2 p1 x y + p2 (r2 + 2 x^2); H3.6M has no factor 2.
  x, y, p1, p2 = 0.1, 0.2, 0.01, 0.02
  r2 = x * x + y * y
  opencv_x = x + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
  h36m_x = cameras.distort_h36m(np.array([x, y]), (0, 0, 0), (p1, p2))[0]
  assert abs(opencv_x - h36m_x) > 1e-4


def test_undistort_inverts_distort():
  rng = np.random.default_rng(0)
  xy = rng.uniform(-0.4, 0.4, size=(50, 2))
  radial, tangential = (-0.2071, 0.2478, -0.00308), (-0.001424, -0.000976)
  back = cameras.undistort_h36m(cameras.distort_h36m(xy, radial, tangential), radial, tangential)
  np.testing.assert_allclose(back, xy, atol=1e-9)


def test_pixels_to_normalized_inverts_project():
  rng = np.random.default_rng(1)
  k = cameras.intrinsic_matrix(1145.0, 1143.8, 512.5, 515.5)
  radial, tangential = (-0.2071, 0.2478, -0.00308), (-0.001424, -0.000976)
  points = rng.uniform([-800, -800, 3000], [800, 800, 6000], size=(20, 3))
  uv = cameras.project(points, k, radial, tangential)
  np.testing.assert_allclose(
    cameras.pixels_to_normalized(uv, k, radial, tangential),
    points[:, :2] / points[:, 2:],
    atol=1e-9,
  )


def test_world_camera_round_trip_and_center():
  rotation = cameras.quaternion_to_matrix([0.9, 0.1, -0.3, 0.2])
  center = np.array([1000.0, -2000.0, 1500.0])
  t = cameras.extrinsics_from_center(rotation, center)
  np.testing.assert_allclose(cameras.world_to_camera(center, rotation, t), 0, atol=1e-9)
  points = np.random.default_rng(2).normal(size=(5, 3)) * 1000
  np.testing.assert_allclose(
    cameras.camera_to_world(cameras.world_to_camera(points, rotation, t), rotation, t),
    points,
    atol=1e-9,
  )


def test_quaternion_known_rotation_and_round_trip():
  # 90 degrees about z: x -> y.
  q = [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]
  np.testing.assert_allclose(cameras.quaternion_to_matrix(q) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
  rng = np.random.default_rng(3)
  for _ in range(20):
    q = rng.normal(size=4)
    q = q / np.linalg.norm(q) * np.sign(q[0])
    np.testing.assert_allclose(
      cameras.matrix_to_quaternion(cameras.quaternion_to_matrix(q)), q, atol=1e-9
    )
  # The branch for a small trace (rotation by ~180 degrees).
  q = np.array([0.01, 0.0, 0.99995, 0.0])
  q /= np.linalg.norm(q)
  np.testing.assert_allclose(
    cameras.matrix_to_quaternion(cameras.quaternion_to_matrix(q)), q, atol=1e-9
  )


def test_json_round_trip_reverses_tangential_order():
  camera = cameras.Camera(
    intrinsics=cameras.intrinsic_matrix(1145.05, 1143.78, 512.54, 515.45),
    rotation=cameras.quaternion_to_matrix([0.14, -0.15, -0.76, 0.61]),
    translation=np.array([10.0, 20.0, 5000.0]),
    radial=(-0.2071, 0.2478, -0.00308),
    tangential=(-0.001424, -0.000976),
    size=(1000, 1002),
    name="54138969",
  )
  intrinsic, extrinsic = cameras.camera_to_h36m_json(camera)
  assert intrinsic["tangential_distortion"] == [-0.000976, -0.001424]  # (p2, p1)
  back = cameras.h36m_json_to_camera(intrinsic, extrinsic)
  np.testing.assert_allclose(back.rotation, camera.rotation, atol=1e-12)
  np.testing.assert_allclose(back.translation, camera.translation, atol=1e-9)
  assert back.tangential == camera.tangential and back.radial == camera.radial
  assert back.size == (1000, 1002) and back.name == "54138969"


def test_videopose3d_formula_with_json_order_equals_h36m_model():
  # VideoPose3D: tan = t0 x + t1 y, x' = x (radial + tan) + t0 r2 with
  # (t0, t1) = JSON's tangential_distortion = (p2, p1).
  x, y = 0.15, -0.25
  radial, (p1, p2) = (-0.2, 0.25, -0.003), (-0.0014, -0.001)
  t0, t1 = p2, p1
  r2 = x * x + y * y
  rad = 1 + radial[0] * r2 + radial[1] * r2**2 + radial[2] * r2**3
  tan = t0 * x + t1 * y
  vp3d = [x * (rad + tan) + t0 * r2, y * (rad + tan) + t1 * r2]
  np.testing.assert_allclose(
    cameras.distort_h36m(np.array([x, y]), radial, (p1, p2)), vp3d, atol=1e-15
  )


def test_intrinsics_from_fov():
  k = cameras.intrinsics_from_fov(640, 480, fov_degrees=90.0)
  # tan(45 deg) = 1 so the focal length is half the larger side.
  np.testing.assert_allclose(k, [[320, 0, 319.5], [0, 320, 239.5], [0, 0, 1]])


def test_weak_perspective_golden():
  points = np.array([[[100.0, -50.0, 7.0], [0.0, 0.0, 3.0]]])
  camera = np.array([[10.0, 20.0, 0.5, 2.0]])
  np.testing.assert_allclose(
    cameras.weak_perspective(points, camera), [[[60.0, -80.0], [10.0, 20.0]]]
  )
