"""Every recipe in configs/: it builds, documents itself, matches the papers where they give
numbers, and its shrunk form (shrink=1) trains a step and evaluates end to end on a CPU."""

import importlib
import importlib.util
import json
import math
import os

import jax
import numpy as np
import pytest
import reference
from shared import REPO

from vidtx import models, optim, trainer
from vidtx.configs import common
from vidtx.data import reader_config, synthetic
from vidtx.models import timesformer

jax.config.update("jax_numpy_rank_promotion", "raise")

RECIPES = sorted(
  name[:-3]
  for name in os.listdir(os.path.join(REPO, "configs"))
  if name.endswith(".py") and name not in ("__init__.py", "common.py")
)

# The argument combinations the recipes document beyond their defaults (built, not trained).
ARGUMENTS = {
  "k400_vivit_fe": ["variant=L/16x2"],
  "k400_vivit_st": ["variant=L/16x2"],
  "k600_vivit": ["variant=B/16x2", "attention=spatio_temporal"],
  "mit_vivit": ["attention=spatio_temporal"],
  "ek_vivit": ["variant=B/16x2"],
  "ssv2_vivit": ["variant=B/16x2"],
  "k400_timesformer": (
    [f"attention={a}" for a in timesformer.ATTENTIONS if a != "divided"]
    + ["variant=HR", "variant=L"]
  ),
  "k600_timesformer": ["variant=HR", "variant=L"],
  "ssv2_timesformer": ["attention=space", "variant=HR", "variant=L"],
  "diving48_timesformer": ["variant=HR", "variant=L"],
  "howto100m_timesformer": ["frames=32", "frames=64", "frames=96"],
  "k400_xvit": ["attention=tsm", "frames=16"],
  "k600_xvit": ["frames=8"],
  "ssv2_xvit": ["attention=tsm", "frames=8"],
  "synthetic_timesformer": ["attention=space"],
  "synthetic_vivit_fe": ["attention=factorised_dot_product"],
  "synthetic_xvit": ["attention=tsm,aggregation=mean"],
}
ALL_ARGS = [(name, None) for name in RECIPES] + [
  (name, arg) for name, args in sorted(ARGUMENTS.items()) for arg in args
]


def get_config(name, arg=None):
  return importlib.import_module(f"vidtx.configs.{name}").get_config(arg)


def _id(value):
  return str(value) if value is not None else "default"


# ---------------------------------------------------------------------------------------------
# Construction.
# ---------------------------------------------------------------------------------------------


def test_argument_lists_name_real_recipes():
  assert set(ARGUMENTS) <= set(RECIPES)
  assert len(RECIPES) >= 19


@pytest.mark.parametrize("name, arg", ALL_ARGS, ids=_id)
def test_recipe_builds_and_its_shrunk_form_keeps_its_kind(name, arg):
  config = get_config(name, arg)
  dc = config.dataset_configs
  reader_config.validate_dataset_configs(dc)
  model = models.build(config.model_name, config.model, dc.num_classes)
  assert model.config.dtype in ("float32", "bfloat16")
  # The fields every config has (common.training).
  assert dict(config.mesh) == {"data": -1, "fsdp": 1, "model": 1}
  assert config.grad_accum_steps == 1 and config.ema_decay == 0.0
  assert config.best_checkpoint_metric == "top1"
  assert config.lr_configs.schedule in optim.SCHEDULES
  assert (config.num_training_steps is None) != (config.num_training_epochs is None)
  if not name.startswith("synthetic"):
    assert config.dataset_name == "dmvr" and config.num_training_epochs > 0
    assert not config.init_from.checkpoint_path and not dc.base_dir

  shrunk = get_config(name, f"{arg},shrink=1" if arg else "shrink=1")
  sc = shrunk.dataset_configs
  reader_config.validate_dataset_configs(sc)
  tiny = models.build(shrunk.model_name, shrunk.model, sc.num_classes).config
  # Replaced: the data, the size, the run.
  assert shrunk.dataset_name == "synthetic" and sc.num_frames == 4 and sc.crop_size == 16
  assert (tiny.hidden_size, tiny.num_layers, tiny.patch_size, tiny.dtype) == (32, 1, 8, "float32")
  assert (shrunk.batch_size, shrunk.num_training_steps, shrunk.num_training_epochs) == (4, 2, None)
  assert shrunk.log_every_steps == 1 and not shrunk.init_from.checkpoint_path
  assert dict(shrunk.mesh) == dict(common.default_mesh())
  # Kept: the recipe's kind.
  assert shrunk.model_name == config.model_name
  for field in (
    "attention",
    "classifier",
    "stochastic_depth",
    "remat_policy",
    "scan_layers",
    "kernel_init_method",
    "temporal_init",
    "mixing_fraction",
    "aggregation",
  ):
    assert shrunk.model.get(field) == config.model.get(field), field
  assert tiny.tubelet_size == model.config.tubelet_size
  for field in (
    "optimizer",
    "optimizer_configs",
    "max_grad_norm",
    "label_smoothing",
    "mixup",
    "eval_aggregation",
    "ema_decay",
    "grad_accum_steps",
    "best_checkpoint_metric",
  ):
    assert shrunk.get(field) == config.get(field), field
  for field in ("schedule", "base_learning_rate", "decay_epochs", "decay_factor"):
    assert shrunk.lr_configs.get(field) == config.lr_configs.get(field), field
  assert bool(shrunk.lr_configs.warmup_steps) == bool(config.lr_configs.warmup_steps)
  for field in (
    "train_sampling",
    "eval_sampling",
    "augmentation_params",
    "random_flip",
    "do_three_spatial_crops",
    "normalization",
    "zero_centering",
    "multi_label",
  ):
    assert sc.get(field) == dc.get(field), field
  assert reader_config.normalisation(sc) == reader_config.normalisation(dc)
  assert bool(reader_config.class_splits(sc)) == bool(reader_config.class_splits(dc))
  assert (sc.get("eval_min_resize") is None) == (dc.get("eval_min_resize") is None)


