r"""ViViT-B/16x2 spatio-temporal on Kinetics-400 (Arnab et al., 2021, Table 2).

  python train.py --config=configs/k400_vivit_st.py --workdir=runs/k400_vivit_st \
      --config.dataset_configs.base_dir=/data/k400
  python eval.py --config=configs/k400_vivit_st.py --workdir=runs/k400_vivit_st \
      --config.dataset_configs.base_dir=/data/k400
  python -m vidtx.tools.complexity --config=configs/k400_vivit_st.py

Model 1, spatio-temporal attention: joint attention over all 16 x 196 tubelet tokens and a
class token.
32 frames at stride 2, 224 x 224 crops, 16 x 16 x 2 tubelets (central-frame initialised, Eq. 9),
400 classes. Parameters: 88.95 M (Table 2: 88.9).

Recipe (configs.common.vivit_kinetics400, vivit.txt Table 7, K400 column): synchronous SGD with
momentum 0.9, batch 64, base learning rate 0.1, 2.5 epochs of linear warm-up then cosine decay,
30 epochs; no stochastic depth, label smoothing or mixup for Kinetics. Differences from the
paper, and why:
- Augmentation: the paper adds scale jitter (0.9-1.33, probability 1) and colour jitter
  (probability 0.8); the vidtx reader has random crops and flips only.
- Initialisation: the paper starts from an ImageNet-21K ViT-B/16 (Sec. 3.4: positional
  embedding repeated over time, central-frame tubelets, Model 3's temporal attention at zero).
  vidtx has no checkpoint loader yet, so this config trains from random initialisation and
  will not reach the paper's accuracy.
- Dataset size: epochs and the warm-up are counted with scenic's Kinetics-400 sizes
  (configs.common.KINETICS_400_EXAMPLES); set --config.dataset_configs.examples_per_subset.train
  (and --config.lr_configs.warmup_steps, 2.5 epochs) to your copy's.

Hardware: the paper trains on TPU-v3 (Sec. 4.1; the number of chips is not given). Batch 64 of
32 x 224 x 224 clips needs several accelerators (e.g. 8 GPUs of 40-80 GB, 8 clips each): the
batch is sharded over every local device. With fewer devices, lower --config.batch_size and
scale --config.lr_configs.base_learning_rate with it.

Evaluation (Sec. 4.1): 4 temporal clips x 3 spatial crops (short side 256, 224 crops), logits
averaged. Expected (Table 2, ImageNet-21K initialisation): 80.0 top-1 on Kinetics-400;
455.2 GFLOPs (multiply-adds) per view; 58.9 ms per view on a TPU-v3.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  common.parse_arg(arg)  # No arguments: rejects any.
  config = common.vivit_kinetics400("spatio_temporal")
  config.experiment_name = "k400_vivit_b16x2_st"
  return config
