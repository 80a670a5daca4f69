"""X-ViT (Bulat et al., 2021, "Space-time Mixing Attention for Video Transformer").

Frames are embedded as ViT patches; every frame gets its own copy of the class token, the
spatial positional embedding (N + 1 entries, shared by all frames) and a zero-initialised time
embedding (T entries, added to every token of a frame, class token included), as in the released
model (its `temp_embed`). Each block is a pre-LN ViT block whose attention is
`model.attention`:

- 'space_time_mixing' (X-ViT): the queries of frame t attend to the 1 + N tokens of frame t
  only (the cost of spatial attention), but the keys and values of frame t take some of their
  channels from the neighbouring frames. With C = D channels of keys (heads x head_dim, flattened
  head-major as the projection lays them out) and w = `model.mixing_window`, each of the 2w
  offsets +1, -1, +2, -2, ..., +w, -w gets floor(mixing_fraction * C / (2w)) consecutive
  channels, in that order from channel 0; channel block "+1" of frame t's keys is read from frame
  t + 1, "-1" from frame t - 1, and so on; the remaining channels are frame t's own. Frames
  outside the clip contribute zeros. Queries are not shifted. `model.mixing_fraction` is the
  fraction of mixed channels: the released code's divisor SHIFT_DIV = 8 (Kinetics) is 0.25 and
  SHIFT_DIV = 4 (SSv2) is 0.5 (it moves C // SHIFT_DIV channels from each of t + 1 and t - 1).
- 'tsm' (TSM-ViT, supplementary Eqs. 1-3): the same channel shift applied to the block input,
  in place (Z <- SHIFT(Z), then Z + MSA(LN(Z)), so the residual carries the shifted tokens),
  followed by ordinary spatial attention.

With mixing_fraction = 0 both are per-frame spatial attention (an image ViT on every frame).

Summary tokens (`model.summary_tokens` = R, 0 = off; paper Sec. 3.3, not in the released code):
in every block, R tokens per frame are made by average-pooling that frame's N patch tokens (the
LayerNorm'd block input; the class token excluded) over R consecutive groups of N / R tokens in
raster order (R = 1: the frame's mean; R dividing the patch rows: horizontal bands). Their keys
and values (unshifted) are appended, for all T frames, to the keys and values of every frame, so
each query attends to its own frame's 1 + N mixed keys plus T * R summaries. Projections are
affine, so this is computed as the mean of the projected keys and values.

Aggregation of the per-frame representations (the final LayerNorm'd class tokens, or the mean
of each frame's tokens for classifier 'gap'), after `model.head_dropout_rate` dropout:
- 'temporal_attention' (released 'vit' consensus): a temporal encoder of
  `model.temporal_layers` pre-LN blocks over [temporal_cls, frame_1..frame_T] (optional 1D
  positional embedding, `model.temporal_pos_embedding`; the released head has none), then a
  LayerNorm; its class token is the pre-logits. The released MLP head follows: Dense
  (`model.head_mlp_dim`, None = hidden_size as released, 0 = no hidden layer) -> GELU ->
  dropout (head_dropout_rate) -> Dense(num_classes).
- 'mean' (TSM's average consensus): the per-frame representations are averaged and classified
  by a linear head.

Differences from the released model: our attention projections all have biases (the released
head's temporal block has none: 3 * D fewer parameters); the head's final layer starts at zero
as in every vidtx model.

Parameters: embedding, cls, pos_embedding, time_embedding, encoderblock_{i}/{norm_attention,
attention, norm_mlp, mlp}, encoder_norm, then for 'temporal_attention' temporal_cls,
temporal_pos_embedding (optional), temporal_encoder/{encoderblock_i, encoder_norm},
head_hidden (head_mlp_dim > 0); and head. The backbone names are those of encoder.EncoderBlock,
so an image ViT maps onto it by name. With model.scan_layers each stack's encoderblock_i are one
`encoderblocks` with a leading layer axis (encoder.stack_blocks).
"""

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vidtx.errors import UserError
from vidtx.models import attention, encoder, hparams, kernels, layers, tokenizer

