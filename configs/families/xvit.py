"""X-ViT (Bulat et al., NeurIPS 2021, arXiv:2106.05968): its recipe per dataset as data
(XVIT_RECIPES, one row per released config) and `xvit_recipe`, which builds a config from a row.
The recipe files configs/*_xvit.py add their commands and the release's results.

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
- Dataset size: epochs and the warm-up are counted with the split sizes of configs.common's
  DATASETS.
"""

import ml_collections

from vidtx import models
from vidtx.configs import common
from vidtx.errors import UserError
from vidtx.models.xvit import ATTENTIONS

# One row per dataset: the released X-ViT (arXiv:2106.05968) config for it
# (github.com/1adrianb/video-transformers, configs/). label_smoothing: their
# smooth_cross_entropy (plain cross_entropy for SSv2); mixing_fraction: 2 / SHIFT_DIV of the
# key/value channels; sampling: 'timesformer' (PySlowFast's window at a frame rate) or
# 'segment' (one frame per segment); num_test_clips: temporal views, each with 3 spatial crops.
XVIT_RECIPES: dict[str, dict] = {
  # The release's Kinetics-400 config.
  "k400": dict(
    batch_size=64,
    base_learning_rate=0.03,
    epochs=30,
    warmup_epochs=5,
    weight_decay=1e-5,
    label_smoothing=0.3,
    mixup_alpha=0.4,
    mixing_fraction=0.25,
    sampling="timesformer",
    random_flip=True,
    num_test_clips=1,
  ),
  # The release's Kinetics-600 config.
  "k600": dict(
    batch_size=64,
    base_learning_rate=0.03,
    epochs=30,
    warmup_epochs=5,
    weight_decay=1e-5,
    label_smoothing=0.3,
    mixup_alpha=0.4,
    mixing_fraction=0.25,
    sampling="timesformer",
    random_flip=True,
    num_test_clips=1,
  ),
  # The release's SSv2 config.
  "ssv2": dict(
    batch_size=64,
    base_learning_rate=0.03,
    epochs=35,
    warmup_epochs=5,
    weight_decay=1e-4,
    label_smoothing=0.0,
    mixup_alpha=0.0,
    mixing_fraction=0.5,
    sampling="segment",
    random_flip=False,
    num_test_clips=2,
  ),
}
XVIT_FRAMES = ("8", "16")  # The recipe files' frames= choices.
XVIT_SPAN = 256  # Kinetics: the released 16 frames x rate 16 span 256 frames at 30 fps.


def xvit_recipe(dataset: str, *, attention: str, num_frames: int) -> ml_collections.ConfigDict:
  """X-ViT-B/16 (or the TSM-ViT baseline) on `dataset` with clips of `num_frames` frames:
  XVIT_RECIPES[dataset] as a config, as the released configs train it (the module docstring
  gives the recipe, the hardware it needs and what differs from the release)."""
  if dataset not in XVIT_RECIPES:
    raise UserError(f"xvit_recipe: dataset={dataset!r}; expected one of {sorted(XVIT_RECIPES)}.")
  common.check_attention(attention, ATTENTIONS)
  common.check_choice("frames", str(num_frames), XVIT_FRAMES)
  row = XVIT_RECIPES[dataset]
  config = ml_collections.ConfigDict()
  config.experiment_name = f"{dataset}_xvit_{attention}_{num_frames}f"

  config.dataset_name = "dmvr"
  rate = XVIT_SPAN // num_frames
  dc = common.dmvr_dataset(dataset)
  dc.update(
    num_frames=num_frames,
    stride=rate,
    min_resize=256,
    crop_size=224,
    eval_min_resize=224,
    random_flip=row["random_flip"],
    num_test_clips=row["num_test_clips"],
    do_three_spatial_crops=True,
    train_sampling=row["sampling"],
    eval_sampling=row["sampling"],
  )
  dc.augmentation_params = common.short_side_jitter(256, 320)
  if row["sampling"] == "timesformer":
    dc.update(sampling_rate=rate, target_fps=30.0, frame_rate=30.0)
  config.dataset_configs = dc

  config.model_name = "xvit"
  config.model = models.default_config("xvit")  # B/16, mixing over +-1, temporal head.
  config.model.attention = attention
  config.model.mixing_fraction = row["mixing_fraction"]
  config.model.head_dropout_rate = 0.5

  common.training(
    config,
    batch_size=row["batch_size"],
    base_learning_rate=row["base_learning_rate"],
    epochs=row["epochs"],
    warmup_epochs=row["warmup_epochs"],
    schedule="cosine",
    nesterov=True,
    weight_decay=row["weight_decay"],
    max_grad_norm=0.0,  # The release does not clip (CLIP_GRADIENT -1).
    label_smoothing=row["label_smoothing"],
    mixup_alpha=row["mixup_alpha"],
    eval_aggregation="sum_logits",  # DATA.ENSEMBLE_METHOD 'sum'.
    paper="the X-ViT (arXiv:2106.05968) release",
  )
  return config
