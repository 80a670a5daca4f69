"""What every recipe shares: arguments, the shrink switch, the training fields, the datasets.

A recipe file is `get_config(arg=None)`; a paper's recipe file calls its family's builder:

    args = common.parse_arg(arg, variant="B/16x2")       # its key=value arguments, and shrink
    config = vivit.vivit_recipe("k600", variant=args.variant, attention=...)
    return common.finish(config, args)                    # applies shrink=1 when asked

Where a recipe's fields are: the recipe file (its arguments and what only it changes), its
paper's family module and this file. A family module (configs/families/vivit.py,
timesformer.py, xvit.py) holds the paper's recipe as data, one table row per dataset citing the
paper's table, and the one function that builds a config from a row; it sets every field its
paper chooses. This file sets what is the same for every recipe, and a family passes its values
in:

- `parse_arg` reads `configs/FILE.py:key=value,key2=value2` against the file's defaults; every
  file also accepts `shrink=1` (see `shrink`).
- `training` sets the optimizer, schedule, logging, checkpointing, evaluation and mesh fields
  every config has, from the batch, learning rate, schedule and regularisation a family (or a
  synthetic recipe) passes; `epochs_to_steps` is the one conversion of a duration in epochs.
- Datasets: `DATASETS` holds the facts of each dataset, whichever paper trains on it (classes,
  label kind, split sizes, whether a horizontal flip keeps the label), and `dmvr_dataset` turns
  an entry into dataset_configs (scenic's field names) for DMVR shards; the family then sets its
  clips, augmentation and views. `reader_fields` adds the reader's fields every dataset has
  (label kind, bad-record handling), so the command line can set them.
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
import math
from typing import NamedTuple

import ml_collections
from ml_collections import config_dict

from vidtx import models, optim
from vidtx.errors import UserError
from vidtx.models import hparams

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
  as many as divide 'data').
  rules: the logical axis rules, which mesh axes each logical axis of the models' parameters and
  activations is split over (a mesh axis, a tuple of them, or None: whole). The default: the
  batch over both data-parallel axes; parameters' embedding dimension over 'fsdp' (ZeRO-3); the
  MLP's hidden units and the attention heads over 'model' (Megatron); head_dim ('kv'), token
  positions ('length') and scanned layers ('layers') whole. E.g. `config.mesh.rules.mlp = None`
  (on the command line --config.mesh.rules.mlp=None) keeps the MLP whole on a 'model' mesh;
  several mesh axes as a tuple or comma-separated names. The whole axes are typed placeholders,
  so that the command line can set them."""
  return ml_collections.ConfigDict(
    dict(
      data=-1,
      fsdp=1,
      model=1,
      dcn_data=config_dict.placeholder(int),
      rules=dict(
        batch=("data", "fsdp"),
        length=config_dict.placeholder(str),
        embed="fsdp",
        mlp="model",
        heads="model",
        kv=config_dict.placeholder(str),
        layers=config_dict.placeholder(str),
      ),
    )
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
  base_learning_rate: float,
  steps: int | None = None,
  epochs: float | None = None,
  warmup_steps: int | None = None,
  warmup_epochs: float | None = None,
  schedule: str = "cosine",
  decay_epochs: tuple[int, ...] | None = None,
  decay_factor: float | None = None,
  weight_decay: float = 0.0,
  nesterov: bool = False,
  max_grad_norm: float = 1.0,
  label_smoothing: float = 0.1,
  mixup_alpha: float = 0.0,
  eval_aggregation: str = "mean_logits",
  paper: str = "",
) -> None:
  """Optimizer, schedule, logging, checkpointing, evaluation and mesh fields, set on `config`.

  The arguments are what a recipe chooses (a family module passes its paper's values; the
  defaults are the synthetic recipes'); every other field here is the same for every recipe.
  `paper` (e.g. 'ViViT (arXiv:2103.15691) Table 7'): `batch_size` and `base_learning_rate` are
  that paper's, kept in config.batch_scaling so that another batch rescales the learning rate
  (linearly, as the papers' SGD recipes) at start-up. `decay_epochs` and `decay_factor` are the
  'steps' schedule's.
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
  if epochs is not None:
    config.num_training_epochs = float(epochs)
  # Gradients of batch_size / grad_accum_steps clips summed over this many micro-batches per
  # update: the same update with less activation memory.
  config.grad_accum_steps = 1

  config.optimizer = "momentum"
  # Weight decay skips positional embeddings, class tokens and norms unless
  # optimizer_configs.no_decay_patterns says otherwise (vidtx.optim.NO_DECAY_PATTERNS).
  config.optimizer_configs = ml_collections.ConfigDict(
    dict(momentum=0.9, nesterov=nesterov, weight_decay=weight_decay)
  )
  config.max_grad_norm = max_grad_norm  # 0: no clipping.
  config.label_smoothing = label_smoothing
  # Mixup's alpha: 0 off, else mixing weights drawn from Beta(alpha, alpha).
  config.mixup = ml_collections.ConfigDict(dict(alpha=mixup_alpha))
  # schedule: 'cosine' | 'constant' | 'steps' (with decay_epochs or decay_steps, decay_factor),
  # each after a linear warm-up of warmup_steps, or warmup_epochs converted at the run's batch
  # (steps win; vidtx.optim.make_schedule).
  config.lr_configs = ml_collections.ConfigDict(
    dict(
      schedule=schedule,
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
  if decay_epochs is not None:
    config.lr_configs.update(decay_epochs=decay_epochs, decay_factor=decay_factor)
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
  config.eval_aggregation = eval_aggregation


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
    # One training stream for any number of hosts, resumable on another topology (a global
    # permutation per epoch, read through the frame tables; vidtx.data.global_order). None
    # (auto): on when every train shard has a current frame table (make_shards and the
    # synthetic dataset write them), else the per-process stream, said in one line at start-up;
    # True: required (an error names what is missing); False: the per-process stream.
    global_order=config_dict.placeholder(bool),
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


def dmvr_dataset(name: str) -> ml_collections.ConfigDict:
  """dataset_configs of DATASETS[name] in DMVR TFRecords (scenic field names): where the shards
  are, the split sizes, the classes and the label kind; the family module then sets the clips
  (num_frames, stride, sampling), the frame sizes, the augmentation and the views. Set
  config.dataset_name = 'dmvr'.

  base_dir is empty: point it at your shards (--config.dataset_configs.base_dir=/data/k400).
  `tables` name the shards as `file@count`; override them to match yours, e.g.
  --config.dataset_configs.tables.validation=validation.tfrecord@1024. Pixels go to [-1, 1]
  (zero_centering).
  """
  if name not in DATASETS:
    raise UserError(f"dmvr_dataset: {name!r} is not one of {sorted(DATASETS)}.")
  spec = DATASETS[name]
  dc = ml_collections.ConfigDict(
    dict(
      base_dir="",
      tables={"train": "train.tfrecord@1024", "validation": "validation.tfrecord@64"},
      examples_per_subset=dict(spec.examples),
      num_classes=spec.num_classes,
      zero_centering=True,
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
