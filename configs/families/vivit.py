"""ViViT (Arnab et al., 2021, arXiv:2103.15691): its recipe per dataset as data (VIVIT_RECIPES,
one row per column of Table 7) and `vivit_recipe`, which builds a config from a row. The recipe
files configs/*_vivit*.py add their commands and the paper's results for their dataset.

Recipe (Table 7 and §4.1): 32 frames (stride 2; 1 for EPIC and SSv2, as scenic's configs),
224 x 224 crops of frames whose short side is 256, central-frame tubelet initialisation (Eq. 9),
synchronous SGD with momentum 0.9, batch 64, cosine schedule after 2.5 epochs of linear warm-up,
gradients clipped to norm 1 (scenic's configs), random crop after scale jitter 0.9-1.33
(probability 1) and flips (0.5) for every dataset; learning rate, epochs, colour jitter (p 0.8)
or RandAugment, droplayer (stochastic depth), label smoothing and mixup per dataset
(VIVIT_RECIPES).

Evaluation (§4.1): 4 temporal clips x 3 spatial crops (EPIC: 4 x 1, scenic's zoo), logits
averaged. Models 3 and 4 classify the average token, Models 1 and 2 a class token; L_t = 4
temporal layers in Model 2 (the model's default, vidtx.models.vivit). ViT-L and ViT-H models
rematerialise every block in the backward pass (model.remat_policy='full') to fit 32 frames at
batch 64 in accelerator memory.

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
- Dataset size: epochs and the warm-up are counted with the split sizes of configs.common's
  DATASETS; set --config.dataset_configs.examples_per_subset.train to your copy's.
- Clips for EPIC and SSv2: 32 frames at stride 1 as scenic's released configs (the paper
  states stride 2 "unless otherwise mentioned").
- SSv2 is flipped as Table 7 says, although a flip mirrors direction classes ("pushing
  something from left to right"); --config.dataset_configs.flip_label_pairs (pairs of class
  indices from your label map) swaps them, --config.dataset_configs.random_flip=False turns
  flips off.
"""

import ml_collections

from vidtx import models
from vidtx.configs import common
from vidtx.errors import UserError
from vidtx.models import hparams
from vidtx.models.vivit import ATTENTIONS, GAP_ONLY

