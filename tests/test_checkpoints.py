"""A model_dir's checkpoints: resume past a lost state file or a damaged checkpoint, clean what
interrupted saves leave, one training per model_dir, and --init_from only from this network."""

import errno
import fcntl
import json
import logging
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys

from conftest import tiny_run_config, write_checkpoint
import keras
import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import checkpoints, model
from wild3d_tf.config import ModelConfig
from wild3d_tf.losses import LossWeights
from wild3d_tf.trainer import Loop, Trainer, make_optimizer

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Run(tf.Module):
  """What a training checkpoints, in small: weights and a step."""

  def __init__(self, width=3):
    super().__init__()
    self.weights = tf.Variable(tf.zeros([width]))
    self.step = tf.Variable(0, dtype=tf.int64)


def _save_steps(model_dir, steps=(4, 8, 12), keep=3):
  """Checkpoints of a ``Run`` at ``steps``, its weights all equal to the step."""
  run = Run()
  manager = tf.train.CheckpointManager(
    tf.train.Checkpoint(run=run), str(model_dir), keep, checkpoint_name=checkpoints.CHECKPOINT_NAME
  )
  for step in steps:
    run.weights.assign(tf.fill([3], float(step)))
    run.step.assign(step)
    manager.save(checkpoint_number=step)
  return manager


def _restore(model_dir):
  run = Run()
  prefix = checkpoints.restore_with_fallback(tf.train.Checkpoint(run=run), str(model_dir))
  return prefix, int(run.step.numpy()), run.weights.numpy()


def _data_file(model_dir, step):
  return model_dir / f"ckpt-{step}.data-00000-of-00001"


# --------------------------------------------------------------------------- finding and restoring


def test_a_lost_state_file_resumes_from_the_newest_complete_checkpoint(tmp_path, caplog):
  _save_steps(tmp_path)
  (tmp_path / "checkpoint").unlink()
  _data_file(tmp_path, 12).unlink()  # ckpt-12 lost its data: not complete
  assert tf.train.latest_checkpoint(str(tmp_path)) is None  # what the old restore relied on
  with caplog.at_level(logging.WARNING):
    prefix, step, weights = _restore(tmp_path)
  assert (prefix, step) == (str(tmp_path / "ckpt-8"), 8)
  np.testing.assert_array_equal(weights, [8.0, 8.0, 8.0])
  assert f"{tmp_path}/ckpt-12.data-*: no data shard" in caplog.text
  # The state file names the one restored, so later tools and the manager agree.
  assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-8")
  assert checkpoints.find_latest_complete(str(tmp_path)) == str(tmp_path / "ckpt-8")


def test_the_rewritten_state_lets_the_manager_go_on_deleting_the_oldest(tmp_path):
  _save_steps(tmp_path)
  (tmp_path / "checkpoint").unlink()
  _restore(tmp_path)
  _save_steps(tmp_path, steps=(16, 20), keep=3)  # a new manager reads the rewritten state
  assert sorted(p.name for p in tmp_path.glob("*.index")) == [
    "ckpt-12.index",
    "ckpt-16.index",
    "ckpt-20.index",
  ]


