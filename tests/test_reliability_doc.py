"""docs/reliability.md's failure-mode table names tests that exist, so it cannot go stale."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
TABLE_TITLE = "## Failure modes and their tests"
# A test named as `tests/<file>.py::<function>`.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _tests_in(path: pathlib.Path) -> set[str]:
  """Names of the module-level test functions in ``path`` (parsed, not imported)."""
  tree = ast.parse(path.read_text(), str(path))
  return {
    node.name
    for node in tree.body
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
  }


def missing_references(text: str, root: pathlib.Path) -> list[str]:
  """Every ``tests/x.py::name`` in ``text`` whose file or test function does not exist."""
  missing, found = [], {}
  for file, name in REFERENCE.findall(text):
    path = root / file
    if file not in found:
      found[file] = _tests_in(path) if path.is_file() else set()
    if name not in found[file]:
      missing.append(f"{file}::{name}")
  return missing


def table_rows(text: str) -> list[list[str]]:
  """The cells of each data row of the failure-mode table (header and rule skipped)."""
  section = text.split(TABLE_TITLE, 1)[1].split("\n## ", 1)[0]
  lines = [line for line in section.splitlines() if line.startswith("|")]
  return [
    [cell.strip() for cell in line.strip().removeprefix("|").removesuffix("|").split("|")]
    for line in lines[2:]
  ]


def test_every_test_the_reliability_doc_names_exists():
  text = DOC.read_text()
  assert REFERENCE.search(text)
  assert missing_references(text, ROOT) == []


def test_every_failure_mode_row_names_a_test_or_says_why_not():
  rows = table_rows(DOC.read_text())
  assert len(rows) >= 30
  for mode, _case, covered, not_covered in rows:
    assert mode and (REFERENCE.search(covered) or not_covered), mode


def test_the_checker_catches_a_renamed_test(tmp_path):
  (tmp_path / "tests").mkdir()
  (tmp_path / "tests" / "test_x.py").write_text(
    "def test_kept():\n  pass\n\n\ndef helper():\n  pass\n"
  )
  text = "`tests/test_x.py::test_kept`, `tests/test_x.py::test_gone`, `tests/test_x.py::helper`, "
  text += "`tests/test_y.py::test_any`"
  assert missing_references(text, tmp_path) == [
    "tests/test_x.py::test_gone",
    "tests/test_x.py::helper",
    "tests/test_y.py::test_any",
  ]
