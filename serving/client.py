"""A client for a wild3d model behind TensorFlow Serving, over REST or gRPC.

    python serving/client.py photo.jpg [--host localhost] [--protocol rest|grpc] [--timeout 10]
        [--box X0,Y0,X1,Y1] [--intrinsics FX,FY,CX,CY] [--version N]

Every call carries a deadline (TF Serving applies none of its own to gRPC),
and images above the model's byte limit are refused here, before they are
sent. REST bodies use TF Serving's columnar ``inputs`` format with binary
strings as ``{"b64": ...}`` (tensorflow_serving/g3doc/api_rest.md); gRPC
uses ``PredictionService/Predict`` from tensorflow-serving-api.
Needs only NumPy for REST; gRPC also needs grpcio, tensorflow and
tensorflow-serving-api. The command line prints one JSON line per image, or
one ``error:`` line (exit status 1) when a file cannot be read, the request is
refused here, or the server is unreachable, slow or answers with an error.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import pathlib
import socket
import sys
import threading
import time
import urllib.parse

import numpy as np

# The export's default limits (wild3d_tf.image_guard.Limits); this file stands alone, so they are
# repeated here and tests/test_client.py checks they agree.
MAX_IMAGE_BYTES = 10 * 2**20
MAX_BATCH = 32
MAGIC = {"JPEG": b"\xff\xd8\xff", "PNG": b"\x89PNG\r\n\x1a\n"}
SIGNATURE = "serving_default"


class RequestRefused(ValueError):
  """The request was refused before sending (its element is named)."""


def grpc_message_limit(max_batch: int, max_image_bytes: int) -> int:
  """Bytes of the largest serialized PredictRequest of ``max_batch`` images of up to
  ``max_image_bytes``: wild3d_tf.export.grpc_request_bytes's bound, which the documented server's
  ``grpc.max_receive_message_length`` is set to (an image's 1-byte tag and up to 5-byte length,
  16-byte box and intrinsics rows, 4 KiB of names, shapes and model spec)."""
  return max_batch * (max_image_bytes + 6 + 2 * 16) + 4096


def _post_within(url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
  """(status, reply body) of a JSON POST to ``url``, all within ``timeout`` seconds.

  A socket timeout bounds each read, not the call: a server that sends a byte now and then
  would hold the call for ever. So a timer shuts the connection down at the deadline (which
  also ends a stalled connect, send or header read), and each body read waits at most the
  time left. Raises TimeoutError naming the URL past the deadline.
  """
  deadline = time.monotonic() + timeout
  parts = urllib.parse.urlsplit(url)
  connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
  expired = threading.Event()
  # The connected socket, kept here: the connection drops it once a reply says it will close.
  sockets = []
  response = None

  def expire():
    expired.set()
    for sock in sockets:
      try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv or send blocked in the caller
      except OSError:
        pass

  timer = threading.Timer(timeout, expire)
  timer.daemon = True
  timer.start()
  try:
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    connection.connect()
    sockets.append(connection.sock)
    if expired.is_set():  # the timer fired while connecting
      raise TimeoutError(f"{url}: no complete reply within {timeout} s")
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    chunks = []
    while True:
      remaining = deadline - time.monotonic()
      if remaining <= 0 or expired.is_set():
        raise TimeoutError(f"{url}: no complete reply within {timeout} s")
      sockets[0].settimeout(remaining)
      chunk = response.read1(2**16)  # one socket read at most, so the deadline is checked
      if not chunk:
        break
      chunks.append(chunk)
    if expired.is_set():  # the timer's shutdown ends the reads like an end of reply
      raise TimeoutError(f"{url}: no complete reply within {timeout} s")
    if response.length:  # the server closed before its Content-Length was sent
      raise http.client.IncompleteRead(b"".join(chunks), response.length)
    return response.status, b"".join(chunks)
  except (OSError, http.client.HTTPException) as error:
    if expired.is_set() or time.monotonic() >= deadline:
      raise TimeoutError(f"{url}: no complete reply within {timeout} s") from None
    if isinstance(error, OSError):
      raise
    raise OSError(f"{url}: {type(error).__name__}: {error}") from None
  finally:
    timer.cancel()
    if response is not None:
      response.close()
    connection.close()


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
    max_batch: int = MAX_BATCH,
  ):
    if not timeout_seconds or timeout_seconds <= 0:
      raise ValueError(
        "timeout_seconds must be positive: a call without a deadline can hang forever"
      )
    self.host, self.rest_port, self.grpc_port = host, rest_port, grpc_port
    self.model_name, self.version = model_name, version
    self.timeout_seconds = timeout_seconds
    self.max_image_bytes, self.max_batch = max_image_bytes, max_batch
    self._stub = None

  # ------------------------------------------------------------------ inputs

  def _inputs(self, images, boxes, intrinsics):
    images = [bytes(image) for image in images]
    if len(images) > self.max_batch:
      raise RequestRefused(f"{len(images)} images exceed the batch limit of {self.max_batch}")
    for index, image in enumerate(images):
      if not image:
        raise RequestRefused(f"image {index}: empty")
      if not image.startswith(tuple(MAGIC.values())):
        # Refused here too: under server-side batching one bad image fails every request
        # merged with it.
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
    """Outputs of a REST predict call, within ``timeout_seconds`` for the whole call.

    Raises TimeoutError (an OSError) naming the URL when no complete reply came in time,
    RuntimeError naming the URL and status on an HTTP error, OSError when unreachable.
    """
    body = json.dumps(self.rest_body(images, boxes, intrinsics)).encode("utf-8")
    status, data = _post_within(self.rest_url(), body, self.timeout_seconds)
    if status != 200:
      detail = data.decode("utf-8", "replace")
      raise RuntimeError(f"{self.rest_url()}: HTTP {status}: {detail}")
    outputs = json.loads(data)["outputs"]
    return {name: np.asarray(value) for name, value in outputs.items()}

  def channel_options(self) -> list[tuple[str, int]]:
    """gRPC channel options: send up to the largest request the limits allow (the size the
    documented server accepts), receive replies up to 64 MiB (32 poses are a few hundred KiB)."""
    return [
      ("grpc.max_send_message_length", grpc_message_limit(self.max_batch, self.max_image_bytes)),
      ("grpc.max_receive_message_length", 64 * 2**20),
    ]

  def grpc_request(self, images, boxes=None, intrinsics=None):
    """The PredictRequest of a gRPC call (needs tensorflow and tensorflow-serving-api)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    images, boxes, intrinsics = self._inputs(images, boxes, intrinsics)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = self.model_name
    request.model_spec.signature_name = SIGNATURE
    if self.version:
      request.model_spec.version.value = self.version
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.array(images, dtype=object)))
    request.inputs["boxes"].CopyFrom(tf.make_tensor_proto(boxes))
    request.inputs["intrinsics"].CopyFrom(tf.make_tensor_proto(intrinsics))
    return request

  def predict_grpc(self, images, boxes=None, intrinsics=None) -> dict:
    """Outputs of a gRPC predict call; ``timeout_seconds`` is the call's gRPC deadline (the whole
    call, connecting included). Raises grpc.RpcError (DEADLINE_EXCEEDED, UNAVAILABLE, ...)."""
    import grpc  # optional dependencies of the gRPC path
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = self.grpc_request(images, boxes, intrinsics)
    if self._stub is None:
      channel = grpc.insecure_channel(
        f"{self.host}:{self.grpc_port}", options=self.channel_options()
      )
      self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    reply = self._stub.Predict(request, timeout=self.timeout_seconds)
    return {name: tf.make_ndarray(proto) for name, proto in reply.outputs.items()}


