r"""X-ViT on the embedded synthetic motion task, CPU-sized.

  python train.py --config=configs/synthetic_xvit.py --workdir=runs/xvit
  python train.py --config=configs/synthetic_xvit.py:attention=tsm,aggregation=mean \
      --workdir=runs/tsm_vit
  python train.py --config=configs/synthetic_xvit.py:shrink=1 --workdir=/tmp/xvit_smoke

Arguments: attention=space_time_mixing|tsm (default space_time_mixing), aggregation=
temporal_attention|mean, summary_tokens=R (default 0: off), task=motion|rotation|order|
appearance, shrink=1 (a seconds-long smoke test: configs.common.shrink). Attention stays within
each frame; time enters through the 1/4 of the key/value channels (for tsm, of the block input)
borrowed from frames t +- 1, and through the temporal-attention head. Results: docs/models.md.
"""

import ml_collections

from vidtx.configs import common
from vidtx.errors import UserError
from vidtx.models import xvit


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(
    arg,
    attention="space_time_mixing",
    aggregation="temporal_attention",
    summary_tokens="0",
    task="motion",
  )
  common.check_attention(args.attention, xvit.ATTENTIONS)
  if not args.summary_tokens.isdigit():
    raise UserError(
      f"Config argument summary_tokens={args.summary_tokens!r}: expected an integer >= 0."
    )
  config = ml_collections.ConfigDict()
  config.experiment_name = f"synthetic_{args.task}_xvit_{args.attention}_{args.aggregation}"

  config.dataset_name = "synthetic"
  config.dataset_configs = common.synthetic_dataset(args.task)

  config.model_name = "xvit"
  config.model = common.cpu_model("xvit", "Ti/8")
  config.model.attention = args.attention
  config.model.aggregation = args.aggregation
  config.model.summary_tokens = int(args.summary_tokens)  # 16 patches: R in 1, 2, 4, 8, 16.
  config.model.mixing_fraction = 0.25  # 12 of 96 channels from t + 1, 12 from t - 1.

  common.training(config, batch_size=32, steps=1000, base_learning_rate=0.05, warmup_steps=100)
  config.eval_aggregation = "sum_logits"  # X-ViT sums the views' logits.
  return common.finish(config, args)
