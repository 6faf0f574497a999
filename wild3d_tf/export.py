"""Exports a trained network as a SavedModel that stock TF Serving loads.

    python -m wild3d_tf.export --checkpoint MODEL_DIR --export_dir BASE [--version N]

writes ``BASE/wild3d/<version>/`` (TF Serving's versioned layout; the next
free integer unless ``--version``), float32 whatever the training precision,
with the signatures of ``serving_module`` and, in ``assets.extra/``, warm-up
requests (``tf_serving_warmup_requests``) and ``wild3d.json`` (joint names,
bones, input size, the crop setting, limits). The version folder is written under a temporary
name and renamed when complete, because TF Serving polls BASE/wild3d and
would otherwise try to load a half-written version.

Options are checked before the network loads: a ``--version`` TF Serving would
ignore (not a positive 64-bit integer) or that exists, and limits that refuse
every request or that no gRPC message can carry, are one ``error:`` line naming
the flag (``ExportOptionError``). The ``docker run`` line printed at the end
pins the image, publishes on loopback only and sets the gRPC message cap to the
largest request the limits allow (``grpc_request_bytes``).
"""

from __future__ import annotations

from wild3d_tf import cli  # first: quiets TensorFlow's start-up before it is imported

# isort: split

import json
import os
import pathlib

from absl import flags
import numpy as np
import tensorflow as tf

