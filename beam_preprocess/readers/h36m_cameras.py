"""Human3.6M camera parameters from the files users hold them in.

The release has no camera file beside the poses and videos: the parameters are
the ``w0`` vector of ``metadata.xml``, shipped with the release's code
(code-v1.2.zip). Users also hold them as 3d-pose-baseline's ``cameras.h5`` or as
a JSON of VideoPose3D's published values. ``find`` picks the file (the
``--h36m_cameras`` flag, else the first of ``SEARCHED`` in the input root) and
``load`` decodes it into ``{(subject, camera id): wild3d_tf.cameras.Camera}``;
every format goes through ``wild3d_tf.cameras.h36m_camera``. Layouts, with
sources, in docs/datasets.md (Human3.6M cameras):

* metadata.xml: element ``w0``, 300 numbers in brackets
  (``wild3d_tf.cameras.camera_from_h36m_w0`` gives the layout); element
  ``dbcameras/index2id``, where present, lists the camera ids in w0's order.
* cameras.h5: ``subject<s>/camera<c>/{R, T, f, c, k, p, Name}`` for s in 1..11
  and c in 1..4, written from MATLAB, so ``R`` is stored transposed (the
  world-to-camera R is its transpose); T (3, 1) camera centre in mm; f, c (2, 1)
  pixels; k (3, 1); p (2, 1) as (p1, p2); Name the camera id's character codes.
* JSON: ``intrinsic`` (a list of 4 entries in camera order, as VideoPose3D's
  ``h36m_cameras_intrinsic_params``, or a mapping camera id -> entry) and
  ``extrinsic`` (subject -> list of 4 or camera id -> entry, as
  ``h36m_cameras_extrinsic_params``; VideoPose3D's own names are accepted too).
  ``orientation`` is the camera-to-world quaternion (w, x, y, z);
  ``translation`` the camera centre in mm (VideoPose3D divides by 1000 only
  when it loads them); ``tangential_distortion`` lists (p2, p1).
"""

from __future__ import annotations

import functools
import json
import os
import xml.etree.ElementTree as ElementTree

import numpy as np

from beam_preprocess import matfile, storage
from beam_preprocess.records import Options
from wild3d_tf import cameras

# Looked for in the input root, in this order, when --h36m_cameras is not given.
SEARCHED = (
  "metadata.xml",
  "Release-v1.2/metadata.xml",  # the release's code package unpacked into the root
  "Release-v1.1/metadata.xml",
  "cameras.h5",
  "cameras.json",
)
# VideoPose3D's variable names, accepted as JSON keys beside "intrinsic" / "extrinsic".
_JSON_KEYS = {
  "intrinsic": ("intrinsic", "h36m_cameras_intrinsic_params"),
  "extrinsic": ("extrinsic", "h36m_cameras_extrinsic_params"),
}
# A camera of H3.6M stands about 5 m from the world origin: a centre nearer than this (in mm)
# means metres (VideoPose3D's values after its loader divided them by 1000).
_MIN_CENTER_MM = 100.0

Cameras = dict  # (subject "S1", camera id "54138969") -> cameras.Camera


class CameraFileError(ValueError):
  """No camera file, or one that cannot be decoded; the message names the file and the field."""


def find(root: os.PathLike | str, override: str = "") -> str:
  """The camera file's path (local or URL, ``storage``): ``override`` (--h36m_cameras) if given,
  else the first of ``SEARCHED`` in ``root``. Raises CameraFileError naming everything searched
  when there is none."""
  if override:
    if not storage.is_file(override):
      raise CameraFileError(f"--h36m_cameras {override}: no such file")
    return str(override)
  for name in SEARCHED:
    if storage.is_file(storage.join(root, name)):
      return storage.join(root, name)
  searched = ", ".join(storage.join(root, n) for n in SEARCHED)
  raise CameraFileError(
    f"no Human3.6M camera parameters: searched {searched}; "
    "copy metadata.xml from the release's code (code-v1.2.zip) into the input folder, or pass "
    "--h36m_cameras PATH (metadata.xml, 3d-pose-baseline's cameras.h5 or a JSON of "
    "VideoPose3D's camera values)"
  )


