"""vidtx.sharding's logical axes: every parameter of every model names them, the state's
shardings follow them through config.mesh.rules (whatever the modules are called), and activation
constraints change no number without a mesh. The compiled steps on 8 fake devices:
tests/tools/test_collectives.py."""

import math
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from shared import ZOO, tiny_model_config

from vidtx import models, sharding
from vidtx import train_state as state_lib
from vidtx.models import layers

INPUT_SHAPE = (1, 4, 16, 16, 3)  # The tiny configs' clips.
MESH_222 = types.SimpleNamespace(shape={"data": 2, "fsdp": 2, "model": 2})
RULES = sharding.rules_from_config(None)


def spec_of(name: str, shape: tuple[int, ...], param_axes: dict, mesh=MESH_222) -> tuple:
  axes = sharding.logical_axes_of(name, shape, param_axes)
  assert axes is not None, f"{name} has no logical axes"
  return tuple(sharding.logical_partition_spec(axes, shape, mesh, RULES))


# Every scheme unscanned; one scheme per family scanned (the 'layers' axis).
SCANNED = {name: attention for name, attention in reversed(ZOO)}


@pytest.mark.parametrize(
  "name,attention,scan_layers",
  [(n, a, False) for n, a in ZOO] + [(n, a, True) for n, a in sorted(SCANNED.items())],
)
def test_every_parameter_has_logical_axes_and_init_returns_plain_arrays(
  name, attention, scan_layers
):
  config = dict(tiny_model_config(name, attention), scan_layers=scan_layers)
  model = models.build(name, config, 5)
  param_axes = models.param_logical_axes(model, INPUT_SHAPE)
  video = jax.ShapeDtypeStruct(INPUT_SHAPE, jnp.float32)
  params = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)["params"]
  # The saved tree: plain arrays under the same names as before.
  leaves = jax.tree_util.tree_leaves_with_path(
    params, is_leaf=lambda x: isinstance(x, nn.Partitioned)
  )
  assert all(isinstance(leaf, jax.ShapeDtypeStruct) for _, leaf in leaves)
  names = {sharding.path_name(path): leaf.shape for path, leaf in leaves}
  assert names.keys() == param_axes.keys()
  for path, shape in names.items():
    axes = param_axes[path]
    assert axes is not None and len(axes) == len(shape), (path, axes, shape)
    assert set(axes) <= set(sharding.LOGICAL_AXES) | {None}, (path, axes)
    if scan_layers and "encoderblocks/" in path:
      assert axes[0] == "layers", (path, axes)
  if not scan_layers:
    return
  # A whole train state (AdamW, EMA): no parameter, moment or EMA leaf falls back to the rule
  # for arrays without logical axes; only the step counts and the rng do.
  tx = optax.adamw(1e-3)
  state = jax.eval_shape(state_lib._init_fn(model, tx, INPUT_SHAPE, True), jax.random.key(0))
  fallen = [
    sharding.path_name(path)
    for path, leaf in jax.tree_util.tree_leaves_with_path(state)
    if sharding.logical_axes_of(sharding.path_name(path), leaf.shape, param_axes) is None
  ]
  assert {"step", "rng"} <= set(fallen), fallen
  assert all(f in ("step", "rng") or f.endswith("/count") for f in fallen), fallen


