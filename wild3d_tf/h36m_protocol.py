"""Human3.6M's evaluation protocol as the community uses it, and the release's naming quirks.

The one table that turns a release take name (``Directions 1``, S1's ``TakingPhoto``, ``_ALL 1``)
into one of the 15 protocol actions, or into nothing: the converter (beam_preprocess.readers.h36m)
and the synthetic generator (wild3d_tf.synthetic.h36m) both use it. Sources for every entry are in
docs/datasets.md (Human3.6M).
"""

from __future__ import annotations

import re

# The 15 actions of the protocol, spelt as VideoPose3D canonicalises them (Photo, WalkDog).
ACTIONS = (
  "Directions",
  "Discussion",
  "Eating",
  "Greeting",
  "Phoning",
  "Photo",
  "Posing",
  "Purchases",
  "Sitting",
  "SittingDown",
  "Smoking",
  "Waiting",
  "WalkDog",
  "Walking",
  "WalkTogether",
)
# Other spellings of a protocol action: S1's file names say TakingPhoto and WalkingDog;
# metadata.xml's action names say TakingPhoto, WalkingDog and WalkingTogether.
ALIASES = {
  "TakingPhoto": "Photo",
  "WalkingDog": "WalkDog",
  "WalkingTogether": "WalkTogether",
}
# The community split (3d-pose-baseline, VideoPose3D): S1, S5-S8 train; S9, S11 test.
TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
# Every 64th frame of each test video (the paper's protocol; h36m-fetch, Sun et al.).
TEST_FRAME_STRIDE = 64
# (subject, take, camera) whose video the release lacks although its pose files exist: S11's
# unnumbered "Directions" take has no video from camera 54138969 (VideoPose3D drops the take;
# learnable-triangulation and pytorch-pose-hg-3d report the view missing).
MISSING_VIDEOS = {("S11", "Directions", "54138969")}
# Takes whose ground truth is reported shifted against the video (learnable-triangulation's
# "damaged actions", which it leaves out of its test set by default). wild3d converts them, as
# VideoPose3D and 3d-pose-baseline do, so that test numbers stay comparable with the literature.
DAMAGED_TAKES = {("S9", "Greeting"), ("S9", "SittingDown 1"), ("S9", "Waiting 1")}
# Why a take is set aside (the manifest's "skipped" counts records under these reasons).
SKIP_NOT_PROTOCOL = "take outside the 15 protocol actions"
SKIP_MISSING_VIDEO = "video absent from the release"
SKIP_NOT_PROTOCOL_SUBJECT = "subject outside the protocol's train and test subjects"

_NUMBERED = re.compile(r"^(?P<name>.*?)(?:\s+\d+)?$")


def action_of(take: str) -> str | None:
  """The protocol action of a take name, or None for a take outside the protocol.

  'Directions 1' -> 'Directions'; S1's 'TakingPhoto' -> 'Photo'; 'WalkingDog 2' -> 'WalkDog';
  '_ALL' and '_ALL 1' (and any other name) -> None.
  """
  name = _NUMBERED.match(take.strip()).group("name")
  name = ALIASES.get(name, name)
  return name if name in ACTIONS else None


def split_of(subject: str) -> str | None:
  """'train' for S1, S5-S8, 'test' for S9, S11, None for the others (S2-S4, S10: no poses)."""
  if subject in TRAIN_SUBJECTS:
    return "train"
  if subject in TEST_SUBJECTS:
    return "test"
  return None


def subject_number(subject: str) -> int:
  """'S11' -> 11; ValueError for a name that is not S<number>."""
  match = re.fullmatch(r"S(\d+)", subject)
  if not match:
    raise ValueError(f"{subject!r} is not a Human3.6M subject name (S1 ... S11)")
  return int(match.group(1))
