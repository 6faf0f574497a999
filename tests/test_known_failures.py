"""Entry points print a known failure as one line naming the file or flag; the traceback only
when verbose (wild3d_tf/cli.py)."""

import pytest

from wild3d_tf import checkpoints, cli


def _fails(error):
  def main(argv):
    del argv
    raise error

  return main


def test_a_known_failure_is_one_line_and_the_traceback_only_when_verbose(capsys):
  error = checkpoints.ModelDirInUse("runs/a: in use by pid 7 (lock runs/a/.lock)")
  with pytest.raises(SystemExit) as done:
    cli.report_known_failures(_fails(error), ["/x/train.py"])([])
  assert done.value.code == cli.KNOWN_FAILURE_STATUS == 1
  assert capsys.readouterr().err == (
    "train.py: error: runs/a: in use by pid 7 (lock runs/a/.lock)\n"
  )
  with pytest.raises(checkpoints.ModelDirInUse):  # verbose: the exception itself, traceback and all
    cli.report_known_failures(_fails(error), ["/x/train.py", "-v", "1"])([])


def test_other_errors_keep_their_traceback():
  with pytest.raises(KeyError):
    cli.report_known_failures(_fails(KeyError("bug")), ["/x/train.py"])([])
  assert not cli.known_failure(RuntimeError("a plain RuntimeError is not a CheckpointError"))
  assert cli.known_failure(checkpoints.CheckpointError("x"))


def test_ctrl_c_outside_training_is_one_line_and_status_130(capsys):
  with pytest.raises(SystemExit) as done:
    cli.report_known_failures(_fails(KeyboardInterrupt()), ["/x/evaluate.py"])([])
  assert done.value.code == 130
  assert capsys.readouterr().err == "evaluate.py: interrupted\n"
  with pytest.raises(KeyboardInterrupt):  # verbose: the traceback
    cli.report_known_failures(_fails(KeyboardInterrupt()), ["/x/evaluate.py", "-v", "1"])([])


def test_a_missing_run_or_data_folder_is_one_line(capsys):
  # wild3d's FileNotFoundErrors name what they looked for (config.load, shards.load_manifest).
  error = FileNotFoundError("runs/x: no config.json; not a wild3d training directory")
  with pytest.raises(SystemExit) as done:
    cli.report_known_failures(_fails(error), ["/x/evaluate.py"])([])
  assert done.value.code == 1
  assert capsys.readouterr().err == (
    "evaluate.py: error: runs/x: no config.json; not a wild3d training directory\n"
  )
