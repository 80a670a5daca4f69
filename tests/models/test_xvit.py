"""Tests of X-ViT (vidtx/models/xvit.py): space-time mixing, TSM-ViT and summary tokens against
explicit key/value constructions in numpy, the whole model against a float64 reference, the
temporal receptive field, the parameter count, and the build/config/dtype contract."""

import functools

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
  ref_layer_norm,
  ref_mlp,
  ref_patches,
)
from scipy import special

from vidtx import models
from vidtx.models import attention, hparams, layers, xvit

jax.config.update("jax_numpy_rank_promotion", "raise")

# Tiny models: 8x8 frames in 4x4 patches (N = 4), D = 16, 2 heads, 2 layers, 4 frames.
TINY = dict(variant="Ti/4", hidden_size=16, num_heads=2, mlp_dim=32, num_layers=2)
NUM_CLASSES = 5
VIDEO_SHAPE = (2, 4, 8, 8, 3)  # (B, T, H, W, C)


def _video(seed=0, shape=VIDEO_SHAPE):
  return jax.random.normal(jax.random.key(seed), shape)


def _init_shapes(model, video_shape=VIDEO_SHAPE):
  return init_shapes(model, video_shape)


@functools.cache
def _tiny(**overrides):
  model = models.build("xvit", dict(TINY, **overrides), NUM_CLASSES)
  return model, random_like(_init_shapes(model))


# ----------------------------------------------------------------------------------------
# Numpy float64 reference: keys and values built channel by channel.
# ----------------------------------------------------------------------------------------


def ref_channel_offsets(num_channels, fraction, window):
  """For each channel, the frame offset it is read from (0: the frame's own), written out as
  the docstring states: blocks of floor(fraction * C / 2w) channels for +1, -1, +2, -2, ..."""
  per_offset = int(np.floor(fraction * num_channels / (2 * window) + 1e-9))
  offsets = np.zeros(num_channels, int)
  order = [sign * distance for distance in range(1, window + 1) for sign in (1, -1)]
  for j, offset in enumerate(order):
    offsets[j * per_offset : (j + 1) * per_offset] = offset
  return offsets


def ref_shift(a, offsets):
  """a (T, ..., C): out[t, ..., c] = a[t + offsets[c], ..., c], zero outside the clip."""
  out = np.zeros_like(a)
  for t in range(a.shape[0]):
    for c, offset in enumerate(offsets):
      if 0 <= t + offset < a.shape[0]:
        out[t, ..., c] = a[t + offset, ..., c]
  return out


def ref_mixing_attention(x, p, fraction=0.0, window=1, summaries=0, prefix=1):
  """Space-time mixing attention of one clip's tokens x (T, L, D), keys and values built by hand.

  Frame t's queries see: its own L tokens' keys/values with channels taken from frames t + offset
  (ref_channel_offsets), then R summaries of every frame (means of groups of patch tokens).
  """
  q, k, v = (
    np.einsum("tld,dhc->tlhc", x, p[n]["kernel"]) + p[n]["bias"] for n in ("query", "key", "value")
  )
  T, L, H, Dh = k.shape
  offsets = ref_channel_offsets(H * Dh, fraction, window)
  mixed_k, mixed_v = (
    ref_shift(a.reshape(T, L, H * Dh), offsets).reshape(T, L, H, Dh) for a in (k, v)
  )
  if summaries:
    N = L - prefix
    size = N // summaries
    summary_k, summary_v = (
      np.stack(
        [
          a[t, prefix + r * size : prefix + (r + 1) * size].mean(0)
          for t in range(T)
          for r in range(summaries)
        ]
      )
      for a in (k, v)
    )  # (T*R, H, Dh), frame-major.
  out = []
  for t in range(T):
    kt, vt = mixed_k[t], mixed_v[t]
    if summaries:
      kt, vt = np.concatenate([kt, summary_k]), np.concatenate([vt, summary_v])
    logits = np.einsum("qhc,khc->hqk", q[t], kt) / np.sqrt(Dh)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out.append(np.einsum("hqk,khc->qhc", weights, vt))
  y = np.stack(out)  # (T, L, H, Dh)
  return np.einsum("tqhc,hcd->tqd", y, p["out"]["kernel"]) + p["out"]["bias"]


