"""Video work items: frame ranges, image and mask decoded in step, and losses counted in records."""

import json
import pathlib
import shutil

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
import cdflib
from conftest import convert_dataset as _convert
import h5py
import numpy as np
import pytest
import scipy.io

from beam_preprocess import media, transforms
from beam_preprocess.readers import h36m, mpi_inf_3dhp, mpi_inf_3dhp_test
from beam_preprocess.records import Options
from wild3d_tf.synthetic import formats


def _rows(path):
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


# ------------------------------------------------------------ frame ranges and bounded memory


def test_frame_ranges_split_the_strided_frames_in_order():
  assert media.frame_ranges(10, 3, 2) == [[0, 3], [6, 9]]
  assert media.frame_ranges(5, 1, 2) == [[0, 1], [2, 3], [4]]
  assert media.frame_ranges(0, 1, 250) == []
  with pytest.raises(ValueError, match="frames_per_item 0"):
    media.frame_ranges(5, 1, 0)


def _long_3dhp(synthetic_tiny, root, frames, side=96):
  """S1/Seq1 of ``frames`` frames: frame t's image is grey level 2t, its mask lights column 2t."""
  source, seq = synthetic_tiny / "mpi_inf_3dhp/S1/Seq1", root / "S1/Seq1"
  seq.mkdir(parents=True)
  shutil.copy(source / "camera.calibration", seq)
  mat = scipy.io.loadmat(source / "annot.mat")
  cells = {}
  for field in ("annot2", "annot3", "univ_annot3"):
    cells[field] = np.empty((14, 1), object)
    for c in range(14):
      cells[field][c, 0] = np.tile(np.asarray(mat[field][c, 0])[:1], (frames, 1))
  formats.savemat(seq / "annot.mat", cells)
  with (
    formats.VideoWriter(seq / "imageSequence/video_0.avi", 25.0, (side, side)) as video,
    formats.VideoWriter(seq / "FGmasks/video_0.avi", 25.0, (side, side)) as masks,
  ):
    for t in range(frames):
      video.write(np.full((side, side, 3), 2 * t, np.uint8))
      mask = np.zeros((side, side, 3), np.uint8)
      mask[:, 2 * t : 2 * t + 2, 0] = 255
      masks.write(mask)
  return root


def test_3dhp_reader_decodes_image_and_mask_in_step(synthetic_tiny, tmp_path, monkeypatch):
  """The twin of a 2048 px, 13,000-frame video: frames decoded before their record is handed
  on stay at 0 (the old reader decoded the whole mask video before its first record)."""
  root = _long_3dhp(synthetic_tiny, tmp_path / "mpi_inf_3dhp", frames=40)
  decoded = []
  original = media.read_video_frames

  def counting(path, frames, file):
    for out in original(path, frames, file):
      decoded.append(file)
      yield out

  monkeypatch.setattr(media, "read_video_frames", counting)
  ahead = []
  item = {"subject": "S1", "sequence": "Seq1", "camera": 0}  # the whole video in one item
  for n, raw in enumerate(mpi_inf_3dhp.raw_records(root, item, Options()), start=1):
    ahead.append(len(decoded) - 2 * n)  # an image and a mask frame per record handed on
    t = raw["frame"]
    assert abs(int(raw["image"][..., 1].mean()) - 2 * t) <= 2  # MJPG is lossy
    assert np.argmax(raw["mask"][..., 0].sum(0)) in (2 * t, 2 * t + 1)  # the same frame's mask
  assert n == 40 and max(ahead) == 0


