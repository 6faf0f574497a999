"""MPI-INF-3DHP in its native layouts (docs/datasets.md, MPI-INF-3DHP).

Training set, ``mpi_inf_3dhp/S<s>/Seq<q>/``: ``annot.mat`` (MATLAB v5; cells
annot2 (F x 56 px), annot3 and univ_annot3 (F x 84 mm) for all 14 cameras,
``cameras`` 0..13, ``frames``), ``camera.calibration`` (Skeletool text),
``imageSequence/video_<c>.avi`` and ``FGmasks/video_<c>.avi`` (R: person,
G: upper body, B: lower body) for the preset's cameras. Green-screen studio.

Test set, ``mpi_inf_3dhp_test_set/TS<n>/``: ``annot_data.mat`` (MATLAB v7.3 =
HDF5: annot2 (N,1,17,2), annot3 and univ_annot3 (N,1,17,3), valid_frame and
activity_annotation (N,1), 3DHP-17 order) and ``imageSequence/img_%06d.jpg``
(1-based). TS1-2 green screen and TS3-4 plain studio (studio clothes, the
training activities' poses); TS5 outdoor with the training activities' poses
and camera heights (the appearance shift alone, as 3DHP's outdoor sequences
perform the training activities: the main in-the-wild column); TS6 outdoor with
in-the-wild poses and steep cameras (appearance and pose shift together).
Outdoor means the in-the-wild family of MPII/LSP/LSPET: textured clutter,
varied clothing, a 1920 x 1080 camera. Each sequence is a run of short takes
(``take_plan``; ``test_take_index`` maps frames to takes), each with its own
person, clothes, background plate, activity and camera placement, and one
invalid frame (valid_frame 0); all takes of a sequence share one intrinsic
matrix, so, like the real test set without a calibration file, its pinhole
camera is recoverable from annot2/annot3 by least squares.

Pixels are 0-based. univ_annot3 keeps each bone's direction and the pelvis
position with the bone lengths of a universal (mean) skeleton.
"""

from __future__ import annotations

import dataclasses
import pathlib
import zlib

import numpy as np

from wild3d_tf import cameras, skeletons
from wild3d_tf.synthetic import body, formats, render, scene
from wild3d_tf.synthetic.presets import Preset

FPS = 25.0
NUM_CAMERAS = 14
UNIVERSAL = body.Subject("universal", dict(body.MEAN_LENGTHS), 1.0)
# Training activities per sequence half (A1-A4 in Seq1, A5-A8 in Seq2) and test activity classes.
_ACTIVITY_STYLES = {
  1: "Walking",
  2: "Greeting",
  3: "Sitting",
  4: "SittingDown",
  5: "SittingDown",
  6: "Greeting",
  7: "Sitting",
  8: "Discussion",
}
TEST_ACTIVITIES = {
  1: "Walking",
  2: "Greeting",
  3: "Sitting",
  4: "SittingDown",
  5: "SittingDown",
  6: "Greeting",
  7: "Discussion",
}
# Background per test sequence; "wild" also means in-the-wild clothes and a 1920 x 1080 camera.
TEST_SCENES = {
  "TS1": "green",
  "TS2": "green",
  "TS3": "studio",
  "TS4": "studio",
  "TS5": "wild",
  "TS6": "wild",
}
# Sequences whose poses follow the in-the-wild recipe (athletic angles, steep cameras); the
# others perform the training activities' styles, seen from the training cameras' heights.
WILD_POSE_SEQUENCES = ("TS6",)
# Test camera height range (mm above the floor), by wild_poses.
TEST_CAMERA_HEIGHTS = {False: (1000.0, 1400.0), True: (300.0, 2200.0)}