@pytest.mark.parametrize("damage", ["checksum", "truncated_index"])
def test_a_damaged_newest_checkpoint_is_named_and_the_previous_one_restored(
  tmp_path, caplog, damage
):
  _save_steps(tmp_path)
  if damage == "checksum":
    data = bytearray(_data_file(tmp_path, 12).read_bytes())
    data[3] ^= 0xFF  # inside the first tensor's bytes: its crc32c no longer matches
    _data_file(tmp_path, 12).write_bytes(bytes(data))
    expected = f"{tmp_path}/ckpt-12 is unreadable: "
    detail = "Checksum does not match"
  else:
    index = tmp_path / "ckpt-12.index"
    index.write_bytes(index.read_bytes()[:40])
    expected = f"{tmp_path}/ckpt-12.index is unreadable: "
    detail = "sstable"
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-12")
  with caplog.at_level(logging.WARNING):
    prefix, step, weights = _restore(tmp_path)
  assert (prefix, step) == (str(tmp_path / "ckpt-8"), 8)
  np.testing.assert_array_equal(weights, [8.0, 8.0, 8.0])
  (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert warning.startswith(expected) and detail in warning
  assert warning.endswith("falling back to the checkpoint before it")
  assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-8")


def test_ckpt_files_with_no_complete_checkpoint_are_refused_by_name(tmp_path):
  _save_steps(tmp_path, steps=(4, 8))
  (tmp_path / "checkpoint").unlink()
  for step in (4, 8):
    _data_file(tmp_path, step).unlink()
  with pytest.raises(checkpoints.CheckpointError) as error:
    _restore(tmp_path)
  message = str(error.value)
  assert message.startswith(f"{tmp_path}: no usable checkpoint (")
  assert f"{tmp_path}/ckpt-8.data-*: no data shard" in message and "ckpt-4.data-*" in message
  with pytest.raises(checkpoints.CheckpointError, match="no complete checkpoint"):
    checkpoints.find_latest_complete(str(tmp_path))


def test_an_empty_model_dir_is_a_fresh_start(tmp_path):
  prefix, step, weights = _restore(tmp_path)
  assert prefix is None and step == 0 and not weights.any()
  assert checkpoints.find_latest_complete(str(tmp_path / "not_yet")) is None


def test_a_checkpoint_of_other_objects_is_an_error_not_a_fallback(tmp_path):
  _save_steps(tmp_path)
  run = Run(width=5)  # another shape
  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpoints.restore_with_fallback(tf.train.Checkpoint(run=run), str(tmp_path))
  assert str(error.value).startswith(f"{tmp_path}/ckpt-12 does not hold this training: ")
  assert "(3,)" in str(error.value) and "(5,)" in str(error.value)


def test_a_missing_middle_shard_makes_a_checkpoint_incomplete(tmp_path):
  prefix = tmp_path / "ckpt-3"
  for name in ("index", "data-00000-of-00003", "data-00002-of-00003"):
    pathlib.Path(f"{prefix}.{name}").write_bytes(b"x")
  assert checkpoints.incomplete_reason(str(prefix)) == (
    f"{prefix}.data-00001-of-00003 is missing (1 of 3)"
  )


# --------------------------------------------------------------------------- the training loop


def _loop(model_dir):
  """A Loop over the tiny network; only its checkpointing is used here."""
  keras.utils.set_random_seed(0)
  step = tf.Variable(0, dtype=tf.int64, trainable=False)
  network = model.build_model(ModelConfig.tiny(32))
  trainer = Trainer(network, LossWeights(), 2, 32)
  trainer.compile(optimizer=make_optimizer(0.05, 1000, 0.5, step, False))
  dataset = tf.data.Dataset.range(100).map(lambda i: {"index": i})
  config = tiny_run_config(model_dir).loop
  return Loop(tf.distribute.get_strategy(), trainer, dataset, config, step)


def test_the_loop_resumes_after_its_state_file_is_lost(tmp_path, caplog):
  first = _loop(tmp_path)
  for step in (4, 8):
    first.global_step.assign(step)
    next(first.iterator)
    first.manager.save(checkpoint_number=step)
  saved = [v.numpy() for v in first.trainer.network.trainable_variables]
  (tmp_path / "checkpoint").unlink()
  (tmp_path / "ckpt-12_temp").mkdir()  # an interrupted save
  (tmp_path / "ckpt-12_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate1").touch()
  second = _loop(tmp_path)
  for variable in second.trainer.network.trainable_variables:
    variable.assign(tf.zeros_like(variable))
  with caplog.at_level(logging.INFO):
    assert second.restore()
  assert int(second.global_step.numpy()) == 8  # not step 0, which would overwrite ckpt-4/8
  assert int(next(second.iterator)["index"].numpy()) == 2  # the iterator resumes too
  for before, after in zip(saved, second.trainer.network.trainable_variables):
    np.testing.assert_array_equal(before, after.numpy())
  assert f"resumed from {tmp_path}/ckpt-8 at step 8" in caplog.text
  assert not (tmp_path / "ckpt-12_temp").exists()
  assert second.manager.latest_checkpoint == str(tmp_path / "ckpt-8")


# --------------------------------------------------------------------------- temporaries


def test_only_what_interrupted_saves_leave_is_cleaned(tmp_path):
  # Names as TF 2.21 leaves them (a saving process killed mid-save): a "<prefix>_temp" folder
  # of "part-*.tempstate<n>" files; the atomic state write's "checkpoint.tmp<32 hex>".
  temp = tmp_path / "ckpt-16_temp"
  temp.mkdir()
  (temp / "part-00000-of-00001.data-00000-of-00001.tempstate12471278748828593242").touch()
  (tmp_path / ("checkpoint.tmp" + "0123456789abcdef" * 2)).touch()
  (tmp_path / "ckpt-16.index.tempstate99").touch()
  keep = ["ckpt-8.index", "ckpt-8.data-00000-of-00001", "checkpoint", "config.json", "notes_temp"]
  for name in keep:
    (tmp_path / name).touch()
  (tmp_path / "train").mkdir()
  (tmp_path / "ckpt-8_tempo").mkdir()
  removed = checkpoints.clean_temporaries(str(tmp_path))
  assert sorted(os.path.basename(p) for p in removed) == [
    "checkpoint.tmp" + "0123456789abcdef" * 2,
    "ckpt-16.index.tempstate99",
    "ckpt-16_temp",
  ]
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["train", "ckpt-8_tempo"])


