"""The synthetic datasets open with each real dataset's reader and match docs/datasets.md."""

import dataclasses
import filecmp
import re
import subprocess
import sys

import cdflib
import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from beam_preprocess.readers import h36m_cameras, mpi_inf_3dhp_test
from wild3d_tf import cameras, skeletons
from wild3d_tf.synthetic import body, generate, h36m, mpi_inf_3dhp, render, scene
from wild3d_tf.synthetic.presets import PRESETS

TINY = PRESETS["tiny"]


def _video_frames(path):
  capture = cv2.VideoCapture(str(path))
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(frame)
  return frames


# ---------------------------------------------------------------- H3.6M


def test_h36m_layout_and_cdf_shapes(synthetic_tiny):
  root = synthetic_tiny / "h36m"
  _, cams = h36m_cameras.load(root)  # the release's metadata.xml, no cameras.json
  assert sorted(cams) == sorted((s, c) for s in TINY.h36m_subjects for c in h36m.CAMERA_IDS)
  takes = sorted(p.name for p in (root / "S1/MyPoseFeatures/D3_Positions").glob("*.cdf"))
  assert takes == ["Directions 1.cdf", "Walking 1.cdf"]
  world = cdflib.CDF(str(root / "S1/MyPoseFeatures/D3_Positions/Directions 1.cdf"))["Pose"]
  assert world.shape == (1, TINY.h36m_frames, 96) and world.dtype == np.float64
  for index, cam_id in enumerate(h36m.CAMERA_IDS):
    mono = cdflib.CDF(
      str(root / f"S1/MyPoseFeatures/D3_Positions_mono/Directions 1.{cam_id}.cdf")
    ).varget("Pose")
    d2 = cdflib.CDF(str(root / f"S1/MyPoseFeatures/D2_Positions/Directions 1.{cam_id}.cdf")).varget(
      "Pose"
    )
    frames = TINY.h36m_frames - index % 2  # cameras 2 and 4 record a frame less
    assert mono.shape == (1, frames, 96) and d2.shape == (1, frames, 64)
    video = _video_frames(root / f"S1/Videos/Directions 1.{cam_id}.mp4")
    assert len(video) == frames
    assert video[0].shape == (1002 if index in (0, 3) else 1000, 1000, 3)  # as the real ones


def test_h36m_annotations_reproject_with_the_written_cameras(synthetic_tiny):
  root = synthetic_tiny / "h36m"
  _, cams = h36m_cameras.load(root)
  for subject in TINY.h36m_subjects:
    for take in (root / subject / "MyPoseFeatures/D3_Positions").glob("*.cdf"):
      world = cdflib.CDF(str(take))["Pose"].reshape(-1, 32, 3)
      for cam_id in h36m.CAMERA_IDS:
        cam = cams[(subject, cam_id)]
        stem = take.stem
        mono = cdflib.CDF(
          str(root / subject / f"MyPoseFeatures/D3_Positions_mono/{stem}.{cam_id}.cdf")
        )["Pose"]
        d2 = cdflib.CDF(str(root / subject / f"MyPoseFeatures/D2_Positions/{stem}.{cam_id}.cdf"))[
          "Pose"
        ]
        mono = mono.reshape(-1, 32, 3)
        np.testing.assert_allclose(cam.world_to_camera(world[: len(mono)]), mono, atol=1e-6)
        np.testing.assert_allclose(cam.project(mono), d2.reshape(-1, 32, 2), atol=1e-6)
        # H3.6M's tangential pair (p1, p2): reading it the other way round is wrong.
        swapped = cameras.Camera(cam.intrinsics, radial=cam.radial, tangential=cam.tangential[::-1])
        assert np.abs(swapped.project(mono) - d2.reshape(-1, 32, 2)).max() > 1e-3


def test_h36m_names_follow_the_real_quirks():
  assert h36m.take_name("S1", "Photo", 1) == "TakingPhoto 1"
  assert h36m.take_name("S1", "Eating", 2) == "Eating"
  assert h36m.take_name("S9", "WalkDog", 2) == "WalkDog 2"


