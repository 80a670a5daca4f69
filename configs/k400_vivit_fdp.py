r"""ViViT-B/16x2 Model 4 (factorised dot-product) on Kinetics-400: ViViT (arXiv:2103.15691).

  python train.py --config=configs/k400_vivit_fdp.py --workdir=runs/k400_vivit_fdp \
      --config.dataset_configs.base_dir=/data/k400 \
      --config.init_from.checkpoint_path=ckpt/vit_b16_in21k
  python eval.py --config=configs/k400_vivit_fdp.py --workdir=runs/k400_vivit_fdp \
      --config.dataset_configs.base_dir=/data/k400
  python train.py --config=configs/k400_vivit_fdp.py:shrink=1 --workdir=/tmp/k400_vivit_fdp_smoke
  python -m vidtx.tools.complexity --config=configs/k400_vivit_fdp.py

Arguments: variant=B/16x2 (default) | L/16x2 | any ViT size/patch x tubelet; shrink=1 (a
seconds-long CPU smoke test of the recipe: configs.common.shrink).

Half of each block's heads attend over space, half over time; the parameters of Model 1; the
average token is classified. The paper reports Model 4 only at ViViT-B.

Expected (Table 2, ImageNet-21K initialisation, 4 x 3 views): 76.3 top-1, 88.9 M parameters,
277.1 GFLOPs per view.

Hardware, the recipe (Table 7) and what differs from the paper, shared by every ViViT config:
configs/families/vivit.py.
"""

import ml_collections

from vidtx.configs import common
from vidtx.configs.families import vivit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="B/16x2")
  config = vivit.vivit_recipe("k400", variant=args.variant, attention="factorised_dot_product")
  return common.finish(config, args)
