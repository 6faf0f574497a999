"""3D pose of the person in your own photos.

    python -m wild3d_tf.predict IMAGE... --saved_model EXPORT/wild3d/1 [--output_dir OUT]
    python -m wild3d_tf.predict IMAGE... --checkpoint MODEL_DIR [--box X0,Y0,X1,Y1]
        [--intrinsics FX,FY,CX,CY]

Runs the exported ``serving_default`` signature (or, with ``--checkpoint``, the
same signature built in process), so the CLI, TF Serving and the tests share
one graph and one set of input checks. For each image it writes
``OUT/<name>.json`` (3D pose in mm in the camera frame, root-relative; 2D
joints in image pixels with confidences; joint names; the crop and camera
used) and ``OUT/<name>.png`` (the 2D skeleton over the image beside the 3D
pose). Inputs that share a file name (``a/img.jpg`` and ``b/img.jpg``, or
``img.jpg`` and ``img.png``) are written as ``<name>-<hash>``, the first 8 hex
digits of the SHA-256 of the input's absolute path, so no input's outputs
replace another's; the ``ok`` line names the files written. Bad or unreadable
files are reported one ``FAILED <path>: <reason>`` line each and skipped; the
exit status is 1 when any failed. A bad flag (--saved_model, --checkpoint,
--output_dir) is one ``error:`` line naming it (the traceback with ``-v 1``).
"""

from __future__ import annotations

from wild3d_tf import cli  # first: quiets TensorFlow's start-up before it is imported

# isort: split

import hashlib
import json
import os
import pathlib
import re
import stat
import sys

from absl import app, flags
import numpy as np
import tensorflow as tf

from wild3d_tf import image_guard, inference, serving_module, skeletons, storage, visualize

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
    "intrinsics",
    None,
    "fx,fy,cx,cy in pixels, for every image "
    f"(default: {inference.DEFAULT_FOV_DEGREES:g} degree field of view).",
  )
  flags.DEFINE_string("output_dir", "predictions", "Where the JSON and PNG files go.")


class PredictError(ValueError):
  """A flag's model or output folder cannot be used; the message names the flag and the path."""


def load_signature(saved_model: str | None, checkpoint: str | None):
  """(``serving_default`` function, its image_guard.Limits). Raises PredictError naming
  --saved_model or --checkpoint when it cannot be loaded, ``checkpoints.CheckpointError``
  when the checkpoint files are damaged."""
  if (saved_model is None) == (checkpoint is None):
    raise app.UsageError("give exactly one of --saved_model and --checkpoint")
  if saved_model:
    try:
      signature = tf.saved_model.load(saved_model).signatures["serving_default"]
    except (OSError, ValueError, KeyError) as error:
      reason = "no serving_default signature" if isinstance(error, KeyError) else error
      raise PredictError(f"--saved_model={saved_model}: {_first_line(reason)}") from error
    return signature, image_guard.Limits()
  try:
    network = inference.load_network(checkpoint)
  except (FileNotFoundError, ValueError) as error:  # load_network's documented refusals
    raise PredictError(f"--checkpoint={checkpoint}: {_first_line(error)}") from error
  module = serving_module.ServingModule(network)
  return module.serve_images, module.limits


def _first_line(error) -> str:
  text = (getattr(error, "message", None) or str(error)).strip()
  return text.splitlines()[0] if text else type(error).__name__


def output_names(paths: list[str]) -> list[str]:
  """One output name per input (without extension), distinct across inputs.

  An input whose file stem no other input shares (compared case-folded, for case-insensitive
  file systems) keeps its stem; the others get ``<stem>-<first 8 hex digits of the SHA-256 of
  the absolute path>``, and, should that still collide, ``-<position>`` after it. The same
  path given twice maps to the same name (the same input, the same outputs).
  """
  absolute = [os.path.abspath(p) for p in paths]
  stems = [pathlib.Path(p).stem for p in paths]
  inputs_by_stem: dict[str, set[str]] = {}
  for stem, path in zip(stems, absolute):
    inputs_by_stem.setdefault(stem.casefold(), set()).add(path)
  names, owner = [], {}
  for index, (stem, path) in enumerate(zip(stems, absolute)):
    name = stem
    if len(inputs_by_stem[stem.casefold()]) > 1:
      name = f"{stem}-{hashlib.sha256(path.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
    if owner.setdefault(name.casefold(), path) != path:
      name = f"{name}-{index}"
      owner[name.casefold()] = path
    names.append(name)
  return names


def read_image_file(path: str, max_bytes: int) -> bytes:
  """The file's bytes, refusing what is not a regular file of a sane size (before reading it).

  ``path`` may be a URL tf.io.gfile knows (gs://): its size is checked from the listing."""
  if not storage.is_local(path):
    try:
      info = tf.io.gfile.stat(path)
      if info.is_directory:
        raise ValueError("not a regular file")
      if info.length == 0:
        raise ValueError("empty file")
      if info.length > max_bytes:
        raise ValueError(f"{info.length} bytes exceed the limit of {max_bytes} bytes")
      return storage.read_bytes(path)
    except tf.errors.OpError as error:
      raise ValueError(f"cannot read: {_first_line(error)}") from None
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
  try:
    return pathlib.Path(path).read_bytes()
  except OSError as error:  # e.g. no read permission, or an I/O error on the medium
    raise ValueError(f"cannot read: {error.strerror or error}") from None


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
  """Predicts each file alone, so one bad file costs only itself; returns the failures, one line
  each. Outputs are named by ``output_names``. Raises PredictError naming --output_dir when an
  output cannot be written (every later one would fail the same way)."""
  try:  # any filesystem tf.io.gfile knows (gs://)
    tf.io.gfile.makedirs(output_dir)
  except tf.errors.OpError as error:
    raise PredictError(f"--output_dir={output_dir}: {_first_line(error)}") from error
  failures = []
  names = output_names(list(paths))
  for path, stem in zip(paths, names):
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
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
    mean_confidence = float(np.mean(outputs["confidence"][0]))
    png = visualize.figure_to_png(
      figure(
        image, outputs, 0, f"{pathlib.Path(path).name} (mean confidence {mean_confidence:.2f})"
      )
    )
    written = storage.join(output_dir, stem)
    try:
      storage.write_text(f"{written}.json", json.dumps(to_json(outputs, 0, path), indent=1))
      storage.write_bytes(f"{written}.png", png)
    except tf.errors.OpError as error:
      raise PredictError(
        f"--output_dir={output_dir}: cannot write {written}: {_first_line(error)}"
      ) from error
    apart = (
      "" if stem == pathlib.Path(path).stem else " (named apart: another input shares its name)"
    )
    print(f"ok {path}: {written}.json, {written}.png{apart}", flush=True)
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
  cli.run(main)