def test_h36m_world_joints_map_to_pose3d_exactly(synthetic_tiny):
  world = cdflib.CDF(str(synthetic_tiny / "h36m/S9/MyPoseFeatures/D3_Positions/Walking 1.cdf"))[
    "Pose"
  ]
  pose = skeletons.convert(world.reshape(-1, 32, 3), skeletons.H36M_32, skeletons.POSE3D)
  lengths = np.linalg.norm(
    pose[:, [c for c, _ in skeletons.POSE3D.bones]]
    - pose[:, [p for _, p in skeletons.POSE3D.bones]],
    axis=-1,
  )
  np.testing.assert_allclose(lengths, np.broadcast_to(lengths[:1], lengths.shape), atol=1e-6)
  assert 1400 < np.ptp(pose[0, :, 1]) < 2000  # a person's height in mm


# ---------------------------------------------------------------- MPI-INF-3DHP


def _calibration(path):
  text = path.read_text().splitlines()
  assert text[0] == "Skeletool Camera Calibration File V1.0"
  cams = []
  for start in range(1, len(text), 7):
    block = dict(line.split(None, 1) for line in text[start : start + 7])
    intrinsic = np.array(block["intrinsic"].split(), float).reshape(4, 4)
    extrinsic = np.array(block["extrinsic"].split(), float).reshape(4, 4)
    size = tuple(int(v) for v in block["size"].split())
    cams.append((int(block["name"]), intrinsic, extrinsic, size))
  return cams


def test_3dhp_train_annot_mat_and_calibration(synthetic_tiny):
  folder = synthetic_tiny / "mpi_inf_3dhp/S1/Seq1"
  annot = scipy.io.loadmat(folder / "annot.mat")
  assert annot["annot2"].shape == (14, 1) and annot["annot3"].shape == (14, 1)
  assert annot["annot2"][0][0].shape == (TINY.dhp_frames, 56)
  assert annot["univ_annot3"][13][0].shape == (TINY.dhp_frames, 84)
  np.testing.assert_array_equal(annot["cameras"], np.arange(14)[None])
  np.testing.assert_array_equal(annot["frames"], np.arange(TINY.dhp_frames)[:, None])
  cams = _calibration(folder / "camera.calibration")
  assert [c[0] for c in cams] == list(range(14))
  for name, intrinsic, extrinsic, size in cams:
    joints3 = annot["annot3"][name][0].reshape(-1, 28, 3)
    joints2 = annot["annot2"][name][0].reshape(-1, 28, 2)
    np.testing.assert_allclose(cameras.project(joints3, intrinsic[:3, :3]), joints2, atol=1e-6)
    rotation = extrinsic[:3, :3]
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
    if name in TINY.dhp_video_cameras:
      frames = _video_frames(folder / f"imageSequence/video_{name}.avi")
      masks = _video_frames(folder / f"FGmasks/video_{name}.avi")
      assert len(frames) == len(masks) == TINY.dhp_frames and frames[0].shape[:2] == size[::-1]
      # Mask channels (BGR as OpenCV reads): R person, G upper body, B lower body.
      b, g, r = (masks[0][..., i] > 127 for i in range(3))
      # MJPEG's chroma subsampling blurs where upper and lower body meet: a few pixels only.
      assert r.sum() > 500 and (g | b)[r].mean() > 0.9 and (g & b)[r].mean() < 0.03
      joint = joints2[0, skeletons.MPI_INF_3DHP_28.index("left_knee")].round().astype(int)
      assert b[joint[1], joint[0]] and not g[joint[1], joint[0]]


def test_3dhp_universal_skeleton_has_universal_bones(synthetic_tiny):
  annot = scipy.io.loadmat(synthetic_tiny / "mpi_inf_3dhp/S1/Seq1/annot.mat")
  univ = skeletons.convert(
    annot["univ_annot3"][0][0].reshape(-1, 28, 3), skeletons.MPI_INF_3DHP_28, skeletons.POSE3D
  )
  lengths = np.linalg.norm(
    univ[:, [c for c, _ in skeletons.POSE3D.bones]]
    - univ[:, [p for _, p in skeletons.POSE3D.bones]],
    axis=-1,
  )
  np.testing.assert_allclose(
    lengths, np.broadcast_to(mpi_inf_3dhp.UNIVERSAL.bone_lengths(), lengths.shape), atol=1e-6
  )


