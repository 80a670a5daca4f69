"""vidtx.rollout, attention maps and rollout: the sown weights are the attention; the group-wise
rollout equals dense matrix products written out token by token; closed forms; invariants;
pictures. The synthetic demo is tested in tests/tools/test_rollout_demo.py."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference

from vidtx import models, rollout
from vidtx.models import layers

jax.config.update("jax_numpy_rank_promotion", "raise")

T, SIZE, PATCH = 4, 16, 8  # 4 frames of 16 x 16: a 2 x 2 patch grid.
H = W = SIZE // PATCH
N = H * W
SHAPE = (2, T, SIZE, SIZE, 3)
TINY = dict(variant=f"Ti/{PATCH}", hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)


def build(model_name: str, **overrides):
  """A tiny model with every parameter random (zero-initialised ones would hide mistakes)."""
  model = models.build(model_name, dict(TINY, **overrides), 3)
  params = reference.random_like(reference.init_shapes(model, SHAPE), seed=1)
  clips = np.random.RandomState(0).randn(*SHAPE).astype(np.float32)
  return model, params, clips


def sown(model, params, clips):
  (logits, _), state = model.apply(
    {"params": params}, clips, train=False, mutable=["intermediates"]
  )
  return logits, jax.tree.map(np.asarray, state["intermediates"])


def fused(weights):
  return np.asarray(weights[0]).mean(axis=1)  # sow's tuple; (G, heads, L, L) -> (G, L, L)


# ---------------------------------------------------------------------------------------------
# The attention maps.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_mask", [False, True])
def test_sown_weights_reproduce_the_attention_output(with_mask):
  attention = layers.MultiHeadAttention(num_heads=2)
  x = jnp.asarray(np.random.RandomState(0).randn(3, 5, 8), jnp.float32)
  mask = np.tril(np.ones((5, 5), bool))[None, None] if with_mask else None
  variables = attention.init(jax.random.key(0), x, deterministic=True, mask=mask)
  p = variables["params"]
  out, state = attention.apply(
    variables, x, deterministic=True, mask=mask, mutable=["intermediates"]
  )
  weights = state["intermediates"]["attention_weights"][0]
  assert weights.shape == (3, 2, 5, 5)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
  if with_mask:
    assert np.all(np.asarray(weights)[:, :, ~np.tril(np.ones((5, 5), bool))] == 0)
  # The output written out from the weights: out(sum_k w_qk v_k).
  value = jnp.einsum("bld,dhc->blhc", x, p["value"]["kernel"]) + p["value"]["bias"][None, None]
  mixed = jnp.einsum("bhqk,bkhc->bqhc", weights, value)
  expected = jnp.einsum("bqhc,hcd->bqd", mixed, p["out"]["kernel"]) + p["out"]["bias"][None, None]
  np.testing.assert_allclose(out, expected, atol=1e-5)
  # Not asked for: nothing is sown and the output is the same.
  plain = attention.apply(variables, x, deterministic=True, mask=mask)
  np.testing.assert_allclose(plain, out, atol=1e-6)


def test_no_weights_unless_asked():
  model, params, clips = build("timesformer")
  _, state = model.apply({"params": params}, clips, train=False, mutable=["params"])
  assert "intermediates" not in state


# ---------------------------------------------------------------------------------------------
# Dense references: an (M x M) matrix per stage, filled token by token from the sown weights.
# ---------------------------------------------------------------------------------------------


def mixing(attention_rows):
  """(I + A) / 2 for rows that attend, the identity's row for tokens a stage leaves out."""
  m = attention_rows.shape[0]
  attends = attention_rows.sum(-1) > 0
  return np.where(attends[:, None], 0.5 * (np.eye(m) + attention_rows), np.eye(m))


def patch(t, n):
  return 1 + t * N + n  # Token positions: class token 0, then frames.


def dense_temporal(weights, b):
  a = np.zeros((1 + T * N,) * 2)
  for n, t1, t2 in itertools.product(range(N), range(T), range(T)):
    a[patch(t1, n), patch(t2, n)] = weights[b * N + n, t1, t2]  # Groups (B*N, T): (b, n).
  return a


def dense_spatial_with_cls(weights, b):
  a = np.zeros((1 + T * N,) * 2)
  for t in range(T):
    w = weights[b * T + t]  # Group (b, t): [class token copy, N patches of frame t].
    position = [0] + [patch(t, n) for n in range(N)]
    for i, j in itertools.product(range(1 + N), range(1 + N)):
      if i == 0:
        a[0, position[j]] += w[0, j] / T  # The copies' rows are averaged.
      else:
        a[position[i], position[j]] += w[i, j]
  return a


def dense_joint(weights, b):
  return weights[b].astype(np.float64)  # One group: [class token, all patches in order].


