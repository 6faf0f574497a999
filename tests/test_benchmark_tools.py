"""The benchmark drivers' bookkeeping: docs blocks, the ablation's pooling and table."""

import argparse
import importlib.util
import json
import os
import pathlib
import re
import shutil
import sys
import threading
import time

import numpy as np
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
  spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


run_all, ablation, gate = _load("run_all"), _load("ablation"), _load("gate")
side_by_side = _load("side_by_side")


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
    if name not in run_all.REPORT_ELSEWHERE:
      run_all.replace_block(text, name, "checked")
    for command in run_all.BENCHMARKS[name]:
      assert (BENCHMARKS.parent / command[0]).is_file(), command


def _takes(values_by_column, frames_by_column):
  """take_scores-like entry: {column: {"takes", "frames", scaled, procrustes}}."""
  return {
    column: {
      "takes": [f"T/{i}" for i in range(len(values))],
      "frames": list(frames_by_column[column]),
      "scaled": list(values),
      "procrustes": list(values),
    }
    for column, values in values_by_column.items()
  }


def _scores(per_name_seed):
  """{(name, seed): _takes(...)} with the same take frames everywhere."""
  frames = {c: [2, 6] for c in ablation.COLUMNS}
  return {
    key: _takes({c: values for c in ablation.COLUMNS}, frames)
    for key, values in per_name_seed.items()
  }


def test_pooled_pck_weights_takes_by_their_valid_frames():
  pck = np.array([[100.0, 0.0], [50.0, 50.0]])
  assert ablation.pooled(pck, np.array([1.0, 3.0])).tolist() == [25.0, 50.0]


def test_the_bootstrap_pairs_rows_and_resamples_seeds_and_takes():
  frames = np.array([1.0, 1.0, 2.0])
  a = np.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]])
  draws = ablation.bootstrap({"a": a, "b": a + 5.0}, frames, samples=500)
  # Paired: the same seeds and takes for both rows, so the difference never varies.
  assert np.allclose(draws["b"] - draws["a"], 5.0)
  # Every draw lies between the smallest and largest possible pooled value, and they vary.
  assert draws["a"].min() >= 10.0 and draws["a"].max() <= 60.0 and draws["a"].std() > 1.0
  # The mean of the draws is close to the pooled mean over seeds (35 + 40 ... = 38.75).
  assert abs(draws["a"].mean() - ablation.pooled(a, frames).mean()) < 2.0


def test_the_success_test_golden():
  base = {"baseline": [30.0, 30.0], "latent2d_data": [40.0, 40.0], "proj_data": [40.0, 40.0]}
  rows = {
    **base,
    "full": [40.0, 40.0],
    ablation.MEAN_POSE: [20.0, 20.0],
    ablation.ZERO_POSE: [5, 5],
  }
  scores = _scores({(n, s): v for n, v in rows.items() for s in (0, 1)})
  result = ablation.success_test(scores, [0, 1])
  wild = result["numbers"][ablation.MAIN_WILD]
  assert wild["full_minus_baseline"] == 10.0 and wild["standard_error"] == 0.0
  assert result["passed"]
  # Full 4 points below the baseline in the studio (and the wild) fails the test.
  scores = _scores({(n, s): v for n, v in {**rows, "full": [26.0, 26.0]}.items() for s in (0, 1)})
  result = ablation.success_test(scores, [0, 1])
  assert not result["passed"]
  assert not result["checks"][f"{ablation.STUDIO}: full - baseline >= -3.0"]
  # A network within 5 points of the mean-pose floor fails the floor check.
  scores = _scores({(n, s): v for n, v in {**rows, "baseline": [24, 24]}.items() for s in (0, 1)})
  checks = ablation.success_test(scores, [0, 1])["checks"]
  assert not checks[f"{ablation.MAIN_WILD}: every network >= 5.0 points above the floors"]


def test_the_table_reports_mean_seed_spread_and_interval():
  scores = _scores({("lifting", 0): [10.0, 10.0], ("lifting", 1): [20.0, 20.0]})
  text = ablation.table(scores, [0, 1], rows=["lifting"])
  row = next(line for line in text.splitlines() if line.startswith("| lifting |"))
  mean, rest = row.split(" | ")[1].split(" ± ")
  assert mean == "15.0" and rest.startswith("7.1 [")  # sample std of (10, 20)
  low, high = (float(x) for x in rest[5:-1].split(", "))
  assert 10.0 <= low <= 15.0 <= high <= 20.0