def test_3dhp_test_set_hdf5_shapes_and_least_squares_intrinsics(synthetic_tiny):
  for n in range(1, 7):
    folder = synthetic_tiny / f"mpi_inf_3dhp_test_set/TS{n}"
    with open(folder / "annot_data.mat", "rb") as f:
      assert f.read(19) == b"MATLAB 7.3 MAT-file"
    with h5py.File(folder / "annot_data.mat", "r") as f:
      frames = TINY.dhp_test_takes[n - 1] * TINY.dhp_test_take_frames
      assert f["annot2"].shape == (frames, 1, 17, 2) and f["annot3"].shape == (frames, 1, 17, 3)
      assert f["univ_annot3"].shape == (frames, 1, 17, 3)
      assert f["valid_frame"].shape == f["activity_annotation"].shape == (frames, 1)
      assert f["annot3"].attrs["MATLAB_class"] == b"double"
      assert set(np.unique(f["activity_annotation"][:])) <= set(range(1, 8))
      annot2, annot3 = f["annot2"][:, 0], f["annot3"][:, 0]
    images = sorted((folder / "imageSequence").glob("img_*.jpg"))
    assert [p.name for p in images] == [f"img_{i:06d}.jpg" for i in range(1, frames + 1)]
    height, width = cv2.imread(str(images[0])).shape[:2]
    assert (width, height) == ((480, 270) if n >= 5 else (512, 512))
    # u Z = fx X + cx Z (MMPose's way to recover the test cameras): exact for our pinholes.
    a = np.stack([annot3[..., 0].ravel(), annot3[..., 2].ravel()], -1)
    fit, residual, _, _ = np.linalg.lstsq(a, (annot2[..., 0] * annot3[..., 2]).ravel(), rcond=None)
    assert np.sqrt(residual[0] / a.shape[0]) < 1e-3 * fit[0]


def _center(camera):
  return -camera.rotation.T @ camera.translation


def _bone_lengths(pose):
  bones = skeletons.POSE3D.bones
  return np.linalg.norm(pose[:, [c for c, _ in bones]] - pose[:, [p for _, p in bones]], axis=-1)


