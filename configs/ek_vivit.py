r"""ViViT on EPIC-Kitchens-100 (verb and noun heads): ViViT-L/16x2 factorised encoder by default.

  python train.py --config=configs/ek_vivit.py --workdir=runs/ek_vivit \
      --config.dataset_configs.base_dir=/data/epic100 \
      --config.init_from.checkpoint_path=runs/k400_vivit_l_fe
  python train.py --config=configs/ek_vivit.py:variant=B/16x2 --workdir=runs/ek_vivit_b \
      --config.dataset_configs.base_dir=/data/epic100 \
      --config.init_from.checkpoint_path=runs/k400_vivit_fe
  python train.py --config=configs/ek_vivit.py:shrink=1 --workdir=/tmp/ek_vivit_smoke

Arguments: variant=L/16x2 (default) | B/16x2 | any ViT size/patch x tubelet; attention=
factorised_encoder (default; the best on EPIC, Table 2) | spatio_temporal |
factorised_self_attention | factorised_dot_product; shrink=1 (a seconds-long CPU smoke test of
the recipe: configs.common.shrink; the synthetic videos carry one label, so the shrunk recipe
has one class split instead of noun and verb).

Data (§4.1, "action recognition" protocol): one model with two heads, 300 nouns then 97 verbs
(dataset_configs.class_splits [300, 97], split_names noun, verb: the records hold
[noun, 300 + verb], as python -m vidtx.data.make_shards writes EPIC-100); a softmax cross-entropy
per head, summed with equal weights as the paper; the "action" is right when both heads are,
and action top-1 is the headline metric (config.best_checkpoint_metric 'top1' is action
top-1). 32 frames at stride 1 and 224 x 224 crops, evaluation on 4 temporal clips x 1 crop
(scenic's released EPIC config and model zoo), logits averaged.

Recipe (ViViT 2103.15691 Table 7, EK column; Table 4 ablates it): synchronous SGD with momentum 0.9,
batch 64, base learning rate 0.5, 2.5 warm-up epochs then cosine decay, 50 epochs; random crop
after scale jitter 0.9-1.33, flip 0.5, no colour jitter, RandAugment 2 layers of magnitude 15,
stochastic depth 0.2, label smoothing 0.2, mixup alpha 0.1. Shared with every ViViT config,
with the hardware it needs and the differences from the paper: configs.common.vivit_recipe.
Initialisation: a Kinetics-400 ViViT (Table 4, "+ Kinetics 400 initialisation": the K400 run
of configs/k400_vivit_fe.py with the same variant, its head replaced for the 397 classes).

Hardware: TPU-v3 in the paper (the chip count is not given); ViViT-L at batch 64 needs e.g.
16-32 GPUs of 80 GB, or fewer with --config.grad_accum_steps (blocks are rematerialised).

Expected (EPIC-Kitchens-100 validation): ViViT-L/16x2 FE, Table 6d: action 44.0, verb 66.4,
noun 56.8 top-1; scenic's released model 43.6 action top-1 on 4 x 1 views. ViViT-B/16x2
(Table 2, action top-1): FE 43.7, spatio-temporal 43.1, factorised self-attention 39.1,
factorised dot-product 39.5; Table 4 builds FE up from 38.4 (crop, flip, colour jitter) through
K400 initialisation 39.6, stochastic depth 40.2, RandAugment 41.1, label smoothing 43.1 to
mixup 43.7.
"""

import ml_collections

from vidtx.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="L/16x2", attention="factorised_encoder")
  config = common.vivit_recipe("ek", variant=args.variant, attention=args.attention)
  return common.finish(config, args)
