"""A training directory's (model_dir's) checkpoints: which to resume, what to clean, who owns it.

``tf.train.CheckpointManager`` trusts the small ``checkpoint`` state file: when it is lost (a
partial copy, a sync tool) a run starts again at step 0 and overwrites the checkpoints beside
it, and a damaged newest checkpoint stops a run with a TensorFlow traceback. This module reads
the ``ckpt-<step>`` files themselves instead:

- ``find_latest_complete``: the newest checkpoint whose index and every data shard are there.
- ``restore_with_fallback``: restores the newest complete checkpoint; one that fails to read
  (checksum error, truncated index, missing shard) is named in a warning and the previous one
  is tried; the state file is rewritten to name the one restored.
- ``clean_temporaries``: removes what an interrupted save leaves (TF 2.21, checked by killing a
  saving process: ``ckpt-<step>_temp/`` folders holding ``part-*.tempstate<n>`` files; by its
  source also ``*.tempstate<n>`` files and ``checkpoint.tmp<hex>`` from the atomic state write).
- ``ModelDirLock``: one training per model_dir; the lock of a killed run does not stay stuck.
- ``init_network``: a network's weights from another run's checkpoint, or an error naming the
  checkpoint and the mismatch (never a silently half-initialised network).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import socket
import time

import tensorflow as tf

from wild3d_tf import config, storage

CHECKPOINT_NAME = "ckpt"  # the prefix of the Loop's CheckpointManager: ckpt-<step>.index, ...
STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's state file
LOCK_FILE = "training.lock"

_NUMBERED = re.compile(rf"^{CHECKPOINT_NAME}-(\d+)\.(index|data-(\d{{5}})-of-(\d{{5}}))$")
_TEMPORARY_DIR = re.compile(rf"^{CHECKPOINT_NAME}-\d+_temp$")
_TEMPORARY_FILE = re.compile(
  rf"^({CHECKPOINT_NAME}-\d+\..*\.tempstate\d+|{STATE_FILE}\.tmp[0-9a-f]{{32}})$"
)


class CheckpointError(RuntimeError):
  """A model_dir's checkpoints cannot be used as they are; the message names the file."""


class ModelDirInUse(CheckpointError):
  """Another training holds the model_dir's lock; the message names the model_dir and the lock."""


def _first_line(error: BaseException) -> str:
  text = getattr(error, "message", None) or str(error)
  return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def _files_by_step(model_dir: str) -> dict[int, list[str]]:
  """{step: [file names]} of every ``ckpt-<step>.index`` / ``.data-*`` file in model_dir."""
  found = {}
  for name in tf.io.gfile.listdir(model_dir) if tf.io.gfile.isdir(model_dir) else []:
    match = _NUMBERED.match(name)
    if match:
      found.setdefault(int(match.group(1)), []).append(name)
  return found


def _prefix(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, f"{CHECKPOINT_NAME}-{step}")


def incomplete_reason(prefix: str) -> str | None:
  """None when the checkpoint ``prefix`` is complete, else why not (one line).

  Complete: the ``.index`` file is there and reads as a table, and every data shard
  ``.data-<k>-of-<n>`` for k < n is there. A data file's checksums are only checked when
  its tensors are read (``restore_with_fallback`` handles that).
  """
  folder, base = os.path.split(prefix)
  index = prefix + ".index"
  if not tf.io.gfile.exists(index):
    return f"{index} is missing"
  shards = {}
  for name in tf.io.gfile.listdir(folder or "."):
    if name.startswith(base + ".data-"):
      match = re.fullmatch(r"(\d{5})-of-(\d{5})", name[len(base) + 6 :])
      if match:
        shards[int(match.group(1))] = int(match.group(2))
  if not shards:
    return f"{prefix}.data-*: no data shard"
  total = max(shards.values())
  missing = [k for k in range(total) if k not in shards]
  if missing:
    return f"{prefix}.data-{missing[0]:05d}-of-{total:05d} is missing ({len(missing)} of {total})"
  try:
    # Reads the index (a truncated one fails here). Not tf.train.load_checkpoint: it takes a
    # prefix that tf.io.gfile.isdir calls a folder for one (ram:// matches by prefix) as one.
    tf.compat.v1.train.NewCheckpointReader(prefix)
  except (tf.errors.OpError, ValueError) as error:
    return f"{index} is unreadable: {_first_line(error)}"
  return None


