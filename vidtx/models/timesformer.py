"""TimeSformer (Bertasius et al., 2021, "Is Space-Time Attention All You Need ...").

Frames are embedded as ViT patches; a class token and a spatial positional embedding
(N + 1 entries, shared by all frames) are added as in ViT, plus a zero-initialised time
embedding on the patch tokens. Each block mixes tokens with the configured space-time
attention scheme, then applies the MLP. The final LayerNorm'd class token is classified.

Schemes (`model.attention`):
- 'divided' (T+S): temporal attention over the patch tokens at each spatial location (the
  class token does not take part) -> `temporal_fc` (zero-initialised, so the block starts
  as an image ViT block) -> residual; then spatial attention within each frame, with the
  class token copied into every frame and its T updates averaged; then the MLP.
- 'space' (S): an image ViT applied to every frame (each frame has its own copy of the
  class token, no time embedding); all tokens are averaged over frames before the final
  LayerNorm, as in the official code.

Parameters: embedding, cls, pos_embedding, time_embedding ('divided' only),
encoderblock_{i}/{norm_temporal, attention_temporal, temporal_fc, norm_spatial,
attention_spatial, norm_mlp, mlp}, encoder_norm, head. The spatial/MLP names are the same
for both schemes, so an image ViT or a space-only model maps onto a divided one by name.
"""

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vidtx.models import attention, common, tokenizer

Tokens = tuple[jax.Array, jax.Array | None]


def default_config() -> ml_collections.ConfigDict:
  """TimeSformer-B/16 with divided space-time attention, as released."""
  config = common.base_config()
  config.variant = "B/16"
  config.attention = "divided"
  config.stochastic_depth = 0.1  # Hard-coded in the official model.
  config.gelu_approximate = False  # Official and Hugging Face use exact GELU.
  # 'image' (official): time embedding and temporal_fc start at zero, so with image-ViT weights
  # the model starts as the image model. 'random' (time embedding normal(0.5), temporal_fc
  # xavier) for training from scratch: at the zero start every block is blind to frame order
  # and the gated temporal branch gets almost no gradient, a point training does not leave.
  config.temporal_init = "image"
  return config


@dataclasses.dataclass(frozen=True)
class TimeSformerConfig(common.ModelConfig):
  """ModelConfig plus the initialisation of the time embedding."""

  temporal_init: str


# model.temporal_init -> (time embedding init, temporal_fc kernel init).
_TEMPORAL_INITS = {
  "image": (nn.initializers.zeros, nn.initializers.zeros),
  # std 0.5: the scale of freshly embedded patch tokens, so frame order is visible from step 0.
  # (ViT's 0.02 is too faint here: the model learns the order-free shortcut first and stays.)
  "random": (nn.initializers.normal(0.5), nn.initializers.xavier_uniform()),
}


def make_config(overrides: ml_collections.ConfigDict | Mapping[str, Any]) -> TimeSformerConfig:
  config = common.make_config(
    TimeSformerConfig, default_config(), overrides, model_name="timesformer", attentions=ATTENTIONS
  )
  if config.temporal_init not in _TEMPORAL_INITS:
    raise ValueError(
      f"model.temporal_init={config.temporal_init!r}: expected one of "
      f"{sorted(_TEMPORAL_INITS)}."
    )
  if config.tubelet_size != 1:
    raise ValueError(
      f"model.variant={config.variant!r}: TimeSformer embeds single frames; "
      'use a variant without a tubelet length, e.g. "B/16".'
    )
  return config


# ----------------------------------------------------------------------------------------
# Token mixing stages. Each runs inside TimeSformerBlock's compact call and maps patch
# tokens x (B, T, N, D) and the class token cls (B, 1, D) or None to updated ones.
# ----------------------------------------------------------------------------------------


def _temporal_stage(
  x: jax.Array, *, config: common.ModelConfig, drop_path_rate: float, deterministic: bool
) -> jax.Array:
  """Temporal attention over the patch tokens, projected by temporal_fc, residual."""
  attend = functools.partial(
    common.attention_module(config, "attention_temporal"), deterministic=deterministic
  )
  y = attention.temporal_attention(attend, common.layer_norm(config, "norm_temporal")(x))
  y = common.regularise_branch(
    y, dropout_rate=config.dropout_rate, drop_path_rate=drop_path_rate, deterministic=deterministic
  )
  # Zero-initialised by default: the temporal branch is off at initialisation (official code).
  y = nn.Dense(
    x.shape[-1],
    dtype=jnp.dtype(config.dtype),
    kernel_init=_TEMPORAL_INITS[config.temporal_init][1],
    name="temporal_fc",
  )(y)
  return x + y


def _spatial_stage(
  x: jax.Array,
  cls: jax.Array | None,
  *,
  config: common.ModelConfig,
  drop_path_rate: float,
  deterministic: bool,
) -> Tokens:
  """Attention within each frame; the class token joins every frame."""
  b, t, n, d = x.shape
  if cls is not None:
    # (B, 1, D) -> (B, T, 1, D) copies, prepended in every frame: (B, T, 1+N, D)
    copies = jnp.broadcast_to(cls[:, None], (b, t, 1, d))
    x = jnp.concatenate([copies, x], axis=2)
  attend = functools.partial(
    common.attention_module(config, "attention_spatial"), deterministic=deterministic
  )
  y = attention.spatial_attention(attend, common.layer_norm(config, "norm_spatial")(x))
  y = common.regularise_branch(
    y, dropout_rate=config.dropout_rate, drop_path_rate=drop_path_rate, deterministic=deterministic
  )
  if cls is None:
    return x + y, None
  # The class token's T per-frame updates are averaged: (B, T, D) -> (B, 1, D)
  cls = cls + jnp.mean(y[:, :, 0], axis=1, keepdims=True)
  return x[:, :, 1:] + y[:, :, 1:], cls