def ref_xvit(params, video, **overrides):
  """X-ViT on one clip (T, H, W, C), written out token by token."""
  cfg = models.default_config("xvit")
  cfg.update(dict(TINY, **overrides))
  p = as_float64(params)
  x = ref_patches(np.asarray(video, np.float64), p["embedding"])  # (T, N, D)
  T, N, D = x.shape
  use_cls = cfg.classifier == "token"
  if use_cls:
    x = np.concatenate([np.broadcast_to(p["cls"][0], (T, 1, D)), x], axis=1)
  z = x + p["pos_embedding"]["embedding"] + p["time_embedding"]["embedding"][:, None]
  offsets = ref_channel_offsets(D, cfg.mixing_fraction, cfg.mixing_window)
  mixing = cfg.mixing_fraction if cfg.attention == "space_time_mixing" else 0.0
  for i in range(cfg.num_layers):
    b = p[f"encoderblock_{i}"]
    if cfg.attention == "tsm":
      z = ref_shift(z, offsets)  # In place: the residual carries the shifted tokens.
    z = z + ref_mixing_attention(
      ref_layer_norm(z, b["norm_attention"]),
      b["attention"],
      mixing,
      cfg.mixing_window,
      cfg.summary_tokens,
      int(use_cls),
    )
    z = z + ref_mlp(ref_layer_norm(z, b["norm_mlp"]), b["mlp"])
  z = ref_layer_norm(z, p["encoder_norm"])
  frames = z[:, 0] if use_cls else z.mean(1)
  if cfg.aggregation == "mean":
    y = frames.mean(0)
  else:
    h = np.concatenate([p["temporal_cls"][0], frames])  # (1+T, D)
    if cfg.temporal_pos_embedding:
      h = h + p["temporal_pos_embedding"]["embedding"]
    encoder = p["temporal_encoder"]
    for i in range(cfg.temporal_layers):
      b = encoder[f"encoderblock_{i}"]
      # One "frame" of 1+T tokens without mixing: full attention.
      h = h + ref_mixing_attention(ref_layer_norm(h, b["norm_attention"])[None], b["attention"])[0]
      h = h + ref_mlp(ref_layer_norm(h, b["norm_mlp"]), b["mlp"])
    y = ref_layer_norm(h, encoder["encoder_norm"])[0]
    if "head_hidden" in p:
      y = y @ p["head_hidden"]["kernel"] + p["head_hidden"]["bias"]
      y = 0.5 * y * (1 + special.erf(y / np.sqrt(2)))
  return y @ p["head"]["kernel"] + p["head"]["bias"]


# ----------------------------------------------------------------------------------------
# The mixing attention against explicit key/value construction.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "channels,fraction,window,frames",
  [(16, 0.25, 1, 4), (16, 0.5, 2, 4), (12, 1.0, 3, 3), (10, 0.3, 1, 5), (8, 0.0, 1, 3)],
)
def test_temporal_channel_shift_equals_per_channel_copy(channels, fraction, window, frames):
  x = np.random.default_rng(0).standard_normal((2, frames, 3, channels))
  got = xvit.temporal_channel_shift(jnp.asarray(x), fraction=fraction, window=window)
  offsets = ref_channel_offsets(channels, fraction, window)
  want = np.stack([ref_shift(clip, offsets) for clip in x])
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_released_shift_layout():
  """w = 1, fraction 1/4 of 768 channels = the released SHIFT_DIV 8: channels [0, 96) from frame
  t + 1, [96, 192) from t - 1, the rest unshifted."""
  offsets = ref_channel_offsets(768, 0.25, 1)
  assert (offsets[:96] == 1).all() and (offsets[96:192] == -1).all() and not offsets[192:].any()
  assert xvit.mixed_channels_per_offset(768, 0.5, 1) == 768 // 4  # SSv2: SHIFT_DIV 4.
  x = jnp.arange(3.0)[None, :, None, None] * jnp.ones((1, 3, 1, 768))  # Frame t holds t.
  y = xvit.temporal_channel_shift(x, fraction=0.25, window=1)[0, :, 0]
  np.testing.assert_array_equal(y[:, 0], [1, 2, 0])  # From t + 1; zero past the end.
  np.testing.assert_array_equal(y[:, 100], [0, 0, 1])  # From t - 1; zero before the start.
  np.testing.assert_array_equal(y[:, 200], [0, 1, 2])


