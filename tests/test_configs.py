"""Every recipe in configs/: it builds, documents itself, matches the papers where they give
numbers, and its shrunk form (shrink=1) trains a step and evaluates end to end on a CPU."""

import glob
import importlib
import importlib.util
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import reference
from ml_collections import config_flags  # noqa: F401  (registers the config file loader)
from shared import REPO

from vidtx import data as vidtx_data
from vidtx import models, optim, sharding, trainer
from vidtx.configs import common
from vidtx.data import dmvr, reader_config, synthetic
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
  "finetune": ["model=vivit_fe", "model=xvit", "epochs=10,batch=4"],
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
  reader_config.DatasetConfig.from_config(dc)
  model = models.build(config.model_name, config.model, dc.num_classes)
  assert model.config.dtype in ("float32", "bfloat16")
  # The fields every config has (common.training).
  mesh = config.mesh.to_dict()
  assert mesh.pop("rules") == sharding.DEFAULT_RULES
  assert mesh == {"data": -1, "fsdp": 1, "model": 1, "dcn_data": None}
  assert config.per_device_batch_size is None
  assert config.grad_accum_steps == 1 and config.ema_decay == 0.0
  assert config.best_checkpoint_metric == "top1"
  assert config.lr_configs.schedule in optim.SCHEDULES
  assert (config.num_training_steps is None) != (config.num_training_epochs is None)
  if name == "finetune":
    # Every recipe builds without arguments (other test areas build them all so), and the
    # fine-tune recipe's data is data=DIR: without it, the synthetic dataset. Its DMVR form,
    # read from a shards directory: the test_finetune_* tests below.
    assert config.dataset_name == "synthetic" and config.num_training_epochs > 0
    assert not config.init_from.checkpoint_path and not dc.base_dir
  elif not name.startswith("synthetic"):
    assert config.dataset_name == "dmvr" and config.num_training_epochs > 0
    assert not config.init_from.checkpoint_path and not dc.base_dir

  shrunk = get_config(name, f"{arg},shrink=1" if arg else "shrink=1")
  sc = shrunk.dataset_configs
  reader_config.DatasetConfig.from_config(sc)
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
  for field in ("schedule", "decay_epochs", "decay_factor"):
    assert shrunk.lr_configs.get(field) == config.lr_configs.get(field), field
  warms_up = [
    bool(c.lr_configs.warmup_steps or c.lr_configs.warmup_epochs) for c in (shrunk, config)
  ]
  assert warms_up[0] == warms_up[1]
  # The learning rate follows the shrunk batch by the paper's rule (none for synthetic recipes).
  scaling = config.get("batch_scaling")
  if scaling is None:
    assert shrunk.get("batch_scaling") is None
    expected_lr = config.lr_configs.base_learning_rate
  else:
    assert shrunk.batch_scaling.to_dict() == dict(scaling, lr_batch_size=shrunk.batch_size)
    expected_lr = config.lr_configs.base_learning_rate * shrunk.batch_size / config.batch_size
  assert shrunk.lr_configs.base_learning_rate == pytest.approx(expected_lr)
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
  typed = reader_config.DatasetConfig.from_config
  assert bool(typed(sc).class_splits) == bool(typed(dc).class_splits)
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
    assert config.lr_configs.warmup_epochs == 2.5 and config.lr_configs.warmup_steps is None
    assert (config.batch_scaling.paper_batch_size, config.batch_scaling.paper_learning_rate) == (
      64,
      lr,
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


@pytest.mark.tier2  # About 4 minutes in all: the second tier.
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


# ---------------------------------------------------------------------------------------------
# The fine-tune recipe: what it derives from a shards directory and a checkpoint.
# ---------------------------------------------------------------------------------------------

CLASSES = ("cat", "dog", "bird")
# model=: (the paper's learning rate, its batch size): scaled linearly to the batch.
FINETUNE_LR = {"timesformer": (0.005, 16), "vivit_fe": (0.1, 64), "xvit": (0.03, 64)}


def write_shards(directory, *, summaries=True, splits=(("train", 16, 2), ("validation", 4, 1))):
  """A shards directory as vidtx-make-shards writes it: labels.txt, tables of tiny videos and
  (with `summaries`) their {split}_summary.json."""
  os.makedirs(directory, exist_ok=True)
  frames = np.zeros((2, 8, 8, 3), np.uint8)
  for split, count, num_shards in splits:
    examples = [
      dmvr.make_sequence_example(frames, i % 3, label_text=CLASSES[i % 3]) for i in range(count)
    ]
    dmvr.write_shards(examples, os.path.join(directory, f"{split}.tfrecord"), num_shards)
    if summaries:
      summary = dict(
        split=split, table=f"{split}.tfrecord@{num_shards}", examples=count, num_classes=3
      )
      with open(os.path.join(directory, f"{split}_summary.json"), "w") as f:
        json.dump(summary, f)
  with open(os.path.join(directory, "labels.txt"), "w") as f:
    f.write("".join(name + "\n" for name in CLASSES))
  return str(directory)


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory):
  """16 training videos (2 shards) and 4 validation videos of 3 classes."""
  return write_shards(tmp_path_factory.mktemp("shards"))


