"""The stack of blocks every model runs, and the plain pre-LN ViT encoder.

- `stack_blocks`: THE loop over a stack of identical blocks, used by every model, which applies
  the two memory/compile-time options of the config:
  - `model.remat_policy` ('none' | 'full' | 'dots' | 'dots_no_batch', see
    hparams.REMAT_POLICIES): rematerialise each block in the backward pass; trades extra
    compute (about 30% more for 'full') for activation memory (long clips, large models).
  - `model.scan_layers`: run the blocks of a stack under `nn.scan`, so XLA compiles one block
    instead of L (faster compiles for L/H models, same maths). The stack's parameters then live
    under one name `encoderblocks` with a leading layer axis instead of `encoderblock_{i}`;
    vidtx.checkpoints.scan converts between the two layouts.
- `drop_path_rates`: stochastic depth rising linearly with depth.
- `EncoderBlock`, `Encoder`: a pre-LN ViT encoder whose attention pattern (see attention.py) is a
  parameter.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidtx.models import attention, hparams, layers


def drop_path_rates(rate: float, num_layers: int) -> list[float]:
  """Per-layer drop-path rates rising linearly from 0 at the first layer to `rate` at the last.

  Linear in depth as ViViT Eq. 10; indexed from 0 as in the official TimeSformer and scenic.
  """
  return [rate * i / max(num_layers - 1, 1) for i in range(num_layers)]


def stack_blocks(
  block: type[nn.Module],
  carry: Any,
  *,
  config: hparams.ModelConfig,
  num_layers: int,
  deterministic: bool,
  **fields: Any,
) -> Any:
  """`num_layers` blocks `block(config=config, **fields)` one after the other on `carry`.

  Call inside a compact method; the blocks become its children. Every block follows one
  protocol: `carry = block(carry, drop_path_rate, deterministic)`, all positional (remat makes
  Python arguments static by position). `carry` is any pytree: tokens x, or TimeSformer's
  (x, cls) with cls possibly None. Layer i's drop-path rate is
  drop_path_rates(config.stochastic_depth, num_layers)[i].

  - config.scan_layers False: children `encoderblock_0` .. `encoderblock_{L-1}`; the rates are
    Python floats.
  - config.scan_layers True: one child `encoderblocks` run under nn.scan; its parameters (and
    sown intermediates, e.g. attention maps) have a leading axis of length L, the 'params' and
    'dropout' rngs are split per layer. The rates are a scanned (L,) array input; without
    stochastic depth a broadcast Python 0.0, so that no layer asks for a 'dropout' rng for it.
  - config.remat_policy other than 'none': each block is wrapped in nn.remat with the policy of
    hparams.REMAT_POLICIES.
  """
  rates = drop_path_rates(config.stochastic_depth, num_layers)
  # Traced rates only where they must be: scanned layers with stochastic depth.
  traced_rates = config.scan_layers and config.stochastic_depth > 0
  if config.remat_policy != "none":
    block = nn.remat(
      block,
      policy=hparams.REMAT_POLICIES[config.remat_policy],
      # Inside scan the loop already keeps XLA from merging the recomputation away.
      prevent_cse=not config.scan_layers,
      # Positions count self: 1 carry, 2 drop_path_rate, 3 deterministic.
      static_argnums=(3,) if traced_rates else (2, 3),
    )
  # Block boundaries pin their tokens (B, ..., L, D) to ('batch', 'length', 'embed') under
  # config.mesh.rules, so the compiler moves weights to the tokens, not tokens to the weights.
  pin = functools.partial(jax.tree.map, layers.constrain_tokens)
  carry = pin(carry)
  if not config.scan_layers:
    for i, rate in enumerate(rates):
      block_i = block(config=config, **fields, name=f"encoderblock_{i}")
      carry = pin(block_i(carry, rate, deterministic))
    return carry

  def body(module: nn.Module, carry: Any, rate: jax.Array | float) -> tuple[Any, None]:
    return pin(module(carry, rate, deterministic)), None

  scan = nn.scan(
    body,
    variable_axes={"params": 0, "intermediates": 0},
    split_rngs={"params": True, "dropout": True},
    in_axes=0 if traced_rates else nn.broadcast,
    length=num_layers,
    # The parameters' new leading axis is the logical axis 'layers'.
    metadata_params={nn.PARTITION_NAME: "layers"},
  )
  # (L,) rates, one per scan step.
  scanned = jnp.asarray(rates, jnp.float32) if traced_rates else 0.0
  carry, _ = scan(block(config=config, **fields, name="encoderblocks"), carry, scanned)
  return carry


class EncoderBlock(nn.Module):
  """Pre-LN transformer block; `pattern` (attention.py) decides who attends to whom.

  x = x + DropPath(Dropout(pattern(Attention, LN(x)))); x = x + DropPath(MLP(LN(x))).
  Tokens may have any layout the pattern accepts, e.g. (B, L, D) or (B, T, N, D).
  Called as `stack_blocks` calls blocks: block(x, drop_path_rate, deterministic).
  """

  config: hparams.ModelConfig
  pattern: Callable[..., jax.Array] = attention.joint_attention

  @nn.compact
  def __call__(
    self, x: jax.Array, drop_path_rate: float | jax.Array, deterministic: bool
  ) -> jax.Array:
    config = self.config
    regularise = functools.partial(
      layers.regularise_branch,
      dropout_rate=config.dropout_rate,
      drop_path_rate=drop_path_rate,
      deterministic=deterministic,
    )
    attend = functools.partial(
      layers.attention_module(config, "attention"), deterministic=deterministic
    )
    y = self.pattern(attend, layers.layer_norm(config, "norm_attention")(x))
    x = x + regularise(y)
    y = layers.mlp_module(config)(
      layers.layer_norm(config, "norm_mlp")(x), deterministic=deterministic
    )
    return x + layers.DropPath(drop_path_rate)(y, deterministic=deterministic)


class Encoder(nn.Module):
  """`num_layers` EncoderBlocks with linearly rising stochastic depth, then LayerNorm."""

  config: hparams.ModelConfig
  num_layers: int
  pattern: Callable[..., jax.Array] = attention.joint_attention

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    x = stack_blocks(
      EncoderBlock,
      x,
      config=self.config,
      num_layers=self.num_layers,
      deterministic=deterministic,
      pattern=self.pattern,
    )
    return layers.layer_norm(self.config, "encoder_norm")(x)
