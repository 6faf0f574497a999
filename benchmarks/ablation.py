"""The ablation of paper Table 5 on the synthetic benchmark, seeds and all, with one command.

3D labels come only from the studio domain (synthetic H3.6M and MPI-INF-3DHP
training sets), 2D labels only from the in-the-wild domain (MPII, LSP,
LSPET); every variant starts from the same 2D pre-training of its seed and
is evaluated on the MPI-INF-3DHP-format test set in three columns: the
studio (TS1-TS4), in the wild with the studio's kind of poses (TS5, the main
column: the appearance shift alone, as 3DHP's outdoor sequences perform the
training activities) and in the wild with wild poses (TS6, appearance and
pose shift together):

  baseline       direct 3D regression, bone losses, 2D pre-training; no 2D latent loss,
                 no projection, no 2D data in the 3D stage (--ablation=baseline --nouse_2d_data)
  latent2d_data  + explicit 2D latent loss + in-the-wild 2D data (--ablation=no_projection)
  proj_data      + projection loss + in-the-wild 2D data (--ablation=no_latent_2d)
  full           the full model (--ablation=full)
  lifting        Martinez et al.'s 2D-to-3D lifting MLP fed the full model's 2D joints
                 (python -m wild3d_tf.lifting; evaluate --lifter): no image depth cues

Beside them two floors that look at no image: the mean training pose and the
zero pose (every joint at the pelvis). The training recipe is the configs'
(``--network tiny``: configs/bench_*.cfg, the CPU recipe; ``--network full``:
the paper's configs/pretrain2d.cfg and full.cfg).

Each stage runs the user-facing command (printed). Scores are per take (a
take: a short stretch of one test sequence with its own person, clothes,
background and camera; ``wild3d_tf.synthetic.mpi_inf_3dhp.test_take_index``):
the tables give the mean over seeds of the frame-pooled PCK with the sample
spread over seeds and a 95 % interval from a bootstrap that resamples seeds
and takes together. ``results.json`` beside the Markdown holds every variant's,
seed's and column's per-take PCK (scaled and Procrustes) with each take's
valid frames, and the floors, so the success test (``SUCCESS``) can be
recomputed by anyone. Finished stages are skipped and interrupted training
resumes from its checkpoint, so a killed run continues where it stopped; the
outputs are rewritten after every seed.

  python benchmarks/ablation.py --work_dir /tmp/ablation --preset bench --seeds 0 1 2 --jobs 2 \\
      [--network full --jobs 1] --pretrain_steps 5000 --full_steps 2000 --output docs/results.md
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import queue
import shutil
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from wild3d_tf import evaluate, inference, lifting, metrics, preprocess, schema, shards, visualize
from wild3d_tf.synthetic import mpi_inf_3dhp as synthetic_3dhp
from wild3d_tf.synthetic.generate import conversion_commands
from wild3d_tf.synthetic.presets import PRESETS

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
VARIANTS = {
  "baseline": ["--ablation=baseline", "--nouse_2d_data"],
  "latent2d_data": ["--ablation=no_projection"],
  "proj_data": ["--ablation=no_latent_2d"],
  "full": ["--ablation=full"],
}
LIFTING = "lifting"
NAMES = (*VARIANTS, LIFTING)
# Answers that ignore the image: the mean training pose, and every joint at the pelvis.
MEAN_POSE = "mean training pose"
ZERO_POSE = "zero pose"
FLOORS = (MEAN_POSE, ZERO_POSE)
# A 2D joint counts as found within this fraction of the crop side (12.8 px at 128 px).
PCK2D_FRACTION = 0.1
# Column title -> the test sequences it pools (synthetic world: wild3d_tf.synthetic.mpi_inf_3dhp).
COLUMNS = {
  "studio (TS1-4)": ("TS1", "TS2", "TS3", "TS4"),
  "wild, studio poses (TS5)": ("TS5",),
  "wild, wild poses (TS6)": ("TS6",),
}
STUDIO, MAIN_WILD, HARD_WILD = COLUMNS
PROTOCOLS = ("scaled", "procrustes")
# The success test of issue 14, fixed before any run: on the main wild column full minus
# baseline (scaled PCK) is at least 5 points and more than two bootstrap standard errors
# (seeds and takes resampled together); in the studio full is at most 3 points below the
# baseline; every network is at least 5 points above the higher floor in both columns.
SUCCESS = {"wild_gain": 5.0, "standard_errors": 2.0, "studio_loss": 3.0, "above_floor": 5.0}
BOOTSTRAP_SAMPLES = 2000
# --network -> (2D pre-training config, 3D stage config); the steps and decay come from --*_steps.
CONFIG_FILES = {
  "tiny": ("bench_pretrain2d.cfg", "bench_full.cfg"),
  "full": ("pretrain2d.cfg", "full.cfg"),
}
NETWORKS = {
  "tiny": "tiny network, the CPU recipe (configs/bench_pretrain2d.cfg, bench_full.cfg)",
  "full": "full network (configs/pretrain2d.cfg, full.cfg: the paper's recipe)",
}

DONE = "DONE"  # a finished 2D pre-training (pretrain_stage)


def stage(
  command: list[str], log: list[str], done: pathlib.Path | None = None, cores=None, output=None
) -> None:
  """Runs one user-facing command, unless ``done`` exists (a finished stage of an earlier run);
  ``cores``: the CPUs to pin it to (``Cores``), None for all of this process's; ``output``: a
  file for its standard output (None: discarded)."""
  shown = " ".join(command).replace(sys.executable, "python")
  log.append(shown)
  if done is not None and done.exists():
    print(f"$ {shown}\n   (done before: {done.name} exists)", flush=True)
    return
  print(f"$ {shown}", flush=True)
  start = time.perf_counter()
  if cores is not None:
    command = ["taskset", "--cpu-list", ",".join(map(str, cores)), *command]
  subprocess.run(command, check=True, stdout=output or subprocess.DEVNULL)
  print(f"   ({time.perf_counter() - start:.0f} s: {shown})", flush=True)


def pretrain_stage(command: list[str], model_dir: pathlib.Path, log: list[str], cores=None):
  """A 2D pre-training ``stage``, marked finished by ``model_dir/DONE`` (the gate's wild-2D
  network is the ablation's seed-0 pre-training: whichever runs first, the other skips it)."""
  stage(command, log, done=model_dir / DONE, cores=cores)
  (model_dir / DONE).touch()


class Cores:
  """Runs stages side by side, each pinned to its own share of this process's CPUs.

  The tiny network's training step uses about 1.3 of 2 cores; two trainings pinned to one core
  each make 1.55x the steps of one on both (8.0 + 8.0 against 10.4 steps/s, docs/benchmarks.md),
  so ``jobs=2`` runs the ablation's independent stages (seeds, variants) two at a time. A job
  starts once the futures it needs have finished; those were always submitted before it, so the
  pool cannot deadlock. ``jobs=1`` (or no ``taskset`` on the machine) runs unpinned, in
  submission order.
  """

  def __init__(self, jobs: int):
    cpus = sorted(os.sched_getaffinity(0))
    jobs = max(1, min(jobs, len(cpus)))
    self.pinned = jobs > 1 and shutil.which("taskset") is not None
    self.free = queue.Queue()
    for share in range(jobs):
      self.free.put(cpus[share::jobs] if self.pinned else None)
    # More threads than shares: a job waiting for its inputs must not hold a share.
    self.pool = concurrent.futures.ThreadPoolExecutor(4 * jobs)

  def submit(self, job, *after: concurrent.futures.Future) -> concurrent.futures.Future:
    """Runs ``job(cores)`` when every future in ``after`` has finished (raising if one failed)."""

    def run():
      for future in after:
        future.result()
      cores = self.free.get()
      try:
        return job(cores)
      finally:
        self.free.put(cores)

    return self.pool.submit(run)

  def close(self) -> None:
    self.pool.shutdown(wait=True, cancel_futures=True)


def prepare_data(work: pathlib.Path, preset: str, log: list[str]) -> pathlib.Path:
  """Generates the synthetic native datasets and converts them (each step skipped when done);
  returns the converter's output folder."""
  native, records, python = work / "data", work / "tfrecords", sys.executable
  stage(
    [python, "-m", "wild3d_tf.synthetic", f"--out={native}", f"--preset={preset}", "--seed=0"],
    log,
    done=native / "lspet",
  )
  for dataset, command in conversion_commands(native, records, python).items():
    manifest = pathlib.Path(shards.manifest_path(str(records), dataset))
    # Records of another schema version are converted again, not reused.
    stage(command, log, done=manifest if shards.is_current(str(records), dataset) else None)
  return records


def train_command(
  config_file: str, records, model_dir, seed: int, steps: int, *extra: str
) -> list[str]:
  """``python -m wild3d_tf.train`` with a config file, a budget and switches."""
  return [
    sys.executable,
    "-m",
    "wild3d_tf.train",
    f"--flagfile={CONFIGS / config_file}",
    f"--data_dir={records}",
    f"--model_dir={model_dir}",
    f"--seed={seed}",
    f"--max_steps={steps}",
    f"--checkpoint_every={max(steps // 4, 1)}",
    "--log_every=50",
    f"--decay_steps={steps}",
    *extra,
  ]


# --------------------------------------------------------------------------- scores per take


def take_scores(arrays: dict, preset: str) -> dict:
  """{column: {"takes": [id], "frames": [valid frames], protocol: [PCK per take]}}.

  ``arrays`` are ``evaluate``'s predictions (predictions.npz); only valid
  frames count. PCK is the percent of the 3DHP PCK joints within 150 mm,
  pooled over the take's frames; a take is identified as ``TSn/index``.
  """
  report = evaluate.report_for("mpi_inf_3dhp_test", arrays)
  kept = evaluate.scored(arrays)
  sequences = np.asarray(kept["sequence"]).astype(str)
  frames = np.array([int(str(key).rsplit("/", 1)[1]) for key in kept[schema.KEY]])
  take = np.zeros(len(frames), int)
  for sequence in np.unique(sequences):
    at = sequences == sequence
    take[at] = synthetic_3dhp.test_take_index(PRESETS[preset], sequence, frames[at])
  ids = np.char.add(np.char.add(sequences, "/"), take.astype(str))
  columns = [report.joint_names.index(j) for j in report.pck_joints]
  per_frame = {p: metrics.pck_from_errors(report.errors[p][:, columns]) for p in PROTOCOLS}
  out = {}
  for title, names in COLUMNS.items():
    takes = sorted(
      set(ids[np.isin(sequences, names)]), key=lambda t: (t.split("/")[0], int(t.split("/")[1]))
    )
    out[title] = {"takes": takes, "frames": [int((ids == t).sum()) for t in takes]}
    for p in PROTOCOLS:
      out[title][p] = [float(per_frame[p][ids == t].mean()) for t in takes]
  return out


def pooled(pck: np.ndarray, frames: np.ndarray) -> np.ndarray:
  """Frame-weighted mean over takes (the last axis) of per-take PCK: the pooled PCK."""
  return (pck * frames).sum(-1) / frames.sum()


def bootstrap(per_seed: dict, frames: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0):
  """{name: (samples,) pooled PCK} over resamples of seeds and takes together.

  ``per_seed`` maps a name to its (seeds, takes) per-take PCK; every name is
  resampled with the same seeds and takes, so differences are paired.
  """
  rng = np.random.default_rng(seed)
  first = next(iter(per_seed.values()))
  n_seeds, n_takes = first.shape
  seeds = rng.integers(0, n_seeds, (samples, n_seeds))
  takes = rng.integers(0, n_takes, (samples, n_takes))
  weights = frames[takes]  # (samples, n_takes)
  out = {}
  for name, pck in per_seed.items():
    picked = pck[seeds[:, :, None], takes[:, None, :]]  # (samples, n_seeds, n_takes)
    out[name] = (picked * weights[:, None]).sum(-1).mean(-1) / weights.sum(-1)
  return out


def per_seed_matrix(scores: dict, name: str, seeds, column: str, protocol: str) -> np.ndarray:
  return np.array([scores[name, seed][column][protocol] for seed in seeds])


def success_test(scores: dict, seeds, names=VARIANTS, protocol: str = "scaled") -> dict:
  """The issue's success test (``SUCCESS``) on per-take scores ({(name, seed): take_scores})."""
  checks, numbers = {}, {}
  for column in (STUDIO, MAIN_WILD):
    frames = np.array(scores["full", seeds[0]][column]["frames"], float)
    matrices = {
      n: per_seed_matrix(scores, n, seeds, column, protocol)
      for n in (*names, *FLOORS)
      if (n, seeds[0]) in scores
    }
    point = {n: float(pooled(m, frames).mean()) for n, m in matrices.items()}
    draws = bootstrap(matrices, frames)
    diff = draws["full"] - draws["baseline"]
    numbers[column] = {
      "full_minus_baseline": point["full"] - point["baseline"],
      "standard_error": float(diff.std(ddof=1)),
      "interval_95": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))],
      "pooled": point,
    }
    floor = max(point[f] for f in FLOORS if f in point)
    checks[f"{column}: every network >= {SUCCESS['above_floor']} points above the floors"] = all(
      point[n] >= floor + SUCCESS["above_floor"] for n in names if n in point
    )
  wild, studio = numbers[MAIN_WILD], numbers[STUDIO]
  checks[f"{MAIN_WILD}: full - baseline >= {SUCCESS['wild_gain']}"] = (
    wild["full_minus_baseline"] >= SUCCESS["wild_gain"]
  )
  checks[f"{MAIN_WILD}: full - baseline > {SUCCESS['standard_errors']} standard errors"] = (
    wild["full_minus_baseline"] > SUCCESS["standard_errors"] * wild["standard_error"]
  )
  checks[f"{STUDIO}: full - baseline >= -{SUCCESS['studio_loss']}"] = (
    studio["full_minus_baseline"] >= -SUCCESS["studio_loss"]
  )
  return {"passed": all(checks.values()), "checks": checks, "numbers": numbers}


