"""Metric golden values by hand, the 150 mm edge, and agreement with textbook versions."""

import json

import numpy as np
import pytest

from wild3d_tf import metrics, skeletons

J = 17


def _offset_pose(offsets):
  """gt = 0, prediction = one offset vector per joint."""
  gt = np.zeros((1, len(offsets), 3))
  return np.asarray(offsets, dtype=float)[None], gt


def test_mpjpe_golden_3_4_5():
  pred, gt = _offset_pose([[3.0, 4.0, 0.0], [0.0, 0.0, 10.0], [0.0, 0.0, 0.0]])
  np.testing.assert_allclose(metrics.mpjpe(pred, gt), [(5 + 10 + 0) / 3])


@pytest.mark.parametrize(
  "error,counted", [(149.999, 1.0), (150.0, 0.0), (150.001, 0.0), (0.0, 1.0)]
)
def test_pck_threshold_is_strict(error, counted):
  # (90, 120, 0) * error/150 has length exactly `error` for the 150 mm case.
  pred, gt = _offset_pose([[90.0 * error / 150, 120.0 * error / 150, 0.0]])
  assert metrics.pck3d(pred, gt)[0] == 100.0 * counted


def test_pck_at_exactly_150_from_a_3_4_5_triangle():
  pred, gt = _offset_pose([[90.0, 120.0, 0.0], [0.0, 0.0, 0.0]])
  assert np.linalg.norm([90.0, 120.0]) == 150.0
  assert metrics.pck3d(pred, gt)[0] == 50.0


def test_auc_golden():
  # Error 12 mm: correct at thresholds 15..150 (28 of 31), so AUC = 2800/31.
  pred, gt = _offset_pose([[12.0, 0.0, 0.0]])
  np.testing.assert_allclose(metrics.auc3d(pred, gt), [100 * 28 / 31])
  # Error exactly 0: correct everywhere except at threshold 0 (strict).
  pred, gt = _offset_pose([[0.0, 0.0, 0.0]])
  np.testing.assert_allclose(metrics.auc3d(pred, gt), [100 * 30 / 31])
  # Error exactly 5: wrong at 0 and 5.
  pred, gt = _offset_pose([[0.0, 5.0, 0.0]])
  np.testing.assert_allclose(metrics.auc3d(pred, gt), [100 * 29 / 31])


def test_n_mpjpe_golden():
  gt = np.array([[[100.0, 0, 0], [0, 100.0, 0]]])
  # A prediction half the size is fixed exactly by the scale.
  np.testing.assert_allclose(metrics.n_mpjpe(gt / 2, gt), [0.0], atol=1e-12)
  # P_hat = (100,0,0),(0,0,100): s = 10000/20000 = 0.5; errors |(50,0,0)-(100,0,0)| = 50
  # and |(0,0,50) - (0,100,0)| = sqrt(50^2 + 100^2).
  pred = np.array([[[100.0, 0, 0], [0, 0, 100.0]]])
  np.testing.assert_allclose(metrics.n_mpjpe(pred, gt), [(50 + np.sqrt(12500)) / 2])


def test_pa_mpjpe_zero_for_similar_pose_and_golden_for_reflection_free_case():
  rng = np.random.default_rng(0)
  gt = rng.normal(size=(3, J, 3)) * 200
  angle = 0.7
  rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
  pred = 1.3 * gt @ rot.T + 25.0
  np.testing.assert_allclose(metrics.pa_mpjpe(pred, gt), 0.0, atol=1e-9)
  assert (metrics.mpjpe(pred, gt) > 10).all()
  # Two points symmetric about the origin, prediction collapsed to a point:
  # the best similarity is s = 0, t = mean(gt) = 0, so the error is |gt| = 1.
  gt2 = np.array([[[1.0, 0, 0], [-1.0, 0, 0]]])
  np.testing.assert_allclose(metrics.pa_mpjpe(np.zeros_like(gt2), gt2), [1.0])


def test_metrics_are_zero_and_pck_full_at_ground_truth():
  gt = np.random.default_rng(1).normal(size=(4, J, 3)) * 300
  for fn in (metrics.mpjpe, metrics.n_mpjpe, metrics.pa_mpjpe):
    np.testing.assert_allclose(fn(gt, gt), 0.0, atol=1e-9)
  np.testing.assert_array_equal(metrics.pck3d(gt, gt), 100.0)


def test_shape_errors_are_clear():
  with pytest.raises(ValueError, match=r"\(N, J, 3\)"):
    metrics.mpjpe(np.zeros((2, 17, 3)), np.zeros((2, 16, 3)))
  with pytest.raises(ValueError, match="unknown protocol"):
    metrics.joint_errors(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), "affine")


# --- Independent textbook implementations (written separately from the module) ---


def _textbook_mpjpe(p, g):
  out = []
  for pose_p, pose_g in zip(p, g):
    out.append(
      sum(np.sqrt(sum((a - b) ** 2 for a, b in zip(jp, jg))) for jp, jg in zip(pose_p, pose_g))
      / len(pose_p)
    )
  return np.array(out)


