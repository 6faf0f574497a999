"""Training: losses fall, NaN steps are skipped or stop the run, exact resume after SIGKILL,
MirroredStrategy equals one device."""

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import data, model
from wild3d_tf.config import DataConfig, LossWeights, ModelConfig
from wild3d_tf.trainer import Loop, LoopConfig, NonFiniteLossError, Trainer, make_optimizer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _loop(folder, work_dir, steps, dataset_fn=None, log_every=1000, max_nonfinite=20, size=64):
  keras.utils.set_random_seed(0)
  config = DataConfig(data_dir=str(folder), input_size=size, batch_size=8, shuffle_buffer=32)
  dataset = data.training_dataset(config, "full")
  if dataset_fn:
    dataset = dataset_fn(dataset)
  step = tf.Variable(0, dtype=tf.int64, trainable=False)
  network = model.build_model(config=ModelConfig.tiny(size), variant="tiny")
  trainer = Trainer(network, LossWeights(), 8)
  trainer.compile(optimizer=make_optimizer(0.05, 1000, 0.5, step, False))
  return Loop(
    tf.distribute.get_strategy(),
    trainer,
    dataset,
    LoopConfig(
      str(work_dir), steps, checkpoint_every=1000, log_every=log_every, max_nonfinite=max_nonfinite
    ),
    step,
  )


