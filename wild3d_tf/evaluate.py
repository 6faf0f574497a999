"""Evaluates a model as the paper does (Sec. 4, Tables 2-5).

    python -m wild3d_tf.evaluate --checkpoint MODEL_DIR [--lifter LIFTER] | --saved_model DIR \\
        --data_dir SHARDS --dataset {mpi_inf_3dhp_test,h36m} --output_dir OUT

(``--lifter``: the 2D-to-3D lifting baseline of ``wild3d_tf.lifting`` on the
checkpoint's 2D joints, scored the same way.)

For every test record: the tight crop around the 2D ground truth (the
training crop's margin, no augmentation), inference, the prediction rotated
from the crop's camera back into the original camera (perspective
correction, with H3.6M's lens distortion at the crop centre), made
root-relative, and compared with the ground truth:

* MPI-INF-3DHP test set: ``univ_annot3`` (the universal skeleton), pelvis
  centred, valid frames only: records carry ``frame/valid`` and the frames
  a ``--novalid_only`` conversion keeps outside ``valid_frame`` are read but
  not scored (results.json counts both); PCK (< 150 mm) and AUC over the
  joints of ``--joint_groups`` (variant A of skeletons.JOINT_GROUPS_3DHP:
  all 17 joints, the root included, in the official script's groups;
  variant B: 14, without spine, head and pelvis) for GS / NoGS / Outdoor /
  All, pooled over frames so sequences weigh by their valid frames, plus
  per-activity, per-sequence and per-joint-group tables.
* H3.6M (S9, S11 at the converter's frame stride): per-action MPJPE
  (protocol 1) and PA-MPJPE (protocol 2), and their average both pooled
  over frames (``subsets.All``) and as the mean of the per-action values
  (``mean_over_action``, the average peers' tables give).

Every shard read is checked against its manifest: its record count as it is
read (a short or corrupt shard is an error naming the file and the record,
never a smaller table) and, unless ``--noverify_shard_digests``, its SHA-256
first.

All three protocols (unscaled, scaled, Procrustes; ``metrics``) are computed.
Writes ``OUT/results.json``, ``OUT/results.md``, ``OUT/pck_curve.png`` and
``OUT/predictions.npz``.
"""

from __future__ import annotations

from wild3d_tf import cli  # first: quiets TensorFlow's start-up before it is imported

# isort: split

import json

from absl import app, flags
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from wild3d_tf import (
  data,
  geometry,
  inference,
  lifting,
  metrics,
  preprocess,
  schema,
  shards,
  storage,
  visualize,
)
from wild3d_tf.config import DataConfig

FLAGS = flags.FLAGS


def define_flags():
  """Flags of this entry point (defined only when it runs, so modules can be imported together)."""
  flags.DEFINE_string("checkpoint", None, "A training --model_dir (its newest checkpoint).")
  flags.DEFINE_string(
    "saved_model",
    None,
    "An exported version folder, e.g. EXPORT/wild3d/1 (its serve_crops signature).",
  )
  flags.DEFINE_string(
    "lifter",
    None,
    "With --checkpoint: lift its 2D joints with this lifting baseline "
    "(python -m wild3d_tf.lifting) instead of using its 3D output.",
  )
  flags.DEFINE_string("data_dir", None, "The converter's output folder.")
  flags.DEFINE_enum("dataset", "mpi_inf_3dhp_test", ["mpi_inf_3dhp_test", "h36m"], "Test set.")
  flags.DEFINE_string("output_dir", None, "Where results.json, results.md and the plots go.")
  flags.DEFINE_bool("flip_test", False, "Average with the prediction on the mirrored crop.")
  flags.DEFINE_integer("batch_size", 16, "Crops per inference call.")
  flags.DEFINE_integer("max_examples", 0, "Evaluate only the first N records (0: all).")
  flags.DEFINE_bool(
    "verify_shard_digests",
    True,
    "Check each test shard's SHA-256 against its manifest before evaluating (a full read).",
  )
  flags.DEFINE_enum(
    "joint_groups", "A", ["A", "B"], "3DHP joint-group variant for PCK/AUC (docs/metrics.md)."
  )
  flags.DEFINE_enum(
    "scale_method", "lstsq", ["lstsq", "norm", "bones"], "How the 'scaled' protocol scales."
  )
  flags.DEFINE_enum(
    "ground_truth",
    "univ",
    ["univ", "annot3"],
    "3DHP: universal skeleton (the paper's) or true scale.",
  )


METADATA = (schema.KEY, schema.SEQUENCE, schema.ACTION, schema.SUBJECT)  # record keys, kept
VALID = "valid"  # (N,) bool: the frame's frame/valid; only these are scored