def summary_cell(scores: dict, name: str, seeds, column: str, protocol: str) -> str:
  """'mean ± seed spread [95 % interval over seeds and takes]' of the pooled PCK."""
  matrix = per_seed_matrix(scores, name, seeds, column, protocol)
  frames = np.array(scores[name, seeds[0]][column]["frames"], float)
  by_seed = pooled(matrix, frames)
  spread = by_seed.std(ddof=1) if len(seeds) > 1 else float("nan")
  low, high = np.percentile(bootstrap({name: matrix}, frames)[name], [2.5, 97.5])
  return f"{by_seed.mean():.1f} ± {spread:.1f} [{low:.1f}, {high:.1f}]"


def table(scores: dict, seeds: list[int], rows=(*NAMES, *FLOORS)) -> str:
  lines = []
  for protocol in PROTOCOLS:
    lines += [
      f"### PCK, {protocol}",
      "",
      "| variant | " + " | ".join(COLUMNS) + " |",
      "|---" * (1 + len(COLUMNS)) + "|",
    ]
    for name in rows:
      if (name, seeds[0]) not in scores:
        continue
      cells = [summary_cell(scores, name, seeds, column, protocol) for column in COLUMNS]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def success_text(result: dict) -> str:
  numbers = result["numbers"]
  lines = [f"**Success test: {'passed' if result['passed'] else 'failed'}.**", ""]
  for column in (MAIN_WILD, STUDIO):
    n = numbers[column]
    lines.append(
      f"- {column}: full - baseline = {n['full_minus_baseline']:+.1f} points, bootstrap "
      f"standard error {n['standard_error']:.1f}, 95 % interval "
      f"[{n['interval_95'][0]:+.1f}, {n['interval_95'][1]:+.1f}]"
    )
  lines += [f"- {check}: {'yes' if ok else 'no'}" for check, ok in result["checks"].items()]
  return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- floors and 2D


