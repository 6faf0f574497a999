"""The one loader of MATLAB files for every reader, refusing a variable too large before loading it.

A compressed MATLAB 5 variable can inflate far beyond its file (a 1.2 MB
joints.mat can hold a 1.2 GB array of zeros), and an HDF5 dataset (MATLAB
7.3) can declare any shape. Both declare their size before their data: a
MATLAB 5 variable in the tag of its matrix element (for a compressed one, the
first 8 bytes of its zlib stream, so only those are inflated to read it), an
HDF5 dataset in its shape and dtype. ``load_mat`` and ``read_hdf5`` add up the
declared sizes of the variables asked for and refuse a file over the limit
(convert's --max_mat_bytes) with a BadRecord naming the file, the variable
and the limit, before anything is allocated.
"""

from __future__ import annotations

import struct
import zlib

import h5py
import numpy as np
import scipy.io

from beam_preprocess import storage
from beam_preprocess.records import BadRecord, Options

MAX_MAT_BYTES = Options.max_mat_bytes
_MATLAB5_HEADER = 128
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_HEADER_PREFIX = 4096  # inflated bytes enough for any matrix header (flags, dims, a name of <= 63)


def _subelement(buf: bytes, at: int, order: str) -> tuple[bytes, int]:
  """(data, offset after it) of the data element at ``at`` (small or normal format)."""
  (word,) = struct.unpack_from(order + "I", buf, at)
  if word >> 16:  # small data element: size in the upper half, data in the next 4 bytes
    return buf[at + 4 : at + 4 + (word >> 16)], at + 8
  (size,) = struct.unpack_from(order + "I", buf, at + 4)
  return buf[at + 8 : at + 8 + size], at + 8 + size + (-size % 8)


def _name(matrix: bytes, order: str) -> str:
  """The variable name of a matrix element's contents (after its tag): flags, dims, name."""
  _, at = _subelement(matrix, 0, order)
  _, at = _subelement(matrix, at, order)
  name, _ = _subelement(matrix, at, order)
  return name.decode("latin-1")


def _inflated_prefix(f, size: int) -> bytes:
  """The first ``_HEADER_PREFIX`` bytes a compressed element of ``size`` bytes inflates to."""
  inflater, out, left = zlib.decompressobj(), b"", size
  while len(out) < _HEADER_PREFIX and left > 0:
    chunk = f.read(min(left, 1 << 16))
    if not chunk:
      break
    left -= len(chunk)
    out += inflater.decompress(chunk, _HEADER_PREFIX - len(out))
  return out


def matlab5_sizes(path) -> dict[str, int]:
  """Variable name -> declared bytes of each variable of a MATLAB 5 file (a local path or URL,
  ``storage``), without loading any: reads only the element tags and matrix headers.

  ValueError for a file whose element tags do not parse.
  """
  sizes = {}
  with storage.open_read(path) as f:
    header = f.read(_MATLAB5_HEADER)
    order = "<" if header[126:128] == b"IM" else ">"
    end = storage.size(path)
    at = _MATLAB5_HEADER
    while at + 8 <= end:
      f.seek(at)
      kind, size = struct.unpack(order + "II", f.read(8))
      if kind == _MI_COMPRESSED:
        inner = _inflated_prefix(f, size)
        kind, declared = struct.unpack_from(order + "II", inner, 0)
        contents = inner[8:]
        at += 8 + size
      else:
        declared = size
        contents = f.read(min(size, _HEADER_PREFIX))
        at += 8 + size + (-size % 8)
      if kind != _MI_MATRIX:
        continue  # not a variable (MATLAB writes none such at the top level)
      name = _name(contents, order)
      sizes[name] = sizes.get(name, 0) + declared + 8
  return sizes


def _refuse_over(sizes: dict[str, int], file: str, max_bytes: int) -> None:
  total = sum(sizes.values())
  if total > max_bytes:
    name = max(sizes, key=sizes.get)
    raise BadRecord(
      file,
      "-",
      name,
      f"declares {total} bytes ({name}: {sizes[name]}), over the limit of {max_bytes} bytes "
      "(--max_mat_bytes); refused before loading",
    )


def is_hdf5(path) -> bool:
  """Whether the file is HDF5 (MATLAB 7.3 puts the signature at byte 512 after its text header)."""
  with storage.open_read(path) as f:
    head = f.read(520)
  return any(head[at : at + 8] == b"\x89HDF\r\n\x1a\n" for at in (0, 512))


def load_mat(
  path,
  file: str,
  variable_names: list[str],
  max_bytes: int = MAX_MAT_BYTES,
  field: str = "mat",
  **loadmat_kwargs,
) -> dict:
  """``scipy.io.loadmat`` of the named variables of a MATLAB 5 file (a local path or URL; loadmat
  reads a URL's file object), if they declare at most ``max_bytes`` in all.

  Raises BadRecord naming ``file``: over the limit (field: the largest
  variable), a MATLAB 7.3/HDF5 file, or an unreadable file (field ``field``).
  """
  if is_hdf5(path):
    raise BadRecord(file, "-", field, "a MATLAB 7.3 (HDF5) file where a MATLAB 5 file is expected")
  try:
    sizes = matlab5_sizes(path)
  except (ValueError, struct.error, zlib.error, UnicodeDecodeError) as error:
    raise BadRecord(file, "-", field, f"unreadable MAT file: {error}") from None
  _refuse_over({k: v for k, v in sizes.items() if k in variable_names}, file, max_bytes)
  try:
    with storage.source(path) as readable:
      return scipy.io.loadmat(readable, variable_names=variable_names, **loadmat_kwargs)
  except Exception as error:  # scipy raises several types for corrupt files
    raise BadRecord(file, "-", field, f"unreadable MAT file: {error}") from None


def read_hdf5(
  path, file: str, names: list[str], max_bytes: int = MAX_MAT_BYTES
) -> dict[str, np.ndarray]:
  """The named datasets of an HDF5 (MATLAB 7.3) file (a local path or URL; h5py reads a URL's
  file object) as float64 arrays, as stored (MATLAB's
  dimensions reversed), checked before reading: present, hard links (no external links), no
  external storage, and declared sizes (shape x itemsize) within ``max_bytes``.

  Raises BadRecord naming ``file`` and the dataset.
  """
  try:
    with storage.source(path) as readable, h5py.File(readable, "r") as f:
      sizes = {}
      for name in names:
        link = f.get(name, getlink=True)
        if link is None:
          raise BadRecord(file, "-", name, "missing field")
        if not isinstance(link, h5py.HardLink):
          raise BadRecord(file, "-", name, "links outside the file are refused")
        dataset = f[name]
        if not isinstance(dataset, h5py.Dataset):
          raise BadRecord(file, "-", name, "not a dataset")
        if dataset.external:
          raise BadRecord(file, "-", name, "external storage is refused")
        # float64 is what the reader makes of it, so that is what it allocates
        sizes[name] = int(np.prod(dataset.shape, dtype=np.int64)) * max(8, dataset.dtype.itemsize)
      _refuse_over(sizes, file, max_bytes)
      return {name: np.asarray(f[name][()], np.float64) for name in names}
  except OSError as error:
    raise BadRecord(file, "-", storage.name(path), f"unreadable HDF5 file: {error}") from None
