"""Human3.6M as released: cameras from metadata.xml / cameras.h5 / VideoPose3D's values, the
protocol's action table, and takes set aside and counted (docs/datasets.md, Human3.6M)."""

import json
import shutil

import cdflib
import numpy as np
import pytest

from beam_preprocess.readers import h36m, h36m_cameras
from beam_preprocess.records import BadRecord, Options
from wild3d_tf import cameras, h36m_protocol
from wild3d_tf.synthetic import formats
from wild3d_tf.synthetic import h36m as synthetic_h36m

# VideoPose3D's published values for S1, camera 54138969 (common/h36m_dataset.py).
VP3D_INTRINSIC = {
  "id": "54138969",
  "center": [512.54150390625, 515.4514770507812],
  "focal_length": [1145.0494384765625, 1143.7811279296875],
  "radial_distortion": [-0.20709891617298126, 0.24777518212795258, -0.0030751503072679043],
  "tangential_distortion": [-0.0009756988729350269, -0.00142447161488235],
  "res_w": 1000,
  "res_h": 1002,
  "azimuth": 70,
}
VP3D_S1_EXTRINSIC = {
  "orientation": [0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088],
  "translation": [1841.1070556640625, 4955.28466796875, 1563.4454345703125],
}


def _w0_text(w0):
  return "[" + " ".join(repr(float(v)) for v in w0) + "]"


# ------------------------------------------------------------ w0 layout, by hand


