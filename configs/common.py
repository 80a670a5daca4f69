"""Pieces shared by the recipe configs: each recipe file composes these, nothing is copy-pasted.

A recipe file is `get_config(arg=None)`:

    args = common.parse_arg(arg, variant="B/16x2")       # its key=value arguments, and shrink
    config = common.vivit_recipe("k600", variant=args.variant, attention=...)
    return common.finish(config, args)                    # applies shrink=1 when asked

- `parse_arg` reads `configs/FILE.py:key=value,key2=value2` against the file's defaults; every
  file also accepts `shrink=1` (see `shrink`).
- Datasets: `DATASETS` holds what the recipes need to know about each dataset (classes, label
  kind, split sizes, whether a horizontal flip keeps the label) and `dmvr_dataset` turns an entry
  into dataset_configs (scenic's field names) for DMVR shards; `reader_fields` adds the reader's
  fields every dataset has (label kind, bad-record handling), so the command line can set them.
- One recipe builder per paper, taking the dataset: `vivit_recipe` (ViViT (arXiv:2103.15691)
  Table 7), `timesformer_recipe` (TimeSformer (arXiv:2102.05095) and its supplementary),
  `xvit_recipe` (the released configs of X-ViT (arXiv:2106.05968)). Each builder's docstring
  lists the recipe, the hardware it needs and what differs from the paper, once for every recipe
  file of that paper; the recipe files add their commands and the paper's results for their
  dataset.
- `training` sets the optimizer, schedule, logging, checkpointing, evaluation and mesh fields
  every config has; `epochs_to_steps` is the one conversion of a duration in epochs.
- Batch and learning rate: a paper's recipe keeps the paper's global batch and learning rate
  in `config.batch_scaling` (`batch_scaling`); `set_batch_size` is the one way a builder
  changes the batch (shrink, configs/finetune.py), the learning rate following by the paper's
  rule, and train.py does the same at start-up for `--config.batch_size` or
  `--config.per_device_batch_size` (vidtx.optim.resolve_batch). Warm-ups are kept in epochs
  (`lr_configs.warmup_epochs`), so their steps follow any batch.

The shrink switch, `shrink=1` on any recipe (e.g. configs/k400_timesformer.py:attention=joint,
shrink=1), turns it into a smoke test that runs in seconds on a CPU, to check a recipe (and its
command-line overrides) end to end before booking accelerators:

    python train.py --config=configs/ssv2_vivit.py:shrink=1 --workdir=/tmp/smoke

It keeps what makes the recipe that recipe: model family and attention pattern, tubelet length,
classifier, stochastic depth and dropout, remat and scan options, optimizer, schedule kind
(warm-up and decay boundaries in epochs included), weight decay, clipping, label smoothing,
mixup, sampling kinds, augmentation (scale jitter, flip, colour, RandAugment, erasing),
normalisation, spatial crops, view aggregation and the label kind. It replaces the data with the
embedded synthetic dataset (vidtx.data.synthetic, 8 training and 4 validation videos of 12
frames of 20 x 20; the 'appearance' task, whose classes survive a flip), clips with 4 frames of
16 x 16 (at stride or sampling rate at most 2, at most 2 test clips), the model with a tiny one
(8 x 8 patches, width 32, 2 heads, MLP 64, one layer per stack, float32), the batch with 4 clips
and the run with 2 steps, a log line per step, one checkpoint at the end and one evaluation of
the 4 validation videos (the learning rate scaled to the batch of 4 by the paper's rule); no
init_from checkpoint and the default mesh. Class splits become one
split over the synthetic classes (the synthetic videos carry one label each), so the split
machinery (per-split loss, per-split and action accuracies) still runs.
"""

import copy
import dataclasses
import math
from typing import NamedTuple

import ml_collections
from ml_collections import config_dict

from vidtx import models, optim
from vidtx.errors import UserError
from vidtx.models import hparams, timesformer, vivit, xvit

# ---------------------------------------------------------------------------------------------
# Arguments and the shrink switch.
# ---------------------------------------------------------------------------------------------

_SWITCH = {"0": False, "false": False, "1": True, "true": True}


def parse_arg(arg: str | None, **defaults: str) -> ml_collections.ConfigDict:
  """Parses the `path.py:key=value,key2=value2` argument of a config file against its defaults.

  Every file also takes `shrink=0|1` (default 0; see `shrink`); it comes back as a bool.
  """
  if "shrink" in defaults:
    raise UserError("parse_arg: 'shrink' is every recipe's switch; do not redefine it.")
  values = dict(defaults, shrink="0")
  for item in (arg or "").split(","):
    if not item.strip():
      continue
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or key not in values:
      raise UserError(f"Config argument {item!r}: expected key=value with key in {sorted(values)}.")
    values[key] = value.strip()
  if values["shrink"].lower() not in _SWITCH:
    raise UserError(f"Config argument shrink={values['shrink']!r}: expected 0 or 1.")
  values["shrink"] = _SWITCH[values["shrink"].lower()]
  return ml_collections.ConfigDict(values)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
  """The `name=` argument of a config file must be one of `choices`."""
  if value not in choices:
    raise UserError(f"Config argument {name}={value!r}: expected one of {list(choices)}.")


def check_attention(attention: str, choices: tuple[str, ...]) -> None:
  """The `attention=` argument of a config file must be one its model accepts."""
  check_choice("attention", attention, choices)


