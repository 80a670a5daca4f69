r"""X-ViT-B/16 on Kinetics-600, 16 frames of 224 x 224: X-ViT (arXiv:2106.05968).

  python train.py --config=configs/k600_xvit.py --workdir=runs/k600_xvit \
      --config.dataset_configs.base_dir=/data/k600 \
      --config.init_from.checkpoint_path=ckpt/vit_b16_in21k
  python train.py --config=configs/k600_xvit.py:frames=8 --workdir=runs/k600_xvit_8f \
      --config.dataset_configs.base_dir=/data/k600
  python train.py --config=configs/k600_xvit.py:shrink=1 --workdir=/tmp/k600_xvit_smoke

Arguments: attention=space_time_mixing|tsm (default space_time_mixing); frames=16|8 (default 16 at
a rate of 1/16, the released model; 8 at 1/32, the same 8.5 s); shrink=1 (a seconds-long CPU
smoke test of the recipe: configs.common.shrink).

Expected (Kinetics-600 validation, the release's README for this 16-frame model,
github.com/1adrianb/video-transformers): 84.51% top-1, 96.26% top-5 on 1 clip x 3 crops;
84.71% / 96.39% on 2 x 3 views (--config.dataset_configs.num_test_clips=2).

Hardware, the recipe and what differs from the release, shared by every X-ViT config:
configs/families/xvit.py.
"""

import ml_collections

from vidtx.configs import common
from vidtx.configs.families import xvit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, attention="space_time_mixing", frames="16")
  common.check_choice("frames", args.frames, xvit.XVIT_FRAMES)
  config = xvit.xvit_recipe("k600", attention=args.attention, num_frames=int(args.frames))
  return common.finish(config, args)
