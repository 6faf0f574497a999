"""Compares training steps on one device and under MirroredStrategy over two logical CPUs.

  python tests/helpers/distributed_twins.py DATA_DIR WORK_DIR

Each step starts both networks from the same state (weights and batch-norm
statistics) and runs the loop's own distributed step on the same global batch,
with plain SGD so the update is linear in the gradient. Printed: the largest
update and the largest difference between the two updates, over the steps.

Why per step: augmentation's zero-filled borders give exact ties in conv1's
max-pooling, so 1e-7 differences of summation order reroute some of conv1's
gradient (about 1 % of its update, measured) and grow over steps whatever runs
the computation; that says nothing about the strategy.
"""

import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from wild3d_tf import data, model  # noqa: E402
from wild3d_tf.config import DataConfig, LoopConfig, ModelConfig  # noqa: E402
from wild3d_tf.losses import LossWeights  # noqa: E402
from wild3d_tf.trainer import Loop, Trainer  # noqa: E402


def make(strategy, dataset, work_dir):
  keras.utils.set_random_seed(0)
  with strategy.scope():
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    network = model.build_model(ModelConfig.tiny(64))
    trainer = Trainer(network, LossWeights(), 8, 64)
    trainer.compile(
      optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1e-5), initial_scale=1.0)
    )
  return Loop(strategy, trainer, dataset, LoopConfig(work_dir, 0), step)


config = DataConfig(data_dir=sys.argv[1], batch_size=8, shuffle_buffer=16)
dataset = data.training_dataset(
  config, "full", input_size=64, heatmap_size=ModelConfig.tiny(64).heatmap_size
)
single = make(tf.distribute.get_strategy(), dataset, sys.argv[2] + "/single")
mirrored = make(
  tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), dataset, sys.argv[2] + "/mirrored"
)
largest_update = largest_difference = 0.0
for batch in dataset.take(4):  # two 3D and two 2D-only batches
  for mine, theirs in zip(mirrored.trainer.network.weights, single.trainer.network.weights):
    mine.assign(theirs.numpy())
  before = [v.numpy() for v in single.trainer.network.trainable_variables]
  single.step(batch)
  mirrored.step(batch)
  for start, a, b in zip(
    before, single.trainer.network.trainable_variables, mirrored.trainer.network.trainable_variables
  ):
    largest_update = max(largest_update, float(np.abs(a.numpy() - start).max()))
    largest_difference = max(largest_difference, float(np.abs(a.numpy() - b.numpy()).max()))
print("max_update", largest_update)
print("max_abs_difference", largest_difference)
