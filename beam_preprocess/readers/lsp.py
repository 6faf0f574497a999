"""LSP and LSP-extended: joints.mat and images (docs/datasets.md, LSP and LSP-extended).

LSP stores 3 x 14 x N with flag 1 = occluded (inverted); LSPET 14 x 3 x N with
flag 1 = visible and negative coordinates for unlabelled joints. Both are
1-based MATLAB pixels. LSP's first half is its training split, the second its
test split (1000 / 1000 in the real set); LSPET is training data only.
"""

from __future__ import annotations

import numpy as np

from beam_preprocess import matfile, media, storage
from beam_preprocess.records import BadRecord, CanonicalRecord, Options, check_finite, safe_path

# What --input_dir must hold, as globs each matching at least one path (convert checks it first).
EXPECTED_LAYOUT = ("joints.mat", "images/im*.jpg")
LAYOUTS = {"lsp": ((3, 14), "im{:04d}.jpg"), "lspet": ((14, 3), "im{:05d}.jpg")}


def load_joints(root, dataset: str, max_bytes: int = matfile.MAX_MAT_BYTES) -> np.ndarray:
  """(N, 14, 3) joints as x, y (1-based), flag, whatever the file's layout; BadRecord naming
  joints.mat when it is missing, unreadable, of another layout or declares over ``max_bytes``."""
  shape, _ = LAYOUTS[dataset]
  mat = matfile.load_mat(
    safe_path(root, "joints.mat", "joints.mat", "-"),
    "joints.mat",
    ["joints"],
    max_bytes,
    field="joints",
  )
  if "joints" not in mat:
    raise BadRecord("joints.mat", "-", "joints", "missing variable")
  joints = np.asarray(mat["joints"], np.float64)
  if joints.ndim != 3 or joints.shape[:2] != shape:
    raise BadRecord(
      "joints.mat", "-", "joints", f"shape {joints.shape}, expected {shape} x N for {dataset}"
    )
  return joints.transpose(2, 1, 0) if dataset == "lsp" else joints.transpose(2, 0, 1)


def split_of(dataset: str, index: int, count: int) -> str:
  """LSP: the first half of its ``count`` images is "train", the rest "test"; LSPET: "train"."""
  return "train" if dataset != "lsp" or index < count // 2 else "test"


def work_items(root, options: Options, dataset: str):
  """One item per image (``records`` 1, its ``split``); an unreadable joints.mat is one dead
  letter standing for every image in images/."""
  try:
    joints = load_joints(root, dataset, options.max_mat_bytes)
  except BadRecord as error:
    return [], [error.counting(len(storage.glob(root, "images/im*.jpg")), "")]
  _, pattern = LAYOUTS[dataset]
  return [
    {
      "index": i,
      "image": pattern.format(i + 1),
      "joints": joints[i].tolist(),
      "count": len(joints),
      "records": 1,
      "split": split_of(dataset, i, len(joints)),
    }
    for i in range(len(joints))
  ], []


def raw_records(root, item: dict, options: Options):
  record = f"image {item['index'] + 1}"
  image = media.read_image(
    safe_path(root, f"images/{item['image']}", "joints.mat", record),
    f"images/{item['image']}",
    record,
    options.max_image_bytes,
  )
  yield {**item, "image_name": item["image"], "image": image}


def to_record(raw: dict, dataset: str) -> CanonicalRecord:
  record_id = f"image {raw['index'] + 1}"
  joints = check_finite(raw["joints"], "joints.mat", record_id, "joints")
  xy, flag = joints[:, :2] - 1.0, joints[:, 2]
  if dataset == "lsp":
    labelled = np.ones(14, bool)
    visible = flag == 0  # LSP's flag marks occlusion
  else:
    labelled = (joints[:, :2] > 0).all(-1)
    visible = (flag == 1) & labelled
  if labelled.sum() < 2:
    raise BadRecord("joints.mat", record_id, "joints", f"{labelled.sum()} labelled joints, need 2")
  xy[~labelled] = np.nan
  return CanonicalRecord(
    key=f"{dataset}/{raw['image_name']}",
    dataset=dataset,
    split=split_of(dataset, raw["index"], raw["count"]),
    subject="",
    sequence=raw["image_name"],
    action="",
    camera="",
    frame=raw["index"],
    image=raw["image"],
    mask=None,
    camera_intrinsics_image_px=None,
    camera_distortion=np.zeros(5),
    joints2d_image_px=xy,
    joints2d_labelled=labelled,
    joints2d_visible=visible,
    joints3d_camera_mm=None,
    joints3d_univ_camera_mm=None,
  )