def test_3dhp_test_sequences_are_takes_under_one_camera_matrix(synthetic_tiny):
  plan = mpi_inf_3dhp.take_plan(TINY, seed=0)
  per_take = TINY.dhp_test_take_frames
  for n, sequence in enumerate(mpi_inf_3dhp.TEST_SCENES):
    takes = [t for t in plan if t.sequence == sequence]
    assert len(takes) == TINY.dhp_test_takes[n] >= 2
    with h5py.File(synthetic_tiny / f"mpi_inf_3dhp_test_set/{sequence}/annot_data.mat") as f:
      annot2, annot3 = f["annot2"][:, 0], f["annot3"][:, 0]
      valid, activity = f["valid_frame"][:, 0], f["activity_annotation"][:, 0]
    frames = np.arange(len(annot2))
    index = mpi_inf_3dhp.test_take_index(TINY, sequence, frames)
    np.testing.assert_array_equal(index, frames // per_take)
    assert len(frames) == len(takes) * per_take
    # One K fits every take of the sequence (the converter fits one per sequence).
    k = mpi_inf_3dhp_test.fit_intrinsics(annot2, annot3)
    assert np.abs(cameras.project(annot3, k) - annot2).max() < 1e-6
    assert all(np.array_equal(t.camera.intrinsics, takes[0].camera.intrinsics) for t in takes)
    lengths = _bone_lengths(skeletons.convert(annot3, skeletons.MPI_INF_3DHP_17, skeletons.POSE3D))
    for take in range(len(takes)):
      at = index == take
      assert (valid[at] == 0).sum() == 1  # every take keeps an invalid frame
      assert len(set(activity[at])) == 1
      np.testing.assert_allclose(lengths[at], np.broadcast_to(lengths[at][:1], (per_take, 16)))
    for before, after in zip(takes, takes[1:]):  # consecutive takes: another person and place
      first, last = after.start, after.start - 1
      assert np.abs(lengths[first] - lengths[last]).max() > 1.0
      assert np.linalg.norm(_center(after.camera) - _center(before.camera)) > 10.0


def test_3dhp_test_take_index_refuses_frames_outside_the_preset():
  with pytest.raises(ValueError, match="TS5: frame numbers must be integers in \\[0, 6\\)"):
    mpi_inf_3dhp.test_take_index(TINY, "TS5", [0, 6])
  with pytest.raises(ValueError, match="unknown test sequence 'TS7'"):
    mpi_inf_3dhp.test_take_index(TINY, "TS7", [0])
  with pytest.raises(ValueError, match="dhp_test_take_frames must be at least 2"):
    mpi_inf_3dhp.take_plan(dataclasses.replace(TINY, dhp_test_take_frames=1), 0)


def test_3dhp_test_ts5_performs_studio_poses_and_ts6_wild_poses(tmp_path):
  """TS5 changes only the appearance (studio activities, camera heights); TS6 the poses too."""
  preset = dataclasses.replace(
    TINY, dhp_test_takes=(1, 1, 1, 1, 12, 12), dhp_test_take_frames=2, dhp_test_scale=0.05
  )
  mpi_inf_3dhp.write_test(tmp_path, preset, seed=0)
  tilt, spread = {}, {}
  for sequence in ("TS5", "TS6"):
    with h5py.File(tmp_path / f"mpi_inf_3dhp_test_set/{sequence}/annot_data.mat") as f:
      pose = skeletons.convert(f["annot3"][:, 0], skeletons.MPI_INF_3DHP_17, skeletons.POSE3D)
    pose = pose - pose[:, :1]
    # Torso against the camera's up axis: studio people stand upright before level cameras.
    torso = pose[:, skeletons.POSE3D.index("thorax")]
    tilt[sequence] = np.median(np.degrees(np.arccos(-torso[:, 1] / np.linalg.norm(torso, axis=-1))))
    # Wild poses stray further from their mean pose (mm per joint; 216 against 268 at seed 0).
    spread[sequence] = np.linalg.norm(pose - pose.mean(0), axis=-1).mean()
  assert tilt["TS5"] < tilt["TS6"], tilt
  assert spread["TS6"] > 1.15 * spread["TS5"], spread
  for take in mpi_inf_3dhp.take_plan(preset, seed=0):
    assert take.wild_poses == (take.sequence == "TS6")
    studio_skin = render.Palette.random(np.random.default_rng(0), wild=False).skin
    assert (take.palette.skin != studio_skin) == (take.scene == "wild")
    low, high = mpi_inf_3dhp.TEST_CAMERA_HEIGHTS[take.wild_poses]
    assert low <= -_center(take.camera)[1] <= high  # height above the floor (y down)
    if not take.wild_poses:  # within the training ring's heights (900, 1300, 2200 mm +- 100)
      assert 800.0 <= low < high <= 2300.0


# ---------------------------------------------------------------- MPII


def _mpii_release(root):
  """The RELEASE struct of the generated MPII annotation, read as users of the .mat file do."""
  return scipy.io.loadmat(
    root / "mpii/mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat",
    struct_as_record=False,
    squeeze_me=True,
  )["RELEASE"]


def test_mpii_release_struct_with_the_real_quirks(synthetic_tiny):
  release = _mpii_release(synthetic_tiny)
  assert release._fieldnames == [
    "annolist",
    "img_train",
    "version",
    "single_person",
    "act",
    "video_list",
  ]
  annolist = release.annolist
  assert len(annolist) == TINY.mpii_images == len(release.img_train)
  for _i, entry in enumerate(annolist):
    assert re.fullmatch(r"\d{9}\.jpg", entry.image.name)
    assert (synthetic_tiny / "mpii/images" / entry.image.name).is_file()
  # Image 0 has one person: its annorect squeezes to a single struct.
  assert isinstance(annolist[0].annorect, scipy.io.matlab.mat_struct)
  # Image 1: an empty is_visible, and a person with a single point (squeezed too).
  first = annolist[1].annorect[0].annopoints.point[0]
  assert np.size(first.is_visible) == 0
  assert isinstance(annolist[1].annorect[1].annopoints.point, scipy.io.matlab.mat_struct)
  assert isinstance(annolist[2].annorect[0].annopoints.point[0].is_visible, str)
  test = [i for i, flag in enumerate(release.img_train) if flag == 0]
  assert test and not hasattr(np.atleast_1d(annolist[test[0]].annorect)[0], "annopoints")
  for i in range(TINY.mpii_images):
    if i in test:
      continue
    for rect in np.atleast_1d(annolist[i].annorect):
      for point in np.atleast_1d(rect.annopoints.point):
        assert 0 <= point.id < 16 and point.x >= 1 and point.y >= 1  # MATLAB pixels


def test_mpii_tilted_cameras_keep_the_people_in_the_picture(synthetic_tiny):
  """Elevated cameras look down or up at each person rather than past them."""
  release = _mpii_release(synthetic_tiny)
  points = [
    np.size(rect.annopoints.point)
    for i, entry in enumerate(release.annolist)
    if release.img_train[i] and i != 1  # image 1 holds the one-point quirk
    for rect in np.atleast_1d(entry.annorect)
  ]
  assert len(points) >= 4 and min(points) >= 12, points


# ---------------------------------------------------------------- LSP


def test_lsp_and_lspet_shapes_and_flags(synthetic_tiny):
  lsp = scipy.io.loadmat(synthetic_tiny / "lsp/joints.mat")["joints"]
  lspet = scipy.io.loadmat(synthetic_tiny / "lspet/joints.mat")["joints"]
  assert lsp.shape == (3, 14, TINY.lsp_images) and lspet.shape == (14, 3, TINY.lspet_images)
  assert set(np.unique(lsp[2])) <= {0.0, 1.0} and set(np.unique(lspet[:, 2])) <= {0.0, 1.0}
  assert (synthetic_tiny / "lsp/images/im0001.jpg").is_file()
  assert (synthetic_tiny / "lspet/images/im00001.jpg").is_file()
  # LSP: person-centred, every joint inside the image; the flag marks occlusion.
  for i in range(TINY.lsp_images):
    height, width = cv2.imread(str(synthetic_tiny / f"lsp/images/im{i + 1:04d}.jpg")).shape[:2]
    assert (
      (lsp[0, :, i] >= 1).all() and (lsp[0, :, i] <= width).all() and (lsp[1, :, i] <= height).all()
    )
  assert 0 < lsp[2].mean() < 0.6  # some occluded, most visible: the flag is inverted
  # LSPET: unlabelled joints are negative and flagged 0.
  unlabelled = lspet[:, 0] < 0
  assert (lspet[:, 2][unlabelled] == 0).all()


# ---------------------------------------------------------------- rendering and determinism


def test_occluded_joint_is_invisible():
  cam = cameras.Camera(cameras.intrinsic_matrix(500.0, 500.0, 100.0, 100.0), size=(200, 200))
  wall = render.Capsule(
    np.array([-500.0, 0, 2000]), np.array([500.0, 0, 2000]), 200.0, (255, 0, 0), 1
  )
  joints = np.array([[0.0, 0.0, 3000.0], [0.0, 1000.0, 3000.0], [0.0, 0.0, 1500.0]])
  image, depth, _ = render.render(np.zeros((200, 200, 3), np.uint8), [wall], cam)
  visible = render.visibility(joints, cam.project(joints), depth, radius=np.full(3, 50.0))
  np.testing.assert_array_equal(
    visible, [False, False, True]
  )  # behind, outside the image, in front
  assert image[100, 100, 0] > 100 and image[10, 10].sum() == 0


def test_a_flipped_back_view_does_not_look_like_a_front_view():
  """The nose, eyes and chest mark face forward; from behind the head and torso hide them."""
  subject = body.Subject.random("t", np.random.default_rng(0))
  pose = body.forward_kinematics({k: np.zeros(1) for k in body.ANGLES}, subject)  # faces -z
  pose = pose[0] + np.array([0.0, body.floor_offset(pose)[0], 0.0])
  # Marks in pure green, nothing else with green dominant (toes: fixed brown; background black).
  red, blue = (200.0, 0.0, 0.0), (0.0, 0.0, 200.0)
  palette = render.Palette(
    blue, red, blue, red, blue, (200.0, 0.0, 200.0), (0.0, 255.0, 0.0), (0.0, 0.0, 0.0), red
  )
  marks = dataclasses.replace(palette, chest_mark=(0.0, 255.0, 0.0))
  k = cameras.intrinsic_matrix(250.0, 250.0, 128.0, 128.0)
  green = {}
  for name, azimuth in (("front", 0.0), ("back", 180.0)):
    cam = scene.ring_camera(azimuth, 3000.0, 1200.0, 900.0, k, (256, 256), name)
    points = body.named_points(cam.world_to_camera(pose))
    for what, colours in (("face", palette), ("both", marks)):
      image, _, _ = render.render(
        np.zeros((256, 256, 3), np.uint8), render.body_capsules(points, subject.girth, colours), cam
      )
      if name == "back":
        image = image[:, ::-1]  # the flip augmentation
      mask = (image[..., 1] > 40) & (image[..., 1] > image[..., 0] + image[..., 2])
      green[name, what] = mask.sum()
    # The marks leave the joints' visibility as it was: every joint of a standing body is seen.
    if name == "front":
      uv = cam.project(cam.world_to_camera(pose))
      _, depth, _ = render.render(
        np.zeros((256, 256, 3), np.uint8), render.body_capsules(points, subject.girth, marks), cam
      )
      visible = render.visibility(cam.world_to_camera(pose), uv, depth)
      assert visible[[skeletons.POSE3D.index(j) for j in ("head", "head_top", "thorax")]].all()
  assert green["front", "face"] > 10 and green["front", "both"] > 3 * green["front", "face"]
  assert green["back", "face"] == green["back", "both"] == 0


def test_body_points_are_consistent_across_skeletons():
  subject = body.Subject.random("t", np.random.default_rng(0))
  angles = {k: np.zeros(3) for k in body.ANGLES}
  pose = body.forward_kinematics(angles, subject)
  for joint_set in (skeletons.H36M_32, skeletons.MPI_INF_3DHP_28, skeletons.MPI_INF_3DHP_17):
    back = skeletons.convert(body.native_joints(pose, joint_set), joint_set, skeletons.POSE3D)
    np.testing.assert_allclose(back, pose, atol=1e-9)
  np.testing.assert_allclose(
    np.linalg.norm(pose[:, 2] - pose[:, 1], axis=-1), subject.lengths["r_knee"]
  )


@pytest.mark.slow
def test_same_preset_and_seed_give_byte_identical_files(synthetic_tiny, tmp_path):
  generate.generate(str(tmp_path), "tiny", seed=0)
  first = sorted(p.relative_to(synthetic_tiny) for p in synthetic_tiny.rglob("*") if p.is_file())
  second = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
  assert first == second and len(first) > 100
  different = [
    str(p) for p in first if not filecmp.cmp(synthetic_tiny / p, tmp_path / p, shallow=False)
  ]
  assert not different, different[:5]


def test_another_seed_gives_other_data(tmp_path):
  generate.generate(str(tmp_path / "a"), "tiny", seed=1, datasets=["lsp"])
  other = scipy.io.loadmat(tmp_path / "a/lsp/joints.mat")["joints"]
  generate.generate(str(tmp_path / "b"), "tiny", seed=2, datasets=["lsp"])
  assert not np.array_equal(other, scipy.io.loadmat(tmp_path / "b/lsp/joints.mat")["joints"])


def test_bad_arguments_are_clear(tmp_path):
  with pytest.raises(ValueError, match="unknown preset 'huge'"):
    generate.generate(str(tmp_path), "huge")
  with pytest.raises(ValueError, match="unknown datasets"):
    generate.generate(str(tmp_path), "tiny", datasets=["coco"])


def test_an_unknown_dataset_writer_is_refused_in_one_line_naming_the_flag(tmp_path):
  # "lspet" is written by the "lsp" writer: a user asking for it gets the list, not a traceback.
  out = tmp_path / "out"
  result = subprocess.run(
    [sys.executable, "-m", "wild3d_tf.synthetic", f"--out={out}", "--datasets=lsp,lspet"],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  (line,) = [x for x in result.stderr.splitlines() if "--datasets" in x]
  assert all(name in line for name in generate.WRITERS), line
  assert not out.exists()
