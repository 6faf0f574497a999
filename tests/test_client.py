"""The REST client's deadline bounds the whole call, against loopback servers that misbehave."""

import importlib.util
import json
import pathlib
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
JPEG = b"\xff\xd8\xff" + b"\0" * 16  # the client checks the magic bytes only


def _client_module():
  spec = importlib.util.spec_from_file_location("wild3d_client", ROOT / "serving" / "client.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


client_lib = _client_module()


def _serve_once(reply_parts, pause):
  """A loopback server answering one request with ``reply_parts``, ``pause`` s after each part.

  Returns (port, requests): the raw request (headers and body) lands in ``requests``.
  """
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(1)
  requests = []

  def serve():
    connection, _ = server.accept()
    connection.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
      data += connection.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(
      next(
        v
        for k, v in (line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        if k.lower() == b"content-length"
      )
    )
    while len(body) < length:
      body += connection.recv(65536)
    requests.append((head, body))
    for part in reply_parts:
      try:
        connection.sendall(part)
      except OSError:  # the client gave up and closed
        break
      time.sleep(pause)
    connection.close()
    server.close()

  threading.Thread(target=serve, daemon=True).start()
  return server.getsockname()[1], requests


def _response(body: bytes, status=b"200 OK", version=b"HTTP/1.1") -> bytes:
  return (
    version + b" " + status + b"\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(body) + body
  )


def _call(port, timeout=1.0):
  client = client_lib.Wild3dClient("127.0.0.1", rest_port=port, timeout_seconds=timeout)
  start = time.perf_counter()
  try:
    return client.predict_rest([JPEG]), time.perf_counter() - start
  except Exception as error:  # noqa: BLE001 - the tests look at the type and the time
    return error, time.perf_counter() - start


# HTTP/1.0 (Python's http.server) closes after the reply, HTTP/1.1 keeps the connection open.
@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"])
def test_a_reply_in_pieces_within_the_deadline_is_read_whole(version):
  body = json.dumps({"outputs": {"pose3d": np.arange(3 * 17 * 3).reshape(3, 17, 3).tolist()}})
  reply = _response(body.encode(), version=version)
  pieces = [reply[i : i + 97] for i in range(0, len(reply), 97)]  # many reads, each partial
  port, requests = _serve_once(pieces, 0.001)
  outputs, _ = _call(port, timeout=10.0)
  np.testing.assert_array_equal(outputs["pose3d"], np.arange(153).reshape(3, 17, 3))
  head, sent = requests[0]
  assert head.startswith(b"POST /v1/models/wild3d:predict HTTP/1.1")
  assert json.loads(sent)["inputs"]["boxes"] == [[0.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_server_dripping_one_byte_at_a_time_meets_the_deadline(where):
  # One byte every 0.3 s: each read is quick, the whole reply would take ~20 s.
  reply = _response(b'{"outputs": {"x": [1]}}' + b" " * 40)
  split = reply.index(b"\r\n\r\n") + 4 if where == "body" else 0
  port, _ = _serve_once([reply[:split]] + [bytes([b]) for b in reply[split:]], 0.3)
  error, took = _call(port, timeout=1.0)
  assert isinstance(error, TimeoutError), error
  assert f"127.0.0.1:{port}" in str(error) and "within 1.0 s" in str(error)
  assert 0.9 < took < 2.0, took


def test_a_silent_server_meets_the_deadline():
  port, _ = _serve_once([b"", b""], 5.0)  # accepts, reads the request, answers nothing
  error, took = _call(port, timeout=0.5)
  assert isinstance(error, TimeoutError) and 0.4 < took < 1.5, (error, took)


def test_a_reply_cut_short_is_an_error_not_a_shorter_reply():
  reply = _response(b'{"outputs": {"x": [1, 2, 3]}}')
  port, _ = _serve_once([reply[:-5]], 0.0)  # closes 5 bytes before its Content-Length
  error, took = _call(port, timeout=5.0)
  assert isinstance(error, OSError) and not isinstance(error, TimeoutError), error
  assert "IncompleteRead" in str(error) and took < 2.0


def test_an_http_error_names_the_status_and_the_servers_words():
  port, _ = _serve_once([_response(b'{"error": "no model wild3d"}', b"404 Not Found")], 0.0)
  error, _ = _call(port, timeout=5.0)
  assert isinstance(error, RuntimeError)
  assert str(error) == (
    f'http://127.0.0.1:{port}/v1/models/wild3d:predict: HTTP 404: {{"error": "no model wild3d"}}'
  )


# --------------------------------------------------------------------------- the command line


def _reply_for(count):
  joints = [f"j{i}" for i in range(17)]
  pose = (np.arange(count * 17 * 3, dtype=float).reshape(count, 17, 3) / 10).tolist()
  return _response(
    json.dumps({"outputs": {"pose3d": pose, "joint_names_3d": [joints] * count}}).encode()
  )


def test_cli_boxes_intrinsics_and_version_reach_the_request(tmp_path, capsys):
  images = []
  for name in ("a.jpg", "b.jpg"):
    (tmp_path / name).write_bytes(JPEG + name.encode())
    images.append(str(tmp_path / name))
  port, requests = _serve_once([_reply_for(2)], 0.0)
  status = client_lib.main(
    [
      *images,
      "--host=127.0.0.1",
      f"--rest_port={port}",
      "--version=3",
      "--box=1,2,30,40",
      "--box=5,6,70,80",  # one per image
      "--intrinsics=1000,1001,320.5,240",  # one for both
      "--timeout=10",
    ]
  )
  assert status == 0
  head, sent = requests[0]
  assert head.startswith(b"POST /v1/models/wild3d/versions/3:predict HTTP/1.1")
  inputs = json.loads(sent)["inputs"]
  assert inputs["boxes"] == [[1, 2, 30, 40], [5, 6, 70, 80]]
  assert inputs["intrinsics"] == [[1000, 1001, 320.5, 240]] * 2
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [line["image"] for line in lines] == images
  assert lines[1]["pose3d_mm"]["j0"] == [5.1, 5.2, 5.3]  # image 1, joint 0: (51, 52, 53) / 10


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--box=1,2,3"], "--box must be four comma-separated numbers"),
    (["--intrinsics=1,2,3,x"], "--intrinsics must be four comma-separated numbers"),
    (["--box=1,2,3,4"] * 3, "--box given 3 times for 2 images: once or per image"),
  ],
)
def test_cli_bad_boxes_or_intrinsics_are_one_line_naming_the_flag(flags, message, capsys):
  # Refused before any connection: port 9 (discard) is never reached.
  status = client_lib.main([__file__, __file__, "--host=127.0.0.1", "--rest_port=9", *flags])
  err = capsys.readouterr().err
  assert status == 1 and err == f"client.py: error: {message}\n"


def test_cli_unreachable_server_is_one_line_and_a_failure_status(tmp_path):
  image = tmp_path / "a.jpg"
  image.write_bytes(JPEG)
  closed = socket.socket()
  closed.bind(("127.0.0.1", 0))  # bound, not listening: connecting is refused
  port = closed.getsockname()[1]
  try:
    run = subprocess.run(
      [sys.executable, str(ROOT / "serving" / "client.py"), str(image), "--host=127.0.0.1"]
      + [f"--rest_port={port}", "--timeout=5"],
      capture_output=True,
      text=True,
      timeout=60,
    )
  finally:
    closed.close()
  assert run.returncode == 1 and run.stdout == ""
  assert run.stderr == (
    f"client.py: error: 127.0.0.1:{port}: connection refused (is the model server running?)\n"
  )


def test_cli_unreadable_image_is_one_line_naming_the_file(tmp_path, capsys):
  missing = str(tmp_path / "missing.jpg")
  assert client_lib.main([missing, "--host=127.0.0.1", "--rest_port=9"]) == 1
  assert capsys.readouterr().err == (
    f"client.py: error: {missing}: cannot read: No such file or directory\n"
  )


def test_a_batch_over_the_limit_is_refused_before_sending():
  client = client_lib.Wild3dClient("127.0.0.1", rest_port=9, timeout_seconds=1.0)
  with pytest.raises(client_lib.RequestRefused, match="33 images exceed the batch limit of 32"):
    client.rest_body([JPEG] * 33)
  assert len(client.rest_body([JPEG] * 32)["inputs"]["images"]) == 32
