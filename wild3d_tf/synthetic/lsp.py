"""LSP and LSP-extended in their native layouts (docs/datasets.md, LSP and LSP-extended).

lsp/joints.mat     ``joints`` 3 x 14 x N: x, y (1-based), flag 1 = occluded (LSP's inverted flag)
lsp/images/im%04d.jpg          person-centred, the person about 150 px tall
lspet/joints.mat   ``joints`` 14 x 3 x N: x, y (1-based), flag 1 = visible
lspet/images/im%05d.jpg        larger frames, person anywhere; joints outside the
                               frame are unlabelled: (-1, -1) with flag 0
"""

from __future__ import annotations

import pathlib
import zlib

import numpy as np

from wild3d_tf import cameras, skeletons
from wild3d_tf.synthetic import formats, wild
from wild3d_tf.synthetic.presets import Preset

LSP = skeletons.LSP_14


def _centred_camera(pose, person_pixels, margin, rng):
  """Intrinsics that make the person ``person_pixels`` tall and centre them in a tight frame."""
  probe = cameras.intrinsic_matrix(1000.0, 1000.0, 0.0, 0.0)
  uv = cameras.project(pose, probe)
  f = 1000.0 * person_pixels / max(np.ptp(uv[:, 1]), 1.0)
  uv = uv * f / 1000.0
  lo, hi = uv.min(0), uv.max(0)
  size = np.ceil((hi - lo) * margin + 20).astype(int)
  k = cameras.intrinsic_matrix(
    f, f, size[0] / 2 - (lo[0] + hi[0]) / 2, size[1] / 2 - (lo[1] + hi[1]) / 2
  )
  return cameras.Camera(k, size=(int(size[0]), int(size[1])))


def write(root: pathlib.Path, preset: Preset, seed: int, samples: list | None = None) -> None:
  for name, count, extended in (
    ("lsp", preset.lsp_images, False),
    ("lspet", preset.lspet_images, True),
  ):
    out = pathlib.Path(root) / name
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    joints = np.zeros((count, LSP.num_joints, 3))
    for i in range(count):
      subject, palette, pose = wild.random_person(rng, rng.uniform(4000, 8000))
      if extended:
        width, height = int(rng.integers(300, 500)), int(rng.integers(300, 500))
        f = rng.uniform(400, 700)
        k = cameras.intrinsic_matrix(
          f, f, width / 2 + rng.uniform(-80, 80), height / 2 + rng.uniform(-80, 80)
        )
        camera = cameras.Camera(k, size=(width, height))
      else:
        camera = _centred_camera(pose, rng.uniform(130, 170), rng.uniform(1.15, 1.4), rng)
      image, [(uv, visible)] = wild.photo(camera, [(subject, palette, pose)], rng, LSP)
      formats.write_jpeg(
        out / "images" / (f"im{i + 1:05d}.jpg" if extended else f"im{i + 1:04d}.jpg"), image
      )
      inside = (
        (uv[:, 0] >= 0)
        & (uv[:, 0] <= camera.size[0] - 1)
        & (uv[:, 1] >= 0)
        & (uv[:, 1] <= camera.size[1] - 1)
      )
      if extended:
        joints[i, :, :2] = np.where(inside[:, None], uv + 1, -1.0)
        joints[i, :, 2] = visible & inside
      else:
        joints[i, :, :2] = uv + 1
        joints[i, :, 2] = ~visible
      if samples is not None and len(samples) < 6 and not extended:
        samples.append((image, uv))
    # LSP stores 3 x 14 x N, LSPET 14 x 3 x N.
    formats.savemat(
      out / "joints.mat",
      {"joints": joints.transpose(1, 2, 0) if extended else joints.transpose(2, 1, 0)},
    )
