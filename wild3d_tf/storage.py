"""Paths that may be local folders or URLs (gs://, TF's in-memory ram://), through tf.io.gfile.

Training, evaluation, export, prediction and lifting read and write their folders (--data_dir,
--model_dir, --export_dir, --output_dir) here or through ``tf.io.gfile`` directly, never with
``pathlib`` or ``open``: pathlib turns ``gs://bucket/x`` into ``gs:/bucket/x`` and ``open`` knows
local files only. This module owns joining such paths and writing whole files.
"""

from __future__ import annotations

import io
import os
import uuid

import numpy as np
import tensorflow as tf


def is_local(path: str) -> bool:
  """Whether ``path`` is on the local filesystem (no ``scheme://``, or ``file://``)."""
  path = str(path)
  return "://" not in path or path.startswith("file://")


def join(folder: str, *names: str) -> str:
  """``folder/name/...`` for local paths and URLs (pathlib would turn ``gs://b`` into ``gs:/b``)."""
  return "/".join([str(folder).rstrip("/"), *(str(n).strip("/") for n in names)])


def parent(path: str) -> str:
  """The folder holding ``path`` ("." for a bare name)."""
  return str(path).rstrip("/").rpartition("/")[0] or "."


def basename(path: str) -> str:
  return str(path).rstrip("/").rpartition("/")[2]


def read_bytes(path: str) -> bytes:
  """The bytes of a file; FileNotFoundError naming ``path`` when there is none."""
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path}: no such file")
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> str:
  """Writes ``data`` as the whole file ``path`` (its folder made as needed); returns ``path``.

  Written under a temporary name beside it and renamed, so a reader never sees half a file,
  and a file written again holds exactly ``data`` (``ram://`` does not truncate a file opened
  for writing).
  """
  tf.io.gfile.makedirs(parent(path))
  temporary = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  with tf.io.gfile.GFile(temporary, "wb") as f:
    f.write(data)
  tf.io.gfile.rename(temporary, path, overwrite=True)
  return path


def write_text(path: str, text: str) -> str:
  return write_bytes(path, text.encode("utf-8"))


def move_tree(source: str, target: str, last: tuple[str, ...] = ()) -> None:
  """Moves the folder ``source`` to ``target`` (which must not exist).

  Locally one rename. Elsewhere file by file (an object store has no folders to rename, and
  ``ram://`` renames only the folder's own entry), the files named in ``last`` (base names)
  after the others, so a reader that waits for them finds the rest, then ``source`` removed.
  """
  if is_local(source):
    tf.io.gfile.rename(source, target)
    return
  files = [join(folder, name) for folder, _, names in tf.io.gfile.walk(source) for name in names]
  # ram:// lists by prefix: assets/ also "holds" .extra (from assets.extra/), which is no file.
  files = [path for path in files if tf.io.gfile.exists(path)]
  files.sort(key=lambda path: basename(path) in last)  # stable: the rest keep their order
  for path in files:
    destination = join(target, path[len(source.rstrip("/")) + 1 :])
    tf.io.gfile.makedirs(parent(destination))
    tf.io.gfile.rename(path, destination, overwrite=False)
  try:
    tf.io.gfile.rmtree(source)  # only empty folders are left
  except tf.errors.NotFoundError:  # ram:// lists entries that are not there (above)
    pass


def save_npz(path: str, **arrays) -> str:
  """``np.savez_compressed`` of ``arrays`` to ``path`` (any filesystem)."""
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  return write_bytes(path, buffer.getvalue())
