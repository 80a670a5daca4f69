r"""Fine-tune TimeSformer, ViViT or X-ViT on your own videos, on one GPU.

  python -m vidtx.data.make_shards --source=folders --input=my_videos --output_dir=shards/mine
  python -m vidtx.convert --src ViT-B_16.npz --out ckpt/vit_b16
  python train.py --config=configs/finetune.py:data=shards/mine,init=ckpt/vit_b16 \
      --workdir=runs/mine
  vidtx-train --config=finetune:model=vivit_fe,data=shards/mine,init=ckpt/vit_b16,epochs=10 \
      --workdir=runs/mine_vivit
  python train.py --config=configs/finetune.py:data=shards/mine,init=ckpt/vit_b16,shrink=1 \
      --workdir=/tmp/finetune_smoke
  python train.py --config=configs/finetune.py:data=shards/directions,init=runs/quickstart \
      --workdir=runs/directions        # on a CPU: docs/training.md
  python -m vidtx.convert --src runs/mine --out ckpt/mine
  python -m vidtx.predict --checkpoint ckpt/mine --video my_videos/cats/cat_1.mp4

Arguments:
- model=timesformer|vivit_fe|xvit (default timesformer): TimeSformer-B with divided attention on
  8 x 224 x 224 (TimeSformer, arXiv:2102.05095), ViViT-B/16x2 factorised encoder (Model 2) on 32 x
  224 x 224 (ViViT, arXiv:2103.15691), X-ViT-B/16 on 8 x 224 x 224 (X-ViT, arXiv:2106.05968).
- data=DIR: shards written by vidtx-make-shards (labels.txt, the train and validation tables and
  their train_summary.json / validation_summary.json). num_classes, the class names and the split
  sizes are read from it when the config is built; a missing file is named with what is expected
  there. Default synthetic: the embedded synthetic dataset (appearance task), so that the recipe
  builds and its smoke test runs without data; it is not a fine-tune (a directory named
  'synthetic' is data=./synthetic).
- init=DIR: the pretrained model, a converted directory (vidtx-convert: an image ViT, or a video
  model of the same family, e.g. a Kinetics TimeSformer) or a train.py workdir; the head is
  re-initialised for your classes, or remapped by class name when the checkpoint names the same
  ones (vidtx.checkpoints.init_from). Empty (default): random initialisation, which is not
  recommended (a note is printed): the papers' models reach their accuracy only from pretrained
  weights, and a small dataset cannot make up for them.
  The model follows init: its width, depth, heads, MLP width and patch (a video checkpoint's
  tubelet and frame count too), read from its vidtx_model.json or config.json without loading
  a parameter (vidtx.checkpoints.vit.read_shape), and its image size sets crop_size, with
  min_resize and eval_min_resize scaled as the recipe's (256 and 224 for a 224 crop); one line
  says what was built ("model follows init=...: ViT-S/16 (384 wide, 12 layers, 6 heads, MLP
  1536) at 112 px, 8 frames").
- flip=0|1: random horizontal flips. Default: off when a class name of labels.txt says a
  direction a mirror image swaps (vidtx.data.class_labels.direction_classes: left / right,
  clockwise / anticlockwise), on otherwise (every paper's Kinetics recipe flips).
- epochs=15; batch=8 (clips per step; the learning rate, warm-up and evaluations follow it, so
  set it here rather than with --config.batch_size, which moves only the learning rate).
- shrink=1: a seconds-long smoke test of this fine-tune: data=, init= and the model and clips
  init sets are kept; the run is 2 steps of 4 clips with one evaluation at the end, one view per
  validation video (shrink_run). Without data= nor init=, every recipe's CPU smoke test
  (configs.common.shrink: a tiny model on the synthetic data).

One summary line is printed when the config is built: the data (or that no data= was given and
the synthetic task stands in), the start, whether flips are on and why, the run's length.

Overrides: --config.x=v flags apply after this file has built the config, so the fields it set
from init= and its clip geometry are recorded in config.recipe_defaults (record_defaults), and
train.py compares the final config with them before any work (vidtx.config_checks.check_config): an
override wins, with a note; an overridden crop_size or min_resize takes eval_min_resize along
unless it is given too; an override init= cannot fill (another width, say) stops the run in one
line naming both shapes and the flag.

Derived from data: dataset_configs.num_classes (labels.txt's lines), class_names, tables and
examples_per_subset (the summaries; shards without one are counted), class_splits / multi_label
when the shards have them; one epoch = ceil(train videos / batch) steps, the warm-up (one epoch),
the evaluation and best-checkpoint interval (one epoch) and TimeSformer's decay boundaries (kept
on distinct steps in short runs; a batch larger than the train split is allowed: each step's
clips then span more than one pass over it).

The recipe of each model, at batch 8 (learning rates scaled linearly from the paper's batch):
  model        clips (train; evaluation views)               lr      schedule, regularisation
  timesformer  8 frames, one per segment; 1 clip x 3 crops   0.0025  /10 at 11/15 and 14/15 of
                                                                     the run; weight decay 1e-4
  vivit_fe     32 frames at stride 2; 4 clips x 3 crops      0.0125  cosine; RandAugment 2/15,
                                                                     droplayer 0.2, label
                                                                     smoothing 0.2, mixup 0.1
  xvit         8 frames, one per segment; 1 clip x 3 crops   0.00375 cosine; weight decay 1e-5,
                                                                     label smoothing 0.3, mixup
                                                                     0.4, head dropout 0.5
Each as its paper fine-tunes an ImageNet ViT (configs/families/timesformer.py, vivit.py,
xvit.py): TimeSformer supplementary §1 (SGD, weight decay 1e-4, decays at epochs 11 and 14
of 15; short side 256-320, random 224 crop, flips, mean 0.45 / std 0.225), ViViT Table 7 and
§4.1 (SGD, cosine, clipping at norm 1, scale jitter 0.9-1.33, flips, 4 x 3 views), the X-ViT
release's Kinetics config (Nesterov SGD, cosine, short side 256-320, flips, 1/4 of the channels
mixed, 1 x 3 views summed).

What differs from the papers, and why:
- Epochs: 15 (ViViT and X-ViT train Kinetics for 30): a pretrained model fits a small dataset in
  a few epochs; more mostly overfits.
- Batch 8 and the learning rate scaled with it (TimeSformer 0.005 at 16, ViViT's Kinetics 0.1
  at 64, X-ViT 0.03 at 64): one GPU instead of the papers' multi-accelerator batches.
- Warm-up: one epoch for every model (TimeSformer has none, ViViT 2.5 epochs, X-ViT 5): the
  fresh head's first gradients do not reach the pretrained backbone at the full rate.
- ViViT regularisation: Table 7's Epic-Kitchens column (RandAugment instead of colour jitter):
  the paper regularises its small datasets (EK, SSv2; Table 4) and not Kinetics.
- Sampling (TimeSformer, X-ViT): one frame per segment of the whole video (both papers' SSv2
  sampling), not Kinetics' 8.5 s window: your videos may be of any length.
- Inputs are normalised as init's checkpoint was (its vidtx_model.json or config.json), and its
  GELU form and LayerNorm epsilon are kept: the TimeSformer paper keeps 0.45 / 0.225 for a ViT
  trained on [-1, 1].
- Validation top-1 after every epoch, its best checkpoint kept (best_checkpoint_metric): small
  validation splits are noisy and small datasets overfit late in a run.
- Flips stay on as in every paper's Kinetics recipe, except for classes whose names say a
  direction a mirror changes ("turn left"): flip= decides.

Expected: no paper number applies to your videos; the validation top-1 is printed after every
epoch, and the final line compares it with chance (1 / classes). The nearest published case is
TimeSformer on Diving-48 (16,000 training videos, from an ImageNet-1K ViT): 74.9% top-1 (Table
7). Pretraining is most of it: from scratch the paper's Kinetics-400 TimeSformer reached 64.8%
top-1, against 78.0% from ImageNet-21K.

Hardware: one GPU. A float32 training step at batch 8 holds about 23 GiB for TimeSformer, 18 GiB
for X-ViT and 33 GiB for ViViT-B FE (32 frames) by XLA's buffer assignment (compiled for a CPU:
an estimate): a 40 GB GPU, or 80 GB for ViViT. With less memory: batch=4 (ViViT: 17 GiB; the
learning rate follows), --config.grad_accum_steps=2 (the same update in two halves) or
--config.model.dtype=bfloat16.
"""

