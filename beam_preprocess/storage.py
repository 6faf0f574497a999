"""Every file the converter lists, checks, opens and writes, local or in cloud storage.

One small layer over Apache Beam's ``FileSystems``, so that ``--input_dir`` and ``--output_dir``
may be local folders or URLs of any filesystem Beam knows (``gs://bucket/...`` once
google-cloud-storage is installed: ``pip install wild3d[gcp]``). The readers
(``beam_preprocess/readers``), ``matfile``, ``media``, the input checks of ``transforms`` and
the writers of ``sharding`` touch files only through it.

Paths are strings. A URL (a path with a scheme, ``FileSystems.get_scheme``) is joined with
``/`` and never goes through pathlib, which turns ``gs://b/x`` into ``gs:/b/x``; every
operation on it goes through ``FileSystems``. A local path goes to the operating system as
before (pathlib's glob, symlinks resolved when checking that a path stays inside the root).
Object stores have no folders: a "folder" there is the prefix of the objects under it.

Libraries get what they take (docs/storage.md gives the sources): ``source`` hands a local
path or, for a URL, a seekable file object, which ``scipy.io.loadmat``, ``h5py.File`` and
``cv2.VideoCapture(file, cv2.CAP_FFMPEG, [])`` read; images are read as bytes; ``local_copy``
spools a URL into a temporary local file of at most ``max_bytes`` for a library that needs a
path (cdflib).
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import hashlib
import os
import pathlib
import shutil
import tempfile
from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

_CHUNK = 1 << 20  # bytes per read when copying or hashing


class FileTooLarge(OSError):
  """A file over the size a caller allows (``local_copy``); the message names it and the limit."""


def is_url(path) -> bool:
  """Whether ``path`` names a file of a filesystem Beam reaches by scheme (``gs://...``)."""
  return FileSystems.get_scheme(str(path)) is not None


def join(base, *parts: str) -> str:
  """``base/part/...``: os.path.join for local paths, ``/`` for URLs (``gs://`` kept)."""
  base = str(base)
  if not is_url(base):
    return os.path.join(base, *parts)
  return "/".join([base.rstrip("/"), *(str(p).strip("/") for p in parts)])


def name(path) -> str:
  """The last component of ``path`` (a file's name)."""
  return str(path).rstrip("/").rsplit("/", 1)[-1] if is_url(path) else os.path.basename(path)


def relative(path, root) -> str:
  """``path`` relative to ``root``, ``/``-separated; ValueError when it is not under ``root``."""
  path, root = str(path), str(root)
  if not is_url(path):
    return pathlib.Path(path).relative_to(root).as_posix()
  prefix = root.rstrip("/") + "/"
  if not path.startswith(prefix):
    raise ValueError(f"{path} is not under {root}")
  return path[len(prefix) :]


def _metadata(path: str):
  """Beam's FileMetadata (path, size_in_bytes, last_updated_in_seconds) of one object, looked up
  by its exact name (``match`` would read ``*?[`` in a name as a pattern); FileNotFoundError."""
  if not FileSystems.exists(path):
    raise FileNotFoundError(f"no such file: {path}")
  return FileSystems.get_filesystem(path).metadata(path)


def is_file(path) -> bool:
  """Whether ``path`` is a regular file (local, after symlinks) or an object (URL)."""
  path = str(path)
  if not is_url(path):
    return os.path.isfile(path)
  return not path.endswith("/") and FileSystems.exists(path)


def is_dir(path) -> bool:
  """Whether ``path`` is a folder (local) or the prefix of at least one object (URL)."""
  path = str(path)
  if not is_url(path):
    return os.path.isdir(path)
  return bool(FileSystems.match([join(path, "**")], limits=[1])[0].metadata_list)


def exists(path) -> bool:
  """Whether ``path`` is a file or a folder (an object or a prefix of objects)."""
  return is_file(path) or is_dir(path)


def size(path) -> int:
  """Bytes of a file; FileNotFoundError when there is none."""
  path = str(path)
  if not is_url(path):
    return os.stat(path).st_size
  return int(_metadata(path).size_in_bytes)


def version(path) -> tuple[str, int, float]:
  """(resolved path, bytes, last change) of a file: a key that changes when the file is replaced."""
  path = str(path)
  if not is_url(path):
    stat = os.stat(path)
    return str(pathlib.Path(path).resolve()), stat.st_size, stat.st_mtime_ns
  metadata = _metadata(path)
  return path, int(metadata.size_in_bytes), float(metadata.last_updated_in_seconds)


def glob(root, pattern: str) -> list[str]:
  """Sorted paths of the files and folders under ``root`` that ``pattern`` matches (``*`` within
  one path component, as pathlib's glob; for a URL, objects only)."""
  root = str(root)
  if not is_url(root):
    return sorted(str(p) for p in pathlib.Path(root).glob(pattern))
  found = FileSystems.match([join(root, pattern)])[0].metadata_list
  # A console-made "folder" is an empty object named with a trailing slash: not a file.
  return sorted(m.path for m in found if not m.path.endswith("/"))


def listdir(path) -> list[str]:
  """Sorted names of the entries directly in a folder (for a URL: the objects directly under
  the prefix); [] when there is no such folder."""
  path = str(path)
  if not is_url(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []
  return sorted(name(p) for p in glob(path, "*"))


def has_entries(path) -> bool:
  """Whether a folder holds anything (for a URL: whether any object lies under the prefix)."""
  path = str(path)
  if not is_url(path):
    return any(os.scandir(path))
  return is_dir(path)


def open_read(path) -> BinaryIO:
  """A binary, seekable file object of ``path``; the caller closes it. Never decompresses (Beam
  would by default for a name ending in .gz or .bz2)."""
  path = str(path)
  if not is_url(path):
    return open(path, "rb")
  return FileSystems.open(
    path, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
  )


def read_bytes(path) -> bytes:
  with open_read(path) as f:
    return f.read()


def read_text(path, encoding: str = "utf-8") -> str:
  return read_bytes(path).decode(encoding)


@contextlib.contextmanager
def source(path) -> Iterator[str | BinaryIO]:
  """What a library that takes a path or a file object gets: the local path itself, or an open
  file object of a URL, closed on exit."""
  path = str(path)
  if not is_url(path):
    yield path
    return
  with open_read(path) as f:
    yield f


@contextlib.contextmanager
def local_copy(path, max_bytes: int) -> Iterator[str]:
  """A local path holding ``path``'s bytes, for libraries that only open paths (cdflib).

  A local path is handed on as it is; a URL is spooled into a temporary file (in
  ``tempfile.gettempdir()``), removed on exit. Raises FileTooLarge, before copying, when the
  file declares more than ``max_bytes``, and while copying when it grows past them.
  """
  path = str(path)
  if not is_url(path):
    yield path
    return
  declared = size(path)
  if declared > max_bytes:
    raise FileTooLarge(f"{path}: {declared} bytes, over the limit of {max_bytes} bytes")
  handle, spool = tempfile.mkstemp(prefix="wild3d-", suffix=os.path.splitext(name(path))[1])
  try:
    with os.fdopen(handle, "wb") as out, open_read(path) as f:
      copied = 0
      while chunk := f.read(_CHUNK):
        copied += len(chunk)
        if copied > max_bytes:
          raise FileTooLarge(f"{path}: over the limit of {max_bytes} bytes")
        out.write(chunk)
    yield spool
  finally:
    os.remove(spool)


def sha256(path) -> str:
  """Hex SHA-256 of a file's bytes, read in chunks."""
  digest = hashlib.sha256()
  with open_read(path) as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def makedirs(path) -> None:
  """Creates a local folder and its parents (nothing to do for a URL: no folders there)."""
  if not is_url(path):
    os.makedirs(str(path), exist_ok=True)


def create(path) -> BinaryIO:
  """A binary file object writing ``path`` (replacing it); the caller closes it. An object
  appears only when closed."""
  path = str(path)
  if not is_url(path):
    return open(path, "wb")
  return FileSystems.create(
    path, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED
  )


def write_text(path, text: str, encoding: str = "utf-8") -> None:
  with create(path) as f:
    f.write(text.encode(encoding))


def rename(source_path, target_path) -> None:
  """Moves a file, replacing ``target_path`` (a copy and a delete on an object store)."""
  if not is_url(source_path):
    os.replace(str(source_path), str(target_path))
    return
  FileSystems.rename([str(source_path)], [str(target_path)])


def remove(path) -> None:
  """Deletes one file."""
  if not is_url(path):
    os.remove(str(path))
    return
  FileSystems.delete([str(path)])


def rmtree(path) -> None:
  """Deletes a folder and everything under it (for a URL: every object under the prefix);
  nothing happens when there is none."""
  path = str(path)
  if not is_url(path):
    if os.path.isdir(path):
      shutil.rmtree(path)
    return
  if is_dir(path):
    FileSystems.delete([path.rstrip("/") + "/"])
