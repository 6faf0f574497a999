"""LSP and LSP-extended: joints.mat and images (datasets.md 4).

LSP stores 3 x 14 x N with flag 1 = occluded (inverted); LSPET 14 x 3 x N with
flag 1 = visible and negative coordinates for unlabelled joints. Both are
1-based MATLAB pixels. LSP's first half is its training split, the second its
test split (1000 / 1000 in the real set); LSPET is training data only.
"""

from __future__ import annotations

import pathlib

import numpy as np
import scipy.io

from beam_preprocess import media
from beam_preprocess.records import BadRecord, Options, check_finite, safe_path

LAYOUTS = {"lsp": ((3, 14), "im{:04d}.jpg"), "lspet": ((14, 3), "im{:05d}.jpg")}


def load_joints(root: pathlib.Path, dataset: str) -> np.ndarray:
  """(N, 14, 3) joints as x, y (1-based), flag, whatever the file's layout."""
  shape, _ = LAYOUTS[dataset]
  try:
    mat = scipy.io.loadmat(
      safe_path(root, "joints.mat", "joints.mat", "-"), variable_names=["joints"]
    )
  except BadRecord:
    raise
  except Exception as error:  # scipy raises several types for corrupt files
    raise BadRecord("joints.mat", "-", "joints", f"unreadable MAT file: {error}") from None
  if "joints" not in mat:
    raise BadRecord("joints.mat", "-", "joints", "missing variable")
  joints = np.asarray(mat["joints"], np.float64)
  if joints.ndim != 3 or joints.shape[:2] != shape:
    raise BadRecord(
      "joints.mat", "-", "joints", f"shape {joints.shape}, expected {shape} x N for {dataset}"
    )
  return joints.transpose(2, 1, 0) if dataset == "lsp" else joints.transpose(2, 0, 1)


def work_items(root: pathlib.Path, options: Options, dataset: str):
  try:
    joints = load_joints(root, dataset)
  except BadRecord as error:
    return [], [error]
  _, pattern = LAYOUTS[dataset]
  return [
    {"index": i, "image": pattern.format(i + 1), "joints": joints[i].tolist(), "count": len(joints)}
    for i in range(len(joints))
  ], []


def raw_records(root: pathlib.Path, item: dict, options: Options):
  record = f"image {item['index'] + 1}"
  image = media.read_image(
    safe_path(root, f"images/{item['image']}", "joints.mat", record),
    f"images/{item['image']}",
    record,
  )
  yield {**item, "image_name": item["image"], "image": image}


def to_record(raw: dict, dataset: str) -> dict:
  record_id = f"image {raw['index'] + 1}"
  joints = check_finite(raw["joints"], "joints.mat", record_id, "joints")
  xy, flag = joints[:, :2] - 1.0, joints[:, 2]
  if dataset == "lsp":
    labelled = np.ones(14, bool)
    visible = flag == 0  # LSP's flag marks occlusion
    split = "train" if raw["index"] < raw["count"] // 2 else "test"
  else:
    labelled = (joints[:, :2] > 0).all(-1)
    visible = (flag == 1) & labelled
    split = "train"
  if labelled.sum() < 2:
    raise BadRecord("joints.mat", record_id, "joints", f"{labelled.sum()} labelled joints, need 2")
  xy[~labelled] = np.nan
  return {
    "key": f"{dataset}/{raw['image_name']}",
    "dataset": dataset,
    "split": split,
    "subject": "",
    "sequence": raw["image_name"],
    "action": "",
    "camera": "",
    "frame": raw["index"],
    "image": raw["image"],
    "mask": None,
    "intrinsics": None,
    "distortion": np.zeros(5),
    "joints2d": xy,
    "labelled": labelled,
    "visible": visible,
    "joints3d": None,
    "joints3d_univ": None,
  }
