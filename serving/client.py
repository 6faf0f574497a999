"""A client for a wild3d model behind TensorFlow Serving, over REST or gRPC.

    python serving/client.py photo.jpg [--host localhost] [--protocol rest|grpc] [--timeout 10]

Every call carries a deadline (TF Serving applies none of its own to gRPC),
and images above the model's byte limit are refused here, before they are
sent. REST bodies use TF Serving's columnar ``inputs`` format with binary
strings as ``{"b64": ...}`` (tensorflow_serving/g3doc/api_rest.md); gRPC
uses ``PredictionService/Predict`` from tensorflow-serving-api.
Needs only NumPy for REST; gRPC also needs grpcio, tensorflow and
tensorflow-serving-api.
"""

from __future__ import annotations

import argparse
import base64
import json
import pathlib
import urllib.error
import urllib.request

import numpy as np

MAX_IMAGE_BYTES = 10 * 2**20  # the export's default limit (wild3d_tf.image_guard.Limits)
MAGIC = {"JPEG": b"\xff\xd8\xff", "PNG": b"\x89PNG\r\n\x1a\n"}
SIGNATURE = "serving_default"


class RequestRefused(ValueError):
  """The request was refused before sending (its element is named)."""


class Wild3dClient:
  def __init__(
    self,
    host: str = "localhost",
    rest_port: int = 8501,
    grpc_port: int = 8500,
    model_name: str = "wild3d",
    timeout_seconds: float = 10.0,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    version: int | None = None,
  ):
    if not timeout_seconds or timeout_seconds <= 0:
      raise ValueError(
        "timeout_seconds must be positive: a call without a deadline can hang forever"
      )
    self.host, self.rest_port, self.grpc_port = host, rest_port, grpc_port
    self.model_name, self.version = model_name, version
    self.timeout_seconds = timeout_seconds
    self.max_image_bytes = max_image_bytes
    self._stub = None

  # ------------------------------------------------------------------ inputs

  def _inputs(self, images, boxes, intrinsics):
    images = [bytes(image) for image in images]
    for index, image in enumerate(images):
      if not image:
        raise RequestRefused(f"image {index}: empty")
      if not image.startswith(tuple(MAGIC.values())):
        # Refused here too: under server-side batching one bad image fails every request merged with it.
        raise RequestRefused(f"image {index}: not a JPEG or PNG")
      if len(image) > self.max_image_bytes:
        raise RequestRefused(
          f"image {index}: {len(image)} bytes exceed the limit of {self.max_image_bytes} bytes"
        )
    count = len(images)
    boxes = (
      np.zeros([count, 4], np.float32)
      if boxes is None
      else np.asarray(boxes, np.float32).reshape(count, 4)
    )
    intrinsics = (
      np.zeros([count, 4], np.float32)
      if intrinsics is None
      else np.asarray(intrinsics, np.float32).reshape(count, 4)
    )
    return images, boxes, intrinsics

  def rest_body(self, images, boxes=None, intrinsics=None) -> dict:
    """The JSON body of a REST predict request (columnar format)."""
    images, boxes, intrinsics = self._inputs(images, boxes, intrinsics)
    return {
      "signature_name": SIGNATURE,
      "inputs": {
        "images": [{"b64": base64.b64encode(image).decode("ascii")} for image in images],
        "boxes": boxes.tolist(),
        "intrinsics": intrinsics.tolist(),
      },
    }

  def rest_url(self) -> str:
    version = f"/versions/{self.version}" if self.version else ""
    return f"http://{self.host}:{self.rest_port}/v1/models/{self.model_name}{version}:predict"

  # ------------------------------------------------------------------ calls

  def predict_rest(self, images, boxes=None, intrinsics=None) -> dict:
    body = json.dumps(self.rest_body(images, boxes, intrinsics)).encode("utf-8")
    request = urllib.request.Request(
      self.rest_url(), data=body, headers={"Content-Type": "application/json"}
    )
    try:
      with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
        reply = json.loads(response.read())
    except urllib.error.HTTPError as error:
      detail = error.read().decode("utf-8", "replace")
      raise RuntimeError(f"{self.rest_url()}: HTTP {error.code}: {detail}") from None
    outputs = reply["outputs"]
    return {name: np.asarray(value) for name, value in outputs.items()}

  def predict_grpc(self, images, boxes=None, intrinsics=None) -> dict:
    import grpc  # optional dependencies of the gRPC path
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    images, boxes, intrinsics = self._inputs(images, boxes, intrinsics)
    if self._stub is None:
      limit = 4 * self.max_image_bytes * max(1, len(images)) + 2**20
      channel = grpc.insecure_channel(
        f"{self.host}:{self.grpc_port}",
        options=[
          ("grpc.max_send_message_length", limit),
          ("grpc.max_receive_message_length", 64 * 2**20),
        ],
      )
      self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = self.model_name
    request.model_spec.signature_name = SIGNATURE
    if self.version:
      request.model_spec.version.value = self.version
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.array(images, dtype=object)))
    request.inputs["boxes"].CopyFrom(tf.make_tensor_proto(boxes))
    request.inputs["intrinsics"].CopyFrom(tf.make_tensor_proto(intrinsics))
    reply = self._stub.Predict(request, timeout=self.timeout_seconds)
    return {name: tf.make_ndarray(proto) for name, proto in reply.outputs.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("images", nargs="+")
  parser.add_argument("--host", default="localhost")
  parser.add_argument("--protocol", choices=["rest", "grpc"], default="rest")
  parser.add_argument("--rest_port", type=int, default=8501)
  parser.add_argument("--grpc_port", type=int, default=8500)
  parser.add_argument("--model_name", default="wild3d")
  parser.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, seconds")
  args = parser.parse_args()
  client = Wild3dClient(args.host, args.rest_port, args.grpc_port, args.model_name, args.timeout)
  images = [pathlib.Path(p).read_bytes() for p in args.images]
  outputs = (client.predict_rest if args.protocol == "rest" else client.predict_grpc)(images)
  for index, path in enumerate(args.images):
    names = [n.decode() if isinstance(n, bytes) else n for n in outputs["joint_names_3d"][index]]
    pose = dict(zip(names, np.round(outputs["pose3d"][index], 1).tolist()))
    print(json.dumps({"image": path, "pose3d_mm": pose}))


if __name__ == "__main__":
  main()
