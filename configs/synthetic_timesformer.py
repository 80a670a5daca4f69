r"""TimeSformer on the embedded synthetic motion task: trains in minutes on a 2-core CPU.

  python train.py --config=configs/synthetic_timesformer.py --workdir=runs/ts_divided
  python train.py --config=configs/synthetic_timesformer.py:attention=space --workdir=runs/ts_space

Argument: attention=divided|space|joint|local_global|axial|space_first|parallel (default
divided; see vidtx.models.timesformer), task=motion|rotation|order|appearance, shrink=1 (one
layer, 2 steps on 8 tiny videos: a seconds-long smoke test, configs.common.shrink).
Expected (README): divided >= 90% top-1 on the motion validation split; space-only attention
sees each frame alone and stays near chance (25%), the paper's Table 1 finding in miniature.
The 32x32 crops make a 4x4 grid of 8x8 patches over 8 frames, so local_global's 2x2 windows
and stride-2 global groups apply as at 224 (there 14x14 patches).
"""

import ml_collections

from vidtx.configs import common
from vidtx.models import timesformer


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, attention="divided", task="motion")
  common.check_attention(args.attention, timesformer.ATTENTIONS)
  config = ml_collections.ConfigDict()
  config.experiment_name = f"synthetic_{args.task}_timesformer_{args.attention}"

  config.dataset_name = "synthetic"
  config.dataset_configs = common.synthetic_dataset(args.task)

  config.model_name = "timesformer"
  config.model = common.cpu_model("timesformer", "Ti/8")
  config.model.attention = args.attention
  config.model.stochastic_depth = 0.0  # Tiny model, short run: nothing to regularise.
  config.model.temporal_init = "random"  # From scratch (see vidtx.models.timesformer).

  common.training(config, batch_size=32, steps=1000, base_learning_rate=0.05, warmup_steps=100)
  return common.finish(config, args)