def evaluate_constant(
  pose: np.ndarray, records: pathlib.Path, output_dir: pathlib.Path, source: str
) -> None:
  """Scores one constant root-relative (17, 3) crop-camera pose for every test frame."""
  batches = evaluate.test_batches(str(records), "mpi_inf_3dhp_test", 128, 64)
  arrays = evaluate.collect(
    batches, lambda batch: np.broadcast_to(pose, (len(batch["image"]), *pose.shape))
  )
  evaluate.write_outputs(
    evaluate.report_for("mpi_inf_3dhp_test", arrays),
    arrays,
    str(output_dir),
    {"dataset": "mpi_inf_3dhp_test", "source": source},
  )


def mean_training_pose(lifter_dir: pathlib.Path) -> np.ndarray:
  """The lifter's output mean: the mean crop-camera pose of its augmented training crops."""
  stats = json.loads((lifter_dir / lifting.STATS_FILE).read_text())
  return np.concatenate([np.zeros((1, 3)), np.reshape(stats["y_mean"], (-1, 3))])


def two_d_scores(checkpoint: pathlib.Path, records: pathlib.Path) -> dict:
  """{column: 2D PCK} of the heatmap joints.

  2D PCK is the percent of visible joints within PCK2D_FRACTION of the crop side.
  """
  predictor = inference.Predictor(inference.load_network(str(checkpoint)))
  joints = tf.function(lambda crops: predictor.on_crops(crops)["joints2d_input"], autograph=False)
  found, visible, sequences = [], [], []
  for batch in evaluate.test_batches(str(records), "mpi_inf_3dhp_test", predictor.input_size, 64):
    error = np.linalg.norm(
      joints(tf.cast(batch[preprocess.IMAGE], tf.float32)) - batch[preprocess.JOINTS2D_INPUT_PX],
      axis=-1,
    )
    found.append(error < PCK2D_FRACTION * predictor.input_size)
    visible.append(batch[preprocess.JOINTS2D_VISIBLE].numpy() > 0)
    sequences.append(batch["sequence"].numpy().astype(str))
  found, visible = np.concatenate(found), np.concatenate(visible)
  sequences = np.concatenate(sequences)
  return {
    column: float(100.0 * found[np.isin(sequences, names)[:, None] & visible].mean())
    for column, names in COLUMNS.items()
  }