def load(
  root: os.PathLike | str, override: str = "", max_bytes: int = Options.max_mat_bytes
) -> tuple[str, Cameras]:
  """(file, cameras) of the camera file ``find`` picks; raises CameraFileError."""
  path = find(root, override)
  resolved, size, changed = storage.version(path)
  return path, _load_cached(resolved, size, changed, max_bytes)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, size: int, changed: float, max_bytes: int) -> Cameras:
  # Keyed on size and last change too: a file replaced between runs in one process is read again.
  del changed
  if size > max_bytes:
    raise CameraFileError(f"{path}: {size} bytes, over the limit of {max_bytes} (--max_mat_bytes)")
  suffix = os.path.splitext(storage.name(path))[1].lower()
  if suffix == ".xml":
    return read_metadata_xml(path)
  if matfile.is_hdf5(path):
    return read_cameras_h5(path, max_bytes)
  if suffix == ".json":
    return read_videopose3d_json(path)
  raise CameraFileError(f"{path}: not metadata.xml, an HDF5 cameras.h5 or a .json file")


def read_metadata_xml(path) -> Cameras:
  """The cameras of every subject with a calibration in metadata.xml's ``w0``.

  A subject whose 6 extrinsic numbers are all zero has none. Raises
  CameraFileError naming the file and the element.
  """
  try:
    with storage.source(path) as readable:
      tree = ElementTree.parse(readable)
  except (ElementTree.ParseError, OSError) as error:
    raise CameraFileError(f"{path}: not readable XML: {error}") from None
  element = next(tree.getroot().iter("w0"), None)
  if element is None or not (element.text or "").strip():
    raise CameraFileError(f"{path}: no w0 element (the camera parameters of metadata.xml)")
  text = element.text.strip()
  if text.startswith("[") and text.endswith("]"):
    text = text[1:-1]
  try:
    w0 = np.array([float(v) for v in text.replace(",", " ").split()], np.float64)
  except ValueError as error:
    raise CameraFileError(f"{path}: w0: {error}") from None
  if w0.shape != (cameras.H36M_W0_LENGTH,) or not np.isfinite(w0).all():
    raise CameraFileError(
      f"{path}: w0 holds {w0.size} numbers{'' if np.isfinite(w0).all() else ' (not all finite)'}, "
      f"expected {cameras.H36M_W0_LENGTH} finite ones"
    )
  ids = _index2id(tree, path)
  out = {}
  for subject in range(1, cameras.H36M_W0_SUBJECTS + 1):
    for index, camera_id in enumerate(ids):
      start, _ = cameras.h36m_w0_offsets(subject, index)
      if not w0[start : start + 6].any():
        continue
      camera = cameras.camera_from_h36m_w0(w0, subject, index)
      out[(f"S{subject}", camera_id)] = _checked(
        camera, path, f"w0 (S{subject}, camera {camera_id})"
      )
  return out


def _index2id(tree: ElementTree.ElementTree, path) -> tuple[str, ...]:
  """Camera ids in w0's order: ``dbcameras/index2id`` where the file has it."""
  element = tree.getroot().find(".//dbcameras/index2id")
  if element is None:
    return cameras.H36M_CAMERA_IDS
  ids = tuple((child.text or "").strip() for child in element)
  if sorted(ids) != sorted(cameras.H36M_CAMERA_IDS):
    raise CameraFileError(
      f"{path}: dbcameras/index2id lists {ids}, expected the ids {cameras.H36M_CAMERA_IDS}"
    )
  return ids


def read_cameras_h5(path, max_bytes: int = Options.max_mat_bytes) -> Cameras:
  """The cameras of 3d-pose-baseline's cameras.h5 (every ``subject<s>`` group it holds).

  Raises CameraFileError naming the file and the dataset.
  """
  import h5py  # only this format needs it

  try:
    with storage.source(path) as readable, h5py.File(readable, "r") as f:
      groups = [(name, sorted(f[name])) for name in sorted(f) if isinstance(f[name], h5py.Group)]
  except OSError as error:
    raise CameraFileError(f"{path}: unreadable HDF5 file: {error}") from None
  out = {}
  fields = ("R", "T", "f", "c", "k", "p", "Name")
  for group, members in groups:
    if not group.startswith("subject"):
      continue
    subject = f"S{group[len('subject') :]}"
    for member in members:
      names = [f"{group}/{member}/{field}" for field in fields]
      try:
        values = matfile.read_hdf5(path, str(path), names, max_bytes)
      except Exception as error:  # BadRecord: missing, linked outside, too large
        raise CameraFileError(f"{path}: {error}") from None
      r, center, focal, principal, radial, tangential, name = (values[n] for n in names)
      where = f"{group}/{member}"
      _shape(path, where, "R", r, 9)
      for field, value, size in (
        ("T", center, 3),
        ("f", focal, 2),
        ("c", principal, 2),
        ("k", radial, 3),
        ("p", tangential, 2),
      ):
        _shape(path, where, field, value, size)
      camera_id = "".join(chr(int(v)) for v in name.reshape(-1))
      if camera_id not in cameras.H36M_CAMERA_IDS:
        raise CameraFileError(f"{path}: {where}/Name is {camera_id!r}, not an H3.6M camera id")
      camera = cameras.h36m_camera(
        r.reshape(3, 3).T,  # stored transposed (written from MATLAB)
        center.reshape(3),
        focal.reshape(2),
        principal.reshape(2),
        radial.reshape(3),
        tangential.reshape(2),
        name=camera_id,
      )
      out[(subject, camera_id)] = _checked(camera, path, where)
  if not out:
    raise CameraFileError(f"{path}: no subject<s>/camera<c> groups (3d-pose-baseline's layout)")
  return out


