"""Human3.6M as released: CDF poses, MP4 videos and the camera parameters of metadata.xml.

Reads, under --input_dir (the folder holding S1 ... S11 as the release's archives unpack):
``S*/MyPoseFeatures/D3_Positions_mono/<take>.<camera>.cdf`` (camera-frame 3D, mm),
``S*/MyPoseFeatures/D2_Positions/<take>.<camera>.cdf`` (pixels), ``S*/Videos/<take>.<camera>.mp4``
and one camera file (``readers.h36m_cameras``: metadata.xml, cameras.h5 or a JSON of VideoPose3D's
values). Takes outside the 15 protocol actions (``_ALL``) and the one video the release lacks are
set aside and counted (``wild3d_tf.h36m_protocol``). Formats: docs/datasets.md, Human3.6M.
"""

from __future__ import annotations

import os

import cdflib
import numpy as np

from beam_preprocess import matfile, media, storage
from beam_preprocess.readers import h36m_cameras
from beam_preprocess.records import (
  BadRecord,
  CanonicalRecord,
  Discovery,
  Options,
  check_finite,
  inside_image,
  relative,
  safe_path,
)
from wild3d_tf import h36m_protocol, skeletons

DATASET = "h36m"
# What --input_dir must hold, as globs each matching at least one path (convert checks it first).
EXPECTED_LAYOUT = ("S*/MyPoseFeatures/D3_Positions_mono/*.cdf", "S*/Videos/*.mp4")
TEST_SUBJECTS = h36m_protocol.TEST_SUBJECTS


def action_of(take: str) -> str | None:
  """The protocol action of a take ('Directions 1' -> 'Directions', S1's 'TakingPhoto' ->
  'Photo'), None for a take outside the protocol ('_ALL 1')."""
  return h36m_protocol.action_of(take)


def _cdf(path, width: int, file: str, max_bytes: int = matfile.MAX_MAT_BYTES) -> np.ndarray:
  """The (N, width) ``Pose`` variable of a pose CDF; cdflib opens only local paths, so a URL is
  spooled into a temporary file of at most ``max_bytes`` (--max_mat_bytes) first. BadRecord
  naming ``file`` for a broken file, another shape or one over the limit."""
  try:
    with storage.local_copy(path, max_bytes) as local:
      pose = cdflib.CDF(local).varget("Pose")
  except Exception as error:  # cdflib raises many kinds for broken files
    raise BadRecord(file, "-", "Pose", f"unreadable CDF: {error}") from None
  pose = np.asarray(pose, np.float64)
  if pose.ndim != 3 or pose.shape[0] != 1 or pose.shape[2] != width:
    raise BadRecord(file, "-", "Pose", f"shape {pose.shape}, expected (1, N, {width})")
  return pose[0]


def check_input(root, options: Options) -> None:
  """Raises h36m_cameras.CameraFileError unless a camera file is found (``options.h36m_cameras``
  or one of ``h36m_cameras.SEARCHED`` in ``root``) and decodes."""
  h36m_cameras.load(root, options.h36m_cameras, options.max_mat_bytes)


def _pose_frames(path, max_bytes: int = matfile.MAX_MAT_BYTES) -> int | None:
  """Frames a pose CDF declares (its header, no data read), None if it cannot be read."""
  try:
    with storage.local_copy(path, max_bytes) as local:
      return int(cdflib.CDF(local).varinq("Pose").Dim_Sizes[0])
  except Exception:  # cdflib raises many kinds for broken files
    return None


def _reason_to_skip(subject: str, take: str, camera: str, video: str | None) -> str:
  """Why a take is set aside ("" to convert it): see wild3d_tf.h36m_protocol."""
  if h36m_protocol.action_of(take) is None:
    return h36m_protocol.SKIP_NOT_PROTOCOL
  if h36m_protocol.split_of(subject) is None:
    return h36m_protocol.SKIP_NOT_PROTOCOL_SUBJECT
  if video is None and (subject, take, camera) in h36m_protocol.MISSING_VIDEOS:
    return h36m_protocol.SKIP_MISSING_VIDEO
  return ""


def _take_key(path: str, root) -> tuple[str, str, str]:
  """(subject, take, camera) of ``S*/<folders>/<take>.<camera>.<ext>`` under ``root``."""
  parts = relative(path, root).split("/")
  return (parts[0], *os.path.splitext(parts[-1])[0].rsplit(".", 1))