def find_latest_complete(model_dir: str) -> str | None:
  """The prefix (``<model_dir>/ckpt-<step>``) of the newest complete checkpoint in model_dir.

  Uses the ckpt-* files, not the ``checkpoint`` state file, so a lost or stale state file
  does not hide them. Newer incomplete checkpoints are named in a warning. Returns None when
  model_dir holds no ckpt-* file; raises CheckpointError naming model_dir and the files
  when ckpt-* files are there but none is complete (starting at step 0 would overwrite them).
  """
  found = _files_by_step(model_dir)
  problems = []
  for step in sorted(found, reverse=True):
    prefix = _prefix(model_dir, step)
    reason = incomplete_reason(prefix)
    if reason is None:
      for problem in problems:
        logging.warning("skipping an incomplete checkpoint: %s", problem)
      return prefix
    problems.append(reason)
  if problems:
    raise CheckpointError(
      f"{model_dir}: no complete checkpoint among the ckpt-* files there ({'; '.join(problems)}); "
      "move them away to start from step 0"
    )
  return None


def write_state(model_dir: str, latest: str) -> None:
  """Rewrites model_dir's ``checkpoint`` state file: ``latest`` and the complete ones before it.

  Timestamps are the index files' times, so CheckpointManager's ``max_to_keep`` goes on
  deleting the oldest (without timestamps it would keep all of them forever).
  """
  latest_step = int(latest.rsplit("-", 1)[1])
  kept = [
    _prefix(model_dir, step)
    for step in sorted(_files_by_step(model_dir))
    if step < latest_step and incomplete_reason(_prefix(model_dir, step)) is None
  ] + [latest]
  times = [tf.io.gfile.stat(prefix + ".index").mtime_nsec / 1e9 for prefix in kept]
  # The CheckpointState text proto, relative names as CheckpointManager writes them (TF's own
  # writer, tf.compat.v1.train.update_checkpoint_state, logs a deprecation warning).
  lines = [f'model_checkpoint_path: "{os.path.basename(latest)}"']
  lines += [f'all_model_checkpoint_paths: "{os.path.basename(prefix)}"' for prefix in kept]
  lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in times]
  lines.append(f"last_preserved_timestamp: {min(times) - 1.0!r}")
  path = os.path.join(model_dir, STATE_FILE)
  temporary = f"{path}.tmp{os.urandom(16).hex()}"  # a name clean_temporaries knows
  with tf.io.gfile.GFile(temporary, "w") as f:
    f.write("\n".join(lines) + "\n")
  tf.io.gfile.rename(temporary, path, overwrite=True)


def restore_with_fallback(checkpoint: tf.train.Checkpoint, model_dir: str) -> str | None:
  """Restores ``checkpoint`` from model_dir's newest complete, readable checkpoint.

  A checkpoint that is incomplete or fails to read (checksum error, damaged index) is named
  in a warning and the one before it is tried; when the one restored is not what the state
  file names (lost, or naming a damaged one), the state file is rewritten. Returns the prefix
  restored, or None when model_dir holds no ckpt-* file.

  Raises CheckpointError naming the checkpoint when it does not hold the objects of
  ``checkpoint`` (another network or variant), and naming model_dir and every failure when
  ckpt-* files are there but none can be restored.
  """
  found = _files_by_step(model_dir)
  failures = []
  for step in sorted(found, reverse=True):
    prefix = _prefix(model_dir, step)
    reason = incomplete_reason(prefix)
    if reason is None:
      try:
        status = checkpoint.restore(prefix)
      except tf.errors.OpError as error:  # DataLossError (checksum), NotFoundError, ...
        reason = f"{prefix} is unreadable: {_first_line(error)}"
      except ValueError as error:  # a variable of another shape
        raise CheckpointError(
          f"{prefix} does not hold this training: {_first_line(error)}"
        ) from None
      else:
        try:
          status.assert_existing_objects_matched()
        except AssertionError as error:
          raise CheckpointError(
            f"{prefix} does not hold this training: {_unmatched(error)}"
          ) from None
        state = tf.train.get_checkpoint_state(model_dir)
        named = os.path.basename(state.model_checkpoint_path) if state else None
        if named != os.path.basename(prefix):
          write_state(model_dir, prefix)
        return prefix
    logging.warning("%s; falling back to the checkpoint before it", reason)
    failures.append(reason)
  if failures:
    raise CheckpointError(
      f"{model_dir}: no usable checkpoint ({'; '.join(failures)}); move the ckpt-* files away "
      "to start from step 0"
    )
  return None


