"""ViViT (Arnab et al., 2021, "ViViT: A Video Vision Transformer").

Every model embeds t x P x P tubelets (Sec. 3.2; `model.kernel_init_method` chooses the
kernel's initialisation, see tokenizer.py), adds learned positional embeddings, runs its
encoder, and classifies the final LayerNorm'd class token (classifier 'token') or the average
of the tokens ('gap') with a linear head. `model.attention` picks the model (Sec. 3.3):

- 'spatio_temporal' (Model 1): one encoder with joint attention over all n_t * n_h * n_w
  tokens, a class token in front; one positional embedding over all tokens (1 + n_t*n_h*n_w).
- 'factorised_encoder' (Model 2): a spatial encoder of L_s layers applied to each temporal
  index separately, with its own class token and spatial positional embedding; one
  representation per temporal index (its class token, or the average of its tokens for
  'gap'); a temporal encoder of L_t layers over those, with its own class token and 1D
  positional embedding. L_t = 0 is the "average pooling baseline" of Table 2: the
  per-frame representations are averaged and classified.
- 'factorised_self_attention' (Model 3): each block is spatial self-attention (tokens of
  the same temporal index), then temporal self-attention (tokens of the same spatial index),
  each with its own LayerNorm and residual (Eqs. 4-5), then the MLP (Eq. 6);
  `model.attention_order='time_space'` swaps the two. No class token (the paper: it would
  be ambiguous between the spatial and temporal reshapes), so classifier must be 'gap'.
  The temporal attention starts at zero (Sec. 3.4) so the model starts as the image model:
  its output projection is zero-initialised. (The paper zeroes every temporal weight; with
  zero queries, keys, values AND output, no temporal weight ever gets a gradient, as each
  one's gradient is a product with another zero, so the query/key/value kernels keep their
  usual random initialisation.)
- 'factorised_dot_product' (Model 4): the blocks of Model 1 (same parameters), but half of
  each attention's heads attend over space and the other half over time (attention.py
  `factorised_dot_product_attention`). No class token (a token outside the space-time grid
  has no frame nor spatial index to attend within), so classifier must be 'gap'.

Parameters: embedding; Models 1, 3, 4: cls (Model 1 'token'), pos_embedding,
encoder/{encoderblock_i, encoder_norm}, head. Model 1 and 4 blocks hold norm_attention,
attention, norm_mlp, mlp (as in Model 2's encoders); Model 3 blocks hold norm_spatial,
attention_spatial, norm_temporal, attention_temporal, norm_mlp, mlp. Model 2: spatial_cls,
spatial_pos_embedding, spatial_encoder/{encoderblock_i, encoder_norm}, temporal_cls,
temporal_pos_embedding, temporal_encoder/{...} (L_t > 0), head. With model.scan_layers each
stack's encoderblock_i are one `encoderblocks` with a leading layer axis (encoder.stack_blocks).
"""

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vidtx.errors import UserError
from vidtx.models import attention, encoder, hparams, kernels, layers, tokenizer

ATTENTIONS = (
  "spatio_temporal",
  "factorised_encoder",
  "factorised_self_attention",
  "factorised_dot_product",
)
ATTENTION_ORDERS = ("space_time", "time_space")
# Models whose encoder reshapes tokens between space and time: no class token (Sec. 3.3).
GAP_ONLY = ("factorised_self_attention", "factorised_dot_product")


def default_config() -> ml_collections.ConfigDict:
  """ViViT-B/16x2 factorised encoder with L_t = 4, as in ViViT Table 2."""
  config = hparams.base_config()
  config.variant = "B/16x2"
  config.attention = "factorised_encoder"
  config.gelu_approximate = True  # scenic (Flax nn.gelu) and Hugging Face use tanh GELU.
  config.spatial_layers = None  # Model 2's L_s; None: num_layers (the variant's depth).
  config.temporal_layers = 4  # Model 2's L_t; 0: average-pool the per-frame representations.
  config.attention_order = "space_time"  # Model 3: 'space_time' (the paper's) or 'time_space'.
  # Tubelet kernel: 'random', 'inflate' (Eq. 8) or 'central_frame' (Eq. 9); tokenizer.py.
  config.kernel_init_method = "random"
  return config


@dataclasses.dataclass(frozen=True)
class ViViTConfig(hparams.ModelConfig):
  """ModelConfig plus the ViViT-specific fields (see default_config)."""

  spatial_layers: int
  temporal_layers: int
  attention_order: str
  kernel_init_method: str