def test_3dhp_work_items_are_frame_ranges_that_seek_image_and_mask(synthetic_tiny, tmp_path):
  root = _long_3dhp(synthetic_tiny, tmp_path / "mpi_inf_3dhp", frames=40)
  items, bad = mpi_inf_3dhp.work_items(root, Options(frames_per_item=16, frame_stride=3))
  assert not bad
  assert [(i["frames"], i["records"], i["split"]) for i in items] == [
    (list(range(0, 40, 3)), 14, "train")
  ]
  items, _ = mpi_inf_3dhp.work_items(root, Options(frames_per_item=16))
  assert [(i["frames"][0], i["frames"][-1], i["records"]) for i in items] == [
    (0, 15, 16),
    (16, 31, 16),
    (32, 39, 8),
  ]
  for item in items:
    for raw in mpi_inf_3dhp.raw_records(root, item, Options(frames_per_item=16)):
      t = raw["frame"]
      assert abs(int(raw["image"][..., 1].mean()) - 2 * t) <= 2, t  # seeks land on the frame
      assert np.argmax(raw["mask"][..., 0].sum(0)) in (2 * t, 2 * t + 1), t


@pytest.mark.parametrize("dataset", ["h36m", "mpi_inf_3dhp"])
def test_small_frame_ranges_give_the_same_shards(dataset, converted_tiny, synthetic_tiny, tmp_path):
  out, manifests = converted_tiny
  folder = synthetic_tiny / dataset  # both native folders carry the dataset's name
  items, _ = transforms.READERS[dataset][0](folder, Options(frames_per_item=3))
  assert max(len(i["frames"]) for i in items) == 3
  assert (
    sum(i["records"] for i in items if i["split"] == "train")
    == (manifests[dataset]["splits"]["train"]["records"])
  )
  manifest = _convert(dataset, folder, tmp_path, "--frames_per_item=3")
  for split, entry in manifest["splits"].items():
    assert entry["records"] == manifests[dataset]["splits"][split]["records"]
    for shard in entry["shards"]:  # seeking to frames 3, 6, 9 decodes the same images
      name = f"{dataset}/{shard['file']}"  # <root>/<dataset>/<shard>
      assert (tmp_path / name).read_bytes() == (out / name).read_bytes()


# ------------------------------------------------------------ losses counted in records


def _h36m_copy(synthetic_tiny, tmp_path):
  root = tmp_path / "h36m"
  shutil.copytree(synthetic_tiny / "h36m", root)
  return root


def _frames_of(root, video):
  """Frames the pose files give a take (the records its video would yield)."""
  subject = video.relative_to(root).parts[0]
  mono = root / subject / "MyPoseFeatures/D3_Positions_mono" / video.with_suffix(".cdf").name
  return cdflib.CDF(str(mono)).varget("Pose").shape[1]


def test_two_lost_videos_fail_the_job_with_their_frames_counted(synthetic_tiny, tmp_path):
  root = _h36m_copy(synthetic_tiny, tmp_path)
  items, _ = h36m.work_items(root, Options(test_frame_stride=64))
  expected = sum(i["records"] for i in items if i["split"] == "train")
  videos = sorted((root / "S1/Videos").glob("*.mp4"))[:2]
  lost = sum(_frames_of(root, v) for v in videos)
  for video in videos:
    video.unlink()
  test = sum(i["records"] for i in items if i["split"] == "test")
  message = (
    f"{lost} of {expected + test} records rejected, over the budget of 5.0% "
    f"(train: {lost} lost, {expected - lost} written of {expected} expected; 2 dead-letter rows"
  )
  with pytest.raises(Exception, match=message.replace("(", r"\(").replace(".", r"\.")):
    _convert("h36m", root, tmp_path / "out")
  assert not (tmp_path / "out/h36m.manifest.json").exists()
  rows = _rows(tmp_path / "out/h36m.dead_letter.jsonl")
  assert sorted((r["file"], r["records"], r["split"]) for r in rows) == sorted(
    (str(v.relative_to(root)), _frames_of(root, v), "train") for v in videos
  )