def make_cameras(scale: float, rng: np.random.Generator) -> list[cameras.Camera]:
  """11 cameras on a ring at several heights and 3 ceiling cameras looking down."""
  size = int(round(2048 * scale))
  out = []
  for c in range(NUM_CAMERAS):
    f = 1500.0 * scale * rng.uniform(0.97, 1.03)
    k = cameras.intrinsic_matrix(
      f, f, size / 2 + rng.uniform(-10, 10) * scale, size / 2 + rng.uniform(-10, 10) * scale
    )
    if c < 11:
      cam = scene.ring_camera(
        360 / 11 * c + rng.uniform(-8, 8),
        rng.uniform(3800, 4500),
        [900, 1300, 2200][c % 3] + rng.uniform(-100, 100),
        900,
        k,
        (size, size),
        str(c),
      )
    else:
      cam = scene.ring_camera(120 * (c - 11), 1600, 3600, 0, k, (size, size), str(c))
    out.append(cam)
  return out


def calibration_text(cams: list[cameras.Camera]) -> str:
  lines = ["Skeletool Camera Calibration File V1.0"]
  for cam in cams:
    intrinsic = np.eye(4)
    intrinsic[:3, :3] = cam.intrinsics
    extrinsic = np.eye(4)
    extrinsic[:3, :3], extrinsic[:3, 3] = cam.rotation, cam.translation
    lines += [
      f"name          {cam.name}",
      "  sensor      10 10",
      f"  size        {cam.size[0]} {cam.size[1]}",
      "  animated    0",
      "  intrinsic   " + " ".join(f"{v:.12g}" for v in intrinsic.ravel()),
      "  extrinsic   " + " ".join(f"{v:.12g}" for v in extrinsic.ravel()),
      "  radial      0",
    ]
  return "\n".join(lines) + "\n"


def _sequence_poses(activities, frames, subject, rng, wild=False):
  """World poses (F, 17, 3) made of one take per activity, and the activity per frame."""
  bounds = np.linspace(0, frames, len(activities) + 1).astype(int)
  poses, labels = [], []
  for activity, (start, stop) in zip(activities, zip(bounds[:-1], bounds[1:])):
    if stop <= start:
      continue
    style = body.STUDIO_STYLES[
      _ACTIVITY_STYLES.get(activity, "Discussion") if not wild else TEST_ACTIVITIES[activity]
    ]
    poses.append(
      scene.take(
        style,
        subject,
        stop - start,
        FPS,
        rng,
        wild=wild,
        use_cmu=style.walk > 0 and not wild,
        area=1000.0,
      )
    )
    labels += [activity] * (stop - start)
  return np.concatenate(poses), np.array(labels)


def write_train(root: pathlib.Path, preset: Preset, seed: int, samples: list | None = None) -> None:
  out = pathlib.Path(root) / "mpi_inf_3dhp"
  rng = np.random.default_rng([seed, zlib.crc32(b"mpi_inf_3dhp")])
  subjects = {}
  for subject_name, seq in preset.dhp_sequences:
    subject = subjects.setdefault(subject_name, body.Subject.random(subject_name, rng))
    palette = render.Palette.random(rng, wild=False)
    cams = make_cameras(preset.dhp_scale, rng)
    folder = out / subject_name / f"Seq{seq}"
    activities = range(1, 5) if seq == 1 else range(5, 9)
    world, _ = _sequence_poses(list(activities), preset.dhp_frames, subject, rng)
    world28 = body.native_joints(world, skeletons.MPI_INF_3DHP_28)
    univ28 = body.native_joints(body.retarget(world, UNIVERSAL), skeletons.MPI_INF_3DHP_28)
    frames = len(world)
    annot2, annot3, univ3 = (np.empty((NUM_CAMERAS, 1), object) for _ in range(3))
    for c, cam in enumerate(cams):
      cam3 = cam.world_to_camera(world28)
      annot3[c, 0] = cam3.reshape(frames, -1)
      annot2[c, 0] = cam.project(cam3).reshape(frames, -1)
      univ3[c, 0] = cam.world_to_camera(univ28).reshape(frames, -1)
    formats.savemat(
      folder / "annot.mat",
      {
        "annot2": annot2,
        "annot3": annot3,
        "univ_annot3": univ3,
        "cameras": np.arange(NUM_CAMERAS, dtype=np.float64)[None],
        "frames": np.arange(frames, dtype=np.float64)[:, None],
      },
    )
    (folder / "camera.calibration").write_text(calibration_text(cams))
    for c in preset.dhp_video_cameras:
      cam = cams[c]
      plate = render.background("green", *cam.size, rng)
      pose_cam = cam.world_to_camera(world)
      with (
        formats.VideoWriter(folder / "imageSequence" / f"video_{c}.avi", FPS, cam.size) as video,
        formats.VideoWriter(folder / "FGmasks" / f"video_{c}.avi", FPS, cam.size) as masks,
      ):
        for t in range(frames):
          image, _, labels = render.render(
            plate, render.body_capsules(body.named_points(pose_cam[t]), subject.girth, palette), cam
          )
          video.write(image)
          masks.write(
            np.stack([labels > 0, labels == render.UPPER, labels == render.LOWER], -1).astype(
              np.uint8
            )
            * 255
          )
          if samples is not None and t == 0 and len(samples) < 6:
            samples.append(
              (
                image,
                cam.project(skeletons.convert(pose_cam[t], skeletons.POSE3D, skeletons.POSE2D)),
              )
            )


