r"""TimeSformer on the embedded synthetic motion task: trains in minutes on a 2-core CPU.

  python train.py --config=configs/synthetic_timesformer.py --workdir=runs/ts_divided
  python train.py --config=configs/synthetic_timesformer.py:attention=space --workdir=runs/ts_space

Argument: attention=divided|space (default divided), task=motion|rotation|order|appearance.
Expected (README): divided >= 90% top-1 on the motion validation split; space-only attention
sees each frame alone and stays near chance (25%), the paper's Table 1 finding in miniature.
"""

import ml_collections

from configs import common
from vidtx import models


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, attention="divided", task="motion")
  config = ml_collections.ConfigDict()
  config.experiment_name = f"synthetic_{args.task}_timesformer_{args.attention}"

  config.dataset_name = "synthetic"
  config.dataset_configs = common.synthetic_dataset(args.task)

  config.model_name = "timesformer"
  config.model = models.default_config("timesformer")
  config.model.variant = "Ti/8"  # 8x8 patches: 4x4 = 16 tokens per 32x32 frame.
  config.model.hidden_size = 96
  config.model.num_layers = 4
  config.model.num_heads = 4
  config.model.mlp_dim = 384
  config.model.attention = args.attention
  config.model.stochastic_depth = 0.0  # Tiny model, short run: nothing to regularise.
  config.model.temporal_init = "random"  # From scratch (see vidtx.models.timesformer).

  common.training(config, batch_size=32, steps=1000, base_learning_rate=0.05, warmup_steps=100)
  return config
