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
  assert (
    run_all.replace_block(text, "x", "new\n")
    == "intro\n<!-- run_all: x -->\nnew\n<!-- end run_all: x -->\nreading\n"
  )
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
  subsets = {
    name: dict(zip(("pck", "auc", "mpjpe", "frames"), values)) for name, values in scores.items()
  }
  return {"protocols": {p: {"subsets": subsets} for p in ("unscaled", "scaled", "procrustes")}}


def test_studio_pools_gs_and_nogs_by_frames(tmp_path):
  path = tmp_path / "results.json"
  path.write_text(
    json.dumps(
      _results(
        {
          "GS": (90.0, 50.0, 100.0, 30),
          "NoGS": (60.0, 20.0, 200.0, 10),
          "Outdoor": (40.0, 10.0, 300.0, 5),
          "All": (0, 0, 0, 45),
        }
      )
    )
  )
  out = ablation.studio_and_wild(path)
  assert out["Studio"]["scaled"] == pytest.approx({"pck": 82.5, "auc": 42.5, "mpjpe": 125.0})
  assert out["Outdoor"]["procrustes"]["pck"] == 40.0


def test_the_table_reports_mean_and_sample_spread_over_seeds():
  scores = {}
  for variant in ablation.NAMES:
    for seed, value in ((0, 10.0), (1, 20.0), (2, 30.0)):
      entry = {"pck": value, "auc": value / 2, "mpjpe": 10 * value}
      scores[variant, seed] = {
        key: {p: entry for p in ("scaled", "procrustes")} for key in ("Outdoor", "Studio")
      }
  text = ablation.table(scores, [0, 1, 2])
  row = next(line for line in text.splitlines() if line.startswith("| lifting |"))
  # mean 20, sample std of (10, 20, 30) = 10
  assert row.split(" | ")[1:4] == ["20.0 ± 10.0", "10.0 ± 5.0", "200.0 ± 100.0"]


def test_training_curves_read_back_from_tensorboard_keeping_a_resumed_runs_values(tmp_path):
  import tensorflow as tf

  for values in (
    {50: 3.0, 100: 2.0, 150: 9.0},
    {150: 1.5, 200: 1.0},
  ):  # killed after 150, resumed from 100
    writer = tf.summary.create_file_writer(str(tmp_path / "train"))
    with writer.as_default():
      for step, value in values.items():
        tf.summary.scalar("loss/pose3d", value, step=step)
        tf.summary.scalar("loss/other", -value, step=step)
    writer.close()
  steps, values = ablation.scalar_curve(tmp_path, "loss/pose3d")
  assert steps.tolist() == [50, 100, 150, 200] and values.tolist() == [3.0, 2.0, 1.5, 1.0]


def test_rewriting_the_results_keeps_the_hand_written_notes(tmp_path):
  import argparse

  args = argparse.Namespace(
    preset="bench",
    network="tiny",
    pretrain_steps=10,
    full_steps=20,
    equal_3d_batches=False,
    lifting_epochs=2,
    lifting_examples=30,
  )
  entry = {"pck": 1.0, "auc": 2.0, "mpjpe": 3.0}
  scores = {
    (v, 0): {k: {p: entry for p in ("scaled", "procrustes")} for k in ("Outdoor", "Studio")}
    for v in (*ablation.NAMES, ablation.MEAN_POSE)
  }
  path = tmp_path / "results.md"
  ablation.write_results(path, args, [0], scores, ["python step one"], [])
  path.write_text(path.read_text() + ablation.NOTES + "\nWhy the order is what it is.\n")
  ablation.write_results(path, args, [0], scores, ["python step two"], [])
  text = path.read_text()
  assert "python step two" in text and "python step one" not in text
  assert text.endswith(ablation.NOTES + "\nWhy the order is what it is.\n")


def test_printed_tables_get_the_blank_line_markdown_needs():
  assert (
    run_all.markdown("title\n| a |\n|---|\n| 1 |\n\nnext\n| b |\n")
    == "title\n\n| a |\n|---|\n| 1 |\n\nnext\n\n| b |"
  )
