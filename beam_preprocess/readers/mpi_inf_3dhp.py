"""MPI-INF-3DHP training set: annot.mat, camera.calibration, AVI videos and FG masks.

Formats: docs/datasets.md, MPI-INF-3DHP training set.
"""

from __future__ import annotations

import os

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
from wild3d_tf import skeletons

DATASET = "mpi_inf_3dhp"
# What --input_dir must hold, as globs each matching at least one path (convert checks it first).
EXPECTED_LAYOUT = (
  "S*/Seq*/annot.mat",
  "S*/Seq*/camera.calibration",
  "S*/Seq*/imageSequence/video_*.avi",
)
NUM_CAMERAS = 14
# Frames per video of each training sequence (the official util/mpii_get_sequence_info.m). The
# dataset's README: a few sequences have annotation rows past the last video frame, so read only
# the first F rows of annot.mat.
SEQUENCE_FRAMES = {
  ("S1", "Seq1"): 6416,
  ("S1", "Seq2"): 12430,
  ("S2", "Seq1"): 6502,
  ("S2", "Seq2"): 6081,
  ("S3", "Seq1"): 12488,
  ("S3", "Seq2"): 12283,
  ("S4", "Seq1"): 6171,
  ("S4", "Seq2"): 6675,
  ("S5", "Seq1"): 12820,
  ("S5", "Seq2"): 12312,
  ("S6", "Seq1"): 6188,
  ("S6", "Seq2"): 6145,
  ("S7", "Seq1"): 6239,
  ("S7", "Seq2"): 6320,
  ("S8", "Seq1"): 6468,
  ("S8", "Seq2"): 6054,
}
# Videos shorter than their sequence: S6/Seq2's camera 2 has 3911 frames (isarandi/metrabs,
# src/data/mpi_inf_3dhp.py: "This video is shorter for some reason").
SHORT_VIDEOS = {("S6", "Seq2", 2): 3911}
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


def load_annotations(path, file: str, max_bytes: int = matfile.MAX_MAT_BYTES) -> dict:
  """annot.mat checked field by field: cells of (F, 56) / (F, 84) for 14 cameras; BadRecord
  naming ``file`` for a broken one or one whose variables declare over ``max_bytes``."""
  mat = matfile.load_mat(
    path, file, ["annot2", "annot3", "univ_annot3", "frames"], max_bytes, field="annot.mat"
  )
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


def annotated_frames(subject: str, sequence: str, rows: int, camera: int | None = None) -> int:
  """Frames of a camera's video that have annotations: the first ``rows`` rows of annot.mat, at
  most the sequence's ``SEQUENCE_FRAMES`` and the camera's ``SHORT_VIDEOS`` length (rows past
  them have no frame, so they are neither records nor losses)."""
  frames = min(rows, SEQUENCE_FRAMES.get((subject, sequence), rows))
  return min(frames, SHORT_VIDEOS.get((subject, sequence, camera), frames))


def _cameras(option: str, folder: str) -> list[int]:
  if option == "available":
    videos = storage.glob(folder, "imageSequence/video_*.avi")
    return sorted(int(os.path.splitext(storage.name(p))[0].split("_")[1]) for p in videos)
  if option in CAMERA_SETS:
    return list(CAMERA_SETS[option])
  return [int(c) for c in option.split(",")]


def _video_file(base: str, camera: int, folder: str = "imageSequence") -> str:
  return f"{base}/{folder}/video_{camera}.avi"


def _header_records(root, base: str, camera: int, stride: int) -> int:
  """Records a camera's video would give by its header's frame count (0 if unreadable)."""
  frames = media.video_frame_count(storage.join(root, _video_file(base, camera)))
  return len(range(0, frames or 0, stride))


def work_items(root, options: Options):
  """Items of (sequence, camera, frame range of ``options.frames_per_item`` frames).

  Each item carries ``records`` (the records it yields) and ``split``, so a lost
  item is counted in records. A sequence whose annot.mat or calibration is broken
  is one dead letter (checked here once rather than once per item) standing for
  the frames its videos' headers declare.
  """
  items, bad = [], []
  for annot in storage.glob(root, "S*/Seq*/annot.mat"):
    subject, seq, _ = relative(annot, root).split("/")
    base = f"{subject}/{seq}"
    cameras = _cameras(options.cameras, storage.join(root, base))
    try:
      annotations = load_annotations(annot, relative(annot, root), options.max_mat_bytes)
      calibration = f"{base}/camera.calibration"
      parse_calibration(
        storage.read_text(safe_path(root, calibration, calibration, "-")), calibration
      )
    except BadRecord as error:
      lost = sum(_header_records(root, base, c, options.frame_stride) for c in cameras)
      bad.append(error.counting(lost, "train"))
      continue
    for camera in cameras:
      if not 0 <= camera < NUM_CAMERAS:
        lost = _header_records(root, base, camera, options.frame_stride)
        reason = f"no such camera (annot.mat has 0-{NUM_CAMERAS - 1})"
        error = BadRecord(f"{base}/annot.mat", f"camera {camera}", "cameras", reason)
        bad.append(error.counting(lost, "train"))
        continue
      count = annotated_frames(subject, seq, len(annotations["annot2"][camera]), camera)
      for frames in media.frame_ranges(count, options.frame_stride, options.frames_per_item):
        items.append(
          {
            "subject": subject,
            "sequence": seq,
            "camera": camera,
            "frames": frames,
            "records": len(frames),
            "split": "train",
          }
        )
  return items, bad


