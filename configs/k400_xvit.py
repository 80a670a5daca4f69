r"""X-ViT-B/16 on Kinetics-400: 8 frames of 224x224, 400 classes (Bulat et al., NeurIPS 2021).

  python train.py --config=configs/k400_xvit.py --workdir=runs/k400_xvit \
      --config.dataset_configs.base_dir=/data/k400 \
      --config.init_from.checkpoint_path=ckpt/vit_b16_in21k
  python train.py --config=configs/k400_xvit.py:attention=tsm --workdir=runs/k400_tsm_vit \
      --config.dataset_configs.base_dir=/data/k400
  python train.py --config=configs/k400_xvit.py:frames=16,shrink=1 --workdir=/tmp/xvit_smoke
  python -m vidtx.tools.complexity --config=configs/k400_xvit.py

Arguments: attention=space_time_mixing|tsm (default space_time_mixing; tsm is the supplementary's
TSM-ViT baseline); frames=8|16 (default 8: 8 frames at a rate of 1/32; 16: the released configs'
16 at 1/16, the same 8.5 s); shrink=1 (a seconds-long CPU smoke test of the recipe:
configs.common.shrink). The model is described in vidtx.models.xvit: space-time mixing in every
block (1/4 of the key/value channels from frames t - 1 and t + 1, the released SHIFT_DIV 8), a
one-layer temporal-attention head over the per-frame class tokens and an MLP head.

Recipe, from the released Kinetics config (configs/Kinetics/xvit_B16_16x16_k400.yaml of
github.com/1adrianb/video-transformers): SGD with Nesterov momentum 0.9, learning rate 0.03 for
batch 64 with cosine decay over 30 epochs after 5 warm-up epochs, weight decay 1e-5, label
smoothing 0.3 (their smooth_cross_entropy), mixup alpha 0.4, dropout 0.5 before and inside the
head, no stochastic depth, frames normalised with mean 0.5 and std 0.5, short side in [256, 320],
random 224 crop, flips; evaluation on 1 clip x 3 crops of frames resized to 224 (supplementary,
"Effect of the number of crops"), logits summed. Details, the hardware and the differences from
the release (no AutoAugment in vidtx; initialisation from ImageNet-21K ViT-B/16 needed for the
paper's accuracy): configs.common.xvit_recipe. On Kinetics-400 the supplementary finds no gain
beyond 2 x 3 views (--config.dataset_configs.num_test_clips=2).

Hardware: the released configs train on 8 GPUs (NUM_GPUS 8) with batch 64; the supplementary
times X-ViT at 12 videos/s on 8 V100s (Table 1).

Expected: the supplementary gives no Kinetics-400 top-1 in its text (its Fig. 1 plots it against
the number of temporal views; the main paper's K400 table is the reference). For scale, the
released 16-frame X-ViT-B/16 reaches 84.51% top-1 on Kinetics-600 (3 x 1 views, README), and on
SSv2 the supplementary's TSM-ViT baseline with TSM's average aggregation reaches 60.8% (Table 2).
Parameters: 93,793,168 (93.8 M; tested); multiply-adds are those of ViT-B/16 on 8 frames
(REFERENCE: 17.6 G per 224 frame, so about 141 G per view, 423 G for 1 x 3 views).
"""

import ml_collections

from vidtx.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, attention="space_time_mixing", frames="8")
  common.check_choice("frames", args.frames, common.XVIT_FRAMES)
  config = common.xvit_recipe("k400", attention=args.attention, num_frames=int(args.frames))
  return common.finish(config, args)
