"""Shared fixtures: the synthetic tiny datasets, generated once per test process."""

import pathlib
import struct

import pytest

from wild3d_tf.synthetic import generate

NATIVE_FOLDERS = generate.CONVERTER_INPUTS


def convert_dataset(dataset, input_dir, output_dir, *extra):
  from beam_preprocess import convert

  return convert.run(
    [
      "convert",
      f"--dataset={dataset}",
      f"--input_dir={input_dir}",
      f"--output_dir={output_dir}",
      "--runner=DirectRunner",
      "--direct_running_mode=in_memory",
      *extra,
    ]
  )


def upload_tree(local_dir, url: str) -> int:
  """Copies every file under the local folder ``local_dir`` to ``url`` through tf.io.gfile, at
  the same relative paths (``ram://`` stands in for ``gs://``: Beam's FileSystems, which the
  converter writes through, does not know ``ram://``); returns how many files it copied."""
  import tensorflow as tf

  from wild3d_tf import storage

  local_dir, count = pathlib.Path(local_dir), 0
  for path in sorted(local_dir.rglob("*")):
    if path.is_file():
      target = storage.join(url, path.relative_to(local_dir).as_posix())
      tf.io.gfile.makedirs(storage.parent(target))
      tf.io.gfile.copy(str(path), target, overwrite=True)
      count += 1
  return count


@pytest.fixture(autouse=True)
def process_settings_restored():
  """Op determinism off and the Keras dtype policy float32 (the process's defaults) before and
  after every test: an in-process ``train.run`` turns on --deterministic and --mixed_precision
  for the whole process, in a test or in a module fixture before it (test_url_io's runs), and
  with determinism on XLA refuses the network's max-pool gradient, so an XLA test failed by
  the order the tests happened to run in."""
  import keras

  # TF's public API can turn determinism on only.
  from tensorflow.python.framework import config as tf_config

  def reset():
    if tf_config.is_op_determinism_enabled():
      tf_config.disable_op_determinism()
    keras.config.set_dtype_policy("float32")

  reset()
  yield
  reset()


@pytest.fixture(scope="session")
def synthetic_tiny(tmp_path_factory):
  root = tmp_path_factory.mktemp("synthetic_tiny")
  generate.generate(str(root), "tiny", seed=0)
  return root


@pytest.fixture(scope="session")
def converted_tiny(synthetic_tiny, tmp_path_factory):
  """(folder of TFRecords, manifests) of every synthetic tiny dataset."""
  out = tmp_path_factory.mktemp("tfrecords_tiny")
  manifests = {
    d: convert_dataset(d, synthetic_tiny / folder, out) for d, folder in NATIVE_FOLDERS.items()
  }
  return out, manifests


def tiny_run_config(model_dir, input_size=64, data_dir="unused", **loop):
  """The ``RunConfig`` that ``wild3d_tf.train`` writes for a tiny run into ``model_dir``."""
  from wild3d_tf.config import DataConfig, LoopConfig, ModelConfig, OptimizerConfig, RunConfig
  from wild3d_tf.losses import LossWeights

  return RunConfig(
    model=ModelConfig.tiny(input_size),
    data=DataConfig(data_dir=str(data_dir), batch_size=8, shuffle_buffer=64),
    loss=LossWeights(),
    optimizer=OptimizerConfig(),
    loop=LoopConfig(model_dir=str(model_dir), max_steps=7, **loop),
  )


def write_checkpoint(model_dir, input_size=64, seed=0):
  """A training directory as ``wild3d_tf.train`` leaves it: a real config.json
  (``RunConfig.save``) and a checkpoint of a tiny network."""
  import keras
  import tensorflow as tf

  from wild3d_tf import model

  keras.utils.set_random_seed(seed)
  run_config = tiny_run_config(model_dir, input_size)
  network = model.build_model(run_config.model)
  run_config.save(str(model_dir))
  tf.train.CheckpointManager(tf.train.Checkpoint(network=network), str(model_dir), 1).save(
    checkpoint_number=7
  )
  return network


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
  """(model_dir, network) of an untrained tiny 64 px network."""
  model_dir = tmp_path_factory.mktemp("tiny_checkpoint")
  return model_dir, write_checkpoint(model_dir)


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint, tmp_path_factory):
  """The SavedModel version folder exported from ``tiny_checkpoint`` through the CLI's code path."""
  from wild3d_tf import export, inference

  base = tmp_path_factory.mktemp("export")
  return pathlib.Path(
    export.export_saved_model(inference.load_network(str(tiny_checkpoint[0])), str(base))
  )


def record_ends(blob: bytes) -> list[int]:
  """Where each TFRecord ends: 8-byte little-endian length, 4-byte CRC, payload, 4-byte CRC."""
  ends, at = [], 0
  while at < len(blob):
    at += 12 + struct.unpack("<Q", blob[at : at + 8])[0] + 4
    ends.append(at)
  return ends
