"""`make demo`: runs what wild3d has so far.

1. Synthetic data: the ``tiny`` preset in the native layouts of H3.6M,
   MPI-INF-3DHP (train and test), MPII, LSP and LSPET under
   ``<output_dir>/data``, with a contact sheet per dataset.
2. Geometry and metrics on real motion: CMU motion capture (real, free) is placed in front of an H3.6M-like
camera with lens distortion, projected to pixels, cropped square around the
2D joints as at test time, and rotated into each crop's virtual camera. A
stand-in for a network (the ground truth as the crop sees it, 8 % too small
and with 25 mm noise per joint) is then evaluated under the three protocols,
once with the perspective correction undone properly and once without it, so
the report shows what the correction is worth. It writes ``report.md``,
``results.json``, ``pck_curves.png`` and ``skeleton.png``.

The full pipeline (synthetic data, Beam, training, export, predict) replaces
this as its parts land; see README.md.

  python -m wild3d_tf.demo --output_dir demo_output
"""

from __future__ import annotations

import json
import os
import pathlib

from absl import app, flags, logging
import numpy as np

from wild3d_tf import cameras, geometry, metrics, skeletons, visualize
from wild3d_tf.synthetic import bvh, generate, scene


_OUTPUT_DIR = flags.DEFINE_string("output_dir", "demo_output", "Where the report and pictures go.")
_BVH = flags.DEFINE_string("bvh", str(scene.CMU_DIR / "scaled_131_01.bvh"),
                           "A BVH file in metres (CMU naming).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the simulated prediction noise.")
_STRIDE = flags.DEFINE_integer("stride", 12, "Use every n-th motion frame (120 fps files: 12 = 10 fps).")


def demo_camera() -> cameras.Camera:
  """A camera with H3.6M's published intrinsics for camera 54138969, 2 m high, looking down 10 degrees."""
  tilt = np.radians(10.0)
  rotation = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
  return cameras.Camera(
      intrinsics=cameras.intrinsic_matrix(1145.05, 1143.78, 512.54, 515.45),
      rotation=rotation,
      translation=cameras.extrinsics_from_center(rotation, np.array([0.0, -1000.0, -4500.0])),
      radial=(-0.2071, 0.2478, -0.00308), tangential=(-0.001424, -0.000976),
      size=(1000, 1002), name="54138969")


def run(bvh_path: str, output_dir: str, seed: int = 0, stride: int = 12) -> dict:
  motion = bvh.read(bvh_path)
  world = bvh.to_pose3d_camera_convention(motion)[::stride]
  # Walk across the image: centre the motion's mean position on the world origin.
  world = world - world[:, :1].mean(0, keepdims=True) * np.array([1.0, 0.0, 1.0])
  world[..., 1] -= world[..., 1].max()  # feet on the floor (y = 0, y down)
  camera = demo_camera()
  gt_cam = camera.world_to_camera(world)
  joints2d = camera.project(skeletons.convert(gt_cam, skeletons.POSE3D, skeletons.POSE2D))
  boxes = geometry.crop_box(joints2d, margin=0.2)
  rays = cameras.pixels_to_normalized(boxes[:, :2], camera.intrinsics, camera.radial, camera.tangential)
  rotation = geometry.virtual_camera_rotation(rays)
  gt_rel = geometry.root_relative(gt_cam)

  rng = np.random.default_rng(seed)
  seen_in_crop = geometry.camera_to_virtual(gt_rel, rotation)
  prediction_virtual = geometry.root_relative(0.92 * seen_in_crop + rng.normal(0, 25.0, seen_in_crop.shape))
  corrected = geometry.virtual_to_camera(prediction_virtual, rotation)

  reports = {"with perspective correction": metrics.Report.from_poses(corrected, gt_rel),
             "without (virtual frame taken as camera frame)": metrics.Report.from_poses(prediction_virtual, gt_rel)}
  os.makedirs(output_dir, exist_ok=True)
  lines = [f"# wild3d demo: geometry and metrics on {os.path.basename(bvh_path)}", "",
           f"{len(world)} poses of real CMU motion, camera {camera.name} intrinsics with distortion, "
           f"crop centres up to {np.degrees(np.arccos(rotation[:, 2, 2])).max():.1f} degrees off the optical axis.",
           "Simulated prediction: crop-frame ground truth x 0.92 + N(0, 25 mm) per coordinate.", ""]
  for name, report in reports.items():
    lines += [f"## {name}", "", report.to_markdown()]
  pathlib.Path(output_dir, "report.md").write_text("\n".join(lines))
  results = {name: report.to_json() for name, report in reports.items()}
  pathlib.Path(output_dir, "results.json").write_text(json.dumps(results, indent=2))

  curves = {name: metrics.pck_curve(r.errors["unscaled"]) for name, r in reports.items()}
  curves["procrustes (either)"] = metrics.pck_curve(reports["with perspective correction"].errors["procrustes"])
  pathlib.Path(output_dir, "pck_curves.png").write_bytes(visualize.figure_to_png(visualize.pck_curve_figure(curves)))

  frame = int(np.argmax(np.abs(rays[:, 0])))
  fig = visualize.plt.figure(figsize=(10, 5))
  ax = fig.add_subplot(1, 2, 1)
  ax.imshow(np.full((camera.size[1], camera.size[0], 3), 235, np.uint8))
  visualize.draw_skeleton_2d(ax, joints2d[frame])
  cx, cy, side = boxes[frame]
  ax.add_patch(visualize.matplotlib.patches.Rectangle((cx - side / 2, cy - side / 2), side, side, fill=False))
  ax.set_title(f"frame {frame * stride}: 2D projection and crop")
  ax3d = fig.add_subplot(1, 2, 2, projection="3d")
  visualize.plot_pose_3d(ax3d, gt_rel[frame], label="ground truth")
  visualize.plot_pose_3d(ax3d, corrected[frame], style="--", label="simulated prediction")
  ax3d.legend(loc="upper left")
  pathlib.Path(output_dir, "skeleton.png").write_bytes(visualize.figure_to_png(fig))
  return results


def main(argv):
  del argv
  data = os.path.join(_OUTPUT_DIR.value, "data")
  print(f"[1/2] synthetic tiny datasets -> {data}")
  seconds = generate.generate(data, "tiny", _SEED.value, contact_sheet_dir=_OUTPUT_DIR.value)
  print(f"      {', '.join(sorted(seconds))} in {sum(seconds.values()):.1f} s; contact sheets "
        f"{_OUTPUT_DIR.value}/synthetic_*.png")
  print("[2/2] geometry and metrics on real CMU motion")
  results = run(_BVH.value, _OUTPUT_DIR.value, _SEED.value, _STRIDE.value)
  for name, result in results.items():
    overall = result["protocols"]["unscaled"]["subsets"]["All"]
    logging.info("%s: PCK %.1f, MPJPE %.1f mm", name, overall["pck"], overall["mpjpe"])
  print(f"      wrote {_OUTPUT_DIR.value}/report.md, results.json, pck_curves.png, skeleton.png")


if __name__ == "__main__":
  app.run(main)