def test_batches(
  data_dir: str,
  dataset: str,
  input_size: int,
  batch_size: int,
  max_examples: int = 0,
  verify_digests: bool = True,
):
  """Prepared test crops with the original-camera labels, the 2D labels in crop pixels, the
  ``frame/valid`` flag (``VALID``) and metadata, in shard order.

  Shards are checked against the manifest: the file list and, with
  ``verify_digests``, each SHA-256 here (ValueError naming the file), each
  record count as it is read (InvalidArgumentError naming the file, the
  counts and the record: ``shards.checked_records``).
  """
  files = data.shard_files(data_dir, dataset, "test", check_digests=verify_digests)
  if not files:
    raise FileNotFoundError(f"{data_dir}: no test split of {dataset} (convert it first)")
  config = DataConfig(data_dir=data_dir, batch_size=batch_size)

  def one(serialized):
    record = schema.parse(serialized)
    prepared = data.prepare(
      record, tf.constant(0, tf.int64), config, False, input_size, heatmap_size=None
    )
    root_relative = lambda joints: joints - joints[:1]
    return {
      preprocess.IMAGE: prepared[preprocess.IMAGE],
      preprocess.CAMERA_FROM_VIRTUAL: prepared[preprocess.CAMERA_FROM_VIRTUAL],
      preprocess.JOINTS2D_INPUT_PX: prepared[preprocess.JOINTS2D_INPUT_PX],
      preprocess.JOINTS2D_VISIBLE: prepared[preprocess.JOINTS2D_VISIBLE],
      "joints3d_camera": root_relative(record[schema.JOINTS3D_CAMERA_MM]),
      "joints3d_univ_camera": root_relative(record[schema.JOINTS3D_UNIV_CAMERA_MM]),
      VALID: record[schema.FRAME_VALID] > 0,
      **{name: record[name] for name in METADATA},
    }

  ds = shards.read_checked(files)
  if max_examples:
    ds = ds.take(max_examples)
  return ds.map(one, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)


def crop_predictor(checkpoint: str | None, saved_model: str | None, flip: bool):
  """(input_size, fn(crops) -> (B, 17, 3) root-relative pose in the crop's camera)."""
  if (checkpoint is None) == (saved_model is None):
    raise ValueError("give exactly one of --checkpoint and --saved_model")
  if checkpoint:
    predictor = inference.Predictor(inference.load_network(checkpoint), flip)
    return predictor.input_size, tf.function(
      lambda crops: predictor.on_crops(crops)["pose3d_crop"], autograph=False
    )
  signature = tf.saved_model.load(saved_model).signatures["serve_crops"]
  size = int(signature.structured_input_signature[1]["crops"].shape[1])
  # The crop's intrinsics only steer the rotated ``pose3d``; evaluation rotates
  # ``pose3d_crop`` itself.
  eye = tf.constant([[size, 0.0, (size - 1) / 2], [0.0, size, (size - 1) / 2], [0.0, 0.0, 1.0]])

  def run(crops):
    crops = tf.cast(crops, tf.float32)
    k = tf.tile(eye[None], [tf.shape(crops)[0], 1, 1])
    pose = signature(crops=crops, intrinsics=k)["pose3d_crop"]
    if flip:
      pose = (
        pose
        + preprocess.mirror_pose3d(
          signature(crops=preprocess.mirror_image(crops), intrinsics=k)["pose3d_crop"]
        )
      ) / 2
    return pose

  return size, run


def collect(batches, predict) -> dict:
  """Runs ``predict(batch)`` -> crop-camera poses over all batches; returns camera-frame arrays."""
  out = {name: [] for name in ("pred", "gt_annot3", "gt_univ", VALID, *METADATA)}
  for batch in tqdm(batches, desc="evaluating", unit="batch"):
    pose_crop = np.asarray(predict(batch), np.float64)
    pose = geometry.virtual_to_camera(pose_crop, batch[preprocess.CAMERA_FROM_VIRTUAL].numpy())
    out["pred"].append(pose - pose[:, :1])
    out["gt_annot3"].append(batch["joints3d_camera"].numpy())
    out["gt_univ"].append(batch["joints3d_univ_camera"].numpy())
    out[VALID].append(batch[VALID].numpy())
    for name in METADATA:
      out[name].append(np.char.decode(batch[name].numpy().astype(bytes), "utf-8"))
  if not out["pred"]:
    raise ValueError("the test split has no records")
  return {name: np.concatenate(values) for name, values in out.items()}


def scored(arrays: dict) -> dict:
  """``arrays`` (``collect``'s) of the frames the protocol scores: the ``VALID`` ones."""
  if VALID not in arrays:
    return arrays
  keep = np.asarray(arrays[VALID], bool)
  return {name: values[keep] for name, values in arrays.items()}


