r"""ViViT-B/16x2 Model 2 (factorised encoder) on Kinetics-400: ViViT (arXiv:2103.15691).

  python train.py --config=configs/k400_vivit_fe.py --workdir=runs/k400_vivit_fe \
      --config.dataset_configs.base_dir=/data/k400 \
      --config.init_from.checkpoint_path=ckpt/vit_b16_in21k
  python eval.py --config=configs/k400_vivit_fe.py --workdir=runs/k400_vivit_fe \
      --config.dataset_configs.base_dir=/data/k400
  python train.py --config=configs/k400_vivit_fe.py:shrink=1 --workdir=/tmp/k400_vivit_fe_smoke
  python -m vidtx.tools.complexity --config=configs/k400_vivit_fe.py

Arguments: variant=B/16x2 (default) | L/16x2 | any ViT size/patch x tubelet; shrink=1 (a
seconds-long CPU smoke test of the recipe: configs.common.shrink).

A 12-layer spatial encoder per temporal index, then a 4-layer temporal encoder (L_t = 4);
--config.model.temporal_layers=0 is Table 2's average-pooling baseline.

Expected (Table 2, ImageNet-21K initialisation, 4 x 3 views): 78.8 top-1 (baseline 75.8),
115.1 M parameters, 284.4 GFLOPs per view. ViViT-L/16x2 FE: scenic's released model reaches 80.3
top-1 (github.com/google-research/scenic, projects/vivit).

Hardware, the recipe (Table 7) and what differs from the paper, shared by every ViViT config:
configs/families/vivit.py.
"""

import ml_collections

from vidtx.configs import common
from vidtx.configs.families import vivit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="B/16x2")
  config = vivit.vivit_recipe("k400", variant=args.variant, attention="factorised_encoder")
  return common.finish(config, args)