def dense_heat(stages, readout):
  """stages: matrices in the order the model applies them; heat (T, h, w) of readout R."""
  total = np.eye(len(readout))
  for matrix in stages:
    total = matrix @ total
  return (readout @ total)[1:].reshape(T, H, W)


def test_divided_equals_dense_reference():
  model, params, clips = build("timesformer", attention="divided")
  logits, inter = sown(model, params, clips)
  got_logits, heat = rollout.rollout(model, params, clips)
  np.testing.assert_allclose(got_logits, logits, atol=1e-5)
  for b in range(SHAPE[0]):
    stages = []
    for i in range(TINY["num_layers"]):
      block = inter[f"encoderblock_{i}"]
      stages.append(
        mixing(dense_temporal(fused(block["attention_temporal"]["attention_weights"]), b))
      )
      stages.append(
        mixing(dense_spatial_with_cls(fused(block["attention_spatial"]["attention_weights"]), b))
      )
    expected = dense_heat(stages, np.eye(1 + T * N)[0])
    np.testing.assert_allclose(heat[b], expected, atol=1e-5)


@pytest.mark.parametrize(
  "model_name,overrides,block_path",
  [
    ("timesformer", dict(attention="joint"), ("encoderblock_{i}", "attention_joint")),
    # ViViT Model 1, tubelets of 1 frame: the same token layout, its encoder's own paths.
    ("vivit", dict(attention="spatio_temporal"), ("encoder", "encoderblock_{i}", "attention")),
  ],
  ids=["timesformer-joint", "vivit-model-1"],
)
def test_joint_equals_dense_reference(model_name, overrides, block_path):
  model, params, clips = build(model_name, **overrides)
  _, inter = sown(model, params, clips)
  _, heat = rollout.rollout(model, params, clips)

  def weights(i):
    node = inter
    for key in block_path:
      node = node[key.format(i=i)]
    return fused(node["attention_weights"])

  for b in range(SHAPE[0]):
    stages = [mixing(dense_joint(weights(i), b)) for i in range(TINY["num_layers"])]
    np.testing.assert_allclose(heat[b], dense_heat(stages, np.eye(1 + T * N)[0]), atol=1e-5)


def test_parallel_sums_both_stages():
  # x' = x + T(x) + S(x): a patch's row is (e + A_t + A_s) / 3, the class token's (e + A_s) / 2.
  model, params, clips = build("timesformer", attention="parallel")
  _, inter = sown(model, params, clips)
  _, heat = rollout.rollout(model, params, clips)
  b = 1
  stages = []
  for i in range(TINY["num_layers"]):
    block = inter[f"encoderblock_{i}"]
    a_t = dense_temporal(fused(block["attention_temporal"]["attention_weights"]), b)
    a_s = dense_spatial_with_cls(fused(block["attention_spatial"]["attention_weights"]), b)
    parts = 1 + (a_t.sum(-1) > 0) + (a_s.sum(-1) > 0)
    stages.append((np.eye(1 + T * N) + a_t + a_s) / parts[:, None])
  np.testing.assert_allclose(heat[b], dense_heat(stages, np.eye(1 + T * N)[0]), atol=1e-5)


def test_space_only_reads_the_average_of_the_frames_class_tokens():
  model, params, clips = build("timesformer", attention="space")
  _, inter = sown(model, params, clips)
  _, heat = rollout.rollout(model, params, clips)
  b = 0
  total = np.eye(1 + N)[None].repeat(T, 0)  # Frames are independent images: (T, 1+N, 1+N).
  for i in range(TINY["num_layers"]):
    w = fused(inter[f"encoderblock_{i}"]["attention_spatial"]["attention_weights"])
    total = np.stack([mixing(w[b * T + t]) @ total[t] for t in range(T)])
  expected = total[:, 0, 1:] / T  # Row of each frame's class token, frames averaged.
  np.testing.assert_allclose(heat[b], expected.reshape(T, H, W), atol=1e-5)


