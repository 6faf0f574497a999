"""Image and video decoding for the converters, with checks before any decoder runs."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from beam_preprocess import storage
from beam_preprocess.records import BadRecord, Options
from wild3d_tf import image_guard

MAX_IMAGE_BYTES = Options.max_image_bytes
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


def _decode(data: bytes):
  return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def read_image(path, file: str, record: str, max_bytes: int = MAX_IMAGE_BYTES) -> np.ndarray:
  """(H, W, 3) RGB uint8 image of a JPEG or PNG file (a local path or URL, ``storage``) of at
  most ``max_bytes`` bytes, decoded from its bytes.

  BadRecord (naming ``file`` and ``record``) for anything else, for a header
  over ``MAX_SIDE`` and for a truncated file, including a JPEG cut inside its
  image data with its end marker appended again (``image_guard.jpeg_cut``).
  """
  size = storage.size(path)
  if size == 0 or size > max_bytes:
    raise BadRecord(
      file, record, "image", f"file size {size} bytes outside 1..{max_bytes} (--max_image_bytes)"
    )
  data = storage.read_bytes(path)
  dims = image_dimensions(data)
  if dims is None:
    raise BadRecord(file, record, "image", "not a JPEG or PNG file")
  if not (0 < dims[0] <= MAX_SIDE and 0 < dims[1] <= MAX_SIDE):
    raise BadRecord(file, record, "image", f"header says {dims[0]}x{dims[1]}, limit {MAX_SIDE}")
  if data[:3] == b"\xff\xd8\xff" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
    raise BadRecord(file, record, "image", "truncated JPEG (no end-of-image marker)")
  image = _decode(data)
  if image is None:
    raise BadRecord(file, record, "image", "undecodable image")
  if data[:3] == b"\xff\xd8\xff" and image_guard.jpeg_cut(data, image, _decode):
    raise BadRecord(
      file, record, "image", "JPEG cut inside its image data (premature end of data segment)"
    )
  return image[..., ::-1]


def frame_ranges(count: int, stride: int, frames_per_item: int) -> list[list[int]]:
  """Every ``stride``-th frame of ``range(count)`` in consecutive lists of ``frames_per_item``.

  The frame ranges that become a video's work items: a worker decodes one range
  at a time, so its memory does not depend on the video's length.
  """
  if stride < 1 or frames_per_item < 1:
    raise ValueError(f"stride {stride} and frames_per_item {frames_per_item} must be >= 1")
  frames = list(range(0, count, stride))
  return [frames[i : i + frames_per_item] for i in range(0, len(frames), frames_per_item)]


def _capture(readable) -> cv2.VideoCapture:
  """A capture of a local path, or of a file object (``storage.source`` of a URL): OpenCV's
  FFmpeg backend reads a Python object with read and seek (``cv2.VideoCapture(f, api, params)``)."""
  if isinstance(readable, str):
    return cv2.VideoCapture(readable)
  return cv2.VideoCapture(readable, cv2.CAP_FFMPEG, [])


def video_frame_count(path) -> int | None:
  """The frame count a video's header declares (no decoding), None if it cannot be opened.

  Only an estimate (containers may declare it wrongly); used to count the records a
  unit of work would have produced when its annotations cannot be read.
  """
  if not storage.is_file(path):
    return None
  with storage.source(path) as readable:
    capture = _capture(readable)
    try:
      if not capture.isOpened():
        return None
      count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
      return count if count > 0 else None
    finally:
      capture.release()


def read_video_frames(path, frames: list[int], file: str):
  """Yields (frame, RGB image or BadRecord) for the requested, increasing frame indices of a
  video (a local path, or a URL read through a file object).

  Lazily: a frame is decoded when the consumer asks for the next one and only
  the current frame is held, so two of these generators advanced in step (a
  video and its mask video) hold two frames whatever the number requested.
  Raises BadRecord (field "video", reason "cannot open video") when the file
  cannot be opened; a frame past the video's end comes back as a BadRecord.
  """
  if not frames:
    return
  with storage.source(path) as readable:
    capture = _capture(readable)
    if not capture.isOpened():
      raise BadRecord(file, f"frames {frames[0]}-{frames[-1]}", "video", "cannot open video")
    try:
      position = 0
      if frames[0] > 0:
        capture.set(cv2.CAP_PROP_POS_FRAMES, frames[0])
        position = int(capture.get(cv2.CAP_PROP_POS_FRAMES))
        if position != frames[0]:  # a container that cannot seek exactly: decode from the start
          capture.release()
          if not isinstance(readable, str):
            readable.seek(0)
          capture = _capture(readable)
          position = 0
      for frame in frames:
        ok = True
        while ok and position < frame:  # skipped frames (stride > 1) are grabbed, not converted
          ok = capture.grab()
          position += 1
        image = None
        if ok:
          ok, image = capture.read()
          position += 1
        if not ok or image is None:
          yield (
            frame,
            BadRecord(file, f"frame {frame}", "video", f"video ends before frame {frame}"),
          )
          position = frame + 1
        else:
          yield frame, image[..., ::-1]
    finally:
      capture.release()
