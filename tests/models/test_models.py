"""Tests of vidtx.models: paper parameter counts, whole tiny models against brute-force
references, the TimeSformer initialisation claim, and the build/config/dtype contract. The
attention patterns are tested in test_attention.py, the layers in test_layers.py."""

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
  random_like,
  ref_attention,
  ref_layer_norm,
  ref_mlp,
  ref_patches,
)

from vidtx import models

jax.config.update("jax_numpy_rank_promotion", "raise")

# Tiny models: 8x8 frames in 4x4 patches (N = 4), D = 16, 2 heads, 2 layers.
TINY = dict(variant="Ti/4", hidden_size=16, num_heads=2, mlp_dim=32, num_layers=2)
TINY_VIVIT = dict(TINY, variant="Ti/4x2", temporal_layers=2)
NUM_CLASSES = 5
VIDEO_SHAPE = (2, 4, 8, 8, 3)  # (B, T, H, W, C)


def _video(seed=0, shape=VIDEO_SHAPE):
  return jax.random.normal(jax.random.key(seed), shape)


def _init_shapes(model, video_shape=VIDEO_SHAPE):
  return init_shapes(model, video_shape)


@functools.cache
def _tiny(model_name, **overrides):
  """(module, random parameters) of a tiny model.

  Every parameter is random, so that the zero initialisers (head, temporal_fc, time
  embedding) take part in what the tests compare.
  """
  config = dict(TINY_VIVIT if model_name == "vivit" else TINY, **overrides)
  model = models.build(model_name, config, NUM_CLASSES)
  return model, random_like(_init_shapes(model))


# ----------------------------------------------------------------------------------------
# Numpy float64 reference: explicit masks over the full token sequence.
# ----------------------------------------------------------------------------------------


def ref_timesformer(params, video, scheme):
  """TimeSformer on one clip (T, H, W, C) as attention over ALL tokens with masks."""
  p = as_float64(params)
  x = ref_patches(np.asarray(video, np.float64), p["embedding"])  # (T, N, D)
  T, N, D = x.shape
  pos = p["pos_embedding"]["embedding"]
  cls = p["cls"][0, 0] + pos[0]
  blocks = [p[f"encoderblock_{i}"] for i in range(TINY["num_layers"])]
  if scheme == "space":
    # T copies of [cls, frame t]: z (T*(1+N), D); a token sees its own frame only.
    z = np.concatenate([np.broadcast_to(cls, (T, 1, D)), x + pos[1:]], axis=1)
    z = z.reshape(T * (1 + N), D)
    frame = np.repeat(np.arange(T), 1 + N)
    mask = frame[:, None] == frame[None, :]
    for b in blocks:
      z = z + ref_attention(ref_layer_norm(z, b["norm_spatial"]), b["attention_spatial"], mask)
      z = z + ref_mlp(ref_layer_norm(z, b["norm_mlp"]), b["mlp"], False)
    z = z.reshape(T, 1 + N, D).mean(0)
    return ref_layer_norm(z[0], p["encoder_norm"]) @ p["head"]["kernel"] + p["head"]["bias"]

  # Divided: z = [cls, patch (t=0, n=0), (0, 1), ...], length 1 + T*N.
  x = x + pos[1:] + p["time_embedding"]["embedding"][:, None]
  z = np.concatenate([cls[None], x.reshape(T * N, D)])
  frame = np.concatenate([[-1], np.repeat(np.arange(T), N)])  # -1: the class token.
  where = np.concatenate([[-1], np.tile(np.arange(N), T)])
  same_place = where[1:, None] == where[None, 1:]  # Among the patch tokens only.
  for b in blocks:
    y = ref_attention(
      ref_layer_norm(z[1:], b["norm_temporal"]), b["attention_temporal"], same_place
    )
    z[1:] += y @ b["temporal_fc"]["kernel"] + b["temporal_fc"]["bias"]
    zn = ref_layer_norm(z, b["norm_spatial"])
    # A patch sees the class token and its own frame.
    mask = (frame[:, None] == frame[None, :]) | (frame[None, :] == -1)
    y = ref_attention(zn, b["attention_spatial"], mask)
    # The class token sees itself and frame t, for every t; the T results are averaged.
    y_cls = []
    for t in range(T):
      mask_t = mask.copy()
      mask_t[0] = (frame == -1) | (frame == t)
      y_cls.append(ref_attention(zn, b["attention_spatial"], mask_t)[0])
    z[1:] += y[1:]
    z[0] += np.mean(y_cls, axis=0)
    z = z + ref_mlp(ref_layer_norm(z, b["norm_mlp"]), b["mlp"], False)
  return ref_layer_norm(z[0], p["encoder_norm"]) @ p["head"]["kernel"] + p["head"]["bias"]