def finish(
  config: ml_collections.ConfigDict, args: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
  """The last line of every get_config: the recipe, shrunk when the arguments say shrink=1."""
  return shrink(config) if args.shrink else config


# The shrunk recipe's sizes (see the module docstring).
SHRUNK_DATA = dict(
  video_length=12,
  video_size=20,
  num_frames=4,
  min_resize=18,
  crop_size=16,
  train_examples=8,
  validation_examples=4,
  max_stride=2,
  max_test_clips=2,
)
SHRUNK_MODEL = dict(patch_size=8, hidden_size=32, num_heads=2, mlp_dim=64, num_layers=1)
SHRUNK_RUN = dict(batch_size=4, steps=2)


def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The recipe `config` shrunk to run in seconds on a CPU (the module docstring says what is
  kept and what is replaced); returns a new config."""
  config = copy.deepcopy(config)
  config.experiment_name = f"{config.get('experiment_name') or 'recipe'}_shrunk"
  config.dataset_configs = _shrunk_dataset(config.dataset_name, config.dataset_configs)
  config.dataset_name = "synthetic"
  config.model = _shrunk_model(config.model)
  shrink_schedule(config, SHRUNK_RUN["batch_size"])
  config.init_from.checkpoint_path = ""
  config.mesh = default_mesh()
  return config


def shrink_schedule(config: ml_collections.ConfigDict, batch_size: int) -> None:
  """SHRUNK_RUN's steps at `batch_size` (the learning rate following it: `set_batch_size`), one
  evaluation at the end, one checkpoint (in place)."""
  set_batch_size(config, batch_size)
  config.num_training_steps = SHRUNK_RUN["steps"]
  config.num_training_epochs = None
  if config.lr_configs.get("warmup_steps"):
    config.lr_configs.warmup_steps = 1
  config.log_every_steps = 1
  config.checkpoint_every_steps = 1_000_000  # Only the final checkpoint.
  config.max_checkpoints_to_keep = 1
  config.eval_every_steps = 0  # One evaluation, at the end.


def _shrunk_dataset(dataset_name: str, dc: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The synthetic dataset with the sampling, augmentation, views and label kind of `dc`."""
  sizes = SHRUNK_DATA
  # A synthetic recipe keeps its task; the others get 'appearance', whose labels survive flips.
  task = dc.get("task", "motion") if dataset_name == "synthetic" else "appearance"
  synthetic = synthetic_dataset(task)
  shrunk = copy.deepcopy(dc)
  shrunk.update(
    base_dir="",
    task=task,
    tables=dict(synthetic.tables),
    seed=0,
    examples_per_subset={
      "train": sizes["train_examples"],
      "validation": sizes["validation_examples"],
    },
    num_classes=synthetic.num_classes,
    video_length=sizes["video_length"],
    video_size=sizes["video_size"],
    num_frames=sizes["num_frames"],
    stride=min(int(dc.stride), sizes["max_stride"]),
    min_resize=sizes["min_resize"],
    crop_size=sizes["crop_size"],
    num_test_clips=min(int(dc.get("num_test_clips", 1)), sizes["max_test_clips"]),
    shuffle_buffer_size=sizes["train_examples"],
  )
  if dc.get("eval_min_resize") is not None:  # Evaluated at the crop size (TimeSformer, X-ViT).
    shrunk.eval_min_resize = sizes["crop_size"]
  if dc.get("sampling_rate") is not None:  # PySlowFast windows: 4 frames over 8.
    shrunk.sampling_rate = sizes["max_stride"]
    shrunk.frame_rate = float(dc.get("target_fps", 30.0))
  if dc.get("class_splits"):
    shrunk.class_splits = (synthetic.num_classes,)
    shrunk.split_names = ("shape",)
  if dc.get("flip_label_pairs"):
    shrunk.flip_label_pairs = ()  # Pairs of the recipe's classes, not the synthetic ones.
  return shrunk


def _shrunk_model(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The same model family, pattern and options at the tiny size (tubelet length kept)."""
  model = copy.deepcopy(model)
  tubelet = hparams.parse_variant(model.variant)["tubelet_size"]
  size = SHRUNK_MODEL
  model.variant = f"Ti/{size['patch_size']}" + (f"x{tubelet}" if tubelet > 1 else "")
  model.update(
    hidden_size=size["hidden_size"],
    num_heads=size["num_heads"],
    mlp_dim=size["mlp_dim"],
    num_layers=size["num_layers"],
    dtype="float32",
  )
  if model.get("spatial_layers") is not None:  # ViViT Model 2.
    model.spatial_layers = size["num_layers"]
  if model.get("temporal_layers"):  # ViViT Model 2 (0: average pool), X-ViT's head.
    model.temporal_layers = size["num_layers"]
  if model.get("head_mlp_dim"):  # X-ViT.
    model.head_mlp_dim = size["hidden_size"]
  if model.get("summary_tokens"):  # X-ViT: R must divide the 2 x 2 patches of a frame.
    model.summary_tokens = 1
  return model


# ---------------------------------------------------------------------------------------------
# Training fields every config has.
# ---------------------------------------------------------------------------------------------


def default_mesh() -> ml_collections.ConfigDict:
  """config.mesh: device-mesh axis sizes (vidtx.sharding); -1 = all remaining devices.
  dcn_data: on several TPU slices, how many of them the 'data' axis spans (None: all of them, or
  as many as divide 'data')."""
  return ml_collections.ConfigDict(
    dict(data=-1, fsdp=1, model=1, dcn_data=config_dict.placeholder(int))
  )


def batch_scaling(
  paper: str, batch_size: int, base_learning_rate: float, rule: str = "linear"
) -> ml_collections.ConfigDict:
  """config.batch_scaling of a paper's recipe: the paper's global batch and learning rate, and
  the rule by which the learning rate follows another batch (vidtx.optim.LR_SCALING_RULES).
  lr_batch_size is the batch lr_configs.base_learning_rate is set for (set_batch_size keeps it)."""
  return ml_collections.ConfigDict(
    dict(
      paper=paper,
      paper_batch_size=batch_size,
      paper_learning_rate=base_learning_rate,
      rule=rule,
      lr_batch_size=batch_size,
    )
  )


def set_batch_size(config: ml_collections.ConfigDict, batch_size: int) -> None:
  """Training and evaluation batches of `batch_size` clips, with the learning rate scaled from
  the paper's by its rule when the config has batch_scaling (in place)."""
  config.batch_size = config.eval_batch_size = batch_size
  scaling = config.get("batch_scaling")
  if scaling:
    config.lr_configs.base_learning_rate = optim.scaled_learning_rate(
      scaling.paper_learning_rate, scaling.paper_batch_size, batch_size, scaling.rule
    )
    scaling.lr_batch_size = batch_size


def epochs_to_steps(epochs: float, examples: int, batch_size: int) -> int:
  """Steps in `epochs` passes over `examples` (vidtx.optim.resolve_steps' rounding)."""
  return int(math.ceil(epochs * examples / batch_size))


def cpu_model(model_name: str, variant: str) -> ml_collections.ConfigDict:
  """The model config of `model_name` at the size every synthetic recipe trains on a CPU:
  D = 96, 4 heads, MLP 384, 4 layers (8x8 patches: 16 tokens per 32x32 frame)."""
  config = models.default_config(model_name)
  config.update(variant=variant, hidden_size=96, num_heads=4, mlp_dim=384, num_layers=4)
  return config


def training(
  config: ml_collections.ConfigDict,
  *,
  batch_size: int,
  steps: int | None,
  base_learning_rate: float,
  warmup_steps: int | None = None,
  warmup_epochs: float | None = None,
  paper: str = "",
) -> None:
  """Optimizer, schedule, logging, checkpointing, evaluation and mesh fields, set on `config`.

  `paper` (e.g. 'ViViT (arXiv:2103.15691) Table 7'): `batch_size` and `base_learning_rate` are
  that paper's, kept in config.batch_scaling so that another batch rescales the learning rate
  (linearly, as the papers' SGD recipes) at start-up.
  """
  config.rng_seed = 0
  config.batch_size = batch_size
  config.eval_batch_size = batch_size
  # Global batch = this many clips x the data-parallel devices (data x fsdp of config.mesh);
  # None: batch_size decides. Resolved at start-up (vidtx.optim.resolve_batch).
  config.per_device_batch_size = config_dict.placeholder(int)
  if paper:
    config.batch_scaling = batch_scaling(paper, batch_size, base_learning_rate)
  # Durations: *_steps wins over *_epochs when both are set (vidtx.optim.resolve_steps).
  config.num_training_steps = config_dict.placeholder(int)
  config.num_training_epochs = config_dict.placeholder(float)
  if steps is not None:
    config.num_training_steps = steps
  # Gradients of batch_size / grad_accum_steps clips summed over this many micro-batches per
  # update: the same update with less activation memory.
  config.grad_accum_steps = 1

  config.optimizer = "momentum"
  # Weight decay skips positional embeddings, class tokens and norms unless
  # optimizer_configs.no_decay_patterns says otherwise (vidtx.optim.NO_DECAY_PATTERNS).
  config.optimizer_configs = ml_collections.ConfigDict(
    dict(momentum=0.9, nesterov=False, weight_decay=0.0)
  )
  config.max_grad_norm = 1.0
  config.label_smoothing = 0.1
  config.mixup = ml_collections.ConfigDict(dict(alpha=0.0))  # 0: off; else Beta(alpha, alpha).
  # schedule: 'cosine' | 'constant' | 'steps' (with decay_epochs or decay_steps, decay_factor),
  # each after a linear warm-up of warmup_steps, or warmup_epochs converted at the run's batch
  # (steps win; vidtx.optim.make_schedule).
  config.lr_configs = ml_collections.ConfigDict(
    dict(
      schedule="cosine",
      base_learning_rate=base_learning_rate,
      warmup_steps=config_dict.placeholder(int),
      warmup_epochs=config_dict.placeholder(float),
      end_learning_rate=0.0,
    )
  )
  if warmup_steps is not None:
    config.lr_configs.warmup_steps = warmup_steps
  if warmup_epochs is not None:
    config.lr_configs.warmup_epochs = float(warmup_epochs)
  config.ema_decay = 0.0  # Exponential moving average of the parameters; 0: off.

  # Device mesh (vidtx.sharding): the batch on 'data' (and 'fsdp'), parameters on 'fsdp' and
  # 'model'. The default is pure data parallelism over every device.
  config.mesh = default_mesh()

  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  # A jax.profiler trace of this many steps after the first (compiled) one, into
  # WORKDIR/profile/ (process 0); 0: off.
  config.profile_steps = 0
  config.max_checkpoints_to_keep = 3
  # Also keep the checkpoint with the best validation value of this metric ('' off).
  config.best_checkpoint_metric = "top1"
  # Start from a pretrained checkpoint (vidtx.checkpoints.init_from): a converted directory
  # (python -m vidtx.convert), a train.py workdir or any format vidtx reads; '' trains from
  # scratch.
  config.init_from = ml_collections.ConfigDict(
    dict(
      checkpoint_path="",
      checkpoint_format="auto",
      # A train.py workdir's checkpoint: its best complete one by best_checkpoint_metric (the
      # newest where it ranks none); which='latest' the newest; step=N that step.
      step=config_dict.placeholder(int),
      which="best",
      positional_embed_size_change="resize_tile",  # 'tile' | 'resize' | 'resize_tile'
      kernel_init_method="central_frame",  # ViViT tubelets from a 2D kernel: Eq. 9 or 'inflate'
      skip_patterns=(),
    )
  )  # regexes of parameter names to keep freshly initialised
  config.eval_every_steps = 0  # 0: evaluate only at the end.
  # How the views of a video are combined: mean_logits (ViViT), sum_logits (TimeSformer, X-ViT),
  # mean_softmax (MMAction2).
  config.eval_aggregation = "mean_logits"


# ---------------------------------------------------------------------------------------------
# Datasets.
# ---------------------------------------------------------------------------------------------


def reader_fields() -> dict:
  """The reader's dataset_configs fields that every dataset has, at the reader's defaults: an
  error message may suggest any of them on the command line, where a field must exist."""
  return dict(
    multi_label=False,  # True: several label indices per video, multi-hot targets.
    # Bad records (no frames, a corrupt JPEG, a label out of range) stop the run naming them;
    # skip_bad_records=True drops and counts them instead, until more than max_bad_fraction
    # of the records read are bad (from 10 bad records on; 1.0: no such cap) or, when set,
    # more than max_bad_records in all (vidtx.data.bad_records).
    skip_bad_records=False,
    max_bad_fraction=0.1,
    max_bad_records=config_dict.placeholder(int),
    # The short side evaluation resizes to; None: min_resize (recipes that evaluate at another
    # size set it). train.py's geometry warning suggests it.
    eval_min_resize=config_dict.placeholder(int),
  )


def synthetic_dataset(task: str = "motion") -> ml_collections.ConfigDict:
  """The embedded synthetic video dataset (vidtx.data.synthetic), scenic field names."""
  num_classes = {"motion": 4, "rotation": 2, "order": 2, "appearance": 4}
  if task not in num_classes:
    raise UserError(f"Synthetic task {task!r}: expected one of {sorted(num_classes)}.")
  return ml_collections.ConfigDict(
    dict(
      # Empty: generated once into ~/.cache/vidtx/synthetic/ ($VIDTX_CACHE relocates it).
      base_dir="",
      task=task,
      tables={"train": "train.tfrecord@4", "validation": "validation.tfrecord@2"},
      examples_per_subset={"train": 6144, "validation": 512},
      num_classes=num_classes[task],
      video_length=20,
      video_size=36,
      seed=0,
      num_frames=8,
      stride=2,
      min_resize=36,
      crop_size=32,
      zero_centering=True,
      # Off: a horizontal flip turns 'left' into 'right' and clockwise into anticlockwise.
      random_flip=False,
      num_test_clips=4,
      do_three_spatial_crops=False,
      label_offset=0,
      **reader_fields(),
    )
  )


class Dataset(NamedTuple):
  """What a recipe needs to know about a dataset (DMVR shards, one label index per video unless
  class_splits says otherwise)."""

  title: str
  num_classes: int
  # Split sizes: they only size epochs, warm-ups and evaluation loops. Video datasets shrink as
  # videos disappear: set --config.dataset_configs.examples_per_subset.train to your copy's
  # counts (the warm-ups, in epochs, follow).
  examples: dict[str, int]
  sizes_from: str
  class_splits: tuple[int, ...] = ()  # Several heads (EPIC: nouns then verbs), one label each.
  split_names: tuple[str, ...] = ()
  flip_keeps_label: bool = True  # False: classes name directions ("left to right").


DATASETS: dict[str, Dataset] = {
  "k400": Dataset(
    "Kinetics-400",
    400,
    {"train": 214834, "validation": 17637},
    "scenic's ViViT Kinetics-400 configs (ViViT 2103.15691 §4.1: ~267,000 videos)",
  ),
  "k600": Dataset(
    "Kinetics-600",
    600,
    {"train": 363213, "validation": 27676},
    "scenic's ViViT Kinetics-600 config (ViViT 2103.15691 §4.1: ~446,000 videos)",
  ),
  "mit": Dataset(
    "Moments in Time",
    339,
    {"train": 802264, "validation": 33900},
    "the Moments in Time v1 release (ViViT 2103.15691 §4.1: 800,000 clips of 3 s)",
  ),
  # EPIC-100 labels as the converter writes them: [noun, 300 + verb] (vidtx.data.make_shards).
  "ek": Dataset(
    "EPIC-Kitchens-100",
    397,
    {"train": 67217, "validation": 9668},
    "scenic's ViViT EPIC-Kitchens config",
    class_splits=(300, 97),
    split_names=("noun", "verb"),
  ),
  "ssv2": Dataset(
    "Something-Something-V2",
    174,
    {"train": 168913, "validation": 24777},
    "scenic's ViViT SSv2 config",
    flip_keeps_label=False,
  ),
  "diving48": Dataset(
    "Diving-48",
    48,
    {"train": 16000, "validation": 3000},
    "TimeSformer 2102.05095 supplementary (16K training, 3K testing videos)",
  ),
  # TimeSformer 2102.05095 §4.6: tasks with >= 100 videos, randomly split 85K / 35K.
  "howto100m": Dataset(
    "HowTo100M tasks",
    1059,
    {"train": 85000, "validation": 35000},
    "TimeSformer 2102.05095 §4.6 (85K training, 35K testing videos)",
  ),
}


def dmvr_dataset(name: str, *, num_frames: int, stride: int) -> ml_collections.ConfigDict:
  """dataset_configs of DATASETS[name] in DMVR TFRecords (scenic field names); the recipe
  builders then set sampling, augmentation and views. Set config.dataset_name = 'dmvr'.

  base_dir is empty: point it at your shards (--config.dataset_configs.base_dir=/data/k400).
  `tables` name the shards as `file@count`; override them to match yours, e.g.
  --config.dataset_configs.tables.validation=validation.tfrecord@1024. Frames: short side
  resized to 256, 224 crops, pixels to [-1, 1] (zero_centering), flipped when the flip keeps the
  label.
  """
  if name not in DATASETS:
    raise UserError(f"dmvr_dataset: {name!r} is not one of {sorted(DATASETS)}.")
  if num_frames < 1 or stride < 1:
    raise UserError(f"dmvr_dataset: num_frames={num_frames} and stride={stride} must be >= 1.")
  spec = DATASETS[name]
  dc = ml_collections.ConfigDict(
    dict(
      base_dir="",
      tables={"train": "train.tfrecord@1024", "validation": "validation.tfrecord@64"},
      examples_per_subset=dict(spec.examples),
      num_classes=spec.num_classes,
      num_frames=num_frames,
      stride=stride,
      min_resize=256,
      crop_size=224,
      zero_centering=True,
      random_flip=spec.flip_keeps_label,
      num_test_clips=1,
      do_three_spatial_crops=True,
      label_offset=0,
      **reader_fields(),
    )
  )
  if spec.class_splits:
    dc.class_splits = spec.class_splits
    dc.split_names = spec.split_names
  if not spec.flip_keeps_label:
    # Pairs of mirror classes (i, j) whose labels a flip swaps, from your label map.
    dc.flip_label_pairs = ()
  return dc


def short_side_jitter(min_short_side: int, max_short_side: int) -> ml_collections.ConfigDict:
  """augmentation_params of PySlowFast's TRAIN_JITTER_SCALES [min, max] (TimeSformer, X-ViT):
  the short side resized to a random value in [min, max] (from min_resize = min) before the
  random crop; no colour augmentation."""
  return ml_collections.ConfigDict(
    dict(
      do_jitter_scale=True,
      scale_min_factor=1.0,
      scale_max_factor=max_short_side / min_short_side,
      prob_scale_jitter=1.0,
    )
  )


def _variant_slug(variant: str) -> str:
  return variant.replace("/", "").lower()  # 'B/16x2' -> 'b16x2'


def _is_large(variant: str) -> bool:
  return hparams.parse_variant(variant)["hidden_size"] >= 1024  # ViT-L, ViT-H


# ---------------------------------------------------------------------------------------------
# ViViT (Arnab et al., 2021, arXiv:2103.15691).
# ---------------------------------------------------------------------------------------------


class VivitRecipe(NamedTuple):
  """One column of ViViT (arXiv:2103.15691) Table 7, and the clips and views of the dataset."""

  base_learning_rate: float
  epochs: float
  colour_jitter: bool
  rand_augment: tuple[int, float] | None  # (layers, magnitude)
  stochastic_depth: float
  label_smoothing: float
  mixup_alpha: float
  stride: int  # 32 frames at this stride
  spatial_crops: int  # evaluation: 4 temporal clips x this many crops


# ViViT (arXiv:2103.15691) Table 7. Clips: §4.1 (32 frames at stride 2, 4 views); EPIC and SSv2
# at stride 1 as scenic's released configs for them, EPIC evaluated on 4 x 1 views as scenic's
# model zoo.
VIVIT_RECIPES: dict[str, VivitRecipe] = {
  "k400": VivitRecipe(0.1, 30, True, None, 0.0, 0.0, 0.0, stride=2, spatial_crops=3),
  "k600": VivitRecipe(0.1, 30, True, None, 0.0, 0.0, 0.0, stride=2, spatial_crops=3),
  "mit": VivitRecipe(0.25, 10, True, None, 0.0, 0.0, 0.0, stride=2, spatial_crops=3),
  "ek": VivitRecipe(0.5, 50, False, (2, 15), 0.2, 0.2, 0.1, stride=1, spatial_crops=1),
  "ssv2": VivitRecipe(0.5, 35, False, (2, 20), 0.3, 0.3, 0.3, stride=1, spatial_crops=3),
}
VIVIT_BATCH_SIZE = 64
VIVIT_WARMUP_EPOCHS = 2.5
VIVIT_ATTENTION_NAMES = {
  "spatio_temporal": "st",
  "factorised_encoder": "fe",
  "factorised_self_attention": "fsa",
  "factorised_dot_product": "fdp",
}


def vivit_augmentation(
  *, color: bool, rand_augment: tuple[int, float] | None = None
) -> ml_collections.ConfigDict:
  """dataset_configs.augmentation_params of ViViT (arXiv:2103.15691) Table 7: scale jitter
  0.9-1.33 always; colour jitter (p 0.8) for K400/K600/MiT; RandAugment (layers, magnitude) for
  EK and SSv2."""
  params = ml_collections.ConfigDict(
    dict(
      do_jitter_scale=True,
      scale_min_factor=0.9,
      scale_max_factor=1.33,
      prob_scale_jitter=1.0,
      do_color_augment=color,
      prob_color_augment=0.8,
      prob_color_drop=0.0,
      do_rand_augment=rand_augment is not None,
      rand_augment_num_layers=2,
      rand_augment_magnitude=15.0,
    )
  )
  if rand_augment is not None:
    params.rand_augment_num_layers, params.rand_augment_magnitude = rand_augment
  return params


def vivit_recipe(dataset: str, *, variant: str, attention: str) -> ml_collections.ConfigDict:
  """ViViT-`variant` with `attention` (Models 1-4) on `dataset`, as ViViT (arXiv:2103.15691)
  Table 7 trains it.

  Recipe (Table 7 and §4.1): 32 frames (stride 2; 1 for EPIC and SSv2, as scenic's configs),
  224 x 224 crops, central-frame tubelet initialisation (Eq. 9), synchronous SGD with momentum
  0.9, batch 64, cosine schedule after 2.5 epochs of linear warm-up, gradients clipped to norm 1
  (scenic's configs), random crop after scale jitter 0.9-1.33 (probability 1) and flips (0.5)
  for every dataset; per dataset (VIVIT_RECIPES):

    dataset  lr    epochs  colour jitter  RandAugment  droplayer  label smoothing  mixup
    K400     0.1   30      p 0.8          -            -          -                -
    K600     0.1   30      p 0.8          -            -          -                -
    MiT      0.25  10      p 0.8          -            -          -                -
    EK       0.5   50      -              2, 15        0.2        0.2              0.1
    SSv2     0.5   35      -              2, 20        0.3        0.3              0.3

  Evaluation (§4.1): 4 temporal clips x 3 spatial crops (EPIC: 4 x 1, scenic's zoo), logits
  averaged. Models 3 and 4 classify the average token, Models 1 and 2 a class token; L_t = 4
  temporal layers in Model 2. ViT-L and ViT-H models rematerialise every block in the backward
  pass (model.remat_policy='full') to fit 32 frames at batch 64 in accelerator memory.

  Hardware: the paper trains on TPU-v3 (§4.1; the number of chips is not given). Batch 64 of
  32 x 224 x 224 clips needs several accelerators (e.g. 8 GPUs of 40-80 GB, 8 clips each, for
  ViViT-B; 16-32 GPUs of 80 GB for ViViT-L): the batch is sharded over every device
  (config.mesh). With fewer devices, raise --config.grad_accum_steps (same update), or lower
  --config.batch_size: the learning rate follows linearly (config.batch_scaling). On more
  devices than the batch has clips (a pod), raise it: --config.batch_size=256, or
  --config.per_device_batch_size=1; the start-up line gives the learning rate it brings.
  --config.model.dtype=bfloat16 halves the activation memory (the paper trains in float32).

  Differences from the paper, and why:
  - Initialisation: the paper starts from an ImageNet-21K ViT (§3.4: positional embedding
    repeated over time, central-frame tubelets, Model 3's temporal attention at zero), which
    init_from does by these rules: convert the ViT once (python -m vidtx.convert --src
    ViT-B_16.npz --out ckpt/vit_b16_in21k) and pass --config.init_from.checkpoint_path=
    ckpt/vit_b16_in21k (or the .npz). EPIC-Kitchens starts from a Kinetics-400 ViViT (Table 4):
    pass that run's workdir or converted checkpoint; the head is re-initialised for the new
    classes. Left empty, the config trains from random initialisation and will not reach the
    paper's accuracy.
  - Dataset size: epochs and the warm-up are counted with the split sizes of DATASETS; set
    --config.dataset_configs.examples_per_subset.train to your copy's.
  - Clips for EPIC and SSv2: 32 frames at stride 1 as scenic's released configs (the paper
    states stride 2 "unless otherwise mentioned").
  - SSv2 is flipped as Table 7 says, although a flip mirrors direction classes ("pushing
    something from left to right"); --config.dataset_configs.flip_label_pairs (pairs of class
    indices from your label map) swaps them, --config.dataset_configs.random_flip=False turns
    flips off.
  """
  if dataset not in VIVIT_RECIPES:
    raise UserError(f"vivit_recipe: dataset={dataset!r}; expected one of {sorted(VIVIT_RECIPES)}.")
  check_attention(attention, vivit.ATTENTIONS)
  hparams.parse_variant(variant)  # Raises ValueError naming the variant when invalid.
  recipe = VIVIT_RECIPES[dataset]
  config = ml_collections.ConfigDict()
  config.experiment_name = (
    f"{dataset}_vivit_{_variant_slug(variant)}_{VIVIT_ATTENTION_NAMES[attention]}"
  )

  config.dataset_name = "dmvr"
  dc = dmvr_dataset(dataset, num_frames=32, stride=recipe.stride)
  dc.num_test_clips = 4
  dc.do_three_spatial_crops = recipe.spatial_crops == 3
  dc.random_flip = True  # Table 7: flip probability 0.5 on every dataset.
  dc.augmentation_params = vivit_augmentation(
    color=recipe.colour_jitter, rand_augment=recipe.rand_augment
  )
  config.dataset_configs = dc

  config.model_name = "vivit"
  config.model = models.default_config("vivit")
  config.model.variant = variant
  config.model.attention = attention
  config.model.classifier = "gap" if attention in vivit.GAP_ONLY else "token"
  config.model.kernel_init_method = "central_frame"
  config.model.stochastic_depth = recipe.stochastic_depth
  if _is_large(variant):
    config.model.remat_policy = "full"

  training(
    config,
    batch_size=VIVIT_BATCH_SIZE,
    steps=None,
    base_learning_rate=recipe.base_learning_rate,
    warmup_epochs=VIVIT_WARMUP_EPOCHS,
    paper="ViViT (arXiv:2103.15691) Table 7",
  )
  config.num_training_epochs = float(recipe.epochs)
  config.label_smoothing = recipe.label_smoothing
  config.mixup.alpha = recipe.mixup_alpha
  config.eval_aggregation = "mean_logits"  # ViViT averages the logits of the views.
  return config


# ---------------------------------------------------------------------------------------------
# TimeSformer (Bertasius et al., 2021, arXiv:2102.05095).
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TimesformerVariant:
  """A TimeSformer of TimeSformer (arXiv:2102.05095) §4.3 / Table 3; official configs' sizes."""

  num_frames: int  # Kinetics, Diving-48, HowTo100M
  segment_frames: int  # Something-Something-V2 (the official SSv2 configs: 8, 16, 64 frames)
  crop_size: int
  short_side: tuple[int, int]  # training: short side uniform in this range, then a random crop
  sampling_rate: int  # Kinetics: num_frames frames spread over num_frames * rate frames at 30 fps


TIMESFORMER_VARIANTS = {
  "base": TimesformerVariant(8, 8, 224, (256, 320), 32),  # TimeSformer: 8 x 224 x 224
  "HR": TimesformerVariant(16, 16, 448, (448, 512), 16),  # TimeSformer-HR: 16 x 448 x 448
  "L": TimesformerVariant(96, 64, 224, (256, 320), 4),  # TimeSformer-L: 96 x 224 x 224
}
# Something-Something-V2 and Diving-48 are short and "temporally heavy": one frame per segment.
TIMESFORMER_SEGMENT_DATASETS = ("ssv2", "diving48")
TIMESFORMER_DATASETS = ("k400", "k600", "ssv2", "diving48", "howto100m")
TIMESFORMER_EPOCHS = 15
TIMESFORMER_DECAY_EPOCHS = (11, 14)


def timesformer_variant(name: str) -> str:
  """The `variant=` argument of a TimeSformer recipe, case-insensitive: 'base', 'HR' or 'L'."""
  by_lower = {key.lower(): key for key in TIMESFORMER_VARIANTS}
  if name.lower() not in by_lower:
    raise UserError(
      f"Config argument variant={name!r}: expected one of "
      f"{list(TIMESFORMER_VARIANTS)} (in any case)."
    )
  return by_lower[name.lower()]


def timesformer_recipe(
  dataset: str, *, variant: str = "base", attention: str = "divided", num_frames: int | None = None
) -> ml_collections.ConfigDict:
  """TimeSformer-`variant` with `attention` on `dataset`, as TimeSformer (arXiv:2102.05095)
  trains it.

  Recipe (supplementary §1 "Training"; the official configs): ViT-Base, 16 x 16 patches,
  stochastic depth 0.1; 15 epochs of synchronized SGD with momentum 0.9, weight decay 1e-4,
  batch 16, learning rate 0.005 divided by 10 at epochs 11 and 14 (lr_configs.schedule='steps'),
  no warm-up, no label smoothing, no gradient clipping. Training frames: short side resized to a
  random value in [256, 320] ([448, 512] for -HR), a random 224 (448) crop, flipped with
  probability 0.5 (not for Something-Something-V2: the official RANDOM_FLIP False); pixels
  normalised with mean 0.45, std 0.225. Evaluation: one clip x 3 crops (top-left, centre,
  bottom-right) of frames whose short side is resized to the crop size; logits summed as the
  official code (the supplementary speaks of averaging softmax scores:
  --config.eval_aggregation=mean_softmax).

  Variants (TIMESFORMER_VARIANTS): base 8 x 224 x 224 frames at a rate of 1/32, HR 16 x 448 x 448
  at 1/16, L 96 x 224 x 224 at 1/4 (§4.3 and the official configs TimeSformer_divST_8x32_224,
  _16x16_448, _96x4_224). Sampling as PySlowFast (train_sampling='timesformer'): the frames
  spread over a window of frames x rate frames at 30 fps (8.5 s for base), converted to the
  shards' frame rate (the record's video/frame_rate written by vidtx.data.make_shards, else
  dataset_configs.frame_rate); the middle window at evaluation. Something-Something-V2 and
  Diving-48: one frame per segment (train_sampling='segment', random in the segment for training,
  its middle for evaluation) of 8, 16 or 64 frames (the official SSv2 configs; Diving-48 with 96
  for L). HR and L rematerialise every block in the backward pass (model.remat_policy='full').

  Hardware: the paper trains on 32 GPUs (supplementary §1; Table 2: 416 V100 hours for
  TimeSformer on Kinetics-400; the official configs run 8 GPUs with batch 8). Batch 16 of the
  base model fits on a few 40-80 GB GPUs; HR and L need more, or --config.grad_accum_steps. More
  devices than 16: raise --config.batch_size (or set --config.per_device_batch_size); the learning
  rate follows linearly and the decay epochs stay epochs (config.batch_scaling).

  Differences from the paper, and why:
  - Initialisation: the paper starts from an ImageNet ViT-B/16 (21K for Kinetics, 1K for SSv2 and
    Diving-48; temporal attention copied from the spatial one, temporal_fc and the time embedding
    at zero: temporal_init='image'), which init_from does: python -m vidtx.convert --src
    ViT-B_16.npz --out ckpt/vit_b16_in21k, then --config.init_from.checkpoint_path=
    ckpt/vit_b16_in21k. Left empty, the config trains from random initialisation; from scratch
    --config.model.temporal_init=random trains the temporal parts (vidtx.models.timesformer).
  - Dataset size: epochs and the decay epochs are counted with the split sizes of DATASETS.
  - Diving-48's sampling is not stated in the paper; its videos are a few seconds long, shorter
    than the 8.5 s window, so it is sampled as SSv2, one frame per segment.
  """
  if dataset not in TIMESFORMER_DATASETS:
    raise UserError(
      f"timesformer_recipe: dataset={dataset!r}; expected one of {list(TIMESFORMER_DATASETS)}."
    )
  check_attention(attention, timesformer.ATTENTIONS)
  size = TIMESFORMER_VARIANTS[timesformer_variant(variant)]
  segments = dataset in TIMESFORMER_SEGMENT_DATASETS
  if num_frames is None:
    num_frames = size.segment_frames if dataset == "ssv2" else size.num_frames
  config = ml_collections.ConfigDict()
  config.experiment_name = f"{dataset}_timesformer_{variant.lower()}_{attention}"

  config.dataset_name = "dmvr"
  dc = dmvr_dataset(dataset, num_frames=num_frames, stride=size.sampling_rate)
  dc.normalization = "timesformer"  # Mean 0.45, std 0.225 (official).
  dc.update(
    min_resize=size.short_side[0],
    crop_size=size.crop_size,
    eval_min_resize=size.crop_size,
    num_test_clips=1,
    do_three_spatial_crops=True,
  )
  dc.augmentation_params = short_side_jitter(*size.short_side)
  if segments:
    dc.update(train_sampling="segment", eval_sampling="segment")
  else:
    dc.update(
      train_sampling="timesformer",
      eval_sampling="timesformer",
      sampling_rate=size.sampling_rate,
      target_fps=30.0,
      frame_rate=30.0,
    )
  config.dataset_configs = dc

  config.model_name = "timesformer"
  config.model = models.default_config("timesformer")  # B/16, stochastic depth 0.1, exact GELU.
  config.model.variant = "B/16"
  config.model.attention = attention
  if size.crop_size > 224 or num_frames > 16:  # HR, L and long HowTo100M clips.
    config.model.remat_policy = "full"

  training(
    config,
    batch_size=16,
    steps=None,
    base_learning_rate=0.005,
    warmup_steps=0,
    paper="TimeSformer (arXiv:2102.05095) supplementary §1",
  )
  config.num_training_epochs = float(TIMESFORMER_EPOCHS)
  config.lr_configs.update(
    schedule="steps", decay_epochs=TIMESFORMER_DECAY_EPOCHS, decay_factor=0.1
  )
  config.optimizer_configs.weight_decay = 1e-4
  config.max_grad_norm = 0.0  # 0: no clipping.
  config.label_smoothing = 0.0
  config.eval_aggregation = "sum_logits"
  return config


# ---------------------------------------------------------------------------------------------
# X-ViT (Bulat et al., NeurIPS 2021, arXiv:2106.05968).
# ---------------------------------------------------------------------------------------------


class XvitRecipe(NamedTuple):
  """The released X-ViT config of a dataset (github.com/1adrianb/video-transformers, configs/)."""

  epochs: float
  weight_decay: float
  label_smoothing: float  # their smooth_cross_entropy; plain cross_entropy for SSv2
  mixup_alpha: float
  mixing_fraction: float  # 2 / SHIFT_DIV: 1/4 of the channels (Kinetics), 1/2 (SSv2)
  segments: bool  # one frame per segment (SSv2) instead of a window at a frame rate
  test_clips: int  # temporal views, each with 3 spatial crops
  random_flip: bool


XVIT_RECIPES: dict[str, XvitRecipe] = {
  # github.com/1adrianb/video-transformers: its Kinetics-400 and -600 configs.
  "k400": XvitRecipe(30, 1e-5, 0.3, 0.4, 0.25, segments=False, test_clips=1, random_flip=True),
  "k600": XvitRecipe(30, 1e-5, 0.3, 0.4, 0.25, segments=False, test_clips=1, random_flip=True),
  # github.com/1adrianb/video-transformers: its SSv2 config.
  "ssv2": XvitRecipe(35, 1e-4, 0.0, 0.0, 0.5, segments=True, test_clips=2, random_flip=False),
}
XVIT_BATCH_SIZE = 64
XVIT_WARMUP_EPOCHS = 5
XVIT_FRAMES = ("8", "16")
XVIT_SPAN = 256  # Kinetics: the released 16 frames x rate 16 span 256 frames at 30 fps.


def xvit_recipe(dataset: str, *, attention: str, num_frames: int) -> ml_collections.ConfigDict:
  """X-ViT-B/16 (or the TSM-ViT baseline) on `dataset`, as the released configs train it.

  Model (vidtx.models.xvit): space-time mixing in every block (keys and values take a fraction
  of their channels from frames t - 1 and t + 1), a one-layer temporal-attention head over the
  per-frame class tokens and an MLP head, dropout 0.5 before and inside the head
  (MODEL.DROPOUT_RATE), no stochastic depth.

  Recipe (the released configs, XVIT_RECIPES): SGD with Nesterov momentum 0.9, batch 64,
  learning rate 0.03 with cosine decay after 5 warm-up epochs, no gradient clipping; frames
  normalised with mean 0.5 and std 0.5 (zero_centering), short side resized to a random value
  in [256, 320], random 224 crop. Kinetics: 30 epochs, weight decay 1e-5, label smoothing 0.3
  (their smooth_cross_entropy), mixup alpha 0.4, flips, 1/4 of the channels mixed (SHIFT_DIV 8),
  frames spread over 256 frames at 30 fps (8 at a rate of 1/32, or the released 16 at 1/16) as
  PySlowFast samples them; evaluation on 1 clip x 3 crops at short side 224. SSv2: 35 epochs,
  weight decay 1e-4, plain cross-entropy, no mixup, no flips, 1/2 of the channels mixed
  (SHIFT_DIV 4), 16 frames one per segment; evaluation on 2 clips x 3 crops. Logits of the views
  summed (DATA.ENSEMBLE_METHOD 'sum').

  Hardware: the released configs train on 8 GPUs (NUM_GPUS 8) with batch 64; the supplementary
  times X-ViT at 12 videos/s on 8 V100s (Table 1). Another batch (--config.batch_size or
  --config.per_device_batch_size) scales the learning rate linearly (config.batch_scaling).

  Differences from the release, and why:
  - Not in vidtx: AutoAugment (DATA.AUTOAUGMENT) and SSv2's RAND_CROP; the warm-up starts from
    0, not from 0.01 (0.003 for SSv2).
  - Initialisation: the release starts from ImageNet-21K ViT-B/16 (timm
    vit_base_patch16_224_in21k; time embedding and head new): --config.init_from.checkpoint_path=
    PATH with that timm checkpoint (or its converted directory) does the same. Left empty, the
    config trains from random initialisation, which needs a far longer schedule.
  - The released temporal block has no q/k/v biases; ours has them (2,304 more parameters).
  - Dataset size: epochs and the warm-up are counted with the split sizes of DATASETS.
  """
  if dataset not in XVIT_RECIPES:
    raise UserError(f"xvit_recipe: dataset={dataset!r}; expected one of {sorted(XVIT_RECIPES)}.")
  check_attention(attention, xvit.ATTENTIONS)
  check_choice("frames", str(num_frames), XVIT_FRAMES)
  recipe = XVIT_RECIPES[dataset]
  config = ml_collections.ConfigDict()
  config.experiment_name = f"{dataset}_xvit_{attention}_{num_frames}f"

  config.dataset_name = "dmvr"
  rate = XVIT_SPAN // num_frames
  dc = dmvr_dataset(dataset, num_frames=num_frames, stride=rate)
  dc.update(
    eval_min_resize=224,
    num_test_clips=recipe.test_clips,
    do_three_spatial_crops=True,
    random_flip=recipe.random_flip,
  )
  dc.augmentation_params = short_side_jitter(256, 320)
  if recipe.segments:
    dc.update(train_sampling="segment", eval_sampling="segment")
  else:
    dc.update(
      train_sampling="timesformer",
      eval_sampling="timesformer",
      sampling_rate=rate,
      target_fps=30.0,
      frame_rate=30.0,
    )
  config.dataset_configs = dc

  config.model_name = "xvit"
  config.model = models.default_config("xvit")  # B/16, mixing over +-1, temporal head.
  config.model.attention = attention
  config.model.mixing_fraction = recipe.mixing_fraction
  config.model.head_dropout_rate = 0.5

  training(
    config,
    batch_size=XVIT_BATCH_SIZE,
    steps=None,
    base_learning_rate=0.03,
    warmup_epochs=XVIT_WARMUP_EPOCHS,
    paper="the X-ViT (arXiv:2106.05968) release",
  )
  config.num_training_epochs = float(recipe.epochs)
  config.optimizer_configs.nesterov = True
  config.optimizer_configs.weight_decay = recipe.weight_decay
  config.max_grad_norm = 0.0  # The release does not clip (CLIP_GRADIENT -1).
  config.label_smoothing = recipe.label_smoothing
  config.mixup.alpha = recipe.mixup_alpha
  config.eval_aggregation = "sum_logits"
  return config
