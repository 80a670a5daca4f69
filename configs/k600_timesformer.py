r"""TimeSformer on Kinetics-600: 600 classes (Bertasius et al., 2021, Table 6).

  python train.py --config=configs/k600_timesformer.py --workdir=runs/k600_timesformer \
      --config.dataset_configs.base_dir=/data/k600 \
      --config.init_from.checkpoint_path=ckpt/vit_b16_in21k
  python train.py --config=configs/k600_timesformer.py:variant=HR --workdir=runs/k600_ts_hr \
      --config.dataset_configs.base_dir=/data/k600
  python train.py --config=configs/k600_timesformer.py:shrink=1 --workdir=/tmp/k600_ts_smoke

Arguments: variant=base|HR|L (default base: TimeSformer, 8 x 224 x 224 frames at a rate of 1/32;
HR: TimeSformer-HR, 16 x 448 x 448 at 1/16; L: TimeSformer-L, 96 x 224 x 224 at 1/4); shrink=1
(a seconds-long CPU smoke test of the recipe: configs.common.shrink). Divided space-time
attention, the paper's choice after Table 1.

Recipe: the Kinetics-400 one (supplementary §1: 15 epochs of SGD with momentum 0.9, weight decay
1e-4, batch 16, lr 0.005 divided by 10 at epochs 11 and 14; short side in [256, 320], random
crop, flip; the middle clip x 3 crops at evaluation, logits summed) with 600 classes; the
supplementary counts 392K training and 30K validation videos (the split sizes here are
scenic's: 363,213 and 27,676). Details, the hardware and the differences from the paper
(initialisation from an ImageNet-21K ViT-B/16 is needed for the paper's accuracy):
configs.common.timesformer_recipe.

Hardware: 32 GPUs in the paper; the official configs train on 8 GPUs. HR and L rematerialise
their blocks (model.remat_policy='full').

Expected (Table 6, Kinetics-600 validation, ImageNet-21K, one clip x 3 crops): TimeSformer
79.1 top-1 / 94.4 top-5, TimeSformer-HR 81.8 / 95.8, TimeSformer-L 82.2 / 95.6.
"""

import ml_collections

from vidtx.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="base")
  config = common.timesformer_recipe("k600", variant=args.variant)
  return common.finish(config, args)
