"""Findings of the field-by-field audit of the readers (docs/datasets.md, audit table), each with
the value the dataset's documentation gives."""

import numpy as np
import pytest

from beam_preprocess.readers import h36m, lsp, mpi_inf_3dhp, mpii
from beam_preprocess.records import Options
from wild3d_tf import h36m_protocol

# ------------------------------------------------------------ MPI-INF-3DHP training set


def test_3dhp_frames_per_sequence_are_the_official_table():
  # util/mpii_get_sequence_info: S1/Seq1 6416 frames, S1/Seq2 12430 (50 fps), S8/Seq2 6054.
  assert mpi_inf_3dhp.SEQUENCE_FRAMES[("S1", "Seq1")] == 6416
  assert mpi_inf_3dhp.SEQUENCE_FRAMES[("S1", "Seq2")] == 12430
  assert mpi_inf_3dhp.SEQUENCE_FRAMES[("S8", "Seq2")] == 6054
  assert len(mpi_inf_3dhp.SEQUENCE_FRAMES) == 16  # 8 subjects x 2 sequences
  # README: annotation rows past the last frame have no image; read only the first F rows.
  assert mpi_inf_3dhp.annotated_frames("S1", "Seq1", 6420) == 6416
  assert mpi_inf_3dhp.annotated_frames("S1", "Seq1", 6000) == 6000
  assert mpi_inf_3dhp.annotated_frames("S9", "Seq1", 7) == 7  # not in the table: every row
  # S6/Seq2's camera 2 video holds 3911 frames (isarandi/metrabs); its other cameras 6145.
  assert mpi_inf_3dhp.annotated_frames("S6", "Seq2", 6145, 2) == 3911
  assert mpi_inf_3dhp.annotated_frames("S6", "Seq2", 6145, 1) == 6145


def test_3dhp_annotation_rows_past_the_sequence_are_neither_records_nor_losses(
  synthetic_tiny, monkeypatch
):
  root = synthetic_tiny / "mpi_inf_3dhp"
  # The tiny sequence has 8 annotated frames per camera (videos of cameras 0 and 2); pretend its
  # official frame count is 6, as if 2 rows were annotations past the videos' end.
  monkeypatch.setitem(mpi_inf_3dhp.SEQUENCE_FRAMES, ("S1", "Seq1"), 6)
  items, bad = mpi_inf_3dhp.work_items(root, Options())
  assert bad == []
  assert sum(i["records"] for i in items) == 2 * 6
  assert max(f for i in items for f in i["frames"]) == 5
  raws = [r for i in items for r in mpi_inf_3dhp.raw_records(root, i, Options())]
  assert len(raws) == 12 and all(isinstance(r, dict) for r in raws)  # no dead letters


# ------------------------------------------------------------ flags: labelled versus visible


def test_lsp_flag_is_inverted_and_every_joint_is_labelled():
  # LSP's third row: 1 = occluded (HMR lsp_to_tfrecords negates it); every joint has a position.
  joints = np.array([[11.0, 21.0, 1.0]] * 7 + [[31.0, 41.0, 0.0]] * 7)
  record = lsp.to_record(
    {"index": 0, "count": 2, "image_name": "im0001.jpg", "image": np.zeros((60, 60, 3), np.uint8)}
    | {"joints": joints},
    dataset="lsp",
  )
  assert record.joints2d_labelled.all()
  np.testing.assert_array_equal(record.joints2d_visible, [False] * 7 + [True] * 7)
  np.testing.assert_array_equal(record.joints2d_image_px[7], [30.0, 40.0])  # 1-based -> 0-based


def test_lspet_flag_means_visible_and_is_not_inverted():
  joints = np.array([[11.0, 21.0, 1.0]] * 7 + [[31.0, 41.0, 0.0]] * 7)
  record = lsp.to_record(
    {"index": 0, "count": 2, "image_name": "im00001.jpg", "image": np.zeros((60, 60, 3), np.uint8)}
    | {"joints": joints},
    dataset="lspet",
  )
  assert record.joints2d_labelled.all()
  np.testing.assert_array_equal(record.joints2d_visible, [True] * 7 + [False] * 7)
  assert lsp.split_of("lspet", 9999, 10000) == "train"  # LSPET is training data only
  assert [lsp.split_of("lsp", i, 2000) for i in (0, 999, 1000, 1999)] == [
    "train",
    "train",
    "test",
    "test",
  ]


def test_mpii_coordinates_move_from_1_based_and_absent_joints_are_unlabelled():
  class S:
    def __init__(self, **kw):
      self.__dict__.update(kw)

  points = np.array(
    [S(id=0, x=1.0, y=1.0, is_visible=1), S(id=9, x=101.0, y=51.0, is_visible="0")], dtype=object
  )
  [person] = mpii.people_of(S(annorect=S(annopoints=S(point=points))), "annolist(1)")
  joints = np.asarray(person["joints"])
  np.testing.assert_array_equal(joints[0], [0.0, 0.0])  # MATLAB's first pixel centre (1, 1)
  np.testing.assert_array_equal(joints[9], [100.0, 50.0])
  assert np.isnan(joints[[1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15]]).all()
  assert person["visible"][0] == 1 and person["visible"][9] == 0


# ------------------------------------------------------------ Human3.6M


def test_h36m_train_and_test_subjects_and_test_stride():
  assert h36m_protocol.TRAIN_SUBJECTS == ("S1", "S5", "S6", "S7", "S8")
  assert h36m_protocol.TEST_SUBJECTS == h36m.TEST_SUBJECTS == ("S9", "S11")
  assert h36m_protocol.TEST_FRAME_STRIDE == 64


@pytest.mark.parametrize("subject", ["S2", "S3", "S4", "S10"])
def test_h36m_subjects_without_public_poses_are_outside_the_split(subject):
  assert h36m_protocol.split_of(subject) is None