def two_d_table(scores: dict, seeds: list[int], networks=("pretrain2d", *VARIANTS)) -> str:
  rows = [
    "| network | " + " | ".join(f"{c} 2D PCK" for c in COLUMNS) + " |",
    "|---" * (1 + len(COLUMNS)) + "|",
  ]
  for name in networks:
    values = [[scores[name, seed][c] for seed in seeds] for c in COLUMNS]
    rows.append(
      f"| {name} | "
      + " | ".join(
        f"{np.mean(v):.1f} ± {np.std(v, ddof=1) if len(v) > 1 else float('nan'):.1f}"
        for v in values
      )
      + " |"
    )
  return "\n".join(rows) + "\n"


def evaluation_dir(runs: pathlib.Path, seed: int, name: str) -> pathlib.Path:
  """Where ``evaluate`` wrote a row's outputs for one seed (the zero pose: once for all)."""
  if name == ZERO_POSE:
    return runs / "zero_pose"
  if name == MEAN_POSE:
    return runs / f"seed{seed}" / "mean_pose"
  return runs / f"seed{seed}" / name / "evaluation"


def wild_pck_curves(runs: pathlib.Path, seeds: list[int], names=NAMES) -> dict:
  """{row: PCK curve (percent) over AUC thresholds} on the main wild column, scaled protocol,
  pooled over seeds."""
  curves = {}
  for name in names:
    errors = []
    for seed in seeds:
      arrays = dict(np.load(evaluation_dir(runs, seed, name) / "predictions.npz"))
      report = evaluate.report_for("mpi_inf_3dhp_test", arrays)
      columns = [report.joint_names.index(j) for j in report.pck_joints]
      at = np.isin(evaluate.scored(arrays)["sequence"].astype(str), COLUMNS[MAIN_WILD])
      errors.append(report.errors["scaled"][at][:, columns])
    curves[name] = metrics.pck_curve(np.concatenate(errors))
  return curves