def make_config(overrides: ml_collections.ConfigDict | Mapping[str, Any]) -> ViViTConfig:
  config = hparams.make_config(
    ViViTConfig, default_config(), overrides, model_name="vivit", attentions=ATTENTIONS
  )
  if config.spatial_layers is None:
    config = dataclasses.replace(config, spatial_layers=config.num_layers)
  if not hparams.is_int(config.spatial_layers) or config.spatial_layers < 1:
    raise UserError(
      f"model.spatial_layers={config.spatial_layers!r}: expected a positive "
      "integer (or None for the variant's depth)."
    )
  if not hparams.is_int(config.temporal_layers) or config.temporal_layers < 0:
    raise UserError(
      f"model.temporal_layers={config.temporal_layers!r}: expected an "
      "integer >= 0 (0 = average-pool baseline)."
    )
  if config.attention_order not in ATTENTION_ORDERS:
    raise UserError(
      f"model.attention_order={config.attention_order!r}: expected one of {list(ATTENTION_ORDERS)}."
    )
  if config.kernel_init_method not in tokenizer.KERNEL_INIT_METHODS:
    raise UserError(
      f"model.kernel_init_method={config.kernel_init_method!r}: expected one of "
      f"{list(tokenizer.KERNEL_INIT_METHODS)}."
    )
  if config.attention in GAP_ONLY and config.classifier != "gap":
    raise UserError(
      f"model.classifier={config.classifier!r} with model.attention={config.attention!r}: "
      "this ViViT model has no class token (Sec. 3.3); set model.classifier='gap'."
    )
  if config.attention == "factorised_dot_product" and config.num_heads % 2:
    raise UserError(
      f"model.num_heads={config.num_heads}: model.attention='factorised_dot_product' splits "
      "the heads into a spatial and a temporal half; expected an even number."
    )
  return config


# ----------------------------------------------------------------------------------------
# Models 3 and 4: blocks on (B, T, N, D) tokens.
# ----------------------------------------------------------------------------------------


# Model 3's two attentions: model.attention_order axis -> (name, pattern, output projection
# init). The temporal attention starts at zero (Sec. 3.4): its output projection does.
_FACTORISED_STAGES = {
  "space": ("spatial", attention.spatial_attention, layers.KERNEL_INIT),
  "time": ("temporal", attention.temporal_attention, nn.initializers.zeros),
}


class FactorisedBlock(nn.Module):
  """A Model 3 or Model 4 block (config.attention) on tokens (B, T, N, D).

  Model 3: x += SA_space(LN(x)); x += SA_time(LN(x)) (or time first); x += MLP(LN(x)).
  Model 4: x += FDPA(LN(x)); x += MLP(LN(x)), FDPA splitting the heads over space and time.
  Called as encoder.stack_blocks calls blocks: block(x, drop_path_rate, deterministic).
  """

  config: ViViTConfig

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
    if config.attention == "factorised_self_attention":
      for axis in config.attention_order.split("_"):  # e.g. 'space_time' -> space, then time.
        name, pattern, out_kernel_init = _FACTORISED_STAGES[axis]
        module = layers.attention_module(
          config, f"attention_{name}", out_kernel_init=out_kernel_init
        )
        attend = functools.partial(module, deterministic=deterministic)
        y = pattern(attend, layers.layer_norm(config, f"norm_{name}")(x))
        x = x + regularise(y)
    else:
      # The projections act on the last axis, so query/key/value come out (B, T, N, H, Dh):
      # the head split needs both token axes.
      attend = layers.attention_module(
        config,
        "attention",
        attention_fn=functools.partial(
          attention.factorised_dot_product_attention, kernels.dot_product_attention
        ),
      )
      y = attend(layers.layer_norm(config, "norm_attention")(x), deterministic=deterministic)
      x = x + regularise(y)
    y = layers.mlp_module(config)(
      layers.layer_norm(config, "norm_mlp")(x), deterministic=deterministic
    )
    return x + layers.DropPath(drop_path_rate)(y, deterministic=deterministic)


class FactorisedEncoder(nn.Module):
  """config.num_layers FactorisedBlocks with linearly rising stochastic depth, then LayerNorm."""

  config: ViViTConfig

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    x = encoder.stack_blocks(
      FactorisedBlock,
      x,
      config=self.config,
      num_layers=self.config.num_layers,
      deterministic=deterministic,
    )
    return layers.layer_norm(self.config, "encoder_norm")(x)


# ----------------------------------------------------------------------------------------
# The models. Each runs inside ViViT's compact call and maps tubelet tokens (B, T, N, D) to
# (pre_logits (B, D), extra outputs).
# ----------------------------------------------------------------------------------------