def ref_encoder(z, p, num_layers, approximate):
  mask = np.ones((len(z), len(z)), bool)
  for i in range(num_layers):
    b = p[f"encoderblock_{i}"]
    z = z + ref_attention(ref_layer_norm(z, b["norm_attention"]), b["attention"], mask)
    z = z + ref_mlp(ref_layer_norm(z, b["norm_mlp"]), b["mlp"], approximate)
  return ref_layer_norm(z, p["encoder_norm"])


def ref_vivit(params, video):
  """ViViT factorised encoder (classifier 'token') on one clip (T, H, W, C)."""
  p = as_float64(params)
  x = ref_patches(np.asarray(video, np.float64), p["embedding"], t=2)  # (T', N, D)
  pos = p["spatial_pos_embedding"]["embedding"]
  frames = []
  for tokens in x:  # Each temporal index on its own.
    z = np.concatenate([p["spatial_cls"][0], tokens]) + pos
    frames.append(ref_encoder(z, p["spatial_encoder"], TINY["num_layers"], True)[0])
  z = np.concatenate([p["temporal_cls"][0], np.stack(frames)])
  z = z + p["temporal_pos_embedding"]["embedding"]
  z = ref_encoder(z, p["temporal_encoder"], TINY_VIVIT["temporal_layers"], True)
  return z[0] @ p["head"]["kernel"] + p["head"]["bias"]


# ----------------------------------------------------------------------------------------
# Parameter counts.
# ----------------------------------------------------------------------------------------


def _param_count(model_name, overrides, num_classes, video_shape):
  model = models.build(model_name, overrides, num_classes)
  return num_params(init_shapes(model, video_shape))


# TimeSformer Table 1 / ViViT Table 2, in millions. The TimeSformer figures are those of the
# official model with a Something-Something-V2 head (174 classes): with a 400-class head the
# same model has 121.57 M / 86.11 M (exact counts below), so Table 1 (which reports both
# datasets) evidently counted the SSv2 model.
@pytest.mark.parametrize(
  "model_name,overrides,num_classes,video_shape,millions",
  [
    ("timesformer", dict(attention="divided"), 174, (1, 8, 224, 224, 3), 121.4),
    ("timesformer", dict(attention="space"), 174, (1, 8, 224, 224, 3), 85.9),
    ("vivit", dict(temporal_layers=4), 400, (1, 32, 224, 224, 3), 115.1),
    ("vivit", dict(temporal_layers=0), 400, (1, 32, 224, 224, 3), 86.7),
  ],
)
def test_parameter_counts_match_papers(model_name, overrides, num_classes, video_shape, millions):
  count = _param_count(model_name, overrides, num_classes, video_shape)
  assert abs(count / 1e6 - millions) <= 0.1, count


