"""Dataflow readiness: the package its workers install from ``--setup_file ./setup.py`` builds,
installs into a clean virtual environment and imports from there, not from this checkout."""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

from apache_beam.runners.portability.stager import Stager
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# What setup.py packages (its find_packages include list) and reads (README.md).
SOURCES = ("setup.py", "README.md", "wild3d_tf", "beam_preprocess")

pytestmark = pytest.mark.slow


def test_the_setup_file_package_installs_and_imports_in_a_clean_venv(tmp_path):
  source = tmp_path / "source"  # a copy: building writes egg-info and build/ beside setup.py
  source.mkdir()
  for name in SOURCES:
    if (REPO / name).is_dir():
      shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy2(REPO / name, source / name)
  dist = tmp_path / "dist"
  dist.mkdir()
  # The launcher's own step for --setup_file (Beam's stager: `python -m build --sdist` when
  # installed, else `python setup.py sdist`); the workers pip-install what it returns.
  sdist = Stager._build_setup_package(str(source / "setup.py"), str(dist))
  assert pathlib.Path(sdist).name == "wild3d-0.1.0.tar.gz"

  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = venv / "bin" / "python"
  own = subprocess.run(
    [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
    check=True,
    capture_output=True,
    text=True,
  ).stdout.strip()
  # The dependencies (TensorFlow, Beam, pip, setuptools) come from this environment, appended
  # after the venv's own site-packages; a path line does not run that folder's .pth files, so
  # the editable install of this checkout stays out.
  (pathlib.Path(own) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
  install = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet"]
  subprocess.run([*install, sdist], check=True, env=env, cwd=tmp_path, timeout=300)

  script = (
    "import beam_preprocess.convert, beam_preprocess.storage, wild3d_tf.schema, wild3d_tf.synthetic"
    ", pathlib\n"
    "for m in (beam_preprocess.convert, wild3d_tf.schema):\n"
    "  print(pathlib.Path(m.__file__).resolve())\n"
    "data = pathlib.Path(wild3d_tf.synthetic.__file__).parent / 'data'\n"
    "print(len(list(data.glob('*.bvh'))))\n"
  )
  result = subprocess.run(
    [python, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
  )
  assert result.returncode == 0, result.stderr[-3000:]
  *modules, bvh_files = result.stdout.split()
  site = pathlib.Path(own).resolve()
  for module in modules:
    assert pathlib.Path(module).is_relative_to(site), f"{module} imported from outside {site}"
  assert int(bvh_files) > 0  # package_data travels with the package
