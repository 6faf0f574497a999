"""The ablation of paper Table 5 on the synthetic benchmark, seeds and all, with one command.

3D labels come only from the studio domain (synthetic H3.6M and MPI-INF-3DHP
training sets), 2D labels only from the in-the-wild domain (MPII, LSP,
LSPET); every variant starts from the same 2D pre-training of its seed and
is evaluated on the MPI-INF-3DHP-format test set, in the wild (TS5-TS6,
the paper's "Outdoor") and in the studio (TS1-TS4):

  baseline       direct 3D regression, bone losses, 2D pre-training; no 2D latent loss,
                 no projection, no 2D data in the 3D stage (--ablation=baseline --nouse_2d_data)
  latent2d_data  + explicit 2D latent loss + in-the-wild 2D data (--ablation=no_projection)
  proj_data      + projection loss + in-the-wild 2D data (--ablation=no_latent_2d)
  full           the full model (--ablation=full)
  lifting        Martinez et al.'s 2D-to-3D lifting MLP fed the full model's 2D joints
                 (python -m wild3d_tf.lifting; evaluate --lifter): no image depth cues

Each stage runs the user-facing command (printed); results are the
``evaluate`` outputs of every run, aggregated into mean and sample standard
deviation over seeds of PCK, AUC and MPJPE under the scaled and Procrustes
protocols, written as Markdown with the commands, budgets and seeds, with
PCK curves and training curves under docs/images/. Finished stages are
skipped and interrupted training resumes from its checkpoint, so a killed
run continues where it stopped; the table is rewritten after every seed.

  python benchmarks/ablation.py --work_dir /tmp/ablation --preset bench --seeds 0 1 2 \\
      [--network full] --pretrain_steps 3000 --full_steps 3000 --output docs/results.md
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from wild3d_tf import evaluate, inference, lifting, metrics, preprocess, shards, visualize
from wild3d_tf.synthetic.generate import conversion_commands

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
# A constant answer, the mean training pose: what a network that ignores the image scores.
MEAN_POSE = "mean training pose"
# A 2D joint counts as found within this fraction of the crop side (12.8 px at 128 px).
PCK2D_FRACTION = 0.1
COLUMNS = {"in the wild (TS5-6)": "Outdoor", "studio (TS1-4)": "Studio"}
# --network -> (2D pre-training config, 3D stage config); the steps and decay come from --*_steps.
CONFIG_FILES = {
  "tiny": ("tiny_pretrain2d.cfg", "tiny_full.cfg"),
  "full": ("pretrain2d.cfg", "full.cfg"),
}
NETWORKS = {"tiny": "tiny network (128 px, batch 8)", "full": "full network (256 px, batch 10)"}


def stage(command: list[str], log: list[str], done: pathlib.Path | None = None) -> None:
  """Runs one user-facing command, unless ``done`` exists (a finished stage of an earlier run)."""
  shown = " ".join(command).replace(sys.executable, "python")
  log.append(shown)
  if done is not None and done.exists():
    print(f"$ {shown}\n   (done before: {done.name} exists)", flush=True)
    return
  print(f"$ {shown}", flush=True)
  start = time.perf_counter()
  subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
  print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)


def studio_and_wild(results_json: pathlib.Path) -> dict:
  """{column: {protocol: {pck, auc, mpjpe}}}, studio pooled over TS1-TS4 by frames."""
  results = json.loads(results_json.read_text())
  out = {}
  for protocol in ("scaled", "procrustes"):
    subsets = results["protocols"][protocol]["subsets"]
    studio = [subsets[s] for s in ("GS", "NoGS") if subsets[s]["frames"]]
    frames = sum(s["frames"] for s in studio)
    pooled = {k: sum(s[k] * s["frames"] for s in studio) / frames for k in ("pck", "auc", "mpjpe")}
    out.setdefault("Outdoor", {})[protocol] = subsets["Outdoor"]
    out.setdefault("Studio", {})[protocol] = pooled
  return out


def mean_and_spread(values) -> str:
  values = np.asarray(values, np.float64)
  return f"{values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else float('nan'):.1f}"


def table(scores: dict, seeds: list[int], rows=NAMES) -> str:
  lines = []
  for protocol in ("scaled", "procrustes"):
    lines += [
      f"### {protocol}",
      "",
      "| variant | "
      + " | ".join(f"{c} {m}" for c in COLUMNS for m in ("PCK", "AUC", "MPJPE"))
      + " |",
      "|---" * (1 + 3 * len(COLUMNS)) + "|",
    ]
    for variant in rows:
      cells = [
        mean_and_spread([scores[variant, seed][key][protocol][metric] for seed in seeds])
        for key in COLUMNS.values()
        for metric in ("pck", "auc", "mpjpe")
      ]
      lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def evaluate_mean_pose(
  lifter_dir: pathlib.Path, records: pathlib.Path, output_dir: pathlib.Path
) -> None:
  """Scores the lifter's output mean as a prediction.

  The output mean is the mean crop-camera pose of the lifter's augmented training crops.
  """
  stats = json.loads((lifter_dir / lifting.STATS_FILE).read_text())
  mean = np.concatenate([np.zeros((1, 3)), np.reshape(stats["y_mean"], (-1, 3))])
  batches = evaluate.test_batches(str(records), "mpi_inf_3dhp_test", stats["input_size"], 64)
  arrays = evaluate.collect(
    batches, lambda batch: np.broadcast_to(mean, (len(batch["image"]), *mean.shape))
  )
  evaluate.write_outputs(
    evaluate.report_for("mpi_inf_3dhp_test", arrays),
    arrays,
    str(output_dir),
    {"dataset": "mpi_inf_3dhp_test", "source": f"{MEAN_POSE} ({lifter_dir / lifting.STATS_FILE})"},
  )


def two_d_scores(checkpoint: pathlib.Path, records: pathlib.Path) -> dict:
  """{column: 2D PCK} of the heatmap joints.

  2D PCK is the percent of visible joints within PCK2D_FRACTION of the crop side.
  """
  predictor = inference.Predictor(inference.load_network(str(checkpoint)))
  joints = tf.function(lambda crops: predictor.on_crops(crops)["joints2d_input"])
  found, visible, sequences = [], [], []
  for batch in evaluate.test_batches(str(records), "mpi_inf_3dhp_test", predictor.input_size, 64):
    error = np.linalg.norm(
      joints(tf.cast(batch[preprocess.IMAGE], tf.float32)) - batch[preprocess.JOINTS2D_INPUT_PX],
      axis=-1,
    )
    found.append(error < PCK2D_FRACTION * predictor.input_size)
    visible.append(batch["joints2d_visible"].numpy() > 0)
    sequences.append(batch["sequence"].numpy().astype(str))
  found, visible = np.concatenate(found), np.concatenate(visible)
  subsets = metrics.scene_subsets_3dhp(np.concatenate(sequences))
  masks = {"Outdoor": subsets["Outdoor"], "Studio": subsets["GS"] | subsets["NoGS"]}
  return {
    column: 100.0 * found[masks[column][:, None] & visible].mean() for column in COLUMNS.values()
  }


def two_d_table(scores: dict, seeds: list[int], networks=("pretrain2d", *VARIANTS)) -> str:
  rows = [
    "| network | " + " | ".join(f"{c} 2D PCK" for c in COLUMNS) + " |",
    "|---" * (1 + len(COLUMNS)) + "|",
  ]
  for name in networks:
    rows.append(
      f"| {name} | "
      + " | ".join(
        mean_and_spread([scores[name, seed][c] for seed in seeds]) for c in COLUMNS.values()
      )
      + " |"
    )
  return "\n".join(rows) + "\n"


def outdoor_pck_curves(runs: pathlib.Path, seeds: list[int], names=NAMES) -> dict:
  """{variant: PCK curve (percent) over AUC thresholds}.

  On TS5-6, scaled protocol, pooled over seeds.
  """
  curves = {}
  for variant in names:
    errors = []
    for seed in seeds:
      folder = (
        runs / f"seed{seed}" / ("mean_pose" if variant == MEAN_POSE else f"{variant}/evaluation")
      )
      arrays = dict(np.load(folder / "predictions.npz"))
      report = evaluate.report_for("mpi_inf_3dhp_test", arrays)
      columns = [report.joint_names.index(j) for j in report.pck_joints]
      errors.append(report.errors["scaled"][report.subsets["Outdoor"]][:, columns])
    curves[variant] = metrics.pck_curve(np.concatenate(errors))
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


def plot_curves(
  runs: pathlib.Path, seeds: list[int], images: pathlib.Path, names=NAMES
) -> list[pathlib.Path]:
  import matplotlib.pyplot as plt

  images.mkdir(parents=True, exist_ok=True)
  fig = visualize.pck_curve_figure(
    outdoor_pck_curves(runs, seeds, (*names, *([MEAN_POSE] if LIFTING in names else [])))
  )
  fig.axes[0].set_title(f"In the wild (TS5-6), scaled, seeds {seeds}")
  fig.axes[0].legend(loc="upper left")  # the curves stay low: keep them visible
  fig.tight_layout()
  pck = images / "ablation_pck_outdoor.png"
  pck.write_bytes(visualize.figure_to_png(fig))

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for seed in seeds:
    steps, values = scalar_curve(runs / f"seed{seed}" / "pretrain2d", "loss/heatmap")
    axes[0].plot(steps, values, label=f"seed {seed}")
  axes[0].set(title="2D pre-training: heatmap loss", xlabel="step", yscale="log")
  for index, variant in enumerate(v for v in VARIANTS if v in names):
    # Variants with 2D data alternate 2D-only batches, whose 3D term is 0: x2 gives the
    # per-3D-batch loss.
    factor = 1.0 if "--nouse_2d_data" in VARIANTS[variant] else 2.0
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


def write_results(
  path: pathlib.Path,
  args,
  seeds: list[int],
  scores: dict,
  log: list[str],
  images: list,
  scores_2d: dict | None = None,
  names=NAMES,
) -> None:
  budget = (
    f"2D pre-training {args.pretrain_steps} steps, 3D stage {args.full_steps} steps"
    f"{' (x2 for variants with 2D data: equal 3D batches)' if args.equal_3d_batches else ''}"
    ", lifting MLP "
    f"{args.lifting_epochs} epochs over {args.lifting_examples} crops"
  )
  text = [
    f"# Paper Table 5 on the synthetic benchmark ({args.preset} preset)",
    "",
    f"Seeds {seeds}; {budget}; {NETWORKS[args.network]}. Mean ± sample standard deviation "
    "over seeds. PCK < 150 mm and AUC in percent, MPJPE in mm, against univ_annot3; "
    "'scaled' fits one least-squares scale per pose, 'procrustes' a similarity transform."
    + (
      f" The row '{MEAN_POSE}' is no model: every frame gets the mean training pose."
      if LIFTING in names
      else ""
    ),
    "",
    table(scores, seeds, rows=(*names, *([MEAN_POSE] if LIFTING in names else []))),
    *(
      [
        "## 2D joints of the latent heatmaps on the same test crops",
        "",
        f"Percent of visible joints within {PCK2D_FRACTION:.0%} of the crop side of the label, "
        "decoded from each network's heatmaps (the lifting baseline lifts the full model's). "
        "Only pretrain2d, latent2d_data and full train the heatmaps in the 3D stage; "
        "the other two carry them over from pre-training.",
        "",
        two_d_table(scores_2d, seeds, ("pretrain2d", *(v for v in VARIANTS if v in names))),
      ]
      if scores_2d
      else []
    ),
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
  print(f"wrote {path}", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work_dir", required=True)
  parser.add_argument("--preset", default="bench", choices=["tiny", "small", "bench"])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--pretrain_steps", type=int, default=3000)
  parser.add_argument("--full_steps", type=int, default=3000)
  parser.add_argument("--lifting_examples", type=int, default=20000)
  parser.add_argument("--lifting_epochs", type=int, default=40)
  parser.add_argument(
    "--equal_3d_batches",
    action="store_true",
    help="give variants with 2D data twice the steps: batches alternate, so at equal steps they "
    "see half the 3D batches of the baseline (default: equal steps, as the paper counts)",
  )
  parser.add_argument(
    "--network",
    choices=sorted(CONFIG_FILES),
    default="tiny",
    help="tiny: CPU-sized configs; full: the paper's network and configs (GPU)",
  )
  parser.add_argument(
    "--variants",
    nargs="+",
    choices=NAMES,
    default=list(NAMES),
    help=f"a subset of the rows ({LIFTING} needs full; the mean-pose row comes with {LIFTING})",
  )
  parser.add_argument("--output", default=str(ROOT / "docs" / "results.md"))
  args = parser.parse_args()
  names = [n for n in NAMES if n in args.variants]
  if LIFTING in names and "full" not in names:
    parser.error(f"{LIFTING} lifts the 2D joints of the full model: add full to --variants")
  work = pathlib.Path(args.work_dir).resolve()
  native, records, runs = work / "data", work / "tfrecords", work / "runs"
  python, log = sys.executable, []
  stage(
    [python, "-m", "wild3d_tf.synthetic", f"--out={native}", f"--preset={args.preset}", "--seed=0"],
    log,
    done=native / "lspet",
  )
  for dataset, command in conversion_commands(native, records, python).items():
    manifest = pathlib.Path(shards.manifest_path(str(records), dataset))
    # Records of another schema version are converted again, not reused.
    stage(command, log, done=manifest if shards.is_current(str(records), dataset) else None)
  scores, scores_2d, finished = {}, {}, []
  output = pathlib.Path(args.output)
  for seed in args.seeds:
    pretrain = runs / f"seed{seed}" / "pretrain2d"
    stage(
      [
        python,
        "-m",
        "wild3d_tf.train",
        f"--flagfile={CONFIGS / CONFIG_FILES[args.network][0]}",
        f"--data_dir={records}",
        f"--model_dir={pretrain}",
        f"--seed={seed}",
        f"--max_steps={args.pretrain_steps}",
        f"--checkpoint_every={max(args.pretrain_steps // 4, 1)}",
        "--log_every=50",
        f"--decay_steps={args.pretrain_steps}",
      ],
      log,
      done=pretrain / "DONE",
    )
    (pretrain / "DONE").touch()
    for variant in names:
      run_dir = runs / f"seed{seed}" / variant
      evaluation = run_dir / "evaluation"
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
        )
        source = [f"--checkpoint={full}", f"--lifter={run_dir}"]
      else:
        switches = VARIANTS[variant]
        steps = args.full_steps * (
          2 if args.equal_3d_batches and "--nouse_2d_data" not in switches else 1
        )
        stage(
          [
            python,
            "-m",
            "wild3d_tf.train",
            f"--flagfile={CONFIGS / CONFIG_FILES[args.network][1]}",
            f"--data_dir={records}",
            f"--model_dir={run_dir}",
            f"--init_from={pretrain}",
            f"--seed={seed}",
            f"--max_steps={steps}",
            f"--checkpoint_every={max(steps // 4, 1)}",
            "--validate_every=0",
            "--log_every=50",
            f"--decay_steps={steps}",
            *switches,
          ],
          log,
          done=evaluation / "results.json",
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
      )
      scores[variant, seed] = studio_and_wild(evaluation / "results.json")
    if LIFTING in names:
      reference = runs / f"seed{seed}" / "mean_pose"
      if not (reference / "results.json").is_file():
        evaluate_mean_pose(runs / f"seed{seed}" / LIFTING, records, reference)
      scores[MEAN_POSE, seed] = studio_and_wild(reference / "results.json")
    for name in ("pretrain2d", *(v for v in VARIANTS if v in names)):
      scores_2d[name, seed] = two_d_scores(runs / f"seed{seed}" / name, records)
    finished.append(seed)
    images = plot_curves(runs, finished, output.parent / "images", names)
    write_results(output, args, finished, scores, log, images, scores_2d, names)


if __name__ == "__main__":
  main()