# One row per dataset: ViViT (arXiv:2103.15691) Table 7's column for it (learning rate, epochs,
# augmentation, regularisation) and §4.1's clips and views. rand_augment: (layers, magnitude);
# spatial_crops: 3 (left, centre, right) or 1 (centre) per temporal clip.
VIVIT_RECIPES: dict[str, dict] = {
  # Table 7, Kinetics-400; §4.1.
  "k400": dict(
    num_frames=32,
    stride=2,
    batch_size=64,
    base_learning_rate=0.1,
    epochs=30,
    warmup_epochs=2.5,
    random_flip=True,
    colour_jitter=True,
    rand_augment=None,
    stochastic_depth=0.0,
    label_smoothing=0.0,
    mixup_alpha=0.0,
    num_test_clips=4,
    spatial_crops=3,
  ),
  # Table 7, Kinetics-600; §4.1.
  "k600": dict(
    num_frames=32,
    stride=2,
    batch_size=64,
    base_learning_rate=0.1,
    epochs=30,
    warmup_epochs=2.5,
    random_flip=True,
    colour_jitter=True,
    rand_augment=None,
    stochastic_depth=0.0,
    label_smoothing=0.0,
    mixup_alpha=0.0,
    num_test_clips=4,
    spatial_crops=3,
  ),
  # Table 7, Moments in Time; §4.1.
  "mit": dict(
    num_frames=32,
    stride=2,
    batch_size=64,
    base_learning_rate=0.25,
    epochs=10,
    warmup_epochs=2.5,
    random_flip=True,
    colour_jitter=True,
    rand_augment=None,
    stochastic_depth=0.0,
    label_smoothing=0.0,
    mixup_alpha=0.0,
    num_test_clips=4,
    spatial_crops=3,
  ),
  # Table 7, EPIC-Kitchens; stride 1 as scenic's released EPIC config, 4 x 1 views as scenic's
  # model zoo.
  "ek": dict(
    num_frames=32,
    stride=1,
    batch_size=64,
    base_learning_rate=0.5,
    epochs=50,
    warmup_epochs=2.5,
    random_flip=True,
    colour_jitter=False,
    rand_augment=(2, 15),
    stochastic_depth=0.2,
    label_smoothing=0.2,
    mixup_alpha=0.1,
    num_test_clips=4,
    spatial_crops=1,
  ),
  # Table 7, Something-Something-V2 (flipped, as the table says); stride 1 as scenic's released
  # SSv2 config.
  "ssv2": dict(
    num_frames=32,
    stride=1,
    batch_size=64,
    base_learning_rate=0.5,
    epochs=35,
    warmup_epochs=2.5,
    random_flip=True,
    colour_jitter=False,
    rand_augment=(2, 20),
    stochastic_depth=0.3,
    label_smoothing=0.3,
    mixup_alpha=0.3,
    num_test_clips=4,
    spatial_crops=3,
  ),
}
# The short names of the attention patterns (Models 1-4) in experiment names.
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
  """ViViT-`variant` with `attention` (Models 1-4) on `dataset`: VIVIT_RECIPES[dataset] as a
  config, as ViViT (arXiv:2103.15691) Table 7 trains it (the module docstring gives the recipe,
  the hardware it needs and what differs from the paper)."""
  if dataset not in VIVIT_RECIPES:
    raise UserError(f"vivit_recipe: dataset={dataset!r}; expected one of {sorted(VIVIT_RECIPES)}.")
  common.check_attention(attention, ATTENTIONS)
  hparams.parse_variant(variant)  # Raises ValueError naming the variant when invalid.
  row = VIVIT_RECIPES[dataset]
  config = ml_collections.ConfigDict()
  config.experiment_name = (
    f"{dataset}_vivit_{_variant_slug(variant)}_{VIVIT_ATTENTION_NAMES[attention]}"
  )

  config.dataset_name = "dmvr"
  config.dataset_configs = common.dmvr_dataset(dataset)
  config.dataset_configs.update(
    num_frames=row["num_frames"],
    stride=row["stride"],
    min_resize=256,
    crop_size=224,
    random_flip=row["random_flip"],
    num_test_clips=row["num_test_clips"],
    do_three_spatial_crops=row["spatial_crops"] == 3,
  )
  config.dataset_configs.augmentation_params = vivit_augmentation(
    color=row["colour_jitter"], rand_augment=row["rand_augment"]
  )

  config.model_name = "vivit"
  config.model = models.default_config("vivit")  # L_t = 4 temporal layers (Model 2).
  config.model.variant = variant
  config.model.attention = attention
  config.model.classifier = "gap" if attention in GAP_ONLY else "token"
  config.model.kernel_init_method = "central_frame"
  config.model.stochastic_depth = row["stochastic_depth"]
  if _is_large(variant):
    config.model.remat_policy = "full"

  common.training(
    config,
    batch_size=row["batch_size"],
    base_learning_rate=row["base_learning_rate"],
    epochs=row["epochs"],
    warmup_epochs=row["warmup_epochs"],
    schedule="cosine",
    max_grad_norm=1.0,  # scenic's configs.
    label_smoothing=row["label_smoothing"],
    mixup_alpha=row["mixup_alpha"],
    eval_aggregation="mean_logits",  # ViViT averages the logits of the views.
    paper="ViViT (arXiv:2103.15691) Table 7",
  )
  return config


def _variant_slug(variant: str) -> str:
  return variant.replace("/", "").lower()  # 'B/16x2' -> 'b16x2'


def _is_large(variant: str) -> bool:
  return hparams.parse_variant(variant)["hidden_size"] >= 1024  # ViT-L, ViT-H
