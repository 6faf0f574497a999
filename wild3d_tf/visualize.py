"""Pictures people look at: skeleton overlays, 3D pose plots, PCK curves.

Matplotlib with the Agg backend, so it works on headless machines and in
TensorBoard callbacks (figures are rendered to PNG bytes).
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from wild3d_tf import metrics, skeletons  # noqa: E402

_LEFT, _RIGHT, _CENTRE = "tab:blue", "tab:red", "tab:gray"


def _bone_colour(joint_set: skeletons.JointSet, child: int) -> str:
  name = joint_set.joints[child].lower()
  if name.startswith(("l_", "left")):
    return _LEFT
  if name.startswith(("r_", "right")):
    return _RIGHT
  return _CENTRE


def draw_skeleton_2d(
  ax,
  joints2d: np.ndarray,
  joint_set: skeletons.JointSet = skeletons.POSE2D,
  visible: np.ndarray | None = None,
  linewidth: float = 2.0,
) -> None:
  """Draws (J, 2) pixel joints on ``ax``; left limbs blue, right red."""
  visible = np.ones(len(joints2d), bool) if visible is None else np.asarray(visible, bool)
  for child, parent in joint_set.bones:
    if visible[child] and visible[parent]:
      ax.plot(
        *joints2d[[child, parent]].T, color=_bone_colour(joint_set, child), linewidth=linewidth
      )
  ax.scatter(*joints2d[visible].T, s=8, color="white", edgecolors="black", linewidths=0.5, zorder=3)


def plot_pose_3d(
  ax,
  pose3d: np.ndarray,
  joint_set: skeletons.JointSet = skeletons.POSE3D,
  style: str = "-",
  label: str | None = None,
) -> None:
  """Plots a (J, 3) camera-frame pose (mm) on a 3D axis, y down turned into z up."""
  for i, (child, parent) in enumerate(joint_set.bones):
    xs, ys, zs = pose3d[[child, parent]].T
    ax.plot(
      xs, zs, -ys, style, color=_bone_colour(joint_set, child), label=label if i == 0 else None
    )
  ax.set_xlabel("x (mm)")
  ax.set_ylabel("z (mm)")
  ax.set_zlabel("-y (mm)")
  centre = pose3d.mean(0)
  radius = max(np.abs(pose3d - centre).max(), 1.0)
  ax.set_xlim(centre[0] - radius, centre[0] + radius)
  ax.set_ylim(centre[2] - radius, centre[2] + radius)
  ax.set_zlim(-centre[1] - radius, -centre[1] + radius)


def pck_curve_figure(curves: dict[str, np.ndarray], thresholds=metrics.AUC_THRESHOLDS_MM):
  """One line per named PCK curve (percent) over ``thresholds`` (mm)."""
  fig, ax = plt.subplots(figsize=(5, 4))
  for name, curve in curves.items():
    ax.plot(thresholds, curve, label=name)
  ax.set_xlabel("threshold (mm)")
  ax.set_ylabel("3D PCK (%)")
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right")
  fig.tight_layout()
  return fig


def figure_to_png(fig) -> bytes:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=100)
  plt.close(fig)
  return buffer.getvalue()
