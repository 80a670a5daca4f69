r"""ViViT on Moments in Time, ViViT-L/16x2 factorised encoder by default: ViViT (arXiv:2103.15691).

  python train.py --config=configs/mit_vivit.py --workdir=runs/mit_vivit \
      --config.dataset_configs.base_dir=/data/mit \
      --config.init_from.checkpoint_path=ckpt/vit_l16_in21k
  python train.py --config=configs/mit_vivit.py:attention=spatio_temporal --workdir=runs/mit_st \
      --config.dataset_configs.base_dir=/data/mit
  python train.py --config=configs/mit_vivit.py:shrink=1 --workdir=/tmp/mit_vivit_smoke

Arguments: variant=L/16x2 (default) | B/16x2 | any ViT size/patch x tubelet; attention=
factorised_encoder (default) | spatio_temporal | factorised_self_attention |
factorised_dot_product (Models 2, 1, 3, 4); shrink=1 (a seconds-long CPU smoke test of the
recipe: configs.common.shrink). Data: 339 classes, one label per 3 s clip (the v1 release:
802,264 training and 33,900 validation clips).

Expected (Table 6c, ViViT-L/16x2, ImageNet-21K): 64.9 top-5 and about 38 top-1; the dataset's
label noise keeps accuracies low.

Hardware, the recipe (Table 7) and what differs from the paper, shared by every ViViT config:
configs/families/vivit.py.
"""

import ml_collections

from vidtx.configs import common
from vidtx.configs.families import vivit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="L/16x2", attention="factorised_encoder")
  config = vivit.vivit_recipe("mit", variant=args.variant, attention=args.attention)
  return common.finish(config, args)