def scalar_curve(run_dir: pathlib.Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of one TensorBoard scalar written by ``wild3d_tf.train``."""
  points = {}
  for path in sorted((run_dir / "train").glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == tag:
          points[event.step] = float(
            tf.make_ndarray(value.tensor)
          )  # a resumed run rewrites steps: keep the last
  steps = np.array(sorted(points))
  return steps, np.array([points[s] for s in steps])


def alternates_batches(config_file: str) -> bool:
  """Whether the 3D stage's config alternates whole 3D and 2D-only batches across steps."""
  return "--batch_composition=within_step" not in (CONFIGS / config_file).read_text()


def plot_curves(
  runs: pathlib.Path, seeds: list[int], images: pathlib.Path, network: str, names=NAMES
) -> list[pathlib.Path]:
  import matplotlib.pyplot as plt

  images.mkdir(parents=True, exist_ok=True)
  rows = (*names, *(FLOORS if LIFTING in names else ()))
  fig = visualize.pck_curve_figure(wild_pck_curves(runs, seeds, rows))
  fig.axes[0].set_title(f"{MAIN_WILD}, scaled, seeds {seeds}")
  fig.axes[0].legend(loc="upper left")
  fig.tight_layout()
  pck = images / "ablation_pck_wild.png"
  pck.write_bytes(visualize.figure_to_png(fig))

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for seed in seeds:
    steps, values = scalar_curve(runs / f"seed{seed}" / "pretrain2d", "loss/heatmap")
    axes[0].plot(steps, values, label=f"seed {seed}")
  axes[0].set(title="2D pre-training: heatmap loss", xlabel="step", yscale="log")
  alternating = alternates_batches(CONFIG_FILES[network][1])
  for index, variant in enumerate(v for v in VARIANTS if v in names):
    # Alternating whole batches, every other batch is 2D-only with a 3D term of 0: x2 gives
    # the per-3D-batch loss (within one step each kind is already averaged on its own).
    factor = 2.0 if alternating and "--nouse_2d_data" not in VARIANTS[variant] else 1.0
    for seed in seeds:
      steps, values = scalar_curve(runs / f"seed{seed}" / variant, "loss/pose3d")
      axes[1].plot(
        steps,
        factor * values,
        color=f"C{index}",
        alpha=0.8,
        label=variant if seed == seeds[0] else None,
      )
  axes[1].set(title="3D stage: 3D pose loss per 3D batch", xlabel="step", yscale="log")
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  training = images / "ablation_training.png"
  training.write_bytes(visualize.figure_to_png(fig))
  return [pck, training]


NOTES = "<!-- written by hand below: kept when ablation.py rewrites this file -->"
GATE_FILE = "gate.json"  # benchmarks/gate.py's result, in the work folder


def budget(args) -> dict:
  """The training budget of a run (results.json's "budget")."""
  return {
    "pretrain_steps": args.pretrain_steps,
    "full_steps": args.full_steps,
    "lifting_examples": args.lifting_examples,
    "lifting_epochs": args.lifting_epochs,
  }


def results_json(
  args, seeds, scores: dict, scores_2d: dict, success: dict | None, log: list[str]
) -> dict:
  """Everything needed to recompute the tables and the success test."""
  first = next(iter(scores.values()))
  return {
    "preset": args.preset,
    "network": args.network,
    "configs": list(CONFIG_FILES[args.network]),
    "seeds": list(seeds),
    "budget": budget(args),
    "columns": {title: list(names) for title, names in COLUMNS.items()},
    "pck": "percent of the 3DHP PCK joints within 150 mm, per take, pooled over its valid frames",
    "takes": {c: {"ids": first[c]["takes"], "valid_frames": first[c]["frames"]} for c in COLUMNS},
    "rows": {
      name: {
        str(seed): {c: {p: scores[name, seed][c][p] for p in PROTOCOLS} for c in COLUMNS}
        for seed in seeds
        if (name, seed) in scores
      }
      for name in dict.fromkeys(n for n, _ in scores)
    },
    "pck2d": {f"{n}/seed{s}": v for (n, s), v in scores_2d.items()},
    "success_test": {"rule": SUCCESS, **(success or {})},
    "commands": log,
  }


def read_earlier(path: pathlib.Path, args) -> dict:
  """An earlier run's results.json, checked to have had this run's preset, network and budget;
  read before anything runs, so a wrong file costs no data preparation. Raises SystemExit in
  one line naming the file (missing, not JSON, or the field that differs)."""
  try:
    earlier = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise SystemExit(f"--merge {path}: {e}") from None
  if not isinstance(earlier, dict):
    raise SystemExit(f"--merge {path}: not a JSON object (an ablation's results.json is one)")
  mine = {"preset": args.preset, "network": args.network, "budget": budget(args)}
  for key, value in mine.items():
    if earlier.get(key) != value:
      raise SystemExit(f"--merge {path}: {key} is {earlier.get(key)!r}, this run's is {value!r}")
  try:  # the structure earlier_scores reads, so that it cannot fail after the data is made
    takes = {c: len(earlier["takes"][c]["ids"]) for c in COLUMNS}
    for c in COLUMNS:
      if len(earlier["takes"][c]["valid_frames"]) != takes[c]:
        raise ValueError(f"takes.{c}: ids and valid_frames differ in length")
    if not earlier["rows"][ZERO_POSE]:
      raise ValueError(f"rows.{ZERO_POSE} is empty: the test set cannot be compared")
    for name, by_seed in earlier["rows"].items():
      for seed, columns in by_seed.items():
        int(seed)
        for c in COLUMNS:
          for protocol in PROTOCOLS:
            if len(columns[c][protocol]) != takes[c]:
              raise ValueError(f"rows.{name}.{seed}.{c}.{protocol}: not one value per take")
    for key in earlier["pck2d"]:
      int(key.rsplit("/seed", 1)[1])
  except (KeyError, IndexError, TypeError, ValueError) as e:
    raise SystemExit(
      f"--merge {path}: not an ablation results.json ({type(e).__name__}: {e})"
    ) from None
  return earlier


def earlier_scores(
  earlier: dict, path: pathlib.Path, zero: dict, seeds: list[int]
) -> tuple[dict, dict]:
  """(scores, scores_2d) of the seeds of an earlier run (``earlier``: ``read_earlier``'s reading
  of ``path``) that ``seeds`` (this run's) does not name, keyed like this run's ({(name, seed):
  take_scores}, {(name, seed): {column: 2D PCK}}), so the tables and the success test pool both.

  Its test set must be this one (``zero``: this run's zero-pose take_scores): the same takes
  with the same valid frames, and the zero pose (which depends on the labels alone) scoring the
  same on every take. Raises SystemExit naming the file and the field that differs.
  """
  for column in COLUMNS:
    takes = earlier["takes"][column]
    if takes["ids"] != zero[column]["takes"] or takes["valid_frames"] != zero[column]["frames"]:
      raise SystemExit(f"--merge {path}: takes.{column} differ from this run's test set")
    for protocol in PROTOCOLS:
      for seed, row in earlier["rows"][ZERO_POSE].items():
        if not np.allclose(row[column][protocol], zero[column][protocol], rtol=0, atol=1e-9):
          raise SystemExit(
            f"--merge {path}: rows.{ZERO_POSE}.{seed}.{column}.{protocol} differ from this "
            "run's test labels"
          )
  scores, scores_2d = {}, {}
  for name, by_seed in earlier["rows"].items():
    for seed, columns in by_seed.items():
      if int(seed) in seeds:
        continue
      scores[name, int(seed)] = {
        c: {"takes": zero[c]["takes"], "frames": zero[c]["frames"], **columns[c]} for c in COLUMNS
      }
  for key, value in earlier["pck2d"].items():
    name, seed = key.rsplit("/seed", 1)
    if int(seed) not in seeds:
      scores_2d[name, int(seed)] = value
  return scores, scores_2d


def write_results(
  path: pathlib.Path,
  args,
  seeds: list[int],
  scores: dict,
  log: list[str],
  images: list,
  scores_2d: dict | None = None,
  names=NAMES,
  gate: dict | None = None,
) -> None:
  """Writes the Markdown report to ``path`` (hand-written notes after ``NOTES`` kept) and
  ``results.json`` beside it."""
  scores_2d = scores_2d or {}
  budget = (
    f"2D pre-training {args.pretrain_steps} steps, 3D stage {args.full_steps} steps, "
    f"lifting MLP {args.lifting_epochs} epochs over {args.lifting_examples} crops"
  )
  complete = all((n, s) in scores for n in ("full", "baseline") for s in seeds)
  success = success_test(scores, seeds) if complete else None
  text = [
    f"# Paper Table 5 on the synthetic benchmark ({args.preset} preset)",
    "",
    f"Seeds {seeds}; {budget}; {NETWORKS[args.network]}. PCK < 150 mm in percent against "
    "univ_annot3, pooled over each column's valid frames: mean over seeds ± sample standard "
    "deviation over seeds [95 % bootstrap interval, seeds and takes resampled together]. "
    "'scaled' fits one least-squares scale per pose, 'procrustes' a similarity transform. "
    f"'{MEAN_POSE}' and '{ZERO_POSE}' look at no image. Per-take values: results.json.",
    "",
    *([success_text(success)] if success else []),
    table(scores, seeds, rows=(*names, *FLOORS)),
    *(
      [
        "## 2D joints of the latent heatmaps on the same test crops",
        "",
        f"Percent of visible joints within {PCK2D_FRACTION:.0%} of the crop side of the label, "
        "decoded from each network's heatmaps, mean ± sample standard deviation over seeds.",
        "",
        two_d_table(scores_2d, seeds, ("pretrain2d", *(v for v in VARIANTS if v in names))),
      ]
      if scores_2d
      else []
    ),
    *([gate_text(gate)] if gate else []),
    *[f"![{p.stem}](images/{p.name})" for p in images],
    "",
    "## Commands",
    "",
    "```",
    *log,
    "```",
    "",
  ]
  notes = path.read_text().partition(NOTES)[1:] if path.is_file() else ()
  path.write_text("\n".join(text) + "".join(notes))
  path.with_suffix(".json").write_text(
    json.dumps(results_json(args, seeds, scores, scores_2d, success, log), indent=1) + "\n"
  )
  print(f"wrote {path} and {path.with_suffix('.json').name}", flush=True)


def gate_text(gate: dict) -> str:
  """The gate's table (benchmarks/gate.py) for the report."""
  lines = [
    "## The gate: does 2D in-the-wild data carry over to the wild test domain?",
    "",
    f"{gate['rule']} Result: **{'passed' if gate['passed'] else 'failed'}**.",
    "",
    "| 2D pre-training data | " + " | ".join(f"{c} 2D PCK" for c in gate["columns"]) + " |",
    "|---" * (1 + len(gate["columns"])) + "|",
  ]
  for name, row in gate["networks"].items():
    lines.append(f"| {name} | " + " | ".join(f"{row[c]:.1f}" for c in gate["columns"]) + " |")
  return "\n".join(lines) + "\n\n`" + gate["command"] + "`\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work_dir", required=True)
  parser.add_argument("--preset", default="bench", choices=sorted(PRESETS))
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  # Defaults: the run in docs/results.md (the gate's pre-training budget, benchmarks/gate.py).
  parser.add_argument("--pretrain_steps", type=int, default=5000)
  parser.add_argument("--full_steps", type=int, default=2000)
  parser.add_argument("--lifting_examples", type=int, default=10000)
  parser.add_argument("--lifting_epochs", type=int, default=20)
  parser.add_argument(
    "--network",
    choices=sorted(CONFIG_FILES),
    default="tiny",
    help="tiny: the CPU recipe (configs/bench_*.cfg); full: the paper's network and configs (GPU)",
  )
  parser.add_argument(
    "--variants",
    nargs="+",
    choices=NAMES,
    default=list(NAMES),
    help=f"a subset of the rows ({LIFTING} needs full; the mean-pose floor comes with {LIFTING})",
  )
  parser.add_argument("--output", default=str(ROOT / "docs" / "results.md"))
  parser.add_argument(
    "--merge",
    help="results.json of an earlier run with the same preset, network and budget on the same "
    "test set (checked): its seeds that --seeds does not name join the tables and the success "
    "test, so seeds can be added on another machine or day",
  )
  parser.add_argument(
    "--jobs",
    type=int,
    default=1,
    help="stages run side by side, each pinned to its share of the CPUs (Cores); 2 on a 2-core "
    "machine with --network tiny, 1 for one GPU",
  )
  args = parser.parse_args()
  names = [n for n in NAMES if n in args.variants]
  if LIFTING in names and "full" not in names:
    parser.error(f"{LIFTING} lifts the 2D joints of the full model: add full to --variants")
  work = pathlib.Path(args.work_dir).resolve()
  runs, log, python = work / "runs", [], sys.executable
  # Read before the data: a wrong file fails at once.
  earlier = read_earlier(pathlib.Path(args.merge), args) if args.merge else None
  records = prepare_data(work, args.preset, log)
  pretrain_cfg, full_cfg = CONFIG_FILES[args.network]
  zero = evaluation_dir(runs, 0, ZERO_POSE)
  if not (zero / "results.json").is_file():
    evaluate_constant(np.zeros((17, 3)), records, zero, ZERO_POSE)
  scores, scores_2d, finished, merged = {}, {}, [], []
  if args.merge:
    arrays = dict(np.load(zero / "predictions.npz"))
    scores, scores_2d = earlier_scores(
      earlier, pathlib.Path(args.merge), take_scores(arrays, args.preset), args.seeds
    )
    merged = sorted({seed for _, seed in scores})
    log.append(f"# seeds {merged}: merged from {args.merge} (that run's commands are listed there)")
  output = pathlib.Path(args.output)
  cores = Cores(args.jobs)

  def pretrain_job(seed):
    pretrain = runs / f"seed{seed}" / "pretrain2d"

    def job(pinned):
      pretrain_stage(
        train_command(pretrain_cfg, records, pretrain, seed, args.pretrain_steps),
        pretrain,
        log,
        pinned,
      )

    return job

  def variant_job(seed, variant):
    pretrain, run_dir = runs / f"seed{seed}" / "pretrain2d", runs / f"seed{seed}" / variant
    evaluation = evaluation_dir(runs, seed, variant)

    def job(pinned):
      if variant == LIFTING:
        full = runs / f"seed{seed}" / "full"
        stage(
          [
            python,
            "-m",
            "wild3d_tf.lifting",
            f"--checkpoint={full}",
            f"--data_dir={records}",
            f"--output_dir={run_dir}",
            f"--seed={seed}",
            f"--examples={args.lifting_examples}",
            f"--epochs={args.lifting_epochs}",
          ],
          log,
          done=run_dir / "lifter.json",
          cores=pinned,
        )
        source = [f"--checkpoint={full}", f"--lifter={run_dir}"]
      else:
        stage(
          train_command(
            full_cfg,
            records,
            run_dir,
            seed,
            args.full_steps,
            f"--init_from={pretrain}",
            "--validate_every=0",
            *VARIANTS[variant],
          ),
          log,
          done=evaluation / "results.json",
          cores=pinned,
        )
        source = [f"--checkpoint={run_dir}"]
      stage(
        [
          python,
          "-m",
          "wild3d_tf.evaluate",
          *source,
          f"--data_dir={records}",
          "--dataset=mpi_inf_3dhp_test",
          f"--output_dir={evaluation}",
        ],
        log,
        done=evaluation / "results.json",
        cores=pinned,
      )

    return job

  # Every stage is submitted up front, seed by seed (a seed's variants after its pre-training,
  # the lifter after the full model); results are written as each seed finishes.
  pending = {}
  for seed in args.seeds:
    pretrained = cores.submit(pretrain_job(seed))
    pending[seed] = {
      v: cores.submit(variant_job(seed, v), pretrained) for v in names if v != LIFTING
    }
    if LIFTING in names:
      pending[seed][LIFTING] = cores.submit(variant_job(seed, LIFTING), pending[seed]["full"])
  try:
    for seed in args.seeds:
      for future in pending[seed].values():
        future.result()
      floors = [ZERO_POSE]
      if LIFTING in names:
        reference = evaluation_dir(runs, seed, MEAN_POSE)
        if not (reference / "results.json").is_file():
          lifter = runs / f"seed{seed}" / LIFTING
          evaluate_constant(
            mean_training_pose(lifter), records, reference, f"{MEAN_POSE} ({lifter})"
          )
        floors.append(MEAN_POSE)
      for name in (*names, *floors):
        arrays = dict(np.load(evaluation_dir(runs, seed, name) / "predictions.npz"))
        scores[name, seed] = take_scores(arrays, args.preset)
      for name in ("pretrain2d", *(v for v in VARIANTS if v in names)):
        scores_2d[name, seed] = two_d_scores(runs / f"seed{seed}" / name, records)
      finished.append(seed)
      images = plot_curves(runs, finished, output.parent / "images", args.network, names)
      gate_file = work / GATE_FILE
      gate = json.loads(gate_file.read_text()) if gate_file.is_file() else None
      seeds = sorted({*merged, *finished})
      write_results(output, args, seeds, scores, log, images, scores_2d, names, gate)
  finally:
    cores.close()


if __name__ == "__main__":
  main()