def test_the_gate_rule():
  def networks(studio, wild):
    return {
      "studio 2D": {gate.ablation.MAIN_WILD: studio},
      "wild 2D": {gate.ablation.MAIN_WILD: wild},
    }

  assert gate.verdict(networks(40.0, 75.0))
  assert not gate.verdict(networks(40.0, 65.0))  # the wild network falls short
  assert not gate.verdict(networks(65.0, 75.0))  # the studio network does as well


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


def _run_args():
  """The ablation's parsed flags that the report and results.json record (a small budget)."""
  return argparse.Namespace(
    preset="bench",
    network="tiny",
    pretrain_steps=10,
    full_steps=20,
    lifting_epochs=2,
    lifting_examples=30,
  )


def test_rewriting_the_results_keeps_the_hand_written_notes_and_writes_the_json(tmp_path):
  args = _run_args()
  names = (*ablation.NAMES, *ablation.FLOORS)
  scores = _scores({(n, 0): [1.0, 3.0] for n in names})
  path = tmp_path / "results.md"
  ablation.write_results(path, args, [0], scores, ["python step one"], [])
  path.write_text(path.read_text() + ablation.NOTES + "\nWhy the order is what it is.\n")
  ablation.write_results(path, args, [0], scores, ["python step two"], [])
  text = path.read_text()
  assert "python step two" in text and "python step one" not in text
  assert text.endswith(ablation.NOTES + "\nWhy the order is what it is.\n")
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["rows"]["full"]["0"][ablation.MAIN_WILD]["scaled"] == [1.0, 3.0]
  assert saved["takes"][ablation.STUDIO]["valid_frames"] == [2, 6]
  assert set(saved["rows"]) == set(names) and saved["success_test"]["rule"] == ablation.SUCCESS


def test_seeds_of_an_earlier_run_merge_back_and_a_different_test_set_is_refused(tmp_path):
  args = _run_args()
  names = (*ablation.NAMES, *ablation.FLOORS)
  scores = _scores({(n, s): [10.0 * s + i, 3.0 + s] for i, n in enumerate(names) for s in (0, 1)})
  for seed in (0, 1):  # the zero pose depends on the labels alone: the same for every seed
    scores[ablation.ZERO_POSE, seed] = _takes(
      {c: [1.0, 2.0] for c in ablation.COLUMNS}, {c: [2, 6] for c in ablation.COLUMNS}
    )
  two_d = {
    (n, s): {c: 50.0 + s for c in ablation.COLUMNS}
    for n in ("pretrain2d", *ablation.VARIANTS)
    for s in (0, 1)
  }
  ablation.write_results(tmp_path / "results.md", args, [0, 1], scores, ["python run"], [], two_d)
  path = tmp_path / "results.json"
  zero = scores[ablation.ZERO_POSE, 0]
  # This run made seed 1 again: only seed 0 comes from the file, equal to what was written.
  earlier = ablation.read_earlier(path, args)
  merged, merged_2d = ablation.earlier_scores(earlier, path, zero, [1])
  assert merged == {key: value for key, value in scores.items() if key[1] == 0}
  assert merged_2d == {key: value for key, value in two_d.items() if key[1] == 0}
  assert json.loads(path.read_text())["commands"] == ["python run"]
  # Pooled with this run's seed 1, the success test is the one on both seeds written together.
  both = {**merged, **{key: value for key, value in scores.items() if key[1] == 1}}
  assert ablation.success_test(both, [0, 1]) == ablation.success_test(scores, [0, 1])
  relabelled = _takes(
    {c: [1.0, 2.5] for c in ablation.COLUMNS}, {c: [2, 6] for c in ablation.COLUMNS}
  )
  with pytest.raises(SystemExit, match=r"results.json: rows.zero pose.0.studio \(TS1-4\).scaled"):
    ablation.earlier_scores(earlier, path, relabelled, [1])
  fewer = _takes({c: [1.0, 2.0] for c in ablation.COLUMNS}, {c: [2, 5] for c in ablation.COLUMNS})
  with pytest.raises(SystemExit, match=r"takes.studio \(TS1-4\) differ"):
    ablation.earlier_scores(earlier, path, fewer, [1])
  with pytest.raises(SystemExit, match="budget is"):
    ablation.read_earlier(path, argparse.Namespace(**{**vars(args), "full_steps": 5}))
  # Read before any data is prepared: a missing or broken file is one line naming it.
  with pytest.raises(SystemExit, match=r"--merge .*missing.json: \[Errno 2\]"):
    ablation.read_earlier(tmp_path / "missing.json", args)
  (tmp_path / "broken.json").write_text("{")
  with pytest.raises(SystemExit, match=r"--merge .*broken.json: Expecting"):
    ablation.read_earlier(tmp_path / "broken.json", args)
  saved = json.loads(path.read_text())
  for damage, message in (
    (lambda d: d.pop("takes"), "KeyError: 'takes'"),
    (lambda d: d["rows"][ablation.ZERO_POSE].clear(), "rows.zero pose is empty"),
    (lambda d: d["rows"]["full"]["0"][ablation.STUDIO]["scaled"].pop(), "not one value per take"),
    (lambda d: d["pck2d"].update(weird=1.0), "IndexError"),
  ):
    damaged = json.loads(json.dumps(saved))
    damage(damaged)
    (tmp_path / "damaged.json").write_text(json.dumps(damaged))
    with pytest.raises(SystemExit, match=rf"--merge .*damaged.json: not an .*{re.escape(message)}"):
      ablation.read_earlier(tmp_path / "damaged.json", args)
  (tmp_path / "list.json").write_text("[1, 2]")
  with pytest.raises(SystemExit, match="not a JSON object"):
    ablation.read_earlier(tmp_path / "list.json", args)