@pytest.mark.parametrize("name", RECIPES)
def test_docstring_gives_the_command_arguments_and_expected_results(name):
  doc = importlib.import_module(f"vidtx.configs.{name}").__doc__
  assert f"python train.py --config=configs/{name}.py" in doc
  assert "shrink=1" in doc
  for arg in ARGUMENTS.get(name, []):
    for key in (part.split("=")[0] for part in arg.split(",")):
      assert f"{key}=" in doc, key
  if not name.startswith("synthetic"):
    assert "Expected" in doc and "Hardware" in doc
    assert "/work/shared" not in doc


def test_arguments_are_checked():
  with pytest.raises(ValueError, match="variant='XL'"):
    get_config("k400_timesformer", "variant=XL")
  with pytest.raises(ValueError, match="frames='12'"):
    get_config("howto100m_timesformer", "frames=12")
  with pytest.raises(ValueError, match="shrink='maybe'"):
    get_config("k400_xvit", "shrink=maybe")
  with pytest.raises(ValueError, match="expected key=value"):
    get_config("ssv2_vivit", "variants=B/16x2")
  with pytest.raises(ValueError, match="model.variant='Z/16x2'"):
    get_config("ek_vivit", "variant=Z/16x2")
  # Case-insensitive TimeSformer variants; shrink=0 is the recipe itself.
  assert get_config("k600_timesformer", "variant=hr") == get_config(
    "k600_timesformer", "variant=HR"
  )
  assert get_config("mit_vivit", "shrink=0") == get_config("mit_vivit")


# ---------------------------------------------------------------------------------------------
# The papers' numbers.
# ---------------------------------------------------------------------------------------------


def _params(config):
  dc = config.dataset_configs
  model = models.build(config.model_name, config.model, dc.num_classes)
  return reference.num_params(
    reference.init_shapes(model, (1, dc.num_frames, dc.crop_size, dc.crop_size, 3))
  )


@pytest.mark.parametrize(
  "attention, millions",
  [("divided", 121.4), ("space", 85.9), ("joint", 85.9), ("local_global", 121.4), ("axial", 156.8)],
)
def test_timesformer_parameters_match_table_1(attention, millions):
  # TimeSformer 2102.05095 Table 1 counts the Something-Something-V2 head (174 classes).
  config = get_config("ssv2_timesformer", f"attention={attention}")
  assert round(_params(config) / 1e6, 1) == millions


@pytest.mark.parametrize(
  "name, millions",
  [
    ("k400_vivit_st", 88.9),
    ("k400_vivit_fe", 115.1),
    ("k400_vivit_fsa", 117.3),
    ("k400_vivit_fdp", 88.9),
  ],
)
def test_vivit_parameters_match_table_2(name, millions):
  # Within 0.06 M: Models 1 and 4 have 88.95 M, which the paper prints as 88.9.
  assert abs(_params(get_config(name)) / 1e6 - millions) < 0.06


def test_timesformer_l_and_hr_are_the_base_model_on_more_tokens():
  base = _params(get_config("k400_timesformer"))
  # TimeSformer-L: 96 frames, so 88 more time embeddings; -HR: 16 frames of 28 x 28 patches.
  assert _params(get_config("k400_timesformer", "variant=L")) == base + 88 * 768
  assert _params(get_config("k400_timesformer", "variant=HR")) == base + 8 * 768 + 588 * 768


def test_vivit_l_factorised_encoder_is_vit_l_plus_a_temporal_encoder():
  config = get_config("k600_vivit")  # ViViT-L/16x2 FE, 600 classes.
  d, mlp = 1024, 4096
  block = 4 * (d * d + d) + 2 * d * mlp + mlp + d + 4 * d  # attention, MLP, two LayerNorms
  expected = (
    2 * 16 * 16 * 3 * d
    + d  # tubelet embedding
    + 197 * d
    + d
    + 24 * block
    + 2 * d  # spatial: posemb (class token's too), cls, norm
    + 17 * d
    + d
    + 4 * block
    + 2 * d  # temporal encoder over the 16 tubelet indices
    + d * 600
    + 600
  )  # head
  assert _params(config) == expected
  assert config.model.remat_policy == "full"


