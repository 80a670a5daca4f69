"""Tests of the ViViT family (Models 1-4, ViViT 2103.15691 Sec. 3.3) and tubelet initialisation
(Sec. 3.2, 3.4): numpy float64 references with explicit attention masks over the whole token
sequence, Table 2 parameter counts, and the paper's initialisation claims."""

import functools
import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import (
  as_float64,
  init_shapes,
  jitted_apply,
  num_params,
  random_attention,
  random_like,
  ref_attention,
  ref_layer_norm,
  ref_mlp,
  ref_patches,
)

from vidtx import models
from vidtx.models import attention, kernels, tokenizer

jax.config.update("jax_numpy_rank_promotion", "raise")

# Tiny models: 6 frames of 8x8 in 2x4x4 tubelets, so T' = 3 temporal and N = 4 spatial indices
# (T' != N, so a mixed-up axis cannot pass); D = 16, 4 heads (2 per half in Model 4), 2 layers.
TINY = dict(variant="Ti/4x2", hidden_size=16, num_heads=4, mlp_dim=32, num_layers=2)
MODEL_1 = dict(TINY, attention="spatio_temporal")
MODEL_3 = dict(TINY, classifier="gap", attention="factorised_self_attention")
MODEL_4 = dict(TINY, classifier="gap", attention="factorised_dot_product")
NUM_CLASSES = 5
VIDEO_SHAPE = (2, 6, 8, 8, 3)  # (B, T, H, W, C)
T_TOKENS, N_TOKENS = 3, 4
# 'rbg' keys: threefry random bits take seconds to compile on CPU.
KEY = jax.random.key(0, impl="rbg")
# The initialisation claims hold block by block: one block keeps their compilation short.
ONE_LAYER = dict(num_layers=1)


def _video(seed=0, shape=VIDEO_SHAPE):
  # numpy: jax.random compiles anew for every shape, seconds each on CPU.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _init_shapes(model, video_shape=VIDEO_SHAPE):
  return init_shapes(model, video_shape)


def _init(model, video_shape=VIDEO_SHAPE):
  """The model's actual initial parameters."""
  init = jax.jit(functools.partial(model.init, train=False))
  return flax.core.unfreeze(init({"params": KEY, "dropout": KEY}, jnp.zeros(video_shape))["params"])


def _build(**config):
  return models.build("vivit", config, NUM_CLASSES)


# ----------------------------------------------------------------------------------------
# Numpy float64 reference: every model as attention over ALL tokens with explicit masks.
# ----------------------------------------------------------------------------------------


# Token i of the T'*N sequence sits at frame i // N and spatial index i % N.
_FRAME = np.repeat(np.arange(T_TOKENS), N_TOKENS)
_PLACE = np.tile(np.arange(N_TOKENS), T_TOKENS)
SAME_FRAME = _FRAME[:, None] == _FRAME[None, :]
SAME_PLACE = _PLACE[:, None] == _PLACE[None, :]