import json
import math
import os
import sys

import ml_collections

from vidtx.configs import common
from vidtx.configs.families import timesformer, vivit, xvit
from vidtx.errors import UserError

MODELS = ("timesformer", "vivit_fe", "xvit")
SYNTHETIC = "synthetic"
EPOCHS = 15
BATCH_SIZE = 8
WARMUP_EPOCHS = 1.0
SPLITS = ("train", "validation")
# ViViT Table 7's Epic-Kitchens column: the regularisation of the paper's small datasets.
VIVIT_SMALL_DATASET = "ek"
# Fields of the synthetic generator (vidtx.data.synthetic) for data=synthetic.
_SYNTHETIC_FIELDS = ("task", "tables", "examples_per_subset", "num_classes", "video_length")
_SYNTHETIC_FIELDS += ("video_size", "seed")
# The clip geometry train.py checks the command line's overrides against (record_defaults).
_GEOMETRY_FIELDS = ("crop_size", "min_resize", "eval_min_resize", "num_frames")
_MAKE_SHARDS = (
  "python -m vidtx.data.make_shards --source=folders --input={videos} --output_dir={dir} "
  "({videos}/<class>/<video>; --val_fraction sets the validation share)"
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(
    arg,
    model="timesformer",
    data=SYNTHETIC,
    init="",
    epochs=str(EPOCHS),
    batch=str(BATCH_SIZE),
    flip="",
  )
  common.check_choice("model", args.model, MODELS)
  if not args.data:
    raise UserError(
      "Config argument data='': expected a shards directory (data=DIR), or no data= for the "
      "synthetic dataset."
    )
  epochs = _number("epochs", args.epochs, float)
  batch_size = _number("batch", args.batch, int)
  flip = _flip(args.flip)

  config = model_recipe(args.model)
  dc = config.dataset_configs
  direction = []
  if args.data == SYNTHETIC:
    config.dataset_name = "synthetic"
    synthetic = common.synthetic_dataset("appearance")  # Its classes survive flips.
    dc.update({field: synthetic[field] for field in _SYNTHETIC_FIELDS})
    dc.base_dir = ""  # Generated into vidtx's cache on first use.
    name = SYNTHETIC
  else:
    shards = read_shards_dir(args.data)
    dc.update(
      base_dir=shards["base_dir"],
      tables=shards["tables"],
      examples_per_subset=shards["examples_per_subset"],
      num_classes=len(shards["class_names"]),
      multi_label=shards["multi_label"],
    )
    # labels.txt's names when the config was built, kept in config.json with the run (the
    # reader and the export read labels.txt itself).
    dc.class_names = tuple(shards["class_names"])
    if shards["class_splits"]:
      dc.class_splits = tuple(shards["class_splits"])
      dc.split_names = tuple(f"split_{i}" for i in range(len(shards["class_splits"])))
    name = os.path.basename(os.path.normpath(shards["base_dir"]))
    direction = direction_classes(shards["class_names"])
  config.experiment_name = f"finetune_{args.model}_{name}"
  # Flips: off when a class name says a direction a mirror image swaps, unless flip=1.
  dc.random_flip = bool(dc.random_flip) if flip is None else flip
  if flip is None and direction:
    dc.random_flip = False

  lines, followed = [], {}
  if args.init:
    config.init_from.checkpoint_path = os.path.abspath(args.init)
    follow_checkpoint(config, args.init)
    line, followed = follow_model(config, args.init)
    lines.append(line)
  else:
    if config.model_name == "timesformer":
      config.model.temporal_init = "random"  # From scratch (vidtx.models.timesformer).
    if args.data != SYNTHETIC and not args.shrink:
      print(
        "configs/finetune.py: init= is empty, so the model starts from random weights; that is "
        "not recommended: on a small dataset it stays far below a pretrained start. Convert "
        "an ImageNet ViT or a Kinetics model (python -m vidtx.convert --src ... --out DIR) "
        "and pass init=DIR.",
        file=sys.stderr,
      )

  schedule(config, batch_size=batch_size, epochs=epochs)
  if args.shrink and (args.data != SYNTHETIC or args.init):
    shrink_run(config)  # Your data= and init=, a shorter schedule and evaluation.
  elif args.shrink:
    config = common.shrink(config)  # No data= nor init=: the recipe's smoke test.
  record_defaults(config, f"init={args.init}" if args.init else "", followed)
  lines.insert(0, summary(config, args, direction))
  for line in lines:
    print(line, file=sys.stderr)
  return config


def _flip(text: str) -> bool | None:
  """flip= '' (automatic), 0 or 1."""
  if text == "":
    return None
  if text.lower() not in ("0", "1", "false", "true"):
    raise UserError(f"Config argument flip={text!r}: expected 0 or 1 (or no flip= to decide).")
  return text.lower() in ("1", "true")


def direction_classes(names: list[str]) -> list[str]:
  """The class names that say a direction a horizontal flip swaps (left / right, clockwise ...)."""
  from vidtx.data import class_labels  # Imports TensorFlow: only for a shards directory.

  return class_labels.direction_classes(names)


def summary(config: ml_collections.ConfigDict, args: ml_collections.ConfigDict, direction) -> str:
  """The recipe in one line: the data (or the synthetic default), the start, flips, the run."""
  dc = config.dataset_configs
  if args.data == SYNTHETIC:
    data = (
      "no data= given: the built-in synthetic appearance task (a smoke test of the recipe, not a "
      "fine-tune; data=SHARDS trains on your videos)"
    )
  else:
    examples = dc.examples_per_subset
    data = (
      f"data={args.data} ({dc.num_classes} classes; {examples['train']} train, "
      f"{examples['validation']} validation videos)"
    )
  start = f"init={args.init}" if args.init else "random initialisation (no init=)"
  if dc.random_flip:
    flips = "random flips on" + (" (flip=1)" if args.flip else "")
    if direction:
      flips += f", although classes {_names(direction)} name a direction a mirror image swaps"
  elif direction and not args.flip:
    flips = (
      f"random flips off: classes {_names(direction)} name a direction a mirror image swaps "
      "(flip=1 turns them on)"
    )
  else:
    flips = "random flips off (flip=0)" if args.flip else "random flips off"
  if config.num_training_steps:
    run = f"{config.num_training_steps} steps of {config.batch_size} clips"
  else:
    run = f"{config.num_training_epochs:g} epochs of batches of {config.batch_size} clips"
  if args.shrink:
    given = [f"{k}=" for k in ("data", "init") if args[k] and args[k] != SYNTHETIC]
    kept = "your " + " and ".join(given) if given else "a tiny model"
    run += f" (shrink=1: a smoke test on {kept}, one view per validation video)"
  return f"configs/finetune.py: {config.model_name}, {data}, from {start}; {flips}; {run}."


def _names(names: list[str], limit: int = 3) -> str:
  shown = ", ".join(repr(n) for n in names[:limit])
  return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def shrink_run(config: ml_collections.ConfigDict) -> None:
  """shrink=1 with data= or init=: the same model, data, start and clips, for a few seconds'
  worth of steps and evaluation (common.SHRUNK_RUN's steps and batch, one view per video)."""
  config.experiment_name = f"{config.experiment_name}_shrunk"
  common.shrink_schedule(config, min(common.SHRUNK_RUN["batch_size"], int(config.batch_size)))
  config.dataset_configs.update(num_test_clips=1, do_three_spatial_crops=False)


def _number(name: str, text: str, kind: type) -> float | int:
  try:
    value = kind(text)
  except ValueError:
    value = None
  if value is None or not value > 0 or (kind is float and not math.isfinite(value)):
    expected = "a positive integer" if kind is int else "a positive number"
    raise UserError(f"Config argument {name}={text!r}: expected {expected}.")
  return value


# ---------------------------------------------------------------------------------------------
# The models: each paper's recipe, made a fine-tune.
# ---------------------------------------------------------------------------------------------


def model_recipe(model: str) -> ml_collections.ConfigDict:
  """The paper's recipe of `model` with this file's sampling and regularisation (module doc);
  config.batch_scaling keeps the paper's batch and learning rate."""
  if model == "timesformer":
    # Diving-48's recipe: TimeSformer-B, divided attention, 8 frames one per segment, 1 x 3 views.
    config = timesformer.timesformer_recipe("diving48", variant="base", attention="divided")
  elif model == "vivit_fe":
    config = vivit.vivit_recipe("k400", variant="B/16x2", attention="factorised_encoder")
    small = vivit.VIVIT_RECIPES[VIVIT_SMALL_DATASET]
    config.dataset_configs.augmentation_params = vivit.vivit_augmentation(
      color=small["colour_jitter"], rand_augment=small["rand_augment"]
    )
    config.model.stochastic_depth = small["stochastic_depth"]
    config.label_smoothing = small["label_smoothing"]
    config.mixup.alpha = small["mixup_alpha"]
  else:
    config = xvit.xvit_recipe("k400", attention="space_time_mixing", num_frames=8)
    dc = config.dataset_configs
    dc.update(train_sampling="segment", eval_sampling="segment")
    for field in ("sampling_rate", "target_fps", "frame_rate"):  # The window's, unused now.
      del dc[field]
  return config


def schedule(config: ml_collections.ConfigDict, *, batch_size: int, epochs: float) -> None:
  """Batch, learning rate (scaled from the paper's batch by its rule: common.set_batch_size),
  epochs, warm-up, decay boundaries and the per-epoch evaluation, from the train split's size."""
  train_examples = int(config.dataset_configs.examples_per_subset["train"])
  steps_per_epoch = common.epochs_to_steps(1, train_examples, batch_size)
  common.set_batch_size(config, batch_size)
  config.lr_configs.warmup_steps = common.epochs_to_steps(
    min(WARMUP_EPOCHS, epochs), train_examples, batch_size
  )
  config.lr_configs.warmup_epochs = None  # The paper's; this file's warm-up is in steps above.
  if config.lr_configs.schedule == "steps":  # TimeSformer: at 11/15 and 14/15 of the run.
    config.lr_configs.decay_epochs = decay_epochs(epochs, train_examples / batch_size)
  config.num_training_epochs = float(epochs)
  config.eval_every_steps = steps_per_epoch
  config.checkpoint_every_steps = steps_per_epoch
  config.log_every_steps = min(50, steps_per_epoch)
  config.max_checkpoints_to_keep = 2  # And the best one (best_checkpoint_metric).


def decay_epochs(epochs: float, steps_per_epoch: float) -> tuple[float, ...]:
  """TimeSformer's decays at 11/15 and 14/15 of a run of `epochs`, as epochs.

  vidtx.optim puts a decay at step round(epoch * steps_per_epoch). A short run (epochs=1, or a
  batch near or above the train split's size: steps_per_epoch < 1, each batch spanning more than
  one pass) can round both to one step, or the first to step 0; the boundaries then move to the
  nearest distinct steps from 1 on (past the run's end when it is that short: no decay), so the
  schedule always builds.
  """
  paper = timesformer.TIMESFORMER_TRAINING
  wanted = [e * epochs / paper["epochs"] for e in paper["decay_epochs"]]
  steps, previous = [], 0
  for epoch in wanted:
    previous = max(round(epoch * steps_per_epoch), previous + 1)
    steps.append(previous)
  if steps == [round(e * steps_per_epoch) for e in wanted]:
    return tuple(wanted)
  return tuple(step / steps_per_epoch for step in steps)


# ---------------------------------------------------------------------------------------------
# data=DIR: what vidtx-make-shards wrote.
# ---------------------------------------------------------------------------------------------


def read_shards_dir(data: str) -> dict:
  """base_dir, class_names, tables, examples_per_subset, class_splits and multi_label of the
  shards directory `data`; ValueError naming the file (and what it should hold) otherwise."""
  import tensorflow as tf  # Only for a data directory: building the config stays light.

  base_dir = data if "://" in data else os.path.abspath(data)
  if not tf.io.gfile.isdir(base_dir):
    raise UserError(
      f"Config argument data={data}: no such directory; expected the output directory of "
      f"vidtx-make-shards. Make it from your videos with "
      f"{_MAKE_SHARDS.format(videos='VIDEOS', dir=data)}."
    )
  summaries = {}
  tables, examples = {}, {}
  for split in SPLITS:
    summaries[split], tables[split], examples[split] = _read_split(data, base_dir, split)
  class_names = _read_labels(data, base_dir)
  for split, summary in summaries.items():
    count = summary.get("num_classes")
    if count is not None and int(count) != len(class_names):
      raise UserError(
        f"data={data}: {split}_summary.json says {count} classes, labels.txt names "
        f"{len(class_names)}; expected the labels.txt the shards were written with."
      )
    if summary.get("unlabelled"):
      raise UserError(
        f"data={data}: {split}_summary.json marks unlabelled videos (label -1); a fine-tune "
        "needs a class for every video."
      )
  if len(class_names) < 2:
    raise UserError(
      f"data={data}: labels.txt names {len(class_names)} class(es); expected at least 2."
    )
  train = summaries["train"]
  return dict(
    base_dir=base_dir,
    class_names=class_names,
    tables=tables,
    examples_per_subset=examples,
    class_splits=list(train.get("class_splits") or ()),
    multi_label=any(bool(s.get("merged")) for s in summaries.values()),
  )


def _read_split(data: str, base_dir: str, split: str) -> tuple[dict, str, int]:
  """(summary, table, examples) of `split`: its {split}_summary.json, else its shards counted."""
  import tensorflow as tf

  from vidtx.data import dmvr

  summary_path = os.path.join(base_dir, f"{split}_summary.json")
  if tf.io.gfile.exists(summary_path):
    with tf.io.gfile.GFile(summary_path) as f:
      try:
        summary = json.load(f)
      except json.JSONDecodeError as e:
        raise UserError(f"data={data}: {split}_summary.json is not valid JSON ({e}).") from e
    if not isinstance(summary, dict) or not {"table", "examples"} <= set(summary):
      raise UserError(
        f"data={data}: {split}_summary.json lacks 'table' and 'examples'; expected the "
        "summary vidtx-make-shards writes."
      )
    table, count = str(summary["table"]), int(summary["examples"])
    _expand_table(data, base_dir, table)
  else:
    summary = {}
    shards = sorted(tf.io.gfile.glob(os.path.join(base_dir, f"{split}.tfrecord-*-of-*")))
    if not shards:
      raise UserError(_missing_split(data, base_dir, split))
    totals = {name.rsplit("-of-", 1)[1] for name in shards}
    if len(totals) != 1 or not all(t.isdigit() for t in totals):
      raise UserError(
        f"data={data}: the {split}.tfrecord-*-of-* shards disagree on their count "
        f"({sorted(totals)}); expected one table {split}.tfrecord-0000i-of-0000N."
      )
    table = f"{split}.tfrecord@{int(totals.pop())}"
    files = _expand_table(data, base_dir, table)
    count = 0
    for path in files:
      found = dmvr.check_tfrecord(path)
      if not found.ok:
        raise UserError(f"data={data}: {path}: {found.problem}.")
      count += found.records
  if count < 1:
    raise UserError(
      f"data={data}: the {split} split holds no video ({table}); {split}_report.txt says why "
      "each video was left out."
    )
  return summary, table, count


def _expand_table(data: str, base_dir: str, table: str) -> list[str]:
  """The shards of `table`; ValueError naming a missing one."""
  from vidtx.data import dmvr

  try:
    return dmvr.expand_table(base_dir, table)
  except ValueError as e:
    raise UserError(f"data={data}: {e}") from e


def _missing_split(data: str, base_dir: str, split: str) -> str:
  """The error of a directory without `split`'s shards: not shards at all, or one split only."""
  import tensorflow as tf

  from vidtx.data import sources

  if split == "validation" and tf.io.gfile.glob(os.path.join(base_dir, "train.tfrecord-*")):
    return (
      f"data={data}: no validation split (validation_summary.json or validation.tfrecord-*-of-*);"
      " expected one to evaluate on: make both splits in one run with "
      f"{_MAKE_SHARDS.format(videos='VIDEOS', dir='NEW_DIR')}, or convert a validation list with "
      f"--split=validation --output_dir={data}."
    )
  videos = [
    name
    for name in tf.io.gfile.glob(os.path.join(base_dir, "*", "*"))
    if name.lower().endswith(sources.VIDEO_EXTENSIONS)
  ]
  source = data if videos else "VIDEOS"
  looks_like = " It looks like a folder of videos (<class>/<video>)." if videos else ""
  return (
    f"data={data} is not a shards directory: it has no {split}_summary.json and no "
    f"{split}.tfrecord-*-of-* shards.{looks_like} Make the shards with "
    f"{_MAKE_SHARDS.format(videos=source, dir='SHARDS')}, then pass data=SHARDS."
  )


def _read_labels(data: str, base_dir: str) -> list[str]:
  import tensorflow as tf

  path = os.path.join(base_dir, "labels.txt")
  if not tf.io.gfile.exists(path):
    raise UserError(
      f"data={data}: no labels.txt; expected the class names, one per line (line i = class i), "
      "as vidtx-make-shards writes them next to the shards."
    )
  with tf.io.gfile.GFile(path) as f:
    # Blank lines are skipped, as vidtx.data.read_label_names does.
    return [line.strip() for line in f.read().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# init=DIR: a converted checkpoint or a train.py run.
# ---------------------------------------------------------------------------------------------


def follow_checkpoint(config: ml_collections.ConfigDict, init: str) -> None:
  """Checks that `init` can start config's model and takes its input normalisation and
  numerics (GELU form, LayerNorm epsilon); ValueError saying what `init` should be otherwise."""
  from vidtx import run_files
  from vidtx.checkpoints import store
  from vidtx.data import reader_config

  if not os.path.exists(init):
    raise UserError(
      f"Config argument init={init}: no such file or directory; expected a converted checkpoint "
      "(python -m vidtx.convert --src CHECKPOINT --out DIR) or a train.py workdir."
    )
  if store.is_converted_dir(init):
    path = os.path.join(init, store.MODEL_FILE)
    described = store.read_description(init)
    model_name = described.get("model_name")
    model = described.get("model") or {}
    image_vit = model_name == "timesformer" and model.get("attention") == "space"
    preprocessing = described.get("preprocessing") or {}
    mean, std = preprocessing.get("mean"), preprocessing.get("std")
  elif run_files.is_run_dir(init):
    path = os.path.join(init, run_files.CONFIG_FILE)
    run_config = run_files.read_config(init)
    model_name, model = run_config.model_name, run_config.model.to_dict()
    image_vit = False
    mean, std = reader_config.normalisation(run_config.dataset_configs)
  else:
    raise UserError(
      f"Config argument init={init}: not a converted checkpoint (no {store.MODEL_FILE}) nor a "
      "train.py workdir (config.json and checkpoints/); convert it first: python -m "
      f"vidtx.convert --src {init} --out DIR, then init=DIR."
    )
  if not image_vit and model_name != config.model_name:
    raise UserError(
      f"init={init}: a {model_name} checkpoint ({path}) cannot start a {config.model_name}; "
      f"pass an image ViT or a {config.model_name} checkpoint, or model= of its family."
    )
  for field in ("gelu_approximate", "layer_norm_epsilon"):
    if model.get(field) is not None:
      config.model[field] = model[field]
  if mean is not None and std is not None:
    config.dataset_configs.mean = tuple(float(x) for x in mean)
    config.dataset_configs.std = tuple(float(x) for x in std)


def follow_model(config: ml_collections.ConfigDict, init: str) -> tuple[str, dict]:
  """Builds config's model to `init`'s sizes (width, depth, heads, MLP, patch; a video
  checkpoint's tubelet and frames too) and its clips to init's image size (short sides scaled
  as the recipe's); returns the line that says so and the model fields set. Read from init's
  description only (vidtx.checkpoints.vit.read_shape), no parameter."""
  from vidtx.checkpoints import vit
  from vidtx.models import hparams

  shape = vit.read_shape(init)
  model, dc = config.model, config.dataset_configs
  followed = {field: getattr(shape, field) for field in vit.SIZE_FIELDS}
  if shape.is_image_vit:  # The model's own tubelet (ViViT's kernel is inflated from 2D).
    tubelet = hparams.parse_variant(model.variant)["tubelet_size"]
  else:  # A video model of the family: its attention scheme and classifier too.
    tubelet = shape.tubelet_size
    followed.update(attention=shape.attention, classifier=shape.classifier)
    if shape.spatial_layers is not None and config.model_name == "vivit":
      followed.update(spatial_layers=shape.spatial_layers, temporal_layers=shape.temporal_layers)
  sizes = {field: getattr(shape, field) for field in vit.SIZE_FIELDS}
  letter = next((k for k, v in hparams.VIT_SIZES.items() if v == sizes), "B")
  followed["variant"] = f"{letter}/{shape.patch_size}" + (f"x{tubelet}" if tubelet > 1 else "")
  model.update(followed)

  # Clips: init's image size, the short sides scaled with it (the recipe's 256 / 224 ratio, and
  # evaluation at the crop), and a video checkpoint's frame count.
  if shape.crop_size and shape.crop_size != dc.crop_size:
    crop, scale = shape.crop_size, shape.crop_size / dc.crop_size
    dc.min_resize = max(crop, round(dc.min_resize * scale))
    if dc.get("eval_min_resize") is not None:
      dc.eval_min_resize = max(crop, round(dc.eval_min_resize * scale))
    dc.crop_size = crop
  if not shape.is_image_vit and shape.num_frames:
    dc.num_frames = shape.num_frames
  built = vit.shape_of(
    config.model_name, model.to_dict(), crop_size=dc.crop_size, num_frames=dc.num_frames
  )
  kind = " (an image ViT: the recipe's frames)" if shape.is_image_vit else ""
  line = (
    f"configs/finetune.py: model follows init={init}{kind}: {built.describe()} "
    f"(--config.model.* and --config.dataset_configs.* still override it)."
  )
  return line, followed


def record_defaults(config: ml_collections.ConfigDict, source: str, model: dict) -> None:
  """config.recipe_defaults: the model fields followed from init= and the clip geometry as
  this file set them, so that train.py tells the command line's --config.* overrides from them
  (vidtx.config_checks.apply_recipe_defaults): an override wins, with a note; an overridden crop or
  short side takes the evaluation's short side along unless it is given too."""
  dc = config.dataset_configs
  config.recipe_defaults = ml_collections.ConfigDict(
    dict(
      source=source,
      model=dict(model),
      dataset_configs={k: dc[k] for k in _GEOMETRY_FIELDS if dc.get(k) is not None},
    )
  )
