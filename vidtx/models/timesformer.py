"""TimeSformer (Bertasius et al., 2021, "Is Space-Time Attention All You Need ...").

Frames are embedded as ViT patches; a class token and a spatial positional embedding
(N + 1 entries, shared by all frames) are added as in ViT, plus a zero-initialised time
embedding on the patch tokens. Each block mixes tokens with the configured space-time
attention scheme, then applies the MLP. The final LayerNorm'd class token is classified.

A block is a sequence of attention *stages*; a stage is pre-LN multi-head attention within
the groups of one pattern (vidtx.models.attention), with its own parameters
`norm_<stage>`, `attention_<stage>` and, for the stages below marked "projected",
`<stage>_fc`. Class-token rule (the official divided block's, applied to every scheme):

- a projected stage acts on the patch tokens only and its result passes through a linear
  `<stage>_fc`, zero-initialised (model.temporal_init='image'), so the stage starts switched
  off and the block starts as its last, unprojected stage;
- an unprojected stage also carries the class token: a copy of it joins every group of the
  pattern (so every patch also attends to it) and the copies' updates are averaged.

Schemes (`model.attention`), x the patch tokens, c the class token, z' = z + stage(z):
- 'space' (S, Table 1): an image ViT on every frame (each frame has its own copy of the class
  token, no time embedding); all tokens are averaged over frames before the final LayerNorm,
  as in the official code.
- 'joint' (ST, Eq. 5): one stage 'joint' in which the class token and all T*N patch tokens
  attend to each other (official `joint_space_time`).
- 'divided' (T+S, Eq. 11 then Eq. 6, official `divided_space_time`): projected 'temporal'
  (a patch attends to the patches at its location in every frame), then 'spatial' (within its
  frame; the class token's T per-frame updates are averaged).
- 'space_first' (supplementary, "spatial attention first, then temporal"): 'spatial' then
  projected 'temporal'; the same parameters as 'divided'.
- 'parallel' (supplementary, "parallel space-time self-attention"): both stages read the block
  input, and their residual updates are summed: x' = x + temporal_fc(T(x)) + S([c, x]),
  c' = c + S_c([c, x]); the same parameters as 'divided'.
- 'local_global' (L+G): projected 'local', attention within F x h/2 x w/2 windows (the
  frame's h x w patch grid cut into 2 x 2 non-overlapping windows, each spanning all F
  frames), then 'global', sparse attention over the whole clip with stride 2 in time, height
  and width (a patch attends to the patches whose frame, row and column have its own parity;
  8 groups of F/2 x h/2 x w/2). Needs an even number of frames and of patches per side.
  The class token joins each of the 8 global groups, which together cover the clip. Both
  follow the local and strided patterns of Child et al. (2019), which the paper cites: fixed
  windows rather than one centred on each patch (every patch then has exactly F x h/2 x w/2
  neighbours, even at the border), and phase groups rather than one subsampled set of keys for
  all queries (every token is then a key of the global stage).
- 'axial' (T+W+H): projected 'temporal', projected 'width' (within a row of patches of a
  frame), then 'height' (within a column of a frame); the class token joins every column.
The paper defines L+G and axial only in words and Fig. 1-2 (they were never released) and
says nothing about their class token, hence the rule above. Table 1's counts fix how many
projections they have: 'local_global' has the parameters of 'divided' (121.4 M: one of its two
stages is projected) and 'axial' two projected stages (156.8 M). As in 'divided', the first
stages are the projected ones and the last stage, which carries the class token, is not.
(Table 1 counts a 174-class head, Something-Something-V2's: with 400 classes the counts are
0.17 M higher, e.g. 121.57 M for 'divided'.)

Positional embeddings (`model.positional_embedding`, Table 4): 'space_time' (default) the
spatial embedding plus the time embedding; 'space' the spatial one only; 'none' neither. The
space-only scheme never has a time embedding (official), so there 'space_time' == 'space'.

Parameters: embedding, cls, pos_embedding, time_embedding, encoderblock_{i}/{stages...,
norm_mlp, mlp}, encoder_norm, head. 'divided' blocks hold norm_temporal, attention_temporal,
temporal_fc, norm_spatial, attention_spatial: the spatial/MLP names are the same for 'space',
so an image ViT or a space-only model maps onto a divided one by name. With model.scan_layers
the encoderblock_i are one `encoderblocks` with a leading layer axis (encoder.stack_blocks).
"""

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vidtx.errors import UserError
from vidtx.models import attention, encoder, hparams, layers, tokenizer

