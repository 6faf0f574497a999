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

The checks before decoding run once for a whole batch (``inspect``: the
marker walks go in step), because one image's checks made per image were a
few hundred tiny ops, more than decoding it costs; per image only decoding
and the probe below (``decode_one``), then ``decoded_checks`` for the batch.
Each group of checks is one assertion (``require_first``), so a request with
several bad images always names the same one.

A JPEG cut inside its entropy-coded data with the end marker appended again
passes those checks, and libjpeg (under TF, OpenCV and PIL alike) only warns
"premature end of data segment" and decodes the missing blocks as zero
coefficients, mid-grey. ``jpeg_probe`` tells such a file from a complete one:
a complete file's decoder never reads past its last block, so the file with
``JPEG_PROBE`` spliced in before its end marker decodes to the same pixels,
while a cut file's decoder reads the missing blocks from those bytes and
decodes other pixels. The second decode runs only where a cut can hide: a
bottom-right pixel within ``GREY_TOLERANCE`` of mid-grey (where a cut
baseline file ends) or a progressive file (a cut in a later scan leaves no
grey); elsewhere it would double the cost and make libjpeg warn "extraneous
bytes" for every good file. A baseline file with a restart interval cut at a
restart marker escapes the probe (libjpeg skips the probe's bytes while it
looks for the next marker), so its restart markers are counted against the
number its header asks for (``_restart_count``). A cut within the last
MCUs' bytes decodes to a few wrong, non-grey pixels and is not detected.
The converter (``beam_preprocess.media.read_image``) uses the same tests.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

