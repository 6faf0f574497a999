"""Images/s of the synthetic generator per dataset, against plain JPEG encoding.

The baseline encodes random images of the same sizes and count in the same
process, so the ratio says what rendering and annotation add to the bare I/O.

  python benchmarks/synthetic_speed.py [--preset tiny] [--seed 0]
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import cv2
import numpy as np

from wild3d_tf.synthetic import generate


def _images(root: pathlib.Path, name: str) -> list[pathlib.Path]:
  """Every picture a writer produced: JPEGs, and video frames counted per file."""
  folders = {"lsp": ["lsp", "lspet"]}.get(name, [name])
  return [
    p
    for f in folders
    for p in (root / f).rglob("*")
    if p.suffix in (".jpg", ".mp4", ".avi") and "FGmasks" not in p.parts
  ]


def _frames_and_sizes(paths):
  sizes = []
  for path in paths:
    if path.suffix == ".jpg":
      sizes.append(cv2.imread(str(path)).shape[:2])
      continue
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    sizes += [
      (int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
    ] * count
  return sizes


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="tiny")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    start = time.perf_counter()
    seconds = generate.generate(tmp, args.preset, args.seed, workers=1)
    wall = time.perf_counter() - start
    print(f"preset {args.preset}: {wall:.1f} s wall with one worker")
    print(
      "| dataset | images | seconds | images/s "
      "| JPEG-encode baseline images/s | generator / baseline |"
    )
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name in sorted(seconds):
      sizes = _frames_and_sizes(_images(root, name))
      begin = time.perf_counter()
      for height, width in sizes:
        cv2.imencode(".jpg", rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
      baseline = len(sizes) / (time.perf_counter() - begin)
      rate = len(sizes) / seconds[name]
      print(
        f"| {name} | {len(sizes)} | {seconds[name]:.2f} | {rate:.1f} | {baseline:.1f} "
        f"| {rate / baseline:.2f} |"
      )


if __name__ == "__main__":
  main()