Tokens = tuple[jax.Array, jax.Array | None]

POSITIONAL_EMBEDDINGS = ("none", "space", "space_time")


def default_config() -> ml_collections.ConfigDict:
  """TimeSformer-B/16 with divided space-time attention, as released."""
  config = hparams.base_config()
  config.variant = "B/16"
  config.attention = "divided"
  config.stochastic_depth = 0.1  # Hard-coded in the official model.
  config.gelu_approximate = False  # Official and Hugging Face use exact GELU.
  # 'image' (official): time embedding and the stage projections (temporal_fc, ...) start at
  # zero, so with image-ViT weights the model starts as the image model. 'random' (time
  # embedding normal(0.5), projections xavier) for training from scratch: at the zero start
  # every block is blind to frame order and the gated branches get almost no gradient, a
  # point training does not leave.
  config.temporal_init = "image"
  config.positional_embedding = "space_time"  # 'space_time' | 'space' | 'none' (Table 4).
  # Fold each projected stage's <stage>_fc into its attention's out projection where nothing but
  # stochastic depth sits between them (no dropout): the same function with one (D x D) matmul
  # per token fewer. vidtx.tools.complexity counts the unfolded model, as the paper does.
  config.fold_projections = True
  return config


@dataclasses.dataclass(frozen=True)
class TimeSformerConfig(hparams.ModelConfig):
  """ModelConfig plus the initialisation of the temporal parts and the positional embedding."""

  temporal_init: str
  positional_embedding: str
  fold_projections: bool


# model.temporal_init -> (time embedding init, stage projection kernel init).
_TEMPORAL_INITS = {
  "image": (nn.initializers.zeros, nn.initializers.zeros),
  # std 0.5: the scale of freshly embedded patch tokens, so frame order is visible from step 0.
  # (ViT's 0.02 is too faint here: the model learns the order-free shortcut first and stays.)
  "random": (nn.initializers.normal(0.5), nn.initializers.xavier_uniform()),
}


def make_config(overrides: ml_collections.ConfigDict | Mapping[str, Any]) -> TimeSformerConfig:
  config = hparams.make_config(
    TimeSformerConfig, default_config(), overrides, model_name="timesformer", attentions=ATTENTIONS
  )
  if config.temporal_init not in _TEMPORAL_INITS:
    raise UserError(
      f"model.temporal_init={config.temporal_init!r}: expected one of {sorted(_TEMPORAL_INITS)}."
    )
  if config.positional_embedding not in POSITIONAL_EMBEDDINGS:
    raise UserError(
      f"model.positional_embedding={config.positional_embedding!r}: expected one of "
      f"{list(POSITIONAL_EMBEDDINGS)}."
    )
  if not isinstance(config.fold_projections, bool):
    raise UserError(f"model.fold_projections={config.fold_projections!r}: expected True or False.")
  if config.tubelet_size != 1:
    raise UserError(
      f"model.variant={config.variant!r}: TimeSformer embeds single frames; "
      'use a variant without a tubelet length, e.g. "B/16".'
    )
  return config


# ----------------------------------------------------------------------------------------
# Attention stages. They run inside TimeSformerBlock's compact call; x are the patch tokens
# (B, T, N, D), cls the class token (B, 1, D) or None; `grid` is the frame's (h, w) patches.
# ----------------------------------------------------------------------------------------

# Stage name -> grouping of the tokens (attention.py); names the stage's parameters.
GROUPINGS = {
  "spatial": attention.frame_groups,
  "temporal": attention.location_groups,
  "joint": attention.clip_groups,
  "local": attention.window_groups,
  "global": attention.strided_groups,
  "width": attention.row_groups,
  "height": attention.column_groups,
}