def converted_dir(directory, model_name="timesformer", attention="space", mean=0.5, std=0.5):
  """A converted checkpoint's vidtx_model.json (the config reads nothing else of it)."""
  os.makedirs(directory)
  described = dict(
    model_name=model_name,
    model=dict(variant="B/16", attention=attention, layer_norm_epsilon=1e-12),
    num_classes=5,
    labels=None,
    preprocessing=dict(mean=[mean] * 3, std=[std] * 3),
  )
  with open(os.path.join(directory, "vidtx_model.json"), "w") as f:
    json.dump(described, f)
  return str(directory)


@pytest.mark.parametrize("model", sorted(FINETUNE_LR))
def test_finetune_reads_classes_and_split_sizes_from_the_shards(model, shards_dir):
  config = get_config("finetune", f"model={model},data={shards_dir}")
  dc = config.dataset_configs
  reader_config.DatasetConfig.from_config(dc)
  assert config.dataset_name == "dmvr" and dc.base_dir == shards_dir
  assert config.experiment_name == f"finetune_{model}_{os.path.basename(shards_dir)}"
  assert dc.num_classes == 3 and tuple(dc.class_names) == CLASSES
  assert dict(dc.tables) == {"train": "train.tfrecord@2", "validation": "validation.tfrecord@1"}
  assert dict(dc.examples_per_subset) == {"train": 16, "validation": 4}
  assert not dc.multi_label and not dc.get("class_splits")
  assert config.model_name == {"vivit_fe": "vivit"}.get(model, model)
  # 16 videos in batches of 8: 2 steps an epoch, 15 epochs; a warm-up epoch; evaluated (and the
  # best checkpoint kept) every epoch.
  assert config.batch_size == config.eval_batch_size == 8
  assert config.num_training_epochs == 15 and config.num_training_steps is None
  assert optim.resolve_steps(config, "num_training", 16, config.batch_size) == 30
  assert config.lr_configs.warmup_steps == 2
  assert config.eval_every_steps == config.checkpoint_every_steps == 2
  lr, paper_batch = FINETUNE_LR[model]
  assert config.lr_configs.base_learning_rate == pytest.approx(lr * 8 / paper_batch)
  assert not config.init_from.checkpoint_path
  # The reader accepts it: every table's shards are there.
  assert vidtx_data.prepare_dataset(config).num_classes == 3


def test_finetune_models_keep_their_papers_recipes(shards_dir):
  finetune_models = ("timesformer", "vivit_fe", "xvit")
  ts, vivit, xvit = (
    get_config("finetune", f"model={m},data={shards_dir}") for m in finetune_models
  )
  # TimeSformer-B, divided attention, 8 frames one per segment, 1 x 3 views (supplementary §1).
  assert (ts.model.variant, ts.model.attention, ts.dataset_configs.num_frames) == (
    "B/16",
    "divided",
    8,
  )
  assert ts.dataset_configs.train_sampling == "segment"
  assert ts.optimizer_configs.weight_decay == 1e-4 and ts.lr_configs.schedule == "steps"
  # ViViT-B/16x2 Model 2, 32 frames at stride 2, Table 7's Epic-Kitchens regularisation.
  assert (vivit.model.variant, vivit.model.attention) == ("B/16x2", "factorised_encoder")
  assert (vivit.dataset_configs.num_frames, vivit.dataset_configs.stride) == (32, 2)
  aug = vivit.dataset_configs.augmentation_params
  assert aug.do_rand_augment and not aug.do_color_augment
  assert (aug.rand_augment_num_layers, aug.rand_augment_magnitude) == (2, 15)
  assert (vivit.model.stochastic_depth, vivit.label_smoothing, vivit.mixup.alpha) == (0.2, 0.2, 0.1)
  assert vivit.lr_configs.schedule == "cosine" and vivit.dataset_configs.num_test_clips == 4
  # X-ViT-B/16, 8 frames one per segment, the release's Kinetics regularisation.
  assert (xvit.model.attention, xvit.dataset_configs.num_frames) == ("space_time_mixing", 8)
  assert xvit.dataset_configs.train_sampling == xvit.dataset_configs.eval_sampling == "segment"
  assert xvit.dataset_configs.get("sampling_rate") is None
  assert (xvit.label_smoothing, xvit.mixup.alpha, xvit.model.mixing_fraction) == (0.3, 0.4, 0.25)
  for config in (ts, vivit, xvit):
    assert config.dataset_configs.random_flip and config.dataset_configs.crop_size == 224
    models.build(config.model_name, config.model, config.dataset_configs.num_classes)