# --------------------------------------------------------------------------- the lock


def _holder(model_dir, then="sleep"):
  """A process that takes the lock, says so, then sleeps or kills itself."""
  code = (
    "import os, signal, sys, time\n"
    "from wild3d_tf import checkpoints\n"
    "lock = checkpoints.ModelDirLock(sys.argv[1]).acquire()\n"
    "print('locked', flush=True)\n"
    f"{'time.sleep(60)' if then == 'sleep' else 'os.kill(os.getpid(), signal.SIGKILL)'}\n"
  )
  process = subprocess.Popen(
    [sys.executable, "-c", code, str(model_dir)],
    stdout=subprocess.PIPE,
    text=True,
    cwd=ROOT,
    env=dict(os.environ, PYTHONPATH=str(ROOT)),
  )
  assert process.stdout.readline().strip() == "locked"
  return process


def test_a_second_training_on_a_model_dir_is_refused_by_name(tmp_path):
  process = _holder(tmp_path)
  try:
    with pytest.raises(checkpoints.ModelDirInUse) as error:
      checkpoints.ModelDirLock(str(tmp_path)).acquire()
    assert str(error.value).startswith(
      f"{tmp_path} is in use by another training: {tmp_path}/training.lock is held by "
      f"pid {process.pid} on {socket.gethostname()} since "
    )
  finally:
    process.kill()
    process.wait()


