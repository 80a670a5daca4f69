"""Pieces shared by the recipe configs: each recipe file composes these, nothing is copy-pasted."""

import ml_collections
from ml_collections import config_dict

from vidtx import models
from vidtx.models import vivit


def parse_arg(arg: str | None, **defaults: str) -> ml_collections.ConfigDict:
  """Parses the `path.py:key=value,key2=value2` argument of a config file against its defaults."""
  parsed = ml_collections.ConfigDict(dict(defaults))
  for item in (arg or "").split(","):
    if not item.strip():
      continue
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or key not in defaults:
      raise ValueError(f"Config argument {item!r}: expected key=value with key in "
                       f"{sorted(defaults)}.")
    parsed[key] = value.strip()
  return parsed


def check_attention(attention: str, choices: tuple[str, ...]) -> None:
  """The `attention=` argument of a config file must be one its model accepts."""
  if attention not in choices:
    raise ValueError(f"Config argument attention={attention!r}: expected one of "
                     f"{list(choices)}.")


def cpu_model(model_name: str, variant: str) -> ml_collections.ConfigDict:
  """The model config of `model_name` at the size every synthetic recipe trains on a CPU:
  D = 96, 4 heads, MLP 384, 4 layers (8x8 patches: 16 tokens per 32x32 frame)."""
  config = models.default_config(model_name)
  config.update(variant=variant, hidden_size=96, num_heads=4, mlp_dim=384, num_layers=4)
  return config


def training(config: ml_collections.ConfigDict, *, batch_size: int, steps: int | None,
             base_learning_rate: float, warmup_steps: int) -> None:
  """Optimizer, schedule, logging, checkpointing and evaluation fields, set on `config`."""
  config.rng_seed = 0
  config.batch_size = batch_size
  config.eval_batch_size = batch_size
  # Durations: *_steps wins over *_epochs when both are set (vidtx.optim.resolve_steps).
  config.num_training_steps = config_dict.placeholder(int)
  config.num_training_epochs = config_dict.placeholder(float)
  if steps is not None:
    config.num_training_steps = steps

  config.optimizer = "momentum"
  config.optimizer_configs = ml_collections.ConfigDict(
      dict(momentum=0.9, nesterov=False, weight_decay=0.0))
  config.max_grad_norm = 1.0
  config.label_smoothing = 0.1
  config.lr_configs = ml_collections.ConfigDict(dict(
      schedule="cosine", base_learning_rate=base_learning_rate, warmup_steps=warmup_steps,
      end_learning_rate=0.0))

  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.max_checkpoints_to_keep = 3
  # Start from a pretrained checkpoint (vidtx.checkpoints.init_from): a converted directory
  # (python -m vidtx.convert) or any format vidtx reads; '' trains from scratch.
  config.init_from = ml_collections.ConfigDict(dict(
      checkpoint_path="", checkpoint_format="auto",
      positional_embed_size_change="resize_tile",  # 'tile' | 'resize' | 'resize_tile'
      kernel_init_method="central_frame",  # ViViT tubelets from a 2D kernel: Eq. 9 or 'inflate'
      skip_patterns=()))  # regexes of parameter names to keep freshly initialised
  config.eval_every_steps = 0  # 0: evaluate only at the end.
  # How the views of a video are combined: mean_logits (ViViT), sum_logits (TimeSformer, X-ViT),
  # mean_softmax (MMAction2).
  config.eval_aggregation = "mean_logits"


def synthetic_dataset(task: str = "motion") -> ml_collections.ConfigDict:
  """The embedded synthetic video dataset (vidtx.data.synthetic), scenic field names."""
  num_classes = {"motion": 4, "rotation": 2, "order": 2, "appearance": 4}
  if task not in num_classes:
    raise ValueError(f"Synthetic task {task!r}: expected one of {sorted(num_classes)}.")
  return ml_collections.ConfigDict(dict(
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
  ))


# Kinetics-400 split sizes of scenic's ViViT configs (scenic/projects/vivit/configs/kinetics400/
# vivit_base_k400.py): Kinetics shrinks as YouTube videos disappear, so set these to your copy's
# counts (the ViViT paper, §4.1, had ~267,000 videos in all). They only size epochs and eval loops.
KINETICS_400_EXAMPLES = {"train": 214834, "validation": 17637}