def test_shardings_follow_the_logical_axes():
  model = models.build("timesformer", tiny_model_config("timesformer", "divided"), 5)
  axes = models.param_logical_axes(model, INPUT_SHAPE)
  block = "encoderblock_0/attention_temporal"
  # Tensor parallel over heads (Megatron: columns in, rows out), FSDP over the embedding.
  # Shapes of ViT-B (the tiny model's names, a base model's sizes).
  query = (768, 12, 64)
  assert spec_of(f"params/{block}/query/kernel", query, axes) == ("fsdp", "model", None)
  assert spec_of(f"params/{block}/query/bias", (12, 64), axes) == ("model", None)
  assert spec_of(f"params/{block}/out/kernel", (12, 64, 768), axes) == ("model", None, "fsdp")
  # Optimizer state and EMA follow their parameter.
  mu = f"opt_state/0/mu/{block}/query/kernel"
  assert spec_of(mu, query, axes) == ("fsdp", "model", None)
  ema = f"ema_params/{block}/query/kernel"
  assert spec_of(ema, query, axes) == ("fsdp", "model", None)
  # A dimension that does not divide stays whole: 3 heads on 'model'=2 (ViT-Ti).
  assert spec_of(f"params/{block}/query/kernel", (192, 3, 64), axes) == ("fsdp", None, None)
  # A scanned stack: the leading 'layers' axis stays whole.
  scanned_model = models.build(
    "timesformer", dict(tiny_model_config("timesformer", "divided"), scan_layers=True), 5
  )
  scanned = models.param_logical_axes(scanned_model, INPUT_SHAPE)
  assert spec_of("params/encoderblocks/attention_temporal/query/kernel", (2,) + query, scanned) == (
    None,
    "fsdp",
    "model",
    None,
  )
  # Under FSDP_MIN_SIZE no 'fsdp' split (norms, biases, small embeddings), except for the
  # attention and MLP weights: a tiny model is laid out as a large one.
  assert spec_of("params/encoderblock_0/norm_mlp/scale", (768,), axes) == (None,)
  assert spec_of("params/pos_embedding/embedding", (4, 64), axes) == (None, None)
  assert spec_of("params/pos_embedding/embedding", (196, 768), axes) == (None, "fsdp")
  assert spec_of(f"params/{block}/query/kernel", (32, 2, 16), axes) == ("fsdp", "model", None)
  assert spec_of("params/encoderblock_0/mlp/Dense_0/bias", (3072,), axes) == ("model",)
  assert spec_of("params/encoderblock_0/mlp/Dense_1/kernel", (3072, 768), axes) == (
    "model",
    "fsdp",
  )
  # Without 'fsdp' or 'model' axes: replicated.
  data_only = types.SimpleNamespace(shape={"data": 8, "fsdp": 1, "model": 1})
  assert spec_of(f"params/{block}/query/kernel", query, axes, data_only) == (None,) * 3
  # Activations: the batch over both data-parallel axes, so 'embed' keeps no 'fsdp'.
  tokens = nn.logical_to_mesh_axes(layers.token_axes(3), RULES)
  assert tuple(tokens) == (("data", "fsdp"), None, None)


class RenamedBlock(nn.Module):
  """The layers of a block under other names than the models give them."""

  @nn.compact
  def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
    x = video.reshape(video.shape[0], -1, 48)  # (B, T, H, W, 3) -> (B, T*H*W/16, 48)
    x = nn.Dense(64, kernel_init=layers.logical(layers.KERNEL_INIT, None, "embed"), name="in")(x)
    x = layers.MultiHeadAttention(num_heads=4, name="self_attention_renamed")(x, deterministic=True)
    return layers.MlpBlock(mlp_dim=256, name="feed_forward")(x, deterministic=True)


def test_renaming_a_module_keeps_its_sharding():
  """Shardings come from what a parameter is, not what it is called: the attention and MLP of
  RenamedBlock shard as those of a model do."""
  axes = models.param_logical_axes(RenamedBlock(), INPUT_SHAPE)
  model_axes = models.param_logical_axes(
    models.build("vivit", tiny_model_config("vivit", "spatio_temporal"), 5), INPUT_SHAPE
  )
  pairs = {
    "self_attention_renamed/query/kernel": "encoder/encoderblock_0/attention/query/kernel",
    "self_attention_renamed/out/kernel": "encoder/encoderblock_0/attention/out/kernel",
    "feed_forward/Dense_0/kernel": "encoder/encoderblock_0/mlp/Dense_0/kernel",
    "feed_forward/Dense_1/kernel": "encoder/encoderblock_0/mlp/Dense_1/kernel",
    "feed_forward/Dense_0/bias": "encoder/encoderblock_0/mlp/Dense_0/bias",
  }
  shapes = {
    "query/kernel": (64, 4, 16),
    "out/kernel": (4, 16, 64),
    "Dense_0/kernel": (64, 256),
    "Dense_1/kernel": (256, 64),
    "Dense_0/bias": (256,),
  }
  for renamed, original in pairs.items():
    shape = next(s for suffix, s in shapes.items() if renamed.endswith(suffix))
    got = spec_of(f"params/{renamed}", shape, axes)
    assert got == spec_of(f"params/{original}", shape, model_axes), renamed
    assert any(a is not None for a in got), renamed  # Actually split on the 2x2x2 mesh.