def raw_records(root, item: dict, options: Options):
  """Raw values of the item's frames (``item["frames"]``; without it every
  ``options.frame_stride``-th frame of the camera's video).

  The image and the FG-mask video are decoded in step, one frame each at a
  time, and only the item's rows of annot.mat are kept, so memory does not grow
  with the video's length. Yields a BadRecord per frame the video lacks.
  """
  subject, seq, camera = item["subject"], item["sequence"], item["camera"]
  base = f"{subject}/{seq}"
  annot = load_annotations(
    safe_path(root, f"{base}/annot.mat", f"{base}/annot.mat", "-"),
    f"{base}/annot.mat",
    options.max_mat_bytes,
  )
  calibration_file = f"{base}/camera.calibration"
  calibration = parse_calibration(
    storage.read_text(safe_path(root, calibration_file, calibration_file, "-")), calibration_file
  )
  if camera not in calibration or "intrinsics" not in calibration[camera]:
    raise BadRecord(
      calibration_file, f"camera {camera}", "intrinsic", "camera not in calibration file"
    )
  video_file = _video_file(base, camera)
  video = safe_path(root, video_file, video_file, f"camera {camera}")
  mask_file = _video_file(base, camera, "FGmasks")
  count = annotated_frames(subject, seq, len(annot["annot2"][camera]), camera)
  frames = item.get("frames")
  frames = list(range(0, count, options.frame_stride)) if frames is None else frames
  frames = [f for f in frames if f < count]  # a shorter annotation: the rest count as lost
  rows = {name: annot[name][camera][frames] for name in ("annot2", "annot3", "univ_annot3")}
  del annot  # the other 13 cameras and frames: released before any frame is decoded
  masks = None
  if storage.is_file(storage.join(root, mask_file)):
    masks = media.read_video_frames(storage.join(root, mask_file), frames, mask_file)
  try:
    for index, (frame, image) in enumerate(media.read_video_frames(video, frames, video_file)):
      mask = None
      if masks is not None:  # one entry per requested frame, in order: advanced in step
        _, mask = next(masks)
        mask = None if isinstance(mask, BadRecord) else mask
      if isinstance(image, BadRecord):
        yield image
        continue
      yield {
        "subject": subject,
        "sequence": seq,
        "camera": camera,
        "frame": frame,
        "image": image,
        "mask": mask,
        "annot2": rows["annot2"][index],
        "annot3": rows["annot3"][index],
        "univ": rows["univ_annot3"][index],
        "intrinsics": calibration[camera]["intrinsics"],
        "file": f"{base}/annot.mat",
      }
  finally:
    if masks is not None:
      masks.close()


def to_record(raw: dict) -> CanonicalRecord:
  record_id = f"camera {raw['camera']} frame {raw['frame']}"
  joints2d = check_finite(raw["annot2"], raw["file"], record_id, "annot2").reshape(28, 2)
  joints3d = check_finite(raw["annot3"], raw["file"], record_id, "annot3").reshape(28, 3)
  univ = check_finite(raw["univ"], raw["file"], record_id, "univ_annot3").reshape(28, 3)
  pose2d = skeletons.convert(joints2d, skeletons.MPI_INF_3DHP_28, skeletons.POSE2D)
  inside = inside_image(pose2d, raw["image"])
  mask = (
    None if raw["mask"] is None else (raw["mask"][..., 0] > 127).astype(np.uint8) * 255
  )  # R channel
  return CanonicalRecord(
    key=f"{DATASET}/{raw['subject']}/{raw['sequence']}/{raw['camera']}/{raw['frame']:06d}",
    dataset=DATASET,
    split="train",
    subject=raw["subject"],
    sequence=raw["sequence"],
    action="",
    camera=str(raw["camera"]),
    frame=raw["frame"],
    image=raw["image"],
    mask=mask,
    camera_intrinsics_image_px=raw["intrinsics"],
    camera_distortion=np.zeros(5),
    joints2d_image_px=pose2d,
    joints2d_labelled=np.ones(14, bool),
    joints2d_visible=inside,
    joints3d_camera_mm=skeletons.convert(joints3d, skeletons.MPI_INF_3DHP_28, skeletons.POSE3D),
    joints3d_univ_camera_mm=skeletons.convert(univ, skeletons.MPI_INF_3DHP_28, skeletons.POSE3D),
  )
