r"""ViViT-B/16x2 factorised-self-attention on Kinetics-400 (Arnab et al., 2021, Table 2).

  python train.py --config=configs/k400_vivit_fsa.py --workdir=runs/k400_vivit_fsa \
      --config.dataset_configs.base_dir=/data/k400
  python eval.py --config=configs/k400_vivit_fsa.py --workdir=runs/k400_vivit_fsa \
      --config.dataset_configs.base_dir=/data/k400
  python -m vidtx.tools.complexity --config=configs/k400_vivit_fsa.py

Model 3, factorised self-attention: every block attends over space, then over time, then
the MLP; no class token, the average token is classified (--config.model.attention_order=
time_space for the reverse order, which the paper reports makes no difference).
32 frames at stride 2, 224 x 224 crops, 16 x 16 x 2 tubelets (central-frame initialised, Eq. 9),
400 classes. Parameters: 117.32 M (Table 2: 117.3).

Recipe, the differences from the paper and the hardware it needs: the docstring of
configs.common.vivit_kinetics400, which every ViViT Kinetics-400 config shares.

Evaluation (Sec. 4.1): 4 temporal clips x 3 spatial crops (short side 256, 224 crops), logits
averaged. Expected (Table 2, ImageNet-21K initialisation): 77.4 top-1 on Kinetics-400;
372.3 GFLOPs (multiply-adds) per view; 31.7 ms per view on a TPU-v3.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  common.parse_arg(arg)  # No arguments: rejects any.
  config = common.vivit_kinetics400("factorised_self_attention")
  config.experiment_name = "k400_vivit_b16x2_fsa"
  return config
