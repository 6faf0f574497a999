"""RunConfig: one configuration per run, written to config.json and read back unchanged."""

import dataclasses
import json

import pytest

from wild3d_tf import config
from wild3d_tf.config import DataConfig, LoopConfig, ModelConfig, OptimizerConfig, RunConfig
from wild3d_tf.losses import LossWeights


def _unusual(model_dir="runs/x"):
  """A RunConfig with a value other than the default in every section."""
  return RunConfig(
    model=ModelConfig("tiny", 96, stride=8, tie_camera_scales=True),
    data=DataConfig(
      data_dir="gs://bucket/records",
      batch_size=6,
      datasets_2d=("lsp",),
      datasets_3d=("h36m",),
      scale_range=0.1,
      rotation_degrees=12.5,
      flip=False,
      background_probability=0.0,
      shuffle_buffer=7,
      seed=3,
      verify_shard_digests=True,
      bone_length_target="ratios",
      batch_composition="within_step",
    ),
    loss=LossWeights.for_ablation("no_projection"),
    optimizer=OptimizerConfig(
      learning_rate=0.5,
      decay_steps=9,
      mixed_precision="mixed_bfloat16",
      pretrained_lr_multiplier=0.01,
      optimizer="adam",
    ),
    loop=LoopConfig(model_dir, 11, checkpoint_every=4, keep_checkpoints=2, jit_compile=True),
    stage="pretrain2d",
    use_2d_data=False,
    init_from="runs/pre",
    validate_every=5,
  )


def test_run_config_round_trips_through_json_and_the_model_dir(tmp_path):
  original = _unusual(str(tmp_path))
  again = RunConfig.from_json(original.to_json())
  assert again == original
  assert again.data.datasets_3d == ("h36m",) and isinstance(again.data.datasets_2d, tuple)
  assert type(again.loss) is LossWeights and again.loss.projection == 0.0
  assert again.model.input_size == 96 and not hasattr(again.data, "input_size")
  original.save(str(tmp_path))
  assert config.load(str(tmp_path)) == original
  written = json.loads((tmp_path / "config.json").read_text())
  # The crop side is written once, as the model's; the variant names the widths.
  assert "input_size" not in written["data"] and written["model"]["input_size"] == 96
  assert written["model"]["variant"] == "tiny" and "width" not in written["model"]
  assert (again.model.stride, again.model.heatmap_size, again.model.tie_camera_scales) == (
    8,
    12,
    True,
  )
  assert (again.optimizer.optimizer, again.optimizer.pretrained_lr_multiplier) == ("adam", 0.01)


def test_a_config_json_from_before_the_recipe_options_loads_with_the_papers_settings(tmp_path):
  values = json.loads(_unusual(str(tmp_path)).to_json())
  for section, key in (
    ("model", "stride"),
    ("model", "tie_camera_scales"),
    ("optimizer", "optimizer"),
    ("optimizer", "pretrained_lr_multiplier"),
  ):
    del values[section][key]
  (tmp_path / "config.json").write_text(json.dumps(values))
  old = config.load(str(tmp_path))
  assert (old.model.stride, old.model.heatmap_size, old.model.tie_camera_scales) == (16, 6, False)
  assert (old.optimizer.optimizer, old.optimizer.pretrained_lr_multiplier) == ("adadelta", 1.0)


def test_the_model_owns_the_crop_side():
  # The data pipeline has no crop size of its own: it is handed the model's.
  with pytest.raises(TypeError, match="input_size"):
    DataConfig(data_dir="d", input_size=256)


def test_variant_sets_the_widths():
  assert (ModelConfig.tiny().width, ModelConfig.tiny().latent_size) == (0.125, 128)
  assert ModelConfig.tiny().input_size == 128 and ModelConfig.full().input_size == 256
  assert ModelConfig.for_variant("full", 64) == ModelConfig(variant="full", input_size=64)
  assert ModelConfig.full().latent_size == 1024 and ModelConfig.full().heatmap_size == 16


def test_bad_config_files_name_the_file_and_the_key(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no config.json"):
    config.load(str(tmp_path))
  values = json.loads(_unusual().to_json())
  values["data"]["batch_sizes"] = 4
  with pytest.raises(ValueError, match=r"x/config.json: unknown key\(s\) \['data.batch_sizes'\]"):
    RunConfig.from_json(json.dumps(values), source="x/config.json")
  del values["data"]["batch_sizes"]
  del values["loop"]["max_steps"]
  with pytest.raises(ValueError, match="loop.*max_steps"):
    RunConfig.from_json(json.dumps(values))
  values["loop"]["max_steps"] = 3
  values["data"]["datasets_3d"] = ["h36m", "coco"]
  with pytest.raises(ValueError, match="datasets_3d"):
    RunConfig.from_json(json.dumps(values))
  with pytest.raises(ValueError, match="not JSON"):
    RunConfig.from_json("{", source="y")


def test_settings_out_of_range_are_refused_by_name():
  with pytest.raises(ValueError, match="variant must be one of"):
    ModelConfig(variant="huge")
  with pytest.raises(ValueError, match="datasets_2d"):
    DataConfig(data_dir="d", datasets_2d="mpii")  # a string, not a tuple of names
  with pytest.raises(ValueError, match="twice"):
    DataConfig(data_dir="d", datasets_3d=("h36m", "h36m"))
  with pytest.raises(ValueError, match="background_probability"):
    DataConfig(data_dir="d", background_probability=1.5)
  with pytest.raises(ValueError, match=r"--batch_composition.*'mixed'"):
    DataConfig(data_dir="d", batch_composition="mixed")
  with pytest.raises(ValueError, match="keep_checkpoints"):
    LoopConfig("m", 1, keep_checkpoints=0)
  with pytest.raises(ValueError, match="stage"):
    dataclasses.replace(_unusual(), stage="full3d")
  with pytest.raises(ValueError, match="pose3d"):
    LossWeights(pose3d=float("nan"))
  with pytest.raises(ValueError, match=r"--optimizer\) must be one of \('adadelta', 'adam'\)"):
    OptimizerConfig(optimizer="sgd")
  with pytest.raises(ValueError, match=r"--heatmap_stride\) must be one of"):
    ModelConfig(stride=32)
