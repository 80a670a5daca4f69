"""Model hyper-parameters: sizes from a variant string, the fields every model has, validated once.

- `parse_variant`: 'B/16x2' -> ViT-Base sizes, 16x16 patches, tubelet length 2.
- `base_config`: the fields every model has, with their defaults (each model adds its own).
- `ModelConfig`: those fields validated and the sizes resolved; `make_config` builds it.

A field every model has is added here, in three neighbouring places: its default and comment
(base_config), its type (ModelConfig) and its check (make_config). A field of one model goes to
that model's default_config, config class and make_config.
"""

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from ml_collections import config_dict

from vidtx.errors import UserError
from vidtx.models import kernels

# ViT sizes: hidden size, depth, heads, MLP width (ViT paper Table 1; Ti and S from DeiT).
VIT_SIZES = {
  "Ti": dict(hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768),
  "S": dict(hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
  "B": dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
  "L": dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
  "H": dict(hidden_size=1280, num_layers=32, num_heads=16, mlp_dim=5120),
}

_VARIANT_RE = re.compile(r"^(?P<size>[A-Za-z]+)/(?P<patch>\d+)(?:x(?P<tubelet>\d+))?$")


def parse_variant(variant: str) -> dict[str, int]:
  """'B/16x2' -> ViT-Base sizes, 16x16 patches, tubelet length 2 ('B/16' = length 1)."""
  match = _VARIANT_RE.match(variant) if isinstance(variant, str) else None
  if match is None or match["size"] not in VIT_SIZES:
    raise UserError(
      f'model.variant={variant!r}: expected "<size>/<patch>[x<tubelet>]" with size in '
      f'{list(VIT_SIZES)}, e.g. "B/16" or "B/16x2".'
    )
  patch_size = int(match["patch"])
  tubelet_size = int(match["tubelet"] or 1)
  if patch_size < 1 or tubelet_size < 1:
    raise UserError(f"model.variant={variant!r}: patch and tubelet sizes must be >= 1.")
  return dict(VIT_SIZES[match["size"]], patch_size=patch_size, tubelet_size=tubelet_size)


def base_config() -> ml_collections.ConfigDict:
  """The fields every model has, with their defaults (the models add their own)."""
  return ml_collections.ConfigDict(
    dict(
      variant="B/16",
      # None: take the value from the variant. Typed placeholders, so that the command line can
      # set them (--config.model.hidden_size=384): a plain None field has no type to parse to.
      hidden_size=config_dict.placeholder(int),
      num_layers=config_dict.placeholder(int),
      num_heads=config_dict.placeholder(int),
      mlp_dim=config_dict.placeholder(int),
      attention="",  # Each model sets its own default and list of patterns.
      classifier="token",  # 'token': class token; 'gap': average of the tokens.
      dropout_rate=0.0,
      attention_dropout_rate=0.0,
      # Drop-path rate of the last layer; rises linearly from 0 at the first layer.
      stochastic_depth=0.0,
      gelu_approximate=False,  # False: exact erf GELU; True: tanh approximation.
      # ViT, TimeSformer, scenic and timm use 1e-6; Hugging Face ViT folders record 1e-12.
      layer_norm_epsilon=1e-6,
      dtype="float32",  # Compute dtype; parameters are always float32.
      # Recompute each block in the backward pass instead of keeping its activations: 'none',
      # 'full' (keep nothing; ~30% more compute, least memory), 'dots' (keep matmul outputs),
      # 'dots_no_batch' (keep matmul outputs without batch dims). See REMAT_POLICIES.
      remat_policy="none",
      # True: run the identical blocks of each stack under nn.scan (XLA compiles one block
      # instead of L: fast compiles for L/H models); parameters stacked under `encoderblocks`.
      scan_layers=False,
      # Kernel of the attention core: 'auto' (cuDNN flash attention on NVIDIA GPUs for
      # bfloat16 where it pays, Pallas splash attention on TPUs from 128 tokens, XLA
      # elsewhere), 'xla', 'cudnn' or 'splash' (forced; an error where it cannot run). See
      # kernels.choose_attention_implementation.
      attention_implementation="auto",
    )
  )


# model.remat_policy -> what a rematerialised block keeps for the backward pass (None: no remat).
REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.dots_saveable,
  "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Validated model hyper-parameters, sizes resolved from the variant."""

  variant: str
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  patch_size: int
  tubelet_size: int
  attention: str
  classifier: str
  dropout_rate: float
  attention_dropout_rate: float
  stochastic_depth: float
  gelu_approximate: bool
  layer_norm_epsilon: float
  dtype: str
  remat_policy: str
  scan_layers: bool
  attention_implementation: str


def make_config(
  config_cls: type,
  defaults: ml_collections.ConfigDict,
  overrides: ml_collections.ConfigDict | Mapping[str, Any],
  *,
  model_name: str,
  attentions: Iterable[str],
) -> Any:
  """Merges `overrides` into `defaults`, validates the common fields, returns config_cls.

  Model-specific fields are copied through; their model checks them.
  """
  if isinstance(overrides, ml_collections.ConfigDict):
    overrides = overrides.to_dict()
  fields = defaults.to_dict()
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise UserError(
      f"{model_name} model config: unknown field(s) {unknown}; known fields: {sorted(fields)}."
    )
  fields.update(overrides)

  sizes = parse_variant(fields["variant"])
  for key in ("hidden_size", "num_layers", "num_heads", "mlp_dim"):
    if fields[key] is None:
      fields[key] = sizes[key]
    if not is_int(fields[key]) or fields[key] < 1:
      raise UserError(f"model.{key}={fields[key]!r}: expected a positive integer.")
  fields["patch_size"] = sizes["patch_size"]
  fields["tubelet_size"] = sizes["tubelet_size"]
  if fields["hidden_size"] % fields["num_heads"]:
    raise UserError(
      f"model.hidden_size={fields['hidden_size']} is not divisible by "
      f"model.num_heads={fields['num_heads']}."
    )

  attentions = list(attentions)
  if fields["attention"] not in attentions:
    raise UserError(
      f"model.attention={fields['attention']!r} is not a {model_name} "
      f"attention; expected one of {attentions}."
    )
  if fields["classifier"] not in ("token", "gap"):
    raise UserError(f'model.classifier={fields["classifier"]!r}: expected "token" or "gap".')
  for key in ("dropout_rate", "attention_dropout_rate", "stochastic_depth"):
    rate = fields[key]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
      raise UserError(f"model.{key}={rate!r}: expected a number in [0, 1).")
    fields[key] = float(rate)
  if not isinstance(fields["gelu_approximate"], bool):
    raise UserError(
      f"model.gelu_approximate={fields['gelu_approximate']!r}: expected True or False."
    )
  eps = fields["layer_norm_epsilon"]
  if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1e-2:
    raise UserError(f"model.layer_norm_epsilon={eps!r}: expected a small positive number.")
  fields["layer_norm_epsilon"] = float(eps)
  if fields["dtype"] not in ("float32", "bfloat16"):
    raise UserError(f'model.dtype={fields["dtype"]!r}: expected "float32" or "bfloat16".')
  if not isinstance(fields["remat_policy"], str) or fields["remat_policy"] not in REMAT_POLICIES:
    raise UserError(
      f"model.remat_policy={fields['remat_policy']!r}: expected one of {list(REMAT_POLICIES)}."
    )
  if not isinstance(fields["scan_layers"], bool):
    raise UserError(f"model.scan_layers={fields['scan_layers']!r}: expected True or False.")
  kernels.check_attention_implementation(fields["attention_implementation"])
  return config_cls(**fields)


def is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