ATTENTIONS = ("space_time_mixing", "tsm")
AGGREGATIONS = ("temporal_attention", "mean")


def default_config() -> ml_collections.ConfigDict:
  """X-ViT-B/16 as released for Kinetics: 1/4 of the channels mixed over +-1 frame."""
  config = hparams.base_config()
  config.variant = "B/16"
  config.attention = "space_time_mixing"
  config.gelu_approximate = False  # The released model uses PyTorch's exact GELU.
  config.mixing_fraction = 0.25  # Released SHIFT_DIV 8 (Kinetics); 0.5 = SHIFT_DIV 4 (SSv2).
  config.mixing_window = 1  # w: keys and values mix frames t - w .. t + w.
  config.summary_tokens = 0  # R summary tokens per frame; 0: off (as released).
  config.aggregation = "temporal_attention"
  config.temporal_layers = 1  # Blocks of the temporal-attention head (released: 1).
  config.temporal_pos_embedding = False  # The released head has no positional embedding.
  config.head_mlp_dim = None  # None: hidden_size (released 768 for B); 0: linear head.
  config.head_dropout_rate = 0.0  # Released recipe: 0.5 (MODEL.DROPOUT_RATE).
  return config


@dataclasses.dataclass(frozen=True)
class XViTConfig(hparams.ModelConfig):
  """ModelConfig plus space-time mixing, summary tokens and the aggregation head."""

  mixing_fraction: float
  mixing_window: int
  summary_tokens: int
  aggregation: str
  temporal_layers: int
  temporal_pos_embedding: bool
  head_mlp_dim: int | None
  head_dropout_rate: float


def mixed_channels_per_offset(num_channels: int, fraction: float, window: int) -> int:
  """Channels each of the 2 * window frame offsets contributes: floor(fraction * C / 2w)."""
  # The epsilon keeps e.g. 0.3 * 10 / 2 = 1.4999... from flooring a channel away.
  return math.floor(fraction * num_channels / (2 * window) + 1e-9)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def make_config(overrides: ml_collections.ConfigDict | Mapping[str, Any]) -> XViTConfig:
  config = hparams.make_config(
    XViTConfig, default_config(), overrides, model_name="xvit", attentions=ATTENTIONS
  )
  if config.tubelet_size != 1:
    raise UserError(
      f"model.variant={config.variant!r}: X-ViT embeds single frames; "
      'use a variant without a tubelet length, e.g. "B/16".'
    )
  fraction = config.mixing_fraction
  if not _is_number(fraction) or not 0 <= fraction <= 1:
    raise UserError(f"model.mixing_fraction={fraction!r}: expected a number in [0, 1].")
  if not hparams.is_int(config.mixing_window) or config.mixing_window < 1:
    raise UserError(
      f"model.mixing_window={config.mixing_window!r}: expected a positive integer "
      "(1 = frames t - 1 and t + 1)."
    )
  if fraction > 0 and not mixed_channels_per_offset(
    config.hidden_size, fraction, config.mixing_window
  ):
    raise UserError(
      f"model.mixing_fraction={fraction} of {config.hidden_size} channels shared by "
      f"{2 * config.mixing_window} frame offsets (model.mixing_window="
      f"{config.mixing_window}) mixes no channel; raise the fraction or set it to 0."
    )
  if not hparams.is_int(config.summary_tokens) or config.summary_tokens < 0:
    raise UserError(
      f"model.summary_tokens={config.summary_tokens!r}: expected an integer >= 0 (0 = off)."
    )
  if config.aggregation not in AGGREGATIONS:
    raise UserError(
      f"model.aggregation={config.aggregation!r}: expected one of {list(AGGREGATIONS)}."
    )
  if not hparams.is_int(config.temporal_layers) or config.temporal_layers < 1:
    raise UserError(
      f"model.temporal_layers={config.temporal_layers!r}: expected a positive integer."
    )
  if not isinstance(config.temporal_pos_embedding, bool):
    raise UserError(
      f"model.temporal_pos_embedding={config.temporal_pos_embedding!r}: expected True or False."
    )
  head_mlp_dim = config.head_mlp_dim
  if head_mlp_dim is not None and (not hparams.is_int(head_mlp_dim) or head_mlp_dim < 0):
    raise UserError(
      f"model.head_mlp_dim={head_mlp_dim!r}: expected an integer >= 0 (0 = linear head) or "
      "None (hidden_size)."
    )
  if config.aggregation == "mean":
    if head_mlp_dim:
      raise UserError(
        f"model.head_mlp_dim={head_mlp_dim}: aggregation 'mean' has a linear head; "
        "set head_mlp_dim to 0 or None."
      )
    head_mlp_dim = 0
  elif head_mlp_dim is None:
    head_mlp_dim = config.hidden_size
  rate = config.head_dropout_rate
  if not _is_number(rate) or not 0 <= rate < 1:
    raise UserError(f"model.head_dropout_rate={rate!r}: expected a number in [0, 1).")
  return dataclasses.replace(
    config,
    mixing_fraction=float(fraction),
    head_mlp_dim=head_mlp_dim,
    head_dropout_rate=float(rate),
  )


