"""Human3.6M in its native layout, as the release unpacks (docs/datasets.md, Human3.6M).

    h36m/metadata.xml                                   camera block of the release's metadata.xml
    h36m/S<k>/MyPoseFeatures/D3_Positions/<take>.cdf            world, 32 joints, mm
    h36m/S<k>/MyPoseFeatures/D3_Positions_mono/<take>.<cam>.cdf camera frame, mm
    h36m/S<k>/MyPoseFeatures/D2_Positions/<take>.<cam>.cdf      pixels, through the lens model
    h36m/S<k>/Videos/<take>.<cam>.mp4                           50 Hz

The release has no camera file beside the poses: its parameters are the ``w0``
vector of ``metadata.xml`` (shipped with the release's code), which users copy
into the data folder. The generator writes that file (``formats.write_h36m_metadata``:
Euler angles and camera centre per subject and camera, then f, c, k, p per
camera; ``wild3d_tf.cameras.camera_from_h36m_w0`` gives the layout) and renders
with the cameras decoded from the very numbers it writes, so reading the file
gives back exactly the cameras of the data. D2 pixels are 0-based. Takes are
named like the real files, quirks included: S1 says ``TakingPhoto`` and
``WalkingDog``, and S1's second sub-action has no number (``Eating``); cameras
2 and 4 record one frame less.
"""

from __future__ import annotations

import pathlib
import zlib

import numpy as np

from wild3d_tf import cameras, h36m_protocol, skeletons
from wild3d_tf.synthetic import body, formats, render, scene
from wild3d_tf.synthetic.presets import Preset

CAMERA_IDS = cameras.H36M_CAMERA_IDS
FPS = 50.0
_S1_NAMES = {"Photo": "TakingPhoto", "WalkDog": "WalkingDog"}


def take_name(subject: str, action: str, subaction: int) -> str:
  if subject == "S1":
    action = _S1_NAMES.get(action, action)
    return f"{action} 1" if subaction == 1 else action
  return f"{action} {subaction}"


def make_cameras(rng: np.random.Generator) -> dict[str, cameras.Camera]:
  """Four H3.6M-like cameras; sizes as the real ones (cameras 1 and 4 are 1000 x 1002)."""
  out = {}
  for i, cam_id in enumerate(CAMERA_IDS):
    f = 1145.0 + rng.uniform(-4, 4)
    k = cameras.intrinsic_matrix(
      f, f - rng.uniform(0, 2), 512.0 + rng.uniform(-8, 8), 515.0 + rng.uniform(-8, 8)
    )
    radial = (
      -0.207 * rng.uniform(0.9, 1.1),
      0.248 * rng.uniform(0.9, 1.1),
      -0.003 * rng.uniform(0.9, 1.1),
    )
    tangential = (rng.uniform(-0.0015, 0.0015), rng.uniform(-0.0015, 0.0015))
    out[cam_id] = scene.ring_camera(
      45 + 90 * i + rng.uniform(-10, 10),
      rng.uniform(4800, 5600),
      rng.uniform(1400, 1800),
      900,
      k,
      (1000, 1002 if i in (0, 3) else 1000),
      cam_id,
      radial,
      tangential,
    )
  return out


def write(root: pathlib.Path, preset: Preset, seed: int, samples: list | None = None) -> None:
  """Writes the preset's H3.6M tree under ``root / "h36m"``; appends contact-sheet samples."""
  out = pathlib.Path(root) / "h36m"
  rng = np.random.default_rng([seed, zlib.crc32(b"h36m")])
  base = make_cameras(rng)
  w0 = np.zeros(cameras.H36M_W0_LENGTH)
  for subject_name in preset.h36m_subjects:
    subject = body.Subject.random(subject_name, rng)
    palette = render.Palette.random(rng, wild=False)
    number = h36m_protocol.subject_number(subject_name)
    cams = {}
    for (
      cam_id,
      cam,
    ) in base.items():  # recalibrated per subject: a few mm and a fraction of a degree
      jitter = scene.look_at(
        -cam.rotation.T @ cam.translation + rng.normal(0, 5, 3),
        -cam.rotation.T @ cam.translation + cam.rotation[2] * 5000 + rng.normal(0, 10, 3),
      )
      index = CAMERA_IDS.index(cam_id)
      extrinsic, intrinsic = cameras.h36m_w0_entry(
        cameras.Camera(cam.intrinsics, *jitter, cam.radial, cam.tangential, cam.size, cam_id)
      )
      ext, intr = cameras.h36m_w0_offsets(number, index)
      w0[ext : ext + 6], w0[intr : intr + 9] = extrinsic, intrinsic
      # The data are made with the camera decoded from the numbers metadata.xml holds.
      cams[cam_id] = cameras.camera_from_h36m_w0(w0, number, index, cam.size)
    backgrounds = {
      cam_id: render.background("studio", *cam.size, rng) for cam_id, cam in cams.items()
    }
    for action in preset.h36m_actions:
      for subaction in range(1, preset.h36m_subactions + 1):
        name = take_name(subject_name, action, subaction)
        style = body.STUDIO_STYLES[action]
        poses = scene.take(
          style,
          subject,
          preset.h36m_frames,
          FPS,
          rng,
          use_cmu=action.startswith("Walk") and rng.uniform() < 0.7,
        )
        world32 = body.native_joints(poses, skeletons.H36M_32)
        features = out / subject_name / "MyPoseFeatures"
        formats.write_cdf(
          features / "D3_Positions" / f"{name}.cdf", world32.reshape(len(poses), -1)
        )
        for index, (cam_id, cam) in enumerate(cams.items()):
          frames = len(poses) - (index % 2)
          mono = cam.world_to_camera(world32[:frames])
          formats.write_cdf(
            features / "D3_Positions_mono" / f"{name}.{cam_id}.cdf", mono.reshape(frames, -1)
          )
          formats.write_cdf(
            features / "D2_Positions" / f"{name}.{cam_id}.cdf",
            cam.project(mono).reshape(frames, -1),
          )
          pose_cam = cam.world_to_camera(poses[:frames])
          with formats.VideoWriter(
            out / subject_name / "Videos" / f"{name}.{cam_id}.mp4", FPS, cam.size
          ) as video:
            for t in range(frames):
              image, _, _ = render.render(
                backgrounds[cam_id],
                render.body_capsules(body.named_points(pose_cam[t]), subject.girth, palette),
                cam,
              )
              video.write(image)
              if samples is not None and t == 0 and len(samples) < 6:
                samples.append(
                  (
                    image,
                    cam.project(skeletons.convert(pose_cam[t], skeletons.POSE3D, skeletons.POSE2D)),
                  )
                )
  formats.write_h36m_metadata(out / "metadata.xml", w0, CAMERA_IDS)