def test_two_locks_in_one_process_exclude_each_other_and_release_tidies(tmp_path):
  with checkpoints.ModelDirLock(str(tmp_path)):
    holder = json.loads((tmp_path / "training.lock").read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(checkpoints.ModelDirInUse, match=f"pid {os.getpid()}"):
      checkpoints.ModelDirLock(str(tmp_path)).acquire()
  assert not (tmp_path / "training.lock").exists()
  checkpoints.ModelDirLock(str(tmp_path)).acquire().release()


def test_the_lock_of_a_killed_training_is_taken_over_with_a_warning(tmp_path, caplog):
  process = _holder(tmp_path, then="kill")
  assert process.wait() == -signal.SIGKILL
  assert json.loads((tmp_path / "training.lock").read_text())["pid"] == process.pid
  with caplog.at_level(logging.WARNING):
    lock = checkpoints.ModelDirLock(str(tmp_path)).acquire()
  try:
    assert f"taking over {tmp_path}/training.lock left by pid {process.pid}" in caplog.text
    assert json.loads((tmp_path / "training.lock").read_text())["pid"] == os.getpid()
  finally:
    lock.release()


def _dead_pid():
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


@pytest.mark.parametrize(
  "holder, taken",
  [
    (lambda: {"pid": _dead_pid(), "host": socket.gethostname()}, True),
    (lambda: {"pid": os.getppid(), "host": socket.gethostname()}, False),  # alive
    (lambda: {"pid": _dead_pid(), "host": "another-host"}, False),  # cannot tell: refuse
  ],
)
def test_without_flock_a_dead_pid_on_this_host_is_taken_over(
  tmp_path, monkeypatch, caplog, holder, taken
):
  def no_flock(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(fcntl, "flock", no_flock)
  record = dict(holder(), started="2026-01-01T00:00:00Z")
  (tmp_path / "training.lock").write_text(json.dumps(record))
  lock = checkpoints.ModelDirLock(str(tmp_path))
  if taken:
    with caplog.at_level(logging.WARNING):
      lock.acquire()
    assert f"left by pid {record['pid']} on {record['host']}" in caplog.text
    assert json.loads((tmp_path / "training.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "training.lock").exists()
  else:
    with pytest.raises(checkpoints.ModelDirInUse, match=f"held by pid {record['pid']} on"):
      lock.acquire()
    assert json.loads((tmp_path / "training.lock").read_text()) == record


def test_train_refuses_a_locked_model_dir_before_writing_there(tmp_path):
  from wild3d_tf import train

  process = _holder(tmp_path)
  try:
    with pytest.raises(checkpoints.ModelDirInUse, match=f"^{tmp_path} is in use"):
      train.run(tiny_run_config(tmp_path, data_dir=tmp_path / "no_data"))
  finally:
    process.kill()
    process.wait()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["training.lock"]  # no config.json


# --------------------------------------------------------------------------- --init_from


def _network(variant_size=32, seed=0):
  keras.utils.set_random_seed(seed)
  return model.build_model(ModelConfig.tiny(variant_size))


def test_init_from_sets_every_weight_of_this_network(tmp_path):
  source = _network(seed=1)
  step = tf.Variable(5, dtype=tf.int64)
  tf.train.CheckpointManager(
    tf.train.Checkpoint(network=source, global_step=step), str(tmp_path), 1
  ).save(checkpoint_number=5)
  target = _network(seed=2)
  assert checkpoints.init_network(target, str(tmp_path), "tiny") == str(tmp_path / "ckpt-5")
  for a, b in zip(source.weights, target.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_init_from_another_network_names_the_checkpoint_and_the_mismatch(tmp_path):
  other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5, name="other_dense")])
  tf.train.CheckpointManager(tf.train.Checkpoint(network=other), str(tmp_path), 1).save(3)
  network = _network()
  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpoints.init_network(network, str(tmp_path))
  message = str(error.value)
  assert message.startswith(
    f"{tmp_path}/ckpt-3 does not hold this network: {len(network.variables)} variables are "
    "not in it, e.g. "
  )
  shown = re.findall(r"(\S+) \(", message.split("e.g. ")[1])
  assert len(shown) == 4 and set(shown) <= {v.path for v in network.variables}


def test_init_from_another_variant_names_config_json(tmp_path):
  full = tiny_run_config(tmp_path)
  full = type(full)(**{**full.__dict__, "model": ModelConfig(variant="full", input_size=64)})
  full.save(str(tmp_path))
  tf.train.CheckpointManager(tf.train.Checkpoint(network=_network()), str(tmp_path), 1).save(9)
  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpoints.init_network(_network(), str(tmp_path), "tiny")
  assert str(error.value) == (
    f"{tmp_path}/ckpt-9 holds the 'full' variant ({tmp_path}/config.json); this run builds 'tiny'"
  )


def test_init_from_weights_of_another_shape_names_them(tmp_path):
  tf.train.CheckpointManager(
    tf.train.Checkpoint(network=_network(variant_size=32)), str(tmp_path), 1
  ).save(2)
  with pytest.raises(checkpoints.CheckpointError, match=r"ckpt-2 does not hold this network: "):
    checkpoints.init_network(_network(variant_size=64), str(tmp_path / "ckpt-2"))


# --------------------------------------------------------------------------- evaluation and export


def test_load_network_finds_the_checkpoint_when_the_state_file_is_lost(tmp_path):
  from wild3d_tf import inference

  saved = write_checkpoint(tmp_path, input_size=32, seed=3)
  (tmp_path / "checkpoint").unlink()
  loaded = inference.load_network(str(tmp_path))
  for a, b in zip(saved.weights, loaded.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