def _textbook_scaled(p, g):
  out = []
  for pose_p, pose_g in zip(p, g):
    s = np.vdot(pose_p, pose_g) / np.vdot(pose_p, pose_p)
    out.append(_textbook_mpjpe([s * pose_p], [pose_g])[0])
  return np.array(out)


def _textbook_procrustes(p, g):
  # 3d-pose-baseline / MATLAB `procrustes` style: normalise both by Frobenius
  # norm, SVD of A = Y0^T X0, flip the last singular vector when det < 0.
  out = []
  for x, y in zip(g, p):  # x = target, y = the pose to transform
    mu_x, mu_y = x.mean(0), y.mean(0)
    x0, y0 = x - mu_x, y - mu_y
    nx, ny = np.linalg.norm(x0), np.linalg.norm(y0)
    x0, y0 = x0 / nx, y0 / ny
    u, s, vt = np.linalg.svd(x0.T @ y0)
    v = vt.T
    t = v @ u.T
    if np.linalg.det(t) < 0:
      v[:, -1] *= -1
      s[-1] *= -1
      t = v @ u.T
    z = nx * s.sum() * (y0 @ t) + mu_x
    out.append(_textbook_mpjpe([z], [x])[0])
  return np.array(out)


def _textbook_pck(p, g, threshold):
  errors = [np.linalg.norm(a - b) for pp, gg in zip(p, g) for a, b in zip(pp, gg)]
  per_pose = np.array(errors).reshape(len(p), -1)
  return np.array([100.0 * sum(e < threshold for e in row) / len(row) for row in per_pose])


def _textbook_auc(p, g):
  return np.mean([_textbook_pck(p, g, t) for t in range(0, 151, 5)], axis=0)


@pytest.fixture
def random_poses():
  rng = np.random.default_rng(42)
  gt = rng.normal(size=(20, J, 3)) * 250
  gt -= gt[:, :1]
  pred = gt * rng.uniform(0.7, 1.3, size=(20, 1, 1)) + rng.normal(size=(20, J, 3)) * 80
  pred -= pred[:, :1]
  return pred, gt


def test_agrees_with_textbook_versions(random_poses):
  pred, gt = random_poses
  np.testing.assert_allclose(metrics.mpjpe(pred, gt), _textbook_mpjpe(pred, gt), rtol=0, atol=1e-6)
  np.testing.assert_allclose(
    metrics.n_mpjpe(pred, gt), _textbook_scaled(pred, gt), rtol=0, atol=1e-6
  )
  np.testing.assert_allclose(
    metrics.pa_mpjpe(pred, gt), _textbook_procrustes(pred, gt), rtol=0, atol=1e-6
  )
  np.testing.assert_allclose(
    metrics.pck3d(pred, gt), _textbook_pck(pred, gt, 150), rtol=0, atol=1e-6
  )
  np.testing.assert_allclose(metrics.auc3d(pred, gt), _textbook_auc(pred, gt), rtol=0, atol=1e-6)


def test_scale_method_alternatives():
  gt = np.array([[[0.0, 0, 0], [0, 300.0, 0], [0, 300.0, 400.0]]])
  pred = gt / 2
  for method in ("lstsq", "norm"):
    np.testing.assert_allclose(metrics.align(pred, gt, "scaled", scale_method=method), gt)
  three = skeletons.JointSet("chain", ("a", "b", "c"), (-1, 0, 1))
  np.testing.assert_allclose(
    metrics.align(pred, gt, "scaled", scale_method="bones", joint_set=three), gt
  )


# --- Report ---


def _report_inputs():
  """Six frames over TS1, TS3, TS5 with a known per-joint offset."""
  gt = np.zeros((6, J, 3))
  pred = np.zeros((6, J, 3))
  pred[:, skeletons.POSE3D.index("l_wrist"), 0] = 200.0  # wrong at every threshold
  pred[:4, skeletons.POSE3D.index("r_knee"), 1] = 100.0  # right at PCK, wrong below 105
  sequences = ["TS1", "TS1", "TS3", "TS3", "TS5", "TS5"]
  activities = [1, 2, 1, 2, 1, 2]
  return pred, gt, sequences, activities


def test_report_hand_computed_table():
  pred, gt, sequences, activities = _report_inputs()
  report = metrics.Report.from_poses(
    pred,
    gt,
    labels={"sequence": sequences, "activity": activities},
    subsets=metrics.scene_subsets_3dhp(sequences),
  )
  gs = report.summary("unscaled", report.subsets["GS"])
  # GS frames: 17 joints, 1 wrong at 150 mm -> 16/17; MPJPE (200 + 100) / 17.
  assert gs["pck"] == pytest.approx(100 * 16 / 17)
  assert gs["mpjpe"] == pytest.approx(300 / 17)
  # AUC: 15 joints right at 30 of 31 thresholds, the knee at 10 (105..150), the wrist never.
  assert gs["auc"] == pytest.approx(100 * (15 * 30 + 10) / (17 * 31))
  outdoor = report.summary("unscaled", report.subsets["Outdoor"])
  assert outdoor["mpjpe"] == pytest.approx(200 / 17)
  overall = report.summary("unscaled", report.subsets["All"])
  assert overall["mpjpe"] == pytest.approx((4 * 300 + 2 * 200) / (6 * 17))
  assert overall["frames"] == 6
  groups = report.by_joint_group("unscaled")
  assert groups["Wrist"]["pck"] == 50.0 and groups["Wrist"]["mpjpe"] == 100.0
  assert groups["Knee"]["mpjpe"] == pytest.approx(4 * 100 / 12)
  assert groups["Hip"]["pck"] == 100.0
  by_seq = report.by_label("sequence", "unscaled")
  assert list(by_seq) == ["TS1", "TS3", "TS5"]
  assert by_seq["TS5"]["pck"] == pytest.approx(100 * 16 / 17)