@pytest.mark.parametrize(
  "name,attention",
  [("vivit", "factorised_encoder"), ("timesformer", "divided"), ("xvit", "space_time_mixing")],
)
def test_per_device_state_at_fsdp_8_is_an_eighth(name, attention):
  """Base-size models (their default configs) with AdamW and EMA on fsdp=8: each device holds
  at most 0.135 of the state (1/8 = 0.125, plus the small arrays kept whole)."""
  model = models.build(name, {"attention": attention}, 400)
  input_shape = (1, 8, 224, 224, 3)
  tx = optax.adamw(1e-3)
  state = jax.eval_shape(state_lib._init_fn(model, tx, input_shape, True), jax.random.key(0))
  axes = models.param_logical_axes(model, input_shape)
  fsdp8 = types.SimpleNamespace(shape={"data": 1, "fsdp": 8, "model": 1})
  total = per_device = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    shape = tuple(leaf.shape)
    found = sharding.logical_axes_of(sharding.path_name(path), shape, axes)
    spec = (
      sharding.logical_partition_spec(found, shape, fsdp8, RULES)
      if found
      else sharding.fallback_partition_spec(shape, fsdp8)
    )
    spec = tuple(spec) + (None,) * (len(shape) - len(spec))
    shard = [d // (8 if a else 1) for d, a in zip(shape, spec, strict=True)]
    total += math.prod(shape)
    per_device += math.prod(shard)
  assert per_device / total <= 0.135, per_device / total


def test_activation_constraints_change_nothing_without_a_mesh():
  """Under the rules alone (no mesh: one device, the converters) and under a 1-device mesh, the
  model computes what it computes without them."""
  model = models.build("vivit", tiny_model_config("vivit", "factorised_encoder"), 5)
  video = jax.random.normal(jax.random.key(1), INPUT_SHAPE)
  params = model.init(jax.random.key(0), video, train=False)["params"]

  def forward(p, v):
    return model.apply({"params": p}, v, train=False)[0]

  plain = jax.jit(forward)(params, video)
  with nn.logical_axis_rules(RULES):
    under_rules = jax.jit(forward)(params, video)
  mesh = sharding.make_mesh(None, jax.devices()[:1])
  pinned = jax.jit(sharding.under_rules(forward, mesh))
  np.testing.assert_array_equal(np.asarray(under_rules), np.asarray(plain))
  np.testing.assert_array_equal(np.asarray(pinned(params, video)), np.asarray(plain))
  # The constraints are in the traced program: under the rules and a mesh, not without.
  assert "sharding_constraint" in str(jax.make_jaxpr(pinned)(params, video))
  assert "sharding_constraint" not in str(jax.make_jaxpr(forward)(params, video))


def test_rules_from_config():
  assert dict(sharding.rules_from_config(None)) == {
    "batch": ("data", "fsdp"),
    "length": None,
    "embed": "fsdp",
    "mlp": "model",
    "heads": "model",
    "kv": None,
    "layers": None,
  }
  # As a config gives them: the command line's strings, a tuple, None; batch always first.
  rules = sharding.rules_from_config(
    {"data": -1, "rules": {"mlp": "None", "embed": "fsdp,model", "batch": ["data"]}}
  )
  assert rules == (("batch", "data"), ("embed", ("fsdp", "model")), ("mlp", None))
  # MLP no longer tensor parallel.
  spec = sharding.logical_partition_spec(("embed", "mlp"), (64, 256), MESH_222, rules)
  assert tuple(spec) == (("fsdp", "model"), None)
  with pytest.raises(ValueError, match=r"^config.mesh.rules: unknown logical axis \['hidden'\]"):
    sharding.rules_from_config({"rules": {"hidden": "model"}})
  with pytest.raises(ValueError, match=r"^config.mesh.rules.mlp='tensor': unknown mesh axis"):
    sharding.rules_from_config({"rules": {"mlp": "tensor"}})
  # The mesh's sizes ignore the rules.
  assert sharding.mesh_shape({"fsdp": 2, "rules": {"mlp": None}}, 8) == (4, 2, 1)