def test_a_lost_video_within_budget_shows_expected_vs_written(synthetic_tiny, tmp_path):
  root = _h36m_copy(synthetic_tiny, tmp_path)
  video = sorted((root / "S1/Videos").glob("*.mp4"))[0]
  frames = _frames_of(root, video)
  full, _ = h36m.work_items(root, Options(test_frame_stride=64))
  expected = {s: sum(i["records"] for i in full if i["split"] == s) for s in ("train", "test")}
  video.unlink()
  manifest = _convert(
    "h36m", root, tmp_path / "out", "--frames_per_item=4", "--max_rejected_fraction=0.2"
  )
  train, test = manifest["splits"]["train"], manifest["splits"]["test"]
  assert (train["expected"], train["records"], train["rejected"]) == (
    expected["train"],
    expected["train"] - frames,
    frames,
  )
  assert (test["expected"], test["records"], test["rejected"]) == (expected["test"],) * 2 + (0,)
  assert manifest["rejected"]["total"] == frames and manifest["rejected"]["rows"] == 3
  rows = _rows(tmp_path / "out/h36m.dead_letter.jsonl")
  # one row per lost frame range of 4, each saying how many records it lost
  ranges = media.frame_ranges(frames, 1, 4)
  assert sorted((r["record"], r["records"]) for r in rows) == sorted(
    (f"frames {r[0]}-{r[-1]}", len(r)) for r in ranges
  )


def test_lost_records_reach_the_beam_counters(synthetic_tiny, tmp_path):
  root = _h36m_copy(synthetic_tiny, tmp_path)
  video = sorted((root / "S1/Videos").glob("*.mp4"))[0]
  video.unlink()
  items, _ = h36m.work_items(root, Options(test_frame_stride=64))
  pipeline = BeamTestPipeline()
  _ = (
    pipeline
    | beam.Create(items)
    | beam.ParDo(
      transforms.ReadAndEncode("h36m", str(root), Options(test_frame_stride=64))
    ).with_outputs(transforms.DEAD, main="records")
  )
  result = pipeline.run()
  result.wait_until_finish()
  counters = {
    c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter())["counters"]
  }
  total = sum(i["records"] for i in items)
  assert counters["rejected"] == _frames_of(root, video) and counters["lost_items"] == 1
  assert counters["records"] == total - counters["rejected"]


def test_a_pose_file_shorter_than_its_item_counts_the_shortfall(synthetic_tiny, tmp_path):
  root = _h36m_copy(synthetic_tiny, tmp_path)
  d2 = sorted((root / "S1/MyPoseFeatures/D2_Positions").glob("*.cdf"))[0]
  pose = cdflib.CDF(str(d2)).varget("Pose")[0]
  formats.write_cdf(d2, pose[:-3])  # three frames fewer than the D3 mono file says
  item = next(
    i
    for i in h36m.work_items(root, Options())[0]
    if f"{i['take']}.{i['camera']}.cdf" == d2.name and i["subject"] == "S1"
  )
  convert = transforms.ReadAndEncode("h36m", str(root), Options())
  convert.setup()  # what a Beam worker calls before the first bundle
  outputs = list(convert.process(item))
  dead = [o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
  assert len(outputs) - len(dead) == len(pose) - 3
  assert [(r["field"], r["records"], r["split"]) for r in dead] == [("records", 3, "train")]
  assert f"gave {len(pose) - 3} of the {len(pose)} records" in dead[0]["reason"]


def test_a_broken_3dhp_test_annotation_counts_its_frames(synthetic_tiny, tmp_path):
  root = tmp_path / "mpi_inf_3dhp_test_set"
  shutil.copytree(synthetic_tiny / "mpi_inf_3dhp_test_set", root)
  with h5py.File(root / "TS1/annot_data.mat", "r") as f:
    valid = int((f["valid_frame"][()] > 0).sum())
  items, bad = mpi_inf_3dhp_test.work_items(root, Options())
  assert [i["records"] for i in items if i["sequence"] == "TS1"] == [valid] and not bad
  (root / "TS1/annot_data.mat").write_bytes(b"\0" * 1024)
  jpegs = len(list((root / "TS1/imageSequence").glob("img_*.jpg")))
  items, bad = mpi_inf_3dhp_test.work_items(root, Options())
  assert "TS1" not in {i["sequence"] for i in items}
  assert [(e.file, e.records, e.split) for e in bad] == [("TS1/annot_data.mat", jpegs, "test")]
  assert transforms.expected_records(items, bad)["test"] == jpegs + sum(i["records"] for i in items)
