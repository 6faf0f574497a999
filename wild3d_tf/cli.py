"""Start-up of the command-line entry points: import this module first in every ``__main__``.

Importing it, before TensorFlow is imported, keeps TensorFlow's start-up
noise off the terminal: the C++ runtime's lines about oneDNN, CUDA drivers
and CPU features, and, on a machine without a GPU, the ``failed call to
cuInit`` error. Most of them are printed while the shared libraries load,
before ``TF_CPP_MIN_LOG_LEVEL`` is read, so whenever the entry point imports
TensorFlow, the import (and the listing of devices, which is where cuInit
runs) happens with the process's stderr sent to /dev/null (a ``sys.meta_path``
hook); afterwards ``TF_CPP_MIN_LOG_LEVEL=2`` keeps TensorFlow's C++ errors and
drops its info and warning lines. Apache Beam's import-time warning
(``apitools not found``) goes the same way.

The noise comes back with absl's verbosity flag (``--verbosity=1`` or
``-v 1``) on the command line, or with ``TF_CPP_MIN_LOG_LEVEL`` set in the
environment (``TF_CPP_MIN_LOG_LEVEL=0`` shows everything): then nothing is
silenced. Python errors raised during the import are not affected.

``run(main)`` is ``absl.app.run`` with a help request (``--help``, ``-h``,
``--helpshort``, ``--helpfull``) answered with exit status 0 (absl exits 1),
before any required flag is checked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

# Set beside TF_CPP_MIN_LOG_LEVEL when quiet_startup sets it, so that child processes (the demo's
# steps) tell wild3d's setting from the user's.
QUIET_MARKER = "WILD3D_QUIET_STARTUP"
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def verbosity(argv: list[str]) -> int:
  """The value of absl's ``--verbosity``/``-v`` in ``argv`` (its last occurrence), 0 without."""
  value = "0"
  for index, arg in enumerate(argv):
    for name in ("--verbosity", "-verbosity", "--v", "-v"):
      if arg == name and index + 1 < len(argv):
        value = argv[index + 1]
      elif arg.startswith(name + "="):
        value = arg.split("=", 1)[1]
  try:
    return int(value)
  except ValueError:
    return 0  # absl itself reports the bad value


def help_requested(argv: list[str]) -> bool:
  return any(arg in HELP_FLAGS or arg.startswith("--helpxml=") for arg in argv[1:])


@contextlib.contextmanager
def _stderr_to_devnull():
  """Sends file descriptor 2 (C++ and Python writes alike) to /dev/null for the block."""
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


class _QuietImport:
  """A ``sys.meta_path`` finder that runs the import of ``tensorflow`` (and of
  ``apache_beam``) with stderr sent to /dev/null. It acts on those two names only,
  and only when they are imported: an entry point that never imports them pays nothing."""

  NAMES = ("tensorflow", "apache_beam")

  def find_spec(self, fullname, path, target=None):
    if fullname not in self.NAMES:
      return None
    for finder in sys.meta_path:
      if finder is self or not hasattr(finder, "find_spec"):
        continue
      spec = finder.find_spec(fullname, path, target)
      if spec is not None:
        break
    else:
      return None
    loader = spec.loader
    exec_module = loader.exec_module

    def quiet_exec(module):
      with _stderr_to_devnull():
        # Beam logs its import-time warning through the root logger (a handler on stderr).
        previous = logging.root.level
        logging.root.setLevel(logging.ERROR)
        try:
          exec_module(module)
          if fullname == "tensorflow":
            module.config.list_physical_devices()  # where CUDA's cuInit runs (and fails)
        finally:
          logging.root.setLevel(previous)

    spec.loader = _Loader(loader, quiet_exec)
    return spec


class _Loader:
  def __init__(self, loader, exec_module):
    self._loader, self.exec_module = loader, exec_module

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def __getattr__(self, name):
    return getattr(self._loader, name)


def quiet_startup(argv: list[str] | None = None) -> bool:
  """Makes the coming imports of TensorFlow and Apache Beam quiet, unless verbosity is
  asked for, ``TF_CPP_MIN_LOG_LEVEL`` is set or TensorFlow is already imported; returns
  whether it did."""
  argv = sys.argv if argv is None else argv
  # The user's own TF_CPP_MIN_LOG_LEVEL wins; ours (inherited by the demo's child processes,
  # with its marker) does not count as the user's.
  users_level = "TF_CPP_MIN_LOG_LEVEL" in os.environ and QUIET_MARKER not in os.environ
  if "tensorflow" in sys.modules or users_level or verbosity(argv) >= 1:
    return False
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
  os.environ[QUIET_MARKER] = "1"
  if not any(isinstance(finder, _QuietImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _QuietImport())
  return True


# Errors whose message already names the file, flag or record at fault: an entry point reports
# them as one line, not a traceback. Named "module:Class" and matched by name against the raised
# error's classes, so importing this module (first, before TensorFlow) imports none of them, and
# a class defined by the module run as ``python -m`` (whose ``__module__`` is ``__main__``) counts.
KNOWN_FAILURES = (
  "wild3d_tf.checkpoints:CheckpointError",
  "wild3d_tf.schema:SchemaVersionError",
  "wild3d_tf.export:ExportOptionError",
  "wild3d_tf.predict:PredictError",
  # wild3d raises it naming the folder or file it looked for (a run without config.json or
  # checkpoint, a data folder without the manifest asked for).
  "builtins:FileNotFoundError",
)
# The exit status of a known failure (absl's for a usage error too).
KNOWN_FAILURE_STATUS = 1


def _class_name(kind: type) -> str:
  module = kind.__module__
  if module == "__main__":  # the entry point run with -m: its real module name is in its spec
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = spec.name if spec is not None else module
  return f"{module}:{kind.__qualname__}"


def known_failure(error: BaseException) -> bool:
  """Whether ``error`` is an instance of one of ``KNOWN_FAILURES`` (or of a subclass)."""
  return any(_class_name(kind) in KNOWN_FAILURES for kind in type(error).__mro__)


def report_known_failures(main, argv: list[str]):
  """``main`` with a known failure printed to stderr as ``<program>: error: <message>`` (one line)
  and exit status ``KNOWN_FAILURE_STATUS``; with ``--verbosity`` >= 1 it propagates, traceback
  and all. Other exceptions propagate unchanged."""
  program = os.path.basename(argv[0]) if argv else "wild3d"

  def guarded(args):
    try:
      return main(args)
    except KeyboardInterrupt:  # Ctrl-C outside training's own handler (which saves first)
      if verbosity(argv) >= 1:
        raise
      print(f"{program}: interrupted", file=sys.stderr, flush=True)
      raise SystemExit(128 + signal.SIGINT) from None
    except Exception as error:
      if not known_failure(error) or verbosity(argv) >= 1:
        raise
      message = " ".join(str(error).split()) or type(error).__name__
      print(f"{program}: error: {message}", file=sys.stderr, flush=True)
      raise SystemExit(KNOWN_FAILURE_STATUS) from None

  return guarded


def run(main, argv: list[str] | None = None) -> None:
  """``absl.app.run(main)``; a help request exits with status 0 instead of absl's 1, and a
  known failure (``KNOWN_FAILURES``) prints one line instead of a traceback unless verbose."""
  from absl import app

  argv = sys.argv if argv is None else argv
  try:
    app.run(report_known_failures(main, argv), argv=argv)
  except SystemExit as done:
    if done.code == 1 and help_requested(argv):
      raise SystemExit(0) from None
    raise


quiet_startup()
