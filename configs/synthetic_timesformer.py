r"""TimeSformer on the embedded synthetic motion task, CPU-sized: the Quickstart's config.

  python train.py --config=configs/synthetic_timesformer.py --workdir=runs/ts_divided
  python train.py --config=configs/synthetic_timesformer.py:attention=space --workdir=runs/ts_space
  python train.py --config=configs/synthetic_timesformer.py:shrink=1 --workdir=/tmp/ts_smoke

Arguments: attention=divided|space|joint|local_global|axial|space_first|parallel (default
divided), task=motion|rotation|order|appearance (default motion), shrink=1 (one layer, 2 steps
on 8 tiny videos: configs.common.shrink). 32 x 32 crops make a 4 x 4 grid of 8 x 8 patches, so
local_global's 2 x 2 windows and stride-2 global groups apply as at 224. The temporal parts start
random (model.temporal_init='random'), as training starts from scratch.
Results of every scheme: README.md (Quickstart) and docs/models.md.
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