def _shape(path, where, field, value, size):
  if value.size != size or not np.isfinite(value).all():
    raise CameraFileError(
      f"{path}: {where}/{field} has shape {value.shape}, expected {size} finite numbers"
    )


def read_videopose3d_json(path) -> Cameras:
  """The cameras of a JSON holding VideoPose3D's published values (either structure above).

  Subjects with empty entries (VideoPose3D's S2-S4) have none. Raises
  CameraFileError naming the file and the entry.
  """
  try:
    data = json.loads(storage.read_text(path))
  except (OSError, ValueError) as error:
    raise CameraFileError(f"{path}: not readable JSON: {error}") from None
  if not isinstance(data, dict):
    raise CameraFileError(f"{path}: expected an object with intrinsic and extrinsic entries")
  found = {}
  for part, keys in _JSON_KEYS.items():
    key = next((k for k in keys if k in data), None)
    if key is None:
      raise CameraFileError(f"{path}: no {' or '.join(keys)} entry")
    found[part] = data[key]
  intrinsic = _by_camera(found["intrinsic"], path, "intrinsic")
  if not isinstance(found["extrinsic"], dict):
    raise CameraFileError(f"{path}: extrinsic must map subjects to their cameras")
  out = {}
  for subject, entries in found["extrinsic"].items():
    for camera_id, entry in _by_camera(entries, path, f"extrinsic/{subject}").items():
      if not entry:
        continue
      where = f"extrinsic/{subject}/{camera_id}"
      if camera_id not in intrinsic:
        raise CameraFileError(f"{path}: {where} has no intrinsic entry for camera {camera_id}")
      try:
        out[(str(subject), camera_id)] = _checked(
          cameras.h36m_json_to_camera(intrinsic[camera_id], entry, camera_id), path, where
        )
      except (KeyError, TypeError, ValueError) as error:
        raise CameraFileError(f"{path}: {where}: missing or malformed {error}") from None
  return out


def _by_camera(entries, path, where: str) -> dict:
  """Camera id -> entry of a list in camera order (VideoPose3D) or of a mapping by id."""
  if isinstance(entries, list):
    if len(entries) != len(cameras.H36M_CAMERA_IDS):
      raise CameraFileError(f"{path}: {where} lists {len(entries)} cameras, expected 4")
    out = {}
    for index, entry in enumerate(entries):
      camera_id = str(entry.get("id", cameras.H36M_CAMERA_IDS[index])) if entry else ""
      out[camera_id or cameras.H36M_CAMERA_IDS[index]] = entry
    return out
  if isinstance(entries, dict):
    return {str(k): v for k, v in entries.items()}
  raise CameraFileError(f"{path}: {where} is neither a list nor a mapping of cameras")


def _checked(camera: cameras.Camera, path, where: str) -> cameras.Camera:
  """``camera`` if its values are plausible for H3.6M, else CameraFileError naming ``where``."""
  k = camera.intrinsics
  center = -camera.rotation.T @ camera.translation
  if not (np.isfinite(k).all() and k[0, 0] > 0 and k[1, 1] > 0):
    raise CameraFileError(f"{path}: {where}: focal length {k[0, 0]}, {k[1, 1]} not positive")
  if not np.allclose(camera.rotation @ camera.rotation.T, np.eye(3), atol=1e-6):
    raise CameraFileError(f"{path}: {where}: rotation is not orthonormal")
  if not np.linalg.norm(center) >= _MIN_CENTER_MM:
    raise CameraFileError(
      f"{path}: {where}: camera centre {np.round(center, 3).tolist()} is within "
      f"{_MIN_CENTER_MM:.0f} mm of the origin: translations must be in mm (VideoPose3D's "
      "published values, not its loader's metres)"
    )
  return camera
