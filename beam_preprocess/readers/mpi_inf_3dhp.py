"""MPI-INF-3DHP training set: annot.mat, camera.calibration, AVI videos and FG masks (datasets.md 2.1-2.6)."""

from __future__ import annotations

import pathlib

import numpy as np
import scipy.io

from beam_preprocess import media
from beam_preprocess.records import (
  BadRecord,
  Options,
  check_finite,
  inside_image,
  relative,
  safe_path,
)
from wild3d_tf import skeletons

DATASET = "mpi_inf_3dhp"
NUM_CAMERAS = 14
CAMERA_SETS = {
  "vnect": (0, 1, 2, 4, 5, 6, 7, 8),
  "all": tuple(range(14)),
  "relevant": tuple(range(11)),
  "mm3d_chest": (0, 2, 4, 7, 8),
}


def parse_calibration(text: str, file: str) -> dict[int, dict]:
  """Skeletool calibration: camera id -> {"size", "intrinsics", "rotation", "translation"}."""
  lines = [line.split() for line in text.splitlines() if line.strip()]
  if not lines or " ".join(lines[0]) != "Skeletool Camera Calibration File V1.0":
    raise BadRecord(file, "line 1", "header", "not a Skeletool camera calibration file")
  out, current = {}, None
  for number, tokens in enumerate(lines[1:], start=2):
    key, values = tokens[0], tokens[1:]
    try:
      if key == "name":
        current = int(values[0])
        out[current] = {}
      elif key == "size":
        out[current]["size"] = (int(values[0]), int(values[1]))
      elif key in ("intrinsic", "extrinsic"):
        if len(values) != 16:
          raise ValueError(f"{len(values)} numbers, expected 16")
        matrix = np.array(values, np.float64).reshape(4, 4)
        if not np.isfinite(matrix).all():
          raise ValueError("non-finite value")
        if key == "intrinsic":
          if matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
            raise ValueError(f"non-positive focal length {matrix[0, 0]}, {matrix[1, 1]}")
          out[current]["intrinsics"] = matrix[:3, :3]
        else:
          rotation = matrix[:3, :3]
          if np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-4:
            raise ValueError("rotation is not orthonormal")
          out[current]["rotation"], out[current]["translation"] = rotation, matrix[:3, 3]
    except (ValueError, IndexError, KeyError, TypeError) as error:
      raise BadRecord(file, f"line {number}", key, str(error)) from None
  return out


def load_annotations(path: pathlib.Path, file: str) -> dict:
  """annot.mat checked field by field: cells of (F, 56) / (F, 84) for 14 cameras."""
  try:
    mat = scipy.io.loadmat(path, variable_names=["annot2", "annot3", "univ_annot3", "frames"])
  except Exception as error:  # scipy raises several types for corrupt files
    raise BadRecord(file, "-", "annot.mat", f"unreadable MAT file: {error}") from None
  out = {}
  for field, width in (("annot2", 56), ("annot3", 84), ("univ_annot3", 84)):
    if field not in mat:
      raise BadRecord(file, "-", field, "missing field")
    cells = mat[field]
    if cells.shape != (NUM_CAMERAS, 1):
      raise BadRecord(file, "-", field, f"shape {cells.shape}, expected (14, 1) cells")
    arrays = [np.asarray(cells[c, 0], np.float64) for c in range(NUM_CAMERAS)]
    for c, array in enumerate(arrays):
      if array.ndim != 2 or array.shape[1] != width:
        raise BadRecord(file, f"camera {c}", field, f"shape {array.shape}, expected (F, {width})")
    out[field] = arrays
  return out


def _cameras(option: str, folder: pathlib.Path) -> list[int]:
  if option == "available":
    return sorted(int(p.stem.split("_")[1]) for p in (folder / "imageSequence").glob("video_*.avi"))
  if option in CAMERA_SETS:
    return list(CAMERA_SETS[option])
  return [int(c) for c in option.split(",")]


