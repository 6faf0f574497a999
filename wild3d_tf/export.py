"""Exports a trained network as a SavedModel that stock TF Serving loads.

    python -m wild3d_tf.export --checkpoint MODEL_DIR --export_dir BASE [--version N]

writes ``BASE/wild3d/<version>/`` (TF Serving's versioned layout; the next
free integer unless ``--version``), float32 whatever the training precision,
with the signatures of ``serving_module`` and, in ``assets.extra/``, warm-up
requests (``tf_serving_warmup_requests``) and ``wild3d.json`` (joint names,
bones, input size, limits). The version folder is written under a temporary
name and renamed when complete, because TF Serving polls BASE/wild3d and
would otherwise try to load a half-written version.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

from absl import app, flags
import numpy as np
import tensorflow as tf

from wild3d_tf import image_guard, inference, serving_module, skeletons

FLAGS = flags.FLAGS


def define_flags():
  """Flags of this entry point (defined only when it runs, so modules can be imported together)."""
  flags.DEFINE_string(
    "checkpoint", None, "A training --model_dir; its newest checkpoint is exported."
  )
  flags.DEFINE_string(
    "export_dir", None, "Base folder; the model goes to <export_dir>/<model_name>/<version>/."
  )
  flags.DEFINE_string("model_name", "wild3d", "TF Serving model name (folder under --export_dir).")
  flags.DEFINE_integer(
    "version", None, "Version number (default: one more than the newest present)."
  )
  flags.DEFINE_bool(
    "flip_test", False, "Average with the horizontally flipped crop (twice the compute)."
  )
  flags.DEFINE_bool(
    "xla", False, "Compile the network part of each signature with XLA (see docs/benchmarks.md)."
  )
  flags.DEFINE_integer(
    "max_batch", image_guard.Limits.max_batch, "Largest batch a request may carry."
  )
  flags.DEFINE_integer(
    "max_image_bytes", image_guard.Limits.max_bytes, "Largest encoded image, bytes."
  )
  flags.DEFINE_integer("max_image_side", image_guard.Limits.max_side, "Largest image side, pixels.")
  flags.mark_flags_as_required(["checkpoint", "export_dir"])


WARMUP_FILE = "tf_serving_warmup_requests"


def next_version(model_base: pathlib.Path) -> int:
  versions = [int(p.name) for p in model_base.glob("*") if p.is_dir() and p.name.isdigit()]
  return max(versions, default=0) + 1


def _warmup_requests(model_name: str, input_size: int):
  """PredictionLog records: one per signature, batch 1, a grey image (TF Serving replays them at load)."""
  from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2  # export-time only

  grey = tf.io.encode_jpeg(tf.fill([input_size, input_size, 3], tf.constant(128, tf.uint8))).numpy()
  focal = float(input_size)
  requests = {
    "serving_default": {
      "images": np.array([grey], object),
      "boxes": np.zeros([1, 4], np.float32),
      "intrinsics": np.zeros([1, 4], np.float32),
    },
    "serve_images_only": {"images": np.array([grey], object)},
    "serve_crops": {
      "crops": np.full([1, input_size, input_size, 3], 128.0, np.float32),
      "intrinsics": np.array(
        [[[focal, 0, (input_size - 1) / 2], [0, focal, (input_size - 1) / 2], [0, 0, 1]]],
        np.float32,
      ),
    },
  }
  for signature, inputs in requests.items():
    request = predict_pb2.PredictRequest(
      model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
    )
    for name, value in inputs.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    yield prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def export_saved_model(
  network,
  export_dir: str,
  model_name: str = "wild3d",
  version: int | None = None,
  flip: bool = False,
  limits: image_guard.Limits = image_guard.Limits(),
  source: str = "",
  xla: bool = False,
) -> pathlib.Path:
  """Writes ``export_dir/model_name/version`` and returns its path."""
  base = pathlib.Path(export_dir) / model_name
  base.mkdir(parents=True, exist_ok=True)
  version = version or next_version(base)
  final = base / str(version)
  if final.exists():
    raise FileExistsError(f"{final} exists; pass another --version or remove it")
  staging = base / f".staging-{version}-{os.getpid()}"
  shutil.rmtree(staging, ignore_errors=True)
  module = serving_module.ServingModule(network, flip, limits, xla)
  tf.saved_model.save(module, str(staging), signatures=module.signatures())
  extra = staging / "assets.extra"
  extra.mkdir()
  with tf.io.TFRecordWriter(str(extra / WARMUP_FILE)) as writer:
    for log in _warmup_requests(model_name, module.input_size):
      writer.write(log.SerializeToString())
  (extra / "wild3d.json").write_text(
    json.dumps(
      {
        "source": source,
        "input_size": module.input_size,
        "flip_test": flip,
        "xla": xla,
        "default_fov_degrees": inference.DEFAULT_FOV_DEGREES,
        "box_margin": inference.BOX_MARGIN,
        "limits": limits.__dict__,
        "joints_3d": list(skeletons.POSE3D.joints),
        "bones_3d": [list(b) for b in skeletons.POSE3D.bones],
        "joints_2d": list(skeletons.POSE2D.joints),
        "bones_2d": [list(b) for b in skeletons.POSE2D.bones],
        "units": {
          "pose3d": "mm, camera frame, root-relative (pelvis)",
          "pose2d": "pixels of the input image",
        },
      },
      indent=1,
    )
  )
  os.rename(staging, final)
  return final


def main(argv):
  del argv
  network = inference.load_network(FLAGS.checkpoint)
  limits = image_guard.Limits(
    max_batch=FLAGS.max_batch, max_bytes=FLAGS.max_image_bytes, max_side=FLAGS.max_image_side
  )
  path = export_saved_model(
    network,
    FLAGS.export_dir,
    FLAGS.model_name,
    FLAGS.version,
    FLAGS.flip_test,
    limits,
    source=tf.train.latest_checkpoint(FLAGS.checkpoint),
    xla=FLAGS.xla,
  )
  print(f"exported {path} (signatures serving_default, serve_images_only, serve_crops)")
  print(
    f"serve it: docker run -p 8501:8501 -v {path.parent.resolve()}:/models/{FLAGS.model_name} "
    f"-e MODEL_NAME={FLAGS.model_name} tensorflow/serving"
  )


if __name__ == "__main__":
  define_flags()
  app.run(main)
