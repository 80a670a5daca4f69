r"""X-ViT-B/16 on Something-Something-V2, 16 frames: X-ViT (arXiv:2106.05968).

  python train.py --config=configs/ssv2_xvit.py --workdir=runs/ssv2_xvit \
      --config.dataset_configs.base_dir=/data/ssv2 \
      --config.init_from.checkpoint_path=ckpt/vit_b16_in21k
  python train.py --config=configs/ssv2_xvit.py:attention=tsm --workdir=runs/ssv2_tsm_vit \
      --config.dataset_configs.base_dir=/data/ssv2
  python train.py --config=configs/ssv2_xvit.py:shrink=1 --workdir=/tmp/ssv2_xvit_smoke

Arguments: attention=space_time_mixing|tsm (default space_time_mixing; tsm: the supplementary's
TSM-ViT baseline); frames=16|8 (default 16, the released model); shrink=1 (a seconds-long CPU
smoke test of the recipe: configs.common.shrink). 1/2 of the key/value channels are mixed over
+-1 frame; one frame per segment; no flips; 2 x 3 views.

Expected (SSv2 validation): 67.19% top-1, 91.00% top-5 for this 16-frame model (the release's
README, github.com/1adrianb/video-transformers); the supplementary's TSM-ViT with TSM's average
aggregation reaches 60.8% (Table 2; attention=tsm with --config.model.aggregation=mean).

Hardware, the recipe and what differs from the release, shared by every X-ViT config:
configs/families/xvit.py.
"""

import ml_collections

from vidtx.configs import common
from vidtx.configs.families import xvit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, attention="space_time_mixing", frames="16")
  common.check_choice("frames", args.frames, xvit.XVIT_FRAMES)
  config = xvit.xvit_recipe("ssv2", attention=args.attention, num_frames=int(args.frames))
  return common.finish(config, args)
