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

Each stage runs the user-facing command (printed); results are the
``evaluate`` outputs of every run, aggregated into mean and sample standard
deviation over seeds of PCK, AUC and MPJPE under the scaled and Procrustes
protocols, written as Markdown with the commands, budgets and seeds.

  python benchmarks/ablation.py --work_dir /tmp/ablation --preset bench --seeds 0 1 2 \\
      --pretrain_steps 20000 --full_steps 20000 --output docs/results.md
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

from wild3d_tf.demo import CONVERSIONS  # (dataset, native folder) pairs of the synthetic layout

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
VARIANTS = {
    "baseline": ["--ablation=baseline", "--nouse_2d_data"],
    "latent2d_data": ["--ablation=no_projection"],
    "proj_data": ["--ablation=no_latent_2d"],
    "full": ["--ablation=full"],
}
COLUMNS = {"in the wild (TS5-6)": "Outdoor", "studio (TS1-4)": "Studio"}


def stage(command: list[str], log: list[str]) -> None:
  shown = " ".join(command).replace(sys.executable, "python")
  print(f"$ {shown}", flush=True)
  log.append(shown)
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


def table(scores: dict, seeds: list[int]) -> str:
  lines = []
  for protocol in ("scaled", "procrustes"):
    lines += [f"### {protocol}", "",
              "| variant | " + " | ".join(f"{c} {m}" for c in COLUMNS for m in ("PCK", "AUC", "MPJPE")) + " |",
              "|---" * (1 + 3 * len(COLUMNS)) + "|"]
    for variant in VARIANTS:
      cells = []
      for key in COLUMNS.values():
        for metric in ("pck", "auc", "mpjpe"):
          values = np.array([scores[variant, seed][key][protocol][metric] for seed in seeds])
          spread = values.std(ddof=1) if len(values) > 1 else float("nan")
          cells.append(f"{values.mean():.1f} ± {spread:.1f}")
      lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work_dir", required=True)
  parser.add_argument("--preset", default="bench", choices=["tiny", "small", "bench"])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--pretrain_steps", type=int, default=20000)
  parser.add_argument("--full_steps", type=int, default=20000)
  parser.add_argument("--equal_3d_batches", action="store_true",
                      help="give variants with 2D data twice the steps: batches alternate, so at equal steps they "
                           "see half the 3D batches of the baseline (default: equal steps, as the paper counts)")
  parser.add_argument("--output", default=str(ROOT / "docs" / "results.md"))
  args = parser.parse_args()
  work = pathlib.Path(args.work_dir).resolve()
  native, records, runs = work / "data", work / "tfrecords", work / "runs"
  python, log = sys.executable, []
  if not (records / "lspet.manifest.json").is_file():
    stage([python, "-m", "wild3d_tf.synthetic", f"--out={native}", f"--preset={args.preset}", "--seed=0"], log)
    for dataset, folder in CONVERSIONS:
      stage([python, "-m", "beam_preprocess.convert", f"--dataset={dataset}", f"--input_dir={native / folder}",
             f"--output_dir={records}", "--runner=DirectRunner", "--direct_running_mode=in_memory"], log)
  scores = {}
  for seed in args.seeds:
    pretrain = runs / f"seed{seed}" / "pretrain2d"
    stage([python, "-m", "wild3d_tf.train", f"--flagfile={CONFIGS / 'tiny_pretrain2d.cfg'}", f"--data_dir={records}",
           f"--model_dir={pretrain}", f"--seed={seed}", f"--max_steps={args.pretrain_steps}",
           f"--checkpoint_every={max(args.pretrain_steps // 4, 1)}"], log)
    for variant, switches in VARIANTS.items():
      run_dir = runs / f"seed{seed}" / variant
      steps = args.full_steps * (2 if args.equal_3d_batches and "--nouse_2d_data" not in switches else 1)
      stage([python, "-m", "wild3d_tf.train", f"--flagfile={CONFIGS / 'tiny_full.cfg'}", f"--data_dir={records}",
             f"--model_dir={run_dir}", f"--init_from={pretrain}", f"--seed={seed}", f"--max_steps={steps}",
             f"--checkpoint_every={max(steps // 4, 1)}", "--validate_every=0", *switches], log)
      stage([python, "-m", "wild3d_tf.evaluate", f"--checkpoint={run_dir}", f"--data_dir={records}",
             "--dataset=mpi_inf_3dhp_test", f"--output_dir={run_dir / 'evaluation'}"], log)
      scores[variant, seed] = studio_and_wild(run_dir / "evaluation" / "results.json")
  text = [f"# Paper Table 5 on the synthetic benchmark ({args.preset} preset)", "",
          f"Seeds {args.seeds}; 2D pre-training {args.pretrain_steps} steps, 3D stage {args.full_steps} steps"
          f"{' (x2 for variants with 2D data: equal 3D batches)' if args.equal_3d_batches else ''}, "
          "tiny variant (128 px) on CPU. Mean ± sample standard deviation over seeds. PCK < 150 mm and AUC in "
          "percent, MPJPE in mm, against univ_annot3.", "", table(scores, args.seeds), "## Commands", "", "```",
          *log, "```", ""]
  pathlib.Path(args.output).write_text("\n".join(text))
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
