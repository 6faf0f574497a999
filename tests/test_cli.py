"""Entry points a newcomer can drive: --help without required flags, quiet start-up."""

import os
import re
import subprocess
import sys

import pytest

from wild3d_tf import cli

# Entry point -> a flag its --help must list (its own, not absl's).
ENTRY_POINTS = {
  "wild3d_tf.train": "--datasets_3d",
  "wild3d_tf.evaluate": "--saved_model",
  "wild3d_tf.export": "--export_dir",
  "wild3d_tf.predict": "--intrinsics",
  "wild3d_tf.lifting": "--examples",
  "wild3d_tf.demo": "--full_steps",
  "beam_preprocess.convert": "--records_per_shard",
  "wild3d_tf.synthetic": "--preset",
}
# TensorFlow's C++ log lines (I/W/E + date), absl's pre-init banner, Beam's import warning.
NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit|oneDNN|apitools", re.M)


def _environment():
  env = dict(os.environ)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the default start-up, as a user's shell has it
  env.pop(cli.QUIET_MARKER, None)  # (importing cli here set both in this process)
  return env


def _run_all(commands):
  """Runs the commands at once (each imports TensorFlow: seconds apiece); (rc, out, err) each."""
  processes = [
    subprocess.Popen(
      c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment()
    )
    for c in commands
  ]
  results = []
  for process in processes:
    out, err = process.communicate(timeout=300)
    results.append((process.returncode, out, err))
  return results


def test_every_entry_point_answers_help_without_its_required_flags_and_quietly():
  commands = [[sys.executable, "-m", module, "--help"] for module in ENTRY_POINTS]
  for (module, flag), process in zip(ENTRY_POINTS.items(), _run_all(commands)):
    rc, out, err = process
    assert rc == 0, (module, rc, err[-2000:])
    assert flag in out, (module, out[:2000])
    assert not NOISE.search(err), (module, err[:2000])


def test_verbosity_brings_the_start_up_log_back():
  quiet, verbose = _run_all(
    [
      [sys.executable, "-m", "wild3d_tf.export", "--help"],
      [sys.executable, "-m", "wild3d_tf.export", "--help", "--verbosity=1"],
    ]
  )
  assert quiet[0] == verbose[0] == 0
  assert not NOISE.search(quiet[2])
  assert NOISE.search(verbose[2]), verbose[2][:2000]


@pytest.mark.parametrize(
  "argv, level",
  [
    (["x"], 0),
    (["x", "-v", "1"], 1),
    (["x", "--verbosity=2"], 2),
    (["x", "--verbosity", "1", "-v=0"], 0),
    (["x", "--v=-1"], -1),
  ],
)
def test_verbosity_is_read_from_argv_as_absl_reads_it(argv, level):
  assert cli.verbosity(argv) == level


def test_help_requests_are_recognised():
  assert cli.help_requested(["x", "--data_dir=d", "--helpfull"])
  assert cli.help_requested(["x", "-h"])
  assert not cli.help_requested(["--help"])  # argv[0] is the program
  assert not cli.help_requested(["x", "--helpful_flag=1"])


def test_a_child_of_a_quiet_entry_point_stays_quiet_unless_the_user_set_the_level():
  # The demo runs each step as a child process, which inherits the environment quiet_startup
  # set up: that is wild3d's level (marked), not the user's, so the child stays quiet.
  inherited = {**_environment(), "TF_CPP_MIN_LOG_LEVEL": "2", cli.QUIET_MARKER: "1"}
  users = {**_environment(), "TF_CPP_MIN_LOG_LEVEL": "2"}  # the user's own: nothing silenced
  script = "from wild3d_tf import cli; import tensorflow as tf; tf.config.list_physical_devices()"
  results = [
    subprocess.run(
      [sys.executable, "-c", script],
      capture_output=True,
      text=True,
      env=env,
      timeout=300,
    )
    for env in (inherited, users)
  ]
  assert [r.returncode for r in results] == [0, 0]
  assert not NOISE.search(results[0].stderr), results[0].stderr[:2000]
  assert NOISE.search(results[1].stderr), results[1].stderr[:2000]