def _divided(x, cls, **kwargs) -> Tokens:
  return _spatial_stage(_temporal_stage(x, **kwargs), cls, **kwargs)


def _space(x, cls, **kwargs) -> Tokens:
  return _spatial_stage(x, cls, **kwargs)


# model.attention -> token mixing of one block. A new scheme is one function here.
_MIXERS = {"divided": _divided, "space": _space}
ATTENTIONS = tuple(_MIXERS)
# Schemes that process every frame as an independent image (no time embedding, one class
# token per frame, frames averaged at the end).
_PER_FRAME = ("space",)


class TimeSformerBlock(nn.Module):
  """Space-time token mixing (config.attention), then the MLP.

  x: patch tokens (B, T, N, D); cls: class token (B, 1, D), or None when there is none
  or it is part of x (space-only model).
  """

  config: common.ModelConfig
  drop_path_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, cls: jax.Array | None, *, deterministic: bool) -> Tokens:
    config = self.config
    x, cls = _MIXERS[config.attention](
      x, cls, config=config, drop_path_rate=self.drop_path_rate, deterministic=deterministic
    )
    b, t, n, d = x.shape
    # (B, T, N, D) -> (B, T*N, D), with the class token in front: (B, 1+T*N, D).
    # One sequence so that stochastic depth drops the class token with its example.
    tokens = x.reshape(b, t * n, d)
    if cls is not None:
      tokens = jnp.concatenate([cls, tokens], axis=1)
    y = common.mlp_module(config)(
      common.layer_norm(config, "norm_mlp")(tokens), deterministic=deterministic
    )
    tokens = tokens + common.DropPath(self.drop_path_rate)(y, deterministic=deterministic)
    if cls is not None:
      cls, tokens = tokens[:, :1], tokens[:, 1:]
    # (B, T*N, D) -> (B, T, N, D)
    return tokens.reshape(b, t, n, d), cls


class TimeSformer(nn.Module):
  """TimeSformer classifier: video (B, T, H, W, C) -> logits (B, num_classes), outputs.

  outputs: 'pre_logits' (B, D), float32; 'encoded_tokens' (B, T, N, D), the last block's
  patch tokens (before the final LayerNorm and, for 'space', before averaging frames).
  """

  config: TimeSformerConfig
  num_classes: int

  @nn.compact
  def __call__(self, video: jax.Array, *, train: bool) -> tuple[jax.Array, dict]:
    config = self.config
    dtype = jnp.dtype(config.dtype)
    deterministic = not train
    per_frame = config.attention in _PER_FRAME
    use_cls = config.classifier == "token"

    x = tokenizer.frame_embedding(
      video, hidden_size=config.hidden_size, patch_size=config.patch_size, dtype=dtype
    )
    b, t, n, d = x.shape
    if use_cls:
      cls = common.class_token(self, "cls", d).astype(x.dtype)
      # (1, 1, D) -> (B, T, 1, D); tokens (B, T, 1+N, D)
      x = jnp.concatenate([jnp.broadcast_to(cls[:, None], (b, t, 1, d)), x], axis=2)
    # One spatial embedding (class token first) shared by all frames.
    x = common.AddPositionEmbedding(axis=2, name="pos_embedding")(x)

    cls = None
    if not per_frame:
      if use_cls:
        # Every frame holds the same class token; keep it apart: (B, 1, D).
        cls, x = x[:, 0, :1], x[:, :, 1:]
      x = common.AddPositionEmbedding(
        axis=1,
        embedding_init=_TEMPORAL_INITS[config.temporal_init][0],
        name="time_embedding",
      )(x)
      if cls is not None:
        cls = nn.Dropout(config.dropout_rate)(cls, deterministic=deterministic)
    x = nn.Dropout(config.dropout_rate)(x, deterministic=deterministic)

    rates = common.drop_path_rates(config.stochastic_depth, config.num_layers)
    for i, rate in enumerate(rates):
      x, cls = TimeSformerBlock(config, rate, name=f"encoderblock_{i}")(
        x, cls, deterministic=deterministic
      )

    if per_frame:
      # Official space-only model: average all tokens over frames, then normalise.
      encoded = x[:, :, 1:] if use_cls else x
      x = jnp.mean(x, axis=1, keepdims=True)  # (B, T, N', D) -> (B, 1, N', D)
      if use_cls:
        cls, x = x[:, 0, :1], x[:, :, 1:]
    else:
      encoded = x
    norm = common.layer_norm(config, "encoder_norm")
    if use_cls:
      pre_logits = norm(cls)[:, 0]  # (B, 1, D) -> (B, D)
    else:
      pre_logits = jnp.mean(norm(x), axis=(1, 2))  # (B, T, N, D) -> (B, D)
    pre_logits = pre_logits.astype(jnp.float32)
    logits = common.classification_head(pre_logits, self.num_classes)
    return logits, {"pre_logits": pre_logits, "encoded_tokens": encoded}
