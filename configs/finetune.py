r"""Fine-tune TimeSformer, ViViT or X-ViT on your own videos, on one GPU.

  python -m vidtx.data.make_shards --source=folders --input=my_videos --output_dir=shards/mine
  python -m vidtx.convert --src ViT-B_16.npz --out ckpt/vit_b16
  python train.py --config=configs/finetune.py:data=shards/mine,init=ckpt/vit_b16 \
      --workdir=runs/mine
  vidtx-train --config=finetune:model=vivit_fe,data=shards/mine,init=ckpt/vit_b16,epochs=10 \
      --workdir=runs/mine_vivit
  python train.py --config=configs/finetune.py:model=xvit,shrink=1 --workdir=/tmp/finetune_smoke
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
- epochs=15; batch=8 (clips per step; the learning rate, warm-up and evaluations follow it, so
  set it here rather than with --config.batch_size); shrink=1 (a seconds-long CPU smoke test of
  the recipe: configs.common.shrink).

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
Each as its paper fine-tunes an ImageNet ViT (configs.common.timesformer_recipe, vivit_recipe,
xvit_recipe): TimeSformer supplementary §1 (SGD, weight decay 1e-4, decays at epochs 11 and 14
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
- Flips stay on as in every paper's Kinetics recipe: for classes a mirror changes ("turn left"),
  --config.dataset_configs.random_flip=False.

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
_MAKE_SHARDS = (
  "python -m vidtx.data.make_shards --source=folders --input={videos} --output_dir={dir} "
  "({videos}/<class>/<video>; --val_fraction sets the validation share)"
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(
    arg, model="timesformer", data=SYNTHETIC, init="", epochs=str(EPOCHS), batch=str(BATCH_SIZE)
  )
  common.check_choice("model", args.model, MODELS)
  if not args.data:
    raise ValueError(
      "Config argument data='': expected a shards directory (data=DIR), or no data= for the "
      "synthetic dataset."
    )
  epochs = _number("epochs", args.epochs, float)
  batch_size = _number("batch", args.batch, int)

  config, paper_batch_size = model_recipe(args.model)
  dc = config.dataset_configs
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
  config.experiment_name = f"finetune_{args.model}_{name}"

  if args.init:
    config.init_from.checkpoint_path = os.path.abspath(args.init)
    follow_checkpoint(config, args.init)
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

  schedule(config, paper_batch_size, batch_size=batch_size, epochs=epochs)
  return common.finish(config, args)


def _number(name: str, text: str, kind: type) -> float | int:
  try:
    value = kind(text)
  except ValueError:
    value = None
  if value is None or not value > 0 or (kind is float and not math.isfinite(value)):
    expected = "a positive integer" if kind is int else "a positive number"
    raise ValueError(f"Config argument {name}={text!r}: expected {expected}.")
  return value


# ---------------------------------------------------------------------------------------------
# The models: each paper's recipe, made a fine-tune.
# ---------------------------------------------------------------------------------------------


def model_recipe(model: str) -> tuple[ml_collections.ConfigDict, int]:
  """The paper's recipe of `model` with this file's sampling and regularisation (module doc),
  and the batch size its learning rate is for."""
  if model == "timesformer":
    # Diving-48's recipe: TimeSformer-B, divided attention, 8 frames one per segment, 1 x 3 views.
    config = common.timesformer_recipe("diving48", variant="base", attention="divided")
  elif model == "vivit_fe":
    config = common.vivit_recipe("k400", variant="B/16x2", attention="factorised_encoder")
    small = common.VIVIT_RECIPES[VIVIT_SMALL_DATASET]
    config.dataset_configs.augmentation_params = common.vivit_augmentation(
      color=small.colour_jitter, rand_augment=small.rand_augment
    )
    config.model.stochastic_depth = small.stochastic_depth
    config.label_smoothing = small.label_smoothing
    config.mixup.alpha = small.mixup_alpha
  else:
    config = common.xvit_recipe("k400", attention="space_time_mixing", num_frames=8)
    dc = config.dataset_configs
    dc.update(train_sampling="segment", eval_sampling="segment")
    for field in ("sampling_rate", "target_fps", "frame_rate"):  # The window's, unused now.
      del dc[field]
  return config, int(config.batch_size)


def schedule(
  config: ml_collections.ConfigDict, paper_batch_size: int, *, batch_size: int, epochs: float
) -> None:
  """Batch, learning rate (scaled linearly from the paper's batch), epochs, warm-up, decay
  boundaries and the per-epoch evaluation, from the train split's size."""
  train_examples = int(config.dataset_configs.examples_per_subset["train"])
  steps_per_epoch = common.epochs_to_steps(1, train_examples, batch_size)
  config.batch_size = config.eval_batch_size = batch_size
  config.lr_configs.base_learning_rate *= batch_size / paper_batch_size
  config.lr_configs.warmup_steps = common.epochs_to_steps(
    min(WARMUP_EPOCHS, epochs), train_examples, batch_size
  )
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
  wanted = [e * epochs / common.TIMESFORMER_EPOCHS for e in common.TIMESFORMER_DECAY_EPOCHS]
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
    raise ValueError(
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
      raise ValueError(
        f"data={data}: {split}_summary.json says {count} classes, labels.txt names "
        f"{len(class_names)}; expected the labels.txt the shards were written with."
      )
    if summary.get("unlabelled"):
      raise ValueError(
        f"data={data}: {split}_summary.json marks unlabelled videos (label -1); a fine-tune "
        "needs a class for every video."
      )
  if len(class_names) < 2:
    raise ValueError(
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
        raise ValueError(f"data={data}: {split}_summary.json is not valid JSON ({e}).") from e
    if not isinstance(summary, dict) or not {"table", "examples"} <= set(summary):
      raise ValueError(
        f"data={data}: {split}_summary.json lacks 'table' and 'examples'; expected the "
        "summary vidtx-make-shards writes."
      )
    table, count = str(summary["table"]), int(summary["examples"])
    _expand_table(data, base_dir, table)
  else:
    summary = {}
    shards = sorted(tf.io.gfile.glob(os.path.join(base_dir, f"{split}.tfrecord-*-of-*")))
    if not shards:
      raise ValueError(_missing_split(data, base_dir, split))
    totals = {name.rsplit("-of-", 1)[1] for name in shards}
    if len(totals) != 1 or not all(t.isdigit() for t in totals):
      raise ValueError(
        f"data={data}: the {split}.tfrecord-*-of-* shards disagree on their count "
        f"({sorted(totals)}); expected one table {split}.tfrecord-0000i-of-0000N."
      )
    table = f"{split}.tfrecord@{int(totals.pop())}"
    files = _expand_table(data, base_dir, table)
    count = 0
    for path in files:
      found = dmvr.check_tfrecord(path)
      if not found.ok:
        raise ValueError(f"data={data}: {path}: {found.problem}.")
      count += found.records
  if count < 1:
    raise ValueError(
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
    raise ValueError(f"data={data}: {e}") from e


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
    raise ValueError(
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
  from vidtx.checkpoints import run, store
  from vidtx.data import reader_config

  if not os.path.exists(init):
    raise ValueError(
      f"Config argument init={init}: no such file or directory; expected a converted checkpoint "
      "(python -m vidtx.convert --src CHECKPOINT --out DIR) or a train.py workdir."
    )
  if store.is_converted_dir(init):
    path = os.path.join(init, store.MODEL_FILE)
    with open(path) as f:
      try:
        described = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"init={init}: {store.MODEL_FILE} is not valid JSON ({e}).") from e
    model_name = described.get("model_name")
    model = described.get("model") or {}
    image_vit = model_name == "timesformer" and model.get("attention") == "space"
    preprocessing = described.get("preprocessing") or {}
    mean, std = preprocessing.get("mean"), preprocessing.get("std")
  elif run.is_run_dir(init):
    path = os.path.join(init, run.CONFIG_FILE)
    run_config = run.read_config(init)
    model_name, model = run_config.model_name, run_config.model.to_dict()
    image_vit = False
    mean, std = reader_config.normalisation(run_config.dataset_configs)
  else:
    raise ValueError(
      f"Config argument init={init}: not a converted checkpoint (no {store.MODEL_FILE}) nor a "
      "train.py workdir (config.json and checkpoints/); convert it first: python -m "
      f"vidtx.convert --src {init} --out DIR, then init=DIR."
    )
  if not image_vit and model_name != config.model_name:
    raise ValueError(
      f"init={init}: a {model_name} checkpoint ({path}) cannot start a {config.model_name}; "
      f"pass an image ViT or a {config.model_name} checkpoint, or model= of its family."
    )
  for field in ("gelu_approximate", "layer_norm_epsilon"):
    if model.get(field) is not None:
      config.model[field] = model[field]
  if mean is not None and std is not None:
    config.dataset_configs.mean = tuple(float(x) for x in mean)
    config.dataset_configs.std = tuple(float(x) for x in std)
