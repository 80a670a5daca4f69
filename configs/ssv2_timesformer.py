r"""TimeSformer on Something-Something-V2: 174 classes, one frame per segment (Bertasius et al.).

  python train.py --config=configs/ssv2_timesformer.py --workdir=runs/ssv2_timesformer \
      --config.dataset_configs.base_dir=/data/ssv2 \
      --config.init_from.checkpoint_path=ckpt/vit_b16_in1k
  python train.py --config=configs/ssv2_timesformer.py:attention=space --workdir=runs/ssv2_space \
      --config.dataset_configs.base_dir=/data/ssv2
  python train.py --config=configs/ssv2_timesformer.py:variant=HR,shrink=1 --workdir=/tmp/smoke

Arguments: attention=divided|space|joint|local_global|axial|space_first|parallel (default
divided; Table 1's schemes and the supplementary's orders); variant=base|HR|L (default base:
TimeSformer, 8 x 224 x 224; HR: TimeSformer-HR, 16 x 448 x 448; L: TimeSformer-L, 64 x 224 x 224
here, as the official SSv2 config TimeSformer_divST_64_224); shrink=1 (a seconds-long CPU smoke
test of the recipe: configs.common.shrink).

Data: SSv2 as the official code reads it (configs/SSv2/TimeSformer_divST_8_224.yaml): the video
cut into as many equal segments as frames, one random frame from each for training and the
middle one for evaluation (dataset_configs.train_sampling = eval_sampling = 'segment'); no
flips (RANDOM_FLIP False: a flip mirrors "left to right" classes); short side in [256, 320]
([448, 512] for HR), random crop; the clip x 3 crops at evaluation, logits summed.

Recipe: the Kinetics-400 one (supplementary §1; the official SSv2 configs: 15 epochs of SGD with
momentum 0.9, weight decay 1e-4, batch 16, lr 0.005 divided by 10 at epochs 11 and 14).
Details, the hardware and the differences from the paper: configs.common.timesformer_recipe.
The paper's SSv2 models start from an ImageNet-1K ViT-B/16 (§4.5: 21K does not help on SSv2,
Table 3); Table 1's ablations start from ImageNet-21K.

Hardware: 32 GPUs in the paper; the official configs train on 8 GPUs. HR and L rematerialise
their blocks (model.remat_policy='full').

Expected (SSv2 validation top-1):
- Table 1 (ImageNet-21K, base): divided 59.5, joint 58.5, space 36.6, local_global 56.3,
  axial 56.2; supplementary: space_first 0.5 and parallel 0.4 below divided.
- Table 7 (ImageNet-1K, divided): TimeSformer 59.5, TimeSformer-HR 62.2, TimeSformer-L 62.4
  (Table 3 with ImageNet-21K: 59.5, 62.5, 62.3).
Parameters with this 174-class head (Table 1): divided 121.4 M, space and joint 85.9 M,
local_global 121.4 M, axial 156.8 M (tests/test_configs.py checks them).
"""

import ml_collections

from vidtx.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, attention="divided", variant="base")
  config = common.timesformer_recipe("ssv2", variant=args.variant, attention=args.attention)
  return common.finish(config, args)
