r"""TimeSformer on Diving-48: 48 fine-grained dive classes (Bertasius et al., 2021, Table 7).

  python train.py --config=configs/diving48_timesformer.py --workdir=runs/diving48_ts \
      --config.dataset_configs.base_dir=/data/diving48 \
      --config.init_from.checkpoint_path=ckpt/vit_b16_in1k
  python train.py --config=configs/diving48_timesformer.py:variant=L --workdir=runs/diving48_l \
      --config.dataset_configs.base_dir=/data/diving48
  python train.py --config=configs/diving48_timesformer.py:shrink=1 --workdir=/tmp/d48_smoke

Arguments: variant=base|HR|L (default base: TimeSformer, 8 x 224 x 224; HR: TimeSformer-HR,
16 x 448 x 448; L: TimeSformer-L, 96 x 224 x 224); shrink=1 (a seconds-long CPU smoke test of the
recipe: configs.common.shrink). Divided space-time attention.

Data: Diving-48 (supplementary: 16K training and 3K testing videos, 48 classes; the paper uses
the corrected labels, "Diving-48**" of Table 7). One frame per equal segment of the video
(random for training, the middle for evaluation), flips on (a mirrored dive is the same dive),
short side in [256, 320] ([448, 512] for HR), random crop; the clip x 3 crops at evaluation,
logits summed.

Recipe: the Kinetics-400 one (supplementary §1: 15 epochs of SGD with momentum 0.9, weight decay
1e-4, batch 16, lr 0.005 divided by 10 at epochs 11 and 14), starting from an ImageNet-1K
ViT-B/16 (Table 7: "All models are pretrained on ImageNet-1K"). Details, the hardware and the
differences from the paper: configs.common.timesformer_recipe. Not stated by the paper, and
chosen here: the sampling (its videos last a few seconds, less than the 8.5 s window of the
Kinetics sampling, so they are sampled as SSv2, one frame per segment) and -L's 96 frames (the
paper defines TimeSformer-L by its 96-frame input).

Hardware: 32 GPUs in the paper. HR and L rematerialise their blocks (model.remat_policy='full').

Expected (Table 7, Diving-48 top-1, ImageNet-1K): TimeSformer 74.9, TimeSformer-HR 78.0,
TimeSformer-L 81.0 (a reproduced SlowFast 16x8 R101: 77.6).
"""

import ml_collections

from vidtx.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="base")
  config = common.timesformer_recipe("diving48", variant=args.variant)
  return common.finish(config, args)