@pytest.mark.parametrize(
  "fraction,window,summaries,prefix",
  [(0.25, 1, 0, 1), (0.5, 2, 0, 1), (0.25, 1, 1, 1), (0.5, 2, 2, 1), (0.25, 1, 5, 0)],
)
def test_space_time_mixing_equals_explicit_keys_and_values(fraction, window, summaries, prefix):
  b, t, length, d = 2, 4, 5, 16
  x = _video(1, (b, t, length, d))
  attention_fn = functools.partial(
    xvit.space_time_mixing_attention,
    num_frames=t,
    mixing_fraction=fraction,
    mixing_window=window,
    summary_tokens=summaries,
    num_prefix_tokens=prefix,
  )
  mha, params = random_attention(x[0], attention_fn=attention_fn)
  # (B, T, L, D) -> (B*T, L, D): frames of a clip consecutive on the batch axis.
  got = jax.jit(functools.partial(mha.apply, deterministic=True))(
    params, x.reshape(b * t, length, d)
  )
  p = as_float64(params["params"])
  want = np.stack(
    [
      ref_mixing_attention(np.asarray(clip, np.float64), p, fraction, window, summaries, prefix)
      for clip in x
    ]
  )
  np.testing.assert_allclose(np.asarray(got).reshape(b, t, length, d), want, atol=1e-5)


def test_zero_mixing_fraction_is_spatial_attention():
  b, t, length, d = 2, 3, 5, 16
  x = _video(2, (b, t, length, d))
  attention_fn = functools.partial(
    xvit.space_time_mixing_attention, num_frames=t, mixing_fraction=0.0
  )
  mixing, params = random_attention(x[0], attention_fn=attention_fn)
  plain = layers.MultiHeadAttention(num_heads=2)  # Same parameter names and shapes.
  got = mixing.apply(params, x.reshape(b * t, length, d), deterministic=True).reshape(x.shape)
  want = attention.spatial_attention(
    lambda tokens: plain.apply(params, tokens, deterministic=True), x
  )
  np.testing.assert_allclose(got, want, atol=1e-6)


# ----------------------------------------------------------------------------------------
# Whole models.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "overrides",
  [
    dict(),  # Released: mixing 1/4 over +-1 frame, temporal attention head with an MLP.
    dict(attention="tsm", aggregation="mean", summary_tokens=1),
    dict(
      mixing_fraction=0.5,
      mixing_window=2,
      summary_tokens=2,
      classifier="gap",
      temporal_layers=2,
      temporal_pos_embedding=True,
      head_mlp_dim=0,
    ),
  ],
)
def test_xvit_equals_reference(overrides):
  model, params = _tiny(**overrides)
  video = _video(3)
  logits, out = jitted_apply(model)({"params": params}, video)
  want = np.stack([ref_xvit(params, clip, **overrides) for clip in video])
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
  assert out["frame_representations"].shape == (2, 4, 16)


