r"""ViViT-B/16x2 factorised-dot-product on Kinetics-400 (Arnab et al., 2021, Table 2).

  python train.py --config=configs/k400_vivit_fdp.py --workdir=runs/k400_vivit_fdp \
      --config.dataset_configs.base_dir=/data/k400
  python eval.py --config=configs/k400_vivit_fdp.py --workdir=runs/k400_vivit_fdp \
      --config.dataset_configs.base_dir=/data/k400
  python -m vidtx.tools.complexity --config=configs/k400_vivit_fdp.py

Model 4, factorised dot-product attention: in every block half of the 12 heads attend over
space and half over time; the parameters of Model 1 (no class token: the average token is
classified).
32 frames at stride 2, 224 x 224 crops, 16 x 16 x 2 tubelets (central-frame initialised, Eq. 9),
400 classes. Parameters: 88.95 M (Table 2: 88.9).

Recipe, the differences from the paper and the hardware it needs: the docstring of
configs.common.vivit_kinetics400, which every ViViT Kinetics-400 config shares.

Evaluation (Sec. 4.1): 4 temporal clips x 3 spatial crops (short side 256, 224 crops), logits
averaged. Expected (Table 2, ImageNet-21K initialisation): 76.3 top-1 on Kinetics-400;
277.1 GFLOPs (multiply-adds) per view; 22.9 ms per view on a TPU-v3.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  common.parse_arg(arg)  # No arguments: rejects any.
  config = common.vivit_kinetics400("factorised_dot_product")
  config.experiment_name = "k400_vivit_b16x2_fdp"
  return config