def _residual(
  x: jax.Array,
  cls: jax.Array | None,
  stage: str,
  *,
  config: TimeSformerConfig,
  grid: attention.Grid,
  drop_path_rate: float | jax.Array,
  deterministic: bool,
  then: jax.Array | None = None,
) -> Tokens:
  """The residual branch of one stage: updates (B, T, N, D) and (B, 1, D) or None.

  then: a kernel folded into the attention's out projection (MultiHeadAttention's `then`).
  """
  groups, ungroup = GROUPINGS[stage](x, grid)  # (B, G, L, D)
  if cls is not None:
    groups = attention.prepend_class_token(groups, cls)  # (B, G, 1+L, D)
  attend = functools.partial(
    layers.attention_module(config, f"attention_{stage}"), deterministic=deterministic, then=then
  )
  y = attention.attend_in_groups(attend, layers.layer_norm(config, f"norm_{stage}")(groups))
  regularise = functools.partial(
    layers.regularise_branch,
    dropout_rate=config.dropout_rate,
    drop_path_rate=drop_path_rate,
    deterministic=deterministic,
  )
  if cls is None:
    return regularise(ungroup(y)), None  # Dropout masks drawn in the (B, T, N, D) layout.
  # Regularised with the class-token copies, so that stochastic depth drops the whole example.
  y, y_cls = attention.average_class_token(regularise(y))
  return ungroup(y), y_cls


class LinearParams(nn.Module):
  """The parameters of an nn.Dense (kernel (in_features, features), bias (features,)), same
  names and initialisation, for a caller that applies them itself."""

  in_features: int
  features: int
  kernel_init: Any = layers.KERNEL_INIT

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    kernel = self.param(
      "kernel",
      layers.logical(self.kernel_init, layers.EMBED, None),
      (self.in_features, self.features),
    )
    bias = self.param("bias", layers.logical(nn.initializers.zeros, None), (self.features,))
    return kernel, bias


def _projected(x: jax.Array, stage: str, **kwargs) -> jax.Array:
  """A projected stage's update of the patch tokens: <stage>_fc(attention)."""
  config = kwargs["config"]
  dtype = jnp.dtype(config.dtype)
  d = x.shape[-1]
  # Zero-initialised by default: the stage is off at initialisation (official temporal_fc).
  kernel, bias = LinearParams(
    d, d, kernel_init=_TEMPORAL_INITS[config.temporal_init][1], name=f"{stage}_fc"
  )()
  if config.fold_projections and (kwargs["deterministic"] or config.dropout_rate == 0):
    # Between the attention's out projection and <stage>_fc there is only stochastic depth, a
    # per-example scale s: fc(s (y W_out + b_out)) = s (y W_out W_fc + b_out W_fc) + b_fc. So
    # W_fc is folded into the out projection: one (D x D) matmul per token fewer.
    y, _ = _residual(x, None, stage, then=kernel, **kwargs)
    return y + layers.add_axes(bias.astype(dtype), y.ndim)
  # Dropout masks single channels between the two: apply them one after the other.
  y, _ = _residual(x, None, stage, **kwargs)
  y = y.astype(dtype) @ kernel.astype(dtype)
  return y + layers.add_axes(bias.astype(dtype), y.ndim)


class Stage(NamedTuple):
  """One attention stage of a block: its grouping (`GROUPINGS`) and parameters' name, and
  whether it is projected (patch tokens only, through `<name>_fc`) or carries the class token."""

  name: str
  projected: bool


# model.attention -> the stages of one block, in order. A new scheme is one entry here.
SCHEMES = {
  "divided": (Stage("temporal", True), Stage("spatial", False)),
  "space": (Stage("spatial", False),),
  "joint": (Stage("joint", False),),
  "space_first": (Stage("spatial", False), Stage("temporal", True)),
  "parallel": (Stage("temporal", True), Stage("spatial", False)),
  "local_global": (Stage("local", True), Stage("global", False)),
  "axial": (Stage("temporal", True), Stage("width", True), Stage("height", False)),
}
ATTENTIONS = tuple(SCHEMES)
# Schemes whose stages all read the block input and sum their updates; the others chain them.
PARALLEL = ("parallel",)


def _mix(x: jax.Array, cls: jax.Array | None, **kwargs) -> Tokens:
  """The token mixing of one block: the stages of SCHEMES[model.attention]."""
  attention_scheme = kwargs["config"].attention
  new_x, new_cls = x, cls
  for stage in SCHEMES[attention_scheme]:
    # A parallel scheme's stages read the block input, a chained one's the previous stage's.
    x_in, cls_in = (x, cls) if attention_scheme in PARALLEL else (new_x, new_cls)
    if stage.projected:
      new_x = new_x + _projected(x_in, stage.name, **kwargs)
      continue
    y, y_cls = _residual(x_in, cls_in, stage.name, **kwargs)
    new_x = new_x + y
    new_cls = None if cls is None else new_cls + y_cls
  return new_x, new_cls


