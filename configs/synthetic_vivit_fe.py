r"""ViViT Model 2 (factorised encoder) on the embedded synthetic motion task, CPU-sized.

  python train.py --config=configs/synthetic_vivit_fe.py --workdir=runs/vivit_fe

Argument: task=motion|rotation|order|appearance. Tubelets of 2 frames (ViViT's 'x2'), a spatial
encoder per tubelet index and a temporal encoder over their class tokens.
"""

import ml_collections

from configs import common
from vidtx import models


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, task="motion")
  config = ml_collections.ConfigDict()
  config.experiment_name = f"synthetic_{args.task}_vivit_fe"

  config.dataset_name = "synthetic"
  config.dataset_configs = common.synthetic_dataset(args.task)

  config.model_name = "vivit"
  config.model = models.default_config("vivit")
  config.model.variant = "Ti/8x2"
  config.model.hidden_size = 96
  config.model.num_heads = 4
  config.model.mlp_dim = 384
  config.model.spatial_layers = 3
  config.model.temporal_layers = 2

  common.training(config, batch_size=32, steps=1000, base_learning_rate=0.05, warmup_steps=100)
  return config