def ref_vivit(params, video, config):
  """Models 1, 3, 4 on one clip (T, H, W, C)."""
  p = as_float64(params)
  z = ref_patches(np.asarray(video, np.float64), p["embedding"], t=2)  # (T', N, D)
  z = z.reshape(-1, z.shape[-1])  # (T'*N, D), t-major.
  token = config.get("classifier", "token") == "token"
  if token:
    z = np.concatenate([p["cls"][0], z])
  z = z + p["pos_embedding"]["embedding"]
  heads = config["num_heads"]
  for i in range(config["num_layers"]):
    b = p["encoder"][f"encoderblock_{i}"]
    if config["attention"] == "spatio_temporal":
      mask = np.ones((len(z), len(z)), bool)
      z = z + ref_attention(ref_layer_norm(z, b["norm_attention"]), b["attention"], mask)
    elif config["attention"] == "factorised_dot_product":
      # Heads [0, H/2) see their frame, heads [H/2, H) their spatial index.
      mask = np.stack([SAME_FRAME] * (heads // 2) + [SAME_PLACE] * (heads // 2))
      z = z + ref_attention(ref_layer_norm(z, b["norm_attention"]), b["attention"], mask)
    else:
      order = config.get("attention_order", "space_time").split("_")
      for name in order:
        name, mask = {"space": ("spatial", SAME_FRAME), "time": ("temporal", SAME_PLACE)}[name]
        z = z + ref_attention(ref_layer_norm(z, b[f"norm_{name}"]), b[f"attention_{name}"], mask)
    z = z + ref_mlp(ref_layer_norm(z, b["norm_mlp"]), b["mlp"], approximate=True)  # tanh GELU.
  z = ref_layer_norm(z, p["encoder"]["encoder_norm"])
  pre_logits = z[0] if token else z.mean(0)
  return pre_logits @ p["head"]["kernel"] + p["head"]["bias"]


@pytest.mark.parametrize(
  "config",
  [
    MODEL_1,
    dict(MODEL_1, classifier="gap"),
    MODEL_3,
    dict(MODEL_3, attention_order="time_space"),
    MODEL_4,
  ],
  ids=["model1", "model1_gap", "model3", "model3_time_space", "model4"],
)
def test_model_equals_masked_reference(config):
  model = _build(**config)
  params = random_like(_init_shapes(model))  # Zero-initialised parameters take part too.
  video = _video(3)
  logits, out = jitted_apply(model)({"params": params}, video)
  want = np.stack([ref_vivit(params, clip, config) for clip in video])
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
  assert out["pre_logits"].shape == (2, 16) and out["pre_logits"].dtype == jnp.float32


def test_factorised_dot_product_attention_equals_head_masks():
  """attention.factorised_dot_product_attention inside MultiHeadAttention on (B, T, N, D)
  equals full attention with a space mask on the first half of the heads and a time mask on
  the second half, with the same weights."""
  b, t, n, d, heads = 2, T_TOKENS, N_TOKENS, 12, 6
  x = _video(shape=(b, t, n, d))
  fdpa = functools.partial(
    attention.factorised_dot_product_attention, kernels.dot_product_attention
  )
  mha, params = random_attention(x, num_heads=heads, attention_fn=fdpa, seed=1)
  got = jax.jit(functools.partial(mha.apply, deterministic=True))(params, x)
  mask = np.stack([SAME_FRAME] * 3 + [SAME_PLACE] * 3)
  p = as_float64(params["params"])
  want = np.stack(
    [ref_attention(np.asarray(xb, np.float64).reshape(t * n, d), p, mask) for xb in x]
  )
  np.testing.assert_allclose(np.asarray(got).reshape(b, t * n, d), want, atol=1e-5)

  q = jnp.zeros((1, 2, 3, 4, 2))
  with pytest.raises(ValueError, match="masks are not supported"):
    fdpa(q, q, q, mask=jnp.ones((1, 4, 6, 6), bool))
  with pytest.raises(ValueError, match="do not split in two halves"):
    fdpa(q[..., :3, :], q[..., :3, :], q[..., :3, :])
  with pytest.raises(ValueError, match="expected \\(B, T, N, heads, head_dim\\)"):
    fdpa(q[0], q[0], q[0])


# ----------------------------------------------------------------------------------------
# Parameter counts: ViViT Table 2 (B/16x2, 32 frames, 224, 400 classes).
# ----------------------------------------------------------------------------------------

TABLE_2 = [
  ("model1", dict(attention="spatio_temporal"), 88.9),
  ("model2", dict(attention="factorised_encoder"), 115.1),
  ("model3", dict(attention="factorised_self_attention", classifier="gap"), 117.3),
  ("model4", dict(attention="factorised_dot_product", classifier="gap"), 88.9),
  ("model2_average_pool", dict(attention="factorised_encoder", temporal_layers=0), 86.7),
]


def _table2_count(overrides):
  model = models.build("vivit", overrides, 400)
  return num_params(_init_shapes(model, (1, 32, 224, 224, 3)))


@pytest.mark.parametrize(
  "overrides,millions", [r[1:] for r in TABLE_2], ids=[r[0] for r in TABLE_2]
)
def test_parameter_counts_match_table2(overrides, millions):
  count = _table2_count(overrides)
  assert abs(count / 1e6 - millions) <= 0.1, count


def test_parameter_counts_exact():
  """Models 1, 3, 4 counted by hand: Model 4 adds nothing to Model 1 (its class token and
  that token's position aside), Model 3 adds one LayerNorm and attention per block."""
  d, mlp, tokens, k = 768, 3072, 16 * 196, 400
  norm, attn = 2 * d, 4 * (d * d + d)
  block = norm + attn + norm + d * mlp + mlp + mlp * d + d
  stem = 2 * 16 * 16 * 3 * d + d + tokens * d  # Tubelet embedding, positional embedding.
  top = norm + d * k + k  # Final norm, head.
  model4 = stem + 12 * block + top
  model1 = model4 + d + d  # Class token and its positional embedding.
  model3 = model4 + 12 * (norm + attn)
  assert _table2_count(TABLE_2[0][1]) == model1 == 88_954_000
  assert _table2_count(TABLE_2[2][1]) == model3 == 117_319_312
  assert _table2_count(TABLE_2[3][1]) == model4 == 88_952_464


def test_model4_has_the_parameters_of_model1():
  shapes = functools.partial(jax.tree.map, jnp.shape)
  model1 = _init_shapes(_build(**dict(MODEL_1, classifier="gap")))
  assert shapes(_init_shapes(_build(**MODEL_4))) == shapes(model1)
  assert set(model1) == {"embedding", "pos_embedding", "encoder", "head"}
  assert set(model1["encoder"]["encoderblock_0"]) == {
    "norm_attention",
    "attention",
    "norm_mlp",
    "mlp",
  }
  model3 = _init_shapes(_build(**MODEL_3))
  assert set(model3["encoder"]["encoderblock_0"]) == {
    "norm_spatial",
    "attention_spatial",
    "norm_temporal",
    "attention_temporal",
    "norm_mlp",
    "mlp",
  }
  assert model3["pos_embedding"]["embedding"].shape == (T_TOKENS * N_TOKENS, 16)
  assert _init_shapes(_build(**MODEL_1))["pos_embedding"]["embedding"].shape == (13, 16)


# ----------------------------------------------------------------------------------------
# Initialisation claims.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["space_time", "time_space"])
def test_model3_at_init_is_the_image_model_on_a_static_clip(order):
  """Sec. 3.4: with the temporal attention at zero (its initial output) and the positional
  embedding repeated over time (as initialised from an image model), Model 3 on a clip of one
  repeated image gives the image model's output: here the spatial-only Model 2 baseline
  (L_t = 0, 'gap') with the same weights, on a single tubelet."""
  model3 = _build(**dict(MODEL_3, **ONE_LAYER, attention_order=order))
  params = _init(model3)
  block = params["encoder"]["encoderblock_0"]
  temporal = block["attention_temporal"]
  assert not np.any(temporal["out"]["kernel"]) and not np.any(temporal["out"]["bias"])
  assert np.std(temporal["query"]["kernel"]) > 0.1  # Random: the branch can learn.
  # An image model's spatial embedding, repeated over the T' temporal indices.
  spatial_pos = params["pos_embedding"]["embedding"][:N_TOKENS]
  params["pos_embedding"]["embedding"] = jnp.tile(spatial_pos, (T_TOKENS, 1))
  params["head"] = random_like(params["head"], scale=1.0)  # The head starts at zero.

  image_model = _build(**dict(TINY, **ONE_LAYER, classifier="gap", temporal_layers=0))
  # The same weights under the image model's names: the spatial attention is its attention.
  image_block = {
    "norm_attention": block["norm_spatial"],
    "attention": block["attention_spatial"],
    "norm_mlp": block["norm_mlp"],
    "mlp": block["mlp"],
  }
  image_params = {
    "embedding": params["embedding"],
    "spatial_pos_embedding": {"embedding": spatial_pos},
    "spatial_encoder": {
      "encoderblock_0": image_block,
      "encoder_norm": params["encoder"]["encoder_norm"],
    },
    "head": params["head"],
  }
  shapes = functools.partial(jax.tree.map, jnp.shape)
  assert shapes(image_params) == shapes(_init_shapes(image_model, (2, 2, 8, 8, 3)))

  image = _video(7, (2, 2, 8, 8, 3))  # One tubelet: the image model's input.
  clip = jnp.tile(image, (1, 3, 1, 1, 1))  # (B, 2, ...) -> (B, 6, ...): 3 identical tubelets.
  want, _ = jitted_apply(image_model)({"params": image_params}, image)
  got, _ = jitted_apply(model3)({"params": params}, clip)
  assert np.abs(want).max() > 0.1
  np.testing.assert_allclose(got, want, atol=1e-5)


class _Embed(nn.Module):
  """A tubelet embedding (t > 0) or a frame embedding (t = 0), as the models call them."""

  tubelet_size: int
  method: str = "random"

  @nn.compact
  def __call__(self, video):
    if self.tubelet_size == 0:
      return tokenizer.frame_embedding(video, hidden_size=16, patch_size=4)
    return tokenizer.tubelet_embedding(
      video,
      hidden_size=16,
      patch_size=4,
      tubelet_size=self.tubelet_size,
      kernel_init_method=self.method,
    )


@pytest.mark.parametrize("t", [2, 3])
def test_tubelet_kernel_init_claims(t):
  """Eq. 9: a central-frame tubelet embedding is the 2D patch embedding of each tubelet's
  central frame (uniform frame sampling). Eq. 8: an inflated one embeds a clip of one repeated
  image as the 2D embedding of that image."""
  video = _video(11, (2, 2 * t, 8, 8, 3))
  embed_2d = jax.jit(_Embed(0).apply)
  bias = random_like(jnp.zeros(16))  # Zero at init: make it take part.

  central = _Embed(t, "central_frame")
  params = flax.core.unfreeze(central.init(KEY, video))
  kernel = params["params"]["embedding"]["kernel"]
  assert kernel.shape == (t, 4, 4, 3, 16)
  c = t // 2
  assert not np.any(np.delete(np.asarray(kernel), c, axis=0))
  # A fresh 2D kernel with the image model's fan-in (LeCun normal: std 1 / sqrt(4*4*3)).
  assert abs(float(np.std(kernel[c])) * math.sqrt(48) - 1) < 0.2
  params["params"]["embedding"]["bias"] = bias
  params_2d = {"params": {"embedding": {"kernel": kernel[c], "bias": bias}}}
  np.testing.assert_allclose(
    central.apply(params, video), embed_2d(params_2d, video[:, c::t]), atol=1e-5
  )

  inflated = _Embed(t, "inflate")
  params = flax.core.unfreeze(inflated.init(KEY, video))
  kernel = params["params"]["embedding"]["kernel"]
  np.testing.assert_allclose(kernel, jnp.broadcast_to(kernel[:1], kernel.shape))
  params["params"]["embedding"]["bias"] = bias
  params_2d = {"params": {"embedding": {"kernel": t * kernel[0], "bias": bias}}}
  image = video[:, :1]
  clip = jnp.tile(image, (1, 2 * t, 1, 1, 1))  # Two tubelets of the same image.
  want = embed_2d(params_2d, image)  # (B, 1, N, D)
  np.testing.assert_allclose(inflated.apply(params, clip), jnp.tile(want, (1, 2, 1, 1)), atol=1e-5)

  # 'random' is a full 3D kernel: no frame is zero, frames differ.
  kernel = _Embed(t).init(KEY, video)["params"]["embedding"]["kernel"]
  assert np.all(np.std(kernel, axis=(1, 2, 3, 4)) > 0) and not np.allclose(kernel[0], kernel[-1])


def test_kernel_rules_on_a_given_2d_kernel():
  k2 = random_like(jnp.zeros((4, 4, 3, 8)))
  inflated = tokenizer.inflate_kernel(k2, 4)
  assert inflated.shape == (4, 4, 4, 3, 8)
  for i in range(4):
    np.testing.assert_allclose(inflated[i], k2 / 4, rtol=1e-6)
  central = tokenizer.central_frame_kernel(k2, 4)
  np.testing.assert_array_equal(central[2], k2)
  assert not np.any(np.asarray(central)[[0, 1, 3]])
  np.testing.assert_array_equal(tokenizer.kernel_from_2d(k2, 3, "central_frame")[1], k2)
  for method in ("inflate", "central_frame"):  # t = 1: the 2D kernel itself.
    np.testing.assert_allclose(tokenizer.kernel_from_2d(k2, 1, method)[0], k2)
  with pytest.raises(ValueError, match="one of \\['inflate', 'central_frame'\\]"):
    tokenizer.kernel_from_2d(k2, 2, "random")
  with pytest.raises(ValueError, match="expected shape \\[h, w, C, D\\]"):
    tokenizer.inflate_kernel(inflated, 2)
  with pytest.raises(ValueError, match="tubelet_size=0"):
    tokenizer.central_frame_kernel(k2, 0)


@pytest.mark.parametrize("attention_name", ["spatio_temporal", "factorised_encoder"])
def test_central_frame_model_is_uniform_frame_sampling_at_init(attention_name):
  """Sec. 3.4: with central-frame tubelets, a whole ViViT (Model 1 or 2) at initialisation is
  the same model with 1-frame patches on the central frame of every tubelet."""
  config = dict(TINY, **ONE_LAYER, attention=attention_name, temporal_layers=1)
  tubelet = _build(**config, kernel_init_method="central_frame")
  params = _init(tubelet)
  params["head"] = random_like(params["head"], scale=1.0)  # The head starts at zero.
  kernel = params["embedding"]["kernel"]
  frames = _build(**dict(config, variant="Ti/4"))
  frame_params = dict(params, embedding=dict(params["embedding"], kernel=kernel[1:2]))
  video = _video(12)
  want, _ = jitted_apply(frames)({"params": frame_params}, video[:, 1::2])  # Frames 1, 3, 5.
  got, _ = jitted_apply(tubelet)({"params": params}, video)
  assert np.abs(want).max() > 0.1
  np.testing.assert_allclose(got, want, atol=1e-5)


# ----------------------------------------------------------------------------------------
# Training mode and configuration.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [MODEL_3, MODEL_4], ids=["model3", "model4"])
def test_dropout_only_in_training(config):
  regularised = dict(
    config, num_layers=1, dropout_rate=0.3, attention_dropout_rate=0.3, stochastic_depth=0.3
  )
  model = _build(**regularised)
  params = random_like(_init_shapes(model))
  video = _video(9)
  rngs = [{"dropout": jax.random.key(i, impl="rbg")} for i in range(2)]
  evaluate, train = jitted_apply(model), jitted_apply(model, train=True)
  np.testing.assert_array_equal(
    evaluate({"params": params}, video, rngs=rngs[0])[0],
    evaluate({"params": params}, video, rngs=rngs[1])[0],
  )
  train_logits = [train({"params": params}, video, rngs=r)[0] for r in rngs]
  assert not np.allclose(train_logits[0], train_logits[1], atol=1e-4)


def test_default_config():
  config = models.default_config("vivit")
  assert config.attention == "factorised_encoder" and config.temporal_layers == 4
  assert config.attention_order == "space_time" and config.kernel_init_method == "random"


@pytest.mark.parametrize(
  "overrides,message",
  [
    (dict(attention="divided"), "expected one of \\['spatio_temporal', 'factorised_encoder', "),
    (dict(MODEL_3, attention_order="spatial_first"), "model.attention_order='spatial_first'"),
    (dict(kernel_init_method="inflation"), "model.kernel_init_method='inflation'"),
    (dict(MODEL_3, classifier="token"), "no class token .*set model.classifier='gap'"),
    (dict(MODEL_4, classifier="token"), "no class token .*set model.classifier='gap'"),
    (dict(MODEL_4, hidden_size=18, num_heads=3), "model.num_heads=3: .*expected an even"),
  ],
)
def test_bad_config_raises(overrides, message):
  with pytest.raises(ValueError, match=message):
    models.build("vivit", overrides, 10)
