"""configs/finetune.py tells the truth (issue 25): the model follows init= (its sizes read from
vidtx_model.json or config.json, no parameter loaded), the command line's overrides win with a
note, a checkpoint that cannot start the model is named with both shapes before any work,
evaluation resizes as training does, shrink=1 keeps data= and init=, flips are off for
direction classes, and a fine-tune from a run says so (not "from scratch").

The fine-tune that learns on a CPU (>= 0.8 top-1 from the quickstart's run) is a documented
command with its measured result (docs/training.md, "A fine-tune that learns on a CPU"); the
slow test here runs the same path at a tiny size."""

import json
import os

import numpy as np
import pytest

from vidtx import config_checks, trainer
from vidtx.configs import finetune, synthetic_timesformer
from vidtx.data import dmvr, make_shards, synthetic
from vidtx.inference import preprocess

# ---------------------------------------------------------------------------------------------
# Fixtures: shards, a converted checkpoint and a run, each as little as the recipe reads.
# ---------------------------------------------------------------------------------------------


def write_shards(directory, classes, train=4, validation=2):
  """labels.txt, a train and a validation table of tiny videos and their summaries."""
  os.makedirs(directory)
  frames = np.zeros((2, 8, 8, 3), np.uint8)
  for split, count in (("train", train), ("validation", validation)):
    label = [i % len(classes) for i in range(count)]
    examples = [dmvr.make_sequence_example(frames, c, label_text=classes[c]) for c in label]
    dmvr.write_shards(examples, os.path.join(directory, f"{split}.tfrecord"), 1)
    with open(os.path.join(directory, f"{split}_summary.json"), "w") as f:
      json.dump(dict(table=f"{split}.tfrecord@1", examples=count, num_classes=len(classes)), f)
  with open(os.path.join(directory, "labels.txt"), "w") as f:
    f.write("".join(name + "\n" for name in classes))
  return str(directory)


def converted_dir(directory, model_name="timesformer", model=None, **preprocessing):
  """A converted checkpoint's vidtx_model.json and nothing else: no parameters to load."""
  os.makedirs(directory)
  model = {"variant": "S/16", "attention": "space", **(model or {})}
  described = dict(
    model_name=model_name,
    model=model,
    num_classes=5,
    labels=None,
    preprocessing=dict(mean=[0.5] * 3, std=[0.5] * 3, **preprocessing),
  )
  with open(os.path.join(directory, "vidtx_model.json"), "w") as f:
    json.dump(described, f)
  return str(directory)


def run_dir(directory, arg=None):
  """A train.py run of the quickstart's config: config.json and an empty checkpoints/."""
  os.makedirs(os.path.join(directory, "checkpoints"))
  with open(os.path.join(directory, "config.json"), "w") as f:
    f.write(synthetic_timesformer.get_config(arg).to_json_best_effort())
  return str(directory)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  return write_shards(tmp_path_factory.mktemp("shards") / "mine", ("cat", "dog", "bird"))


# ---------------------------------------------------------------------------------------------
# The model follows init=.
# ---------------------------------------------------------------------------------------------


def test_model_follows_a_converted_image_vit(shards, tmp_path, capsys):
  vit = converted_dir(tmp_path / "vit_s16", crop_size=112, num_frames=1, min_resize=112)
  config = finetune.get_config(f"data={shards},init={vit}")
  model, dc = config.model, config.dataset_configs
  assert (model.variant, model.hidden_size, model.num_layers) == ("S/16", 384, 12)
  assert (model.num_heads, model.mlp_dim) == (6, 1536)
  # The image size; the short sides scaled as the recipe's (256 / 224), evaluation at the crop;
  # an image ViT has no frame count: the recipe's 8.
  assert (dc.crop_size, dc.min_resize, dc.eval_min_resize, dc.num_frames) == (112, 128, 112, 8)
  lines = [line for line in capsys.readouterr().err.splitlines() if "model follows" in line]
  assert len(lines) == 1
  assert (
    f"model follows init={vit} (an image ViT: the recipe's frames): ViT-S/16 (384 wide, 12 "
    "layers, 6 heads, MLP 1536) at 112 px, 8 frames" in lines[0]
  )
  # What it set, for train.py to tell overrides from.
  assert dict(config.recipe_defaults.model) == dict(
    variant="S/16", hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536
  )
  assert config.recipe_defaults.source == f"init={vit}"
  assert config_checks.check_config(config) == []  # Nothing overridden, nothing to say.