def test_timesformer_parameter_count_exact():
  """TimeSformer-B/16, 8 frames, 224, K400 head, counted by hand from the official model."""
  d, mlp, n, t, k = 768, 3072, 196, 8, 400
  norm, attn, dense = 2 * d, 4 * (d * d + d), d * d + d
  mlp_params = d * mlp + mlp + mlp * d + d
  vit_block = norm + attn + norm + mlp_params
  stem = 16 * 16 * 3 * d + d + d + (n + 1) * d  # Patch embedding, class token, posemb.
  top = norm + d * k + k  # Final norm, head.
  space = stem + 12 * vit_block + top
  divided = space + t * d + 12 * (norm + attn + dense)  # Time embedding, temporal parts.
  assert _param_count("timesformer", dict(attention="space"), k, (1, 8, 224, 224, 3)) == space
  assert _param_count("timesformer", {}, k, (1, 8, 224, 224, 3)) == divided == 121_566_352


# ----------------------------------------------------------------------------------------
# Models against the brute-force references.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["divided", "space"])
def test_timesformer_equals_masked_reference(scheme):
  model, params = _tiny("timesformer", attention=scheme)
  video = _video(3)
  logits, _ = jitted_apply(model)({"params": params}, video)
  want = np.stack([ref_timesformer(params, clip, scheme) for clip in video])
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)


def test_vivit_equals_reference():
  model, params = _tiny("vivit")
  video = _video(4)
  logits, out = jitted_apply(model)({"params": params}, video)
  want = np.stack([ref_vivit(params, clip) for clip in video])
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
  assert out["frame_representations"].shape == (2, 2, 16)


def test_vivit_average_pool_baseline():
  """L_t = 0: pre-logits are the mean of the per-frame representations; a frame's
  representation depends on its own tubelet only (spatial encoder per temporal index)."""
  model, params = _tiny("vivit", temporal_layers=0)
  assert not any(k.startswith("temporal") for k in params)
  video = _video(5)
  apply = jitted_apply(model)
  _, out = apply({"params": params}, video)
  np.testing.assert_allclose(out["pre_logits"], out["frame_representations"].mean(1), atol=1e-6)
  _, changed = apply({"params": params}, video.at[:, 2:].add(1.0))  # Tubelet 1 only.
  frames, frames_changed = out["frame_representations"], changed["frame_representations"]
  np.testing.assert_allclose(frames_changed[:, 0], frames[:, 0], atol=1e-6)
  assert not np.allclose(frames_changed[:, 1], frames[:, 1], atol=1e-3)


def test_frame_order_space_invariant_divided_not():
  video = _video(6)
  permuted = video[:, ::-1]
  model, params = _tiny("timesformer", attention="space")
  apply = jitted_apply(model)
  np.testing.assert_allclose(
    apply({"params": params}, permuted)[0], apply({"params": params}, video)[0], atol=1e-5
  )
  # Divided attention sees frame order through the time embedding (non-zero here, as
  # temporal_fc is); with both at zero it would be permutation invariant too.
  model, params = _tiny("timesformer", attention="divided")
  apply = jitted_apply(model)
  assert not np.allclose(
    apply({"params": params}, permuted)[0], apply({"params": params}, video)[0], atol=1e-3
  )


def test_divided_at_init_equals_space_only_on_static_clip():
  """TimeSformer's init claim: with temporal_fc and the time embedding at zero (their
  initial values), divided attention on a static clip is the space-only model."""
  divided, _ = _tiny("timesformer", attention="divided")
  space, _ = _tiny("timesformer", attention="space")
  key = jax.random.key(0, impl="rbg")  # Quicker to compile than threefry on CPU.
  params = jax.jit(functools.partial(divided.init, train=False))(
    {"params": key, "dropout": key}, _video()
  )["params"]
  for block in range(TINY["num_layers"]):
    b = params[f"encoderblock_{block}"]
    assert not np.any(b["temporal_fc"]["kernel"]) and not np.any(b["temporal_fc"]["bias"])
  assert not np.any(params["time_embedding"]["embedding"])
  params["head"] = random_like(params["head"], scale=1.0)  # The head starts at zero.
  shared = {k: v for k, v in params.items() if k != "time_embedding"}
  for block in range(TINY["num_layers"]):
    shared[f"encoderblock_{block}"] = {
      k: v
      for k, v in params[f"encoderblock_{block}"].items()
      if k not in ("norm_temporal", "attention_temporal", "temporal_fc")
    }
  # The space-only model's parameters are exactly the shared ones, by name and shape.
  assert jax.tree.map(jnp.shape, shared) == jax.tree.map(jnp.shape, _init_shapes(space))

  image = _video(7, (2, 1, 8, 8, 3))
  clip = jnp.broadcast_to(image, VIDEO_SHAPE)
  logits_divided, out_divided = jitted_apply(divided)({"params": params}, clip)
  logits_space, out_space = jitted_apply(space)({"params": shared}, clip)
  assert np.abs(logits_space).max() > 0.1
  np.testing.assert_allclose(logits_divided, logits_space, atol=1e-5)
  np.testing.assert_allclose(out_divided["pre_logits"], out_space["pre_logits"], atol=1e-5)


