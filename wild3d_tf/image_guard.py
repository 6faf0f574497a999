"""Checks encoded image bytes inside the graph before anything decodes them.

TF's decoders accept more than they are named for (``decode_jpeg`` decodes PNG
and GIF) and allocate whatever the header asks for: a 1 MB PNG that claims
20000 x 20000 pixels decodes to 1.2 GB (docs/reliability.md, "Serving: image bytes"). So the
serving signature and the predict CLI allow JPEG and PNG only, by magic
number, cap the byte length and read the dimensions from the header (JPEG:
the SOF segment found by walking the markers; PNG: IHDR) before decoding.
A JPEG must have its end-of-image marker after the start of scan and a PNG
its IEND chunk, so a truncated file is refused instead of decoded into a
partly grey picture. Every refusal is an InvalidArgument naming the element
index and the limit; the graph holds no Python, so TF Serving runs it.

A JPEG cut inside its entropy-coded data with the end marker appended again
passes those checks, and libjpeg (under TF, OpenCV and PIL alike) only warns
"premature end of data segment" and decodes the missing blocks as zero
coefficients, mid-grey. ``jpeg_probe`` tells such a file from a complete one:
a complete file's decoder never reads past its last block, so the file with
``JPEG_PROBE`` spliced in before its end marker decodes to the same pixels,
while a cut file's decoder reads the missing blocks from those bytes and
decodes other pixels. The second decode runs only where a cut can hide: a
bottom-right pixel of exactly mid-grey (where a cut baseline file ends) or a
progressive file (a cut in a later scan leaves no grey); elsewhere it would
double the cost and make libjpeg warn "extraneous bytes" for every good file.
The converter (``beam_preprocess.media.read_image``) uses the same test.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

_JPEG_MAGIC = (0xFF, 0xD8, 0xFF)
_PNG_MAGIC = (0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A)
# Start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) share the range
# but do not.
_SOF_MARKERS = tuple(m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC))
_MAX_SEGMENTS = 512  # APPn/COM/DQT/DHT segments before the scan; real files have a few dozen
PROGRESSIVE_SOF = (0xC2, 0xC6, 0xCA, 0xCE)
# What libjpeg decodes a block of zero coefficients to, in every channel.
ZERO_BLOCK_VALUE = 128
# Spliced in before a JPEG's end marker (see the module's docstring): no 0xFF, so a decoder reads it
# as entropy-coded data, never as a marker; mixed bits, so a decoder that takes missing blocks from
# it decodes non-zero coefficients.
JPEG_PROBE = bytes((i * 73 + 41) % 251 for i in range(64))


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may carry (docs/reliability.md, "Serving: what a request may carry")."""

  max_batch: int = 32
  max_bytes: int = 10 * 2**20
  max_side: int = 8192
  max_pixels: int = 40_000_000


DEFAULT_LIMITS = Limits()


def _big_endian16(data, at):
  return tf.cast(tf.gather(data, at), tf.int64) * 256 + tf.cast(tf.gather(data, at + 1), tf.int64)


def _jpeg_header(data, n):
  """(height, width, start-of-scan offset, progressive) from the markers; zeros where not found."""

  def step(pos, height, width, sos, progressive, count):
    at = tf.minimum(pos, n - 4)
    is_marker = tf.equal(tf.gather(data, at), 0xFF)
    marker = tf.cast(tf.gather(data, at + 1), tf.int64)
    standalone = (
      tf.equal(marker, 0xFF) | tf.equal(marker, 0x01) | ((marker >= 0xD0) & (marker <= 0xD8))
    )
    length = _big_endian16(data, at + 2)
    is_sof = tf.reduce_any(tf.equal(marker, tf.constant(_SOF_MARKERS, tf.int64))) & (at + 9 <= n)
    dims_at = tf.minimum(at + 5, n - 4)
    height = tf.where(is_sof & tf.equal(height, 0), _big_endian16(data, dims_at), height)
    width = tf.where(is_sof & tf.equal(width, 0), _big_endian16(data, dims_at + 2), width)
    progressive |= is_sof & tf.reduce_any(tf.equal(marker, tf.constant(PROGRESSIVE_SOF, tf.int64)))
    sos = tf.where(is_marker & tf.equal(marker, 0xDA), at, sos)
    # A byte that is no marker ends the walk (sos stays 0: refused as malformed).
    one, two = tf.constant(1, tf.int64), tf.constant(2, tf.int64)
    advance = tf.where(standalone, tf.where(tf.equal(marker, 0xFF), one, two), two + length)
    pos = tf.where(is_marker, pos + advance, n)
    return pos, height, width, sos, progressive, count + 1

  def keep_going(pos, height, width, sos, progressive, count):
    return (pos + 4 <= n) & tf.equal(sos, 0) & (count < _MAX_SEGMENTS)

  zero = tf.constant(0, tf.int64)
  _, height, width, sos, progressive, _ = tf.while_loop(
    keep_going, step, (tf.constant(2, tf.int64), zero, zero, zero, tf.constant(False), zero)
  )
  return height, width, sos, progressive


