"""`make demo`: the whole pipeline, end to end, on the synthetic default.

1. ``python -m wild3d_tf.synthetic``: the ``tiny`` preset in the native layouts of
   H3.6M, MPI-INF-3DHP (train and test), MPII, LSP and LSPET, with contact sheets.
2. ``python -m beam_preprocess.convert`` for each dataset: sharded TFRecords,
   TFDS metadata in one folder per dataset under one root, manifests and dead letters in it.
3. ``python -m wild3d_tf.train --flagfile configs/tiny_pretrain2d.cfg``: 2D pre-training.
4. ``python -m wild3d_tf.train --flagfile configs/tiny_full.cfg``: the full model,
   3D and 2D-only batches alternating, from the pre-trained weights.
5. ``python -m wild3d_tf.evaluate``: the paper's 3DHP tables on the synthetic
   MPI-INF-3DHP-format test set.
6. ``python -m wild3d_tf.export``: the SavedModel in TF Serving's layout.
7. ``python -m wild3d_tf.predict``: the exported model on a real photo and on
   a synthetic test frame (JSON and skeleton pictures).
8. Geometry and metrics on real motion: CMU motion capture placed in front of
   an H3.6M-like camera with distortion, cropped and rotated into each crop's
   virtual camera; a stand-in predictor (the crop's ground truth, 8 % too small,
   25 mm noise) is evaluated under the three protocols with and without the
   perspective correction (``report.md``, ``results.json``, ``pck_curves.png``,
   ``skeleton.png``).

Each stage runs the command a user would type (printed before it runs).

  python -m wild3d_tf.demo --output_dir demo_output
"""

from __future__ import annotations

from wild3d_tf import cli  # first: quiets TensorFlow's start-up before it is imported

# isort: split

import json
import os
import pathlib
import subprocess
import sys
import time

from absl import flags, logging
import h5py
import numpy as np

from wild3d_tf import cameras, export, geometry, metrics, preprocess, skeletons, storage, visualize
from wild3d_tf.synthetic import bvh, generate, scene

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "demo_output", "Where the report and pictures go.")
_BVH = flags.DEFINE_string(
  "bvh", str(scene.CMU_DIR / "scaled_131_01.bvh"), "A BVH file in metres (CMU naming)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the simulated prediction noise.")
_STRIDE = flags.DEFINE_integer(
  "stride", 12, "Use every n-th motion frame (120 fps files: 12 = 10 fps)."
)
_PRETRAIN_STEPS = flags.DEFINE_integer(
  "pretrain_steps", 0, "Override the pre-training config's --max_steps (0: keep)."
)
_FULL_STEPS = flags.DEFINE_integer(
  "full_steps", 0, "Override the full config's --max_steps (0: keep; tests use few)."
)


def demo_camera() -> cameras.Camera:
  """A camera with H3.6M's published intrinsics for camera 54138969.

  It stands 2 m high, looking down 10 degrees.
  """
  tilt = np.radians(10.0)
  rotation = np.array(
    [[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]]
  )
  return cameras.Camera(
    intrinsics=cameras.intrinsic_matrix(1145.05, 1143.78, 512.54, 515.45),
    rotation=rotation,
    translation=cameras.extrinsics_from_center(rotation, np.array([0.0, -1000.0, -4500.0])),
    radial=(-0.2071, 0.2478, -0.00308),
    tangential=(-0.001424, -0.000976),
    size=(1000, 1002),
    name="54138969",
  )


