"""ViViT (Arnab et al., 2021, "ViViT: A Video Vision Transformer").

Model 2, the factorised encoder (Sec. 3.3, `model.attention='factorised_encoder'`):
tubelet embedding (Sec. 3.2); a spatial encoder of L_s layers applied to each temporal
index separately, with its own class token and spatial positional embedding; one
representation per temporal index (its class token, or the average of its tokens for
classifier 'gap'); a temporal encoder of L_t layers over those, with its own class token
and 1D positional embedding; LayerNorm (the last layer of each encoder); linear head.
L_t = 0 is the "average pooling baseline" of Table 2: the per-frame representations are
averaged and classified.

Parameters: embedding, spatial_cls, spatial_pos_embedding, spatial_encoder/{encoderblock_i,
encoder_norm}, temporal_cls, temporal_pos_embedding, temporal_encoder/{...} (L_t > 0),
head; blocks hold norm_attention, attention, norm_mlp, mlp.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vidtx.models import attention, common, tokenizer

ATTENTIONS = ("factorised_encoder",)


def default_config() -> ml_collections.ConfigDict:
  """ViViT-B/16x2 factorised encoder with L_t = 4, as in ViViT Table 2."""
  config = common.base_config()
  config.variant = "B/16x2"
  config.attention = "factorised_encoder"
  config.gelu_approximate = True  # scenic (Flax nn.gelu) and Hugging Face use tanh GELU.
  config.spatial_layers = None  # L_s; None: num_layers (the variant's depth by default).
  config.temporal_layers = 4  # L_t; 0: average-pool the per-frame representations.
  return config


@dataclasses.dataclass(frozen=True)
class ViViTConfig(common.ModelConfig):
  """ModelConfig plus the depths of the factorised encoder's two encoders."""

  spatial_layers: int
  temporal_layers: int


def make_config(overrides: ml_collections.ConfigDict | Mapping[str, Any]) -> ViViTConfig:
  config = common.make_config(
    ViViTConfig, default_config(), overrides, model_name="vivit", attentions=ATTENTIONS
  )
  if config.spatial_layers is None:
    config = dataclasses.replace(config, spatial_layers=config.num_layers)
  if not common.is_int(config.spatial_layers) or config.spatial_layers < 1:
    raise ValueError(
      f"model.spatial_layers={config.spatial_layers!r}: expected a positive "
      "integer (or None for the variant's depth)."
    )
  if not common.is_int(config.temporal_layers) or config.temporal_layers < 0:
    raise ValueError(
      f"model.temporal_layers={config.temporal_layers!r}: expected an "
      "integer >= 0 (0 = average-pool baseline)."
    )
  return config


class ViViT(nn.Module):
  """ViViT classifier: video (B, T, H, W, C) -> logits (B, num_classes), outputs.

  outputs: 'pre_logits' (B, D) and 'frame_representations' (B, T/t, D), the spatial
  encoder's representation of each temporal index (h_i in the paper), both float32.
  """

  config: ViViTConfig
  num_classes: int

  @nn.compact
  def __call__(self, video: jax.Array, *, train: bool) -> tuple[jax.Array, dict]:
    config = self.config
    deterministic = not train
    use_cls = config.classifier == "token"

    x = tokenizer.tubelet_embedding(
      video,
      hidden_size=config.hidden_size,
      patch_size=config.patch_size,
      tubelet_size=config.tubelet_size,
      dtype=jnp.dtype(config.dtype),
    )
    b, t, n, d = x.shape
    if use_cls:
      cls = common.class_token(self, "spatial_cls", d).astype(x.dtype)
      # (1, 1, D) -> (B, T, 1, D); tokens (B, T, 1+N, D)
      x = jnp.concatenate([jnp.broadcast_to(cls[:, None], (b, t, 1, d)), x], axis=2)
    x = common.AddPositionEmbedding(axis=2, name="spatial_pos_embedding")(x)
    x = nn.Dropout(config.dropout_rate)(x, deterministic=deterministic)
    # Spatial attention keeps temporal indices apart: one image encoder per index.
    x = common.Encoder(
      config, config.spatial_layers, attention.spatial_attention, name="spatial_encoder"
    )(x, deterministic=deterministic)
    # (B, T, 1+N, D) -> (B, T, D)
    frames = x[:, :, 0] if use_cls else jnp.mean(x, axis=2)

    if config.temporal_layers == 0:
      pre_logits = jnp.mean(frames, axis=1)  # (B, T, D) -> (B, D)
    else:
      h = frames
      if use_cls:
        cls = common.class_token(self, "temporal_cls", d).astype(h.dtype)
        # (B, T, D) -> (B, 1+T, D)
        h = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), h], axis=1)
      h = common.AddPositionEmbedding(axis=1, name="temporal_pos_embedding")(h)
      h = nn.Dropout(config.dropout_rate)(h, deterministic=deterministic)
      h = common.Encoder(
        config, config.temporal_layers, attention.joint_attention, name="temporal_encoder"
      )(h, deterministic=deterministic)
      pre_logits = h[:, 0] if use_cls else jnp.mean(h, axis=1)  # (B, 1+T, D) -> (B, D)

    pre_logits = pre_logits.astype(jnp.float32)
    logits = common.classification_head(pre_logits, self.num_classes)
    return logits, {"pre_logits": pre_logits, "frame_representations": frames.astype(jnp.float32)}