# ----------------------------------------------------------------------------------------
# Space-time mixing.
# ----------------------------------------------------------------------------------------


def _shift_frames(x: jax.Array, offset: int) -> jax.Array:
  """out[:, t] = x[:, t + offset] along axis 1, zero where t + offset is outside the clip."""
  t = x.shape[1]
  if abs(offset) >= t:
    return jnp.zeros_like(x)
  padding = jnp.zeros(x.shape[:1] + (abs(offset),) + x.shape[2:], x.dtype)
  if offset > 0:
    return jnp.concatenate([x[:, offset:], padding], axis=1)
  return jnp.concatenate([padding, x[:, :offset]], axis=1)


def temporal_channel_shift(x: jax.Array, *, fraction: float, window: int) -> jax.Array:
  """Mixes channels of x (B, T, ..., C) across frames, as the module docstring describes.

  Channel block j (of floor(fraction * C / 2w) channels, from channel 0) is read from frame
  t + (j // 2 + 1) for even j and t - (j // 2 + 1) for odd j; the rest stay. For w = 1 this is
  the released shift: the first block from t + 1, the second from t - 1.
  """
  per_offset = mixed_channels_per_offset(x.shape[-1], fraction, window)
  if per_offset == 0:
    return x
  pieces = []
  for j in range(2 * window):
    distance = j // 2 + 1
    offset = distance if j % 2 == 0 else -distance
    pieces.append(_shift_frames(x[..., j * per_offset : (j + 1) * per_offset], offset))
  pieces.append(x[..., 2 * window * per_offset :])
  return jnp.concatenate(pieces, axis=-1)


