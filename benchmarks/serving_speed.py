"""Throughput of the exported serving signature against the bare network, tiny and full side by
side in one process, and where the image path's time goes.

Each variant's network (random weights) is exported with ``wild3d_tf.export``,
reloaded with ``tf.saved_model.load`` (the graph TF Serving runs) and driven
through ``serving_default`` with a batch of 640x480 JPEGs and no box (the whole
image is cropped). Baseline, in the same process: the Keras network alone on
ready-made crops of the same batch size. Every measured function is called in
turn, round after round, so all of them see the same machine load; a ratio is
images/s over the baseline's images/s of the same variant.

The breakdown rows time parts alone: ``serve_crops`` of the same export on
the baseline's crops (the network inside the SavedModel, with its heatmap
decoding and camera geometry), then parts of the image path (``tf.function``s
of the same ops, same images): JPEG decoding only; decoding behind the
guard's checks (``guarded_decode``); the whole image path
(``ServingModule.crop_images``: checks, crop geometry and
``preprocess.prefilter_plan`` for the batch, decoding and
``preprocess.reduce_region`` per image, one batched ``preprocess.resample``);
the same with every JPEG decoded whole (``scaled_decode=False``, what
``export --noscaled_jpeg_decode`` serves); and the per-image reference path
(``crop_images(batched=False)``: each crop sampled whole inside the per-image
loop), for comparison.

The JPEGs are uniform noise by default, the worst case for a decoder (about
360 KB each at OpenCV's quality 95); ``--photos demo`` uses the two shipped
photos (``wild3d_tf/demo_data``) resized to 640x480 at quality 90 (60-70 KB,
like a camera's), which decode several times faster.

  python benchmarks/serving_speed.py [--variants tiny full] [--batch 32] [--seconds 10]
      [--photos noise|demo] [--xla]
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import cv2
import keras
import numpy as np
import tensorflow as tf

from wild3d_tf import export, image_guard, serving_module
from wild3d_tf import model as model_lib
from wild3d_tf.config import VARIANTS, ModelConfig

PHOTO_SHAPE = (480, 640, 3)
MIN_SAMPLES = 5
DEMO_PHOTOS = pathlib.Path(__file__).resolve().parents[1] / "wild3d_tf" / "demo_data"


def jpegs(kind: str, count: int) -> list[bytes]:
  """``count`` encoded 640x480 JPEGs: uniform noise, or the shipped photos in turn."""
  if kind == "noise":
    rng = np.random.default_rng(0)
    images = [(rng.random(PHOTO_SHAPE) * 255).astype(np.uint8) for _ in range(count)]
    return [cv2.imencode(".jpg", image)[1].tobytes() for image in images]
  photos = [
    cv2.resize(cv2.imread(str(path)), PHOTO_SHAPE[1::-1], interpolation=cv2.INTER_AREA)
    for path in sorted(DEMO_PHOTOS.glob("*.png"))
  ]
  quality = [cv2.IMWRITE_JPEG_QUALITY, 90]
  return [cv2.imencode(".jpg", photos[i % len(photos)], quality)[1].tobytes() for i in range(count)]


def round_robin(fns: dict, seconds: float) -> dict:
  """Per-call seconds of each function, called in turn until ``seconds`` have passed and each has
  ``MIN_SAMPLES`` samples (after two warm-up calls each)."""
  for fn in fns.values():
    fn()
    fn()
  samples = {name: [] for name in fns}
  start = time.perf_counter()
  while time.perf_counter() - start < seconds or min(map(len, samples.values())) < MIN_SAMPLES:
    for name, fn in fns.items():
      begin = time.perf_counter()
      fn()
      samples[name].append(time.perf_counter() - begin)
  return {name: np.array(t) for name, t in samples.items()}


def guarded_decode(images, limits):
  """Serving's decoding behind its checks, without the crop: ``image_guard.inspect`` for the
  batch, ``decode_one`` per image (whole), ``decoded_checks`` for the batch. Returns the decoded
  sizes (B, 2)."""
  names = tf.range(tf.size(images))
  header, checks = image_guard.inspect(images, names, limits)
  with tf.control_dependencies(checks):
    images = tf.identity(images)

  def one(args):
    image, cut = image_guard.decode_one(*args)
    return tf.shape(image)[:2], cut

  shapes, cuts = tf.map_fn(
    one,
    (images, header),
    parallel_iterations=2,
    fn_output_signature=(tf.TensorSpec([2], tf.int32), tf.TensorSpec([], tf.bool)),
  )
  with tf.control_dependencies(image_guard.decoded_checks(header, shapes, cuts, names)):
    return tf.identity(shapes)


def measure(variant: str, batch: int, photos: list, seconds: float, xla: bool, tmp: str):
  """Rows (what, per-call seconds, is the baseline) for one variant."""
  config = ModelConfig.for_variant(variant)
  size = config.input_size
  keras.utils.set_random_seed(0)
  network = model_lib.build_model(config)
  signatures = {}
  for compiled in (False, True) if xla else (False,):
    name = f"{variant}_xla{int(compiled)}"
    path = export.export_saved_model(network, tmp, model_name=name, xla=compiled)
    signatures[compiled] = tf.saved_model.load(str(path)).signatures
  crops = tf.constant(
    np.random.default_rng(1).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
  )
  raw = tf.function(lambda x: network(x, training=False)["pose3d"])
  images = tf.constant(photos[:batch])
  zeros = tf.zeros([batch, 4])
  limits = image_guard.DEFAULT_LIMITS
  module = serving_module.ServingModule(network, limits=limits)
  decode = tf.function(
    lambda images: tf.map_fn(
      lambda encoded: tf.io.decode_jpeg(encoded, channels=3),
      images,
      parallel_iterations=2,
      fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )
  )
  guarded = tf.function(lambda images: guarded_decode(images, limits))
  image_path = tf.function(lambda images: module.crop_images(images, zeros, zeros)[0])
  whole = serving_module.ServingModule(network, limits=limits, scaled_decode=False)
  whole_path = tf.function(lambda images: whole.crop_images(images, zeros, zeros)[0])
  before = tf.function(lambda images: module.crop_images(images, zeros, zeros, batched=False)[0])
  fns = {"Keras network on crops (baseline)": lambda: raw(crops).numpy()}
  for compiled, signature in signatures.items():
    fns[f"serving_default, JPEG 640x480{', XLA' if compiled else ''}"] = lambda s=signature: s[
      "serving_default"
    ](images=images, boxes=zeros, intrinsics=zeros)["pose3d"].numpy()
  serve_crops = signatures[False]["serve_crops"]
  intrinsics = tf.tile(
    tf.constant([[[float(size), 0, size / 2], [0, size, size / 2], [0, 0, 1]]]), [batch, 1, 1]
  )
  fns["part: serve_crops, the export's network path on the same crops"] = lambda: serve_crops(
    crops=crops, intrinsics=intrinsics
  )["pose3d"].numpy()
  fns["part: JPEG decode only"] = lambda: decode(images).shape
  fns["part: decode behind image_guard's checks"] = lambda: guarded(images).numpy()
  fns["part: image path (checks, decode, reduce, batched resample)"] = lambda: image_path(
    images
  ).numpy()
  fns["part: image path, JPEGs decoded whole (export --noscaled_jpeg_decode)"] = lambda: whole_path(
    images
  ).numpy()
  fns["part: image path, slow path (each crop whole in the per-image loop)"] = lambda: before(
    images
  ).numpy()
  timed = round_robin(fns, seconds)
  return [(what, t, what.endswith("(baseline)")) for what, t in timed.items()]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
    "--variants", "--variant", nargs="+", choices=list(VARIANTS), default=["tiny", "full"]
  )
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--seconds", type=float, default=10.0, help="Per variant, at least.")
  parser.add_argument("--photos", choices=["noise", "demo"], default="noise")
  parser.add_argument("--xla", action="store_true", help="Also time an export with --xla.")
  args = parser.parse_args()
  photos = jpegs(args.photos, args.batch)
  what = "random noise" if args.photos == "noise" else "demo photos"
  print(
    f"batch {args.batch}, {np.mean([len(p) for p in photos]) / 1e3:.0f} KB JPEGs of "
    f"{PHOTO_SHAPE[1]}x{PHOTO_SHAPE[0]} {what}, TF {tf.__version__}, "
    f"{args.seconds:g} s per variant, calls in turn"
  )
  print()
  print("| variant | input | what | p50 ms per batch | images/s | ratio to the network |")
  print("|---|---|---|---|---|---|")
  with tempfile.TemporaryDirectory() as tmp:
    for variant in args.variants:
      size = ModelConfig.for_variant(variant).input_size
      rows = measure(variant, args.batch, photos, args.seconds, args.xla, tmp)
      base_rate = next(args.batch / np.median(t) for _, t, base in rows if base)
      for what, t, _ in rows:
        rate = args.batch / np.median(t)
        print(
          f"| {variant} | {size} | {what} | {1000 * np.median(t):.1f} | {rate:.1f} | "
          f"{rate / base_rate:.2f} |"
        )


if __name__ == "__main__":
  main()
