"""Writes synthetic people in the native layouts of H3.6M, MPI-INF-3DHP, MPII, LSP and LSPET.

  python -m wild3d_tf.synthetic --out data/synthetic --preset tiny --seed 0

Folders under --out: h36m/, mpi_inf_3dhp/, mpi_inf_3dhp_test_set/, mpii/, lsp/, lspet/
(docs/synthetic.md describes each). The same preset and seed give byte-identical files.
"""

from wild3d_tf import cli  # first: quiets TensorFlow's start-up before it is imported

# isort: split

from absl import flags, logging

from wild3d_tf.synthetic import generate
from wild3d_tf.synthetic.presets import PRESETS

_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
_PRESET = flags.DEFINE_enum("preset", "tiny", sorted(PRESETS), "Size of the datasets.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_DATASETS = flags.DEFINE_list(
  "datasets", list(generate.WRITERS), f"Which writers to run, of {', '.join(generate.WRITERS)}."
)
flags.register_validator(
  "datasets",
  lambda names: set(names) <= set(generate.WRITERS),
  f"expected names of writers: {', '.join(generate.WRITERS)} (lsp writes lsp/ and lspet/)",
)
_WORKERS = flags.DEFINE_integer("workers", 2, "Parallel writer processes.")
_SHEETS = flags.DEFINE_string("contact_sheets", None, "If set, write synthetic_<dataset>.png here.")


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  seconds = generate.generate(
    _OUT.value, _PRESET.value, _SEED.value, _DATASETS.value, _WORKERS.value, _SHEETS.value
  )
  print(
    f"wrote {', '.join(sorted(seconds))} under {_OUT.value} "
    f"in {sum(seconds.values()):.1f} s of work"
  )


if __name__ == "__main__":
  cli.run(main)
