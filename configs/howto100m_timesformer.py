r"""TimeSformer on HowTo100M long-term task classification (Bertasius et al., 2021, §4.6, Table 8).

  python train.py --config=configs/howto100m_timesformer.py:frames=96 --workdir=runs/ht100m_96 \
      --config.dataset_configs.base_dir=/data/howto100m_tasks \
      --config.init_from.checkpoint_path=runs/k400_timesformer
  python train.py --config=configs/howto100m_timesformer.py:frames=8,shrink=1 --workdir=/tmp/smoke

Arguments: frames=8|32|64|96 (default 8): clips of that many 224 x 224 frames at a rate of 1/32,
spanning 8.5, 34.1, 68.3 or 102.4 s (Table 8); shrink=1 (a seconds-long CPU smoke test of the
recipe: configs.common.shrink). Divided space-time attention, ViT-Base; clips of 32 frames and
more rematerialise their blocks (model.remat_policy='full').

Task (§4.6): predict which of the HowTo100M tasks an instructional video (about 7 minutes on
average) demonstrates, from the video's task label: the 1,059 tasks with at least 100 videos,
120K videos split at random into 85K for training and 35K for testing (build your own split and
shards; the split sizes here are the paper's). One label per video.

Training: a random clip of the video per step (PySlowFast sampling, train_sampling='timesformer';
frame rate from the records, else dataset_configs.frame_rate); the schedule of the paper's other
experiments (supplementary §1: 15 epochs of SGD with momentum 0.9, weight decay 1e-4, batch 16,
lr 0.005 divided by 10 at epochs 11 and 14), as §4.6 gives none of its own. Start from the
Kinetics-400 TimeSformer (Table 8: "All models ... are pretrained on Kinetics-400"): pass its run
directory (or converted checkpoint) to --config.init_from.checkpoint_path; the time embedding is
resized to the clip length and the head re-initialised for 1,059 classes.

Evaluation (§4.6): "as many non-overlapping temporal clips as needed to cover the full temporal
extent of a video" (eval_sampling='whole_video': 48 clips of 8.5 s for a 410 s video), centre
crops of frames resized to 224, and the clip predictions averaged
(eval_aggregation='mean_softmax'). Other details, the hardware and the differences from the
paper: configs.common.timesformer_recipe. Approximations: the training schedule (above), one
centre crop per clip (the paper does not say how many spatial crops it takes here; 3 would
triple the cost of 48-clip videos), and the softmax average (the paper's "averaging the clip
predictions"; top-1 is the same with summed logits when every view is a clip).

Hardware: the paper's 32 GPUs. 96-frame clips need 80 GB GPUs even with rematerialisation at
a few clips per GPU; --config.grad_accum_steps keeps batch 16 on fewer.

Expected (Table 8, top-1 on the 35K test videos, K400 pretraining): 8 frames 56.8 (48 test clips
on average), 32 frames 61.2 (12), 64 frames 62.2 (6), 96 frames 62.6 (4); SlowFast R101 48.2,
50.8, 51.5, 51.2. Straight from ImageNet (§4.6): ImageNet-1K 52.8, 58.4, 59.2, 59.4;
ImageNet-21K 56.0, 59.2, 60.2, 62.1 for 8, 32, 64, 96 frames.
"""

import ml_collections

from vidtx.configs import common

FRAMES = ("8", "32", "64", "96")  # Table 8


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, frames="8")
  common.check_choice("frames", args.frames, FRAMES)
  config = common.timesformer_recipe("howto100m", num_frames=int(args.frames))
  config.experiment_name = f"howto100m_timesformer_{args.frames}f"
  # Whole videos: consecutive clips of the training geometry, 4 per element, one centre crop.
  config.dataset_configs.update(
    eval_sampling="whole_video", num_test_clips=4, do_three_spatial_crops=False
  )
  config.eval_aggregation = "mean_softmax"
  return common.finish(config, args)