def run(bvh_path: str, output_dir: str, seed: int = 0, stride: int = 12) -> dict:
  motion = bvh.read(bvh_path)
  world = bvh.to_pose3d_camera_convention(motion)[::stride]
  # Walk across the image: centre the motion's mean position on the world origin.
  world = world - world[:, :1].mean(0, keepdims=True) * np.array([1.0, 0.0, 1.0])
  world[..., 1] -= world[..., 1].max()  # feet on the floor (y = 0, y down)
  camera = demo_camera()
  gt_cam = camera.world_to_camera(world)
  joints2d = camera.project(skeletons.convert(gt_cam, skeletons.POSE3D, skeletons.POSE2D))
  boxes = geometry.crop_box(joints2d, margin=preprocess.BOX_MARGIN)
  rays = cameras.pixels_to_normalized(
    boxes[:, :2], camera.intrinsics, camera.radial, camera.tangential
  )
  rotation = geometry.virtual_camera_rotation(rays)
  gt_rel = geometry.root_relative(gt_cam)

  rng = np.random.default_rng(seed)
  seen_in_crop = geometry.camera_to_virtual(gt_rel, rotation)
  prediction_virtual = geometry.root_relative(
    0.92 * seen_in_crop + rng.normal(0, 25.0, seen_in_crop.shape)
  )
  corrected = geometry.virtual_to_camera(prediction_virtual, rotation)

  reports = {
    "with perspective correction": metrics.Report.from_poses(corrected, gt_rel),
    "without (virtual frame taken as camera frame)": metrics.Report.from_poses(
      prediction_virtual, gt_rel
    ),
  }
  lines = [  # written through tf.io.gfile (storage): output_dir may be a URL
    f"# wild3d demo: geometry and metrics on {os.path.basename(bvh_path)}",
    "",
    f"{len(world)} poses of real CMU motion, camera {camera.name} intrinsics with distortion, "
    f"crop centres up to {np.degrees(np.arccos(rotation[:, 2, 2])).max():.1f} degrees "
    "off the optical axis.",
    "Simulated prediction: crop-frame ground truth x 0.92 + N(0, 25 mm) per coordinate.",
    "",
  ]
  for name, report in reports.items():
    lines += [f"## {name}", "", report.to_markdown()]
  storage.write_text(storage.join(output_dir, "report.md"), "\n".join(lines))
  results = {name: report.to_json() for name, report in reports.items()}
  storage.write_text(storage.join(output_dir, "results.json"), json.dumps(results, indent=2))

  curves = {name: metrics.pck_curve(r.errors["unscaled"]) for name, r in reports.items()}
  curves["procrustes (either)"] = metrics.pck_curve(
    reports["with perspective correction"].errors["procrustes"]
  )
  storage.write_bytes(
    storage.join(output_dir, "pck_curves.png"),
    visualize.figure_to_png(visualize.pck_curve_figure(curves)),
  )

  frame = int(np.argmax(np.abs(rays[:, 0])))
  fig = visualize.plt.figure(figsize=(10, 5))
  ax = fig.add_subplot(1, 2, 1)
  ax.imshow(np.full((camera.size[1], camera.size[0], 3), 235, np.uint8))
  visualize.draw_skeleton_2d(ax, joints2d[frame])
  cx, cy, side = boxes[frame]
  ax.add_patch(
    visualize.matplotlib.patches.Rectangle((cx - side / 2, cy - side / 2), side, side, fill=False)
  )
  ax.set_title(f"frame {frame * stride}: 2D projection and crop")
  ax3d = fig.add_subplot(1, 2, 2, projection="3d")
  visualize.plot_pose_3d(ax3d, gt_rel[frame], label="ground truth")
  visualize.plot_pose_3d(ax3d, corrected[frame], style="--", label="simulated prediction")
  ax3d.legend(loc="upper left")
  storage.write_bytes(storage.join(output_dir, "skeleton.png"), visualize.figure_to_png(fig))
  return results


CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
PHOTOS = pathlib.Path(__file__).resolve().parent / "demo_data"


def _stage(title: str, command: list[str]) -> None:
  print(f"\n== {title}\n$ {' '.join(command)}", flush=True)
  start = time.perf_counter()
  subprocess.run(command, check=True)
  print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)


def _synthetic_test_frame(test_set: pathlib.Path) -> tuple[pathlib.Path, str]:
  """The first frame of TS1.

  Returns its path and the box around its annotated 2D joints (as a detector would give).
  """
  with h5py.File(test_set / "TS1" / "annot_data.mat", "r") as f:
    joints = np.asarray(f["annot2"][0, 0])
  lo, hi = joints.min(0), joints.max(0)
  return test_set / "TS1" / "imageSequence" / "img_000001.jpg", ",".join(
    f"{v:.1f}" for v in (*lo, *hi)
  )


def _steps(count: int) -> list[str]:
  return [f"--max_steps={count}"] if count else []