def _frame_summaries(
  x: jax.Array, num_frames: int, num_summaries: int, num_prefix: int
) -> jax.Array:
  """Every frame's R summaries, for every frame: (B*T, L, H, Dh) -> (B*T, T*R, H, Dh)."""
  bt, length, heads, head_dim = x.shape
  patches = length - num_prefix
  if patches % num_summaries:
    raise UserError(
      f"model.summary_tokens={num_summaries} does not divide the {patches} patch tokens of a frame."
    )
  batch = bt // num_frames
  # (B*T, N, H, Dh) -> (B*T, R, N/R, H, Dh) -> mean over each group: (B*T, R, H, Dh)
  groups = x[:, num_prefix:].reshape(bt, num_summaries, patches // num_summaries, heads, head_dim)
  summaries = jnp.mean(groups, axis=2)
  # (B*T, R, H, Dh) -> (B, 1, T*R, H, Dh) -> every frame's copy (B, T, T*R, H, Dh)
  summaries = summaries.reshape(batch, 1, num_frames * num_summaries, heads, head_dim)
  summaries = jnp.broadcast_to(
    summaries, (batch, num_frames, num_frames * num_summaries, heads, head_dim)
  )
  # (B, T, T*R, H, Dh) -> (B*T, T*R, H, Dh)
  return summaries.reshape(bt, num_frames * num_summaries, heads, head_dim)


def space_time_mixing_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  *,
  num_frames: int,
  mixing_fraction: float,
  mixing_window: int = 1,
  summary_tokens: int = 0,
  num_prefix_tokens: int = 1,
  mask: jax.Array | None = None,
  dropout_rate: float = 0.0,
  dropout_rng: jax.Array | None = None,
  deterministic: bool = True,
  implementation: str = "auto",
) -> jax.Array:
  """An `attention_fn` for layers.MultiHeadAttention on per-frame tokens (B*T, L, ...).

  query, key, value: (B*T, L, heads, head_dim), frames of a clip consecutive along the batch
  axis. Builds frame t's keys and values from frames t - w .. t + w (temporal_channel_shift on
  the flattened heads x head_dim channels), appends the summary tokens' keys and values (of
  the L - num_prefix_tokens patch tokens) if any, and calls the one attention core with
  `implementation` (model.attention_implementation). `mask` (over the L keys) is only supported
  without summary tokens.
  """
  bt, length, heads, head_dim = key.shape
  if bt % num_frames:
    raise UserError(
      f"space_time_mixing_attention: batch axis {bt} is not a multiple of {num_frames} frames."
    )
  batch = bt // num_frames

  def mix(x: jax.Array) -> jax.Array:
    # (B*T, L, H, Dh) -> (B, T, L, H*Dh): channels head-major, as the projection lays them out.
    x5 = x.reshape(batch, num_frames, length, heads * head_dim)
    x5 = temporal_channel_shift(x5, fraction=mixing_fraction, window=mixing_window)
    # (B, T, L, H*Dh) -> (B*T, L, H, Dh)
    return x5.reshape(bt, length, heads, head_dim)

  mixed_key, mixed_value = mix(key), mix(value)
  if summary_tokens:
    if mask is not None:
      raise UserError("space_time_mixing_attention: a mask is not supported with summary tokens.")
    summarise = functools.partial(
      _frame_summaries,
      num_frames=num_frames,
      num_summaries=summary_tokens,
      num_prefix=num_prefix_tokens,
    )
    # (B*T, L, H, Dh) -> (B*T, L + T*R, H, Dh)
    mixed_key = jnp.concatenate([mixed_key, summarise(key)], axis=1)
    mixed_value = jnp.concatenate([mixed_value, summarise(value)], axis=1)
  return kernels.dot_product_attention(
    query,
    mixed_key,
    mixed_value,
    mask=mask,
    dropout_rate=dropout_rate,
    dropout_rng=dropout_rng,
    deterministic=deterministic,
    implementation=implementation,
  )


# ----------------------------------------------------------------------------------------
# Model.
# ----------------------------------------------------------------------------------------


class XViTBlock(nn.Module):
  """Pre-LN block on per-frame tokens x (B, T, L, D): shift (TSM) -> mixing attention -> MLP.

  Called as encoder.stack_blocks calls blocks: block(x, drop_path_rate, deterministic).
  """

  config: XViTConfig
  num_prefix_tokens: int = 1  # Class tokens in front of each frame's patch tokens.

  @nn.compact
  def __call__(
    self, x: jax.Array, drop_path_rate: float | jax.Array, deterministic: bool
  ) -> jax.Array:
    config = self.config
    b, t, length, d = x.shape
    shift = functools.partial(
      temporal_channel_shift, fraction=config.mixing_fraction, window=config.mixing_window
    )
    if config.attention == "tsm":
      # Supplementary Eq. 1: the block input is replaced by its shifted copy; the attention
      # itself then only sees its own frame.
      x = shift(x)
    mixing_fraction = config.mixing_fraction if config.attention == "space_time_mixing" else 0.0
    attention_fn = functools.partial(
      space_time_mixing_attention,
      num_frames=t,
      mixing_fraction=mixing_fraction,
      mixing_window=config.mixing_window,
      summary_tokens=config.summary_tokens,
      num_prefix_tokens=self.num_prefix_tokens,
    )
    attend = layers.attention_module(config, "attention", attention_fn=attention_fn)
    y = layers.layer_norm(config, "norm_attention")(x)
    # Queries attend within their own frame: (B, T, L, D) -> (B*T, L, D) -> (B, T, L, D)
    y = attend(y.reshape(b * t, length, d), deterministic=deterministic).reshape(b, t, length, d)
    x = x + layers.regularise_branch(
      y,
      dropout_rate=config.dropout_rate,
      drop_path_rate=drop_path_rate,
      deterministic=deterministic,
    )
    y = layers.mlp_module(config)(
      layers.layer_norm(config, "norm_mlp")(x), deterministic=deterministic
    )
    return x + layers.DropPath(drop_path_rate)(y, deterministic=deterministic)


