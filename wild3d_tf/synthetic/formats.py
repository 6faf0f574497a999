"""Writers for the native file formats, made byte-deterministic.

Every writer here gives the same bytes for the same input: MAT v5 headers
carry a creation date (replaced by a fixed text), HDF5 objects a modification
time (turned off), and the encoders are deterministic.
"""

from __future__ import annotations

import os
import pathlib

import cdflib.cdfwrite
import cv2
import h5py
import numpy as np
import scipy.io

_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by wild3d.synthetic"


def write_cdf(path: os.PathLike, pose: np.ndarray) -> None:
  """An H3.6M pose file: variable ``Pose`` shaped (1, N, D) float64, row major."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.exists():
    path.unlink()  # cdflib refuses to overwrite
  data = np.asarray(pose, np.float64).reshape(1, len(pose), -1)
  cdf = cdflib.cdfwrite.CDF(str(path), cdf_spec={"Majority": "row_major"})
  cdf.write_var(
    {
      "Variable": "Pose",
      "Data_Type": cdflib.cdfwrite.CDF.CDF_DOUBLE,
      "Num_Elements": 1,
      "Rec_Vary": True,
      "Dim_Sizes": list(data.shape[1:]),
      # Uncompressed, as H3.6M ships; gzip would also stamp the time into the file.
      "Compress": 0,
    },
    var_data=data,
  )
  cdf.close()


def savemat(path: os.PathLike, variables: dict) -> None:
  """MATLAB v5 via scipy, with the dated header text replaced by a fixed one."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  scipy.io.savemat(path, variables, do_compression=False, oned_as="row")
  with open(path, "r+b") as f:
    f.write(_MAT_HEADER.ljust(116, b" "))


def write_mat73(path: os.PathLike, datasets: dict) -> None:
  """MATLAB v7.3: HDF5 with MATLAB's 512-byte user block and ``MATLAB_class`` attributes.

  ``datasets`` maps names to arrays in h5py order (MATLAB's shapes reversed).
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, "w", userblock_size=512, track_order=False) as f:
    for name, value in datasets.items():
      data = f.create_dataset(name, data=np.asarray(value, np.float64), track_times=False)
      data.attrs["MATLAB_class"] = np.bytes_("double")
  with open(path, "r+b") as f:
    f.write(
      b"MATLAB 7.3 MAT-file, written by wild3d.synthetic, HDF5 schema 1.00 .".ljust(128, b" ")
    )


def write_jpeg(path: os.PathLike, image_rgb: np.ndarray, quality: int = 90) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  ok, data = cv2.imencode(".jpg", image_rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise RuntimeError(f"JPEG encoding failed for {path}")
  path.write_bytes(data.tobytes())


class VideoWriter:
  """Frames (RGB uint8) to ``.mp4`` (MPEG-4 part 2, as H3.6M ships) or ``.avi`` (MJPEG)."""

  def __init__(self, path: os.PathLike, fps: float, size: tuple[int, int]):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix == ".mp4" else "MJPG"))
    self._writer = cv2.VideoWriter(str(self.path), fourcc, fps, size)
    if not self._writer.isOpened():
      raise RuntimeError(f"OpenCV cannot write {self.path}")
    self.size = size

  def write(self, frame_rgb: np.ndarray) -> None:
    if frame_rgb.shape[1::-1] != self.size:
      raise ValueError(f"{self.path}: frame {frame_rgb.shape[1::-1]} but video {self.size}")
    self._writer.write(np.ascontiguousarray(frame_rgb[..., ::-1]))

  def close(self) -> None:
    self._writer.release()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
