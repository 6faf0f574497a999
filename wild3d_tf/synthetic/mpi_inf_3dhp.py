"""MPI-INF-3DHP in its native layouts (docs/datasets.md, MPI-INF-3DHP).

Training set, ``mpi_inf_3dhp/S<s>/Seq<q>/``: ``annot.mat`` (MATLAB v5; cells
annot2 (F x 56 px), annot3 and univ_annot3 (F x 84 mm) for all 14 cameras,
``cameras`` 0..13, ``frames``), ``camera.calibration`` (Skeletool text),
``imageSequence/video_<c>.avi`` and ``FGmasks/video_<c>.avi`` (R: person,
G: upper body, B: lower body) for the preset's cameras. Green-screen studio.

Test set, ``mpi_inf_3dhp_test_set/TS<n>/``: ``annot_data.mat`` (MATLAB v7.3 =
HDF5: annot2 (N,1,17,2), annot3 and univ_annot3 (N,1,17,3), valid_frame and
activity_annotation (N,1), 3DHP-17 order) and ``imageSequence/img_%06d.jpg``
(1-based). TS1-2 green screen, TS3-4 plain studio, TS5-6 outdoor (the in-the-wild
domain: textured backgrounds, varied clothing and poses). Like the real test
set there is no calibration file; its pinhole cameras are recoverable from
annot2/annot3 by least squares.

Pixels are 0-based. univ_annot3 keeps each bone's direction and the pelvis
position with the bone lengths of a universal (mean) skeleton.
"""

from __future__ import annotations

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
TEST_SCENES = {
  "TS1": "green",
  "TS2": "green",
  "TS3": "studio",
  "TS4": "studio",
  "TS5": "wild",
  "TS6": "wild",
}


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


def write_test(root: pathlib.Path, preset: Preset, seed: int, samples: list | None = None) -> None:
  out = pathlib.Path(root) / "mpi_inf_3dhp_test_set"
  rng = np.random.default_rng([seed, zlib.crc32(b"mpi_inf_3dhp_test_set")])
  for index, (sequence, scene_kind) in enumerate(TEST_SCENES.items()):
    wild = scene_kind == "wild"
    subject = body.Subject.random(f"test{index + 1}", rng)
    palette = render.Palette.random(rng, wild=wild)
    if wild:  # 1920 x 1080 outdoor cameras
      width, height = (
        int(round(1920 * preset.dhp_test_scale)),
        int(round(1080 * preset.dhp_test_scale)),
      )
      f = 1680.0 * preset.dhp_test_scale
    else:
      width = height = int(round(2048 * preset.dhp_test_scale))
      f = 1500.0 * preset.dhp_test_scale
    k = cameras.intrinsic_matrix(
      f,
      f * rng.uniform(0.99, 1.01),
      width / 2 + rng.uniform(-5, 5),
      height / 2 + rng.uniform(-5, 5),
    )
    cam = scene.ring_camera(
      rng.uniform(-30, 30),
      rng.uniform(3800, 4600),
      rng.uniform(300, 2200) if wild else 1200,
      900,
      k,
      (width, height),
      sequence,
    )
    activities = list(rng.permutation(list(TEST_ACTIVITIES))[:3])
    world, activity = _sequence_poses(activities, preset.dhp_test_frames, subject, rng, wild=wild)
    joints17 = cam.world_to_camera(body.native_joints(world, skeletons.MPI_INF_3DHP_17))
    univ17 = cam.world_to_camera(
      body.native_joints(body.retarget(world, UNIVERSAL), skeletons.MPI_INF_3DHP_17)
    )
    frames = len(world)
    valid = (np.arange(frames) % 4 != 3).astype(
      np.float64
    )  # some frames invalid, as in the real set
    formats.write_mat73(
      out / sequence / "annot_data.mat",
      {
        "annot2": cam.project(joints17)[:, None],
        "annot3": joints17[:, None],
        "univ_annot3": univ17[:, None],
        "valid_frame": valid[:, None],
        "activity_annotation": activity[:, None].astype(np.float64),
      },
    )
    plate = render.background(scene_kind, width, height, rng)
    pose_cam = cam.world_to_camera(world)
    for t in range(frames):
      image, _, _ = render.render(
        plate, render.body_capsules(body.named_points(pose_cam[t]), subject.girth, palette), cam
      )
      formats.write_jpeg(out / sequence / "imageSequence" / f"img_{t + 1:06d}.jpg", image)
      if samples is not None and t == 0:
        samples.append(
          (image, cam.project(skeletons.convert(pose_cam[t], skeletons.POSE3D, skeletons.POSE2D)))
        )
