"""The TimeSformer zoo: every space-time attention scheme of the paper and its supplementary.

- Each pattern of vidtx.models.attention against softmax attention over ALL tokens with the
  equivalent explicit boolean mask, and the class token carried into groups against its
  explicit construction (brute force, tiny sizes).
- Each whole tiny model against a float64 numpy reference written with such masks.
- Parameter counts against Table 1; positional-embedding options (Table 4); the
  initialisation claims; the recipe configs.
"""

import functools
import math

import flax
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
from vidtx.configs import k400_timesformer, synthetic_timesformer
from vidtx.models import attention, timesformer

jax.config.update("jax_numpy_rank_promotion", "raise")

# Tiny models: 4 frames of 16x16 pixels in 4x4 patches, a 4x4 grid (N = 16), so that L+G has
# 2x2 windows of 2x2 patches and 8 stride-2 groups; D = 16, 2 heads, 2 layers.
TINY = dict(variant="Ti/4", hidden_size=16, num_heads=2, mlp_dim=32, num_layers=2)
NUM_CLASSES = 5
VIDEO_SHAPE = (2, 4, 16, 16, 3)  # (B, T, H, W, C)
GRID = (4, 4)
SCHEMES = ("divided", "space", "joint", "space_first", "parallel", "local_global", "axial")


def _video(seed=0, shape=VIDEO_SHAPE):
  return jax.random.normal(jax.random.key(seed), shape)


def _init_shapes(model, video_shape=VIDEO_SHAPE):
  return init_shapes(model, video_shape)


@functools.cache
def _tiny(**overrides):
  """(module, random parameters) of a tiny TimeSformer. Every parameter is random, so that
  the zero initialisers (head, projections, time embedding) take part in the comparisons."""
  model = models.build("timesformer", dict(TINY, **overrides), NUM_CLASSES)
  return model, random_like(_init_shapes(model))


# ----------------------------------------------------------------------------------------
# Numpy float64 reference: attention over the full token sequence with explicit masks.
# ----------------------------------------------------------------------------------------