def report_for(
  dataset: str,
  arrays: dict,
  ground_truth: str = "univ",
  joint_groups: str = "A",
  scale_method: str = "lstsq",
) -> metrics.Report:
  """The report over the ``scored`` frames of ``arrays``; ValueError when none is valid."""
  read = len(arrays["pred"])
  arrays = scored(arrays)
  if not len(arrays["pred"]):
    raise ValueError(f"none of the {read} test frames read is valid (frame/valid is 0 in all)")
  if dataset == "mpi_inf_3dhp_test":
    gt = arrays["gt_univ"] if ground_truth == "univ" else arrays["gt_annot3"]
    return metrics.Report.from_poses(
      arrays["pred"],
      gt,
      labels={"activity": arrays["action"], "sequence": arrays["sequence"]},
      subsets=metrics.scene_subsets_3dhp(arrays["sequence"]),
      joint_group_variant=joint_groups,
      scale_method=scale_method,
    )
  return metrics.Report.from_poses(
    arrays["pred"],
    arrays["gt_annot3"],
    labels={"action": arrays["action"], "subject": arrays["subject"]},
    joint_group_variant=joint_groups,
    scale_method=scale_method,
    average_over="action",
  )


def write_outputs(report: metrics.Report, arrays: dict, output_dir: str, header: dict) -> dict:
  # Any filesystem tf.io.gfile knows (--output_dir may be gs://).
  read, frames = len(arrays["pred"]), len(scored(arrays)["pred"])
  results = {
    **header,
    "frames": frames,  # scored
    "frames_read": read,
    "frames_skipped_invalid": read - frames,  # frame/valid 0: outside the protocol
    **report.to_json(),
  }
  storage.write_text(
    storage.join(output_dir, "results.json"), json.dumps(results, indent=1, sort_keys=True)
  )
  lines = [
    f"# {header['dataset']}: {frames} poses scored ({read - frames} invalid frames skipped)",
    "",
    "".join(f"- {k}: {v}\n" for k, v in header.items()),
    "PCK (< 150 mm) and AUC over the joints "
    + ", ".join(report.pck_joints)
    + "; MPJPE over all 17. "
    "Rows: unscaled (protocol 1), scaled (one least-squares scale per pose), "
    "Procrustes (protocol 2). Tables below: unscaled, with PA-MPJPE.",
    "",
    report.to_markdown(),
  ]
  storage.write_text(storage.join(output_dir, "results.md"), "\n".join(lines))
  pck_columns = [report.joint_names.index(j) for j in report.pck_joints]
  curves = {
    f"{name} (unscaled)": metrics.pck_curve(report.errors["unscaled"][mask][:, pck_columns])
    for name, mask in report.subsets.items()
    if mask.any()
  }
  curves["All (Procrustes)"] = metrics.pck_curve(report.errors["procrustes"][:, pck_columns])
  fig = visualize.pck_curve_figure(curves)
  fig.axes[0].set_title(f"{header['dataset']}: 3D PCK curve")
  storage.write_bytes(storage.join(output_dir, "pck_curve.png"), visualize.figure_to_png(fig))
  storage.save_npz(storage.join(output_dir, "predictions.npz"), **arrays)
  return results


def main(argv):
  del argv
  if not FLAGS.data_dir or not FLAGS.output_dir:
    raise app.UsageError("--data_dir and --output_dir are required")
  if (FLAGS.checkpoint is None) == (FLAGS.saved_model is None):
    raise app.UsageError("give exactly one of --checkpoint and --saved_model")
  if FLAGS.lifter:
    if not FLAGS.checkpoint or FLAGS.saved_model:
      raise app.UsageError(
        "--lifter lifts the 2D joints of a --checkpoint (not of a --saved_model)"
      )
    size, predict_crops = lifting.crop_predictor(FLAGS.checkpoint, FLAGS.lifter, FLAGS.flip_test)
  else:
    size, predict_crops = crop_predictor(FLAGS.checkpoint, FLAGS.saved_model, FLAGS.flip_test)
  batches = test_batches(
    FLAGS.data_dir,
    FLAGS.dataset,
    size,
    FLAGS.batch_size,
    FLAGS.max_examples,
    FLAGS.verify_shard_digests,
  )
  arrays = collect(batches, lambda batch: predict_crops(batch["image"]))
  report = report_for(
    FLAGS.dataset, arrays, FLAGS.ground_truth, FLAGS.joint_groups, FLAGS.scale_method
  )
  header = {
    "dataset": FLAGS.dataset,
    "source": FLAGS.checkpoint or FLAGS.saved_model,
    "lifter": FLAGS.lifter,
    "flip_test": FLAGS.flip_test,
    "ground_truth": FLAGS.ground_truth if FLAGS.dataset != "h36m" else "annot3",
    "joint_groups": FLAGS.joint_groups,
    "scale_method": FLAGS.scale_method,
    "shard_digests_verified": FLAGS.verify_shard_digests,
  }
  results = write_outputs(report, arrays, FLAGS.output_dir, header)
  print(report.to_markdown().split("\n\n")[0])
  summary = results["protocols"]["unscaled"]["subsets"]["All"]
  print(
    f"{results['frames']} poses: PCK {summary['pck']:.1f}, AUC {summary['auc']:.1f}, "
    f"MPJPE {summary['mpjpe']:.1f} mm; "
    f"results in {FLAGS.output_dir}/results.{{json,md}}, pck_curve.png"
  )


if __name__ == "__main__":
  define_flags()
  cli.run(main)
