"""TimeSformer (Bertasius et al., 2021, arXiv:2102.05095): its recipe as data (the training of
supplementary §1 in TIMESFORMER_TRAINING, the variants' sizes in TIMESFORMER_VARIANTS, the clips
of each dataset in TIMESFORMER_RECIPES) and `timesformer_recipe`, which builds a config from
them. The recipe files configs/*_timesformer.py add their commands and the paper's results.

Recipe (supplementary §1 "Training"; the official configs): ViT-Base, 16 x 16 patches,
stochastic depth 0.1 (the model's defaults, vidtx.models.timesformer); 15 epochs of synchronized
SGD with momentum 0.9, weight decay 1e-4, batch 16, learning rate 0.005 divided by 10 at epochs
11 and 14 (lr_configs.schedule='steps'), no warm-up, no label smoothing, no gradient clipping.
Training frames: short side resized to a random value in [256, 320] ([448, 512] for -HR), a
random 224 (448) crop, flipped with probability 0.5 (not for Something-Something-V2: the
official RANDOM_FLIP False); pixels normalised with mean 0.45, std 0.225. Evaluation: one clip x
3 crops (top-left, centre, bottom-right) of frames whose short side is resized to the crop size;
logits summed as the official code (the supplementary speaks of averaging softmax scores:
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
- Dataset size: epochs and the decay epochs are counted with the split sizes of configs.common's
  DATASETS.
- Diving-48's sampling is not stated in the paper; its videos are a few seconds long, shorter
  than the 8.5 s window, so it is sampled as SSv2, one frame per segment.
"""

import ml_collections

from vidtx import models
from vidtx.configs import common
from vidtx.errors import UserError
from vidtx.models.timesformer import ATTENTIONS

# TimeSformer (arXiv:2102.05095) supplementary §1 "Training": one schedule for every dataset.
TIMESFORMER_TRAINING = dict(
  batch_size=16,
  base_learning_rate=0.005,
  epochs=15,
  warmup_steps=0,
  schedule="steps",
  decay_epochs=(11, 14),
  decay_factor=0.1,
  weight_decay=1e-4,
  max_grad_norm=0.0,  # 0: no clipping.
  label_smoothing=0.0,
)

# The variants' frame sizes (§4.3 / Table 3; the official configs' sizes): the crop, the short
# side's range for training (then a random crop), and for window sampling the rate (frames
# spread over num_frames x sampling_rate frames at 30 fps).
TIMESFORMER_VARIANTS = {
  "base": dict(crop_size=224, short_side=(256, 320), sampling_rate=32),  # 8 x 224 x 224
  "HR": dict(crop_size=448, short_side=(448, 512), sampling_rate=16),  # 16 x 448 x 448
  "L": dict(crop_size=224, short_side=(256, 320), sampling_rate=4),  # 96 x 224 x 224
}

# One row per dataset: how clips are sampled ('timesformer': a window at a frame rate;
# 'segment': one frame per segment), the frames per variant, and flips.
TIMESFORMER_RECIPES: dict[str, dict] = {
  # §4.3 / Table 3: 8, 16, 96 frames.
  "k400": dict(sampling="timesformer", num_frames={"base": 8, "HR": 16, "L": 96}, random_flip=True),
  "k600": dict(sampling="timesformer", num_frames={"base": 8, "HR": 16, "L": 96}, random_flip=True),
  # "Temporally heavy" (§4.5): one frame per segment of 8, 16, 64 frames and no flips, as the
  # official SSv2 configs.
  "ssv2": dict(sampling="segment", num_frames={"base": 8, "HR": 16, "L": 64}, random_flip=False),
  # Table 7; sampled as SSv2 (not stated by the paper: its videos are shorter than the window).
  "diving48": dict(sampling="segment", num_frames={"base": 8, "HR": 16, "L": 96}, random_flip=True),
  # §4.6: the recipe file sets the clip length (frames=8|32|64|96).
  "howto100m": dict(
    sampling="timesformer", num_frames={"base": 8, "HR": 16, "L": 96}, random_flip=True
  ),
}


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
  trains it: TIMESFORMER_RECIPES[dataset] at TIMESFORMER_VARIANTS[variant] with
  TIMESFORMER_TRAINING (the module docstring gives the recipe, the hardware it needs and what
  differs from the paper). `num_frames` replaces the row's frames (HowTo100M's clip lengths)."""
  if dataset not in TIMESFORMER_RECIPES:
    raise UserError(
      f"timesformer_recipe: dataset={dataset!r}; expected one of {list(TIMESFORMER_RECIPES)}."
    )
  common.check_attention(attention, ATTENTIONS)
  variant_name = timesformer_variant(variant)
  size = TIMESFORMER_VARIANTS[variant_name]
  row = TIMESFORMER_RECIPES[dataset]
  if num_frames is None:
    num_frames = row["num_frames"][variant_name]
  config = ml_collections.ConfigDict()
  config.experiment_name = f"{dataset}_timesformer_{variant.lower()}_{attention}"

  config.dataset_name = "dmvr"
  dc = common.dmvr_dataset(dataset)
  dc.normalization = "timesformer"  # Mean 0.45, std 0.225 (official).
  dc.update(
    num_frames=num_frames,
    stride=size["sampling_rate"],
    min_resize=size["short_side"][0],
    crop_size=size["crop_size"],
    eval_min_resize=size["crop_size"],
    random_flip=row["random_flip"],
    num_test_clips=1,
    do_three_spatial_crops=True,
    train_sampling=row["sampling"],
    eval_sampling=row["sampling"],
  )
  dc.augmentation_params = common.short_side_jitter(*size["short_side"])
  if row["sampling"] == "timesformer":
    dc.update(sampling_rate=size["sampling_rate"], target_fps=30.0, frame_rate=30.0)
  config.dataset_configs = dc

  config.model_name = "timesformer"
  config.model = models.default_config("timesformer")  # B/16, stochastic depth 0.1, exact GELU.
  config.model.variant = "B/16"
  config.model.attention = attention
  if size["crop_size"] > 224 or num_frames > 16:  # HR, L and long HowTo100M clips.
    config.model.remat_policy = "full"

  common.training(
    config,
    **TIMESFORMER_TRAINING,
    eval_aggregation="sum_logits",  # The official code sums the views' logits.
    paper="TimeSformer (arXiv:2102.05095) supplementary §1",
  )
  return config