@dataclasses.dataclass(frozen=True)
class Take:
  """One take of the test set: frames ``start`` .. ``start + frames - 1`` (0-based) of
  ``sequence``, one person in one place, seen by ``camera`` (the sequence's intrinsics, the
  take's placement; world mm, y down, floor at y = 0)."""

  sequence: str
  index: int  # take number within the sequence
  start: int
  frames: int
  subject: body.Subject
  palette: render.Palette
  scene: str  # background kind (render.background)
  camera: cameras.Camera
  activity: int  # TEST_ACTIVITIES key
  wild_poses: bool  # in-the-wild pose recipe (else the training activities' styles)
  invalid_frame: int  # 0-based within the take: valid_frame is 0 there


def _check_test_preset(preset: Preset) -> None:
  if len(preset.dhp_test_takes) != len(TEST_SCENES) or min(preset.dhp_test_takes) < 1:
    raise ValueError(
      f"preset {preset.name!r}: dhp_test_takes must give at least one take for each of "
      f"{', '.join(TEST_SCENES)}; got {preset.dhp_test_takes}"
    )
  if preset.dhp_test_take_frames < 2:
    raise ValueError(
      f"preset {preset.name!r}: dhp_test_take_frames must be at least 2 (each take has an "
      f"invalid frame); got {preset.dhp_test_take_frames}"
    )


def take_plan(preset: Preset, seed: int) -> list[Take]:
  """The takes ``write_test`` renders, in sequence and frame order.

  Each sequence has one intrinsic matrix (the converter fits one per sequence from
  annot2/annot3); every take has its own subject, palette, background, activity and camera
  placement on a ring around the capture area (azimuth, distance, height).
  Raises ValueError for a preset without a take per sequence or with takes under 2 frames.
  """
  _check_test_preset(preset)
  rng = np.random.default_rng([seed, zlib.crc32(b"mpi_inf_3dhp_test_set/takes")])
  scale = preset.dhp_test_scale
  out = []
  for index, (sequence, scene_kind) in enumerate(TEST_SCENES.items()):
    wild = scene_kind == "wild"
    wild_poses = sequence in WILD_POSE_SEQUENCES
    if wild:  # 1920 x 1080 outdoor cameras
      width, height = int(round(1920 * scale)), int(round(1080 * scale))
      f = 1680.0 * scale
    else:
      width = height = int(round(2048 * scale))
      f = 1500.0 * scale
    k = cameras.intrinsic_matrix(
      f,
      f * rng.uniform(0.99, 1.01),
      width / 2 + rng.uniform(-5, 5),
      height / 2 + rng.uniform(-5, 5),
    )
    frames = preset.dhp_test_take_frames
    for take in range(preset.dhp_test_takes[index]):
      camera = scene.ring_camera(
        rng.uniform(0, 360),
        rng.uniform(3800, 4600),
        rng.uniform(*TEST_CAMERA_HEIGHTS[wild_poses]),
        900,
        k,
        (width, height),
        sequence,
      )
      out.append(
        Take(
          sequence,
          take,
          take * frames,
          frames,
          body.Subject.random(f"test{index + 1}_{take}", rng),
          render.Palette.random(rng, wild=wild),
          scene_kind,
          camera,
          int(rng.choice(list(TEST_ACTIVITIES))),
          wild_poses,
          int(rng.integers(frames)),
        )
      )
  return out