def test_model_follows_a_run_and_a_video_checkpoint(shards, tmp_path, capsys):
  run = run_dir(tmp_path / "quickstart")
  config = finetune.get_config(f"data={shards},init={run}")
  model, dc = config.model, config.dataset_configs
  # The quickstart's TimeSformer: 96 wide, 4 layers of 4 heads, MLP 384, 8 x 8 patches on
  # 8 frames of 32 x 32.
  assert (model.variant, model.hidden_size, model.num_layers) == ("B/8", 96, 4)
  assert (model.num_heads, model.mlp_dim, model.attention) == (4, 384, "divided")
  assert (dc.crop_size, dc.min_resize, dc.eval_min_resize, dc.num_frames) == (32, 37, 32, 8)
  err = capsys.readouterr().err
  assert "ViT/8 (96 wide, 4 layers, 4 heads, MLP 384) at 32 px, 8 frames" in err
  assert config_checks.check_config(config) == []

  # A video checkpoint's attention scheme too; one the model does not share is named.
  joint = run_dir(tmp_path / "joint", "attention=joint")
  config = finetune.get_config(f"data={shards},init={joint}")
  assert config.model.attention == "joint"
  config.model.attention = "divided"
  with pytest.raises(ValueError, match="attention joint vs divided.*drop --config.model.attention"):
    config_checks.check_config(config)

  # A ViViT of 16 frames in 2-frame tubelets: its tubelet and frames, and both stacks.
  vivit = converted_dir(
    tmp_path / "vivit",
    "vivit",
    dict(variant="B/16x2", attention="factorised_encoder", spatial_layers=6, temporal_layers=2),
    crop_size=160,
    num_frames=16,
  )
  config = finetune.get_config(f"model=vivit_fe,data={shards},init={vivit}")
  model, dc = config.model, config.dataset_configs
  assert (model.variant, model.spatial_layers, model.temporal_layers) == ("B/16x2", 6, 2)
  assert (dc.crop_size, dc.num_frames) == (160, 16)
  assert "ViT-B/16x2 (768 wide, 6 + 2 layers, 12 heads, MLP 3072) at 160 px" in (
    capsys.readouterr().err
  )


def test_an_override_wins_with_a_note(shards, tmp_path):
  config = finetune.get_config(f"data={shards},init={run_dir(tmp_path / 'run')}")
  # As --config.model.num_layers=2 --config.dataset_configs.num_frames=4 set them.
  config.model.num_layers = 2
  config.dataset_configs.num_frames = 4
  lines = config_checks.check_config(config)
  assert len(lines) == 1 and lines[0].startswith("note: --config overrides win")
  assert "model.num_layers=2 (recipe: 4)" in lines[0]
  assert "dataset_configs.num_frames=4 (recipe: 8)" in lines[0]
  assert config.model.num_layers == 2  # It won.