def _rows(values, flag: str, count: int):
  """A [count, 4] array from ``--flag a,b,c,d`` given once (every image) or once per image;
  None when not given. Raises RequestRefused naming the flag."""
  if not values:
    return None
  try:
    rows = [[float(v) for v in value.split(",")] for value in values]
  except ValueError:
    raise RequestRefused(f"--{flag} must be four comma-separated numbers") from None
  if any(len(row) != 4 for row in rows):
    raise RequestRefused(f"--{flag} must be four comma-separated numbers")
  if len(rows) not in (1, count):
    raise RequestRefused(f"--{flag} given {len(rows)} times for {count} images: once or per image")
  return np.array(rows * count if len(rows) == 1 else rows, np.float32)


def _call_failure(error: BaseException) -> str | None:
  """One line for a failed call (unreachable, past the deadline, an error reply), else None."""
  if isinstance(error, (OSError, RuntimeError, RequestRefused)):  # REST, and refusals
    return str(error) or type(error).__name__
  grpc = sys.modules.get("grpc")
  if grpc is not None and isinstance(error, grpc.RpcError):
    details = error.details() if hasattr(error, "details") else str(error)
    return f"gRPC {error.code().name}: {' '.join(str(details).split())}"
  return None


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("images", nargs="+")
  parser.add_argument("--host", default="localhost")
  parser.add_argument("--protocol", choices=["rest", "grpc"], default="rest")
  parser.add_argument("--rest_port", type=int, default=8501)
  parser.add_argument("--grpc_port", type=int, default=8500)
  parser.add_argument("--model_name", default="wild3d")
  parser.add_argument("--version", type=int, default=None, help="model version (default: newest)")
  parser.add_argument(
    "--box", action="append", help="x_min,y_min,x_max,y_max px; once for all images or per image"
  )
  parser.add_argument(
    "--intrinsics", action="append", help="fx,fy,cx,cy px; once for all images or per image"
  )
  parser.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, seconds")
  args = parser.parse_args(argv)
  where = f"{args.host}:{args.rest_port if args.protocol == 'rest' else args.grpc_port}"
  try:
    client = Wild3dClient(
      args.host, args.rest_port, args.grpc_port, args.model_name, args.timeout, version=args.version
    )
    images = []
    for path in args.images:
      try:
        images.append(pathlib.Path(path).read_bytes())
      except OSError as error:
        raise RequestRefused(f"{path}: cannot read: {error.strerror or error}") from None
    boxes = _rows(args.box, "box", len(images))
    intrinsics = _rows(args.intrinsics, "intrinsics", len(images))
    call = client.predict_rest if args.protocol == "rest" else client.predict_grpc
    outputs = call(images, boxes, intrinsics)
  except Exception as error:
    line = _call_failure(error)
    if line is None:
      raise
    if isinstance(error, ConnectionRefusedError):
      line = f"{where}: connection refused (is the model server running?)"
    elif isinstance(error, OSError) and where not in line:  # e.g. an unknown host name
      line = f"{where}: {error.strerror or line}"
    print(f"client.py: error: {line}", file=sys.stderr, flush=True)
    return 1
  for index, path in enumerate(args.images):
    names = [n.decode() if isinstance(n, bytes) else n for n in outputs["joint_names_3d"][index]]
    pose = dict(zip(names, np.round(outputs["pose3d"][index], 1).tolist()))
    print(json.dumps({"image": path, "pose3d_mm": pose}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