def clean_temporaries(model_dir: str) -> list[str]:
  """Removes the leftovers of interrupted saves in model_dir and returns their paths.

  Only names TensorFlow gives temporaries are touched (see the module docstring); call it
  while holding the model_dir's lock, so no running save loses its files.
  """
  removed = []
  for name in tf.io.gfile.listdir(model_dir) if tf.io.gfile.isdir(model_dir) else []:
    path = os.path.join(model_dir, name.rstrip("/"))
    if _TEMPORARY_DIR.match(name.rstrip("/")) and tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    elif _TEMPORARY_FILE.match(name):
      tf.io.gfile.remove(path)
    else:
      continue
    removed.append(path)
  if removed:
    logging.warning("removed what interrupted checkpoint saves left: %s", ", ".join(removed))
  return removed


def _unmatched(error: AssertionError) -> str:
  """A short list of the variables that a checkpoint left unset, from TF's long message."""
  text = str(error)
  names = re.findall(r"path=([^,>]+), shape=(\([^)]*\))", text)
  if not names:
    return text.splitlines()[0][:300]
  count = re.search(r"Found (\d+) Python objects", text)
  shown = ", ".join(f"{name} {shape}" for name, shape in names[:4])
  return f"{count.group(1) if count else len(names)} variables are not in it, e.g. {shown}"


def init_network(network, source: str, variant: str | None = None) -> str:
  """Sets every weight of ``network`` from a checkpoint of another run; returns its prefix.

  ``source`` is a training directory (its newest complete checkpoint is used) or a checkpoint
  prefix. Only the network is read (the source's optimizer and step are not). ``variant``,
  when given, must equal the model variant in the source's config.json (when it has one).

  Raises FileNotFoundError naming source when it holds no checkpoint, and CheckpointError
  naming the checkpoint and the mismatch when it holds another variant, a variable of
  another shape, or leaves any variable of ``network`` unset.
  """
  if tf.io.gfile.exists(source + ".index"):
    prefix, folder = source, os.path.dirname(source)
  else:
    prefix, folder = find_latest_complete(source), source
  if prefix is None:
    raise FileNotFoundError(f"{source}: no checkpoint there")
  if variant is not None:
    try:
      theirs = config.load(folder).model.variant
    except (FileNotFoundError, ValueError):
      theirs = None  # no readable config.json: the variables' shapes are still checked below
    if theirs is not None and theirs != variant:
      raise CheckpointError(
        f"{prefix} holds the {theirs!r} variant ({config.config_path(folder)}); "
        f"this run builds {variant!r}"
      )
  try:
    status = tf.train.Checkpoint(network=network).restore(prefix)
  except ValueError as error:
    raise CheckpointError(f"{prefix} does not hold this network: {_first_line(error)}") from None
  except tf.errors.OpError as error:
    raise CheckpointError(f"{prefix} is unreadable: {_first_line(error)}") from None
  try:
    status.expect_partial().assert_existing_objects_matched()
  except AssertionError as error:
    raise CheckpointError(f"{prefix} does not hold this network: {_unmatched(error)}") from None
  return prefix


# --------------------------------------------------------------------------- the model_dir lock


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