def jpeg_probe(data: bytes) -> tuple[bytes, bool] | None:
  """(``data`` with ``JPEG_PROBE`` spliced in before its end marker, whether it is progressive).

  The end marker is the first FF D9 after the first start-of-scan segment
  (entropy-coded data escapes FF as FF 00, so it holds no FF D9); None when
  the markers lead to no scan or no end marker follows it. Plain Python, for
  the converter; ``decode`` does the same in the graph.
  """
  i, progressive = 2, False
  while i + 4 <= len(data) and data[i] == 0xFF:
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte
      i += 1
      continue
    if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers carry no length
      i += 2
      continue
    length = int.from_bytes(data[i + 2 : i + 4], "big")
    progressive |= marker in PROGRESSIVE_SOF
    if marker == 0xDA:
      end = data.find(b"\xff\xd9", i + 2 + length)
      return None if end < 0 else (data[:end] + JPEG_PROBE + data[end:], progressive)
    i += 2 + length
  return None


def jpeg_cut(data: bytes, image, decode) -> bool:
  """Whether a JPEG that ``decode`` (bytes -> array) turned into ``image`` (H, W, C) was cut
  inside its entropy-coded data: the probe (the module's docstring) decodes differently."""
  probe = jpeg_probe(data)
  if probe is None or image.size == 0:
    return False
  spliced, progressive = probe
  if not progressive and not (image[-1, -1] == ZERO_BLOCK_VALUE).all():
    return False
  other = decode(spliced)
  return other is None or other.shape != image.shape or bool((other != image).any())


def _contains_pair(data, first, second, start):
  """Whether bytes ``first, second`` occur at an offset >= ``start`` (>= 0)."""
  # Slicing rather than masking with a range of offsets: the byte scans are a large part of the
  # serving image path (docs/benchmarks.md), and an int64 range is 8 bytes per byte scanned.
  tail = data[start:]
  return tf.reduce_any(tf.equal(tail[:-1], first) & tf.equal(tail[1:], second))


def _png_complete(data, n):
  """An IEND chunk type after the IHDR (truncated files have none)."""
  tail = data[33:n]  # chunk types start after the 33 bytes of signature and IHDR
  count = tf.maximum(tf.size(tail, tf.int64) - 3, 0)
  hits = tf.ones([count], tf.bool)
  for i, byte in enumerate(b"IEND"):
    hits &= tf.equal(tail[i : count + i], byte)
  return tf.reduce_any(hits)


def require(condition, *parts):
  """An assertion raising InvalidArgument with the message ``parts`` joined.

  ``parts`` are strings or string tensors.
  """
  return tf.debugging.Assert(condition, [tf.strings.join(list(parts))], summarize=1)


def _fail_unless(condition, index, reason):
  return require(condition, "image ", tf.strings.as_string(index), ": ", reason)


