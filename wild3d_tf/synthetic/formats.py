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


def write_h36m_metadata(path: os.PathLike, w0: np.ndarray, camera_ids: tuple[str, ...]) -> None:
  """The camera block of Human3.6M's ``metadata.xml``: element ``w0`` holding the 300 numbers in
  brackets, separated by single spaces (as the release writes it; ``cameras.H36M_W0_LENGTH``
  gives the layout), and ``dbcameras/index2id`` listing the camera ids in w0's order.

  Numbers are written with Python's shortest round-trip form, so parsing them gives the same
  float64 values back.
  """
  w0 = np.asarray(w0, np.float64).reshape(-1)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  numbers = " ".join(repr(float(v)) for v in w0)
  ids = "".join(f"<item>{camera_id}</item>" for camera_id in camera_ids)
  path.write_text(
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<metadata>\n"
    f"  <w0>[{numbers}]</w0>\n"
    f"  <dbcameras><index2id>{ids}</index2id></dbcameras>\n"
    "</metadata>\n"
  )


def write_h36m_cameras_h5(path: os.PathLike, cams: dict) -> None:
  """3d-pose-baseline's ``cameras.h5``: ``subject<s>/camera<c>/{R, T, f, c, k, p, Name}``.

  ``cams`` maps (subject number 1..11, camera number 1..4) to a ``cameras.Camera``. As the file
  was written from MATLAB, R is stored transposed; T (3, 1) is the camera centre in mm; f, c
  (2, 1) pixels; k (3, 1); p (2, 1) as (p1, p2); Name (8, 1) the camera id's character codes.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, "w", track_order=False) as f:
    for (subject, number), camera in sorted(cams.items()):
      k = camera.intrinsics
      group = f.create_group(f"subject{subject}/camera{number}", track_order=False)
      values = {
        "R": camera.rotation.T,
        "T": (-camera.rotation.T @ camera.translation).reshape(3, 1),
        "f": np.array([[k[0, 0]], [k[1, 1]]]),
        "c": np.array([[k[0, 2]], [k[1, 2]]]),
        "k": np.reshape(camera.radial, (3, 1)),
        "p": np.reshape(camera.tangential, (2, 1)),
      }
      for name, value in values.items():
        group.create_dataset(name, data=np.asarray(value, np.float64), track_times=False)
      name = np.array([[ord(ch)] for ch in camera.name], np.uint16)
      group.create_dataset("Name", data=name, track_times=False)