class ModelDirLock:
  """One training per model_dir: ``<model_dir>/training.lock`` holds the owner's pid, host, start.

  Where the filesystem supports ``fcntl.flock``, the kernel lock is the truth: it goes with
  the process, so a killed run never leaves the model_dir locked (its file, still holding
  its pid, is taken over with a warning). Elsewhere (flock refused with ENOLCK and the like,
  and a model_dir that is a URL: gs://, through tf.io.gfile) the file alone is the lock: one
  whose pid is dead on this host is taken over with a warning; one of a live pid, or of
  another host, refuses. (An object store has no exclusive create: two runs started in the
  same instant could both pass; the lock is there for the usual mistake, a second command.)

  ``acquire`` raises ModelDirInUse naming the model_dir, the lock file and its holder.
  Use as a context manager, or call ``acquire`` and ``release``; ``name`` lets tasks of one
  multi-worker run lock apart (``training.lock`` for the chief).
  """

  def __init__(self, model_dir: str, name: str = LOCK_FILE):
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, name)
    self._fd = None
    self._record = None

  def _describe(self, text: str) -> str:
    try:
      holder = json.loads(text)
      return f"pid {holder['pid']} on {holder['host']} since {holder['started']}"
    except (ValueError, KeyError, TypeError):
      return "an unknown holder" if not text.strip() else f"unreadable content {text[:80]!r}"

  def _refuse(self, text: str):
    raise ModelDirInUse(
      f"{self.model_dir} is in use by another training: {self.path} is held by "
      f"{self._describe(text)}"
    )

  def _new_record(self) -> str:
    return json.dumps(
      {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      }
    )

  def acquire(self) -> ModelDirLock:
    if not storage.is_local(self.path):
      tf.io.gfile.makedirs(self.model_dir)
      return self._acquire_without_flock()
    os.makedirs(self.model_dir, exist_ok=True)
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        os.close(fd)
        self._refuse(text)
      except OSError as error:
        os.close(fd)
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
          return self._acquire_without_flock()
        raise
      # A holder that released (and removed the file) while we opened it leaves us locking
      # a removed file: open again.
      try:
        if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
          break
      except FileNotFoundError:
        pass
      os.close(fd)
    previous = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    if previous.strip():
      logging.warning(
        "taking over %s left by %s: that training is gone (killed?)",
        self.path,
        self._describe(previous),
      )
    self._record = self._new_record()
    os.ftruncate(fd, 0)
    os.pwrite(fd, self._record.encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return self

  def _create(self, record: str) -> bool:
    """Writes ``record`` as the lock file unless one exists; whether it did."""
    if not storage.is_local(self.path):
      if tf.io.gfile.exists(self.path):
        return False
      storage.write_text(self.path, record)
      return True
    try:
      fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    os.write(fd, record.encode())
    os.close(fd)
    return True

  def _acquire_without_flock(self) -> ModelDirLock:
    record = self._new_record()
    if not self._create(record):
      text = storage.read_bytes(self.path).decode("utf-8", "replace")
      try:
        holder = json.loads(text)
        stale = holder["host"] == socket.gethostname() and not _process_alive(int(holder["pid"]))
      except (ValueError, KeyError, TypeError):
        stale = False
      if not stale:
        self._refuse(text)
      logging.warning(
        "taking over %s left by %s: that process is gone", self.path, self._describe(text)
      )
      storage.write_text(self.path, record)  # a temporary name, renamed over the old file
    self._record = record
    return self

  def release(self) -> None:
    """Removes the lock file (if still ours) and unlocks; a second call does nothing."""
    if self._record is None:
      return
    try:
      ours = storage.read_bytes(self.path).decode("utf-8", "replace") == self._record
      if ours:
        tf.io.gfile.remove(self.path)  # while still locked: a newcomer then creates a fresh file
    except (FileNotFoundError, tf.errors.NotFoundError):
      pass
    if self._fd is not None:
      os.close(self._fd)  # closing the descriptor drops the flock
      self._fd = None
    self._record = None

  def __enter__(self) -> ModelDirLock:
    return self.acquire()

  def __exit__(self, *exc_info) -> None:
    self.release()

  def __del__(self):
    if getattr(self, "_fd", None) is not None:
      os.close(self._fd)