from wild3d_tf import (
  cameras,
  checkpoints,
  image_guard,
  inference,
  preprocess,
  serving_module,
  skeletons,
  storage,
)

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
  flags.DEFINE_bool(
    "scaled_jpeg_decode",
    True,
    "Decode JPEGs the crop shrinks 4x or more at 1/2, 1/4 or 1/8 size where that divides their "
    "sides (libjpeg's DCT scaling; "
    "crops within a grey level on average, faster: docs/benchmarks.md); false decodes whole.",
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

# The model server image the printed and documented commands pin: the TF Serving release built
# against the TensorFlow this package exports with (setup.py's tensorflow==2.21.*;
# tensorflow-serving-api 2.21.0 is the matching API release).
SERVING_IMAGE = "tensorflow/serving:2.21.0"
# TF Serving reads a version folder's name with safe_strto64 and skips names that do not parse
# (file_system_storage_path_source.cc): a version must be a positive int64 so its folder is all
# digits (0 is excluded: here and in serving/client.py no version means the newest).
MAX_VERSION = 2**63 - 1
# The smallest file the image guard can accept: a 1 x 1 grey PNG (8-byte signature, 25-byte IHDR,
# 22-byte IDAT holding 10 bytes of zlib data, 12-byte IEND). Any JPEG is larger.
MIN_IMAGE_BYTES = 67
# gRPC's own ceiling on a message (a signed 32-bit length); TF Serving reads the value of
# --grpc_channel_arguments as an int32 (model_servers/main.cc), larger values are ignored.
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1


class ExportOptionError(ValueError):
  """An export option TF Serving would ignore, or limits that refuse every request (or that no
  gRPC message can carry); the message names the flag."""


def check_version(version: int | None) -> None:
  """Raises ExportOptionError naming --version unless it is None or in 1..MAX_VERSION."""
  if version is not None and not 1 <= version <= MAX_VERSION:
    raise ExportOptionError(
      f"--version={version}: TF Serving loads only version folders named by a positive 64-bit "
      f"integer (1 to {MAX_VERSION}); it would ignore this one"
    )


def grpc_request_bytes(limits: image_guard.Limits) -> int:
  """An upper bound, in bytes, of a serialized ``serving_default`` PredictRequest within ``limits``.

  Each image is one ``string_val`` of at most ``max_bytes`` bytes plus a 1-byte tag and an up
  to 5-byte length; its box and intrinsics rows are 16 bytes each (``tensor_content``); 4 KiB
  covers the model spec, signature, input names, dtypes and shapes. ``serving/client.py``
  computes the same bound for its channel (tests/test_client.py checks they agree).
  """
  return limits.max_batch * (limits.max_bytes + 6 + 2 * 16) + 4096


def check_limits(limits: image_guard.Limits, input_size: int | None = None) -> None:
  """Raises ExportOptionError naming the flag when ``limits`` would refuse every request:
  --max_batch below 1, --max_image_bytes below the smallest valid image (MIN_IMAGE_BYTES),
  --max_image_side below 1 or below the network's ``input_size`` (every accepted image would be
  upsampled into the crop: a misconfiguration, not a limit); or when the largest request they
  allow exceeds what one gRPC message can carry (GRPC_MAX_MESSAGE_BYTES)."""
  if limits.max_batch < 1:
    raise ExportOptionError(
      f"--max_batch={limits.max_batch}: must be at least 1 (0 refuses every request)"
    )
  if limits.max_bytes < MIN_IMAGE_BYTES:
    raise ExportOptionError(
      f"--max_image_bytes={limits.max_bytes}: below {MIN_IMAGE_BYTES} bytes, the smallest valid "
      "PNG, so every image would be refused"
    )
  smallest_side = max(1, input_size or 1)
  if limits.max_side < smallest_side:
    raise ExportOptionError(
      f"--max_image_side={limits.max_side}: below the network's input of {smallest_side} pixels"
    )
  if limits.max_pixels < 1:
    raise ExportOptionError(f"max_pixels={limits.max_pixels}: refuses every image")
  if grpc_request_bytes(limits) > GRPC_MAX_MESSAGE_BYTES:
    raise ExportOptionError(
      f"--max_batch={limits.max_batch} x --max_image_bytes={limits.max_bytes}: a request of up to "
      f"{grpc_request_bytes(limits)} bytes exceeds gRPC's message limit of "
      f"{GRPC_MAX_MESSAGE_BYTES} bytes"
    )


def serve_command(model_base: str, model_name: str, limits: image_guard.Limits) -> str:
  """The ``docker run`` line that serves ``model_base`` (the folder of numbered versions) with
  the pinned image, published on loopback only, the gRPC message cap sized by ``limits``. A
  local folder is mounted; a URL (gs://) is TF Serving's --model_base_path."""
  if storage.is_local(model_base):
    source = f"-v {pathlib.Path(model_base).resolve()}:/models/{model_name} "
  else:
    source = f"-e MODEL_BASE_PATH={storage.parent(model_base)} "
  return (
    f"docker run --rm -p 127.0.0.1:8500:8500 -p 127.0.0.1:8501:8501 "
    f"{source}-e MODEL_NAME={model_name} {SERVING_IMAGE} "
    f"--grpc_channel_arguments=grpc.max_receive_message_length={grpc_request_bytes(limits)}"
  )


def next_version(model_base: str) -> int:
  names = tf.io.gfile.listdir(model_base) if tf.io.gfile.isdir(model_base) else []
  versions = [int(n.rstrip("/")) for n in names if n.rstrip("/").isdigit()]
  return max(versions, default=0) + 1


def _warmup_requests(model_name: str, input_size: int):
  """PredictionLog records: one per signature, batch 1, a grey image (TF Serving replays them
  at load)."""
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
  limits: image_guard.Limits = image_guard.DEFAULT_LIMITS,
  source: str = "",
  xla: bool = False,
  scaled_decode: bool = True,
) -> str:
  """Writes ``export_dir/model_name/version`` and returns its path (``export_dir`` may be a
  URL: gs://, ram://).

  Raises ExportOptionError naming the flag for a version TF Serving would ignore
  (``check_version``), limits that refuse every request (``check_limits``) or a version
  folder that exists already.
  """
  check_version(version)
  check_limits(limits)
  base = storage.join(export_dir, model_name)
  tf.io.gfile.makedirs(base)
  version = version if version is not None else next_version(base)
  final = storage.join(base, str(version))
  if tf.io.gfile.exists(final):
    raise ExportOptionError(f"--version={version}: {final} exists; pass another or remove it")
  staging = storage.join(base, f".staging-{version}-{os.getpid()}")
  if tf.io.gfile.exists(staging):
    tf.io.gfile.rmtree(staging)
  module = serving_module.ServingModule(network, flip, limits, xla, scaled_decode)
  check_limits(limits, module.input_size)
  tf.saved_model.save(module, staging, signatures=module.signatures())
  extra = storage.join(staging, "assets.extra")
  tf.io.gfile.makedirs(extra)
  with tf.io.TFRecordWriter(storage.join(extra, WARMUP_FILE)) as writer:
    for log in _warmup_requests(model_name, module.input_size):
      writer.write(log.SerializeToString())
  storage.write_text(
    storage.join(extra, "wild3d.json"),
    json.dumps(
      {
        "source": source,
        "input_size": module.input_size,
        "flip_test": flip,
        "xla": xla,
        "scaled_jpeg_decode": scaled_decode,
        # The crop setting training used (preprocess's), for clients that crop themselves.
        "default_fov_degrees": cameras.DEFAULT_FOV_DEGREES,
        "box_margin": preprocess.BOX_MARGIN,
        "min_box_side": preprocess.MIN_BOX_SIDE,
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
    ),
  )
  # TF Serving loads a version once its saved_model.pb is there: that file goes last.
  storage.move_tree(staging, final, last=("saved_model.pb",))
  return final


def main(argv):
  del argv
  limits = image_guard.Limits(
    max_batch=FLAGS.max_batch, max_bytes=FLAGS.max_image_bytes, max_side=FLAGS.max_image_side
  )
  check_version(FLAGS.version)  # before the network loads: a bad flag fails in a second
  check_limits(limits)
  try:
    network = inference.load_network(FLAGS.checkpoint)
  except (FileNotFoundError, ValueError) as error:  # load_network's documented refusals
    raise ExportOptionError(f"--checkpoint={FLAGS.checkpoint}: {error}") from error
  path = export_saved_model(
    network,
    FLAGS.export_dir,
    FLAGS.model_name,
    FLAGS.version,
    FLAGS.flip_test,
    limits,
    source=checkpoints.find_latest_complete(FLAGS.checkpoint),  # the one load_network read
    xla=FLAGS.xla,
    scaled_decode=FLAGS.scaled_jpeg_decode,
  )
  print(f"exported {path} (signatures serving_default, serve_images_only, serve_crops)")
  command = serve_command(storage.parent(path), FLAGS.model_name, limits)
  print(f"serve it (on loopback; see serving/README.md): {command}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
