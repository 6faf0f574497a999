"""Architecture rules of docs/style: flags only at entry points, data flows one way."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENTRY_POINTS = {"demo", "train", "evaluate", "export", "predict", "lifting", "__main__", "convert"}


def _imports(path):
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _modules(package):
  return sorted((ROOT / package).rglob("*.py"))


def test_flags_only_in_entry_points():
  offenders = [
    str(p.relative_to(ROOT))
    for p in _modules("wild3d_tf") + _modules("beam_preprocess")
    if p.stem not in ENTRY_POINTS and "absl.flags" in set(_imports(p))
  ]
  assert not offenders, f"absl.flags imported outside entry points: {offenders}"


def test_library_never_imports_beam():
  offenders = [
    str(p.relative_to(ROOT))
    for p in _modules("wild3d_tf")
    if any(name.startswith("apache_beam") for name in _imports(p))
  ]
  assert not offenders


def test_core_imports_nothing_above_it():
  core = {"skeletons", "cameras", "geometry", "geometry_tf", "metrics"}
  allowed = {f"wild3d_tf.{name}" for name in core} | {"wild3d_tf"}
  for name in core:
    for imported in _imports(ROOT / "wild3d_tf" / f"{name}.py"):
      if imported.startswith("wild3d_tf"):
        assert imported in allowed, f"{name}.py imports {imported}"
