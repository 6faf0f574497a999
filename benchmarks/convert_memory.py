"""Peak memory of a converter worker on 2048 px MPI-INF-3DHP videos: flat in the video's length.

For each length it writes one training sequence in 3DHP's layout (annot.mat of 14 cameras and
camera.calibration from the synthetic generator's 3DHP writer at 2048 px; imageSequence/video_0.avi
and FGmasks/video_0.avi, 2048 x 2048 MJPG of a moving block and its mask; the annotation moves with
the block), then converts every work item of it in a fresh child process through the real reader
path (``mpi_inf_3dhp.work_items`` and ``transforms.ReadAndEncode.process``: both videos decoded in
step, ``to_record``, the JPEG crop of ``encode.to_example``) and reports the child's peak RSS.
Baseline, in the same child: its RSS after the imports; the peak is reset there (Linux
/proc/self/clear_refs) so import-time peaks do not count.

  python benchmarks/convert_memory.py [--frames 500 2000] [--side 2048] [--frames_per_item 250]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np


def _status_mb(field: str) -> float:
  """A /proc/self/status memory field (VmRSS, VmHWM) in MiB."""
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith(field + ":"):
      return int(line.split()[1]) / 1024
  raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
  """Sets VmHWM to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
  try:
    pathlib.Path("/proc/self/clear_refs").write_text("5")
    return True
  except OSError:
    return False


def write_sequence(root: pathlib.Path, frames: int, side: int) -> pathlib.Path:
  """One 3DHP training sequence S1/Seq1 of ``frames`` frames at ``side`` px; returns ``root``."""
  import scipy.io

  from wild3d_tf.synthetic import formats, mpi_inf_3dhp
  from wild3d_tf.synthetic.presets import Preset

  # The generator's own annot.mat and calibration (14 cameras), one frame, no rendered video.
  preset = Preset(
    "memory", dhp_sequences=(("S1", 1),), dhp_frames=1, dhp_video_cameras=(), dhp_scale=side / 2048
  )
  mpi_inf_3dhp.write_train(root, preset, seed=0)
  folder = root / "mpi_inf_3dhp" / "S1" / "Seq1"
  mat = scipy.io.loadmat(folder / "annot.mat")
  shift = np.round(side / 10 * np.sin(2 * np.pi * np.arange(frames) / 250))  # px, along x
  cells = {}
  for field in ("annot2", "annot3", "univ_annot3"):
    cells[field] = np.empty((mpi_inf_3dhp.NUM_CAMERAS, 1), object)
    for c in range(mpi_inf_3dhp.NUM_CAMERAS):
      rows = np.tile(np.asarray(mat[field][c, 0])[:1], (frames, 1))
      if field == "annot2":
        rows[:, 0::2] += shift[:, None]
      cells[field][c, 0] = rows
  formats.savemat(
    folder / "annot.mat",
    {
      **cells,
      "cameras": np.arange(mpi_inf_3dhp.NUM_CAMERAS, dtype=np.float64)[None],
      "frames": np.arange(frames, dtype=np.float64)[:, None],
    },
  )
  joints = np.asarray(mat["annot2"][0, 0])[0].reshape(28, 2)
  (x0, y0), (x1, y1) = joints.min(0).astype(int), joints.max(0).astype(int)
  background = np.broadcast_to(
    np.linspace(40, 200, side, dtype=np.uint8)[:, None, None], (side, side, 3)
  )
  with (
    formats.VideoWriter(folder / "imageSequence" / "video_0.avi", 25.0, (side, side)) as video,
    formats.VideoWriter(folder / "FGmasks" / "video_0.avi", 25.0, (side, side)) as masks,
  ):
    for t in range(frames):
      image, mask = background.copy(), np.zeros((side, side, 3), np.uint8)
      box = (slice(max(y0, 0), y1), slice(max(x0 + int(shift[t]), 0), x1 + int(shift[t])))
      image[box] = (t * 7 % 256, 180, 60)
      mask[box] = (255, 0, 0)  # R: the person
      video.write(image)
      masks.write(mask)
  return root / "mpi_inf_3dhp"


def measure(root: str, frames_per_item: int) -> dict:
  """Converts every work item under ``root`` in this process; memory figures in MiB."""
  from apache_beam import pvalue

  from beam_preprocess import transforms
  from beam_preprocess.readers import mpi_inf_3dhp
  from beam_preprocess.records import Options

  after_imports = _status_mb("VmRSS")
  exact = _reset_peak()
  options = Options(frames_per_item=frames_per_item)
  items, bad = mpi_inf_3dhp.work_items(pathlib.Path(root), options)
  convert = transforms.ReadAndEncode("mpi_inf_3dhp", root, options)
  convert.setup()  # what a Beam worker calls before the first bundle
  records = rejected = 0
  start = time.perf_counter()
  for item in items:
    for out in convert.process(item):
      if isinstance(out, pvalue.TaggedOutput):
        rejected += out.value["records"]
      else:
        records += 1
  return {
    "items": len(items),
    "discovery_errors": len(bad),
    "records": records,
    "rejected": rejected,
    "seconds": time.perf_counter() - start,
    "after_imports_mb": after_imports,
    "peak_mb": _status_mb("VmHWM"),
    "peak_reset": exact,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--frames", type=int, nargs="+", default=[500, 2000])
  parser.add_argument("--side", type=int, default=2048)
  parser.add_argument("--frames_per_item", type=int, default=250)
  parser.add_argument("--measure", help=argparse.SUPPRESS)  # child mode: the dataset root
  args = parser.parse_args()
  if args.measure:
    print(json.dumps(measure(args.measure, args.frames_per_item)))
    return
  rows = []
  with tempfile.TemporaryDirectory(prefix="wild3d_memory_") as tmp:
    for frames in args.frames:
      root = write_sequence(pathlib.Path(tmp) / f"f{frames}", frames, args.side)
      child = subprocess.run(
        [
          sys.executable,
          __file__,
          "--measure",
          str(root),
          "--frames_per_item",
          str(args.frames_per_item),
        ],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
      )
      result = json.loads(child.stdout.strip().splitlines()[-1])
      if result["records"] != frames or result["rejected"] or result["discovery_errors"]:
        raise SystemExit(f"{frames} frames: converted {result}, expected {frames} records")
      rows.append((frames, result))
  frame_mb = args.side * args.side * 3 / 2**20
  print(
    f"one {args.side} x {args.side} sequence (image and mask video, MJPG), "
    f"--frames_per_item {args.frames_per_item}; one RGB frame = {frame_mb:.1f} MiB"
  )
  print(
    "| frames | work items | records | seconds | RSS after imports MiB | peak RSS MiB "
    "| peak growth MiB | growth / RGB frame | peak / shortest's peak |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  first_peak = rows[0][1]["peak_mb"]
  for frames, r in rows:
    growth = r["peak_mb"] - r["after_imports_mb"]
    print(
      f"| {frames} | {r['items']} | {r['records']} | {r['seconds']:.0f} | "
      f"{r['after_imports_mb']:.0f} | {r['peak_mb']:.0f} | {growth:.0f} | "
      f"{growth / frame_mb:.1f} | {r['peak_mb'] / first_peak:.2f} |"
    )
  if not all(r["peak_reset"] for _, r in rows):
    print("(the kernel refused to reset the peak: import-time peaks are included)")


if __name__ == "__main__":
  main()