def test_take_index(preset: Preset, sequence: str, frame_numbers) -> np.ndarray:
  """(N,) int64 take number (0-based, within ``sequence``) of each frame.

  ``frame_numbers``: (N,) 0-based frame numbers of ``sequence`` (``TS1`` .. ``TS6``) as the
  converter stores them (``frame``; the last part of the record key). Takes are contiguous
  blocks of ``preset.dhp_test_take_frames`` frames. Raises ValueError for an unknown
  sequence or a frame number outside the preset's sequence.
  """
  _check_test_preset(preset)
  if sequence not in TEST_SCENES:
    raise ValueError(f"unknown test sequence {sequence!r}; expected one of {list(TEST_SCENES)}")
  frames = np.asarray(frame_numbers)
  total = preset.dhp_test_takes[list(TEST_SCENES).index(sequence)] * preset.dhp_test_take_frames
  if frames.size and (
    not np.issubdtype(frames.dtype, np.integer) or frames.min() < 0 or frames.max() >= total
  ):
    raise ValueError(
      f"{sequence}: frame numbers must be integers in [0, {total}) for preset "
      f"{preset.name!r}; got {frames.dtype} in [{frames.min()}, {frames.max()}]"
    )
  return frames.astype(np.int64).reshape(-1) // preset.dhp_test_take_frames


def write_test(root: pathlib.Path, preset: Preset, seed: int, samples: list | None = None) -> None:
  out = pathlib.Path(root) / "mpi_inf_3dhp_test_set"
  takes = take_plan(preset, seed)
  rng = np.random.default_rng([seed, zlib.crc32(b"mpi_inf_3dhp_test_set")])  # poses, plates
  for sequence in TEST_SCENES:
    annot = {name: [] for name in ("annot2", "annot3", "univ_annot3", "valid", "activity")}
    for take in (t for t in takes if t.sequence == sequence):
      cam = take.camera
      world, activity = _sequence_poses(
        [take.activity], take.frames, take.subject, rng, wild=take.wild_poses
      )
      joints17 = cam.world_to_camera(body.native_joints(world, skeletons.MPI_INF_3DHP_17))
      annot["annot2"].append(cam.project(joints17))
      annot["annot3"].append(joints17)
      annot["univ_annot3"].append(
        cam.world_to_camera(
          body.native_joints(body.retarget(world, UNIVERSAL), skeletons.MPI_INF_3DHP_17)
        )
      )
      annot["valid"].append(np.arange(take.frames) != take.invalid_frame)  # as in the real set
      annot["activity"].append(activity)
      plate = render.background(take.scene, *cam.size, rng)
      pose_cam = cam.world_to_camera(world)
      for t in range(take.frames):
        image, _, _ = render.render(
          plate,
          render.body_capsules(body.named_points(pose_cam[t]), take.subject.girth, take.palette),
          cam,
        )
        number = take.start + t + 1  # 1-based file names
        formats.write_jpeg(out / sequence / "imageSequence" / f"img_{number:06d}.jpg", image)
        if samples is not None and take.index == 0 and t == 0:
          samples.append(
            (image, cam.project(skeletons.convert(pose_cam[t], skeletons.POSE3D, skeletons.POSE2D)))
          )
    annot = {name: np.concatenate(values) for name, values in annot.items()}
    formats.write_mat73(
      out / sequence / "annot_data.mat",
      {
        "annot2": annot["annot2"][:, None],
        "annot3": annot["annot3"][:, None],
        "univ_annot3": annot["univ_annot3"][:, None],
        "valid_frame": annot["valid"][:, None].astype(np.float64),
        "activity_annotation": annot["activity"][:, None].astype(np.float64),
      },
    )
