r"""TimeSformer on Kinetics-600: TimeSformer (arXiv:2102.05095) Table 6.

  python train.py --config=configs/k600_timesformer.py --workdir=runs/k600_timesformer \
      --config.dataset_configs.base_dir=/data/k600 \
      --config.init_from.checkpoint_path=ckpt/vit_b16_in21k
  python train.py --config=configs/k600_timesformer.py:variant=HR --workdir=runs/k600_ts_hr \
      --config.dataset_configs.base_dir=/data/k600
  python train.py --config=configs/k600_timesformer.py:shrink=1 --workdir=/tmp/k600_ts_smoke

Arguments: variant=base|HR|L (default base: 8 x 224 x 224; HR: 16 x 448 x 448; L: 96 x 224 x
224); shrink=1 (a seconds-long CPU smoke test of the recipe: configs.common.shrink). Divided
space-time attention. Split sizes are scenic's (363,213 training, 27,676 validation videos; the
supplementary counts 392K and 30K).

Expected (Table 6, Kinetics-600 validation, ImageNet-21K, 1 clip x 3 crops, top-1 / top-5):
TimeSformer 79.1 / 94.4, TimeSformer-HR 81.8 / 95.8, TimeSformer-L 82.2 / 95.6.

Hardware, the recipe and what differs from the paper, shared by every TimeSformer config:
configs/families/timesformer.py.
"""

import ml_collections

from vidtx.configs import common
from vidtx.configs.families import timesformer


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="base")
  config = timesformer.timesformer_recipe("k600", variant=args.variant)
  return common.finish(config, args)