_JPEG_MAGIC = (0xFF, 0xD8, 0xFF)
_PNG_MAGIC = (0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A)
# Start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) share the range
# but do not.
_SOF_MARKERS = tuple(m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC))
_MAX_SEGMENTS = 512  # APPn/COM/DQT/DHT segments before the scan; real files have a few dozen
_MAX_COMPONENTS = 4  # a frame's components whose sampling factors are read (more: not counted)
PROGRESSIVE_SOF = (0xC2, 0xC6, 0xCA, 0xCE)
# What libjpeg decodes a block of zero coefficients to, in every channel; with chroma upsampling
# a cut file's last pixel can come out a grey level off it (127 seen), hence the tolerance.
ZERO_BLOCK_VALUE = 128
GREY_TOLERANCE = 2
# Spliced in before a JPEG's end marker (see the module's docstring): no 0xFF, so a decoder reads it
# as entropy-coded data, never as a marker; mixed bits, so a decoder that takes missing blocks from
# it decodes non-zero coefficients.
JPEG_PROBE = bytes((i * 73 + 41) % 251 for i in range(64))
# The scales libjpeg decodes a JPEG at by scaling its DCT (tf.io.decode_jpeg's ``ratio``, a
# static attribute): 1/r of each side, ceil(side / r) pixels, pixel i close to the mean of the
# full decode's pixels [r i, r i + r) (docs/benchmarks.md, serving).
JPEG_RATIOS = (1, 2, 4, 8)


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may carry (docs/reliability.md, "Serving: what a request may carry")."""

  max_batch: int = 32
  max_bytes: int = 10 * 2**20
  max_side: int = 8192
  max_pixels: int = 40_000_000


DEFAULT_LIMITS = Limits()


def _big_endian16(high, low):
  return tf.cast(high, tf.int64) * 256 + tf.cast(low, tf.int64)


def _is_any(values, choices):
  return tf.reduce_any(tf.equal(values[:, None], tf.constant(choices, values.dtype)), 1)


def _bytes_at(encoded, pos, count: int):
  """(B, count) int64: the bytes of each string from ``pos`` (B,) on, zeros past its end.

  ``pos`` must lie in [0, length] (``tf.strings.substr``'s range)."""
  pos = tf.cast(pos, tf.int32)
  piece = tf.strings.substr(encoded, pos, tf.fill(tf.shape(pos), count))
  return tf.cast(tf.io.decode_raw(piece, tf.uint8, fixed_length=count), tf.int64)


def _jpeg_headers(encoded, n, walk):
  """The markers' facts of the elements where ``walk`` (B,) is set, zeros where not found: a
  dict of (B,) int64 "height", "width", "sos" (the start-of-scan offset), "restarts" (the
  restart markers a whole file has, ``_restart_count``; -1 where that cannot be told) and bool
  "progressive". The walks go in step, one op per step for the whole batch: one image's walk
  is a few dozen tiny ops, which cost more than decoding it when run one image at a time
  (docs/benchmarks.md, serving)."""
  zero = tf.zeros_like(n)
  one, two = tf.constant(1, tf.int64), tf.constant(2, tf.int64)

  def active(pos, sos, count):
    return walk & (pos + 4 <= n) & tf.equal(sos, 0) & (count < _MAX_SEGMENTS)

  def step(pos, facts, count):
    going = active(pos, facts["sos"], count)
    at = tf.where(going, pos, 0)  # a finished walk's position may lie past its string
    b = _bytes_at(encoded, at, 10 + 3 * _MAX_COMPONENTS)
    is_marker = tf.equal(b[:, 0], 0xFF)
    marker = b[:, 1]
    standalone = (
      tf.equal(marker, 0xFF) | tf.equal(marker, 0x01) | ((marker >= 0xD0) & (marker <= 0xD8))
    )
    facts = dict(facts)
    is_sof = going & _is_any(marker, _SOF_MARKERS) & (at + 9 <= n)
    first_sof = is_sof & tf.equal(facts["height"], 0)
    components = [b[:, 11 + 3 * c] for c in range(_MAX_COMPONENTS)]  # sampling factors HV
    counted = tf.range(_MAX_COMPONENTS, dtype=tf.int64)[None] < b[:, 9:10]
    factors = tf.where(counted, tf.stack(components, 1), 0)
    for key, value in (
      ("height", _big_endian16(b[:, 5], b[:, 6])),
      ("width", _big_endian16(b[:, 7], b[:, 8])),
      ("components", b[:, 9]),
      ("h_max", tf.reduce_max(factors // 16, 1)),
      ("v_max", tf.reduce_max(factors % 16, 1)),
    ):
      facts[key] = tf.where(first_sof, value, facts[key])
    facts["progressive"] |= is_sof & _is_any(marker, PROGRESSIVE_SOF)
    is_dri = going & is_marker & tf.equal(marker, 0xDD)
    facts["interval"] = tf.where(is_dri, _big_endian16(b[:, 4], b[:, 5]), facts["interval"])
    is_sos = going & is_marker & tf.equal(marker, 0xDA)
    facts["scan_components"] = tf.where(is_sos, b[:, 4], facts["scan_components"])
    facts["sos"] = tf.where(is_sos, at, facts["sos"])
    # A byte that is no marker ends the walk (sos stays 0: refused as malformed).
    length = _big_endian16(b[:, 2], b[:, 3])
    advance = tf.where(standalone, tf.where(tf.equal(marker, 0xFF), one, two), two + length)
    pos = tf.where(going, tf.where(is_marker, pos + advance, n), pos)
    return pos, facts, count + tf.cast(going, tf.int64)

  keys = ("height", "width", "sos", "components", "h_max", "v_max", "interval", "scan_components")
  facts = {key: zero for key in keys}
  facts["progressive"] = tf.zeros_like(walk)
  _, facts, _ = tf.while_loop(
    lambda pos, facts, count: tf.reduce_any(active(pos, facts["sos"], count)),
    step,
    (tf.fill(tf.shape(n), two), facts, zero),
  )
  facts["restarts"] = _restart_count(facts)
  return facts


def _restart_count(facts):
  """(B,) int64: the restart markers (RST0-7) a whole baseline file's single scan holds, or -1.

  With a restart interval of R MCUs (its DRI segment), the encoder writes a restart marker after
  every R MCUs but the last: ceil(MCUs / R) - 1 of them (ITU-T T.81, B.2.4.4 and E.1.4). The
  MCUs of a scan of every component are ceil(width / 8 h_max) * ceil(height / 8 v_max); of a
  one-component image, its 8x8 blocks (A.2.2, A.2.3). -1 (not checked) for progressive files,
  files without a restart interval and scans of some components only (files with more scans).
  A file cut exactly at a restart marker decodes with grey blocks after it, but the cut probe
  cannot see it (libjpeg skips the probe's bytes while it looks for the next marker), so the
  count tells instead.
  """

  def ceil(a, b):
    b = tf.maximum(tf.cast(b, tf.int64), 1)
    return (a + b - 1) // b

  one_component = tf.equal(facts["components"], 1)
  mcus = tf.where(
    one_component,
    ceil(facts["width"], 8) * ceil(facts["height"], 8),
    ceil(facts["width"], 8 * facts["h_max"]) * ceil(facts["height"], 8 * facts["v_max"]),
  )
  checkable = (
    (facts["interval"] > 0)
    & ~facts["progressive"]
    & (one_component | tf.equal(facts["scan_components"], facts["components"]))
    & (facts["components"] <= _MAX_COMPONENTS)
    & (facts["h_max"] > 0)
    & (facts["v_max"] > 0)
  )
  return tf.where(checkable, ceil(mcus, facts["interval"]) - 1, tf.constant(-1, tf.int64))


def _jpeg_markers(data: bytes) -> dict | None:
  """The facts ``_jpeg_headers`` reads, for one file in plain Python (the converter): "scan"
  (where the first scan's entropy-coded data starts), "progressive", "width", "height",
  "components", "h_max", "v_max", "interval", "scan_components"; None when the markers lead to
  no scan."""
  i = 2
  facts = dict.fromkeys(("width", "height", "components", "h_max", "v_max", "interval"), 0)
  facts["progressive"] = False
  while i + 4 <= len(data) and data[i] == 0xFF:
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte
      i += 1
      continue
    if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers carry no length
      i += 2
      continue
    length = int.from_bytes(data[i + 2 : i + 4], "big")
    if marker in _SOF_MARKERS and not facts["height"] and i + 10 <= len(data):
      facts["progressive"] = marker in PROGRESSIVE_SOF
      facts["height"] = int.from_bytes(data[i + 5 : i + 7], "big")
      facts["width"] = int.from_bytes(data[i + 7 : i + 9], "big")
      facts["components"] = data[i + 9]
      factors = data[i + 11 : i + 10 + 3 * min(data[i + 9], _MAX_COMPONENTS) : 3]
      facts["h_max"] = max((f // 16 for f in factors), default=0)
      facts["v_max"] = max((f % 16 for f in factors), default=0)
    if marker == 0xDD:
      facts["interval"] = int.from_bytes(data[i + 4 : i + 6], "big")
    if marker == 0xDA:
      facts["scan_components"] = data[i + 4] if i + 4 < len(data) else 0
      facts["scan"] = i + 2 + length
      return facts
    i += 2 + length
  return None


def jpeg_probe(data: bytes) -> tuple[bytes, bool] | None:
  """(``data`` with ``JPEG_PROBE`` spliced in before its end marker, whether it is progressive).

  The end marker is the first FF D9 after the first start-of-scan segment
  (entropy-coded data escapes FF as FF 00, so it holds no FF D9); None when
  the markers lead to no scan or no end marker follows it. Plain Python, for
  the converter; ``decode`` does the same in the graph.
  """
  facts = _jpeg_markers(data)
  end = -1 if facts is None else data.find(b"\xff\xd9", facts["scan"])
  return None if end < 0 else (data[:end] + JPEG_PROBE + data[end:], facts["progressive"])


def jpeg_restarts_missing(data: bytes) -> bool:
  """Whether a baseline JPEG's scan holds fewer restart markers than its header asks for (a file
  cut at a restart marker: ``_restart_count``). Plain Python, for the converter."""
  facts = _jpeg_markers(data)
  if facts is None or not facts["interval"] or facts["progressive"]:
    return False  # nothing to count (most files: no restart interval)
  batch = {
    key: tf.constant([value], tf.int64) for key, value in facts.items() if key != "progressive"
  }
  batch["progressive"] = tf.constant([facts["progressive"]])
  expected = int(_restart_count(batch)[0])
  if expected < 0:
    return False
  scan = np.frombuffer(data[facts["scan"] :], np.uint8)
  escaped = scan[:-1] == 0xFF
  if (escaped & (scan[1:] == 0xDA)).any():  # more scans: not counted
    return False
  return int((escaped & (scan[1:] >= 0xD0) & (scan[1:] <= 0xD7)).sum()) < expected


def jpeg_cut(data: bytes, image, decode) -> bool:
  """Whether a JPEG that ``decode`` (bytes -> array) turned into ``image`` (H, W, C) was cut
  inside its entropy-coded data: restart markers are missing (``jpeg_restarts_missing``), or
  the probe (the module's docstring) decodes differently."""
  if jpeg_restarts_missing(data):
    return True
  probe = jpeg_probe(data)
  if probe is None or image.size == 0:
    return False
  spliced, progressive = probe
  corner = np.asarray(image[-1, -1], np.int32) - ZERO_BLOCK_VALUE
  if not progressive and not (np.abs(corner) <= GREY_TOLERANCE).all():
    return False
  other = decode(spliced)
  return other is None or other.shape != image.shape or bool((other != image).any())


def _contains_pair(data, first, second, start):
  """Whether bytes ``first, second`` occur at an offset >= ``start`` (>= 0)."""
  # Slicing rather than masking with a range of offsets: an int64 range is 8 bytes per byte
  # scanned.
  tail = data[start:]
  return tf.reduce_any(tf.equal(tail[:-1], first) & tf.equal(tail[1:], second))


def _png_complete(data):
  """An IEND chunk type after the IHDR (truncated files have none)."""
  tail = data[33:]  # chunk types start after the 33 bytes of signature and IHDR
  count = tf.maximum(tf.size(tail, tf.int64) - 3, 0)
  hits = tf.ones([count], tf.bool)
  for i, byte in enumerate(b"IEND"):
    hits &= tf.equal(tail[i : count + i], byte)
  return tf.reduce_any(hits)


def _complete(encoded, n, is_png, sos):
  """(B,) bool: a JPEG has an end-of-image marker after its start of scan, a PNG an IEND chunk.

  Where the file ends with them (nearly every file) the last bytes say so; only the others are
  scanned whole, one at a time."""
  last = _bytes_at(encoded, tf.maximum(n - 8, 0), 8)
  iend = tf.reduce_all(tf.equal(last[:, :4], list(b"IEND")), 1) & (n - 8 >= 33)
  eoi = tf.equal(last[:, 6], 0xFF) & tf.equal(last[:, 7], 0xD9) & (n - 2 >= sos)
  ends_complete = tf.where(is_png, iend, (sos > 0) & eoi)
  scan = tf.where(~ends_complete & (is_png | (sos > 0)))[:, 0]

  def scan_one(args):
    data, png, start = args
    data = tf.io.decode_raw(data, tf.uint8)
    return tf.cond(
      png, lambda: _png_complete(data), lambda: _contains_pair(data, 0xFF, 0xD9, start)
    )

  scanned = tf.map_fn(
    scan_one,
    (tf.gather(encoded, scan), tf.gather(is_png, scan), tf.gather(sos, scan)),
    parallel_iterations=2,
    fn_output_signature=tf.bool,
  )
  return tf.tensor_scatter_nd_update(ends_complete, scan[:, None], scanned)


def require(condition, *parts):
  """An assertion raising InvalidArgument with the message ``parts`` joined.

  ``parts`` are strings or string tensors.
  """
  return tf.debugging.Assert(condition, [tf.strings.join(list(parts))], summarize=1)


def require_first(checks, names):
  """One assertion for a batch and a list of checks: InvalidArgument "image NAME: REASON" for the
  first element, in batch order, that fails any of them, naming the first check, in list order,
  that it fails; so a batch with several bad images gets the same message every time.

  ``checks`` are (ok (B,) bool, reason) pairs; a reason is a string, or a function of the
  failing element's index (an int32 scalar) returning a string tensor built from its values
  (``pick``). ``names`` (B,) int: how the message names each element (its index in the request).
  """
  ok = tf.stack([passed for passed, _ in checks], 1)  # (B, checks)
  element = tf.argmin(
    tf.concat([tf.cast(tf.reduce_all(ok, 1), tf.int32), [0]], 0), output_type=tf.int32
  )
  check = tf.argmin(tf.cast(pick(ok, element), tf.int32), output_type=tf.int32)
  texts = [reason(element) if callable(reason) else tf.constant(reason) for _, reason in checks]
  name = tf.strings.as_string(pick(names, element))
  return require(tf.reduce_all(ok), "image ", name, ": ", tf.gather(tf.stack(texts), check))


def pick(values, index):
  """``values[index]`` of a (B, ...) tensor, zeros for ``index == B`` (no element failed)."""
  values = tf.convert_to_tensor(values)
  padding = [[0, 1]] + [[0, 0]] * (values.shape.rank - 1)
  return tf.gather(tf.pad(values, padding), index)


def inspect(encoded, names, limits: Limits):
  """Validates a batch of encoded images without decoding them.

  ``encoded`` string (B,), ``names`` (B,) int (see ``require_first``).
  Returns (``header``, assertions to depend on); the bytes are checked first
  (length, byte cap, magic number), the headers after (completeness, size,
  limits), each as one ``require_first``. ``header`` maps "n" (byte length),
  "png", "height", "width", "sos" (the JPEG's start-of-scan offset),
  "progressive", "restarts" (``_restart_count``) to (B,) tensors: what
  ``decode_one`` and ``decoded_checks`` take, one element at a time and for
  the batch.
  """
  n = tf.cast(tf.strings.length(encoded), tf.int64)
  head = _bytes_at(encoded, tf.zeros_like(n), 24)
  is_jpeg = tf.reduce_all(tf.equal(head[:, :3], _JPEG_MAGIC), 1)
  is_png = tf.reduce_all(tf.equal(head[:, :8], _PNG_MAGIC), 1) & tf.reduce_all(
    tf.equal(head[:, 12:16], list(b"IHDR")), 1
  )
  bytes_checked = require_first(
    [
      (n > 0, "empty bytes"),
      (
        n <= limits.max_bytes,
        lambda i: tf.strings.format(
          "{} bytes exceed the limit of {} bytes", (pick(n, i), limits.max_bytes)
        ),
      ),
      (is_jpeg | is_png, "not a JPEG or PNG (only these are accepted, by magic number)"),
    ],
    names,
  )
  with tf.control_dependencies([bytes_checked]):
    jpeg = _jpeg_headers(encoded, n, ~is_png)
  png_height = head[:, 20] * 2**24 + head[:, 21] * 2**16 + _big_endian16(head[:, 22], head[:, 23])
  png_width = head[:, 16] * 2**24 + head[:, 17] * 2**16 + _big_endian16(head[:, 18], head[:, 19])
  height = tf.where(is_png, png_height, jpeg["height"])
  width = tf.where(is_png, png_width, jpeg["width"])
  header_checked = require_first(
    [
      (
        _complete(encoded, n, is_png, jpeg["sos"]),
        "truncated or malformed (no end-of-image marker / IEND chunk)",
      ),
      ((height > 0) & (width > 0), "the header gives no image size"),
      (
        (height <= limits.max_side) & (width <= limits.max_side),
        lambda i: tf.strings.format(
          "{}x{} pixels: a side exceeds the limit of {}",
          (pick(width, i), pick(height, i), limits.max_side),
        ),
      ),
      (
        height * width <= limits.max_pixels,
        lambda i: tf.strings.format(
          "{}x{} pixels exceed the limit of {} pixels",
          (pick(width, i), pick(height, i), limits.max_pixels),
        ),
      ),
    ],
    names,
  )
  checks = [bytes_checked, header_checked]
  header = {
    "n": n,
    "png": is_png,
    "height": height,
    "width": width,
    "sos": jpeg["sos"],
    "progressive": jpeg["progressive"],
    "restarts": tf.where(is_png, tf.constant(-1, tf.int64), jpeg["restarts"]),
  }
  return header, checks


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


def _jpeg_decoders(encoded):
  """``tf.io.decode_jpeg`` at each of ``JPEG_RATIOS`` (``ratio`` is a static attribute), as
  ``tf.switch_case`` branches."""
  return [lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r) for r in JPEG_RATIOS]


def _ratio_index(ratio):
  """The position of ``ratio`` (an int32 scalar tensor) in ``JPEG_RATIOS``."""
  return tf.argmax(tf.equal(tf.constant(JPEG_RATIOS, tf.int32), ratio), output_type=tf.int32)


def _decode_jpeg(encoded, ratio):
  """``tf.io.decode_jpeg`` at a ``ratio`` of ``JPEG_RATIOS`` given as a scalar tensor."""
  return tf.switch_case(_ratio_index(ratio), _jpeg_decoders(encoded))


def decode_one(encoded, header, ratio=1):
  """One image that ``inspect`` passed, as (H, W, 3) uint8, and whether it is a cut JPEG.

  ``header`` holds that image's scalars of ``inspect``'s header; a JPEG is
  decoded at 1 / ``ratio`` of its size (one of ``JPEG_RATIOS``, an int32
  scalar; PNGs always whole). No assertions here (they cost more than
  decoding when made per image): ``decoded_checks`` makes them for the batch.
  """
  ratio = tf.convert_to_tensor(ratio, tf.int32)
  # One switch for the decoder and its ratio: control flow is a large part of a small image's
  # time in a per-image loop.
  index = tf.where(header["png"], len(JPEG_RATIOS), _ratio_index(ratio))
  decoders = _jpeg_decoders(encoded) + [lambda: tf.io.decode_png(encoded, channels=3)]
  image = tf.switch_case(index, decoders)
  return image, _jpeg_cut(encoded, image, header, ratio)


def decoded_size(sizes, ratios):
  """(B, 2) int64: the (height, width) libjpeg decodes images of ``sizes`` (B, 2) to at
  ``ratios`` (B,) or a scalar: ceil(side / ratio)."""
  sizes, ratios = tf.cast(sizes, tf.int64), tf.cast(ratios, tf.int64)
  ratios = ratios[:, None] if ratios.shape.rank else ratios
  return (sizes + ratios - 1) // ratios


def decoded_checks(header, shapes, cuts, names, ratios=1):
  """Assertions on a batch ``decode_one`` decoded: ``shapes`` (B, 2) int (height, width) of each
  decoded image, ``cuts`` (B,) bool its cut flag, ``ratios`` (B,) or scalar int the ratio each
  was decoded at."""
  expected = decoded_size(tf.stack([header["height"], header["width"]], 1), ratios)
  # The header's size is what the checks passed; a decoder disagreeing means a malformed file.
  agree = tf.reduce_all(tf.equal(tf.cast(shapes, tf.int64), expected), 1)
  return [
    require_first(
      [
        (agree, "decoded size differs from the header's"),
        (~cuts, "JPEG cut inside its image data (premature end of data segment)"),
      ],
      names,
    )
  ]


def decode(encoded, index, limits: Limits, ratio=1):
  """One checked image as (H, W, 3) uint8; raises InvalidArgument naming ``index`` when refused.

  ``inspect``, ``decode_one`` (a JPEG at 1 / ``ratio`` of its size) and ``decoded_checks``
  for a batch of one (the predict CLI's checks, tests).
  """
  names = tf.reshape(index, [1])
  header, checks = inspect(tf.reshape(encoded, [1]), names, limits)
  with tf.control_dependencies(checks):
    image, cut = decode_one(encoded, {key: value[0] for key, value in header.items()}, ratio)
  shape = tf.shape(image)[None, :2]
  ratios = tf.where(header["png"], 1, ratio)
  with tf.control_dependencies(decoded_checks(header, shape, cut[None], names, ratios)):
    return tf.identity(image)


def _jpeg_cut(encoded, image, header, ratio):
  """The graph's ``jpeg_cut``: whether a JPEG has fewer restart markers than its header asks for,
  or its spliced probe decodes (at the same ``ratio``) to other pixels; False for a PNG. A block
  of zero coefficients decodes to ``ZERO_BLOCK_VALUE`` at every ratio."""
  n, sos = header["n"], header["sos"]

  def scan_data():
    """The file's bytes and where its first scan's entropy-coded data starts."""
    data = tf.io.decode_raw(encoded, tf.uint8)
    return data, sos + 2 + _big_endian16(data[sos + 2], data[sos + 3])

  def restarts_missing():
    data, start = scan_data()
    marker, following = data[start : n - 1], data[start + 1 : n]
    escaped = tf.equal(marker, 0xFF)
    restarts = tf.reduce_sum(tf.cast(escaped & (following >= 0xD0) & (following <= 0xD7), tf.int64))
    more_scans = tf.reduce_any(escaped & tf.equal(following, 0xDA))
    return ~more_scans & (restarts < header["restarts"])

  def probe():
    data, start = scan_data()
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
    other = _decode_jpeg(spliced, ratio)
    same_shape = tf.reduce_all(tf.equal(tf.shape(other), tf.shape(image)))
    return tf.cond(
      same_shape,
      lambda: tf.reduce_any(tf.not_equal(other, image)),
      lambda: tf.constant(True),
    )

  missing = tf.cond(header["restarts"] >= 0, restarts_missing, lambda: tf.constant(False))
  corner = tf.cast(image[-1, -1], tf.int32) - ZERO_BLOCK_VALUE
  grey_corner = tf.reduce_all(tf.abs(corner) <= GREY_TOLERANCE)
  suspicious = ~header["png"] & ~missing & (header["progressive"] | grey_corner)
  return missing | tf.cond(suspicious, probe, lambda: tf.constant(False))
