"""Writes every synthetic dataset of a preset, in parallel, and draws contact sheets."""

from __future__ import annotations

import concurrent.futures
import logging
import pathlib
import sys
import time

import numpy as np

from wild3d_tf import skeletons
from wild3d_tf.synthetic import h36m, lsp, mpi_inf_3dhp, mpii
from wild3d_tf.synthetic.presets import PRESETS

# Dataset folder -> (writer, joint set of the contact-sheet joints).
WRITERS = {
  "h36m": (h36m.write, skeletons.POSE2D),
  "mpi_inf_3dhp": (mpi_inf_3dhp.write_train, skeletons.POSE2D),
  "mpi_inf_3dhp_test_set": (mpi_inf_3dhp.write_test, skeletons.POSE2D),
  "mpii": (mpii.write, skeletons.MPII_16),
  "lsp": (lsp.write, skeletons.LSP_14),  # writes lsp/ and lspet/
}
# Converter dataset name (beam_preprocess.convert --dataset) -> the native folder it reads.
CONVERTER_INPUTS = {
  "h36m": "h36m",
  "mpi_inf_3dhp": "mpi_inf_3dhp",
  "mpi_inf_3dhp_test": "mpi_inf_3dhp_test_set",
  "mpii": "mpii",
  "lsp": "lsp",
  "lspet": "lspet",
}


def conversion_commands(
  native_dir, output_dir, python: str = sys.executable
) -> dict[str, list[str]]:
  """Converter dataset -> its conversion command.

  The command converts the dataset's folder under ``native_dir`` into ``output_dir``.

  In-memory DirectRunner: synthetic sets are small, where the multi-processing
  runner's worker start-up dominates (docs/benchmarks.md).
  """
  return {
    dataset: [
      python,
      "-m",
      "beam_preprocess.convert",
      f"--dataset={dataset}",
      f"--input_dir={pathlib.Path(native_dir) / folder}",
      f"--output_dir={output_dir}",
      "--runner=DirectRunner",
      "--direct_running_mode=in_memory",
    ]
    for dataset, folder in CONVERTER_INPUTS.items()
  }


def _run(name, out, preset_name, seed):
  start = time.perf_counter()
  samples = []
  WRITERS[name][0](pathlib.Path(out), PRESETS[preset_name], seed, samples)
  return name, samples, time.perf_counter() - start


def generate(
  out: str,
  preset: str = "tiny",
  seed: int = 0,
  datasets=None,
  workers: int = 2,
  contact_sheet_dir: str | None = None,
) -> dict[str, float]:
  """Writes the datasets under ``out``; returns seconds per dataset writer.

  The output depends only on (preset, seed): every writer has its own random
  stream, so the parallel order does not matter.
  """
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
  names = list(datasets or WRITERS)
  unknown = set(names) - set(WRITERS)
  if unknown:
    raise ValueError(f"unknown datasets {sorted(unknown)}; expected some of {sorted(WRITERS)}")
  pathlib.Path(out).mkdir(parents=True, exist_ok=True)
  seconds = {}
  with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
    futures = [pool.submit(_run, name, out, preset, seed) for name in names]
    for future in concurrent.futures.as_completed(futures):
      name, samples, took = future.result()
      seconds[name] = took
      logging.info("synthetic %s (%s, seed %d): %.1f s", name, preset, seed, took)
      if contact_sheet_dir:
        path = pathlib.Path(contact_sheet_dir) / f"synthetic_{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
          contact_sheet(samples, WRITERS[name][1], title=f"{name} ({preset}, seed {seed})")
        )
  return seconds


def contact_sheet(samples, joint_set, title: str = "", columns: int = 6) -> bytes:
  """PNG of up to ``columns`` frames cropped around the person, 2D skeleton drawn."""
  from wild3d_tf import visualize  # matplotlib only when pictures are asked for

  fig = visualize.plt.figure(figsize=(2.2 * columns, 3.2))
  for i, (image, joints) in enumerate(samples[:columns]):
    ax = fig.add_subplot(1, columns, i + 1)
    inside = np.isfinite(joints).all(-1)
    lo, hi = joints[inside].min(0), joints[inside].max(0)
    centre, half = (lo + hi) / 2, max(hi - lo) * 0.65 + 10
    ax.imshow(image)
    visualize.draw_skeleton_2d(ax, joints, joint_set, linewidth=1.5)
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] + half, centre[1] - half)
    ax.axis("off")
  fig.suptitle(title)
  return visualize.figure_to_png(fig)
