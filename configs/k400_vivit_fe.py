r"""ViViT-B/16x2 factorised-encoder on Kinetics-400 (Arnab et al., 2021, Table 2).

  python train.py --config=configs/k400_vivit_fe.py --workdir=runs/k400_vivit_fe \
      --config.dataset_configs.base_dir=/data/k400
  python eval.py --config=configs/k400_vivit_fe.py --workdir=runs/k400_vivit_fe \
      --config.dataset_configs.base_dir=/data/k400
  python -m vidtx.tools.complexity --config=configs/k400_vivit_fe.py

Model 2, factorised encoder: a 12-layer spatial encoder per temporal index (class token
per index), then a 4-layer temporal encoder (L_t = 4) over the 16 index representations.
32 frames at stride 2, 224 x 224 crops, 16 x 16 x 2 tubelets (central-frame initialised, Eq. 9),
400 classes. Parameters: 115.06 M (Table 2: 115.1).

The average-pooling baseline of Table 2 (L_t = 0: 75.8 top-1, 86.7 M parameters, 283.9 GFLOPs):
--config.model.temporal_layers=0.

Recipe, the differences from the paper and the hardware it needs: the docstring of
configs.common.vivit_kinetics400, which every ViViT Kinetics-400 config shares.

Evaluation (Sec. 4.1): 4 temporal clips x 3 spatial crops (short side 256, 224 crops), logits
averaged. Expected (Table 2, ImageNet-21K initialisation): 78.8 top-1 on Kinetics-400;
284.4 GFLOPs (multiply-adds) per view; 17.4 ms per view on a TPU-v3.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  common.parse_arg(arg)  # No arguments: rejects any.
  config = common.vivit_kinetics400("factorised_encoder")
  config.experiment_name = "k400_vivit_b16x2_fe"
  return config
