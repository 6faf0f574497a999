"""Shared fixtures: the synthetic tiny datasets, generated once per test process."""

import pytest

from wild3d_tf.synthetic import generate


@pytest.fixture(scope="session")
def synthetic_tiny(tmp_path_factory):
  root = tmp_path_factory.mktemp("synthetic_tiny")
  generate.generate(str(root), "tiny", seed=0)
  return root