def test_a_mismatch_names_both_shapes_and_the_flag(shards, tmp_path):
  run = run_dir(tmp_path / "run")
  config = finetune.get_config(f"data={shards},init={run}")
  config.model.hidden_size = 128  # An override the checkpoint's weights cannot fill.
  with pytest.raises(ValueError) as error:
    config_checks.check_config(config)
  message = str(error.value)
  assert "\n" not in message
  assert f"init={run} holds TimeSformer ViT/8 (96 wide, 4 layers" in message
  assert "the model is TimeSformer ViT/8 (128 wide" in message
  assert "width 96 vs 128" in message and "drop --config.model.hidden_size=128" in message

  # Any recipe with config.init_from: ViT-B/16 against the quickstart's run, before any work.
  config = synthetic_timesformer.get_config()
  config.model.update(hidden_size=None, num_layers=None, num_heads=None, mlp_dim=None)
  config.model.variant = "B/16"
  config.init_from.checkpoint_path = run
  with pytest.raises(ValueError) as error:
    config_checks.check_config(config)
  message = str(error.value)
  assert "width 96 vs 768, heads 4 vs 12, MLP 384 vs 3072, patch 8 vs 16" in message
  for flag in ("hidden_size=96", "num_heads=4", "mlp_dim=384", "variant=B/8"):
    assert f"--config.model.{flag}" in message
  # An image ViT shallower than the model.
  vit = converted_dir(tmp_path / "vit", crop_size=112)
  config = finetune.get_config(f"data={shards},init={vit}")
  config.model.num_layers = 13
  with pytest.raises(ValueError, match="layers 12 vs 13. To start from it: drop --config.model"):
    config_checks.check_config(config)
  # Another family.
  config = finetune.get_config(f"model=xvit,data={shards},init={vit}")
  config.init_from.checkpoint_path = run
  with pytest.raises(ValueError, match="holds a TimeSformer .* which cannot start a xvit"):
    config_checks.check_config(config)


# ---------------------------------------------------------------------------------------------
# Train and evaluation geometry agree.
# ---------------------------------------------------------------------------------------------


def test_evaluation_resize_follows_the_crop_unless_given(shards):
  config = finetune.get_config(f"data={shards}")
  config.dataset_configs.update(crop_size=32, min_resize=36)  # The overrides.
  lines = config_checks.check_config(config)
  assert config.dataset_configs.eval_min_resize == 32  # 36 x 224 / 256, at least the crop.
  assert any(
    "eval_min_resize=32 follows the overridden crop_size=32, min_resize=36" in line
    for line in lines
  )
  assert not any(line.startswith("warning") for line in lines)

  given = finetune.get_config(f"data={shards}")
  given.dataset_configs.update(crop_size=32, min_resize=36, eval_min_resize=40)
  config_checks.check_config(given)
  assert given.dataset_configs.eval_min_resize == 40  # Given: kept.


def test_geometry_that_disagrees_is_flagged_at_start_up():
  # A config without the recipe's record (any recipe, an older run's config): only flagged.
  config = synthetic_timesformer.get_config()
  config.dataset_configs.update(crop_size=32, min_resize=36, eval_min_resize=224)
  lines = config_checks.check_config(config)
  assert len(lines) == 1 and lines[0].startswith("warning: evaluation resizes short sides to 224")
  for field in ("eval_min_resize", "min_resize", "crop_size"):
    assert f"(dataset_configs.{field})" in lines[0]
  assert "--config.dataset_configs.eval_min_resize=36" in lines[0]
  assert config.dataset_configs.eval_min_resize == 224  # Flagged, not changed.
  config.dataset_configs.eval_min_resize = 32
  assert config_checks.check_config(config) == []


# ---------------------------------------------------------------------------------------------
# shrink=1, the synthetic default, flips.
# ---------------------------------------------------------------------------------------------


def test_shrink_keeps_data_and_init(shards, tmp_path, capsys):
  vit = converted_dir(tmp_path / "vit", crop_size=112)
  config = finetune.get_config(f"data={shards},init={vit},shrink=1")
  dc = config.dataset_configs
  assert config.dataset_name == "dmvr" and dc.base_dir == shards and dc.num_classes == 3
  assert config.init_from.checkpoint_path == vit
  assert (config.model.hidden_size, dc.crop_size) == (384, 112)  # The model init= sets.
  assert (config.num_training_steps, config.batch_size, config.eval_every_steps) == (2, 4, 0)
  assert (dc.num_test_clips, dc.do_three_spatial_crops) == (1, False)
  assert "shrink=1: a smoke test on your data= and init=" in capsys.readouterr().err

  # No data=: the synthetic default, and one line says so.
  config = finetune.get_config("")
  assert config.dataset_name == "synthetic"
  err = capsys.readouterr().err
  assert err.count("no data= given: the built-in synthetic appearance task") == 1


