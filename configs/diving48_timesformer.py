r"""TimeSformer on Diving-48, 48 dive classes: TimeSformer (arXiv:2102.05095) Table 7.

  python train.py --config=configs/diving48_timesformer.py --workdir=runs/diving48_ts \
      --config.dataset_configs.base_dir=/data/diving48 \
      --config.init_from.checkpoint_path=ckpt/vit_b16_in1k
  python train.py --config=configs/diving48_timesformer.py:variant=L --workdir=runs/diving48_l \
      --config.dataset_configs.base_dir=/data/diving48
  python train.py --config=configs/diving48_timesformer.py:shrink=1 --workdir=/tmp/d48_smoke

Arguments: variant=base|HR|L (default base: 8 x 224 x 224; HR: 16 x 448 x 448; L: 96 x 224 x
224); shrink=1 (a seconds-long CPU smoke test of the recipe: configs.common.shrink). Divided
space-time attention, from an ImageNet-1K ViT-B/16 (Table 7); the corrected labels (Diving-48 V2).
Not stated by the paper, chosen here: -L's 96 frames (the paper defines TimeSformer-L by its
96-frame input) and flips (a mirrored dive is the same dive).

Expected (Table 7, Diving-48 top-1): TimeSformer 74.9, TimeSformer-HR 78.0, TimeSformer-L 81.0.

Hardware, the recipe and what differs from the paper, shared by every TimeSformer config:
configs/families/timesformer.py.
"""

import ml_collections

from vidtx.configs import common
from vidtx.configs.families import timesformer


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="base")
  config = timesformer.timesformer_recipe("diving48", variant=args.variant)
  return common.finish(config, args)