def kinetics_dataset(num_frames: int, stride: int) -> ml_collections.ConfigDict:
  """Kinetics-400 in DMVR TFRecords (scenic field names); set config.dataset_name = 'dmvr'.

  base_dir is empty: point it at your shards (--config.dataset_configs.base_dir=/data/k400).
  `tables` name the shards as `file@count`; override them to match yours, e.g.
  --config.dataset_configs.tables.validation=validation.tfrecord@1024 (scenic's K400 uses @1024
  for every split). Evaluation follows ViViT: 4 temporal clips x 3 spatial crops of 224 from
  frames whose short side is resized to 256, logits averaged. Training augmentation is ViViT's
  for Kinetics (vivit.txt Table 7): random crop after scale jitter 0.9-1.33 (probability 1),
  flip 0.5, colour jitter with probability 0.8.
  """
  if num_frames < 1 or stride < 1:
    raise ValueError(f"kinetics_dataset: num_frames={num_frames} and stride={stride} must be >= 1.")
  return ml_collections.ConfigDict(dict(
      base_dir="",
      tables={"train": "train.tfrecord@1024", "validation": "validation.tfrecord@64"},
      examples_per_subset=dict(KINETICS_400_EXAMPLES),
      num_classes=400,
      num_frames=num_frames,
      stride=stride,
      min_resize=256,
      crop_size=224,
      zero_centering=True,
      random_flip=True,
      augmentation_params=vivit_augmentation(color=True),
      num_test_clips=4,
      do_three_spatial_crops=True,
      label_offset=0,
  ))


def vivit_augmentation(*, color: bool, rand_augment: tuple[int, float] | None = None
                       ) -> ml_collections.ConfigDict:
  """dataset_configs.augmentation_params of vivit.txt Table 7: scale jitter 0.9-1.33 always;
  colour jitter (p 0.8) for K400/K600/MiT; RandAugment (layers, magnitude) for EK and SSv2."""
  params = ml_collections.ConfigDict(dict(
      do_jitter_scale=True, scale_min_factor=0.9, scale_max_factor=1.33, prob_scale_jitter=1.0,
      do_color_augment=color, prob_color_augment=0.8, prob_color_drop=0.0,
      do_rand_augment=rand_augment is not None, rand_augment_num_layers=2,
      rand_augment_magnitude=15.0))
  if rand_augment is not None:
    params.rand_augment_num_layers, params.rand_augment_magnitude = rand_augment
  return params


def vivit_kinetics400(attention: str) -> ml_collections.ConfigDict:
  """ViViT-B/16x2 on Kinetics-400 as in vivit.txt Table 2 / Table 7 (configs/k400_vivit_*.py).

  32 frames at stride 2, 224 crops, 400 classes, central-frame tubelet initialisation (Sec. 4.2);
  gradients clipped to norm 1 (scenic's K400 config); Models 3 and 4 classify the average token.

  Recipe (vivit.txt Table 7, K400 column): synchronous SGD with
  momentum 0.9, batch 64, base learning rate 0.1, 2.5 epochs of linear warm-up then cosine decay,
  30 epochs; no stochastic depth, label smoothing or mixup for Kinetics. Differences from the
  paper, and why:
  - Initialisation: the paper starts from an ImageNet-21K ViT-B/16 (Sec. 3.4: positional
    embedding repeated over time, central-frame tubelets, Model 3's temporal attention at zero),
    which init_from does with these rules: convert the ViT once
    (python -m vidtx.convert --src ViT-B_16.npz --out ckpt/vit_b16_in21k) and pass
    --config.init_from.checkpoint_path=ckpt/vit_b16_in21k (or the .npz itself). Left empty,
    the config trains from random initialisation and will not reach the paper's accuracy.
  - Dataset size: epochs and the warm-up are counted with scenic's Kinetics-400 sizes
    (configs.common.KINETICS_400_EXAMPLES); set --config.dataset_configs.examples_per_subset.train
    (and --config.lr_configs.warmup_steps, 2.5 epochs) to your copy's.

  Hardware: the paper trains on TPU-v3 (Sec. 4.1; the number of chips is not given). Batch 64 of
  32 x 224 x 224 clips needs several accelerators (e.g. 8 GPUs of 40-80 GB, 8 clips each): the
  batch is sharded over every local device. With fewer devices, lower --config.batch_size and
  scale --config.lr_configs.base_learning_rate with it.
  """
  if attention not in vivit.ATTENTIONS:
    raise ValueError(f"vivit_kinetics400: attention={attention!r}; expected one of "
                     f"{list(vivit.ATTENTIONS)}.")
  config = ml_collections.ConfigDict()
  config.dataset_name = "dmvr"
  config.dataset_configs = kinetics_dataset(num_frames=32, stride=2)

  config.model_name = "vivit"
  config.model = models.default_config("vivit")
  config.model.variant = "B/16x2"
  config.model.attention = attention
  config.model.classifier = "gap" if attention in vivit.GAP_ONLY else "token"
  config.model.kernel_init_method = "central_frame"

  batch_size, epochs = 64, 30.0
  train_examples = config.dataset_configs.examples_per_subset["train"]
  training(config, batch_size=batch_size, steps=None, base_learning_rate=0.1,
           warmup_steps=int(2.5 * train_examples / batch_size))
  config.num_training_epochs = epochs
  config.label_smoothing = 0.0
  config.eval_aggregation = "mean_logits"  # ViViT averages the logits of the 4 x 3 views.
  return config
