"""Export, the serving signatures, input safety, the predict CLI and the TF Serving client."""

import base64
import concurrent.futures
import hashlib
import http.server
import importlib.util
import json
import os
import pathlib
import re
import struct
import subprocess
import sys
import threading
import time
import zlib

import cv2
import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import (
  cameras,
  export,
  geometry,
  heatmaps,
  image_guard,
  inference,
  preprocess,
  serving_module,
  skeletons,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "wild3d_tf" / "demo_data"  # copies of shared/data/photos
SIZE = 64  # the tiny_checkpoint input size


# Poses are ~100 mm or ~50 px; graph and eager runs may pick different oneDNN kernels (AVX-512/AMX
# machines differ by ~3e-4), so compare in float32's relative precision, not to 1e-4.
POSE_TOLERANCE = {"rtol": 1e-5, "atol": 1e-3}


def _client_module():
  spec = importlib.util.spec_from_file_location(
    "wild3d_serving_client", ROOT / "serving" / "client.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


client_lib = _client_module()


def jpeg(height=48, width=40, seed=0):
  image = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
  return cv2.imencode(".jpg", image)[1].tobytes()


def png_claiming(width, height):
  """A small, well-formed PNG whose header claims ``width`` x ``height`` pixels."""

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  return (
    b"\x89PNG\r\n\x1a\n"
    + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
    + chunk(b"IEND", b"")
  )


def jpeg_claiming(width, height):
  data = bytearray(jpeg())
  sof = data.index(b"\xff\xc0")
  data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
  return bytes(data)


@pytest.fixture(scope="module")
def loaded(tiny_export):
  return tf.saved_model.load(str(tiny_export))


def call_images(loaded, images, boxes=None, intrinsics=None):
  count = len(images)
  return loaded.signatures["serving_default"](
    images=tf.constant(images, tf.string),
    boxes=tf.constant(np.zeros([count, 4]) if boxes is None else boxes, tf.float32),
    intrinsics=tf.constant(np.zeros([count, 4]) if intrinsics is None else intrinsics, tf.float32),
  )


def crop_intrinsics(count):
  k = np.array([[SIZE, 0, (SIZE - 1) / 2], [0, SIZE, (SIZE - 1) / 2], [0, 0, 1]], np.float32)
  return np.repeat(k[None], count, 0)


# --------------------------------------------------------------------------- export and parity


def test_export_layout_and_contract(tiny_export, tiny_checkpoint, loaded):
  assert tiny_export.name == "1" and tiny_export.parent.name == "wild3d"
  for name in (
    "saved_model.pb",
    "variables",
    "assets.extra/tf_serving_warmup_requests",
    "assets.extra/wild3d.json",
  ):
    assert (tiny_export / name).exists(), name
  assert not list(tiny_export.parent.glob(".staging*"))
  assert set(loaded.signatures) == {"serving_default", "serve_images_only", "serve_crops"}
  spec = loaded.signatures["serving_default"].structured_input_signature[1]
  assert spec["images"].dtype == tf.string and spec["images"].shape.as_list() == [None]
  assert spec["boxes"].shape.as_list() == [None, 4] and spec["intrinsics"].shape.as_list() == [
    None,
    4,
  ]
  outputs = loaded.signatures["serving_default"].structured_outputs
  assert {k: v.shape.as_list() for k, v in outputs.items()} == {
    "pose3d": [None, 17, 3],
    "pose3d_crop": [None, 17, 3],
    "pose2d": [None, 14, 2],
    "confidence": [None, 14],
    "crop_box": [None, 3],
    "intrinsics": [None, 3, 3],
    "valid": [None],
    "joint_names_3d": [None, 17],
    "joint_names_2d": [None, 14],
  }
  assert all(v.dtype in (tf.float32, tf.bool, tf.string) for v in outputs.values())
  meta = json.loads((tiny_export / "assets.extra" / "wild3d.json").read_text())
  assert meta["joints_3d"] == list(skeletons.POSE3D.joints) and meta["input_size"] == SIZE
  # The crop setting a client needs to crop as training did, from the one definition.
  assert (
    (meta["box_margin"], meta["min_box_side"])
    == (0.2, 16.0)
    == (
      preprocess.BOX_MARGIN,
      preprocess.MIN_BOX_SIDE,
    )
  )
  assert meta["default_fov_degrees"] == 55.0 == cameras.DEFAULT_FOV_DEGREES
  assert meta["scaled_jpeg_decode"] is True  # the export default
  # A second export is the next version, as TF Serving expects.
  again = export.export_saved_model(tiny_checkpoint[1], str(tiny_export.parents[1]))
  assert again == str(tiny_export.parent / "2")


def test_saved_model_matches_keras_on_the_same_crops(tiny_checkpoint, loaded):
  network = tiny_checkpoint[1]
  crops = np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
  reference = network(crops, training=False)
  pose = reference["pose3d"].numpy()
  joints, peak = (x.numpy() for x in heatmaps.decode(reference["heatmaps"], stride=16))
  out = loaded.signatures["serve_crops"](
    crops=tf.constant(crops), intrinsics=tf.constant(crop_intrinsics(3))
  )
  np.testing.assert_allclose(out["pose3d_crop"].numpy(), pose - pose[:, :1], **POSE_TOLERANCE)
  np.testing.assert_allclose(out["pose2d"].numpy(), joints, **POSE_TOLERANCE)
  np.testing.assert_allclose(out["confidence"].numpy(), np.clip(peak, 0, 1), atol=1e-4)
  # The crop looks straight down the optical axis here, so no rotation is applied.
  np.testing.assert_allclose(out["pose3d"].numpy(), out["pose3d_crop"].numpy(), **POSE_TOLERANCE)
  assert out["valid"].numpy().all()


def test_saved_model_cli_run_matches_keras(tiny_checkpoint, tiny_export, tmp_path):
  network = tiny_checkpoint[1]
  crops = np.random.default_rng(2).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
  np.save(tmp_path / "crops.npy", crops)
  np.save(tmp_path / "k.npy", crop_intrinsics(2))
  cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
  subprocess.run(
    [
      str(cli),
      "run",
      "--dir",
      str(tiny_export),
      "--tag_set",
      "serve",
      "--signature_def",
      "serve_crops",
      "--inputs",
      f"crops={tmp_path / 'crops.npy'};intrinsics={tmp_path / 'k.npy'}",
      "--outdir",
      str(tmp_path / "out"),
    ],
    check=True,
    capture_output=True,
  )
  pose = network(crops, training=False)["pose3d"].numpy()
  np.testing.assert_allclose(
    np.load(tmp_path / "out" / "pose3d_crop.npy"), pose - pose[:, :1], **POSE_TOLERANCE
  )


def test_warmup_requests_replay_through_the_signatures(tiny_export, loaded):
  from tensorflow_serving.apis import prediction_log_pb2

  logs = [
    prediction_log_pb2.PredictionLog.FromString(r.numpy())
    for r in tf.data.TFRecordDataset(str(tiny_export / "assets.extra" / export.WARMUP_FILE))
  ]
  assert {log.predict_log.request.model_spec.signature_name for log in logs} == set(
    loaded.signatures
  )
  for log in logs:
    request = log.predict_log.request
    inputs = {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
    outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
    assert outputs["valid"].numpy().all()


# ------------------------------------------------------------------- geometry of the image path


def test_crop_puts_an_image_point_where_the_matrix_says():
  image = np.zeros((300, 200, 3), np.uint8)
  point = np.array([120.0, 90.0])
  image[90, 120] = 255
  square = tf.constant([110.0, 100.0, 96.0])  # downscale 1.5: filtered, then sampled
  crop, input_from_image = preprocess.crop(tf.constant(image), square, 64)
  expected = geometry.apply_affine(point, input_from_image.numpy().astype(np.float64))
  brightest = np.unravel_index(np.argmax(crop.numpy()[..., 0]), (64, 64))
  assert np.abs(np.array(brightest[::-1]) - expected).max() <= 0.5
  np.testing.assert_allclose(expected, (point - [110, 100]) * 64 / 96 + 31.5, atol=1e-4)


def test_an_image_of_the_input_size_equals_its_crop(loaded):
  image = (np.random.default_rng(3).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
  encoded = cv2.imencode(".png", image[..., ::-1])[1].tobytes()  # lossless, RGB in
  k = np.array([[80.0, 0, 20.0], [0, 80.0, 40.0], [0, 0, 1]], np.float32)
  served = call_images(loaded, [encoded], intrinsics=[[80.0, 80.0, 20.0, 40.0]])
  crops = loaded.signatures["serve_crops"](
    crops=tf.constant(image[None].astype(np.float32)), intrinsics=k[None]
  )
  for name in ("pose3d_crop", "pose2d", "confidence", "pose3d"):
    np.testing.assert_allclose(served[name].numpy(), crops[name].numpy(), atol=1e-4, err_msg=name)
  np.testing.assert_allclose(served["crop_box"].numpy()[0], [(SIZE - 1) / 2, (SIZE - 1) / 2, SIZE])
  # Perspective correction: the crop centre's ray is off-axis for this K, and pose3d is
  # pose3d_crop rotated.
  ray = np.array([((SIZE - 1) / 2 - 20) / 80, ((SIZE - 1) / 2 - 40) / 80])
  rotation = geometry.virtual_camera_rotation(ray)
  np.testing.assert_allclose(
    served["pose3d"].numpy()[0],
    geometry.virtual_to_camera(served["pose3d_crop"].numpy()[0], rotation),
    atol=1e-3,
  )


def test_box_and_default_intrinsics(loaded):
  out = call_images(
    loaded, [jpeg(300, 200), jpeg(300, 200)], boxes=[[0, 0, 0, 0], [10, 20, 110, 220]]
  )
  np.testing.assert_allclose(
    out["crop_box"].numpy(), [[99.5, 149.5, 300], [60, 120, 280]], atol=1e-4
  )
  focal = 300 / (2 * np.tan(np.radians(55 / 2)))
  np.testing.assert_allclose(
    out["intrinsics"].numpy()[0], [[focal, 0, 99.5], [0, focal, 149.5], [0, 0, 1]], rtol=1e-5
  )
  assert [n.decode() for n in out["joint_names_3d"].numpy()[0]] == list(skeletons.POSE3D.joints)


def per_image_reference(network, images, boxes):
  """The image path as it was before it was batched: decode and crop one image at a time (a JPEG
  at ``decode_ratios``' scale, then ``preprocess.warp``), then the network. Returns (crops (B, S,
  S, 3), pose2d (B, 14, 2), pose3d (B, 17, 3), the decode ratios (B,))."""
  crops, image_from_input, cameras_k, ratios = [], [], [], []
  for index, (encoded, box) in enumerate(zip(images, boxes)):
    height, width = (
      tf.io.extract_jpeg_shape(encoded)[:2]
      if encoded[:2] == b"\xff\xd8"
      else (cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR).shape[:2])
    )
    square = preprocess.box_around_person(tf.constant(box, tf.float32), height, width)
    input_from_image = preprocess.crop_matrix(square, SIZE)
    is_png = tf.constant([encoded[:4] == b"\x89PNG"])
    ratio = serving_module.decode_ratios(input_from_image[None], [[height, width]], is_png)
    image = image_guard.decode(tf.constant(encoded), index, image_guard.DEFAULT_LIMITS, ratio[0])
    decoded = input_from_image @ serving_module.image_from_decoded(ratio)[0]
    crops.append(preprocess.warp(image, decoded, SIZE))
    image_from_input.append(tf.linalg.inv(input_from_image))
    cameras_k.append(inference.default_intrinsics(height, width))
    ratios.append(int(ratio[0]))
  out = inference.Predictor(network).on_images(
    tf.stack(crops), tf.stack(image_from_input), tf.stack(cameras_k)
  )
  return tf.stack(crops).numpy(), out["pose2d"].numpy(), out["pose3d"].numpy(), ratios


def test_batched_image_path_equals_the_per_image_crop(tiny_checkpoint, loaded):
  # Sizes and boxes that take every branch of the crop and pad the batch unevenly: a whole
  # 640x480 photo (shrunk 10x: antialiased), a 40x28 PNG (enlarged: sampled directly), a box
  # shrunk 4.4x, a box half outside its image (zeros there), and one shrunk 1.4x (direct, so its
  # prefiltered part is the largest of the batch and pads the others).
  rng = np.random.default_rng(5)
  small_png = cv2.imencode(".png", (rng.random((28, 40, 3)) * 255).astype(np.uint8))[1].tobytes()
  images = [jpeg(480, 640, 1), small_png, jpeg(300, 200, 2), jpeg(200, 240, 3), jpeg(120, 90, 4)]
  boxes = np.array(
    [[0, 0, 0, 0], [0, 0, 0, 0], [10, 20, 110, 220], [-30, 150, 90, 260], [10, 10, 74, 60]],
    np.float32,
  )
  reference_crops, reference_2d, reference_3d, ratios = per_image_reference(
    tiny_checkpoint[1], images, boxes
  )
  assert ratios == [4, 1, 2, 1, 1]  # the photo (shrunk 10x) and the box shrunk 4.4x: scaled
  module = serving_module.ServingModule(tiny_checkpoint[1])
  inputs = (tf.constant(images), tf.constant(boxes), tf.zeros([len(images), 4]))
  crops = tf.function(module.crop_images)(*inputs)[0]
  # Bit for bit: each output pixel is the same bilinear sum of the same prefiltered pixels, and
  # the batch's zero padding is read exactly where one image alone reads the zeros outside it.
  np.testing.assert_array_equal(crops.numpy(), reference_crops)
  slow = tf.function(lambda *x: module.crop_images(*x, batched=False))(*inputs)[0]
  np.testing.assert_array_equal(slow.numpy(), reference_crops)
  # The joints then differ only by the network's graph-versus-eager kernels (POSE_TOLERANCE).
  out = call_images(loaded, images, boxes=boxes)
  np.testing.assert_allclose(out["pose2d"].numpy(), reference_2d, **POSE_TOLERANCE)
  np.testing.assert_allclose(out["pose3d"].numpy(), reference_3d, **POSE_TOLERANCE)


def test_a_scaled_jpeg_decode_crops_within_a_grey_level_of_the_whole_decode(tiny_checkpoint):
  # The shipped photos as a camera's JPEGs at three sizes, cropped whole to 64 px: shrunk 5, 10
  # and 37.5 times, so decoded at 1/2, 1/4 and 1/8 of their size (libjpeg's DCT scaling, then
  # the antialiasing filter reduces the rest). Against decoding them whole: 0.55-0.74 grey
  # levels on average, at most 9 (0.4-0.6 and 6 at 128 px); a decoded pixel put half a pixel off
  # (its centre taken at r i instead of r i + (r - 1) / 2) gives means of 2.2-3.4. A fourth
  # size, 643x481, would shrink 10 times but no ratio divides its sides: decoded whole, the same
  # crop (scaled, its odd sides' last decoded pixels reach past the edge and the crop's border
  # moves: means of 1.0-1.9).
  photos = [cv2.imread(str(path)) for path in sorted(PHOTOS.glob("*.png"))]
  sizes = [(320, 240), (640, 480), (2400, 1800), (643, 481)]
  encoded = [
    cv2.imencode(".jpg", cv2.resize(photo, size, interpolation=cv2.INTER_AREA))[1].tobytes()
    for size in sizes
    for photo in photos
  ]
  zeros = tf.zeros([len(encoded), 4])
  crops = {}
  for scaled in (True, False):
    module = serving_module.ServingModule(tiny_checkpoint[1], scaled_decode=scaled)
    crops[scaled] = tf.function(module.crop_images)(tf.constant(encoded), zeros, zeros)[0].numpy()
  image_sizes = [(height, width) for width, height in sizes for _ in photos]
  squares = preprocess.box_around_person(zeros, *np.transpose(image_sizes))
  ratios = serving_module.decode_ratios(
    preprocess.crop_matrix(squares, SIZE), image_sizes, tf.zeros([len(encoded)], tf.bool)
  )
  assert ratios.numpy().tolist() == [2, 2, 4, 4, 8, 8, 1, 1]
  difference = np.abs(crops[True] - crops[False]).reshape(len(sizes), -1)
  assert (difference[:3].mean(1) > 0.05).all()  # the scaled decode is in effect
  assert (difference[:3].mean(1) < 1.0).all(), difference.mean(1)
  assert difference.max() <= 12
  assert (difference[3] == 0).all()


# --------------------------------------------------------------------------- safety at the boundary

BAD_IMAGES = {
  "garbage": (b"\x00\x01garbage bytes that are no image" * 4, "not a JPEG or PNG"),
  "empty": (b"", "empty bytes"),
  "gif": (b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + b"\x00" * 40 + b";", "not a JPEG or PNG"),
  "bmp": (b"BM" + b"\x00" * 60, "not a JPEG or PNG"),
  "png_bomb": (png_claiming(20000, 20000), "20000x20000 pixels: a side exceeds the limit of 8192"),
  "jpeg_huge_header": (
    jpeg_claiming(60000, 60000),
    "60000x60000 pixels: a side exceeds the limit of 8192",
  ),
  "png_too_many_pixels": (
    png_claiming(8000, 8000),
    "8000x8000 pixels exceed the limit of 40000000 pixels",
  ),
  "truncated_jpeg": (jpeg()[:400], "truncated"),
  # Cut after the start of scan: the header walk passes, only the end-marker scan refuses it.
  "jpeg_without_end_marker": (jpeg()[:-2], "truncated"),
  "truncated_png": (
    cv2.imencode(".png", np.full((40, 40, 3), 7, np.uint8))[1].tobytes()[:60],
    "truncated",
  ),
  "over_byte_cap": (
    b"\xff\xd8\xff" + b"\0" * (10 * 2**20),
    "bytes exceed the limit of 10485760 bytes",
  ),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_is_refused_naming_the_element_and_a_valid_call_still_works(loaded, name):
  data, message = BAD_IMAGES[name]
  with pytest.raises(tf.errors.InvalidArgumentError, match=f"image 1: .*{message}"):
    call_images(loaded, [jpeg(), data])
  assert call_images(loaded, [jpeg()])["valid"].numpy().all()


def test_one_pixel_image_gives_a_finite_answer(loaded):
  assert call_images(loaded, [jpeg(1, 1)])["valid"].numpy().all()


def test_batch_cap_empty_batch_wrong_dtype_and_mismatched_rows(loaded):
  with pytest.raises(
    tf.errors.InvalidArgumentError, match="batch of 33 images exceeds the limit of 32"
  ):
    call_images(loaded, [jpeg()] * 33)
  empty = loaded.signatures["serve_images_only"](images=tf.constant([], tf.string))
  assert empty["pose3d"].shape == (0, 17, 3) and empty["pose2d"].shape == (0, 14, 2)
  for wrong in (
    tf.zeros([2], tf.float32),
    tf.zeros([2], tf.int32),
    tf.constant(b"x"),
    tf.constant([[b"x"]]),
  ):
    with pytest.raises(
      (TypeError, ValueError, tf.errors.InvalidArgumentError),
      match="string tensor|images must have shape",
    ):
      loaded.signatures["serve_images_only"](images=wrong)
  with pytest.raises(tf.errors.InvalidArgumentError, match="boxes has 1 rows for 2 images"):
    call_images(loaded, [jpeg(), jpeg()], boxes=np.zeros([1, 4]), intrinsics=np.zeros([2, 4]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="image 0: box must be"):
    call_images(loaded, [jpeg()], boxes=[[50, 50, 10, 10]])
  with pytest.raises(tf.errors.InvalidArgumentError, match="batch of 33 crops"):
    loaded.signatures["serve_crops"](
      crops=tf.zeros([33, SIZE, SIZE, 3]), intrinsics=crop_intrinsics(33)
    )
  assert call_images(loaded, [jpeg()])["valid"].numpy().all()


def test_concurrent_calls_mixing_good_and_bad_inputs(loaded):
  def work(i):
    if i % 3 == 0:
      try:
        call_images(loaded, [b"not an image"])
      except tf.errors.InvalidArgumentError:
        return "refused"
      return "accepted"
    return "ok" if call_images(loaded, [jpeg(seed=i)])["valid"].numpy().all() else "bad"

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = list(pool.map(work, range(24)))
  assert results == ["refused" if i % 3 == 0 else "ok" for i in range(24)]


def test_guard_reads_every_header_of_a_batch_in_step_and_takes_bytes_after_the_end():
  # One batch, headers of different lengths: the walks run side by side (one op per step for
  # the batch) and each must stop at its own scan. Segments whose payload holds marker bytes
  # (a fake SOF, an end marker, a start of scan) are skipped by their length; bytes after the end
  # marker or the IEND chunk (some cameras append data) make the end checks scan the file.
  def segment(marker, payload):
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload

  decoy = b"\xff\xc0\x00\x11\x08\x00\x07\x00\x09\xff\xd9\xff\xda"
  padded = jpeg(20, 30)
  padded = (
    padded[:2] + b"".join(segment(0xE1 + i % 14, decoy * (i + 1)) for i in range(40)) + padded[2:]
  )
  small_png = cv2.imencode(".png", np.full((28, 40, 3), 9, np.uint8))[1].tobytes()
  batch = [
    jpeg(48, 40),
    padded,
    small_png + b"trailer",
    jpeg(16, 24) + b"\0" * 9,
    png_claiming(5, 7),
  ]

  @tf.function
  def inspected(encoded):
    header, checks = image_guard.inspect(
      encoded, tf.range(tf.size(encoded)), image_guard.DEFAULT_LIMITS
    )
    with tf.control_dependencies(checks):
      return {key: tf.identity(value) for key, value in header.items()}

  header = inspected(tf.constant(batch))
  assert header["height"].numpy().tolist() == [48, 20, 28, 16, 7]
  assert header["width"].numpy().tolist() == [40, 30, 40, 24, 5]
  assert header["png"].numpy().tolist() == [False, False, True, False, True]
  assert header["sos"].numpy()[1] > 40 * len(decoy)  # past every decoy segment
  # Each decodes (the predict CLI's path, a batch of one) to the size its header gave.
  decode = tf.function(lambda b, i: image_guard.decode(b, i, image_guard.DEFAULT_LIMITS))
  sizes = [tuple(decode(tf.constant(data), tf.constant(0)).shape[:2]) for data in batch[:4]]
  assert sizes == [(48, 40), (20, 30), (28, 40), (16, 24)]
  # The same image cut before its end marker, the trailer kept, and a segment whose length runs
  # past the end of its file (its walk ends there while the others go on): refused, naming each.
  cut = small_png[:-12] + b"trailer"
  with pytest.raises(tf.errors.InvalidArgumentError, match="image 3: truncated or malformed"):
    inspected(tf.constant(batch[:3] + [cut]))
  overshoot = b"\xff\xd8" + segment(0xE1, b"x" * 8)[:2] + b"\xff\xf0" + b"\0" * 12
  with pytest.raises(tf.errors.InvalidArgumentError, match="image 0: truncated or malformed"):
    inspected(tf.constant([overshoot, padded]))


def test_a_batch_with_several_bad_images_names_the_same_one_every_time(loaded):
  # Checks run for the whole batch, group by group (boxes, bytes, headers, decoded pixels): the
  # message names the first element failing the earliest group, its first failing check.
  gif, empty = BAD_IMAGES["gif"][0], b""
  no_size = b"\xff\xd8\xff\xda\x00\x02\xff\xd9"  # a scan and an end marker, no frame header
  cases = [
    ([jpeg(), empty, gif], "image 1: empty bytes"),
    ([gif, empty], "image 0: not a JPEG or PNG"),
    ([jpeg()[:-2], no_size, gif], "image 2: not a JPEG or PNG"),
    ([no_size, jpeg()[:-2]], "image 0: the header gives no image size"),
    ([jpeg(), jpeg_claiming(9000, 40), jpeg()[:-2]], "image 1: 9000x40 pixels: a side exceeds"),
  ]
  for images, message in cases:
    for _ in range(3):
      with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        call_images(loaded, images)
  # A header of no size alone, no box: refused by name, never a singular crop matrix (the crop's
  # geometry waits for the checks).
  for _ in range(8):
    with pytest.raises(tf.errors.InvalidArgumentError, match="image 0: the header gives no image"):
      call_images(loaded, [no_size])


def test_a_progressive_jpeg_cut_in_a_later_scan_is_refused_however_much_the_crop_shrinks_it(
  loaded,
):
  # At 1/8 scale libjpeg reads only the first coefficients, so the cut-JPEG probe cannot see a cut
  # in a progressive file's later scans: such files are decoded whole (decode_ratios). The photo
  # cropped whole to 64 px shrinks 16 times (1/8 for a baseline file of this size).
  rng = np.random.default_rng(1)
  image = cv2.GaussianBlur(rng.integers(0, 256, (768, 1024, 3), np.uint8), (5, 5), 2)
  quality = [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
  whole = cv2.imencode(".jpg", image, quality)[1].tobytes()
  scans = [m.start() for m in re.finditer(b"\xff\xda", whole)]
  cut = whole[: (scans[4] + scans[5]) // 2] + b"\xff\xd9"
  matrix = preprocess.crop_matrix(preprocess.box_around_person(tf.zeros(4), 768, 1024), SIZE)
  ratios = [
    serving_module.decode_ratios(matrix[None], [[768, 1024]], [progressive]).numpy()[0]
    for progressive in (False, True)
  ]
  assert ratios == [8, 1]
  assert call_images(loaded, [whole])["valid"].numpy().all()
  with pytest.raises(tf.errors.InvalidArgumentError, match="image 0: JPEG cut inside its image"):
    call_images(loaded, [cut])


def test_guard_limits_are_configurable():
  limits = image_guard.Limits(max_side=30)
  fn = tf.function(lambda b: image_guard.decode(b, tf.constant(5), limits))
  with pytest.raises(
    tf.errors.InvalidArgumentError, match="image 5: 40x48 pixels: a side exceeds the limit of 30"
  ):
    fn(tf.constant(jpeg(48, 40)))
  assert fn(tf.constant(jpeg(20, 30))).shape == (20, 30, 3)


# --------------------------------------------------------------------------- predict CLI


def _predict(args, cwd):
  return subprocess.run(
    [sys.executable, "-m", "wild3d_tf.predict", *args], capture_output=True, text=True, cwd=cwd
  )


@pytest.mark.slow
def test_predict_cli_on_the_shipped_photos_and_bad_files(tiny_export, tmp_path):
  photos = sorted(str(p) for p in PHOTOS.glob("*.png"))
  assert photos, PHOTOS
  bad = {"missing": str(tmp_path / "missing.jpg"), "folder": str(tmp_path)}
  for name, data in (
    ("empty.jpg", b""),
    ("text.jpg", b"just some text\n"),
    ("bomb.png", png_claiming(20000, 20000)),
    ("cut.jpg", jpeg()[:300]),
  ):
    (tmp_path / name).write_bytes(data)
    bad[name] = str(tmp_path / name)
  (tmp_path / "zero.jpg").symlink_to("/dev/zero")
  bad["zero"] = str(tmp_path / "zero.jpg")
  out = tmp_path / "out"
  run = _predict(
    [
      photos[0],
      *bad.values(),
      *photos[1:],
      "--saved_model",
      str(tiny_export),
      "--box",
      "20,20,400,500",
      f"--output_dir={out}",
    ],
    ROOT,
  )
  assert run.returncode == 1, run.stderr[-2000:]
  failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED")]
  assert len(failed) == len(bad)
  for line, expected in zip(
    failed,
    (
      "No such file",
      "not a regular file",
      "empty file",
      "not a JPEG or PNG",
      "20000x20000",
      "truncated",
      "not a regular file",
    ),
  ):
    assert expected in line, line
  for photo in photos:
    stem = pathlib.Path(photo).stem
    result = json.loads((out / f"{stem}.json").read_text())
    assert list(result["pose3d_mm"]) == list(skeletons.POSE3D.joints)
    assert result["crop_box_cx_cy_side"] == pytest.approx([210, 260, 1.4 * 480], abs=1e-3)
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "Traceback" not in run.stderr


# --------------------------------------------------------------------------- client


def test_client_rest_body_is_tf_servings_columnar_format():
  client = client_lib.Wild3dClient(timeout_seconds=1.0)
  images = [jpeg(), jpeg(seed=1)]
  body = client.rest_body(images, boxes=[[1, 2, 3, 4], [0, 0, 0, 0]])
  assert set(body) == {"signature_name", "inputs"} and body["signature_name"] == "serving_default"
  assert [base64.b64decode(x["b64"]) for x in body["inputs"]["images"]] == images
  assert body["inputs"]["boxes"] == [[1, 2, 3, 4], [0, 0, 0, 0]]
  assert body["inputs"]["intrinsics"] == [[0, 0, 0, 0]] * 2
  json.dumps(body)  # serialisable as is
  assert client.rest_url() == "http://localhost:8501/v1/models/wild3d:predict"


def test_client_refuses_before_sending():
  with pytest.raises(ValueError, match="deadline"):
    client_lib.Wild3dClient(timeout_seconds=0)
  client = client_lib.Wild3dClient("127.0.0.1", rest_port=9, timeout_seconds=1.0)
  with pytest.raises(
    client_lib.RequestRefused, match="image 0: 52428803 bytes exceed the limit of 10485760"
  ):
    client.predict_rest([b"\xff\xd8\xff" + b"\0" * (50 * 2**20)])
  with pytest.raises(client_lib.RequestRefused, match="image 1: not a JPEG or PNG"):
    client.predict_rest([jpeg(), b"GIF89a"])


class _Handler(http.server.BaseHTTPRequestHandler):
  """A loopback stand-in for TF Serving's REST API.

  Columnar inputs, b64 strings, {"outputs": ...}.
  """

  signature = None
  delay = 0.0

  def do_POST(self):
    time.sleep(self.delay)
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    assert self.path == "/v1/models/wild3d:predict"
    inputs = body["inputs"]
    tensors = {
      "images": tf.constant([base64.b64decode(x["b64"]) for x in inputs["images"]]),
      "boxes": tf.constant(inputs["boxes"], tf.float32),
      "intrinsics": tf.constant(inputs["intrinsics"], tf.float32),
    }
    outputs = self.signature(**tensors)
    reply = {
      k: (v.numpy().astype(str) if v.dtype == tf.string else v.numpy()).tolist()
      for k, v in outputs.items()
    }
    data = json.dumps({"outputs": reply}).encode()
    self.send_response(200)
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):
    pass


def _serve_http(handler):
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server


def test_client_rest_round_trip_and_deadline(loaded):
  handler = type("H", (_Handler,), {"signature": loaded.signatures["serving_default"]})
  server = _serve_http(handler)
  try:
    client = client_lib.Wild3dClient(
      "127.0.0.1", rest_port=server.server_address[1], timeout_seconds=20
    )
    images = [jpeg(), jpeg(90, 60, seed=4)]
    outputs = client.predict_rest(images)
    direct = call_images(loaded, images)
    np.testing.assert_allclose(outputs["pose3d"], direct["pose3d"].numpy(), atol=1e-3)
    assert outputs["pose2d"].shape == (2, 14, 2)
  finally:
    server.shutdown()
  slow = _serve_http(
    type("S", (_Handler,), {"signature": loaded.signatures["serving_default"], "delay": 5.0})
  )
  try:
    client = client_lib.Wild3dClient(
      "127.0.0.1", rest_port=slow.server_address[1], timeout_seconds=0.5
    )
    start = time.perf_counter()
    with pytest.raises(OSError):  # socket timeout (TimeoutError or URLError wrapping it)
      client.predict_rest([jpeg()])
    assert time.perf_counter() - start < 1.5
  finally:
    slow.shutdown()


def test_client_grpc_round_trip_and_deadline(loaded):
  import grpc
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

  class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    delay = 0.0

    def Predict(self, request, context):
      time.sleep(self.delay)
      signature = loaded.signatures[request.model_spec.signature_name]
      outputs = signature(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
      reply = predict_pb2.PredictResponse()
      for name, value in outputs.items():
        reply.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
      return reply

  servicer = Servicer()
  server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
  port = server.add_insecure_port("127.0.0.1:0")
  server.start()
  try:
    client = client_lib.Wild3dClient("127.0.0.1", grpc_port=port, timeout_seconds=20)
    images = [jpeg(seed=5)]
    np.testing.assert_allclose(
      client.predict_grpc(images)["pose3d"],
      call_images(loaded, images)["pose3d"].numpy(),
      atol=1e-5,
    )
    servicer.delay = 3.0
    client = client_lib.Wild3dClient("127.0.0.1", grpc_port=port, timeout_seconds=0.5)
    start = time.perf_counter()
    with pytest.raises(grpc.RpcError) as error:
      client.predict_grpc(images)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.perf_counter() - start < 1.5
  finally:
    server.stop(0)


# --------------------------------------------------------------------------- export's options


def _one_pixel_png():
  """The smallest valid PNG: 1 x 1 grey, 67 bytes."""

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  return (
    b"\x89PNG\r\n\x1a\n"
    + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    + chunk(b"IDAT", zlib.compress(b"\0\0"))
    + chunk(b"IEND", b"")
  )


@pytest.mark.parametrize("version", [0, -1, 2**63])
def test_export_refuses_a_version_tf_serving_would_ignore(version):
  with pytest.raises(export.ExportOptionError, match=rf"^--version={version}: .*ignore"):
    export.check_version(version)


def test_export_accepts_every_version_tf_serving_loads():
  for version in (None, 1, 2**63 - 1):
    export.check_version(version)


@pytest.mark.parametrize(
  "limits, flag",
  [
    (image_guard.Limits(max_batch=0), "--max_batch=0"),
    (image_guard.Limits(max_bytes=66), "--max_image_bytes=66"),
    (image_guard.Limits(max_side=0), "--max_image_side=0"),
    (image_guard.Limits(max_side=SIZE - 1), f"--max_image_side={SIZE - 1}"),
    (image_guard.Limits(max_batch=205), "--max_batch=205 x --max_image_bytes=10485760"),
  ],
)
def test_export_refuses_limits_that_refuse_every_request_naming_the_flag(limits, flag):
  with pytest.raises(export.ExportOptionError, match="^" + flag.replace("+", r"\+")):
    export.check_limits(limits, SIZE)


def test_export_limit_floor_is_the_smallest_image_the_guard_accepts():
  smallest = _one_pixel_png()
  assert len(smallest) == export.MIN_IMAGE_BYTES == 67
  export.check_limits(image_guard.Limits(max_bytes=67, max_side=SIZE), SIZE)  # allowed...
  fn = tf.function(lambda limits, b: image_guard.decode(b, tf.constant(0), limits))
  assert fn(image_guard.Limits(max_bytes=67), tf.constant(smallest)).shape == (1, 1, 3)  # ...usable
  with pytest.raises(tf.errors.InvalidArgumentError, match="66"):
    fn(image_guard.Limits(max_bytes=66), tf.constant(smallest))


def test_export_refuses_an_existing_version_naming_the_flag(tiny_export, tiny_checkpoint):
  with pytest.raises(export.ExportOptionError, match=rf"^--version={tiny_export.name}: .* exists"):
    export.export_saved_model(
      tiny_checkpoint[1], str(tiny_export.parents[1]), version=int(tiny_export.name)
    )


@pytest.mark.slow
def test_export_cli_bad_flags_are_one_line_naming_the_flag(tiny_checkpoint, tmp_path):
  base = [sys.executable, "-m", "wild3d_tf.export", f"--export_dir={tmp_path}"]
  runs = [
    subprocess.Popen(
      base + [f"--checkpoint={tiny_checkpoint[0]}", *flags],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      cwd=ROOT,
    )
    for flags in (["--max_batch=0"], ["--version=0", "-v", "1"], [])
  ]
  (_, err_batch), (_, err_verbose), _ = [run.communicate(timeout=300) for run in runs]
  assert runs[0].returncode == 1 and err_batch.splitlines() == [
    "export.py: error: --max_batch=0: must be at least 1 (0 refuses every request)"
  ]
  assert runs[1].returncode == 1 and "Traceback" in err_verbose and "--version=0" in err_verbose
  assert runs[2].returncode == 0  # the defaults export
  missing = subprocess.run(
    base + [f"--checkpoint={tmp_path / 'none'}"], capture_output=True, text=True, cwd=ROOT
  )
  assert missing.returncode == 1 and "Traceback" not in missing.stderr
  assert missing.stderr.splitlines()[-1].startswith(f"export.py: error: --checkpoint={tmp_path}")


# --------------------------------------------------------------------------- the serving kit


README = (ROOT / "serving" / "README.md").read_text()


def _docker_run_block():
  return next(b for b in re.findall(r"```sh\n(.*?)```", README, re.S) if "docker run" in b)


def test_serving_kit_models_config_path_is_where_the_documented_docker_run_mounts_the_export():
  block = _docker_run_block().replace("\\\n", " ")
  mounts = dict(re.findall(r'-v "\$PWD/([^":]+):([^"]+)"', block))
  config_file = re.search(r"--model_config_file=(\S+)", block).group(1)
  config_host = next(
    ROOT / host / pathlib.Path(config_file).relative_to(container)
    for host, container in mounts.items()
    if config_file.startswith(container + "/")
  )
  assert config_host == ROOT / "serving" / "models.config"
  base_paths = re.findall(r'base_path:\s*"([^"]+)"', config_host.read_text())
  assert base_paths == [mounts["EXPORT/wild3d"]] == ["/models/wild3d"]
  batching = re.search(r"--batching_parameters_file=(\S+)", block).group(1)
  assert (ROOT / "serving" / pathlib.Path(batching).name).is_file() and batching.startswith(
    mounts["serving"] + "/"
  )


def test_serving_kit_commands_pin_the_image_bind_loopback_and_cap_grpc_at_the_export_bound():
  limits = image_guard.Limits()
  printed = export.serve_command(pathlib.Path("/tmp/EXPORT/wild3d"), "wild3d", limits)
  documented = _docker_run_block().replace("\\\n", " ")
  for command in (printed, documented):
    assert re.findall(r"\btensorflow/serving\S*", command) == [export.SERVING_IMAGE]
    assert export.SERVING_IMAGE == "tensorflow/serving:2.21.0"
    ports = re.findall(r"-p (\S+)", command)
    assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports
    cap = int(re.search(r"grpc\.max_receive_message_length=(\d+)", command).group(1))
    # 32 images x (10 MiB + 6 bytes of tag and length + two 16-byte rows) + 4 KiB of the rest.
    assert cap == export.grpc_request_bytes(limits) == 32 * (10 * 2**20 + 38) + 4096 == 335549632
  assert "-v /tmp/EXPORT/wild3d:/models/wild3d -e MODEL_NAME=wild3d" in printed
  assert "curl" in README and "/v1/models/wild3d\n" in README  # the model-status endpoint


def test_client_limits_and_grpc_channel_match_the_export():
  limits = image_guard.Limits()
  assert (client_lib.MAX_BATCH, client_lib.MAX_IMAGE_BYTES) == (limits.max_batch, limits.max_bytes)
  for batch, size in ((32, 10 * 2**20), (4, 12345), (1, 67)):
    assert client_lib.grpc_message_limit(batch, size) == export.grpc_request_bytes(
      image_guard.Limits(max_batch=batch, max_bytes=size)
    )
  options = dict(client_lib.Wild3dClient(timeout_seconds=1.0).channel_options())
  assert options["grpc.max_send_message_length"] == export.grpc_request_bytes(limits)


def test_client_grpc_request_carries_boxes_intrinsics_and_version():
  client = client_lib.Wild3dClient(timeout_seconds=1.0, version=7)
  boxes = [[1, 2, 30, 40], [5, 6, 70, 80]]
  intrinsics = [[1000, 1001, 320.5, 240]] * 2
  request = client.grpc_request([jpeg(), jpeg(seed=1)], boxes, intrinsics)
  assert request.model_spec.name == "wild3d" and request.model_spec.version.value == 7
  assert request.model_spec.HasField("version")
  np.testing.assert_array_equal(tf.make_ndarray(request.inputs["boxes"]), boxes)
  np.testing.assert_array_equal(tf.make_ndarray(request.inputs["intrinsics"]), intrinsics)
  unpinned = client_lib.Wild3dClient(timeout_seconds=1.0).grpc_request([jpeg()])
  assert not unpinned.model_spec.HasField("version")  # the server's newest
  assert client.rest_url() == "http://localhost:8501/v1/models/wild3d/versions/7:predict"


def test_client_largest_request_fits_the_grpc_cap_and_one_byte_less_refuses_it():
  import grpc
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

  # Scaled down (3 images of 2 MiB, above gRPC's 4 MiB default) so the test stays small; the
  # bound's formula is the one the 32 x 10 MiB cap comes from.
  client = client_lib.Wild3dClient(
    "127.0.0.1", timeout_seconds=20, max_image_bytes=2 * 2**20, max_batch=3
  )
  images = [b"\xff\xd8\xff" + bytes([i]) * (2 * 2**20 - 3) for i in range(3)]
  size = client.grpc_request(images, np.ones([3, 4]), np.ones([3, 4])).ByteSize()
  bound = export.grpc_request_bytes(image_guard.Limits(max_batch=3, max_bytes=2 * 2**20))
  assert size <= bound < size + 4096 + 3 * 38

  class Echo(prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):
      reply = predict_pb2.PredictResponse()
      reply.outputs["count"].CopyFrom(
        tf.make_tensor_proto(len(request.inputs["images"].string_val))
      )
      return reply

  for cap, works in ((bound, True), (size - 1, False)):
    server = grpc.server(
      concurrent.futures.ThreadPoolExecutor(1),
      options=[("grpc.max_receive_message_length", cap)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Echo(), server)
    client.grpc_port, client._stub = server.add_insecure_port("127.0.0.1:0"), None
    server.start()
    try:
      if works:
        assert client.predict_grpc(images, np.ones([3, 4]), np.ones([3, 4]))["count"] == 3
      else:
        with pytest.raises(grpc.RpcError) as error:
          client.predict_grpc(images, np.ones([3, 4]), np.ones([3, 4]))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
      server.stop(0)


# --------------------------------------------------------------------------- predict's outputs


def test_predict_output_names_are_distinct_for_inputs_that_share_a_name(tmp_path):
  from wild3d_tf import predict

  paths = ["a/img.jpg", "b/img.jpg", "other.png", "c/IMG.png", "a/img.jpg"]
  digest = {p: hashlib.sha256(os.path.abspath(p).encode()).hexdigest()[:8] for p in paths}
  assert predict.output_names(paths) == [
    f"img-{digest['a/img.jpg']}",
    f"img-{digest['b/img.jpg']}",
    "other",
    f"IMG-{digest['c/IMG.png']}",
    f"img-{digest['a/img.jpg']}",  # the same input twice: the same name
  ]


def test_predict_same_name_in_two_folders_and_an_unreadable_file(
  loaded, tmp_path, monkeypatch, capsys
):
  from wild3d_tf import predict

  photos = sorted(PHOTOS.glob("*.png"))[:2]
  inputs = []
  for folder, photo in zip("ab", photos):
    (tmp_path / folder).mkdir()
    inputs.append(tmp_path / folder / "photo.png")
    inputs[-1].write_bytes(photo.read_bytes())
  unreadable = tmp_path / "locked.png"
  unreadable.write_bytes(photos[0].read_bytes())
  read_bytes = pathlib.Path.read_bytes

  def refuse(self):  # root reads any mode, so the permission error is simulated
    if self == unreadable:
      raise PermissionError(13, "Permission denied", str(self))
    return read_bytes(self)

  monkeypatch.setattr(pathlib.Path, "read_bytes", refuse)
  paths = [str(inputs[0]), str(unreadable), str(inputs[1])]
  out = tmp_path / "out"
  failures = predict.predict_files(
    paths,
    loaded.signatures["serving_default"],
    image_guard.Limits(),
    np.zeros(4, np.float32),
    np.zeros(4, np.float32),
    str(out),
  )
  assert failures == [f"{unreadable}: cannot read: Permission denied"]
  names = predict.output_names(paths)
  assert names[0] != names[2] and names[0].startswith("photo-")
  for path, name in ((paths[0], names[0]), (paths[2], names[2])):
    assert json.loads((out / f"{name}.json").read_text())["image"] == path
    assert (out / f"{name}.png").is_file()
  assert sorted(p.name for p in out.iterdir()) == sorted(
    f"{n}.{e}" for n in (names[0], names[2]) for e in ("json", "png")
  )
  lines = capsys.readouterr().out.splitlines()
  assert lines[1] == f"FAILED {unreadable}: cannot read: Permission denied"
  assert lines[0].endswith("(named apart: another input shares its name)")


def test_predict_bad_model_flags_are_errors_naming_the_flag(tmp_path, tiny_export):
  from wild3d_tf import predict

  with pytest.raises(predict.PredictError, match=rf"^--saved_model={tmp_path}/none: "):
    predict.load_signature(str(tmp_path / "none"), None)
  with pytest.raises(predict.PredictError, match=rf"^--checkpoint={tmp_path}: "):
    predict.load_signature(None, str(tmp_path))  # a folder with no config.json or checkpoint
  blocked = tmp_path / "file"
  blocked.write_text("")
  with pytest.raises(predict.PredictError, match=rf"^--output_dir={blocked}/out: "):
    predict.predict_files([], None, image_guard.Limits(), None, None, str(blocked / "out"))