# Schemes that process every frame as an independent image (no time embedding, one class
# token per frame, frames averaged at the end).
_PER_FRAME = ("space",)


class TimeSformerBlock(nn.Module):
  """Space-time token mixing (config.attention), then the MLP.

  Called as encoder.stack_blocks calls blocks: block((x, cls), drop_path_rate, deterministic).
  x: patch tokens (B, T, N, D); cls: class token (B, 1, D), or None when there is none
  or it is part of x (space-only model); grid: the (h, w) patches of a frame.
  """

  config: TimeSformerConfig
  grid: attention.Grid

  @nn.compact
  def __call__(
    self, carry: Tokens, drop_path_rate: float | jax.Array, deterministic: bool
  ) -> Tokens:
    config = self.config
    x, cls = carry
    x, cls = _mix(
      x,
      cls,
      config=config,
      grid=self.grid,
      drop_path_rate=drop_path_rate,
      deterministic=deterministic,
    )
    b, t, n, d = x.shape
    # (B, T, N, D) -> (B, T*N, D), with the class token in front: (B, 1+T*N, D).
    # One sequence so that stochastic depth drops the class token with its example.
    tokens = x.reshape(b, t * n, d)
    if cls is not None:
      tokens = jnp.concatenate([cls, tokens], axis=1)
    y = layers.mlp_module(config)(
      layers.layer_norm(config, "norm_mlp")(tokens), deterministic=deterministic
    )
    tokens = tokens + layers.DropPath(drop_path_rate)(y, deterministic=deterministic)
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
    grid = (video.shape[2] // config.patch_size, video.shape[3] // config.patch_size)
    if config.attention == "local_global" and (t % 2 or grid[0] % 2 or grid[1] % 2):
      raise UserError(
        "model.attention='local_global' cuts each frame into 2 x 2 windows and strides by 2 "
        "in time, height and width: it needs an even number of frames and of patches per "
        f"side, got {t} frames of {grid[0]} x {grid[1]} patches."
      )
    if use_cls:
      cls = layers.class_token(self, "cls", d).astype(x.dtype)
      # (1, 1, D) -> (B, T, 1, D); tokens (B, T, 1+N, D)
      x = jnp.concatenate([jnp.broadcast_to(cls[:, None], (b, t, 1, d)), x], axis=2)
    if config.positional_embedding != "none":
      # One spatial embedding (class token first) shared by all frames.
      x = layers.AddPositionEmbedding(axis=2, name="pos_embedding")(x)

    cls = None
    if not per_frame:
      if use_cls:
        # Every frame holds the same class token; keep it apart: (B, 1, D).
        cls, x = x[:, 0, :1], x[:, :, 1:]
      if config.positional_embedding == "space_time":
        x = layers.AddPositionEmbedding(
          axis=1,
          embedding_init=_TEMPORAL_INITS[config.temporal_init][0],
          name="time_embedding",
        )(x)
      if cls is not None:
        cls = nn.Dropout(config.dropout_rate)(cls, deterministic=deterministic)
    x = nn.Dropout(config.dropout_rate)(x, deterministic=deterministic)

    x, cls = encoder.stack_blocks(
      TimeSformerBlock,
      (x, cls),
      config=config,
      num_layers=config.num_layers,
      deterministic=deterministic,
      grid=grid,
    )

    if per_frame:
      # Official space-only model: average all tokens over frames, then normalise.
      encoded = x[:, :, 1:] if use_cls else x
      x = jnp.mean(x, axis=1, keepdims=True)  # (B, T, N', D) -> (B, 1, N', D)
      if use_cls:
        cls, x = x[:, 0, :1], x[:, :, 1:]
    else:
      encoded = x
    norm = layers.layer_norm(config, "encoder_norm")
    if use_cls:
      pre_logits = norm(cls)[:, 0]  # (B, 1, D) -> (B, D)
    else:
      pre_logits = jnp.mean(norm(x), axis=(1, 2))  # (B, T, N, D) -> (B, D)
    pre_logits = pre_logits.astype(jnp.float32)
    logits = layers.classification_head(pre_logits, self.num_classes)
    return logits, {"pre_logits": pre_logits, "encoded_tokens": encoded}
