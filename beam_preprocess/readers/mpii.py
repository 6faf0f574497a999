"""MPII Human Pose: the RELEASE struct with its quirks, and the images.

Formats: docs/datasets.md, MPII Human Pose.

Read as the community does, ``loadmat(struct_as_record=False, squeeze_me=True)``,
then normalised: a squeezed single struct becomes a list of one, an empty or
string ``is_visible`` is read as MPII's CPM convention does (missing = visible),
coordinates move from MATLAB's 1-based pixels to 0-based. Only training images
with annotated people are converted (test images carry no joints), and of those
only people with at least two annotated joints (fewer cannot define a crop).
"""

from __future__ import annotations

import numpy as np

from beam_preprocess import matfile, media, storage
from beam_preprocess.records import BadRecord, CanonicalRecord, Options, check_finite, safe_path
from wild3d_tf import skeletons

DATASET = "mpii"
ANNOTATION_FILE = "mpii_human_pose_v1_u12_1.mat"
# The annotation zip (mpii_human_pose_v1_u12_2.zip) unpacks into a folder of its own name; users
# also move the .mat next to images/. Searched in this order (docs/datasets.md, MPII Human Pose).
ANNOTATION_PATHS = (f"mpii_human_pose_v1_u12_2/{ANNOTATION_FILE}", ANNOTATION_FILE)
# What --input_dir must hold, as globs each matching at least one path (convert checks it first).
EXPECTED_LAYOUT = ("mpii_human_pose_v1_u12_*", "images/*.jpg")


def annotation_path(root) -> str:
  """The first of ``ANNOTATION_PATHS`` present under ``root`` (relative), else the first."""
  found = (p for p in ANNOTATION_PATHS if storage.is_file(storage.join(root, p)))
  return next(found, ANNOTATION_PATHS[0])


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
  """Annotated people of one annolist entry.

  Each person is {"joints": (16, 2) 0-based px with NaN, "visible": (16,)}.
  """
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


def work_items(root, options: Options):
  file = annotation_path(root)
  try:
    release = matfile.load_mat(
      safe_path(root, file, file, "-"),
      file,
      ["RELEASE"],
      options.max_mat_bytes,
      field="RELEASE",
      struct_as_record=False,
      squeeze_me=True,
    )["RELEASE"]
  except BadRecord as error:
    return [], [error]
  except KeyError:
    return [], [BadRecord(file, "-", "RELEASE", "missing variable")]
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
    except BadRecord as error:  # one training image (its people not known: counted as 1)
      bad.append(error.counting(1, "train"))
      continue
    except AttributeError as error:
      bad.append(BadRecord(file, record, "image.name", f"missing field: {error}", 1, "train"))
      continue
    if people:
      items.append(
        {"index": index, "image": name, "people": people, "records": len(people), "split": "train"}
      )
  return items, bad


def raw_records(root, item: dict, options: Options):
  record = f"annolist({item['index'] + 1})"
  image = media.read_image(
    safe_path(root, f"images/{item['image']}", ANNOTATION_FILE, record),
    f"images/{item['image']}",
    record,
    options.max_image_bytes,
  )
  for person in item["people"]:
    yield {"image_name": item["image"], "index": item["index"], "image": image, **person}


def to_record(raw: dict) -> CanonicalRecord:
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
  return CanonicalRecord(
    key=f"{DATASET}/{raw['image_name']}/{raw['rect']}",
    dataset=DATASET,
    split="train",
    subject="",
    sequence=raw["image_name"],
    action="",
    camera="",
    frame=raw["index"],
    image=raw["image"],
    mask=None,
    camera_intrinsics_image_px=None,
    camera_distortion=np.zeros(5),
    joints2d_image_px=skeletons.convert(joints, skeletons.MPII_16, skeletons.POSE2D),
    joints2d_labelled=labelled,
    joints2d_visible=visible & labelled,
    joints3d_camera_mm=None,
    joints3d_univ_camera_mm=None,
  )
