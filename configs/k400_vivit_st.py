r"""ViViT-B/16x2 Model 1 (spatio-temporal attention) on Kinetics-400: ViViT (arXiv:2103.15691).

  python train.py --config=configs/k400_vivit_st.py --workdir=runs/k400_vivit_st \
      --config.dataset_configs.base_dir=/data/k400 \
      --config.init_from.checkpoint_path=ckpt/vit_b16_in21k
  python eval.py --config=configs/k400_vivit_st.py --workdir=runs/k400_vivit_st \
      --config.dataset_configs.base_dir=/data/k400
  python train.py --config=configs/k400_vivit_st.py:shrink=1 --workdir=/tmp/k400_vivit_st_smoke
  python -m vidtx.tools.complexity --config=configs/k400_vivit_st.py

Arguments: variant=B/16x2 (default) | L/16x2 | any ViT size/patch x tubelet; shrink=1 (a
seconds-long CPU smoke test of the recipe: configs.common.shrink).

Joint attention over all 16 x 196 tubelet tokens and a class token.

Expected (Table 2, ImageNet-21K initialisation, 4 x 3 views): 80.0 top-1, 88.9 M parameters,
455.2 GFLOPs per view. ViViT-L/16x2 (Table 5): 80.3 top-1 with 224 crops (1446 GFLOPs per view),
80.7 with 288, 81.0 with 320 (3992 GFLOPs; set --config.dataset_configs.crop_size and a
min_resize at least as large).

Hardware, the recipe (Table 7) and what differs from the paper, shared by every ViViT config:
configs/families/vivit.py.
"""

import ml_collections

from vidtx.configs import common
from vidtx.configs.families import vivit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="B/16x2")
  config = vivit.vivit_recipe("k400", variant=args.variant, attention="spatio_temporal")
  return common.finish(config, args)
