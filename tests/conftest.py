"""Shared fixtures: the synthetic tiny datasets, generated once per test process."""

import pytest

from wild3d_tf.synthetic import generate

NATIVE_FOLDERS = {"h36m": "h36m", "mpi_inf_3dhp": "mpi_inf_3dhp", "mpi_inf_3dhp_test": "mpi_inf_3dhp_test_set",
                  "mpii": "mpii", "lsp": "lsp", "lspet": "lspet"}


def convert_dataset(dataset, input_dir, output_dir, *extra):
  from beam_preprocess import convert
  return convert.run(["convert", f"--dataset={dataset}", f"--input_dir={input_dir}", f"--output_dir={output_dir}",
                      "--runner=DirectRunner", "--direct_running_mode=in_memory", *extra])


@pytest.fixture(scope="session")
def synthetic_tiny(tmp_path_factory):
  root = tmp_path_factory.mktemp("synthetic_tiny")
  generate.generate(str(root), "tiny", seed=0)
  return root


@pytest.fixture(scope="session")
def converted_tiny(synthetic_tiny, tmp_path_factory):
  """(folder of TFRecords, manifests) of every synthetic tiny dataset."""
  out = tmp_path_factory.mktemp("tfrecords_tiny")
  manifests = {d: convert_dataset(d, synthetic_tiny / folder, out) for d, folder in NATIVE_FOLDERS.items()}
  return out, manifests
