"""The SavedModel's signatures: what TF Serving, ``tf.saved_model.load`` and the predict CLI call.

``serving_default`` (``serve_images``): a batch of encoded JPEG or PNG images,
    ``images`` string [B], ``boxes`` float32 [B, 4] (x_min, y_min, x_max, y_max
    pixels of the person; a row of zeros: the whole image) and ``intrinsics``
    float32 [B, 4] (fx, fy, cx, cy pixels; a row of zeros:
    ``cameras.DEFAULT_FOV_DEGREES`` across the longer side). TF Serving
    requires every signature input in every request, so "optional" is a row
    of zeros; ``serve_images_only`` takes just ``images`` for callers without
    boxes or intrinsics.
``serve_crops``: float32 crops [B, S, S, 3] in [0, 255] and their own
    intrinsics [B, 3, 3], for batch pipelines that crop themselves.

Every signature returns ``pose3d`` (B, 17, 3) mm in the camera frame,
root-relative; ``pose3d_crop`` the same in the crop's camera; ``pose2d``
(B, 14, 2) pixels of the image given (the crop for ``serve_crops``),
``confidence`` (B, 14) heatmap peaks in [0, 1], ``crop_box`` (B, 3) the square
(cx, cy, side) that was cropped, ``intrinsics`` (B, 3, 3) the camera used,
``valid`` (B,) whether every output is finite, and ``joint_names_3d``
(B, 17) / ``joint_names_2d`` (B, 14). Only core TF ops, validation first
(``image_guard``), float32 throughout. The crop of ``serving_default`` is
``preprocess``'s (the box margin and resampling training used): the bytes,
headers and crop geometry are checked and worked out for the whole batch at
once, each image is decoded and reduced on its own (two in flight, so a
request holds at most two decoded photos), then the crops of the whole batch
are sampled in one call (``crop_images``); the values are
``preprocess.warp``'s of the decoded image, bit for bit. A JPEG that the crop
shrinks 4 times or more is decoded at 1/2, 1/4 or 1/8 of its size
(``decode_ratios``: libjpeg scales its DCT, and the antialiasing filter
reduces the rest; only baseline JPEGs, at a ratio that divides both sides),
which changes a photo's crop by under a grey level on average;
``ServingModule(scaled_decode=False)`` (``export --noscaled_jpeg_decode``)
decodes every image whole.
"""

from __future__ import annotations

import tensorflow as tf

from wild3d_tf import image_guard, inference, preprocess, skeletons


def _shape_check(tensor, name: str, trailing=()):
  """Asserts shape [batch, *trailing] at run time.

  A loaded signature does not check shapes against its TensorSpec, and the
  rank of a [None] placeholder is folded to a constant, so this compares the
  run-time shape, padded with zeros, with the element count instead.
  """
  rank = 1 + len(trailing)
  padded = tf.pad(tf.shape(tensor), [[0, 2]])
  ok = (
    tf.equal(tf.reduce_prod(padded[:rank]), tf.size(tensor))
    & tf.equal(padded[rank], 0)
    & tf.reduce_all(tf.equal(padded[1:rank], list(trailing) or tf.zeros([0], tf.int32)))
  )
  expected = "[batch" + "".join(f", {d}" for d in trailing) + "]"
  return image_guard.require(
    ok, f"{name} must have shape {expected}; got shape ", tf.strings.as_string(padded)
  )


def decode_ratios(input_from_image, image_sizes, decoded_whole):
  """(B,) int32: the ratio of ``image_guard.JPEG_RATIOS`` each image is decoded at.

  ``input_from_image`` (B, 3, 3) the crop maps, ``image_sizes`` (B, 2) int
  (height, width), ``decoded_whole`` (B,) bool: images decoded whole (ratio
  1), PNGs and progressive JPEGs (the cut-JPEG probe cannot see a cut in a
  progressive file's later scans at a reduced scale, which reads only the
  first coefficients). Otherwise the largest ratio r that divides both
  sides (so the decoded image's edge is the image's edge: libjpeg's last
  pixel of a side it cannot divide covers pixels past the edge, and a crop
  reaching the edge would move its border) and with the crop still
  shrinking the decoded image at least twice (``preprocess.shrink`` >= 2 r),
  so the antialiasing filter still reduces it after the DCT's scaling
  (``preprocess.ANTIALIAS_FROM`` < 2): a 640x480 photo cropped whole to
  128 px is decoded at half size (crops within a grey level of the full
  decode's on average for photos: tests/test_serving.py).
  """
  ratios = tf.constant(image_guard.JPEG_RATIOS, tf.int32)
  shrinks = preprocess.shrink(tf.cast(input_from_image, tf.float64))
  sizes = tf.cast(image_sizes, tf.int32)
  divides = tf.reduce_all(tf.equal(sizes[:, :, None] % ratios, 0), 1)
  fits = divides & (shrinks[:, None] >= 2.0 * tf.cast(ratios, tf.float64))
  ratio = tf.reduce_max(tf.where(fits, ratios, 1), 1)
  return tf.where(decoded_whole, 1, ratio)


