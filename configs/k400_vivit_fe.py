r"""ViViT-B/16x2 factorised-encoder on Kinetics-400 (Arnab et al., 2021, Table 2).

  python train.py --config=configs/k400_vivit_fe.py --workdir=runs/k400_vivit_fe \
      --config.dataset_configs.base_dir=/data/k400
  python eval.py --config=configs/k400_vivit_fe.py --workdir=runs/k400_vivit_fe \
      --config.dataset_configs.base_dir=/data/k400
  python -m vidtx.tools.complexity --config=configs/k400_vivit_fe.py

Arguments: variant=B/16x2 (default) | L/16x2 | any ViT size/patch x tubelet (vidtx.models);
shrink=1 (a seconds-long CPU smoke test of the recipe: configs.common.shrink). ViViT-L/16x2 FE
(24 spatial + 4 temporal ViT-L layers; blocks rematerialised): scenic's released model reaches
80.3 top-1 on 4 x 3 views (scenic/projects/vivit model zoo), the paper's Kinetics-400 table
(Table 6a) reports its ViViT-L/16x2 FE against prior work.

Model 2, factorised encoder: a 12-layer spatial encoder per temporal index (class token
per index), then a 4-layer temporal encoder (L_t = 4) over the 16 index representations.
32 frames at stride 2, 224 x 224 crops, 16 x 16 x 2 tubelets (central-frame initialised, Eq. 9),
400 classes. Parameters: 115.06 M (Table 2: 115.1).

The average-pooling baseline of Table 2 (L_t = 0: 75.8 top-1, 86.7 M parameters, 283.9 GFLOPs):
--config.model.temporal_layers=0.

Recipe (ViViT 2103.15691 Table 7, K400 column: SGD momentum 0.9, batch 64, lr 0.1, 2.5 warm-up
epochs, cosine, 30 epochs, scale jitter, flip and colour jitter, no other regulariser), the
differences from the paper and the hardware it needs: the docstring of configs.common.vivit_recipe,
which every ViViT config shares.

Hardware: TPU-v3 in the paper (§4.1; the chip count is not given). Batch 64 of 32 x 224 x 224
clips needs several accelerators, e.g. 8 GPUs of 40-80 GB for ViViT-B (more for ViViT-L), or
fewer with --config.grad_accum_steps.

Evaluation (Sec. 4.1): 4 temporal clips x 3 spatial crops (short side 256, 224 crops), logits
averaged. Expected (Table 2, ImageNet-21K initialisation): 78.8 top-1 on Kinetics-400;
284.4 GFLOPs (multiply-adds) per view; 17.4 ms per view on a TPU-v3.
"""

import ml_collections

from vidtx.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="B/16x2")
  config = common.vivit_recipe("k400", variant=args.variant, attention="factorised_encoder")
  return common.finish(config, args)