@pytest.mark.slow
def test_every_loss_term_falls(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  result = _loop(folder, tmp_path, 160, log_every=20, size=128).run()
  history = result["history"]
  early, late = history[0], history[-1]
  for term in (
    "loss",
    "heatmap",
    "intermediate_heatmap",
    "pose3d",
    "bone_3d",
    "bone_2d",
    "projection",
  ):
    assert late[term] < early[term], (term, early[term], late[term])
  assert result["step"] == 160 and result["skipped"] == 0


def _poison(every=False, at=2):
  def poison(dataset):
    def fn(index, batch):
      bad = tf.logical_or(every, tf.equal(index, at))
      batch = dict(batch)
      batch["joints3d"] = tf.where(
        bad, tf.fill(tf.shape(batch["joints3d"]), np.nan), batch["joints3d"]
      )
      return batch

    return dataset.enumerate().map(fn)

  return poison


def test_a_nan_batch_is_skipped_and_counted(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  loop = _loop(folder, tmp_path, 6, _poison(at=2))  # batch 2 is a 3D batch: its pose loss is NaN
  before = {}

  original = loop._step_fn

  def spy(batch):
    if int(loop.global_step.numpy()) == 2:
      before.update({v.path: v.numpy().copy() for v in loop.trainer.network.trainable_variables})
    finite = original(batch)
    if int(loop.global_step.numpy()) == 2:
      for v in loop.trainer.network.trainable_variables:
        np.testing.assert_array_equal(v.numpy(), before[v.path])  # no update from the bad batch
    return finite

  loop._step_fn = spy
  result = loop.run()
  assert result["skipped"] == 1 and result["step"] == 6
  assert all(np.isfinite(v.numpy()).all() for v in loop.trainer.network.trainable_variables)


def test_a_persistent_nan_stops_with_the_step_range(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  loop = _loop(folder, tmp_path, 10, _poison(every=True), max_nonfinite=3)
  with pytest.raises(NonFiniteLossError, match=r"3 consecutive steps \(1\.\.3\)"):
    loop.run()


def _train_command(folder, model_dir, steps, digests):
  return [
    sys.executable,
    "-m",
    "wild3d_tf.train",
    f"--flagfile={ROOT}/configs/tiny_full.cfg",
    f"--data_dir={folder}",
    f"--model_dir={model_dir}",
    f"--max_steps={steps}",
    "--checkpoint_every=5",
    "--log_every=5",
    "--input_size=64",
    "--deterministic",
    f"--batch_digest_file={digests}",
    "--image_summaries_every=0",
  ]


def _checkpoint_values(model_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
  return {
    name: reader.get_tensor(name)
    for name in reader.get_variable_to_shape_map()
    if "save_counter" not in name and "iterator" not in name
  }


@pytest.mark.slow
def test_kill_and_resume_is_exact(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  steps = 25
  subprocess.run(
    _train_command(folder, tmp_path / "a", steps, tmp_path / "a.txt"),
    check=True,
    capture_output=True,
  )
  command = _train_command(folder, tmp_path / "b", steps, tmp_path / "b.txt")
  process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not (tmp_path / "b" / "ckpt-5.index").exists() and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(random.uniform(0.0, 0.5))
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = len((tmp_path / "b.txt").read_text().splitlines())
  assert 5 <= killed_at < steps, killed_at
  subprocess.run(command, check=True, capture_output=True)
  a, b = _checkpoint_values(tmp_path / "a"), _checkpoint_values(tmp_path / "b")
  assert a.keys() == b.keys() and any("optimizer" in k for k in a)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  # The batches seen after the resume are the ones the uninterrupted run saw.
  a_lines = dict(line.split() for line in (tmp_path / "a.txt").read_text().splitlines())
  b_lines = [line.split() for line in (tmp_path / "b.txt").read_text().splitlines()]
  resumed = b_lines[killed_at:]
  assert resumed and int(resumed[0][0]) <= killed_at
  for step, digest in resumed:
    assert a_lines[step] == digest, step


@pytest.mark.slow
def test_mirrored_over_two_cpus_equals_one_device(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  out = subprocess.run(
    [sys.executable, str(ROOT / "tests/helpers/distributed_twins.py"), str(folder), str(tmp_path)],
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  values = {
    k: float(v) for k, v in (line.split() for line in out.splitlines() if line.startswith("max_"))
  }
  assert values["max_update"] > 1e-4
  # Measured: about 1 % of the update, in conv1 only: augmentation's zero-filled borders make
  # exact max-pooling ties, and summation order decides where their gradient goes. A wrong
  # distribution (gradients averaged instead of summed, one replica's slice only, unsynchronised
  # batch norm) changes the update by 50 % or more.
  assert values["max_abs_difference"] < 0.05 * values["max_update"], values


def test_pretrained_layers_learn_100x_slower_when_asked(converted_tiny):
  folder, _ = converted_tiny
  config = DataConfig(data_dir=str(folder), input_size=64, batch_size=8, shuffle_buffer=16)
  batch = next(iter(data.training_dataset(config, "full")))
  updates = {}
  for multiplier in (1.0, 0.01):
    keras.utils.set_random_seed(0)
    network = model.build_model(config=ModelConfig.tiny(64), variant="tiny")
    trainer = Trainer(network, LossWeights(), 8)
    trainer.compile(
      optimizer=make_optimizer(0.05, 1000, 0.5, tf.Variable(0, dtype=tf.int64), False, multiplier)
    )
    trainer.optimizer.build(network.trainable_variables)
    before = {v.path: v.numpy() for v in network.trainable_variables}
    tf.function(trainer.train_step)(batch)
    updates[multiplier] = {
      v.path: np.abs(v.numpy() - before[v.path]).max() for v in network.trainable_variables
    }
  for name in ("conv1_conv/kernel", "conv4_block6_3_conv/kernel"):  # ImageNet part
    assert updates[0.01][name] / updates[1.0][name] == pytest.approx(0.01, rel=1e-3)
  for name in ("res5a_1_conv/kernel", "f3d_fc1/kernel", "f3d_out/kernel"):  # new layers
    assert updates[0.01][name] / updates[1.0][name] == pytest.approx(1.0, rel=1e-6)


def _free_ports(count):
  import socket

  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.mark.slow
def test_two_workers_under_multiworker_mirrored_end_with_identical_weights(
  converted_tiny, tmp_path
):
  import json

  folder, _ = converted_tiny
  cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
  processes = []
  for index in range(2):
    env = dict(
      os.environ,
      TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
    )
    command = [
      sys.executable,
      "-m",
      "wild3d_tf.train",
      f"--flagfile={ROOT}/configs/tiny_full.cfg",
      f"--data_dir={folder}",
      f"--model_dir={tmp_path / 'run'}",
      "--strategy=multiworker",
      "--max_steps=6",
      "--checkpoint_every=3",
      "--log_every=3",
      "--input_size=64",
      "--validate_every=0",
      "--image_summaries_every=0",
    ]
    # Logs go to files: a full pipe would block a worker inside a collective and hang both.
    log = open(tmp_path / f"worker_{index}.log", "w")
    processes.append(
      (subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    )
  for index, (process, log) in enumerate(processes):
    process.wait(timeout=600)
    log.close()
    assert process.returncode == 0, (tmp_path / f"worker_{index}.log").read_text()[-3000:]
  chief, other = (
    _checkpoint_values(tmp_path / "run"),
    _checkpoint_values(tmp_path / "run" / "worker_1"),
  )
  assert chief.keys() == other.keys() and len(chief) > 100
  for name in chief:
    np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
  assert int(chief["global_step/.ATTRIBUTES/VARIABLE_VALUE"]) == 6