def work_items(root: pathlib.Path, options: Options):
  """One item per (sequence, camera); a sequence whose annot.mat or calibration is broken is
  one dead letter (checked here once rather than once per camera)."""
  items, bad = [], []
  for annot in sorted(root.glob("S*/Seq*/annot.mat")):
    folder = annot.parent
    subject, seq = folder.parts[-2], folder.parts[-1]
    try:
      load_annotations(annot, relative(annot, root))
      calibration = folder / "camera.calibration"
      parse_calibration(
        safe_path(root, relative(calibration, root), relative(calibration, root), "-").read_text(),
        relative(calibration, root),
      )
    except BadRecord as error:
      bad.append(error)
      continue
    for camera in _cameras(options.cameras, folder):
      items.append({"subject": subject, "sequence": seq, "camera": camera})
  return items, bad


def raw_records(root: pathlib.Path, item: dict, options: Options):
  subject, seq, camera = item["subject"], item["sequence"], item["camera"]
  base = f"{subject}/{seq}"
  annot = load_annotations(
    safe_path(root, f"{base}/annot.mat", f"{base}/annot.mat", "-"), f"{base}/annot.mat"
  )
  calibration_file = f"{base}/camera.calibration"
  calibration = parse_calibration(
    safe_path(root, calibration_file, calibration_file, "-").read_text(), calibration_file
  )
  if camera not in calibration or "intrinsics" not in calibration[camera]:
    raise BadRecord(
      calibration_file, f"camera {camera}", "intrinsic", "camera not in calibration file"
    )
  video_file = f"{base}/imageSequence/video_{camera}.avi"
  video = safe_path(root, video_file, video_file, f"camera {camera}")
  mask_file = f"{base}/FGmasks/video_{camera}.avi"
  count = len(annot["annot2"][camera])
  frames = list(range(0, count, options.frame_stride))
  mask_frames = {}
  if (root / mask_file).is_file():
    for frame, image in media.read_video_frames(root / mask_file, frames, mask_file):
      mask_frames[frame] = None if isinstance(image, BadRecord) else image
  for frame, image in media.read_video_frames(video, frames, video_file):
    if isinstance(image, BadRecord):
      yield image
      continue
    yield {
      "subject": subject,
      "sequence": seq,
      "camera": camera,
      "frame": frame,
      "image": image,
      "mask": mask_frames.get(frame),
      "annot2": annot["annot2"][camera][frame],
      "annot3": annot["annot3"][camera][frame],
      "univ": annot["univ_annot3"][camera][frame],
      "intrinsics": calibration[camera]["intrinsics"],
      "file": f"{base}/annot.mat",
    }


def to_record(raw: dict) -> dict:
  record_id = f"camera {raw['camera']} frame {raw['frame']}"
  joints2d = check_finite(raw["annot2"], raw["file"], record_id, "annot2").reshape(28, 2)
  joints3d = check_finite(raw["annot3"], raw["file"], record_id, "annot3").reshape(28, 3)
  univ = check_finite(raw["univ"], raw["file"], record_id, "univ_annot3").reshape(28, 3)
  pose2d = skeletons.convert(joints2d, skeletons.MPI_INF_3DHP_28, skeletons.POSE2D)
  inside = inside_image(pose2d, raw["image"])
  mask = (
    None if raw["mask"] is None else (raw["mask"][..., 0] > 127).astype(np.uint8) * 255
  )  # R channel
  return {
    "key": f"{DATASET}/{raw['subject']}/{raw['sequence']}/{raw['camera']}/{raw['frame']:06d}",
    "dataset": DATASET,
    "split": "train",
    "subject": raw["subject"],
    "sequence": raw["sequence"],
    "action": "",
    "camera": str(raw["camera"]),
    "frame": raw["frame"],
    "image": raw["image"],
    "mask": mask,
    "intrinsics": raw["intrinsics"],
    "distortion": np.zeros(5),
    "joints2d": pose2d,
    "labelled": np.ones(14, bool),
    "visible": inside,
    "joints3d": skeletons.convert(joints3d, skeletons.MPI_INF_3DHP_28, skeletons.POSE3D),
    "joints3d_univ": skeletons.convert(univ, skeletons.MPI_INF_3DHP_28, skeletons.POSE3D),
  }
