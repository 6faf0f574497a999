"""Image and video decoding for the converters, with checks before any decoder runs."""

from __future__ import annotations

import pathlib
import struct

import cv2
import numpy as np

from beam_preprocess.records import BadRecord

MAX_IMAGE_BYTES = 64 << 20
MAX_SIDE = 8192


def image_dimensions(data: bytes) -> tuple[int, int] | None:
  """(width, height) from a JPEG or PNG header, None for anything else."""
  if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
    return struct.unpack(">II", data[16:24])
  if data[:3] == b"\xff\xd8\xff":
    i = 2
    while i + 9 < len(data):
      if data[i] != 0xFF:
        return None
      marker = data[i + 1]
      length = struct.unpack(">H", data[i + 2 : i + 4])[0]
      if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
        height, width = struct.unpack(">HH", data[i + 5 : i + 9])
        return width, height
      i += 2 + length
  return None


def read_image(path: pathlib.Path, file: str, record: str) -> np.ndarray:
  """RGB uint8 image; BadRecord for anything but a sane, complete JPEG or PNG."""
  size = path.stat().st_size
  if size == 0 or size > MAX_IMAGE_BYTES:
    raise BadRecord(file, record, "image", f"file size {size} bytes outside 1..{MAX_IMAGE_BYTES}")
  data = path.read_bytes()
  dims = image_dimensions(data)
  if dims is None:
    raise BadRecord(file, record, "image", "not a JPEG or PNG file")
  if not (0 < dims[0] <= MAX_SIDE and 0 < dims[1] <= MAX_SIDE):
    raise BadRecord(file, record, "image", f"header says {dims[0]}x{dims[1]}, limit {MAX_SIDE}")
  if data[:3] == b"\xff\xd8\xff" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
    raise BadRecord(file, record, "image", "truncated JPEG (no end-of-image marker)")
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if image is None:
    raise BadRecord(file, record, "image", "undecodable image")
  return image[..., ::-1]


def read_video_frames(path: pathlib.Path, frames: list[int], file: str):
  """Yields (frame, RGB image or BadRecord) for the requested, increasing frame indices."""
  capture = cv2.VideoCapture(str(path))
  if not capture.isOpened():
    raise BadRecord(file, f"frames {frames[0]}-{frames[-1]}", "video", "cannot open video")
  try:
    position = 0
    if frames[0] > 0:
      capture.set(cv2.CAP_PROP_POS_FRAMES, frames[0])
      position = int(capture.get(cv2.CAP_PROP_POS_FRAMES))
    for frame in frames:
      image = None
      while position <= frame:
        ok, image = capture.read()
        position += 1
        if not ok:
          image = None
          break
      if image is None:
        yield frame, BadRecord(file, f"frame {frame}", "video", f"video ends before frame {frame}")
        position = frame + 1
      else:
        yield frame, image[..., ::-1]
  finally:
    capture.release()