def inspect(encoded, index, limits: Limits):
  """Validates one encoded image; returns (is_png, height, width, scan, assertions to depend on),
  ``scan`` holding what ``_jpeg_cut`` needs (bytes, length, start of scan, progressive)."""
  n = tf.cast(tf.strings.length(encoded), tf.int64)
  checks = [
    _fail_unless(n > 0, index, "empty bytes"),
    _fail_unless(
      n <= limits.max_bytes,
      index,
      tf.strings.format("{} bytes exceed the limit of {} bytes", (n, limits.max_bytes)),
    ),
  ]
  with tf.control_dependencies(checks):
    # Padding to 40 bytes keeps every header read in range for tiny inputs; the
    # byte cap above keeps this one copy small.
    data = tf.io.decode_raw(tf.strings.join([encoded, tf.constant(b"\0" * 40)]), tf.uint8)
  head = tf.cast(data[:8], tf.int64)
  is_jpeg = tf.reduce_all(tf.equal(head[:3], _JPEG_MAGIC))
  is_png = tf.reduce_all(tf.equal(head, _PNG_MAGIC)) & tf.reduce_all(
    tf.equal(data[12:16], [0x49, 0x48, 0x44, 0x52])
  )
  checks.append(
    _fail_unless(
      is_jpeg | is_png, index, "not a JPEG or PNG (only these are accepted, by magic number)"
    )
  )

  def jpeg():
    height, width, sos, progressive = _jpeg_header(data, n)
    complete = (sos > 0) & _contains_pair(data[:n], 0xFF, 0xD9, sos)
    return height, width, complete, sos, progressive

  def png():
    height = (
      tf.cast(data[20], tf.int64) * 2**24
      + tf.cast(data[21], tf.int64) * 2**16
      + _big_endian16(data, 22)
    )
    width = (
      tf.cast(data[16], tf.int64) * 2**24
      + tf.cast(data[17], tf.int64) * 2**16
      + _big_endian16(data, 18)
    )
    zero = tf.constant(0, tf.int64)
    return height, width, _png_complete(data[:n], n), zero, tf.constant(False)

  with tf.control_dependencies(checks):
    height, width, complete, sos, progressive = tf.cond(is_png, png, jpeg)
  checks += [
    _fail_unless(complete, index, "truncated or malformed (no end-of-image marker / IEND chunk)"),
    _fail_unless((height > 0) & (width > 0), index, "the header gives no image size"),
    _fail_unless(
      (height <= limits.max_side) & (width <= limits.max_side),
      index,
      tf.strings.format(
        "{}x{} pixels: a side exceeds the limit of {}", (width, height, limits.max_side)
      ),
    ),
    _fail_unless(
      height * width <= limits.max_pixels,
      index,
      tf.strings.format(
        "{}x{} pixels exceed the limit of {} pixels", (width, height, limits.max_pixels)
      ),
    ),
  ]
  scan = {"data": data, "n": n, "sos": sos, "progressive": progressive}
  return is_png, height, width, scan, checks


def check_batch(encoded, limits: Limits):
  """The batch-level checks (rank is fixed by the signature)."""
  count = tf.size(encoded)
  return [
    tf.debugging.Assert(
      count <= limits.max_batch,
      [tf.strings.format("batch of {} images exceeds the limit of {}", (count, limits.max_batch))],
      summarize=1,
    )
  ]


def decode(encoded, index, limits: Limits):
  """One checked image as (H, W, 3) uint8; raises InvalidArgument naming ``index`` when refused."""
  is_png, height, width, scan, checks = inspect(encoded, index, limits)
  with tf.control_dependencies(checks):
    image = tf.cond(
      is_png,
      lambda: tf.io.decode_png(encoded, channels=3),
      lambda: tf.io.decode_jpeg(encoded, channels=3),
    )
  # The header's size is what the checks passed; a decoder disagreeing means a malformed file.
  shape = tf.shape(image, out_type=tf.int64)
  agree = _fail_unless(
    tf.equal(shape[0], height) & tf.equal(shape[1], width),
    index,
    "decoded size differs from the header's",
  )
  with tf.control_dependencies([agree]):
    cut = tf.cond(is_png, lambda: tf.constant(False), lambda: _jpeg_cut(encoded, image, scan))
  whole = _fail_unless(
    tf.logical_not(cut),
    index,
    "JPEG cut inside its image data (premature end of data segment)",
  )
  with tf.control_dependencies([whole]):
    return tf.identity(image)


def _jpeg_cut(encoded, image, scan):
  """The graph's ``jpeg_cut``: whether the spliced probe decodes to other pixels."""
  data, n, sos = scan["data"], scan["n"], scan["sos"]

  def probe():
    start = sos + 2 + _big_endian16(data, sos + 2)
    hits = tf.equal(data[: n - 1], 0xFF) & tf.equal(data[1:n], 0xD9)
    hits &= tf.range(n - 1) >= start
    end = tf.argmax(tf.cast(hits, tf.int32), output_type=tf.int64)
    spliced = tf.strings.join(
      [
        tf.strings.substr(encoded, tf.constant(0, tf.int64), end),
        JPEG_PROBE,
        tf.strings.substr(encoded, end, n - end),
      ]
    )
    other = tf.io.decode_jpeg(spliced, channels=3)
    same_shape = tf.reduce_all(tf.equal(tf.shape(other), tf.shape(image)))
    return tf.cond(
      same_shape,
      lambda: tf.reduce_any(tf.not_equal(other, image)),
      lambda: tf.constant(True),
    )

  suspicious = scan["progressive"] | tf.reduce_all(tf.equal(image[-1, -1], ZERO_BLOCK_VALUE))
  return tf.cond(suspicious, probe, lambda: tf.constant(False))