def test_w0_layout_offsets_and_decoding_by_hand():
  # Camera 2 (index 1) of subject 1: extrinsics at 6 * (1 * 11 + 0) = 66, intrinsics at
  # 6 * 11 * 4 + 9 * 1 = 273.
  assert cameras.h36m_w0_offsets(1, 1) == (66, 273)
  assert cameras.h36m_w0_offsets(11, 3) == (6 * (3 * 11 + 10), 264 + 27)
  w0 = np.zeros(300)
  w0[66:72] = [0.0, 0.0, np.pi / 2, 1000.0, 2000.0, 3000.0]  # Rz(90 deg), centre (1, 2, 3) m
  w0[273:282] = [1100.0, 1101.0, 500.0, 501.0, 0.1, 0.2, 0.3, 0.01, 0.02]
  camera = cameras.camera_from_h36m_w0(w0, 1, 1)
  assert camera.name == "55011271"
  np.testing.assert_allclose(camera.rotation, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
  # t = -R T = -(-2000, 1000, 3000)
  np.testing.assert_allclose(camera.translation, [2000.0, -1000.0, -3000.0], atol=1e-9)
  np.testing.assert_array_equal(camera.intrinsics, [[1100, 0, 500], [0, 1101, 501], [0, 0, 1]])
  assert camera.radial == (0.1, 0.2, 0.3) and camera.tangential == (0.01, 0.02)
  # The world point at the camera centre maps to the camera's origin.
  np.testing.assert_allclose(camera.world_to_camera([1000.0, 2000.0, 3000.0]), 0, atol=1e-9)
  with pytest.raises(ValueError, match="w0 holds 299 numbers"):
    cameras.camera_from_h36m_w0(w0[:-1], 1, 1)


def test_euler_angles_round_trip_is_rx_ry_rz():
  angles = np.array([0.3, -0.4, 2.5])
  a, b, c = angles
  # R = Rx(a) Ry(b) Rz(c): its first row is (cos b cos c, -cos b sin c, sin b).
  r = cameras.h36m_euler_rotation(angles)
  np.testing.assert_allclose(
    r[0], [np.cos(b) * np.cos(c), -np.cos(b) * np.sin(c), np.sin(b)], atol=1e-15
  )
  np.testing.assert_allclose(cameras.h36m_euler_angles(r), angles, atol=1e-12)


def test_videopose3d_values_decode_with_the_tangential_pair_reversed(tmp_path):
  path = tmp_path / "cameras.json"
  path.write_text(
    json.dumps(
      {
        "h36m_cameras_intrinsic_params": [VP3D_INTRINSIC, {}, {}, {}],
        "h36m_cameras_extrinsic_params": {"S1": [VP3D_S1_EXTRINSIC, {}, {}, {}], "S2": [{}] * 4},
      }
    )
  )
  decoded = h36m_cameras.read_videopose3d_json(path)
  assert list(decoded) == [("S1", "54138969")]  # S2's empty entries: no calibration
  camera = decoded[("S1", "54138969")]
  # VideoPose3D lists (p2, p1); metadata.xml's order is (p1, p2).
  assert camera.tangential == (-0.00142447161488235, -0.0009756988729350269)
  assert camera.size == (1000, 1002)
  # translation is the camera centre in mm; the world origin lies about 5.5 m in front of it.
  np.testing.assert_allclose(
    -camera.rotation.T @ camera.translation, VP3D_S1_EXTRINSIC["translation"], atol=1e-9
  )
  origin = camera.world_to_camera(np.zeros(3))
  assert 5000 < origin[2] < 6000 and np.hypot(*origin[:2]) < 1000
  # VideoPose3D's loader divides by 1000: a JSON in metres is refused, naming the unit.
  metres = dict(VP3D_S1_EXTRINSIC, translation=[v / 1000 for v in VP3D_S1_EXTRINSIC["translation"]])
  path.write_text(
    json.dumps(
      {"intrinsic": [VP3D_INTRINSIC, {}, {}, {}], "extrinsic": {"S1": [metres, {}, {}, {}]}}
    )
  )
  with pytest.raises(h36m_cameras.CameraFileError, match="extrinsic/S1/54138969.*must be in mm"):
    h36m_cameras.read_videopose3d_json(path)


# ------------------------------------------------------------ the synthetic release


def test_synthetic_h36m_has_the_release_layout_and_no_cameras_json(synthetic_tiny):
  root = synthetic_tiny / "h36m"
  assert not (root / "cameras.json").exists()
  assert h36m_cameras.find(root) == str(root / "metadata.xml")
  text = (root / "metadata.xml").read_text()
  w0 = text.split("<w0>[")[1].split("]</w0>")[0].split(" ")  # as 3d-pose-baseline parses it
  assert len(w0) == 300


def test_metadata_xml_gives_back_exactly_the_cameras_of_the_data(synthetic_tiny):
  root = synthetic_tiny / "h36m"
  _, decoded = h36m_cameras.load(root)
  assert sorted(decoded) == [(s, c) for s in ("S1", "S9") for c in cameras.H36M_CAMERA_IDS]
  for (subject, camera_id), camera in decoded.items():
    features = root / subject / "MyPoseFeatures"
    for world_file in (features / "D3_Positions").glob("*.cdf"):
      take = world_file.stem
      world = cdflib.CDF(str(world_file))["Pose"].reshape(-1, 32, 3)
      mono = cdflib.CDF(str(features / f"D3_Positions_mono/{take}.{camera_id}.cdf"))["Pose"]
      d2 = cdflib.CDF(str(features / f"D2_Positions/{take}.{camera_id}.cdf"))["Pose"]
      mono = mono.reshape(-1, 32, 3)
      # Bit for bit: the generator made the data with the cameras these numbers decode to.
      np.testing.assert_array_equal(camera.world_to_camera(world[: len(mono)]), mono)
      np.testing.assert_array_equal(camera.project(mono), d2.reshape(-1, 32, 2))


def test_cameras_h5_as_3d_pose_baseline_writes_it_gives_the_same_cameras(synthetic_tiny, tmp_path):
  _, decoded = h36m_cameras.load(synthetic_tiny / "h36m")
  numbered = {
    (h36m_protocol.subject_number(s), cameras.H36M_CAMERA_IDS.index(c) + 1): cam
    for (s, c), cam in decoded.items()
  }
  formats.write_h36m_cameras_h5(tmp_path / "cameras.h5", numbered)
  import h5py

  with h5py.File(tmp_path / "cameras.h5") as f:  # the layout 3d-pose-baseline reads
    stored = f["subject9/camera2"]
    np.testing.assert_array_equal(stored["R"][:].T, decoded[("S9", "55011271")].rotation)
    assert stored["T"].shape == (3, 1) and stored["Name"].shape == (8, 1)
    assert "".join(chr(int(v[0])) for v in stored["Name"]) == "55011271"
  back = h36m_cameras.read_cameras_h5(tmp_path / "cameras.h5")
  assert sorted(back) == sorted(decoded)
  for key, camera in decoded.items():
    np.testing.assert_array_equal(back[key].rotation, camera.rotation)
    np.testing.assert_array_equal(back[key].intrinsics, camera.intrinsics)
    np.testing.assert_allclose(back[key].translation, camera.translation, rtol=0, atol=1e-9)
    assert back[key].radial == camera.radial and back[key].tangential == camera.tangential


def test_videopose3d_json_of_the_synthetic_cameras_gives_the_same_cameras(synthetic_tiny, tmp_path):
  _, decoded = h36m_cameras.load(synthetic_tiny / "h36m")
  intrinsic, extrinsic = {}, {}
  for (subject, camera_id), camera in decoded.items():
    intrinsic[camera_id], entry = cameras.camera_to_h36m_json(camera)
    extrinsic.setdefault(subject, [None] * 4)[cameras.H36M_CAMERA_IDS.index(camera_id)] = entry
  path = tmp_path / "vp3d.json"
  path.write_text(
    json.dumps(
      {"intrinsic": [intrinsic[c] for c in cameras.H36M_CAMERA_IDS], "extrinsic": extrinsic}
    )
  )
  back = h36m_cameras.read_videopose3d_json(path)
  assert sorted(back) == sorted(decoded)
  for key, camera in decoded.items():
    np.testing.assert_allclose(back[key].rotation, camera.rotation, atol=1e-12)
    np.testing.assert_allclose(back[key].translation, camera.translation, atol=1e-6)
    assert back[key].tangential == camera.tangential


def test_the_flag_and_the_search_order_pick_the_camera_file(synthetic_tiny, tmp_path):
  root = tmp_path / "h36m"
  root.mkdir()
  with pytest.raises(h36m_cameras.CameraFileError) as error:
    h36m_cameras.find(root)
  for name in ("metadata.xml", "cameras.h5", "cameras.json"):
    assert str(root / name) in str(error.value)
  with pytest.raises(h36m_cameras.CameraFileError, match="--h36m_cameras /nowhere/m.xml"):
    h36m_cameras.find(root, "/nowhere/m.xml")
  (root / "cameras.json").write_text("{}")
  assert h36m_cameras.find(root) == str(root / "cameras.json")
  shutil.copy(synthetic_tiny / "h36m/metadata.xml", root)
  assert h36m_cameras.find(root) == str(root / "metadata.xml")  # the release's own file first
  assert h36m_cameras.find(root, str(root / "cameras.json")) == str(root / "cameras.json")
  (root / "metadata.xml").unlink()  # the release's code package unpacked into the root
  (root / "Release-v1.2").mkdir()
  shutil.copy(synthetic_tiny / "h36m/metadata.xml", root / "Release-v1.2")
  assert h36m_cameras.find(root) == str(root / "Release-v1.2/metadata.xml")
  (root / "bad.xml").write_text("<metadata><w0>[1 2 3]</w0></metadata>")
  with pytest.raises(h36m_cameras.CameraFileError, match="w0 holds 3 numbers, expected 300"):
    h36m_cameras.load(root, str(root / "bad.xml"))


# ------------------------------------------------------------ protocol table, skipped takes


@pytest.mark.parametrize(
  "take, action",
  [
    ("Directions 1", "Directions"),
    ("Directions", "Directions"),
    ("TakingPhoto", "Photo"),  # S1's file names
    ("TakingPhoto 1", "Photo"),
    ("Photo 2", "Photo"),
    ("WalkingDog", "WalkDog"),
    ("WalkDog 1", "WalkDog"),
    ("WalkTogether 2", "WalkTogether"),
    ("WalkingTogether", "WalkTogether"),  # metadata.xml's action name
    ("Walking 1", "Walking"),
    ("SittingDown 2", "SittingDown"),
    ("Sitting 1", "Sitting"),
    ("Discussion 3", "Discussion"),  # S5's numbering
    ("_ALL", None),
    ("_ALL 1", None),
    ("Miscellaneous", None),
  ],
)
def test_take_names_map_to_the_15_protocol_actions(take, action):
  assert h36m_protocol.action_of(take) == action
  assert h36m.action_of(take) == action


def test_protocol_subjects_and_actions():
  assert len(h36m_protocol.ACTIONS) == len(set(h36m_protocol.ACTIONS)) == 15
  assert [h36m_protocol.split_of(s) for s in ("S1", "S8", "S9", "S11", "S2")] == [
    "train",
    "train",
    "test",
    "test",
    None,
  ]


def _copy_layout(synthetic_tiny, tmp_path):
  root = tmp_path / "h36m"
  shutil.copytree(synthetic_tiny / "h36m", root)
  return root


def test_takes_outside_the_protocol_are_skipped_and_counted(synthetic_tiny, tmp_path):
  root = _copy_layout(synthetic_tiny, tmp_path)
  pose = "MyPoseFeatures/D3_Positions_mono"
  for camera in cameras.H36M_CAMERA_IDS:  # "_ALL 1" takes beside the protocol's, as released
    for subject in ("S1", "S9"):
      for folder, ext in ((pose, "cdf"), ("MyPoseFeatures/D2_Positions", "cdf"), ("Videos", "mp4")):
        shutil.copy(
          root / subject / folder / f"Walking 1.{camera}.{ext}",
          root / subject / folder / f"_ALL 1.{camera}.{ext}",
        )
  # S11's unnumbered Directions take: poses from every camera, no video from 54138969.
  (root / "S11" / "Videos").mkdir(parents=True)
  (root / "S11" / pose).mkdir(parents=True)
  shutil.copy(
    root / "S9" / pose / "Walking 1.54138969.cdf", root / "S11" / pose / "Directions.54138969.cdf"
  )
  # A protocol take's video without its pose file: lost, not skipped.
  shutil.copy(root / "S1/Videos/Walking 1.54138969.mp4", root / "S1/Videos/Eating 2.54138969.mp4")
  found = h36m.work_items(root, Options(test_frame_stride=64))
  items, bad = found
  # S1 (stride 1): 4 cameras of 10, 9, 10, 9 frames; S9 (stride 64): 4 x frame 0.
  assert found.skipped == {
    "take outside the 15 protocol actions": {"records": 38 + 4, "videos": 8},
    "video absent from the release": {"records": 1, "videos": 1},
  }
  assert not any(i["take"] == "_ALL 1" or i["subject"] == "S11" for i in items)
  assert [(b.file, b.field, b.records, b.split) for b in bad] == [
    ("S1/Videos/Eating 2.54138969.mp4", "D3_Positions_mono", 10, "train")
  ]
  # The missing S11 view is set aside only while the release lacks it: present, it converts.
  shutil.copy(
    root / "S9/Videos/Walking 1.54138969.mp4", root / "S11/Videos/Directions.54138969.mp4"
  )
  items, _ = h36m.work_items(root, Options(test_frame_stride=64))
  assert [(i["subject"], i["take"], i["split"]) for i in items if i["subject"] == "S11"] == [
    ("S11", "Directions", "test")
  ]


def test_a_subject_without_calibration_is_a_dead_letter_naming_the_camera_file(
  synthetic_tiny, tmp_path
):
  root = _copy_layout(synthetic_tiny, tmp_path)
  (root / "S9").rename(root / "S5")  # metadata.xml's w0 holds zeros for S5: no calibration
  items, _ = h36m.work_items(root, Options())
  item = next(i for i in items if i["subject"] == "S5")
  with pytest.raises(BadRecord, match=r"metadata.xml \[S5/\d+\] camera: no calibration"):
    next(h36m.raw_records(root, item, Options()))


def test_no_camera_file_fails_discovery_naming_what_was_searched(synthetic_tiny, tmp_path):
  root = _copy_layout(synthetic_tiny, tmp_path)
  (root / "metadata.xml").unlink()
  with pytest.raises(h36m_cameras.CameraFileError, match="searched .*metadata.xml.*cameras.h5"):
    h36m.work_items(root, Options())


def test_the_converter_refuses_a_root_without_cameras_before_touching_the_output(
  synthetic_tiny, tmp_path
):
  from conftest import convert_dataset

  from beam_preprocess import transforms

  root = _copy_layout(synthetic_tiny, tmp_path)
  (root / "metadata.xml").unlink()
  with pytest.raises(transforms.InputDirError, match="searched .*metadata.xml.*cameras.json"):
    convert_dataset("h36m", root, tmp_path / "out")
  with pytest.raises(transforms.InputDirError, match="--h36m_cameras .*nope.xml: no such file"):
    convert_dataset("h36m", root, tmp_path / "out", f"--h36m_cameras={tmp_path / 'nope.xml'}")
  assert not (tmp_path / "out").exists()


def test_manifest_counts_the_skipped_takes(synthetic_tiny, tmp_path):
  from conftest import convert_dataset

  root = _copy_layout(synthetic_tiny, tmp_path)
  for camera in cameras.H36M_CAMERA_IDS:
    for folder, ext in (
      ("MyPoseFeatures/D3_Positions_mono", "cdf"),
      ("MyPoseFeatures/D2_Positions", "cdf"),
      ("Videos", "mp4"),
    ):
      shutil.copy(
        root / "S9" / folder / f"Walking 1.{camera}.{ext}",
        root / "S9" / folder / f"_ALL.{camera}.{ext}",
      )
  (root / "metadata.xml").rename(tmp_path / "elsewhere.xml")
  manifest = convert_dataset(
    "h36m", root, tmp_path / "out", f"--h36m_cameras={tmp_path / 'elsewhere.xml'}"
  )
  assert manifest["skipped"] == {
    "take outside the 15 protocol actions": {"records": 4, "videos": 4}
  }
  assert sorted(manifest["counts"]["action"]) == ["Directions", "Walking"]
  assert manifest["options"]["h36m_cameras"] == str(tmp_path / "elsewhere.xml")
  assert manifest["splits"]["test"]["records"] == 8


def test_synthetic_take_names_use_the_protocol_table():
  for action in h36m_protocol.ACTIONS:
    for subject in ("S1", "S9"):
      for sub in (1, 2):
        assert h36m_protocol.action_of(synthetic_h36m.take_name(subject, action, sub)) == action