def group_labels(stage, t, h, w, splits=2, stride=2):
  """The paper's neighbourhoods as labels of the T*N tokens (frame-major, raster order):
  two tokens attend to each other iff their labels are equal. Written from coordinates,
  independently of the reshapes in attention.py."""
  frame, row, col = (a.ravel() for a in np.indices((t, h, w)))
  return {
    "spatial": frame,  # Eq. 6: the same frame.
    "temporal": row * w + col,  # Eq. 11: the same location in any frame.
    "joint": np.zeros_like(frame),  # Eq. 5: everything.
    # L: the same F x h/splits x w/splits window.
    "local": (row // (h // splits)) * splits + col // (w // splits),
    # G: frame, row and column congruent modulo the stride.
    "global": ((frame % stride) * stride + row % stride) * stride + col % stride,
    "width": frame * h + row,  # The same row of the same frame.
    "height": frame * w + col,  # The same column of the same frame.
  }[stage]


def ref_stage(cls, x, block, stage, labels):
  """One stage's updates of the class token (D,) and the patches (L, D) of a clip.

  cls None: a projected stage, patches only, through <stage>_fc. Otherwise each patch also
  attends to the class token, and the class token attends to each group in turn (keys: itself
  and the group); its updates are averaged over the groups.
  """
  same = labels[:, None] == labels[None, :]
  norm, attn = block[f"norm_{stage}"], block[f"attention_{stage}"]
  if cls is None:
    y = ref_attention(ref_layer_norm(x, norm), attn, same)
    return None, y @ block[f"{stage}_fc"]["kernel"] + block[f"{stage}_fc"]["bias"]
  z = ref_layer_norm(np.concatenate([cls[None], x]), norm)
  mask = np.ones((len(z), len(z)), bool)
  mask[1:, 1:] = same
  y = ref_attention(z, attn, mask)[1:]
  y_cls = []
  for group in np.unique(labels):
    mask_g = mask.copy()
    mask_g[0, 1:] = labels == group
    y_cls.append(ref_attention(z, attn, mask_g)[0])
  return np.mean(y_cls, axis=0), y


# Scheme -> stages in order: (stage, whether it carries the class token = is unprojected).
REF_STAGES = {
  "divided": [("temporal", False), ("spatial", True)],
  "space_first": [("spatial", True), ("temporal", False)],
  "joint": [("joint", True)],
  "local_global": [("local", False), ("global", True)],
  "axial": [("temporal", False), ("width", False), ("height", True)],
}


def ref_timesformer(params, video, scheme):
  """TimeSformer (classifier 'token') on one clip (T, H, W, C), attention with masks."""
  p = as_float64(params)
  x = ref_patches(np.asarray(video, np.float64), p["embedding"])  # (T, N, D)
  t, n, d = x.shape
  h = int(round(math.sqrt(n)))  # Square frames.
  pos = p["pos_embedding"]["embedding"] if "pos_embedding" in p else np.zeros((n + 1, d))
  cls = p["cls"][0, 0] + pos[0]
  x = x + pos[1:]
  blocks = [p[f"encoderblock_{i}"] for i in range(TINY["num_layers"])]
  head = p["head"]

  if scheme == "space":
    # T copies of [class token, frame t]; a token sees its own frame only; frames averaged.
    z = np.concatenate([np.broadcast_to(cls, (t, 1, d)), x], axis=1).reshape(t * (1 + n), d)
    frame = np.repeat(np.arange(t), 1 + n)
    mask = frame[:, None] == frame[None, :]
    for b in blocks:
      z = z + ref_attention(ref_layer_norm(z, b["norm_spatial"]), b["attention_spatial"], mask)
      z = z + ref_mlp(ref_layer_norm(z, b["norm_mlp"]), b["mlp"])
    z = z.reshape(t, 1 + n, d).mean(0)
    return ref_layer_norm(z[0], p["encoder_norm"]) @ head["kernel"] + head["bias"]

  if "time_embedding" in p:
    x = x + p["time_embedding"]["embedding"][:, None]
  x = x.reshape(t * n, d)
  labels = {
    s: group_labels(s, t, h, h)
    for s in ("temporal", "spatial", "joint", "local", "global", "width", "height")
  }
  for b in blocks:
    if scheme == "parallel":
      # Both stages read the block input; the updates are summed.
      _, dx_time = ref_stage(None, x, b, "temporal", labels["temporal"])
      dcls, dx_space = ref_stage(cls, x, b, "spatial", labels["spatial"])
      x, cls = x + dx_time + dx_space, cls + dcls
    else:
      for stage, carries_cls in REF_STAGES[scheme]:
        dcls, dx = ref_stage(cls if carries_cls else None, x, b, stage, labels[stage])
        x = x + dx
        if carries_cls:
          cls = cls + dcls
    z = np.concatenate([cls[None], x])
    z = z + ref_mlp(ref_layer_norm(z, b["norm_mlp"]), b["mlp"])
    cls, x = z[0], z[1:]
  return ref_layer_norm(cls, p["encoder_norm"]) @ head["kernel"] + head["bias"]


# ----------------------------------------------------------------------------------------
# Patterns against explicit masks.
# ----------------------------------------------------------------------------------------

# stage -> (tokens shape (B, T, h, w), grouping kwargs). Non-square grids catch h/w mix-ups.
PATTERN_CASES = [
  ("spatial", (2, 3, 2, 3), {}),
  ("temporal", (2, 3, 2, 3), {}),
  ("joint", (2, 3, 2, 3), {}),
  ("local", (2, 3, 4, 6), dict(splits=2)),
  ("local", (1, 2, 6, 3), dict(splits=3)),
  ("global", (2, 4, 4, 6), dict(stride=2)),
  ("global", (1, 3, 3, 6), dict(stride=3)),
  ("width", (2, 3, 4, 5), {}),
  ("height", (2, 3, 4, 5), {}),
]
# The model's own stage -> grouping table: each stage name is checked against its mask.
GROUPINGS = timesformer.GROUPINGS


def _pattern(stage, attend, x, grid, **kwargs):
  """The pattern functions by name: the three plain ones and the grid ones."""
  if stage in ("spatial", "temporal", "joint"):
    return getattr(attention, f"{stage}_attention")(attend, x)
  return getattr(attention, f"{stage}_attention")(attend, x, grid=grid, **kwargs)


def _attend_fn(d=8, seed=2):
  """A random 2-head attention (B, L, D) -> (B, L, D) and its float64 parameters."""
  mha, params = random_attention(jnp.zeros((1, 3, d)), seed=seed)
  return functools.partial(mha.apply, params, deterministic=True), as_float64(params["params"])


@pytest.mark.parametrize("stage,shape,kwargs", PATTERN_CASES)
def test_pattern_equals_masked_full_attention(stage, shape, kwargs):
  b, t, h, w = shape
  d = 8
  x = _video(1, (b, t, h * w, d))
  attend, p = _attend_fn(d)
  # One compiled graph per case: op-by-op dispatch would compile every op for every shape.
  got = jax.jit(lambda x: _pattern(stage, attend, x, (h, w), **kwargs))(x)
  labels = group_labels(stage, t, h, w, **kwargs)
  mask = labels[:, None] == labels[None, :]
  want = np.stack(
    [ref_attention(np.asarray(xb, np.float64).reshape(t * h * w, d), p, mask) for xb in x]
  )
  np.testing.assert_allclose(np.asarray(got).reshape(b, t * h * w, d), want, atol=1e-5)
  # The groups partition the clip into equal groups, as the reshape requires.
  counts = np.unique(labels, return_counts=True)[1]
  assert len(set(counts)) == 1 and counts.sum() == t * h * w


# Every grouping once (the window and stride sizes are covered above).
@pytest.mark.parametrize("stage,shape,kwargs", [c for c in PATTERN_CASES if 3 not in c[2].values()])
def test_class_token_in_groups_equals_explicit_construction(stage, shape, kwargs):
  """A copy of the class token in every group: patches attend to their group and the class
  token; the class token to itself and one group at a time, its results averaged."""
  b, t, h, w = shape
  d = 8
  x = _video(3, (b, t, h * w, d))
  cls = _video(4, (b, 1, d))
  attend, p = _attend_fn(d)

  @jax.jit
  def pattern(x, cls):
    groups, ungroup = GROUPINGS[stage](x, (h, w), **kwargs)
    y = attention.attend_in_groups(attend, attention.prepend_class_token(groups, cls))
    y, y_cls = attention.average_class_token(y)
    return ungroup(y), y_cls

  y, y_cls = pattern(x, cls)
  labels = group_labels(stage, t, h, w, **kwargs)
  for i in range(b):
    # Sequence [class token, patches]; a patch sees its group and the class token.
    z = np.concatenate(
      [np.asarray(cls[i], np.float64), np.asarray(x[i], np.float64).reshape(-1, d)]
    )
    mask = np.ones((len(z), len(z)), bool)
    mask[1:, 1:] = labels[:, None] == labels[None, :]
    np.testing.assert_allclose(
      np.asarray(y[i]).reshape(-1, d), ref_attention(z, p, mask)[1:], atol=1e-5
    )
    per_group = []
    for group in np.unique(labels):
      mask_g = mask.copy()
      mask_g[0, 1:] = labels == group
      per_group.append(ref_attention(z, p, mask_g)[0])
    np.testing.assert_allclose(np.asarray(y_cls[i, 0]), np.mean(per_group, 0), atol=1e-5)


def test_grouping_errors():
  x = jnp.zeros((1, 3, 16, 8))
  with pytest.raises(ValueError, match="grid \\(4, 5\\) has 20 patches"):
    attention.window_groups(x, (4, 5))
  with pytest.raises(ValueError, match="strided global attention \\(stride 2\\) needs"):
    attention.strided_groups(x, (4, 4))  # 3 frames.
  with pytest.raises(ValueError, match="local attention \\(3x3 windows\\) needs"):
    attention.window_groups(x, (4, 4), splits=3)


# ----------------------------------------------------------------------------------------
# Whole models against the reference.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_model_equals_masked_reference(scheme):
  model, params = _tiny(attention=scheme)
  video = _video(5)
  logits, out = jitted_apply(model)({"params": params}, video)
  want = np.stack([ref_timesformer(params, clip, scheme) for clip in video])
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
  assert out["encoded_tokens"].shape == (2, 4, 16, 16)


def test_model_without_positional_embedding_equals_reference():
  model, params = _tiny(attention="divided", positional_embedding="none")
  video = _video(6)
  logits, _ = jitted_apply(model)({"params": params}, video)
  want = np.stack([ref_timesformer(params, clip, "divided") for clip in video])
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------
# Parameter counts (Table 1).
# ----------------------------------------------------------------------------------------


def _param_count(attention_name, num_classes, **overrides):
  model = models.build("timesformer", dict(attention=attention_name, **overrides), num_classes)
  return num_params(_init_shapes(model, (1, 8, 224, 224, 3)))


# TimeSformer-B/16, 8 frames of 224. Table 1's figures are those of a 174-class head
# (Something-Something-V2, which Table 1 also reports): with it every scheme matches to
# 0.1 M; with a 400-class head space, joint and axial miss by 0.2 M (see the next test).
TABLE_1 = {
  "space": 85.9,
  "joint": 85.9,
  "divided": 121.4,
  "local_global": 121.4,
  "axial": 156.8,
}
# The supplementary's space_first and parallel have the divided block's parameters, in another
# arrangement (test_block_parameter_names).


@pytest.mark.parametrize("scheme", TABLE_1)
def test_parameter_counts_match_table_1(scheme):
  count = _param_count(scheme, 174)
  assert abs(count / 1e6 - TABLE_1[scheme]) <= 0.1, count
  # Exact, from the blocks' parts (the 'space' part is ViT-B/16 with a 174-class head).
  d, n, t = 768, 196, 8
  norm, attn, fc = 2 * d, 4 * (d * d + d), d * d + d
  vit = 16 * 16 * 3 * d + d + d + (n + 1) * d + 12 * (norm + attn + norm + 2 * 3072 * d + 3072 + d)
  space = vit + norm + d * 174 + 174
  projected = 12 * (norm + attn + fc)  # One projected stage per block.
  exact = {
    "space": space,
    "joint": space + t * d,
    "axial": space + t * d + 2 * projected,
  }.get(scheme, space + t * d + projected)  # divided, local_global.
  assert count == exact


def test_table_1_head_is_174_classes():
  """With the Kinetics head the space-only model is 0.2 M over Table 1 (axial too: 157.02 M)."""
  count = _param_count("space", 400)
  assert count == _param_count("space", 174) + (400 - 174) * 769  # Kernel column and bias.
  assert abs(count / 1e6 - TABLE_1["space"]) > 0.1


# ----------------------------------------------------------------------------------------
# Parameter trees: stages and positional embeddings.
# ----------------------------------------------------------------------------------------

STAGE_PARAMS = {
  "space": {"norm_spatial", "attention_spatial"},
  "joint": {"norm_joint", "attention_joint"},
  "divided": {
    "norm_temporal",
    "attention_temporal",
    "temporal_fc",
    "norm_spatial",
    "attention_spatial",
  },
  "local_global": {"norm_local", "attention_local", "local_fc", "norm_global", "attention_global"},
  "axial": {
    "norm_temporal",
    "attention_temporal",
    "temporal_fc",
    "norm_width",
    "attention_width",
    "width_fc",
    "norm_height",
    "attention_height",
  },
}
STAGE_PARAMS["space_first"] = STAGE_PARAMS["parallel"] = STAGE_PARAMS["divided"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_block_parameter_names(scheme):
  params = _init_shapes(models.build("timesformer", dict(TINY, attention=scheme), 5))
  assert set(params["encoderblock_1"]) == STAGE_PARAMS[scheme] | {"norm_mlp", "mlp"}
  # Without a class token (average pooling) the same stages run, and no 'cls' parameter.
  gap = _init_shapes(models.build("timesformer", dict(TINY, attention=scheme, classifier="gap"), 5))
  assert set(params) - set(gap) == {"cls"}


@pytest.mark.parametrize("scheme", ["divided", "space", "axial"])
def test_positional_embedding_options_change_the_tree(scheme):
  trees = {
    option: _init_shapes(
      models.build("timesformer", dict(TINY, attention=scheme, positional_embedding=option), 5)
    )
    for option in timesformer.POSITIONAL_EMBEDDINGS
  }
  has_time = scheme != "space"  # The per-frame model never has a time embedding.
  assert ("time_embedding" in trees["space_time"]) == has_time
  assert "time_embedding" not in trees["space"] and "time_embedding" not in trees["none"]
  assert "pos_embedding" in trees["space"] and "pos_embedding" not in trees["none"]
  t, n, d = 4, 16, 16
  assert num_params(trees["space_time"]) - num_params(trees["space"]) == (t * d if has_time else 0)
  assert num_params(trees["space"]) - num_params(trees["none"]) == (n + 1) * d
  others = lambda tree: {k: v for k, v in tree.items() if not k.endswith("embedding")}  # noqa
  assert others(trees["none"]) == others(trees["space_time"])


def test_positional_embeddings_decide_what_the_model_sees():
  """Without the time embedding divided attention cannot tell frame order (temporal attention
  is permutation-equivariant and the class token averages the frames); without any positional
  embedding it cannot tell a consistent shuffle of patch positions either."""
  video = _video(7)
  frames_shuffled = video[:, jnp.array([2, 0, 3, 1])]
  columns_rolled = jnp.roll(video, 4, axis=3)  # One patch: the patch columns cycle.

  def logits(model_params, v):
    model, params = model_params
    return np.asarray(jitted_apply(model)({"params": params}, v)[0])

  space_time = _tiny(attention="divided")
  space_only = _tiny(attention="divided", positional_embedding="space")
  no_posemb = _tiny(attention="divided", positional_embedding="none")
  base = {
    name: logits(m, video)
    for name, m in [("space_time", space_time), ("space", space_only), ("none", no_posemb)]
  }
  assert not np.allclose(logits(space_time, frames_shuffled), base["space_time"], atol=1e-3)
  np.testing.assert_allclose(logits(space_only, frames_shuffled), base["space"], atol=1e-4)
  assert not np.allclose(logits(space_only, columns_rolled), base["space"], atol=1e-3)
  np.testing.assert_allclose(logits(no_posemb, columns_rolled), base["none"], atol=1e-4)
  np.testing.assert_allclose(logits(no_posemb, frames_shuffled), base["none"], atol=1e-4)


# ----------------------------------------------------------------------------------------
# Initialisation claims.
# ----------------------------------------------------------------------------------------


def test_space_only_is_invariant_to_frame_order():
  model, params = _tiny(attention="space")
  video = _video(8)
  apply = jitted_apply(model)
  for order in ([3, 2, 1, 0], [1, 3, 0, 2]):
    np.testing.assert_allclose(
      apply({"params": params}, video[:, jnp.array(order)])[0],
      apply({"params": params}, video)[0],
      atol=1e-5,
    )


@pytest.mark.parametrize("scheme", ["divided", "space_first", "parallel"])
def test_zero_temporal_weights_on_a_static_clip_give_the_image_model(scheme):
  """TimeSformer's init claim: with temporal_fc and the time embedding at zero (their initial
  values), a clip of one repeated image gives the space-only (image) model's output. The other
  parameters are random and shared by name."""
  model, params = _tiny(attention=scheme)
  space, space_params = _tiny(attention="space")
  params = flax.core.unfreeze(jax.tree.map(lambda x: x, params))
  params["time_embedding"] = jax.tree.map(jnp.zeros_like, params["time_embedding"])
  shared = {k: v for k, v in params.items() if k != "time_embedding"}
  for i in range(TINY["num_layers"]):
    block = params[f"encoderblock_{i}"]
    block["temporal_fc"] = jax.tree.map(jnp.zeros_like, block["temporal_fc"])
    shared[f"encoderblock_{i}"] = {
      k: v
      for k, v in block.items()
      if k not in ("norm_temporal", "attention_temporal", "temporal_fc")
    }
  assert jax.tree.map(jnp.shape, shared) == jax.tree.map(jnp.shape, space_params)

  image = _video(9, (2, 1) + VIDEO_SHAPE[2:])
  clip = jnp.broadcast_to(image, VIDEO_SHAPE)
  logits, out = jitted_apply(model)({"params": params}, clip)
  logits_space, out_space = jitted_apply(space)({"params": shared}, clip)
  assert np.abs(logits_space).max() > 0.1
  np.testing.assert_allclose(logits, logits_space, atol=1e-5)
  np.testing.assert_allclose(out["pre_logits"], out_space["pre_logits"], atol=1e-5)
  # On a moving clip the temporal branch is still silent, but the frames differ: no claim.


def test_projections_and_time_embedding_start_at_zero():
  """model.temporal_init='image' (default): every projected stage (temporal_fc, local_fc,
  width_fc) and the time embedding start at zero, so L+G starts as its global stage and
  axial as its height stage."""
  key = jax.random.key(0, impl="rbg")  # Quicker to compile than threefry on CPU.
  # local_fc and width_fc are made by the same code (timesformer._projected): axial suffices.
  model = models.build("timesformer", dict(TINY, attention="axial", num_layers=1), 5)
  params = jax.jit(functools.partial(model.init, train=False))(
    {"params": key, "dropout": key}, jnp.zeros(VIDEO_SHAPE)
  )["params"]
  assert not np.any(params["time_embedding"]["embedding"])
  for fc in ("temporal_fc", "width_fc"):
    assert not np.any(params["encoderblock_0"][fc]["kernel"])
    assert not np.any(params["encoderblock_0"][fc]["bias"])
  assert np.any(params["encoderblock_0"]["attention_height"]["query"]["kernel"])


# ----------------------------------------------------------------------------------------
# Configuration errors and recipe configs.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "overrides,video_shape,message",
  [
    (dict(positional_embedding="time"), VIDEO_SHAPE, "model.positional_embedding='time'"),
    (dict(attention="local_global"), (1, 4, 12, 12, 3), "got 4 frames of 3 x 3 patches"),
    (dict(attention="local_global"), (1, 3, 16, 16, 3), "got 3 frames of 4 x 4 patches"),
    (
      dict(attention="axial_attention"),
      VIDEO_SHAPE,
      "expected one of \\['divided', 'space', 'joint', 'space_first', 'parallel'",
    ),
  ],
)
def test_bad_config_raises(overrides, video_shape, message):
  with pytest.raises(ValueError, match=message):
    _init_shapes(models.build("timesformer", dict(TINY, **overrides), 5), video_shape)


def test_axial_accepts_odd_grids():
  model = models.build("timesformer", dict(TINY, attention="axial"), 5)
  assert _init_shapes(model, (1, 3, 12, 20, 3))["time_embedding"]["embedding"].shape == (3, 16)


def test_synthetic_config_accepts_every_scheme_default_unchanged():
  default = synthetic_timesformer.get_config()
  assert default == synthetic_timesformer.get_config("attention=divided")
  # The recipe that reaches 100% on the motion task (README).
  m = default.model
  assert (m.attention, m.variant, m.hidden_size, m.num_layers, m.num_heads, m.mlp_dim) == (
    "divided",
    "Ti/8",
    96,
    4,
    4,
    384,
  )
  assert (m.temporal_init, m.stochastic_depth, m.positional_embedding) == (
    "random",
    0.0,
    "space_time",
  )
  assert (default.batch_size, default.num_training_steps) == (32, 1000)
  assert default.lr_configs.base_learning_rate == 0.05
  dc = default.dataset_configs
  shape = (1, dc.num_frames, dc.crop_size, dc.crop_size, 3)
  for scheme in SCHEMES:
    config = synthetic_timesformer.get_config(f"attention={scheme}")
    assert config.model.attention == scheme
    model = models.build(config.model_name, config.model, dc.num_classes)
    assert "head" in _init_shapes(model, shape)
  with pytest.raises(ValueError, match="attention='st'"):
    synthetic_timesformer.get_config("attention=st")


def test_k400_config():
  config = k400_timesformer.get_config()
  dc = config.dataset_configs
  assert (dc.num_classes, dc.num_frames, dc.stride, dc.crop_size) == (400, 8, 32, 224)
  assert (dc.num_test_clips, dc.do_three_spatial_crops) == (1, True)
  assert (config.batch_size, config.num_training_epochs) == (16, 15)
  assert config.lr_configs.base_learning_rate == 0.005
  assert config.optimizer == "momentum" and config.optimizer_configs.momentum == 0.9
  assert config.optimizer_configs.weight_decay == 1e-4
  assert config.eval_aggregation == "sum_logits"
  model = models.build(config.model_name, config.model, dc.num_classes)
  shape = (1, dc.num_frames, dc.crop_size, dc.crop_size, 3)
  assert num_params(_init_shapes(model, shape)) == 121_566_352  # Divided, 400 classes.
  for scheme in SCHEMES:
    config = k400_timesformer.get_config(f"attention={scheme}")
    assert models.build(config.model_name, config.model, 400).config.attention == scheme
  with pytest.raises(ValueError, match="attention='divided_space_time'"):
    k400_timesformer.get_config("attention=divided_space_time")


# ----------------------------------------------------------------------------------------
# Folded projections (model.fold_projections): the same function, one matmul fewer.
# ----------------------------------------------------------------------------------------

PROJECTED_SCHEMES = ("divided", "space_first", "parallel", "local_global", "axial")


@pytest.mark.parametrize("scheme", PROJECTED_SCHEMES)
def test_folded_projections_equal_the_unfolded_model(scheme):
  """Outputs (evaluation) and parameter gradients (training, stochastic depth dropping examples
  with the same keys) of the folded model equal the model that applies <stage>_fc after the out
  projection; both have the same parameters."""
  folded, params = _tiny(attention=scheme, stochastic_depth=0.5)
  unfolded, _ = _tiny(attention=scheme, stochastic_depth=0.5, fold_projections=False)
  assert jax.tree.structure(_init_shapes(unfolded)) == jax.tree.structure(params)
  video = _video()
  for model in (folded, unfolded):
    assert model.config.fold_projections is (model is folded)
  eval_logits = [jitted_apply(m)({"params": params}, video)[0] for m in (folded, unfolded)]
  np.testing.assert_allclose(eval_logits[0], eval_logits[1], rtol=1e-5, atol=1e-6)

  def loss(model, params, key):
    logits, _ = model.apply({"params": params}, video, train=True, rngs={"dropout": key})
    return jnp.sum(logits * jnp.arange(NUM_CLASSES)[None])

  grad_fns = [jax.jit(jax.grad(functools.partial(loss, m))) for m in (folded, unfolded)]
  for seed in range(3):  # Keys with different examples dropped.
    grads = [grad_fn(params, jax.random.key(seed)) for grad_fn in grad_fns]
    # One scale for all: some gradients are zero up to rounding (a key bias shifts a whole row
    # of logits, which the softmax ignores).
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads[1]))
    folded_leaves = jax.tree_util.tree_leaves_with_path(grads[0])
    for (path, a), b in zip(folded_leaves, jax.tree.leaves(grads[1]), strict=True):
      np.testing.assert_allclose(a / scale, b / scale, atol=1e-5, err_msg=str(path))