def test_uniform_attention_has_the_closed_form():
  # Zero queries: every weight is 1/M, so (I + U)/2 over L layers leaves 1/2^L on the class
  # token and spreads the rest evenly: each patch gets (1 - 2^-L) / M.
  model, params, clips = build("timesformer", attention="joint", num_layers=3)
  params = jax.tree.map(np.array, params)
  for i in range(3):
    query = params[f"encoderblock_{i}"]["attention_joint"]["query"]
    query["kernel"][:] = 0
    query["bias"][:] = 0
  _, heat = rollout.rollout(model, params, clips)
  np.testing.assert_allclose(heat, (1 - 0.5**3) / (1 + T * N), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Every supported model: logits unchanged, relevance a distribution.
# ---------------------------------------------------------------------------------------------

SUPPORTED = [
  ("timesformer", dict(attention="space_first")),
  ("timesformer", dict(attention="local_global")),
  ("timesformer", dict(attention="axial")),
  ("timesformer", dict(attention="divided", classifier="gap")),
  ("timesformer", dict(attention="space", classifier="gap")),
  ("vivit", dict(attention="factorised_encoder", variant=f"Ti/{PATCH}x2")),
  ("vivit", dict(attention="factorised_encoder", classifier="gap", temporal_layers=0)),
  (
    "vivit",
    dict(attention="factorised_self_attention", classifier="gap", attention_order="time_space"),
  ),
]


@pytest.mark.parametrize(
  "model_name,overrides",
  SUPPORTED,
  ids=[f"{m}-{'-'.join(map(str, o.values()))}" for m, o in SUPPORTED],
)
def test_relevance_is_a_distribution(model_name, overrides):
  model, params, clips = build(model_name, **overrides)
  logits, inter = sown(model, params, clips)
  got_logits, heat = rollout.rollout(model, params, clips)
  np.testing.assert_allclose(got_logits, logits, atol=1e-5)
  temporal = T // model.config.tubelet_size
  assert heat.shape == (SHAPE[0], temporal, H, W)
  assert np.all(np.asarray(heat) >= 0)
  plans = rollout.plans(model, SHAPE)
  rows = rollout.propagate(plans[0], inter, SHAPE[0])  # (B, K, M): all positions
  expected = np.broadcast_to(plans[0].readout.sum(-1), rows.shape[:2])
  np.testing.assert_allclose(rows.sum(-1), expected, atol=1e-5)
  if model.config.classifier == "gap":  # No class token to keep a share: the patches get all.
    np.testing.assert_allclose(heat.sum((1, 2, 3)), 1.0, atol=1e-5)


def test_head_fusions_differ_and_are_checked():
  model, params, clips = build("timesformer")
  heats = {
    f: np.asarray(rollout.rollout(model, params, clips, head_fusion=f)[1])
    for f in rollout.HEAD_FUSIONS
  }
  assert not np.allclose(heats["max"], heats["min"])
  with pytest.raises(ValueError, match="head_fusion='median'"):
    rollout.rollout(model, params, clips, head_fusion="median")


@pytest.mark.parametrize(
  "model_name,overrides,match",
  [
    ("vivit", dict(attention="factorised_dot_product", classifier="gap"), "splits each"),
    ("xvit", dict(), "XViT is not supported"),
  ],
)
def test_unsupported_models_say_why(model_name, overrides, match):
  model = models.build(model_name, dict(TINY, **overrides), 3)
  with pytest.raises(ValueError, match=match):
    rollout.plans(model, SHAPE)


# ---------------------------------------------------------------------------------------------
# Pictures.
# ---------------------------------------------------------------------------------------------


def test_overlay_greys_cold_pixels_and_colours_the_hottest():
  frames = np.full((2, 8, 8, 3), 100, np.uint8)
  heat = np.zeros((2, 2, 2), np.float32)
  heat[1, 0, 0] = 3.0  # Frame 1, top-left patch: the clip's maximum (the minimum is 0).
  frames[..., 0] = 200  # Colour (200, 100, 100): grey 0.299 * 200 + 0.701 * 100 = 129.9.
  out = rollout.heat_overlay(frames, heat, alpha=0.6)
  np.testing.assert_array_equal(out[0], 130)  # No heat: the frame in grey.
  np.testing.assert_array_equal(out[1, 6:, 6:], 130)
  import matplotlib

  top = np.asarray(matplotlib.colormaps["inferno"](1.0)[:3]) * 255
  np.testing.assert_allclose(out[1, 0, 0], 0.4 * 129.9 + 0.6 * top, atol=1)
  with pytest.raises(ValueError, match="uint8"):
    rollout.heat_overlay(frames.astype(np.float32), heat)
  with pytest.raises(ValueError, match="dividing"):
    rollout.heat_overlay(frames[:1].repeat(3, 0), heat)


def test_rollout_image_layout():
  frames = np.zeros((3, 4, 32, 32, 3), np.uint8)
  heat = np.random.RandomState(0).rand(3, 2, 4, 4).astype(np.float32)
  image = rollout.rollout_image(frames, heat, ["a", "b", "c"])
  zoom, gap = 3, 4  # 32-pixel frames are enlarged to 96.
  assert image.size == (4 * 96 + 3 * gap, 3 * (16 + 2 * 96 + gap) + 2 * 2 * gap)
  assert zoom * 32 == 96
  with pytest.raises(ValueError, match="2 titles for 3 clips"):
    rollout.rollout_image(frames, heat, ["a", "b"])


def test_jit_cache_per_model_and_fusion():
  model, params, clips = build("timesformer")
  rollout.rollout(model, params, clips)
  before = rollout._jitted_rollout.cache_info().hits
  rollout.rollout(model, params, clips)
  assert rollout._jitted_rollout.cache_info().hits == before + 1
  assert isinstance(model, nn.Module)