def _single_encoder(
  module: nn.Module, x: jax.Array, config: ViViTConfig, deterministic: bool
) -> tuple[jax.Array, dict]:
  """Models 1, 3 and 4: one positional embedding over all tokens, one encoder."""
  use_cls = config.classifier == "token"
  b, t, n, d = x.shape
  # (B, T, N, D) -> (B, T*N, D), temporal index major.
  tokens = x.reshape(b, t * n, d)
  if use_cls:
    cls = layers.class_token(module, "cls", d).astype(tokens.dtype)
    # (B, T*N, D) -> (B, 1+T*N, D)
    tokens = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), tokens], axis=1)
  tokens = layers.AddPositionEmbedding(axis=1, name="pos_embedding")(tokens)
  tokens = nn.Dropout(config.dropout_rate)(tokens, deterministic=deterministic)
  if config.attention == "spatio_temporal":
    tokens = encoder.Encoder(config, config.num_layers, attention.joint_attention, name="encoder")(
      tokens, deterministic=deterministic
    )
  else:
    # Models 3 and 4 (no class token): (B, T*N, D) -> (B, T, N, D) -> (B, T*N, D)
    tokens = FactorisedEncoder(config, name="encoder")(
      tokens.reshape(b, t, n, d), deterministic=deterministic
    ).reshape(b, t * n, d)
  pre_logits = tokens[:, 0] if use_cls else jnp.mean(tokens, axis=1)  # (B, L, D) -> (B, D)
  return pre_logits, {}


def _factorised_encoder(
  module: nn.Module, x: jax.Array, config: ViViTConfig, deterministic: bool
) -> tuple[jax.Array, dict]:
  """Model 2: spatial encoder per temporal index, then a temporal encoder (or averaging)."""
  use_cls = config.classifier == "token"
  b, t, n, d = x.shape
  if use_cls:
    cls = layers.class_token(module, "spatial_cls", d).astype(x.dtype)
    # (1, 1, D) -> (B, T, 1, D); tokens (B, T, 1+N, D)
    x = jnp.concatenate([jnp.broadcast_to(cls[:, None], (b, t, 1, d)), x], axis=2)
  x = layers.AddPositionEmbedding(axis=2, name="spatial_pos_embedding")(x)
  x = nn.Dropout(config.dropout_rate)(x, deterministic=deterministic)
  # Spatial attention keeps temporal indices apart: one image encoder per index.
  x = encoder.Encoder(
    config, config.spatial_layers, attention.spatial_attention, name="spatial_encoder"
  )(x, deterministic=deterministic)
  # (B, T, 1+N, D) -> (B, T, D)
  frames = x[:, :, 0] if use_cls else jnp.mean(x, axis=2)

  if config.temporal_layers == 0:
    pre_logits = jnp.mean(frames, axis=1)  # (B, T, D) -> (B, D)
  else:
    h = frames
    if use_cls:
      cls = layers.class_token(module, "temporal_cls", d).astype(h.dtype)
      # (B, T, D) -> (B, 1+T, D)
      h = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), h], axis=1)
    h = layers.AddPositionEmbedding(axis=1, name="temporal_pos_embedding")(h)
    h = nn.Dropout(config.dropout_rate)(h, deterministic=deterministic)
    h = encoder.Encoder(
      config, config.temporal_layers, attention.joint_attention, name="temporal_encoder"
    )(h, deterministic=deterministic)
    pre_logits = h[:, 0] if use_cls else jnp.mean(h, axis=1)  # (B, 1+T, D) -> (B, D)
  return pre_logits, {"frame_representations": frames.astype(jnp.float32)}


class ViViT(nn.Module):
  """ViViT classifier: video (B, T, H, W, C) -> logits (B, num_classes), outputs.

  outputs: 'pre_logits' (B, D), float32; Model 2 adds 'frame_representations' (B, T/t, D),
  the spatial encoder's representation of each temporal index (h_i in the paper).
  """

  config: ViViTConfig
  num_classes: int

  @nn.compact
  def __call__(self, video: jax.Array, *, train: bool) -> tuple[jax.Array, dict]:
    config = self.config
    x = tokenizer.tubelet_embedding(
      video,
      hidden_size=config.hidden_size,
      patch_size=config.patch_size,
      tubelet_size=config.tubelet_size,
      dtype=jnp.dtype(config.dtype),
      kernel_init_method=config.kernel_init_method,
    )
    encode = _factorised_encoder if config.attention == "factorised_encoder" else _single_encoder
    pre_logits, outputs = encode(self, x, config, not train)
    pre_logits = pre_logits.astype(jnp.float32)
    logits = layers.classification_head(pre_logits, self.num_classes)
    return logits, {"pre_logits": pre_logits, **outputs}
