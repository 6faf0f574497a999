"""The MPI-INF-3DHP test set: HDF5 annot_data.mat and JPEG frames.

Formats: docs/datasets.md, MPI-INF-3DHP test set.

The test set ships no calibration; each sequence's pinhole intrinsics are fitted
by least squares to u Z = fx X + cx Z and v Z = fy Y + cy Z over its frames (as MMPose does).
"""

from __future__ import annotations

import numpy as np

from beam_preprocess import matfile, media, storage
from beam_preprocess.records import (
  BadRecord,
  CanonicalRecord,
  Options,
  check_finite,
  inside_image,
  relative,
  safe_path,
)
from wild3d_tf import cameras, skeletons

DATASET = "mpi_inf_3dhp_test"
# What --input_dir must hold, as globs each matching at least one path (convert checks it first).
EXPECTED_LAYOUT = ("TS*/annot_data.mat", "TS*/imageSequence/img_*.jpg")
ACTIVITIES = {
  1: "Standing/Walking",
  2: "Exercising",
  3: "Sitting",
  4: "Reaching/Crouching",
  5: "On The Floor",
  6: "Sports",
  7: "Miscellaneous",
}
_FIELDS = {"annot2": (17, 2), "annot3": (17, 3), "univ_annot3": (17, 3)}


def load_annotations(path, file: str, max_bytes: int = matfile.MAX_MAT_BYTES) -> dict:
  """Reads annot_data.mat (HDF5) through ``matfile.read_hdf5``: external links, external
  storage and datasets declaring over ``max_bytes`` in all are refused before reading."""
  out = matfile.read_hdf5(path, file, [*_FIELDS, "valid_frame", "activity_annotation"], max_bytes)
  frames = len(out["annot2"])
  for name, shape in _FIELDS.items():
    if out[name].shape != (frames, 1, *shape):
      raise BadRecord(
        file, "-", name, f"shape {out[name].shape}, expected ({frames}, 1, {shape[0]}, {shape[1]})"
      )
    out[name] = out[name][:, 0]
  for name in ("valid_frame", "activity_annotation"):
    if out[name].shape != (frames, 1):
      raise BadRecord(file, "-", name, f"shape {out[name].shape}, expected ({frames}, 1)")
    out[name] = out[name][:, 0]
  return out


def fit_intrinsics(annot2: np.ndarray, annot3: np.ndarray) -> np.ndarray:
  """Least-squares pinhole K from (N, J, 2) pixels and (N, J, 3) camera-frame points."""
  z = annot3[..., 2].ravel()
  rows = []
  for axis in (0, 1):
    a = np.stack([annot3[..., axis].ravel(), z], -1)
    rows.append(np.linalg.lstsq(a, annot2[..., axis].ravel() * z, rcond=None)[0])
  (fx, cx), (fy, cy) = rows
  return cameras.intrinsic_matrix(fx, fy, cx, cy)


def work_items(root, options: Options):
  """One item per sequence (JPEG frames: memory does not grow with its length), with the
  ``records`` it yields (its valid frames; all with ``valid_only`` False) and its ``split``.

  An unreadable annot_data.mat is a dead letter standing for the sequence's JPEG frames.
  """
  items, bad = [], []
  for path in storage.glob(root, "TS*/annot_data.mat"):
    sequence = relative(path, root).split("/")[0]
    try:
      annot = load_annotations(path, f"{sequence}/annot_data.mat", options.max_mat_bytes)
      valid = annot["valid_frame"] > 0
    except BadRecord as error:
      frames = storage.glob(storage.join(root, sequence), "imageSequence/img_*.jpg")
      bad.append(error.counting(len(frames), "test"))
      continue
    records = int(valid.sum()) if options.valid_only else len(valid)
    items.append({"sequence": sequence, "records": records, "split": "test"})
  return items, bad


def raw_records(root, item: dict, options: Options):
  sequence = item["sequence"]
  file = f"{sequence}/annot_data.mat"
  annot = load_annotations(safe_path(root, file, file, "-"), file, options.max_mat_bytes)
  valid = annot["valid_frame"] > 0
  usable = (
    valid & np.isfinite(annot["annot2"]).all((1, 2)) & np.isfinite(annot["annot3"]).all((1, 2))
  )
  if not usable.any():
    raise BadRecord(file, "-", "valid_frame", "no valid frame to fit the intrinsics")
  k = fit_intrinsics(annot["annot2"][usable], annot["annot3"][usable])
  for frame in range(len(valid)):
    if options.valid_only and not valid[frame]:
      continue
    image_file = f"{sequence}/imageSequence/img_{frame + 1:06d}.jpg"
    try:
      image = media.read_image(
        safe_path(root, image_file, image_file, f"frame {frame}"),
        image_file,
        f"frame {frame}",
        options.max_image_bytes,
      )
    except BadRecord as error:
      yield error
      continue
    yield {
      "sequence": sequence,
      "frame": frame,
      "image": image,
      "annot2": annot["annot2"][frame],
      "annot3": annot["annot3"][frame],
      "univ": annot["univ_annot3"][frame],
      "activity": int(annot["activity_annotation"][frame]),
      "valid": bool(valid[frame]),
      "intrinsics": k,
      "file": file,
    }


def to_record(raw: dict) -> CanonicalRecord:
  record_id = f"frame {raw['frame']}"
  joints2d = check_finite(raw["annot2"], raw["file"], record_id, "annot2")
  joints3d = check_finite(raw["annot3"], raw["file"], record_id, "annot3")
  univ = check_finite(raw["univ"], raw["file"], record_id, "univ_annot3")
  pose2d = skeletons.convert(joints2d, skeletons.MPI_INF_3DHP_17, skeletons.POSE2D)
  inside = inside_image(pose2d, raw["image"])
  return CanonicalRecord(
    key=f"{DATASET}/{raw['sequence']}/{raw['frame']:06d}",
    dataset=DATASET,
    split="test",
    subject=raw["sequence"],
    sequence=raw["sequence"],
    action=ACTIVITIES.get(raw["activity"], str(raw["activity"])),
    camera=raw["sequence"],
    frame=raw["frame"],
    image=raw["image"],
    mask=None,
    camera_intrinsics_image_px=raw["intrinsics"],
    camera_distortion=np.zeros(5),
    joints2d_image_px=pose2d,
    joints2d_labelled=np.ones(14, bool),
    joints2d_visible=inside,
    joints3d_camera_mm=skeletons.convert(joints3d, skeletons.MPI_INF_3DHP_17, skeletons.POSE3D),
    joints3d_univ_camera_mm=skeletons.convert(univ, skeletons.MPI_INF_3DHP_17, skeletons.POSE3D),
    frame_valid=raw["valid"],  # False only for frames --novalid_only keeps; evaluation skips them
  )
