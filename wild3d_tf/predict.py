"""3D pose of the person in your own photos.

    python -m wild3d_tf.predict IMAGE... --saved_model EXPORT/wild3d/1 [--output_dir OUT]
    python -m wild3d_tf.predict IMAGE... --checkpoint MODEL_DIR [--box X0,Y0,X1,Y1] [--intrinsics FX,FY,CX,CY]

Runs the exported ``serving_default`` signature (or, with ``--checkpoint``, the
same signature built in process), so the CLI, TF Serving and the tests share
one graph and one set of input checks. For each image it writes
``OUT/<name>.json`` (3D pose in mm in the camera frame, root-relative; 2D
joints in image pixels with confidences; joint names; the crop and camera
used) and ``OUT/<name>.png`` (the 2D skeleton over the image beside the 3D
pose). Bad files are reported one line each and skipped; the exit status is
1 when any failed.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import stat
import sys

from absl import app, flags
import numpy as np
import tensorflow as tf

from wild3d_tf import image_guard, inference, serving_module, skeletons, visualize

FLAGS = flags.FLAGS


def define_flags():
  """Flags of this entry point (defined only when it runs, so modules can be imported together)."""
  flags.DEFINE_string("saved_model", None, "An exported version folder (EXPORT/wild3d/<version>).")
  flags.DEFINE_string("checkpoint", None, "A training --model_dir, instead of --saved_model.")
  flags.DEFINE_list(
    "box",
    None,
    "Person box x_min,y_min,x_max,y_max in pixels, for every image (default: whole image).",
  )
  flags.DEFINE_list(
    "intrinsics", None, "fx,fy,cx,cy in pixels, for every image (default: 55 degree field of view)."
  )
  flags.DEFINE_string("output_dir", "predictions", "Where the JSON and PNG files go.")


def load_signature(saved_model: str | None, checkpoint: str | None):
  if (saved_model is None) == (checkpoint is None):
    raise app.UsageError("give exactly one of --saved_model and --checkpoint")
  if saved_model:
    return tf.saved_model.load(saved_model).signatures["serving_default"], image_guard.Limits()
  module = serving_module.ServingModule(inference.load_network(checkpoint))
  return module.serve_images, module.limits


def read_image_file(path: str, max_bytes: int) -> bytes:
  """The file's bytes, refusing what is not a regular file of a sane size (before reading it)."""
  try:
    info = os.stat(path)
  except OSError as error:
    raise ValueError(f"cannot open: {error.strerror}") from None
  if not stat.S_ISREG(info.st_mode):
    raise ValueError("not a regular file")
  if info.st_size == 0:
    raise ValueError("empty file")
  if info.st_size > max_bytes:
    raise ValueError(f"{info.st_size} bytes exceed the limit of {max_bytes} bytes")
  return pathlib.Path(path).read_bytes()


def _reason(error: tf.errors.InvalidArgumentError) -> str:
  found = re.search(r"assertion failed: \[(?:image \d+: )?(.*?)\]", error.message)
  return found.group(1) if found else error.message.strip().splitlines()[0]


def _vector(values, name: str) -> np.ndarray:
  if values is None:
    return np.zeros(4, np.float32)
  try:
    vector = np.array([float(v) for v in values], np.float32)
  except ValueError:
    raise app.UsageError(f"--{name} must be four numbers, got {','.join(values)}") from None
  if vector.shape != (4,):
    raise app.UsageError(f"--{name} must be four numbers, got {len(vector)}")
  return vector


def to_json(outputs: dict, index: int, path: str) -> dict:
  take = lambda name: outputs[name][index].numpy()
  return {
    "image": path,
    "pose3d_mm": dict(zip(skeletons.POSE3D.joints, take("pose3d").round(1).tolist())),
    "pose2d_px": dict(zip(skeletons.POSE2D.joints, take("pose2d").round(2).tolist())),
    "confidence": dict(zip(skeletons.POSE2D.joints, take("confidence").round(3).tolist())),
    "crop_box_cx_cy_side": take("crop_box").tolist(),
    "intrinsics": take("intrinsics").tolist(),
    "valid": bool(take("valid")),
    "frame": "pose3d: camera frame (x right, y down, z forward), mm, relative to the pelvis",
  }


def figure(image: np.ndarray, outputs: dict, index: int, title: str):
  take = lambda name: outputs[name][index].numpy()
  fig = visualize.plt.figure(figsize=(10, 5))
  ax = fig.add_subplot(1, 2, 1)
  ax.imshow(image)
  visualize.draw_skeleton_2d(ax, take("pose2d"), visible=take("confidence") > 0.1)
  cx, cy, side = take("crop_box")
  ax.add_patch(
    visualize.matplotlib.patches.Rectangle(
      (cx - side / 2, cy - side / 2), side, side, fill=False, edgecolor="yellow", linestyle="--"
    )
  )
  ax.set_title(title)
  ax.axis("off")
  ax3d = fig.add_subplot(1, 2, 2, projection="3d")
  visualize.plot_pose_3d(ax3d, take("pose3d"))
  ax3d.set_title("3D pose (camera frame, mm)")
  return fig


def predict_files(
  paths, signature, limits: image_guard.Limits, box, intrinsics, output_dir: str
) -> list[str]:
  """Predicts each file alone, so one bad file costs only itself; returns the failures, one line each."""
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  failures = []
  for path in paths:
    try:
      encoded = read_image_file(path, limits.max_bytes)
      outputs = signature(
        images=tf.constant([encoded]),
        boxes=tf.constant(box[None]),
        intrinsics=tf.constant(intrinsics[None]),
      )
    except ValueError as error:
      failures.append(f"{path}: {error}")
      print(f"FAILED {failures[-1]}", flush=True)
      continue
    except tf.errors.InvalidArgumentError as error:
      failures.append(f"{path}: {_reason(error)}")
      print(f"FAILED {failures[-1]}", flush=True)
      continue
    stem = pathlib.Path(path).stem
    (out / f"{stem}.json").write_text(json.dumps(to_json(outputs, 0, path), indent=1))
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
    mean_confidence = float(np.mean(outputs["confidence"][0]))
    (out / f"{stem}.png").write_bytes(
      visualize.figure_to_png(
        figure(
          image, outputs, 0, f"{pathlib.Path(path).name} (mean confidence {mean_confidence:.2f})"
        )
      )
    )
    print(f"ok {path}: {out / stem}.json, {out / stem}.png", flush=True)
  return failures


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError("give one or more image files")
  signature, limits = load_signature(FLAGS.saved_model, FLAGS.checkpoint)
  failures = predict_files(
    paths,
    signature,
    limits,
    _vector(FLAGS.box, "box"),
    _vector(FLAGS.intrinsics, "intrinsics"),
    FLAGS.output_dir,
  )
  print(
    f"{len(paths) - len(failures)} of {len(paths)} images predicted into {FLAGS.output_dir}",
    flush=True,
  )
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  define_flags()
  app.run(main)