def main(argv):
  del argv
  out = pathlib.Path(_OUTPUT_DIR.value).resolve()
  python = sys.executable
  native, records, runs = out / "data", out / "tfrecords", out / "runs"
  evaluation, exported, predictions = out / "evaluation", out / "export", out / "predictions"
  _stage(
    "1/8 synthetic datasets in their native layouts",
    [
      python,
      "-m",
      "wild3d_tf.synthetic",
      f"--out={native}",
      "--preset=tiny",
      f"--seed={_SEED.value}",
      f"--contact_sheets={out}",
    ],
  )
  for dataset, command in generate.conversion_commands(native, records, python).items():
    _stage(f"2/8 Beam conversion: {dataset}", command)
  _stage(
    "3/8 2D pre-training (tiny)",
    [
      python,
      "-m",
      "wild3d_tf.train",
      f"--flagfile={CONFIGS / 'tiny_pretrain2d.cfg'}",
      f"--data_dir={records}",
      f"--model_dir={runs / 'pretrain2d'}",
      f"--seed={_SEED.value}",
      *_steps(_PRETRAIN_STEPS.value),
    ],
  )
  _stage(
    "4/8 full training: 3D and 2D-only batches alternate (tiny)",
    [
      python,
      "-m",
      "wild3d_tf.train",
      f"--flagfile={CONFIGS / 'tiny_full.cfg'}",
      f"--data_dir={records}",
      f"--model_dir={runs / 'full'}",
      f"--init_from={runs / 'pretrain2d'}",
      f"--seed={_SEED.value}",
      *_steps(_FULL_STEPS.value),
    ],
  )
  _stage(
    "5/8 evaluation on the synthetic MPI-INF-3DHP-format test set",
    [
      python,
      "-m",
      "wild3d_tf.evaluate",
      f"--checkpoint={runs / 'full'}",
      f"--data_dir={records}",
      "--dataset=mpi_inf_3dhp_test",
      f"--output_dir={evaluation}",
    ],
  )
  version = export.next_version(str(exported / "wild3d"))
  _stage(
    "6/8 export for TF Serving",
    [
      python,
      "-m",
      "wild3d_tf.export",
      f"--checkpoint={runs / 'full'}",
      f"--export_dir={exported}",
      f"--version={version}",
    ],
  )
  saved_model = f"--saved_model={exported / 'wild3d' / str(version)}"
  _stage(
    "7/8 prediction on a real photo",
    [
      python,
      "-m",
      "wild3d_tf.predict",
      str(PHOTOS / "astronaut.png"),
      saved_model,
      f"--output_dir={predictions}",
    ],
  )
  test_frame, box = _synthetic_test_frame(native / "mpi_inf_3dhp_test_set")
  _stage(
    "7/8 prediction on a synthetic test frame, with the person box from its 2D annotation",
    [
      python,
      "-m",
      "wild3d_tf.predict",
      str(test_frame),
      saved_model,
      f"--box={box}",
      f"--output_dir={predictions}",
    ],
  )
  print("\n== 8/8 geometry and metrics on real CMU motion", flush=True)
  results = run(_BVH.value, str(out), _SEED.value, _STRIDE.value)
  for name, result in results.items():
    overall = result["protocols"]["unscaled"]["subsets"]["All"]
    logging.info("%s: PCK %.1f, MPJPE %.1f mm", name, overall["pck"], overall["mpjpe"])
  print(
    f"\nArtefacts under {out}:\n"
    f"  data/                 synthetic native datasets; synthetic_*.png contact sheets\n"
    f"  tfrecords/<dataset>/  shards, TFDS metadata (manifests, dead letters in tfrecords/)\n"
    f"  runs/pretrain2d, runs/full   checkpoints and TensorBoard logs "
    f"(tensorboard --logdir {runs})\n"
    f"  evaluation/           results.md, results.json, pck_curve.png (synthetic 3DHP test set)\n"
    f"  export/wild3d/{version}/      SavedModel for TF Serving (serving/README.md)\n"
    f"  predictions/          astronaut.json/.png and {test_frame.stem}.json/.png\n"
    f"  report.md, results.json, pck_curves.png, skeleton.png   metrics on real motion\n"
    "The tiny model trains for about a minute on synthetic capsule people: "
    "its numbers show the pipeline works, not what the full model reaches on real data."
  )


if __name__ == "__main__":
  cli.run(main)
