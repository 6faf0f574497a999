"""The benchmark drivers' bookkeeping: docs blocks, the ablation's pooling and table."""

import importlib.util
import json
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
  spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


run_all, ablation = _load("run_all"), _load("ablation")


def test_a_block_is_replaced_and_the_prose_around_it_kept():
  text = "intro\n<!-- run_all: x -->\nold table\n<!-- end run_all: x -->\nreading\n"
  assert run_all.replace_block(text, "x", "new\n") == "intro\n<!-- run_all: x -->\nnew\n<!-- end run_all: x -->\nreading\n"
  with pytest.raises(ValueError, match="doc.md: expected one block '<!-- run_all: y -->'.*found 0"):
    run_all.replace_block(text, "y", "new", source="doc.md")
  with pytest.raises(ValueError, match="found 2"):
    run_all.replace_block(text + text, "x", "new")


def test_every_benchmark_has_its_block_in_the_docs():
  text = run_all.DOC.read_text()
  for name in run_all.BENCHMARKS:
    if name != "ablation":
      run_all.replace_block(text, name, "checked")
    for command in run_all.BENCHMARKS[name]:
      assert (BENCHMARKS.parent / command[0]).is_file(), command


def _results(scores):
  """A results.json as ``evaluate`` writes it, with given (pck, auc, mpjpe, frames) per subset."""
  subsets = {name: dict(zip(("pck", "auc", "mpjpe", "frames"), values)) for name, values in scores.items()}
  return {"protocols": {p: {"subsets": subsets} for p in ("unscaled", "scaled", "procrustes")}}


def test_studio_pools_gs_and_nogs_by_frames(tmp_path):
  path = tmp_path / "results.json"
  path.write_text(json.dumps(_results({"GS": (90.0, 50.0, 100.0, 30), "NoGS": (60.0, 20.0, 200.0, 10),
                                       "Outdoor": (40.0, 10.0, 300.0, 5), "All": (0, 0, 0, 45)})))
  out = ablation.studio_and_wild(path)
  assert out["Studio"]["scaled"] == pytest.approx({"pck": 82.5, "auc": 42.5, "mpjpe": 125.0})
  assert out["Outdoor"]["procrustes"]["pck"] == 40.0


def test_the_table_reports_mean_and_sample_spread_over_seeds():
  scores = {}
  for variant in ablation.NAMES:
    for seed, value in ((0, 10.0), (1, 20.0), (2, 30.0)):
      entry = {"pck": value, "auc": value / 2, "mpjpe": 10 * value}
      scores[variant, seed] = {key: {p: entry for p in ("scaled", "procrustes")} for key in ("Outdoor", "Studio")}
  text = ablation.table(scores, [0, 1, 2])
  row = next(line for line in text.splitlines() if line.startswith("| lifting |"))
  # mean 20, sample std of (10, 20, 30) = 10
  assert row.split(" | ")[1:4] == ["20.0 ± 10.0", "10.0 ± 5.0", "200.0 ± 100.0"]