def test_flips_follow_the_class_names(tmp_path, capsys):
  turns = write_shards(tmp_path / "turns", ("turn_left", "turn_right", "wave"))
  assert not finetune.get_config(f"data={turns}").dataset_configs.random_flip
  summary = capsys.readouterr().err
  assert (
    "random flips off: classes 'turn_left', 'turn_right' name a direction a mirror image swaps "
    "(flip=1 turns them on)" in summary
  )
  assert finetune.get_config(f"data={turns},flip=1").dataset_configs.random_flip
  pets = write_shards(tmp_path / "pets", ("cat", "dog"))
  assert finetune.get_config(f"data={pets}").dataset_configs.random_flip
  assert "random flips on;" in capsys.readouterr().err
  assert not finetune.get_config(f"data={pets},flip=0").dataset_configs.random_flip
  with pytest.raises(ValueError, match="flip='2': expected 0 or 1"):
    finetune.get_config(f"data={pets},flip=2")


# ---------------------------------------------------------------------------------------------
# The path end to end, at a tiny size: class folders -> shards -> a fine-tune from a run.
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # Two tiny trainings (compiled): about 25 s on 2 cores.
def test_finetune_from_a_run_follows_it_and_says_so(tmp_path, capsys):
  # 1. Class folders of moving textured objects, direction the only cue (docs/training.md).
  videos = tmp_path / "videos"
  rng = np.random.default_rng(0)
  for label, name in enumerate(("to_the_left", "to_the_right")):  # generate_motion's 0 and 1.
    os.makedirs(videos / name)
    for i in range(4):
      frames, _ = synthetic.generate_motion(rng, 8, 24, label=label)
      preprocess.encode_video(str(videos / name / f"{name}_{i}.mp4"), frames, fps=8)
  shards = str(tmp_path / "shards")
  make_shards.main(
    [
      "--source=folders",
      f"--input={videos}",
      f"--output_dir={shards}",
      "--val_fraction=0.25",
      "--short_side=0",
      "--num_workers=1",
    ]
  )
  # 2. The run to start from: the quickstart's config, shrunk (1 layer, 32 wide, 16 px, 4 frames).
  init = synthetic_timesformer.get_config("shrink=1")
  dc = init.dataset_configs
  dc.base_dir = str(
    tmp_path / os.path.basename(synthetic.cache_dir(synthetic.dataset_parameters(dc)))
  )
  run = str(tmp_path / "quickstart")
  trainer.train_and_evaluate(init, run)
  capsys.readouterr()

  # 3. The fine-tune: the run's model and clips, flips off for left / right.
  config = finetune.get_config(f"data={shards},init={run},epochs=1,batch=3")
  err = capsys.readouterr().err
  assert f"model follows init={run}: ViT/8 (32 wide, 1 layer, 2 heads, MLP 64) at 16 px, 4 " in err
  assert "random flips off: classes 'to_the_left', 'to_the_right'" in err
  assert not config.dataset_configs.random_flip
  results = trainer.train_and_evaluate(config, str(tmp_path / "directions"))
  out = capsys.readouterr().out
  assert f"init_from {run} (video timesformer)" in out
  started = [line for line in out.splitlines() if line.startswith("timesformer (")]
  assert len(started) == 1 and f"; from init_from {os.path.abspath(run)}, " in started[0]
  assert "from scratch" not in out
  assert results["num_videos"] == 2