def work_items(root, options: Options):
  """One item per (subject, take, camera) and range of ``options.frames_per_item`` frames.

  Returns a records.Discovery: (items, bad) and ``skipped``. Each item has
  the ``records`` it yields and its ``split``. ``bad``: BadRecords counting
  the records a take loses (an unreadable pose file; a protocol take's video
  without its pose file).
  ``skipped``: reason -> {"records": r, "videos": n} for the takes set aside
  (outside the protocol's actions or subjects, the video the release lacks),
  r counting the frames they hold at the split's stride. Raises
  h36m_cameras.CameraFileError when no camera file is found or it cannot be
  decoded (every record would be lost).
  """
  check_input(root, options)  # no camera file: every record would be lost
  monos = {
    _take_key(p, root): p for p in storage.glob(root, "S*/MyPoseFeatures/D3_Positions_mono/*.*.cdf")
  }
  videos = {_take_key(p, root): p for p in storage.glob(root, "S*/Videos/*.*.mp4")}
  items, bad, skipped = [], [], {}
  for key in sorted(set(monos) | set(videos)):
    subject, take, camera = key
    mono, video = monos.get(key), videos.get(key)
    split = h36m_protocol.split_of(subject)
    stride = options.test_frame_stride if split == "test" else options.frame_stride
    reason = _reason_to_skip(subject, take, camera, video)
    if reason:
      frames = (_pose_frames(mono, options.max_mat_bytes) if mono else None) or (
        media.video_frame_count(video) if video else None
      )
      entry = skipped.setdefault(reason, {"records": 0, "videos": 0})
      entry["records"] += len(range(0, frames or 0, stride))
      entry["videos"] += 1
      continue
    if mono is None:  # a protocol take's video without poses: its records are lost
      lost = len(range(0, media.video_frame_count(video) or 0, stride))
      pose_file = f"{subject}/MyPoseFeatures/D3_Positions_mono/{take}.{camera}.cdf"
      bad.append(
        BadRecord(
          relative(video, root), "-", "D3_Positions_mono", f"missing file {pose_file}", lost, split
        )
      )
      continue
    file = relative(mono, root)
    try:
      count = len(_cdf(mono, 96, file, options.max_mat_bytes))
    except BadRecord as error:  # the take's records are lost: as many as its video's frames
      lost = len(range(0, (media.video_frame_count(video) if video else 0) or 0, stride))
      bad.append(error.counting(lost, split))
      continue
    for frames in media.frame_ranges(count, stride, options.frames_per_item):
      items.append(
        {
          "subject": subject,
          "take": take,
          "camera": camera,
          "frames": frames,
          "records": len(frames),  # what the item yields, so that a lost item counts them all
          "split": split,
        }
      )
  return Discovery(items, bad, skipped)


def raw_records(root, item: dict, options: Options):
  subject, take, camera = item["subject"], item["take"], item["camera"]
  mono_file = f"{subject}/MyPoseFeatures/D3_Positions_mono/{take}.{camera}.cdf"
  mono = _cdf(storage.join(root, mono_file), 96, mono_file, options.max_mat_bytes)
  d2_file = f"{subject}/MyPoseFeatures/D2_Positions/{take}.{camera}.cdf"
  d2 = _cdf(safe_path(root, d2_file, d2_file, "-"), 64, d2_file, options.max_mat_bytes)
  try:
    camera_file, all_cameras = h36m_cameras.load(root, options.h36m_cameras, options.max_mat_bytes)
  except h36m_cameras.CameraFileError as error:
    raise BadRecord("-", f"{subject}/{camera}", "camera", str(error)) from None
  if (subject, camera) not in all_cameras:
    raise BadRecord(
      storage.name(camera_file),
      f"{subject}/{camera}",
      "camera",
      "no calibration for this subject and camera",
    )
  video_file = f"{subject}/Videos/{take}.{camera}.mp4"
  video = safe_path(root, video_file, video_file, "-")
  frames = [f for f in item["frames"] if f < min(len(mono), len(d2))]
  for frame, image in media.read_video_frames(video, frames, video_file):
    if isinstance(image, BadRecord):
      yield image
      continue
    yield {
      "subject": subject,
      "take": take,
      "camera": camera,
      "frame": frame,
      "image": image,
      "mono": mono[frame],
      "d2": d2[frame],
      "camera_model": all_cameras[(subject, camera)],
      "file": mono_file,
    }


def to_record(raw: dict) -> CanonicalRecord:
  """Native H3.6M values of one frame -> canonical record."""
  record_id = f"frame {raw['frame']}"
  joints3d = check_finite(raw["mono"], raw["file"], record_id, "D3_Positions_mono").reshape(32, 3)
  joints2d = check_finite(raw["d2"], raw["file"], record_id, "D2_Positions").reshape(32, 2)
  camera = raw["camera_model"]  # checked when its file was decoded (h36m_cameras)
  k = camera.intrinsics
  pose2d = skeletons.convert(joints2d, skeletons.H36M_32, skeletons.POSE2D)
  inside = inside_image(pose2d, raw["image"])
  return CanonicalRecord(
    key=f"{DATASET}/{raw['subject']}/{raw['take']}/{raw['camera']}/{raw['frame']:06d}",
    dataset=DATASET,
    split=h36m_protocol.split_of(raw["subject"]),
    subject=raw["subject"],
    sequence=raw["take"],
    action=action_of(raw["take"]),
    camera=raw["camera"],
    frame=raw["frame"],
    image=raw["image"],
    mask=None,
    camera_intrinsics_image_px=k,
    camera_distortion=np.array([*camera.radial, *camera.tangential]),
    joints2d_image_px=pose2d,
    joints2d_labelled=np.ones(14, bool),
    joints2d_visible=inside,
    joints3d_camera_mm=skeletons.convert(joints3d, skeletons.H36M_32, skeletons.POSE3D),
    joints3d_univ_camera_mm=None,
  )
