r"""ViViT on Something-Something-V2, ViViT-L/16x2 factorised encoder: ViViT (arXiv:2103.15691).

  python train.py --config=configs/ssv2_vivit.py --workdir=runs/ssv2_vivit \
      --config.dataset_configs.base_dir=/data/ssv2 \
      --config.init_from.checkpoint_path=ckpt/vit_l16_in21k
  python train.py --config=configs/ssv2_vivit.py:shrink=1 --workdir=/tmp/ssv2_vivit_smoke

Arguments: variant=L/16x2 (default) | B/16x2 | any ViT size/patch x tubelet; attention=
factorised_encoder (default; the paper's SSv2 model, §4.3) | spatio_temporal |
factorised_self_attention | factorised_dot_product; shrink=1 (a seconds-long CPU smoke test of
the recipe: configs.common.shrink).

Expected (Table 6e, ViViT-L/16x2 FE, ImageNet-21K): 65.4 top-1 on SSv2 validation. Differs from
scenic's released SSv2 config (256 crops of frames resized to 288, lr 0.4): this follows the
paper (224 crops, §4.2; Table 7's lr 0.5).

Hardware, the recipe (Table 7) and what differs from the paper, shared by every ViViT config:
configs/families/vivit.py.
"""

import ml_collections

from vidtx.configs import common
from vidtx.configs.families import vivit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="L/16x2", attention="factorised_encoder")
  config = vivit.vivit_recipe("ssv2", variant=args.variant, attention=args.attention)
  return common.finish(config, args)