def test_finetune_learning_rate_schedule(shards_dir):
  # TimeSformer: linear warm-up over the first epoch (2 steps), then divided by 10 at epochs 11
  # and 14 of 15 (steps 22 and 28 of 30).
  ts = get_config("finetune", f"data={shards_dir}")
  assert tuple(ts.lr_configs.decay_epochs) == (11, 14)
  schedule = optim.make_schedule(ts.lr_configs, 30, steps_per_epoch=16 / 8)
  base = 0.0025
  got = [float(schedule(step)) for step in (0, 1, 2, 21, 22, 27, 28, 29)]
  expected = [0.0, base / 2, base, base, base / 10, base / 10, base / 100, base / 100]
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # ViViT: the same warm-up, then a cosine to 0 at step 30.
  vivit = get_config("finetune", f"model=vivit_fe,data={shards_dir}")
  schedule = optim.make_schedule(vivit.lr_configs, 30)
  got = np.array([float(schedule(step)) for step in range(31)])
  np.testing.assert_allclose(got[:3], [0.0, 0.0125 / 2, 0.0125], rtol=1e-5)
  assert np.all(np.diff(got[2:]) < 0) and got[-1] == pytest.approx(0.0, abs=1e-9)
  np.testing.assert_allclose(got[16], 0.0125 * (1 + math.cos(math.pi * 14 / 28)) / 2, rtol=1e-5)


def test_finetune_batch_and_epochs_arguments(shards_dir):
  config = get_config("finetune", f"data={shards_dir},batch=4,epochs=10")
  assert config.batch_size == config.eval_batch_size == 4 and config.num_training_epochs == 10
  assert optim.resolve_steps(config, "num_training", 16, 4) == 40
  assert config.lr_configs.warmup_steps == config.eval_every_steps == 4
  assert config.lr_configs.base_learning_rate == pytest.approx(0.005 * 4 / 16)
  # The decays stay at 11/15 and 14/15 of the run.
  np.testing.assert_allclose(config.lr_configs.decay_epochs, (11 * 10 / 15, 14 * 10 / 15))
  for bad in ("epochs=0", "epochs=-1", "epochs=nan", "batch=2.5", "batch=0"):
    with pytest.raises(ValueError, match=bad.replace("=", "='") + "'"):
      get_config("finetune", f"data={shards_dir},{bad}")
  with pytest.raises(ValueError, match="model='vit'"):
    get_config("finetune", f"model=vit,data={shards_dir}")
  # shrink=1: a smoke test of this fine-tune: its data, 2 steps, one view per video.
  shrunk = get_config("finetune", f"data={shards_dir},shrink=1")
  assert shrunk.dataset_name == "dmvr" and shrunk.dataset_configs.base_dir == shards_dir
  assert (shrunk.num_training_steps, shrunk.num_training_epochs, shrunk.batch_size) == (2, None, 4)
  assert shrunk.dataset_configs.num_test_clips == 1
  assert not shrunk.dataset_configs.do_three_spatial_crops


def test_finetune_counts_the_shards_of_a_directory_without_summaries(tmp_path):
  directory = write_shards(tmp_path / "shards", summaries=False)
  dc = get_config("finetune", f"data={directory}").dataset_configs
  assert dict(dc.tables) == {"train": "train.tfrecord@2", "validation": "validation.tfrecord@1"}
  assert dict(dc.examples_per_subset) == {"train": 16, "validation": 4}


def test_finetune_takes_label_groups_and_merged_labels_from_the_summary(tmp_path):
  def with_summary(name, **fields):
    directory = write_shards(tmp_path / name)
    path = os.path.join(directory, "train_summary.json")
    with open(path) as f:
      summary = json.load(f)
    with open(path, "w") as f:
      json.dump({**summary, **fields}, f)
    return get_config("finetune", f"data={directory}").dataset_configs

  grouped = with_summary("grouped", class_splits=[2, 1])  # One label per group, as EPIC's.
  assert tuple(grouped.class_splits) == (2, 1) and not grouped.multi_label
  reader_config.DatasetConfig.from_config(grouped)
  merged = with_summary("merged", conflicts=1, merged=2)  # --conflicts=merge: multi-label.
  assert merged.multi_label and not merged.get("class_splits")


