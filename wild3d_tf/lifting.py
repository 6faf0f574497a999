"""A 2D-to-3D lifting baseline in the style of Martinez et al. (ICCV 2017).

It is fed the network's own 2D.

The alternative users would otherwise pick: detect 2D joints, then lift them
with a small residual MLP that never sees the image. Comparing it with the
full model on the same test crops shows whether the image's depth cues (the
free F3D channels) help beyond the 2D joints.

    python -m wild3d_tf.lifting --checkpoint RUN --data_dir SHARDS --output_dir LIFTER
    python -m wild3d_tf.evaluate --checkpoint RUN --lifter LIFTER --data_dir SHARDS --output_dir OUT

Network as in the paper: a 1024-wide linear layer, two residual blocks of two
(linear, batch norm, ReLU, dropout 0.5) each, max-norm 1 on the weights,
Adam with exponential decay, inputs and outputs standardised per dimension
with training-set statistics. Input: the 14 joints of the 2D set in the
network's input crop (``--inputs predicted``, the default: decoded from the
2D network's heatmaps on the augmented 3D training crops, like Martinez'
fine-tuned detections; ``ground_truth``: the labels). Output: the 17-joint
root-relative 3D pose in the crop's camera, the same target the full model
regresses, so evaluation, perspective correction included, is shared.
"""

from __future__ import annotations

from wild3d_tf import cli  # first: quiets TensorFlow's start-up before it is imported

# isort: split

import json

from absl import app, flags
import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from wild3d_tf import config, data, inference, preprocess, skeletons, storage
from wild3d_tf.config import DATASETS_3D, DataConfig

FLAGS = flags.FLAGS
MODEL_FILE = "lifter.keras"
STATS_FILE = "lifter.json"
INPUTS = ("predicted", "ground_truth")
NUM_2D, NUM_3D = skeletons.POSE2D.num_joints, skeletons.POSE3D.num_joints


def define_flags():
  """Flags of this entry point (defined only when it runs, so modules can be imported together)."""
  flags.DEFINE_string(
    "checkpoint", None, "Training run whose network gives the 2D joints (and the input size)."
  )
  flags.DEFINE_string("data_dir", None, "The converter's output folder (3D training shards).")
  flags.DEFINE_string("output_dir", None, "Where lifter.keras and lifter.json go.")
  flags.DEFINE_enum(
    "inputs", "predicted", INPUTS, "2D inputs in training: the network's or the labels."
  )
  flags.DEFINE_integer("examples", 20000, "Augmented training crops drawn from the 3D datasets.")
  flags.DEFINE_integer("epochs", 40, "Passes over those examples.")
  flags.DEFINE_integer("batch_size", 64, "Lifter batch size.")
  flags.DEFINE_float(
    "learning_rate", 1e-3, "Adam learning rate (decays by 0.96 every 10% of training)."
  )
  flags.DEFINE_integer("width", 1024, "Width of the linear layers.")
  flags.DEFINE_integer("seed", 0, "Seed of the data order, augmentation and weights.")


