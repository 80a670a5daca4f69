r"""ViViT on the embedded synthetic motion task, CPU-sized; Model 2 (factorised encoder) by default.

  python train.py --config=configs/synthetic_vivit_fe.py --workdir=runs/vivit_fe
  python train.py --config=configs/synthetic_vivit_fe.py:attention=spatio_temporal \
      --workdir=runs/vivit_st
  python train.py --config=configs/synthetic_vivit_fe.py:shrink=1 --workdir=/tmp/vivit_smoke

Arguments: attention=factorised_encoder|spatio_temporal|factorised_self_attention|
factorised_dot_product (Models 2, 1, 3, 4), task=motion|rotation|order|appearance, shrink=1 (a
seconds-long smoke test: configs.common.shrink). Tubelets of 2 frames. Model 2: 3 spatial and 2
temporal layers; Models 1, 3, 4: 4 layers, Models 3 and 4 classifying the average token.
Results: docs/models.md.
"""

import ml_collections

from vidtx.configs import common
from vidtx.models import vivit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, attention="factorised_encoder", task="motion")
  common.check_attention(args.attention, vivit.ATTENTIONS)
  config = ml_collections.ConfigDict()
  short = {
    "factorised_encoder": "fe",
    "spatio_temporal": "st",
    "factorised_self_attention": "fsa",
    "factorised_dot_product": "fdp",
  }[args.attention]
  config.experiment_name = f"synthetic_{args.task}_vivit_{short}"

  config.dataset_name = "synthetic"
  config.dataset_configs = common.synthetic_dataset(args.task)

  config.model_name = "vivit"
  config.model = common.cpu_model("vivit", "Ti/8x2")
  config.model.attention = args.attention
  if args.attention == "factorised_encoder":
    config.model.spatial_layers = 3
    config.model.temporal_layers = 2
  if args.attention in vivit.GAP_ONLY:
    config.model.classifier = "gap"

  common.training(config, batch_size=32, steps=1000, base_learning_rate=0.05, warmup_steps=100)
  return common.finish(config, args)
