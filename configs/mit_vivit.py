r"""ViViT on Moments in Time: ViViT-L/16x2 factorised encoder by default (Arnab et al., 2021).

  python train.py --config=configs/mit_vivit.py --workdir=runs/mit_vivit \
      --config.dataset_configs.base_dir=/data/mit \
      --config.init_from.checkpoint_path=ckpt/vit_l16_in21k
  python train.py --config=configs/mit_vivit.py:attention=spatio_temporal --workdir=runs/mit_st \
      --config.dataset_configs.base_dir=/data/mit
  python train.py --config=configs/mit_vivit.py:shrink=1 --workdir=/tmp/mit_vivit_smoke

Arguments: variant=L/16x2 (default) | B/16x2 | any ViT size/patch x tubelet; attention=
factorised_encoder (default) | spatio_temporal | factorised_self_attention |
factorised_dot_product (ViViT Models 2, 1, 3, 4); shrink=1 (a seconds-long CPU smoke test of the
recipe: configs.common.shrink).

Data: Moments in Time (§4.1: 800,000 YouTube clips of 3 s; the v1 release: 802,264 training and
33,900 validation clips), 339 classes, one label per clip; 32 frames at stride 2, 224 x 224
crops; evaluation on 4 temporal clips x 3 crops, logits averaged.

Recipe (ViViT 2103.15691 Table 7, MiT column): synchronous SGD with momentum 0.9, batch 64, base
learning rate 0.25, 2.5 warm-up epochs then cosine decay, 10 epochs; random crop after scale
jitter 0.9-1.33, flip 0.5, colour jitter with probability 0.8; no stochastic depth, label
smoothing or mixup (§4.2: the large datasets need only the first row of Table 4). Shared with
every ViViT config, with the hardware it needs and the differences from the paper
(initialisation from an ImageNet-21K ViT-L/16 is needed for the paper's accuracy):
configs.common.vivit_recipe.

Hardware: TPU-v3 in the paper (the chip count is not given); ViViT-L at batch 64 needs e.g.
16-32 GPUs of 80 GB, or fewer with --config.grad_accum_steps (blocks are rematerialised).

Expected (Table 6c, ViViT-L/16x2, ImageNet-21K): top-5 64.9 and top-1 about 38, above the prior
state of the art ("a significant margin", §4.3); the dataset's label noise keeps accuracies low.
"""

import ml_collections

from vidtx.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="L/16x2", attention="factorised_encoder")
  config = common.vivit_recipe("mit", variant=args.variant, attention=args.attention)
  return common.finish(config, args)