class XViT(nn.Module):
  """X-ViT classifier: video (B, T, H, W, C) -> logits (B, num_classes), outputs.

  outputs: 'pre_logits' (B, D) and 'frame_representations' (B, T, D), each frame's final
  class token (or token mean for classifier 'gap'), both float32.
  """

  config: XViTConfig
  num_classes: int

  @nn.compact
  def __call__(self, video: jax.Array, *, train: bool) -> tuple[jax.Array, dict]:
    config = self.config
    deterministic = not train
    use_cls = config.classifier == "token"

    x = tokenizer.frame_embedding(
      video,
      hidden_size=config.hidden_size,
      patch_size=config.patch_size,
      dtype=jnp.dtype(config.dtype),
    )
    b, t, n, d = x.shape
    if use_cls:
      cls = layers.class_token(self, "cls", d).astype(x.dtype)
      # (1, 1, D) -> (B, T, 1, D); tokens (B, T, 1+N, D): every frame has its own class token.
      x = jnp.concatenate([jnp.broadcast_to(cls[:, None], (b, t, 1, d)), x], axis=2)
    # One spatial embedding (class token first) shared by all frames, then (after dropout, as
    # released) a zero-initialised time embedding on every token of a frame.
    x = layers.AddPositionEmbedding(axis=2, name="pos_embedding")(x)
    x = nn.Dropout(config.dropout_rate)(x, deterministic=deterministic)
    x = layers.AddPositionEmbedding(
      axis=1, embedding_init=nn.initializers.zeros, name="time_embedding"
    )(x)

    x = encoder.stack_blocks(
      XViTBlock,
      x,
      config=config,
      num_layers=config.num_layers,
      deterministic=deterministic,
      num_prefix_tokens=int(use_cls),
    )
    x = layers.layer_norm(config, "encoder_norm")(x)
    # (B, T, 1+N, D) -> (B, T, D)
    frames = x[:, :, 0] if use_cls else jnp.mean(x, axis=2)

    h = nn.Dropout(config.head_dropout_rate)(frames, deterministic=deterministic)
    if config.aggregation == "mean":
      pre_logits = jnp.mean(h, axis=1)  # (B, T, D) -> (B, D)
    else:
      cls = layers.class_token(self, "temporal_cls", d).astype(h.dtype)
      # (B, T, D) -> (B, 1+T, D)
      h = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), h], axis=1)
      if config.temporal_pos_embedding:
        h = layers.AddPositionEmbedding(axis=1, name="temporal_pos_embedding")(h)
      # No stochastic depth in the head (released: drop_path 0 there).
      head_config = dataclasses.replace(config, stochastic_depth=0.0)
      h = encoder.Encoder(
        head_config, config.temporal_layers, attention.joint_attention, name="temporal_encoder"
      )(h, deterministic=deterministic)
      pre_logits = h[:, 0]  # (B, 1+T, D) -> (B, D)

    pre_logits = pre_logits.astype(jnp.float32)
    y = pre_logits
    if config.head_mlp_dim:
      y = nn.Dense(
        config.head_mlp_dim,
        dtype=jnp.float32,
        kernel_init=layers.logical(layers.KERNEL_INIT, layers.EMBED, layers.MLP),
        bias_init=layers.logical(nn.initializers.zeros, layers.MLP),
        name="head_hidden",
      )(y)
      y = nn.gelu(y, approximate=config.gelu_approximate)
      y = nn.Dropout(config.head_dropout_rate)(y, deterministic=deterministic)
    logits = layers.classification_head(y, self.num_classes)
    return logits, {"pre_logits": pre_logits, "frame_representations": frames.astype(jnp.float32)}