def build_lifter(width: int = 1024, blocks: int = 2, dropout: float = 0.5) -> keras.Model:
  """Standardised (B, 28) 2D joints -> standardised (B, 48) 3D joints (root omitted: it is zero)."""

  def dense(x):
    x = keras.layers.Dense(width, kernel_constraint=keras.constraints.MaxNorm(1.0))(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.Dropout(dropout)(keras.layers.ReLU()(x))

  inputs = keras.Input((2 * NUM_2D,), name="joints2d")
  x = dense(inputs)
  for _ in range(blocks):
    x = keras.layers.Add()([x, dense(dense(x))])
  outputs = keras.layers.Dense(3 * (NUM_3D - 1), kernel_constraint=keras.constraints.MaxNorm(1.0))(
    x
  )
  return keras.Model(inputs, outputs, name="lifter")


def training_pairs(
  data_dir: str,
  input_size: int,
  count: int,
  seed: int,
  predict_2d=None,
  batch_size: int = 64,
  datasets_3d: tuple = DATASETS_3D,
):
  """(count, 14, 2) input-crop 2D joints and (count, 17, 3) crop-camera 3D poses from
  augmented 3D crops of ``datasets_3d`` (the CLI: those the checkpoint's run trained on).

  ``predict_2d(images) -> (B, 14, 2)`` replaces the labelled 2D joints with predictions.
  """
  data_config = DataConfig(data_dir=data_dir, seed=seed, datasets_3d=datasets_3d)
  stream = data.mixed_examples(
    data_config, datasets_3d, seed, input_size=input_size, heatmap_size=None
  )
  stream = stream.batch(batch_size).prefetch(2)
  inputs, targets = [], []
  for batch in tqdm(
    stream.take(-(-count // batch_size)),
    total=-(-count // batch_size),
    desc="lifting pairs",
    unit="batch",
  ):
    image = tf.cast(batch[preprocess.IMAGE], tf.float32)
    joints = predict_2d(image) if predict_2d else batch[preprocess.JOINTS2D_INPUT_PX]
    inputs.append(np.asarray(joints, np.float32))
    targets.append(batch[preprocess.JOINTS3D_VIRTUAL_MM].numpy())
  return np.concatenate(inputs)[:count], np.concatenate(targets)[:count]


class Lifter:
  """The trained MLP with its standardisation; maps input-crop 2D joints to crop-camera 3D poses."""

  def __init__(self, network: keras.Model, stats: dict):
    self.network, self.stats = (
      network,
      {k: np.asarray(v, np.float32) if isinstance(v, list) else v for k, v in stats.items()},
    )

  @classmethod
  def fit(
    cls,
    joints2d,
    joints3d,
    input_size: int,
    epochs: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    width: int = 1024,
    seed: int = 0,
    verbose: int = 2,
  ) -> Lifter:
    keras.utils.set_random_seed(seed)
    x = cls._centre(joints2d, input_size)
    y = joints3d[:, 1:].reshape(len(joints3d), -1)
    stats = {
      "input_size": input_size,
      "x_mean": x.mean(0),
      "x_std": x.std(0) + 1e-6,
      "y_mean": y.mean(0),
      "y_std": y.std(0) + 1e-6,
    }
    network = build_lifter(width)
    steps = epochs * -(-len(x) // batch_size)
    schedule = keras.optimizers.schedules.ExponentialDecay(learning_rate, max(steps // 10, 1), 0.96)
    network.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    network.fit(
      (x - stats["x_mean"]) / stats["x_std"],
      (y - stats["y_mean"]) / stats["y_std"],
      batch_size=batch_size,
      epochs=epochs,
      shuffle=True,
      verbose=verbose,
    )
    return cls(network, stats)

  @staticmethod
  def _centre(joints2d, input_size: int):
    """Crop pixels to [-1, 1] around the crop centre, flattened."""
    half = (input_size - 1) / 2
    return ((np.asarray(joints2d, np.float32) - half) / half).reshape(len(joints2d), -1)

  def __call__(self, joints2d):
    """(B, 14, 2) input-crop pixels -> (B, 17, 3) mm, root-relative, in the crop's camera."""
    joints2d = tf.convert_to_tensor(joints2d, tf.float32)
    half = (self.stats["input_size"] - 1) / 2
    x = tf.reshape((joints2d - half) / half, [-1, 2 * NUM_2D])
    y = self.network((x - self.stats["x_mean"]) / self.stats["x_std"], training=False)
    pose = tf.reshape(y * self.stats["y_std"] + self.stats["y_mean"], [-1, NUM_3D - 1, 3])
    return tf.concat([tf.zeros_like(pose[:, :1]), pose], axis=1)

  def save(self, folder: str) -> None:
    """Writes ``MODEL_FILE`` and ``STATS_FILE`` into ``folder`` (local or a URL: gs://)."""
    tf.io.gfile.makedirs(folder)
    self.network.save(storage.join(folder, MODEL_FILE))  # Keras copies to URLs through gfile
    storage.write_text(
      storage.join(folder, STATS_FILE),
      json.dumps(
        {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in self.stats.items()}, indent=1
      ),
    )

  @classmethod
  def load(cls, folder: str) -> Lifter:
    model, stats = storage.join(folder, MODEL_FILE), storage.join(folder, STATS_FILE)
    if not (tf.io.gfile.exists(model) and tf.io.gfile.exists(stats)):
      raise FileNotFoundError(
        f"{folder}: no {MODEL_FILE} and {STATS_FILE}; train one with python -m wild3d_tf.lifting"
      )
    return cls(keras.models.load_model(model), json.loads(storage.read_text(stats)))


def crop_predictor(checkpoint: str, lifter_dir: str, flip: bool):
  """(input_size, fn(crops) -> (B, 17, 3)): the checkpoint's 2D joints lifted to 3D."""
  predictor = inference.Predictor(inference.load_network(checkpoint), flip)
  lifter = Lifter.load(lifter_dir)
  if lifter.stats["input_size"] != predictor.input_size:
    raise ValueError(
      f"{lifter_dir}: lifter trained on {lifter.stats['input_size']} px crops, "
      f"{checkpoint} takes {predictor.input_size} px"
    )
  joints = tf.function(lambda crops: predictor.on_crops(crops)["joints2d_input"], autograph=False)
  return predictor.input_size, lambda crops: lifter(joints(crops))


def main(argv):
  del argv
  if not (FLAGS.checkpoint and FLAGS.data_dir and FLAGS.output_dir):
    raise app.UsageError("--checkpoint, --data_dir and --output_dir are required")
  run_config = config.load(FLAGS.checkpoint)  # the run's crop side and 3D datasets
  predictor = inference.Predictor(inference.load_network(FLAGS.checkpoint))
  predict_2d = tf.function(
    lambda images: predictor.on_crops(images)["joints2d_input"], autograph=False
  )
  joints2d, joints3d = training_pairs(
    FLAGS.data_dir,
    run_config.model.input_size,
    FLAGS.examples,
    FLAGS.seed,
    predict_2d if FLAGS.inputs == "predicted" else None,
    FLAGS.batch_size,
    run_config.data.datasets_3d,
  )
  lifter = Lifter.fit(
    joints2d,
    joints3d,
    predictor.input_size,
    FLAGS.epochs,
    FLAGS.batch_size,
    FLAGS.learning_rate,
    FLAGS.width,
    FLAGS.seed,
  )
  lifter.save(FLAGS.output_dir)
  print(
    f"lifter on {len(joints2d)} {FLAGS.inputs} 2D inputs of {FLAGS.checkpoint} "
    f"-> {FLAGS.output_dir}"
  )


if __name__ == "__main__":
  define_flags()
  cli.run(main)
