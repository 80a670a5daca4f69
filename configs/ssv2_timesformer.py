r"""TimeSformer on Something-Something-V2, one frame per segment: TimeSformer (arXiv:2102.05095).

  python train.py --config=configs/ssv2_timesformer.py --workdir=runs/ssv2_timesformer \
      --config.dataset_configs.base_dir=/data/ssv2 \
      --config.init_from.checkpoint_path=ckpt/vit_b16_in1k
  python train.py --config=configs/ssv2_timesformer.py:attention=space --workdir=runs/ssv2_space \
      --config.dataset_configs.base_dir=/data/ssv2
  python train.py --config=configs/ssv2_timesformer.py:variant=HR,shrink=1 --workdir=/tmp/smoke

Arguments: attention=divided|space|joint|local_global|axial|space_first|parallel (default
divided); variant=base|HR|L (default base: 8 x 224 x 224; HR: 16 x 448 x 448; L: 64 x 224 x 224,
as the official SSv2 config); shrink=1 (a seconds-long CPU smoke test of the recipe:
configs.common.shrink). Starts from an ImageNet-1K ViT-B/16 (§4.5: 21K does not help on SSv2);
Table 1's ablations start from ImageNet-21K.

Expected (SSv2 validation top-1):
- Table 1 (ImageNet-21K, base): divided 59.5, joint 58.5, space 36.6, local_global 56.3,
  axial 56.2; supplementary: space_first 0.5 and parallel 0.4 below divided.
- Table 7 (ImageNet-1K, divided): TimeSformer-HR 62.2, TimeSformer-L 62.4 (Table 3, ImageNet-21K:
  59.5, 62.5, 62.3).

Hardware, the recipe and what differs from the paper, shared by every TimeSformer config:
configs/families/timesformer.py.
"""

import ml_collections

from vidtx.configs import common
from vidtx.configs.families import timesformer


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, attention="divided", variant="base")
  config = timesformer.timesformer_recipe("ssv2", variant=args.variant, attention=args.attention)
  return common.finish(config, args)
