"""Training: losses fall, NaN steps are skipped or stop the run, exact resume after SIGKILL,
MirroredStrategy equals one device, the datasets a run reads."""

import dataclasses
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from wild3d_tf import config as config_lib
from wild3d_tf import data, losses, model, preprocess, shards
from wild3d_tf.config import DataConfig, LoopConfig, ModelConfig
from wild3d_tf.losses import LossWeights
from wild3d_tf.trainer import Loop, NonFiniteLossError, Trainer, is_pretrained, make_optimizer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _loop(
  folder,
  work_dir,
  steps,
  dataset_fn=None,
  log_every=1000,
  max_nonfinite=20,
  size=64,
  jit_compile=False,
):
  keras.utils.set_random_seed(0)
  # Augmentation in the step (the default with an accelerator): Trainer.finish is exercised.
  config = DataConfig(data_dir=str(folder), batch_size=8, shuffle_buffer=32, augment_in_step=True)
  dataset = data.training_dataset(
    config, "full", input_size=size, heatmap_size=ModelConfig.tiny(size).heatmap_size
  )
  if dataset_fn:
    dataset = dataset_fn(dataset)
  step = tf.Variable(0, dtype=tf.int64, trainable=False)
  network = model.build_model(ModelConfig.tiny(size))
  trainer = Trainer(network, LossWeights(), 8, size)
  trainer.compile(optimizer=make_optimizer(0.05, 1000, 0.5, step, False))
  return Loop(
    tf.distribute.get_strategy(),
    trainer,
    dataset,
    LoopConfig(
      str(work_dir),
      steps,
      checkpoint_every=1000,
      log_every=log_every,
      max_nonfinite=max_nonfinite,
      jit_compile=jit_compile,
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
      joints3d = batch[preprocess.JOINTS3D_VIRTUAL_MM]
      batch[preprocess.JOINTS3D_VIRTUAL_MM] = tf.where(
        bad, tf.fill(tf.shape(joints3d), np.nan), joints3d
      )
      return batch

    return dataset.enumerate().map(fn)

  return poison


def test_a_nan_batch_is_skipped_and_counted(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  loop = _loop(folder, tmp_path, 6, _poison(at=2))  # batch 2 is a 3D batch: its pose loss is NaN
  before = {}

  original = loop.step

  def spy(batch):
    if int(loop.global_step.numpy()) == 2:
      before.update({v.path: v.numpy().copy() for v in loop.trainer.network.trainable_variables})
    finite = original(batch)
    if int(loop.global_step.numpy()) == 2:
      for v in loop.trainer.network.trainable_variables:
        np.testing.assert_array_equal(v.numpy(), before[v.path])  # no update from the bad batch
    return finite

  loop.step = spy
  result = loop.run()
  assert result["skipped"] == 1 and result["step"] == 6
  assert all(np.isfinite(v.numpy()).all() for v in loop.trainer.network.trainable_variables)


def test_xla_is_a_setting_of_the_loop(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  loops = {xla: _loop(folder, tmp_path / f"xla{xla}", 1, jit_compile=xla) for xla in (False, True)}
  assert loops[True]._compiled_step._jit_compile and not loops[False]._compiled_step._jit_compile
  staged = next(loops[False].iterator)
  # The images finished beforehand: XLA rounds a few pixels of the in-step augmentation by a
  # grey level otherwise (tests/test_augment.py), which moves the loss by about 2e-4.
  batch = loops[False].trainer.finish(staged)
  before = [v.numpy() for v in loops[True].trainer.network.trainable_variables]
  for loop in loops.values():
    assert bool(loop.step(batch))
  # The same step: the same losses (Adadelta's first update is about lr * sqrt(eps / (1 - rho))
  # for any gradient far from 0, so the weights would not tell a wrong gradient from a right one).
  logged = {
    xla: {name: float(m.result()) for name, m in loop.trainer.trackers.items()}
    for xla, loop in loops.items()
  }
  assert logged[True].keys() == logged[False].keys() and logged[False]["pose3d"] > 0
  for name, value in logged[False].items():
    assert logged[True][name] == pytest.approx(value, rel=1e-4), name
  moved = [
    np.abs(v.numpy() - b).max()
    for v, b in zip(loops[True].trainer.network.trainable_variables, before)
  ]
  assert np.mean(np.array(moved) > 0) > 0.9  # the compiled step updated the network
  # Augmentation inside an XLA-compiled function: tests/test_augment.py (finish_batch alone; a
  # second XLA compilation of the whole step here would double this test's time).
  with pytest.raises(ValueError, match="LoopConfig"):
    loops[True].trainer.compile(optimizer=loops[True].trainer.optimizer, jit_compile=True)


def test_a_persistent_nan_stops_with_the_step_range(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  loop = _loop(folder, tmp_path, 10, _poison(every=True), max_nonfinite=3)
  with pytest.raises(NonFiniteLossError, match=r"3 consecutive steps \(1\.\.3\)"):
    loop.run()


def test_updates_dropped_by_the_loss_scaler_are_counted_and_shown(converted_tiny, tmp_path, capsys):
  folder, _ = converted_tiny
  loop = _loop(folder, tmp_path, 3, log_every=1)
  # A scale no float can carry: every scaled gradient overflows, so the scaler drops each
  # update (halving the scale) although every loss is finite.
  loop.trainer.optimizer.dynamic_scale.assign(3e38)
  before = {v.path: v.numpy().copy() for v in loop.trainer.network.trainable_variables}
  result = loop.run()
  assert result["loss_scale_skipped"] == 3 and result["skipped"] == 0 and result["step"] == 3
  for v in loop.trainer.network.trainable_variables:
    np.testing.assert_array_equal(v.numpy(), before[v.path])
  lines = re.findall(r"^step \d+/3 .*$", capsys.readouterr().out, re.M)
  assert [
    re.search(r"skipped (\d+) non-finite, (\d+) loss-scale", line).groups() for line in lines
  ] == [
    ("0", "1"),
    ("0", "2"),
    ("0", "3"),
  ]


def test_ctrl_c_saves_and_stops_after_the_current_step(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  loop = _loop(folder, tmp_path, 50)
  original = loop.step

  def interrupt_at_step_2(batch):
    if int(loop.global_step.numpy()) == 1:  # the second step
      os.kill(os.getpid(), signal.SIGINT)
    return original(batch)

  loop.step = interrupt_at_step_2
  # The handler before the run (default_int_handler, or SIG_IGN under a background shell).
  previous = signal.getsignal(signal.SIGINT)
  result = loop.run()
  assert result["stopped_by"] == "SIGINT" and result["step"] == 2
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
  assert signal.getsignal(signal.SIGINT) is previous  # handler given back


@pytest.mark.slow
def test_sigterm_saves_and_exits_with_a_distinct_status(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  command = _train_command(folder, tmp_path / "run", 400, tmp_path / "digests.txt")
  process = subprocess.Popen(
    [*command, "--log_every=1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
  )
  for line in process.stdout:  # the first progress line: training is under way
    if line.startswith("step "):
      break
  process.send_signal(signal.SIGTERM)
  rest = process.stdout.read()
  assert process.wait(timeout=120) == 128 + signal.SIGTERM, rest
  stopped = re.search(r"stopped by SIGTERM at step (\d+); checkpoint saved", rest)
  assert stopped and "done:" not in rest, rest
  saved = tf.train.latest_checkpoint(str(tmp_path / "run"))
  assert saved.endswith(f"ckpt-{stopped.group(1)}") and int(stopped.group(1)) < 400


def _train_command(folder, model_dir, steps, digests, *extra):
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
    "--augment_in_step",  # the batches are staged; the step finishes them
    *extra,
  ]


def _checkpoint_values(model_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
  return {
    name: reader.get_tensor(name)
    for name in reader.get_variable_to_shape_map()
    if "save_counter" not in name and "iterator" not in name
  }


def _digests(path):
  """[(step, sha256)] in the order the run wrote them."""
  return [(int(step), digest) for step, digest in (line.split() for line in open(path))]


@pytest.mark.slow
def test_kill_and_resume_is_exact(converted_tiny, tmp_path, composition="across_steps"):
  """SIGKILL after a checkpoint; the restart must continue from that checkpoint, not start over.

  A restart from step 0 that ignored the checkpoint would also end with the
  uninterrupted run's weights (the data order and the seeds are the same), so
  the test also checks where the resumed run starts and what it reads. The
  default composition only, for the suite's time: within_step passes too (run
  it with composition="within_step"); its stream's resume is
  tests/test_data.py::test_a_within_step_stream_resumes_exactly_from_a_checkpoint.
  """
  folder, _ = converted_tiny
  steps = 25
  flag = f"--batch_composition={composition}"
  subprocess.run(
    _train_command(folder, tmp_path / "a", steps, tmp_path / "a.txt", flag),
    check=True,
    capture_output=True,
  )
  uninterrupted = dict(_digests(tmp_path / "a.txt"))
  assert sorted(uninterrupted) == list(range(1, steps + 1))
  process = subprocess.Popen(
    _train_command(folder, tmp_path / "b", steps, tmp_path / "b.txt", flag),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 240
  while not (tmp_path / "b" / "ckpt-5.index").exists() and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(random.uniform(0.0, 0.5))
  process.send_signal(signal.SIGKILL)
  process.wait()
  before_kill = _digests(tmp_path / "b.txt")
  saved = int(tf.train.latest_checkpoint(str(tmp_path / "b")).rsplit("-", 1)[1])
  assert 5 <= saved < steps and saved % 5 == 0 and len(before_kill) >= saved, (saved, before_kill)
  assert all(uninterrupted[step] == digest for step, digest in before_kill)

  resumed = subprocess.run(
    _train_command(folder, tmp_path / "b", steps, tmp_path / "b_resumed.txt", flag),
    check=True,
    capture_output=True,
    text=True,
  )
  # It starts right after the checkpoint and reads exactly the batches that followed it.
  after = _digests(tmp_path / "b_resumed.txt")
  assert [step for step, _ in after] == list(range(saved + 1, steps + 1)), (saved, after[:3])
  for step, digest in after:
    assert uninterrupted[step] == digest, step
  progress = [int(m) for m in re.findall(r"^step (\d+)/", resumed.stdout, re.M)]
  assert progress == list(range(saved + 5, steps + 1, 5)), (saved, progress)
  # And ends with the uninterrupted run's weights and optimizer state, bit for bit.
  a, b = _checkpoint_values(tmp_path / "a"), _checkpoint_values(tmp_path / "b")
  assert a.keys() == b.keys() and any("optimizer" in k for k in a)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


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


@pytest.fixture(scope="module")
def full_batch(converted_tiny):
  """One global batch (8) of the full stage's stream at 64 px: every label the terms read, and
  the images (augmentation finished in the pipeline)."""
  folder, _ = converted_tiny
  config = DataConfig(data_dir=str(folder), batch_size=8, shuffle_buffer=16, augment_in_step=False)
  heatmap_size = ModelConfig.tiny(64).heatmap_size
  return next(iter(data.training_dataset(config, "full", input_size=64, heatmap_size=heatmap_size)))


def _one_step_updates(batch, weights, multiplier, optimizer="adadelta"):
  """{variable path: max |change|} of a tiny network (seed 0) after one train_step."""
  keras.utils.set_random_seed(0)
  network = model.build_model(ModelConfig.tiny(64))
  trainer = Trainer(network, weights, 8, 64)
  step = tf.Variable(0, dtype=tf.int64)
  trainer.compile(optimizer=make_optimizer(0.05, 1000, 0.5, step, False, multiplier, optimizer))
  trainer.optimizer.build(network.trainable_variables)
  before = {v.path: v.numpy() for v in network.trainable_variables}
  # Eagerly: one step's values are the traced step's (to 1e-6, measured), and tracing the whole
  # step and optimizer would cost about ten times the step (the loop tests trace it).
  assert bool(trainer.train_step(batch))
  return {v.path: np.abs(v.numpy() - before[v.path]).max() for v in network.trainable_variables}


def test_stage1_layers_learn_100x_slower_when_asked(full_batch):
  updates = {m: _one_step_updates(full_batch, LossWeights(), m) for m in (1.0, 0.01)}
  # Paper Sec. 4.2: every layer trained in stage 1, not only the ImageNet part.
  for name in ("conv1_conv/kernel", "conv4_block6_3_conv/kernel", "res5a_1_conv/kernel"):
    assert updates[0.01][name] / updates[1.0][name] == pytest.approx(0.01, rel=1e-3)
  assert updates[0.01]["f3d_conv/kernel"] / updates[1.0]["f3d_conv/kernel"] == pytest.approx(
    0.01, rel=1e-3
  )
  for name in ("z/kernel", "f3d_fc1/kernel", "f3d_out/kernel", "fc_out/kernel"):  # 3D stage
    assert updates[0.01][name] / updates[1.0][name] == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("stage", ["baseline", "pretrain2d"])
def test_the_multiplier_trains_stages_that_leave_layers_without_gradients(full_batch, stage):
  # The baseline has no projection (the camera MLP gets no gradient), pre-training no 3D
  # losses: keras' MultiOptimizer refused the shortened gradient list at the first step.
  weights = LossWeights.pretrain2d() if stage == "pretrain2d" else LossWeights.for_ablation(stage)
  updates = _one_step_updates(full_batch, weights, 0.01)
  untouched = ("fc_hidden/kernel", "fc_out/kernel", "fc_out/bias")
  if stage == "pretrain2d":
    untouched += ("z/kernel", "f3d_fc2/kernel", "f3d_out/kernel")
  else:
    assert updates["f3d_out/kernel"] > 0
  for name in untouched:
    assert updates[name] == 0.0, name
  assert updates["conv1_conv/kernel"] > 0 and updates["conv4_block6_3_conv/kernel"] > 0


@pytest.mark.parametrize("name", config_lib.OPTIMIZERS)
def test_zero_gradients_leave_a_variable_and_its_slots_untouched(name):
  # Trainer.train_step gives the learning-rate split zeros for the layers the loss does not
  # reach: with slots at zero, neither Adadelta nor Adam moves them, and the slots stay zero.
  optimizer = make_optimizer(0.05, 1000, 0.5, tf.Variable(0, dtype=tf.int64), False, 0.01, name)
  stage1, head = keras.layers.Dense(3, name="conv1_conv"), keras.layers.Dense(3, name="fc_out")
  for layer in (stage1, head):
    layer.build((None, 2))
  variables = [stage1.kernel, head.kernel]
  optimizer.build(variables)
  kind = {"adadelta": keras.optimizers.Adadelta, "adam": keras.optimizers.Adam}[name]
  assert [type(o) for o in optimizer.inner_optimizer.optimizers] == [kind, kind]
  before = [v.numpy() for v in variables]
  rng = np.random.default_rng(0)
  for _ in range(3):
    optimizer.apply([rng.normal(size=(2, 3)).astype(np.float32), np.zeros((2, 3), np.float32)])
  assert np.abs(stage1.kernel.numpy() - before[0]).min() > 0
  np.testing.assert_array_equal(head.kernel.numpy(), before[1])
  slots = [
    v
    for o in optimizer.inner_optimizer.optimizers
    for v in o.variables
    if "fc_out_kernel" in v.name
  ]
  assert len(slots) == 2 and not any(np.any(v.numpy()) for v in slots)


def test_make_optimizer_builds_the_requested_optimizer_and_names_the_flag():
  step = tf.Variable(0, dtype=tf.int64)
  assert type(make_optimizer(1e-3, 10, 0.5, step, False, optimizer="adam").inner_optimizer) is (
    keras.optimizers.Adam
  )
  adadelta = make_optimizer(0.05, 10, 0.5, step, False).inner_optimizer
  assert type(adadelta) is keras.optimizers.Adadelta
  assert (adadelta.rho, adadelta.epsilon) == (0.9, 1e-6)  # the paper's
  with pytest.raises(ValueError, match=r"^--optimizer must be one of adadelta, adam; got 'sgd'$"):
    make_optimizer(0.05, 10, 0.5, step, False, optimizer="sgd")


def test_stage1_variables_are_the_ones_the_pretraining_losses_reach(full_batch):
  network = model.build_model(ModelConfig.tiny(64))
  trainer = Trainer(network, LossWeights.pretrain2d(), 8, 64)
  with tf.GradientTape() as tape:
    outputs = network(full_batch[preprocess.IMAGE], training=True)
    loss, _ = losses.total(outputs, trainer.labels(full_batch), LossWeights.pretrain2d(), 8, 64)
  variables = network.trainable_variables
  reached = {v.path for v, g in zip(variables, tape.gradient(loss, variables)) if g is not None}
  stage1 = {v.path for v in variables if is_pretrained(v)}
  assert stage1 == reached
  # Golden split of the tiny network: 2 weights per BN (gamma, beta), 1 per conv of the
  # backbone (no bias), kernel and bias of the F3D convolution; 2 per dense layer after it.
  assert len(stage1) == 159 - 16 and len(variables) - len(stage1) == 16
  assert sorted({v.path.split("/")[0] for v in variables} - {p.split("/")[0] for p in stage1}) == [
    "f3d_fc1", "f3d_fc2", "f3d_fc3", "f3d_fc4", "f3d_out", "fc_hidden", "fc_out", "z"
  ]  # fmt: skip


def _parsed_and_refused(fields: str, recipe: list[str], bad: list[str], tmp_path):
  """Parses train's flags in subprocesses, all at once (train's required flags would stay in
  this process's FLAGS): the defaults and ``recipe`` into a RunConfig ``rc``, printing the
  expression ``fields``; and runs ``python -m wild3d_tf.train`` with ``bad``. Returns (the
  defaults' printed line, the recipe's, the bad run's exit code, its stderr)."""
  script = (
    "import sys; from absl import flags; from wild3d_tf import train; train.define_flags(); "
    "flags.FLAGS(['train', '--data_dir=d', '--model_dir=m', *sys.argv[1:]]); "
    f"rc = train.run_config_from_flags(); print({fields})"
  )
  commands = [
    [sys.executable, "-c", script],
    [sys.executable, "-c", script, *recipe],
    [sys.executable, "-m", "wild3d_tf.train", f"--data_dir={tmp_path}", f"--model_dir={tmp_path}"]
    + bad,
  ]
  runs = [
    subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands
  ]
  (paper, _), (ours, _), (_, refused) = [r.communicate(timeout=300) for r in runs]
  return (
    paper.strip().splitlines()[-1],
    ours.strip().splitlines()[-1],
    runs[2].returncode,
    refused,
  )


def test_recipe_flags_reach_the_run_config_and_a_bad_stride_is_one_line(tmp_path):
  recipe = [
    "--variant=tiny",
    "--input_size=128",
    "--heatmap_stride=8",
    "--tie_camera_scales",
    "--optimizer=adam",
    "--pretrained_lr_multiplier=0.01",
  ]
  paper, ours, code, bad = _parsed_and_refused(
    "rc.model.stride, rc.model.heatmap_size, rc.model.tie_camera_scales, "
    "rc.optimizer.optimizer, rc.optimizer.pretrained_lr_multiplier",
    recipe,
    ["--heatmap_stride=4"],
    tmp_path,
  )
  assert paper == "16 16 False adadelta 1.0"
  assert ours == "8 16 True adam 0.01"
  assert code == 1
  assert bad.strip().splitlines()[-1] == (
    "error: stride (train.py --heatmap_stride) must be one of (16, 8); got 4"
  )


def test_data_recipe_flags_reach_the_run_config_and_a_bad_value_names_the_flag(tmp_path):
  paper, ours, code, bad = _parsed_and_refused(
    "rc.data.bone_length_target, rc.data.batch_composition",
    ["--bone_length_target=ratios", "--batch_composition=within_step"],
    ["--bone_length_target=median"],
    tmp_path,
  )
  assert paper == "random_subject across_steps"
  assert ours == "ratios within_step"
  assert code != 0
  # absl's one line names the flag and the choices (config.BONE_LENGTH_TARGETS).
  assert "flag --bone_length_target=median: value should be one of <random_subject|" in bad, bad


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


def _subset(folder, target, datasets):
  """A data folder holding only the conversions of some datasets (symbolic links to each
  one's shard folder and its manifest in the root)."""
  target.mkdir()
  for dataset in datasets:
    (target / dataset).symlink_to(folder / dataset)
    manifest = shards.manifest_path(str(folder), dataset)
    (target / manifest.rpartition("/")[2]).symlink_to(manifest)
  return target


def test_pretraining_reads_no_3d_dataset_and_a_missing_one_is_named(converted_tiny, tmp_path):
  folder, _ = converted_tiny
  only_2d = _subset(folder, tmp_path / "only_2d", ("mpii", "lsp", "lspet"))
  config = DataConfig(data_dir=str(only_2d), batch_size=8, shuffle_buffer=16, augment_in_step=False)
  heatmap_size = ModelConfig.tiny(64).heatmap_size
  batch = next(
    iter(data.training_dataset(config, "pretrain2d", input_size=64, heatmap_size=heatmap_size))
  )
  assert batch["image"].shape == (8, 64, 64, 3) and not batch["has_3d"].numpy().any()
  with pytest.raises(FileNotFoundError, match=f"{only_2d} has no conversion of h36m, mpi_inf_3dhp"):
    data.training_dataset(config, "full", input_size=64, heatmap_size=heatmap_size)
  with pytest.raises(FileNotFoundError, match="no converted dataset at all.*expected mpii"):
    data.training_dataset(
      dataclasses.replace(config, data_dir=str(tmp_path)),
      "pretrain2d",
      input_size=64,
      heatmap_size=heatmap_size,
    )


@pytest.mark.slow
def test_datasets_3d_h36m_trains_on_h36m_alone(converted_tiny, tmp_path):
  """configs/full_h36m_only.cfg's setting: a folder without MPI-INF-3DHP trains with
  --datasets_3d=h36m, and without the flag refuses in one line naming what is missing."""
  folder, _ = converted_tiny
  no_3dhp = _subset(folder, tmp_path / "no_3dhp", ("mpii", "lsp", "lspet", "h36m"))

  def command(name, *extra):
    return [
      sys.executable,
      "-m",
      "wild3d_tf.train",
      f"--flagfile={ROOT}/configs/tiny_full.cfg",
      f"--data_dir={no_3dhp}",
      f"--model_dir={tmp_path / name}",
      "--input_size=64",
      "--max_steps=2",
      "--log_every=1",
      "--validate_every=0",
      "--image_summaries_every=0",
      *extra,
    ]

  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  runs = [
    subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for c in (command("h36m", "--datasets_3d=h36m"), command("default"))
  ]
  (trained_out, trained_err), (refused_out, refused_err) = (p.communicate(600) for p in runs)
  assert runs[0].returncode == 0, trained_err[-3000:]
  assert "step 2/2" in trained_out
  run_config = config_lib.load(str(tmp_path / "h36m"))
  assert run_config.data.datasets_3d == ("h36m",) and run_config.data.shuffle_buffer == 64
  assert run_config.model == ModelConfig.tiny(64) and run_config.loop.max_steps == 2
  assert "cuInit" not in trained_err and "oneDNN" not in trained_err  # quiet start-up
  assert runs[1].returncode == 1
  assert refused_err.strip().splitlines() == [
    f"error: --data_dir {no_3dhp} has no conversion of mpi_inf_3dhp; expected "
    "mpi_inf_3dhp.manifest.json (the converter's --output_dir: python -m "
    "beam_preprocess.convert --dataset=NAME --output_dir=DATA_DIR)"
  ]
  assert not (tmp_path / "default").exists()  # a refused run leaves no run folder


def test_every_config_file_parses_and_each_stage_pair_builds_the_same_network():
  # One subprocess: train's (required) flags would stay in this process's FLAGS.
  script = (
    "import json, pathlib, sys; from absl import flags; from wild3d_tf import train; "
    "train.define_flags(); out = {}\n"
    "for cfg in sorted(pathlib.Path(sys.argv[1]).glob('*.cfg')):\n"
    "  flags.FLAGS.unparse_flags()\n"
    "  flags.FLAGS(['train', f'--flagfile={cfg}', '--data_dir=d', '--model_dir=m'])\n"
    "  rc = train.run_config_from_flags()\n"
    "  out[cfg.name] = [rc.stage, rc.model.to_json() if hasattr(rc.model, 'to_json') "
    "else repr(rc.model)]\n"
    "print(json.dumps(out))"
  )
  run = subprocess.run(
    [sys.executable, "-c", script, str(ROOT / "configs")],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  parsed = json.loads(run.stdout.strip().splitlines()[-1])
  assert set(parsed) == {p.name for p in (ROOT / "configs").glob("*.cfg")}
  # Stage 2 starts from stage 1's weights (--init_from): the pair must build one network.
  for first, second in (
    ("pretrain2d.cfg", "full.cfg"),
    ("tiny_pretrain2d.cfg", "tiny_full.cfg"),
    ("bench_pretrain2d.cfg", "bench_full.cfg"),
  ):
    assert parsed[first][0] == "pretrain2d" and parsed[second][0] == "full"
    assert parsed[first][1] == parsed[second][1], (first, second)