def test_printed_tables_get_the_blank_line_markdown_needs():
  assert (
    run_all.markdown("title\n| a |\n|---|\n| 1 |\n\nnext\n| b |\n")
    == "title\n\n| a |\n|---|\n| 1 |\n\nnext\n\n| b |"
  )


def test_side_by_side_stages_get_disjoint_cores_and_wait_for_their_inputs(tmp_path):
  cpus = sorted(os.sched_getaffinity(0))
  if len(cpus) < 2 or shutil.which("taskset") is None:
    pytest.skip("needs 2 CPUs and taskset")
  cores = ablation.Cores(2)
  events, lock = [], threading.Lock()

  def job(name, seconds):
    def run(share):
      with lock:
        events.append(("start", name, tuple(share)))
      time.sleep(seconds)
      with lock:
        events.append(("end", name, tuple(share)))
      return tuple(share)

    return run

  try:
    # "second" frees its share long before "first" ends: "after" must still wait for "first".
    first, second = cores.submit(job("first", 0.8)), cores.submit(job("second", 0.1))
    after = cores.submit(lambda share: (first.done(), tuple(share)), first)
    shares = {first.result(), second.result()}
    first_was_done, _ = after.result()
  finally:
    cores.close()
  assert shares == {tuple(cpus[0::2]), tuple(cpus[1::2])}  # side by side, one share each
  assert first_was_done
  held = set()
  for event, _, share in events:  # no two stages ever hold the same share at once
    assert event == "end" or share not in held
    (held.add if event == "start" else held.discard)(share)

  # The command itself runs pinned: the child sees only its share.
  seen = tmp_path / "affinity.txt"
  script = f"import os; open({str(seen)!r}, 'w').write(str(sorted(os.sched_getaffinity(0))))"
  log = []
  ablation.stage([sys.executable, "-c", script], log, cores=[cpus[1]])
  assert seen.read_text() == str([cpus[1]]) and log == [f"python -c {script}"]


def test_a_failed_input_fails_the_stages_that_need_it():
  cores = ablation.Cores(1)

  def broken(_):
    raise RuntimeError("pre-training failed")

  try:
    failed = cores.submit(broken)
    needs_it = cores.submit(lambda _: "trained", failed)
    with pytest.raises(RuntimeError, match="pre-training failed"):
      needs_it.result()
  finally:
    cores.close()


def test_side_by_side_reads_the_second_half_of_a_training_log():
  log = "\n".join(
    f"step {step}/400  loss 1.0  {rate} steps/s  input wait 2%  ETA 3 s"
    for step, rate in ((100, 2.0), (200, 9.0), (300, 10.0), (400, 11.0))
  )
  assert side_by_side.logged_rate("start-up noise\n" + log) == pytest.approx(10.5)
  with pytest.raises(ValueError, match="no 'step N/M"):
    side_by_side.logged_rate("Traceback ...")