@pytest.mark.parametrize(
  "overrides,changed",
  [
    (dict(mixing_fraction=0.0), [0]),  # Spatial only: frames are independent.
    (dict(), [0, 1]),  # One layer of +-1 frame mixing.
    (dict(mixing_window=2, mixing_fraction=0.5), [0, 1, 2]),
    (dict(attention="tsm"), [0, 1]),
    (dict(summary_tokens=1), [0, 1, 2, 3]),  # Summaries reach every frame.
  ],
)
def test_temporal_receptive_field(overrides, changed):
  """One block sees +-window frames (X-ViT's local window); summary tokens see the whole clip."""
  model, params = _tiny(num_layers=1, aggregation="mean", **overrides)
  video = _video(4)
  apply = jitted_apply(model)
  frames = apply({"params": params}, video)[1]["frame_representations"]
  perturbed = apply({"params": params}, video.at[:, 0].add(1.0))[1]["frame_representations"]
  difference = np.abs(np.asarray(perturbed - frames)).max(axis=(0, 2))  # Per frame.
  assert list(np.flatnonzero(difference > 1e-4)) == changed, difference


def test_parameter_count_xvit_b16():
  """X-ViT-B/16, 8 frames, 224, K400 head. Neither the supplementary nor REFERENCE gives a
  figure, so this is a hand count of the released architecture (with q/k/v biases in the head's
  temporal block, which the released head lacks: it has 3 * 768 fewer, 93,790,864)."""
  d, mlp, n, t, k = 768, 3072, 196, 8, 400
  norm, attn = 2 * d, 4 * (d * d + d)
  block = norm + attn + norm + (d * mlp + mlp + mlp * d + d)
  stem = 16 * 16 * 3 * d + d + d + (n + 1) * d + t * d  # Patches, cls, posemb, time embedding.
  backbone = stem + 12 * block + norm
  head = d + block + norm + (d * d + d) + (d * k + k)  # cls, 1 block, norm, MLP head.
  shape = (1, 8, 224, 224, 3)

  def count(overrides):
    return num_params(_init_shapes(models.build("xvit", overrides, k), shape))

  assert count({}) == backbone + head == 93_793_168
  assert count(dict(attention="tsm", summary_tokens=1)) == 93_793_168  # Both are free.
  assert count(dict(aggregation="mean")) == backbone + d * k + k == 86_112_400


def test_parameter_names():
  model, _ = _tiny(temporal_pos_embedding=True)
  params = _init_shapes(model)
  assert set(params) == {
    "embedding",
    "cls",
    "pos_embedding",
    "time_embedding",
    "encoderblock_0",
    "encoderblock_1",
    "encoder_norm",
    "temporal_cls",
    "temporal_pos_embedding",
    "temporal_encoder",
    "head_hidden",
    "head",
  }
  # The backbone blocks are named as encoder.EncoderBlock's (an image ViT maps by name).
  assert set(params["encoderblock_0"]) == {"norm_attention", "attention", "norm_mlp", "mlp"}
  assert params["time_embedding"]["embedding"].shape == (4, 16)
  assert params["temporal_pos_embedding"]["embedding"].shape == (5, 16)
  assert set(_init_shapes(_tiny(aggregation="mean", classifier="gap")[0])) == {
    "embedding",
    "pos_embedding",
    "time_embedding",
    "encoderblock_0",
    "encoderblock_1",
    "encoder_norm",
    "head",
  }


def test_initial_time_embedding_and_head_are_zero():
  model, _ = _tiny()
  key = jax.random.key(0, impl="rbg")  # Quicker to compile than threefry on CPU.
  params = jax.jit(functools.partial(model.init, train=False))(
    {"params": key, "dropout": key}, _video()
  )["params"]
  assert not np.any(params["time_embedding"]["embedding"])
  assert not np.any(params["head"]["kernel"]) and not np.any(params["temporal_cls"])


def test_shapes_jit_and_eager():
  model, params = _tiny(num_layers=1, summary_tokens=1)  # One layer: eager is slow on CPU.
  video = _video(5)
  logits, out = jitted_apply(model)({"params": params}, video)
  assert logits.shape == (2, NUM_CLASSES) and logits.dtype == jnp.float32
  assert out["pre_logits"].shape == (2, 16) and out["pre_logits"].dtype == jnp.float32
  eager_logits, _ = model.apply({"params": params}, video, train=False)
  np.testing.assert_allclose(logits, eager_logits, atol=1e-5)
  # Any number of frames: the time embedding is sized by the clip.
  assert _init_shapes(model, (1, 6, 8, 8, 3))["time_embedding"]["embedding"].shape == (6, 16)