def test_report_variant_b_counts_14_joints():
  pred, gt, sequences, _ = _report_inputs()
  report = metrics.Report.from_poses(pred, gt, joint_group_variant="B")
  assert len(report.pck_joints) == 14
  assert report.summary("unscaled")["pck"] == pytest.approx(100 * 13 / 14)


def test_report_renders_markdown_and_json():
  pred, gt, sequences, activities = _report_inputs()
  report = metrics.Report.from_poses(
    pred, gt, labels={"activity": activities}, subsets=metrics.scene_subsets_3dhp(sequences)
  )
  markdown = report.to_markdown()
  assert (
    markdown.splitlines()[0]
    == "| Protocol | GS PCK | NoGS PCK | Outdoor PCK | All PCK | AUC | MPJPE (mm) |"
  )
  assert "| unscaled | 94.1 | 94.1 | 94.1 | 94.1 |" in markdown
  assert "| Activity | PCK | AUC | MPJPE (mm) | PA-MPJPE (mm) |" in markdown
  data = json.loads(report.dumps())
  assert set(data["protocols"]) == {"unscaled", "scaled", "procrustes"}
  assert data["protocols"]["unscaled"]["subsets"]["All"]["frames"] == 6
  assert data["protocols"]["unscaled"]["per_joint_mpjpe"]["l_wrist"] == 200.0
  assert "by_activity" in data["protocols"]["procrustes"]


def test_report_rejects_mismatched_labels():
  pred, gt, _, _ = _report_inputs()
  with pytest.raises(ValueError, match="label 'sequence' has 2 values for 6 poses"):
    metrics.Report.from_poses(pred, gt, labels={"sequence": ["TS1", "TS2"]})


def test_pck_curve_pools_pairs():
  errors = np.array([[0.0, 10.0], [20.0, 200.0]])
  curve = metrics.pck_curve(errors, thresholds=[0, 15, 150, 250])
  np.testing.assert_allclose(curve, [0.0, 50.0, 75.0, 100.0])


def test_h36m_average_pooled_over_frames_differs_from_the_mean_over_actions():
  """Action A: 1 frame, every joint 10 mm off; B: 3 frames, 30 mm off. Pooled over frames:
  (10 + 3 * 30) / 4 = 25 mm; the mean of the per-action values (peers' tables): 20 mm."""
  offsets = np.array([10.0, 30.0, 30.0, 30.0])
  gt = np.zeros((4, J, 3))
  pred = gt.copy()
  pred[..., 0] = offsets[:, None]
  report = metrics.Report.from_poses(
    pred, gt, labels={"action": np.array(["A", "B", "B", "B"])}, average_over="action"
  )
  pooled = report.summary("unscaled")
  mean = report.mean_over("action", "unscaled")
  assert pooled["mpjpe"] == pytest.approx(25.0) and mean["mpjpe"] == pytest.approx(20.0)
  assert (mean["frames"], mean["values"]) == (4, 2)
  results = report.to_json()
  unscaled = results["protocols"]["unscaled"]
  assert unscaled["subsets"]["All"]["mpjpe"] == pytest.approx(25.0)
  assert unscaled["mean_over_action"]["mpjpe"] == pytest.approx(20.0)
  assert results["averages"]["subsets"].startswith("pooled over frames")
  assert results["averages"]["mean_over_action"].startswith("unweighted mean of the by_action")
  # AUC: 10 mm is below 28 of the 31 thresholds, 30 mm below 24: pooled 100 / 124, mean 52 / 62.
  assert results["protocols"]["unscaled"]["mean_over_action"]["auc"] == pytest.approx(100 * 52 / 62)
  markdown = report.to_markdown()  # PA-MPJPE 0: Procrustes removes a translation
  assert "| All, pooled over frames | 100.0 | 80.6 | 25.0 | 0.0 |" in markdown
  assert "| mean of the per-action values | 100.0 | 83.9 | 20.0 | 0.0 |" in markdown
  # Without average_over (3DHP) there is no such entry; an unknown label is refused.
  plain = metrics.Report.from_poses(pred, gt, labels={"action": np.array(["A", "B", "B", "B"])})
  assert "mean_over_action" not in plain.to_json()["protocols"]["unscaled"]
  with pytest.raises(ValueError, match="average_over='activity' is not one of the labels"):
    metrics.Report.from_poses(pred, gt, labels={"action": ["A"] * 4}, average_over="activity")