# ----------------------------------------------------------------------------------------
# Interface: shapes, jit, dropout, dtype, parameter names.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "model_name,overrides,eager",
  [
    ("timesformer", dict(attention="divided"), True),
    ("timesformer", dict(attention="space", classifier="gap"), False),
    ("vivit", dict(), True),
    ("vivit", dict(classifier="gap", temporal_layers=0), False),
  ],
)
def test_shapes_and_jit(model_name, overrides, eager):
  model, params = _tiny(model_name, **overrides)
  video = _video(8)
  logits, out = jitted_apply(model)({"params": params}, video)
  assert logits.shape == (2, NUM_CLASSES) and logits.dtype == jnp.float32
  assert out["pre_logits"].shape == (2, 16) and out["pre_logits"].dtype == jnp.float32
  if eager:  # Op by op: slow on CPU, so once per model family.
    eager_logits, _ = model.apply({"params": params}, video, train=False)
    np.testing.assert_allclose(logits, eager_logits, atol=1e-5)


def test_timesformer_parameter_names():
  model, _ = _tiny("timesformer")
  params = _init_shapes(model)
  assert set(params) == {
    "embedding",
    "cls",
    "pos_embedding",
    "time_embedding",
    "encoderblock_0",
    "encoderblock_1",
    "encoder_norm",
    "head",
  }
  assert set(params["encoderblock_0"]) == {
    "norm_temporal",
    "attention_temporal",
    "temporal_fc",
    "norm_spatial",
    "attention_spatial",
    "norm_mlp",
    "mlp",
  }
  attn = params["encoderblock_0"]["attention_spatial"]
  assert attn["query"]["kernel"].shape == (16, 2, 8)  # [D, heads, head_dim], vit_jax.
  assert attn["out"]["kernel"].shape == (2, 8, 16)
  assert params["embedding"]["kernel"].shape == (4, 4, 3, 16)
  assert params["pos_embedding"]["embedding"].shape == (1 + 4, 16)
  assert params["time_embedding"]["embedding"].shape == (4, 16)


@pytest.mark.parametrize("model_name", ["timesformer", "vivit"])
def test_dropout_only_in_training(model_name):
  # One layer: every dropout site is in it, and random bits are slow to compile on CPU.
  one_layer = dict(num_layers=1, **(dict(temporal_layers=1) if model_name == "vivit" else {}))
  model, params = _tiny(
    model_name, dropout_rate=0.3, attention_dropout_rate=0.3, stochastic_depth=0.3, **one_layer
  )
  video = _video(9)
  evaluate, train = jitted_apply(model), jitted_apply(model, train=True)
  # 'rbg' keys: threefry random bits take seconds to compile on CPU.
  rngs = [{"dropout": jax.random.key(i, impl="rbg")} for i in range(2)]
  eval_logits = [evaluate({"params": params}, video, rngs=r)[0] for r in rngs]
  np.testing.assert_array_equal(eval_logits[0], eval_logits[1])
  train_logits = [train({"params": params}, video, rngs=r)[0] for r in rngs]
  assert not np.allclose(train_logits[0], train_logits[1], atol=1e-4)