def test_finetune_data_errors_name_the_file_and_the_fix(tmp_path, shards_dir):
  def fails(data, match):
    with pytest.raises(ValueError, match=match):
      get_config("finetune", f"data={data}")

  fails(tmp_path / "nope", r"nope: no such directory.*vidtx.data.make_shards --source=folders")
  videos = tmp_path / "videos"
  os.makedirs(videos / "cat")
  (videos / "cat" / "cat_1.mp4").write_bytes(b"")
  fails(videos, r"is not a shards directory: it has no train_summary.json.*folder of videos")
  fails(tmp_path, "is not a shards directory")

  no_labels = write_shards(tmp_path / "no_labels")
  os.remove(os.path.join(no_labels, "labels.txt"))
  fails(no_labels, "no labels.txt; expected the class names, one per line")
  train_only = write_shards(tmp_path / "train_only", splits=(("train", 4, 1),))
  fails(train_only, "no validation split .*--val_fraction")
  other_labels = write_shards(tmp_path / "other_labels")
  with open(os.path.join(other_labels, "labels.txt"), "w") as f:
    f.write("cat\ndog\n")
  fails(other_labels, "train_summary.json says 3 classes, labels.txt names 2")
  missing_shard = write_shards(tmp_path / "missing_shard")
  os.remove(os.path.join(missing_shard, "train.tfrecord-00001-of-00002"))
  fails(missing_shard, "train.tfrecord-00001-of-00002 of table 'train.tfrecord@2' does not exist")
  empty = write_shards(tmp_path / "empty", splits=(("train", 0, 1), ("validation", 2, 1)))
  fails(empty, "the train split holds no video .*train_report.txt")


def test_finetune_init_from_a_checkpoint(shards_dir, tmp_path, capsys):
  vit = converted_dir(tmp_path / "vit")
  for model in sorted(FINETUNE_LR):
    config = get_config("finetune", f"model={model},data={shards_dir},init={vit}")
    assert config.init_from.checkpoint_path == vit
    # The checkpoint's inputs and numerics: what its features were trained with.
    dc = config.dataset_configs
    assert reader_config.normalisation(dc) == ((0.5,) * 3, (0.5,) * 3)
    assert config.model.layer_norm_epsilon == 1e-12
  assert get_config("finetune", f"data={shards_dir},init={vit}").model.temporal_init == "image"
  assert "not recommended" not in capsys.readouterr().err
  # A video model of the family; its normalisation.
  kinetics = converted_dir(tmp_path / "ts_k400", attention="divided", mean=0.45, std=0.225)
  dc = get_config("finetune", f"data={shards_dir},init={kinetics}").dataset_configs
  assert reader_config.normalisation(dc) == ((0.45,) * 3, (0.225,) * 3)
  # A train.py run: its config.json.
  run_dir = tmp_path / "run"
  os.makedirs(run_dir / "checkpoints")
  (run_dir / "config.json").write_text(get_config("synthetic_timesformer").to_json_best_effort())
  config = get_config("finetune", f"data={shards_dir},init={run_dir}")
  assert config.init_from.checkpoint_path == str(run_dir)
  assert reader_config.normalisation(config.dataset_configs) == ((0.5,) * 3, (0.5,) * 3)

  with pytest.raises(ValueError, match="a timesformer checkpoint .* cannot start a vivit"):
    get_config("finetune", f"model=vivit_fe,data={shards_dir},init={kinetics}")
  with pytest.raises(ValueError, match="init=.*nope: no such file or directory"):
    get_config("finetune", f"data={shards_dir},init={tmp_path / 'nope'}")
  with pytest.raises(ValueError, match="not a converted checkpoint .* convert it first"):
    get_config("finetune", f"data={shards_dir},init={tmp_path}")
  # shrink=1 keeps init= (and the model it sets).
  shrunk = get_config("finetune", f"data={shards_dir},init={vit},shrink=1")
  assert shrunk.init_from.checkpoint_path == vit and shrunk.num_training_steps == 2


def test_finetune_from_scratch_says_it_is_not_recommended(shards_dir, capsys):
  config = get_config("finetune", f"data={shards_dir}")
  assert "not recommended" in capsys.readouterr().err
  assert config.model.temporal_init == "random"  # TimeSformer's temporal parts start random.


def _load_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  import importlib.util

  spec = importlib.util.spec_from_file_location("config_under_test", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))))
def test_every_config_builds_its_model(path):
  if os.path.basename(path) in ("__init__.py", "common.py"):
    return
  from vidtx import models

  config = _load_config(path)
  model = models.build(config.model_name, config.model, config.dataset_configs.num_classes)
  video = jax.ShapeDtypeStruct(
    (
      1,
      config.dataset_configs.num_frames,
      config.dataset_configs.crop_size,
      config.dataset_configs.crop_size,
      3,
    ),
    jnp.float32,
  )
  shapes = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)) > 0


def test_timesformer_config_argument():
  path = os.path.join(REPO, "configs", "synthetic_timesformer.py")
  assert _load_config(path).model.attention == "divided"
  assert _load_config(path, "attention=space").model.attention == "space"
  with pytest.raises(ValueError, match="expected key=value"):
    _load_config(path, "atention=space")
