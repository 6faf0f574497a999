"""MPII Human Pose: the RELEASE struct with its quirks, and the images (datasets.md 3).

Read as the community does, ``loadmat(struct_as_record=False, squeeze_me=True)``,
then normalised: a squeezed single struct becomes a list of one, an empty or
string ``is_visible`` is read as MPII's CPM convention does (missing = visible),
coordinates move from MATLAB's 1-based pixels to 0-based. Only training images
with annotated people are converted (test images carry no joints), and of those
only people with at least two annotated joints (fewer cannot define a crop).
"""

from __future__ import annotations

import pathlib

import numpy as np
import scipy.io

from beam_preprocess import media
from beam_preprocess.records import BadRecord, Options, check_finite, safe_path
from wild3d_tf import skeletons

DATASET = "mpii"
ANNOTATION_FILE = "mpii_human_pose_v1_u12_1.mat"


def _list(value) -> list:
  if value is None:
    return []
  if isinstance(value, np.ndarray):
    return list(value.ravel())
  return [value]


def _visible(flag) -> int:
  if isinstance(flag, str):
    return int(flag.strip() or 1)
  if isinstance(flag, np.ndarray):
    return 1 if flag.size == 0 else int(flag.ravel()[0])
  return int(flag)


def people_of(entry, record: str) -> list[dict]:
  """Annotated people of one annolist entry as {"joints": (16, 2) 0-based px with NaN, "visible": (16,)}."""
  people = []
  for r, rect in enumerate(_list(getattr(entry, "annorect", None))):
    if not hasattr(rect, "annopoints") or isinstance(rect.annopoints, np.ndarray):
      continue  # test image or an unannotated person: nothing to learn from
    joints = np.full((16, 2), np.nan)
    visible = np.zeros(16, np.int64)
    for point in _list(getattr(rect.annopoints, "point", None)):
      try:
        joint = int(point.id)
        x, y = float(point.x), float(point.y)
      except (AttributeError, TypeError, ValueError) as error:
        raise BadRecord(
          ANNOTATION_FILE, record, "annopoints.point", f"malformed point: {error}"
        ) from None
      if not 0 <= joint < 16:
        raise BadRecord(
          ANNOTATION_FILE, record, "annopoints.point.id", f"joint id {joint} outside 0..15"
        )
      if not (np.isfinite(x) and np.isfinite(y)):  # absent joints are left out, never NaN
        raise BadRecord(
          ANNOTATION_FILE, f"{record}.annorect({r + 1})", "annopoints", "non-finite coordinates"
        )
      joints[joint] = (x - 1.0, y - 1.0)
      visible[joint] = _visible(getattr(point, "is_visible", 1))
    if np.isfinite(joints).all(-1).sum() >= 2:
      people.append({"rect": r, "joints": joints.tolist(), "visible": visible.tolist()})
  return people


def work_items(root: pathlib.Path, options: Options):
  file = ANNOTATION_FILE
  try:
    release = scipy.io.loadmat(
      safe_path(root, file, file, "-"),
      struct_as_record=False,
      squeeze_me=True,
      variable_names=["RELEASE"],
    )["RELEASE"]
  except BadRecord as error:
    return [], [error]
  except Exception as error:  # scipy raises several types for corrupt files
    return [], [BadRecord(file, "-", "RELEASE", f"unreadable MAT file: {error}")]
  for field in ("annolist", "img_train"):
    if field not in release._fieldnames:
      return [], [BadRecord(file, "-", field, "missing field")]
  items, bad = [], []
  train = np.atleast_1d(release.img_train)
  for index, entry in enumerate(np.atleast_1d(release.annolist)):
    if index >= len(train) or not train[index]:
      continue
    record = f"annolist({index + 1})"
    try:
      name = str(entry.image.name)
      people = people_of(entry, record)
    except BadRecord as error:
      bad.append(error)
      continue
    except AttributeError as error:
      bad.append(BadRecord(file, record, "image.name", f"missing field: {error}"))
      continue
    if people:
      items.append({"index": index, "image": name, "people": people})
  return items, bad


def raw_records(root: pathlib.Path, item: dict, options: Options):
  record = f"annolist({item['index'] + 1})"
  image = media.read_image(
    safe_path(root, f"images/{item['image']}", ANNOTATION_FILE, record),
    f"images/{item['image']}",
    record,
  )
  for person in item["people"]:
    yield {"image_name": item["image"], "index": item["index"], "image": image, **person}


def to_record(raw: dict) -> dict:
  record_id = f"annolist({raw['index'] + 1}).annorect({raw['rect'] + 1})"
  joints = np.asarray(raw["joints"], np.float64)
  labelled16 = np.isfinite(joints).all(-1)
  if labelled16.sum() < 2:
    raise BadRecord(
      ANNOTATION_FILE, record_id, "annopoints", f"{labelled16.sum()} labelled joints, need 2"
    )
  check_finite(joints[labelled16], ANNOTATION_FILE, record_id, "annopoints")
  labelled = (
    skeletons.convert(labelled16[:, None].astype(float), skeletons.MPII_16, skeletons.POSE2D)[:, 0]
    > 0
  )
  visible16 = np.asarray(raw["visible"]) > 0
  visible = (
    skeletons.convert(visible16[:, None].astype(float), skeletons.MPII_16, skeletons.POSE2D)[:, 0]
    > 0
  )
  return {
    "key": f"{DATASET}/{raw['image_name']}/{raw['rect']}",
    "dataset": DATASET,
    "split": "train",
    "subject": "",
    "sequence": raw["image_name"],
    "action": "",
    "camera": "",
    "frame": raw["index"],
    "image": raw["image"],
    "mask": None,
    "intrinsics": None,
    "distortion": np.zeros(5),
    "joints2d": skeletons.convert(joints, skeletons.MPII_16, skeletons.POSE2D),
    "labelled": labelled,
    "visible": visible & labelled,
    "joints3d": None,
    "joints3d_univ": None,
  }