@pytest.mark.parametrize("model_name", ["timesformer", "vivit"])
def test_bfloat16_compute(model_name):
  model, params = _tiny(model_name)
  bf16_model, _ = _tiny(model_name, dtype="bfloat16")
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(_init_shapes(bf16_model)))
  video = _video(10)
  logits, out = jitted_apply(bf16_model)({"params": params}, video)
  assert logits.dtype == jnp.float32 and out["pre_logits"].dtype == jnp.float32
  want, _ = jitted_apply(model)({"params": params}, video)
  np.testing.assert_allclose(logits, want, rtol=0.1, atol=0.1)


# ----------------------------------------------------------------------------------------
# Configuration and input errors.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "model_name,overrides,message",
  [
    ("transformer", {}, "unknown model; expected one of \\['timesformer', 'vivit', 'xvit'\\]"),
    ("timesformer", dict(attention="joint_space_time"), "expected one of \\['divided', 'space'"),
    ("timesformer", dict(hidden_size=100), "hidden_size=100 is not divisible"),
    ("timesformer", dict(variant="B/16x2"), "TimeSformer embeds single frames"),
    ("timesformer", dict(variant="Base/16"), "model.variant"),
    ("timesformer", dict(atention="space"), "unknown field\\(s\\) \\['atention'\\]"),
    ("timesformer", dict(classifier="cls"), "model.classifier"),
    ("timesformer", dict(dropout_rate=1.5), "model.dropout_rate"),
    ("timesformer", dict(dtype="float16"), "model.dtype"),
    ("timesformer", dict(num_layers=0), "model.num_layers"),
    (
      "vivit",
      dict(attention="divided"),
      "expected one of \\['spatio_temporal', 'factorised_encoder', ",
    ),
    ("vivit", dict(temporal_layers=-1), "model.temporal_layers"),
  ],
)
def test_bad_config_raises(model_name, overrides, message):
  with pytest.raises(ValueError, match=message):
    models.build(model_name, overrides, 10)


@pytest.mark.parametrize(
  "model_name,video_shape,message",
  [
    ("timesformer", (1, 4, 10, 8, 3), "not divisible by the patch size"),
    ("vivit", (1, 3, 8, 8, 3), "not divisible by the tubelet length"),
    ("vivit", (1, 4, 8, 8), "expected shape \\(B, T, H, W, C\\)"),
  ],
)
def test_bad_video_raises(model_name, video_shape, message):
  model = models.build(model_name, TINY_VIVIT if model_name == "vivit" else TINY, 10)
  with pytest.raises(ValueError, match=message):
    init_shapes(model, video_shape)


def test_temporal_init_image_starts_at_zero_random_does_not():
  """'image' (official) zeroes the time embedding and temporal_fc; 'random' (from scratch) makes
  the model sensitive to frame order from the first step."""
  video = _video()
  reversed_video = video[:, ::-1]
  for temporal_init in ("image", "random"):
    model = models.build("timesformer", dict(TINY, temporal_init=temporal_init), NUM_CLASSES)
    params = jax.jit(lambda v, m=model: m.init(jax.random.key(0), v, train=False))(video)["params"]
    time_embedding = params["time_embedding"]["embedding"]
    fc = params["encoderblock_0"]["temporal_fc"]["kernel"]
    # The zero-initialised head hides differences: look at the features instead.
    out = model.apply({"params": params}, video, train=False)[1]["pre_logits"]
    out_reversed = model.apply({"params": params}, reversed_video, train=False)[1]["pre_logits"]
    if temporal_init == "image":
      assert not np.any(time_embedding) and not np.any(fc)
      np.testing.assert_allclose(out, out_reversed, atol=1e-5)
    else:
      assert 0.3 < float(jnp.std(time_embedding)) < 0.8 and np.any(fc)
      assert float(jnp.max(jnp.abs(out - out_reversed))) > 1e-2
  with pytest.raises(ValueError, match="temporal_init"):
    models.build("timesformer", dict(TINY, temporal_init="xavier"), NUM_CLASSES)