def image_from_decoded(ratios):
  """(B, 3, 3) float64 maps from the pixels of images decoded at ``ratios`` (B,) to the full
  image's: decoded pixel i sits at the centre of full pixels [r i, r i + r)."""
  r = tf.cast(ratios, tf.float64)
  zero, one, offset = tf.zeros_like(r), tf.ones_like(r), (r - 1) / 2
  return tf.stack(
    [
      tf.stack([r, zero, offset], -1),
      tf.stack([zero, r, offset], -1),
      tf.stack([zero, zero, one], -1),
    ],
    -2,
  )


class ServingModule(tf.Module):
  def __init__(
    self,
    network,
    flip: bool = False,
    limits: image_guard.Limits = image_guard.DEFAULT_LIMITS,
    xla: bool = False,
    scaled_decode: bool = True,
  ):
    """``scaled_decode``: decode JPEGs that the crop shrinks at least 4 times at 1/2, 1/4 or
    1/8 of their size (``decode_ratios``); False decodes every image whole."""
    super().__init__(name="wild3d")
    self.network = network
    self.scaled_decode = scaled_decode
    # The tf.Variables behind the Keras variables, tracked directly: without this the
    # SavedModel's TF1-style restore (TF Serving, saved_model_cli run) cannot find them
    # (keras-team/keras#20095; keras.export.ExportArchive does the same).
    self.model_variables = [getattr(v, "value", v) for v in network.variables]
    self.predictor = inference.Predictor(network, flip)
    self.limits = limits
    # XLA compiles the network and the geometry after the crops; decoding and
    # cropping (strings, per-image shapes) stay outside it.
    self._on_images = (
      tf.function(self.predictor.on_images, jit_compile=True) if xla else self.predictor.on_images
    )
    size = self.predictor.input_size
    self.input_size = size
    self.names_3d = tf.constant(skeletons.POSE3D.joints)
    self.names_2d = tf.constant(skeletons.POSE2D.joints)
    images = tf.TensorSpec([None], tf.string, name="images")
    self.serve_images = tf.function(
      self._serve_images,
      input_signature=[
        images,
        tf.TensorSpec([None, 4], tf.float32, name="boxes"),
        tf.TensorSpec([None, 4], tf.float32, name="intrinsics"),
      ],
    )
    self.serve_images_only = tf.function(self._serve_images_only, input_signature=[images])
    self.serve_crops = tf.function(
      self._serve_crops,
      input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32, name="crops"),
        tf.TensorSpec([None, 3, 3], tf.float32, name="intrinsics"),
      ],
    )

  def signatures(self) -> dict:
    return {
      "serving_default": self.serve_images,
      "serve_images_only": self.serve_images_only,
      "serve_crops": self.serve_crops,
    }

  # ------------------------------------------------------------------ signatures

  def _serve_images_only(self, images):
    zeros = tf.zeros([tf.size(images), 4], tf.float32)
    return self._serve_images(images, zeros, zeros)

  def _serve_images(self, images, boxes, intrinsics):
    crops, image_from_input, cameras, squares = self.crop_images(images, boxes, intrinsics)
    return self._outputs(self._network(crops, image_from_input, cameras), squares, cameras)

  def crop_images(self, images, boxes, intrinsics, batched: bool = True):
    """``serving_default``'s image path: the checked inputs, decoded and cropped.

    ``images`` string [B], ``boxes`` and ``intrinsics`` float32 [B, 4] as in
    the module's docstring. Returns ``crops`` (B, S, S, 3) float32 integers in
    [0, 255] (``preprocess.warp``'s values), ``image_from_input`` (B, 3, 3)
    float32 crop pixels to image pixels, ``cameras`` (B, 3, 3) float32 K and
    ``squares`` (B, 3) float32 (cx, cy, side) image pixels. Raises
    InvalidArgument naming the element and the check for a refused input.

    Everything that needs no pixels runs once for the batch, vectorised: the
    checks of the bytes and the headers (``image_guard.inspect``), the
    squares, cameras, decode ratios (``decode_ratios``, where
    ``scaled_decode``) and ``preprocess.prefilter_plan`` (from the headers'
    sizes). Per image only decoding and ``preprocess.reduce_region``, two
    images in flight; then one ``preprocess.resample`` samples every crop.
    ``batched=False`` is the reference the parity test and
    ``benchmarks/serving_speed.py`` compare with: each crop whole
    (``preprocess.warp``) inside the per-image loop.
    """
    with tf.control_dependencies(
      [
        _shape_check(images, "images"),
        _shape_check(boxes, "boxes", (4,)),
        _shape_check(intrinsics, "intrinsics", (4,)),
      ]
    ):
      images, boxes, intrinsics = tf.identity(images), tf.identity(boxes), tf.identity(intrinsics)
    count = tf.size(images)
    names = tf.range(count)
    checks = image_guard.check_batch(images, self.limits) + [
      image_guard.require(
        tf.equal(tf.shape(boxes)[0], count),
        "boxes has ",
        tf.strings.as_string(tf.shape(boxes)[0]),
        " rows for ",
        tf.strings.as_string(count),
        " images",
      ),
      image_guard.require(
        tf.equal(tf.shape(intrinsics)[0], count),
        "intrinsics has ",
        tf.strings.as_string(tf.shape(intrinsics)[0]),
        " rows for ",
        tf.strings.as_string(count),
        " images",
      ),
    ]
    with tf.control_dependencies(checks):
      boxes, k = tf.identity(boxes), tf.identity(intrinsics)
    box_given = tf.reduce_any(tf.not_equal(boxes, 0.0), 1)
    k_given = tf.reduce_any(tf.not_equal(k, 0.0), 1)
    element_checks = [
      image_guard.require_first(
        [
          (
            tf.reduce_all(tf.math.is_finite(boxes), 1) & tf.reduce_all(tf.math.is_finite(k), 1),
            "box or intrinsics not finite",
          ),
          (
            ~box_given | ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])),
            "box must be (x_min, y_min, x_max, y_max) with x_max > x_min and y_max > y_min",
          ),
          (
            ~k_given | ((k[:, 0] > 0) & (k[:, 1] > 0)),
            "intrinsics (fx, fy, cx, cy) need fx, fy > 0",
          ),
        ],
        names,
      )
    ]
    with tf.control_dependencies(element_checks):
      header, image_checks = image_guard.inspect(images, names, self.limits)
    # The geometry follows the checks: a header's zero or huge size must be refused by name
    # before it makes a singular crop matrix.
    with tf.control_dependencies(image_checks):
      height, width = tf.identity(header["height"]), tf.identity(header["width"])
    given = inference.intrinsics_matrix(k[:, 0], k[:, 1], k[:, 2], k[:, 3])
    cameras = tf.where(k_given[:, None, None], given, inference.default_intrinsics(height, width))
    squares = preprocess.box_around_person(boxes, height, width)
    size = self.input_size
    input_from_image = preprocess.crop_matrix(squares, size)
    sizes = tf.stack([height, width], 1)
    if self.scaled_decode:
      whole = header["png"] | header["progressive"]
      ratios = decode_ratios(input_from_image, sizes, whole)
    else:
      ratios = tf.ones_like(names)
    input_from_decoded = input_from_image @ image_from_decoded(ratios)
    decoded_sizes = image_guard.decoded_size(sizes, ratios)
    plan = preprocess.prefilter_plan(input_from_decoded, decoded_sizes, size)

    def one(args):
      encoded, header, ratio, plan, input_from_image = args
      image, cut = image_guard.decode_one(encoded, header, ratio)
      if batched:
        pixels = tf.RaggedTensor.from_tensor(preprocess.reduce_region(image, plan))
      else:
        pixels = preprocess.warp(image, input_from_image, size)
      return pixels, tf.shape(image)[:2], cut

    with tf.control_dependencies(image_checks):
      images = tf.identity(images)
    pixels, shapes, cuts = tf.map_fn(
      one,
      (images, header, ratios, plan, input_from_decoded),
      parallel_iterations=2,
      fn_output_signature=(
        tf.RaggedTensorSpec([None, None, 3], tf.float32, ragged_rank=1)
        if batched
        else tf.TensorSpec([size, size, 3], tf.float32),
        tf.TensorSpec([2], tf.int32),
        tf.TensorSpec([], tf.bool),
      ),
    )
    with tf.control_dependencies(image_guard.decoded_checks(header, shapes, cuts, names, ratios)):
      pixels = tf.identity(pixels)
    if batched:
      # An empty map_fn's ragged result has flat values of shape (0,), not (0, 3).
      pixels = pixels.with_flat_values(tf.reshape(pixels.flat_values, [-1, 3]))
      # Zero padding to the batch's largest reduced part reads as the zeros outside each image.
      pixels = preprocess.resample(
        pixels.to_tensor(shape=[None, None, None, 3]), plan["input_from_pixels"], size
      )
    image_from_input = tf.cast(tf.linalg.inv(input_from_image), tf.float32)
    return pixels, image_from_input, cameras, tf.cast(squares, tf.float32)

  def _network(self, crops, image_from_input, cameras) -> dict:
    """``predictor.on_images``; an empty batch runs as one blank crop whose outputs are dropped,
    because some CPU kernels (oneDNN's batch norm on AVX-512/AMX machines) reject a batch of 0."""
    count = tf.shape(crops)[0]
    blank = tf.cast(tf.equal(count, 0), tf.int32)
    pad = lambda t, fill: tf.concat(
      [t, tf.tile(fill[None], tf.concat([[blank], tf.ones([t.shape.rank - 1], tf.int32)], 0))], 0
    )
    out = self._on_images(
      pad(crops, tf.zeros(crops.shape[1:])),
      pad(image_from_input, tf.eye(3)),
      pad(cameras, tf.eye(3)),
    )
    return {name: value[:count] for name, value in out.items()}

  def _serve_crops(self, crops, intrinsics):
    with tf.control_dependencies(
      [
        _shape_check(crops, "crops", (self.input_size, self.input_size, 3)),
        _shape_check(intrinsics, "intrinsics", (3, 3)),
      ]
    ):
      crops, intrinsics = tf.identity(crops), tf.identity(intrinsics)
    count = tf.shape(crops)[0]
    checks = [
      image_guard.require(
        count <= self.limits.max_batch,
        "batch of ",
        tf.strings.as_string(count),
        " crops exceeds the limit of ",
        str(self.limits.max_batch),
      ),
      image_guard.require(
        tf.equal(tf.shape(intrinsics)[0], count),
        "intrinsics has ",
        tf.strings.as_string(tf.shape(intrinsics)[0]),
        " matrices for ",
        tf.strings.as_string(count),
        " crops",
      ),
      image_guard.require(
        tf.reduce_all(tf.math.is_finite(crops)) & tf.reduce_all(tf.math.is_finite(intrinsics)),
        "crops and intrinsics must be finite",
      ),
      image_guard.require(
        tf.reduce_all((intrinsics[:, 0, 0] > 0) & (intrinsics[:, 1, 1] > 0)),
        "intrinsics need fx, fy > 0",
      ),
    ]
    with tf.control_dependencies(checks):
      crops = tf.identity(crops)
    identity = tf.eye(3, batch_shape=[count])
    half = (self.input_size - 1) / 2
    squares = tf.tile([[half, half, float(self.input_size)]], [count, 1])
    return self._outputs(self._network(crops, identity, intrinsics), squares, intrinsics)

  def _outputs(self, out, squares, cameras) -> dict:
    count = tf.shape(out["pose3d"])[0]
    finite = [
      tf.reduce_all(tf.math.is_finite(tf.reshape(out[k], [count, -1])), axis=-1)
      for k in ("pose3d", "pose2d", "confidence")
    ]
    return {
      "pose3d": out["pose3d"],
      "pose3d_crop": out["pose3d_crop"],
      "pose2d": out["pose2d"],
      "confidence": out["confidence"],
      "crop_box": squares,
      "intrinsics": cameras,
      "valid": tf.reduce_all(tf.stack(finite), axis=0),
      "joint_names_3d": tf.tile(self.names_3d[None], [count, 1]),
      "joint_names_2d": tf.tile(self.names_2d[None], [count, 1]),
    }