def test_recipes_follow_the_papers_tables():
  # ViViT 2103.15691 Table 7.
  table7 = {
    "k400": (0.1, 30, None, 0.0, 0.0, 0.0),
    "k600": (0.1, 30, None, 0.0, 0.0, 0.0),
    "mit": (0.25, 10, None, 0.0, 0.0, 0.0),
    "ek": (0.5, 50, 15, 0.2, 0.2, 0.1),
    "ssv2": (0.5, 35, 20, 0.3, 0.3, 0.3),
  }
  for dataset, (lr, epochs, magnitude, droplayer, smoothing, mixup) in table7.items():
    config = get_config("k400_vivit_fe" if dataset == "k400" else f"{dataset}_vivit")
    aug = config.dataset_configs.augmentation_params
    assert config.lr_configs.base_learning_rate == lr and config.num_training_epochs == epochs
    assert config.batch_size == 64 and config.lr_configs.schedule == "cosine"
    assert config.lr_configs.warmup_steps == math.ceil(
      2.5 * config.dataset_configs.examples_per_subset["train"] / 64
    )
    assert aug.do_rand_augment == (magnitude is not None)
    assert aug.do_color_augment == (magnitude is None)
    if magnitude is not None:
      assert (aug.rand_augment_num_layers, aug.rand_augment_magnitude) == (2, magnitude)
    assert config.model.stochastic_depth == droplayer
    assert config.label_smoothing == smoothing and config.mixup.alpha == mixup
  ek = get_config("ek_vivit").dataset_configs
  assert tuple(ek.class_splits) == (300, 97) and tuple(ek.split_names) == ("noun", "verb")
  classes = {
    "k600_vivit": 600,
    "mit_vivit": 339,
    "ssv2_vivit": 174,
    "k600_timesformer": 600,
    "ssv2_timesformer": 174,
    "diving48_timesformer": 48,
    "howto100m_timesformer": 1059,
    "k600_xvit": 600,
    "ssv2_xvit": 174,
  }
  for name, num_classes in classes.items():
    assert get_config(name).dataset_configs.num_classes == num_classes, name

  # TimeSformer: supplementary §1 and §4.3.
  for name in (
    "k400_timesformer",
    "k600_timesformer",
    "ssv2_timesformer",
    "diving48_timesformer",
    "howto100m_timesformer",
  ):
    config = get_config(name)
    assert (config.lr_configs.schedule, tuple(config.lr_configs.decay_epochs)) == (
      "steps",
      (11, 14),
    )
    assert config.lr_configs.base_learning_rate == 0.005 and config.num_training_epochs == 15
    assert config.batch_size == 16 and config.optimizer_configs.weight_decay == 1e-4
  for arg, frames, crop in (
    ("variant=base", 8, 224),
    ("variant=HR", 16, 448),
    ("variant=L", 96, 224),
  ):
    dc = get_config("k400_timesformer", arg).dataset_configs
    assert (dc.num_frames, dc.crop_size, dc.eval_min_resize) == (frames, crop, crop)
    assert dc.num_frames * dc.sampling_rate in (256, 384)  # rates 1/32, 1/16, 1/4
  ssv2 = get_config("ssv2_timesformer", "variant=L").dataset_configs
  assert (ssv2.train_sampling, ssv2.num_frames, ssv2.random_flip) == ("segment", 64, False)
  howto = get_config("howto100m_timesformer", "frames=96")
  assert howto.dataset_configs.eval_sampling == "whole_video"
  assert howto.dataset_configs.num_frames * howto.dataset_configs.sampling_rate == 96 * 32

  # X-ViT: the released configs.
  ssv2 = get_config("ssv2_xvit")
  assert ssv2.model.mixing_fraction == 0.5 and ssv2.dataset_configs.num_test_clips == 2
  assert get_config("k600_xvit").model.mixing_fraction == 0.25


# ---------------------------------------------------------------------------------------------
# Shrunk recipes, end to end.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  """Synthetic datasets of this module, one directory per set of generator parameters."""
  return str(tmp_path_factory.mktemp("synthetic"))


@pytest.mark.parametrize("name", RECIPES)
def test_shrunk_recipe_trains_and_evaluates(name, data_root, tmp_path):
  config = get_config(name, "shrink=1")
  dc = config.dataset_configs
  dc.base_dir = os.path.join(
    data_root, os.path.basename(synthetic.cache_dir(synthetic.dataset_parameters(dc)))
  )
  results = trainer.train_and_evaluate(config, str(tmp_path))
  assert results["num_videos"] == 4
  for key in ("top1", "top5"):
    assert 0.0 <= results[key] <= 1.0, key
  with open(tmp_path / "metrics.jsonl") as f:
    lines = [json.loads(line) for line in f if line.strip()]
  losses = [line["loss"] for line in lines if "loss" in line]
  assert len(losses) == 2 and np.all(np.isfinite(losses))
  assert os.path.isdir(tmp_path / "checkpoints" / "2")