def test_folding_removes_one_projection_per_patch_token():
  """Counted on the lowered program: per layer, the (T*N x D x D) product of temporal_fc is
  replaced by the (D x D x D) product of the two kernels and a (D x D) one of bias and kernel;
  vidtx.tools.complexity counts the model unfolded, as the paper specifies it."""
  from vidtx.tools import complexity

  d, layers = TINY["hidden_size"], TINY["num_layers"]
  t, n = VIDEO_SHAPE[1], GRID[0] * GRID[1]
  video = jax.ShapeDtypeStruct((1,) + VIDEO_SHAPE[1:], jnp.float32)
  macs = {}
  for fold in (True, False):
    model = models.build("timesformer", dict(TINY, fold_projections=fold), NUM_CLASSES)
    params = init_shapes(model, video.shape)
    macs[fold] = complexity.count_macs(
      lambda p, v, model=model: model.apply({"params": p}, v, train=False), params, video
    ).total
  assert macs[False] - macs[True] == layers * (t * n * d * d - d * d * d - d * d)
  counted = complexity.model_complexity("timesformer", TINY, NUM_CLASSES, video.shape)["macs"]
  assert counted == macs[False]


def test_out_projection_is_dense_general():
  """OutProjection has nn.DenseGeneral's parameters, initial values and outputs."""
  from vidtx.models import layers

  y = jax.random.normal(jax.random.key(0), (2, 5, 3, 4))  # (batch, length, heads, head_dim)
  dense = flax.linen.DenseGeneral(7, axis=(-2, -1), kernel_init=layers.KERNEL_INIT)
  ours = layers.OutProjection(7)
  dense_params = dense.init(jax.random.key(1), y)
  our_params = ours.init(jax.random.key(1), y)
  jax.tree.map(np.testing.assert_array_equal, dense_params, our_params)
  ours_y, dense_y = ours.apply(our_params, y), dense.apply(dense_params, y)
  np.testing.assert_allclose(ours_y, dense_y, rtol=1e-5, atol=1e-6)
  then = jax.random.normal(jax.random.key(2), (7, 6))
  np.testing.assert_allclose(
    ours.apply(our_params, y, then=then), dense.apply(dense_params, y) @ then, rtol=1e-5, atol=1e-5
  )