def test_bfloat16_compute():
  model, params = _tiny()
  bf16_model, _ = _tiny(dtype="bfloat16")
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(_init_shapes(bf16_model)))
  video = _video(6)
  logits, out = jitted_apply(bf16_model)({"params": params}, video)
  assert logits.dtype == jnp.float32 and out["pre_logits"].dtype == jnp.float32
  want, _ = jitted_apply(model)({"params": params}, video)
  np.testing.assert_allclose(logits, want, rtol=0.1, atol=0.1)


def test_dropout_only_in_training():
  model, params = _tiny(
    num_layers=1,
    dropout_rate=0.3,
    attention_dropout_rate=0.3,
    stochastic_depth=0.3,
    head_dropout_rate=0.5,
  )
  video = _video(7)
  evaluate, train = jitted_apply(model), jitted_apply(model, train=True)
  # 'rbg' keys: threefry random bits take seconds to compile on CPU.
  rngs = [{"dropout": jax.random.key(i, impl="rbg")} for i in range(2)]
  eval_logits = [evaluate({"params": params}, video, rngs=r)[0] for r in rngs]
  np.testing.assert_array_equal(eval_logits[0], eval_logits[1])
  train_logits = [train({"params": params}, video, rngs=r)[0] for r in rngs]
  assert not np.allclose(train_logits[0], train_logits[1], atol=1e-4)


# ----------------------------------------------------------------------------------------
# Configuration and input errors.
# ----------------------------------------------------------------------------------------


def test_default_config():
  config = models.default_config("xvit")
  assert config.attention == "space_time_mixing" and config.mixing_fraction == 0.25
  assert config.mixing_window == 1 and config.summary_tokens == 0
  assert config.aggregation == "temporal_attention" and config.temporal_layers == 1
  assert set(hparams.base_config()) < set(config)
  model = models.build("xvit", dict(variant="S/16"), 10)
  assert model.config.head_mlp_dim == 384  # None resolves to hidden_size.
  assert models.build("xvit", dict(aggregation="mean"), 10).config.head_mlp_dim == 0


@pytest.mark.parametrize(
  "overrides,message",
  [
    (dict(attention="divided"), "expected one of \\['space_time_mixing', 'tsm'\\]"),
    (dict(variant="B/16x2"), "X-ViT embeds single frames"),
    (dict(mixing_fraction=1.5), "model.mixing_fraction=1.5"),
    (dict(mixing_fraction="1/4"), "model.mixing_fraction"),
    (dict(mixing_fraction=0.05), "mixes no channel"),  # 0.05 * 16 / 2 < 1.
    (dict(mixing_window=0), "model.mixing_window"),
    (dict(summary_tokens=-1), "model.summary_tokens"),
    (dict(aggregation="max"), "model.aggregation"),
    (dict(temporal_layers=0), "model.temporal_layers"),
    (dict(temporal_pos_embedding=1), "model.temporal_pos_embedding"),
    (dict(head_mlp_dim=-2), "model.head_mlp_dim"),
    (dict(aggregation="mean", head_mlp_dim=32), "aggregation 'mean' has a linear head"),
    (dict(head_dropout_rate=1.0), "model.head_dropout_rate"),
    (dict(mixing_widow=2), "unknown field\\(s\\) \\['mixing_widow'\\]"),
  ],
)
def test_bad_config_raises(overrides, message):
  with pytest.raises(ValueError, match=message):
    models.build("xvit", dict(TINY, **overrides), 10)


def test_summary_tokens_must_divide_patches():
  model = models.build("xvit", dict(TINY, summary_tokens=3), 10)  # N = 4 patches.
  with pytest.raises(ValueError, match="summary_tokens=3 does not divide the 4 patch tokens"):
    _init_shapes(model)
