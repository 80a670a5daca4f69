"""Schedules, weight-decay masks, clipping and the parameter EMA of vidtx.optim."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util
from ml_collections import config_flags  # noqa: F401  (registers the config file loader)

from vidtx import models, optim

jax.config.update("jax_numpy_rank_promotion", "raise")

BASE = 0.005


def _lr(**fields) -> ml_collections.ConfigDict:
  fields = dict(schedule="steps", base_learning_rate=BASE, warmup_steps=0) | fields
  return ml_collections.ConfigDict(fields)


def _values(schedule, steps):
  return [float(schedule(s)) for s in steps]


# --- 'steps' schedule ----------------------------------------------------------------------------


def test_steps_schedule_with_step_boundaries_decays_at_the_boundary_step():
  schedule = optim.make_schedule(_lr(decay_steps=(100, 150)), 200)
  steps = [0, 1, 99, 100, 101, 149, 150, 151, 10_000]
  expected = [BASE] * 3 + [BASE * 0.1] * 3 + [BASE * 0.01] * 3
  np.testing.assert_allclose(_values(schedule, steps), expected, rtol=1e-6)
  # The same values under jit, with traced steps.
  np.testing.assert_allclose(jax.jit(jax.vmap(schedule))(jnp.array(steps)), expected, rtol=1e-6)


def test_steps_schedule_with_epoch_boundaries_counts_epochs_from_zero():
  # TimeSformer: /10 at epochs 11 and 14; 10.2 steps per epoch -> steps 112 (112.2) and 143 (142.8).
  schedule = optim.make_schedule(_lr(decay_epochs=(11, 14)), 153, steps_per_epoch=10.2)
  steps = [0, 111, 112, 113, 142, 143, 152]
  expected = [BASE, BASE, BASE * 0.1, BASE * 0.1, BASE * 0.1, BASE * 0.01, BASE * 0.01]
  np.testing.assert_allclose(_values(schedule, steps), expected, rtol=1e-6)
  # Whole epochs: epoch 11 starts at step 11 * 100.
  schedule = optim.make_schedule(_lr(decay_epochs=(11, 14)), 1500, steps_per_epoch=100)
  np.testing.assert_allclose(
    _values(schedule, [1099, 1100, 1399, 1400]),
    [BASE, BASE * 0.1, BASE * 0.1, BASE * 0.01],
    rtol=1e-6,
  )


def test_steps_schedule_steps_win_over_epochs_and_decay_factor():
  # decay_steps set: decay_epochs is ignored, so no steps_per_epoch is needed.
  schedule = optim.make_schedule(
    _lr(decay_steps=(10,), decay_epochs=(11, 14), decay_factor=0.5), 100
  )
  np.testing.assert_allclose(
    _values(schedule, [9, 10, 1100, 1400]), [BASE, BASE / 2, BASE / 2, BASE / 2], rtol=1e-6
  )


def test_steps_schedule_with_warmup():
  schedule = optim.make_schedule(_lr(warmup_steps=10, decay_steps=(20, 30)), 40)
  steps = [0, 5, 9, 10, 19, 20, 29, 30, 39]
  expected = [
    0.0,
    BASE / 2,
    BASE * 0.9,
    BASE,
    BASE,
    BASE * 0.1,
    BASE * 0.1,
    BASE * 0.01,
    BASE * 0.01,
  ]
  np.testing.assert_allclose(_values(schedule, steps), expected, rtol=1e-6, atol=1e-12)
  # A boundary inside the warmup: the warmup multiplies the decayed rate.
  schedule = optim.make_schedule(_lr(warmup_steps=10, decay_steps=(5,)), 40)
  np.testing.assert_allclose(
    _values(schedule, [4, 5, 10, 20]),
    [BASE * 0.4, BASE * 0.1 * 0.5, BASE * 0.1, BASE * 0.1],
    rtol=1e-6,
  )
  # Epoch boundaries with warmup.
  schedule = optim.make_schedule(_lr(warmup_steps=4, decay_epochs=(1,)), 30, steps_per_epoch=8)
  np.testing.assert_allclose(
    _values(schedule, [2, 4, 7, 8]), [BASE / 2, BASE, BASE, BASE * 0.1], rtol=1e-6
  )


@pytest.mark.parametrize(
  "fields, steps_per_epoch, match",
  [
    (dict(), None, "decay_epochs .*or decay_steps"),
    (dict(decay_epochs=(11, 14)), None, "steps per epoch"),
    (dict(decay_epochs=(11, 14)), 0, "steps per epoch"),
    (dict(decay_epochs=(14, 11)), 10, r"decay_epochs=\(14, 11\).*strictly increasing"),
    (dict(decay_steps=(10, 10)), None, r"decay_steps=\(10, 10\).*strictly increasing"),
    (dict(decay_steps=(-1, 10)), None, "non-negative"),
    (dict(decay_steps=()), None, "decay_steps is empty"),
    (dict(decay_epochs=11), 10, "decay_epochs=11: expected a tuple"),
    (dict(decay_steps=(10,), decay_factor=0.0), None, "decay_factor"),
  ],
)
def test_steps_schedule_errors(fields, steps_per_epoch, match):
  with pytest.raises(ValueError, match="config.lr_configs.*" + match):
    optim.make_schedule(_lr(**fields), 100, steps_per_epoch=steps_per_epoch)


def test_unknown_schedule_lists_the_three_names():
  with pytest.raises(
    ValueError, match="config.lr_configs.schedule='linear'.*'cosine', 'constant', 'steps'"
  ):
    optim.make_schedule(_lr(schedule="linear"), 100)


# --- cosine and constant -------------------------------------------------------------------------


def test_cosine_schedule_closed_form():
  base, end, warmup, total = 0.4, 0.01, 10, 110
  schedule = optim.make_schedule(
    _lr(schedule="cosine", base_learning_rate=base, warmup_steps=warmup, end_learning_rate=end),
    total,
  )
  for step in (0, 3, 10, 25, 60, 97, 110):
    if step < warmup:
      expected = base * step / warmup
    else:
      expected = end + (base - end) * 0.5 * (
        1 + math.cos(math.pi * (step - warmup) / (total - warmup))
      )
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-7)


def test_constant_schedule_closed_form():
  schedule = optim.make_schedule(
    _lr(schedule="constant", base_learning_rate=0.2, warmup_steps=4), 100
  )
  np.testing.assert_allclose(
    _values(schedule, [0, 1, 2, 4, 50, 99]), [0.0, 0.05, 0.1, 0.2, 0.2, 0.2], rtol=1e-6
  )
  schedule = optim.make_schedule(_lr(schedule="constant", base_learning_rate=0.2), 100)
  np.testing.assert_allclose(_values(schedule, [0, 1, 99]), [0.2] * 3, rtol=1e-6)


# --- weight-decay masks --------------------------------------------------------------------------

TINY = dict(variant="Ti/8", hidden_size=32, num_heads=2, mlp_dim=64, num_layers=2)
MODELS = [
  ("timesformer", dict(attention="divided")),
  ("timesformer", dict(attention="axial", num_layers=1)),
  ("timesformer", dict(attention="local_global", num_layers=1)),
  ("vivit", dict(variant="Ti/8x2", attention="spatio_temporal")),
  (
    "vivit",
    dict(variant="Ti/8x2", attention="factorised_encoder", num_layers=1, temporal_layers=1),
  ),
  (
    "vivit",
    dict(variant="Ti/8x2", attention="factorised_self_attention", classifier="gap", num_layers=1),
  ),
  (
    "vivit",
    dict(variant="Ti/8x2", attention="factorised_dot_product", classifier="gap", num_layers=1),
  ),
  ("xvit", dict(num_layers=1, temporal_pos_embedding=True)),
]


def _param_shapes(name: str, overrides: dict) -> dict:
  model = models.build(name, TINY | overrides, 10)
  video = jax.ShapeDtypeStruct((1, 4, 16, 16, 3), jnp.float32)
  return jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)["params"]


def _kinds(params: dict) -> dict[str, str]:
  """Each parameter's kind, from the structure of the tree rather than from its names: LayerNorms
  hold exactly {scale, bias}, position embeddings {embedding}, class tokens are (1, 1, D) arrays."""
  kinds = {}
  for path, leaf in traverse_util.flatten_dict(params).items():
    name = "/".join(path)
    siblings = set(_subtree(params, path[:-1]))
    if siblings == {"scale", "bias"}:
      kinds[name] = "norm"
    elif siblings == {"embedding"}:
      kinds[name] = "posemb"
    elif leaf.shape[:2] == (1, 1) and len(leaf.shape) == 3:
      kinds[name] = "token"
    else:
      kinds[name] = path[-1]  # kernel or bias of a Dense or Conv
  return kinds


def _subtree(tree: dict, path: tuple) -> dict:
  for key in path:
    tree = tree[key]
  return tree


@pytest.mark.parametrize("name, overrides", MODELS)
def test_decay_mask_on_the_models(name, overrides):
  params = _param_shapes(name, overrides)
  mask = traverse_util.flatten_dict(optim.decay_mask(params), sep="/")
  kinds = _kinds(params)
  assert mask.keys() == kinds.keys()
  for param, kind in kinds.items():
    assert mask[param] == (kind in ("kernel", "bias")), (param, kind)
  assert {"norm", "posemb", "kernel", "bias"} <= set(kinds.values())
  if overrides.get("classifier") != "gap":
    assert "token" in kinds.values()


def test_decay_mask_covers_every_embedding_and_token_name():
  names = set()
  for name, overrides in MODELS:
    mask = traverse_util.flatten_dict(optim.decay_mask(_param_shapes(name, overrides)), sep="/")
    names |= {k for k, v in mask.items() if not v}
  for expected in [
    "pos_embedding/embedding",
    "time_embedding/embedding",
    "spatial_pos_embedding/embedding",
    "temporal_pos_embedding/embedding",
    "cls",
    "spatial_cls",
    "temporal_cls",
    "encoder_norm/scale",
    "encoder/encoder_norm/bias",
    "encoderblock_0/norm_temporal/scale",
    "encoder/encoderblock_0/norm_mlp/bias",
  ]:
    assert expected in names, expected


def test_decay_mask_on_a_scanned_layout():
  layers, d = 3, 4
  params = {
    "embedding": {"kernel": np.zeros((8, 8, 3, d)), "bias": np.zeros(d)},
    "cls": np.zeros((1, 1, d)),
    "pos_embedding": {"embedding": np.zeros((16, d))},
    "encoder": {
      "encoderblocks": {
        "norm_attention": {"scale": np.zeros((layers, d)), "bias": np.zeros((layers, d))},
        "attention": {
          "query": {"kernel": np.zeros((layers, d, 2, 2)), "bias": np.zeros((layers, 2, 2))}
        },
        "norm_mlp": {"scale": np.zeros((layers, d)), "bias": np.zeros((layers, d))},
        "mlp": {"Dense_0": {"kernel": np.zeros((layers, d, 8)), "bias": np.zeros((layers, 8))}},
      },
      "encoder_norm": {"scale": np.zeros(d), "bias": np.zeros(d)},
    },
    "head": {"kernel": np.zeros((d, 10)), "bias": np.zeros(10)},
  }
  mask = traverse_util.flatten_dict(optim.decay_mask(params), sep="/")
  skipped = {k for k, v in mask.items() if not v}
  assert skipped == {
    "cls",
    "pos_embedding/embedding",
    "encoder/encoderblocks/norm_attention/scale",
    "encoder/encoderblocks/norm_attention/bias",
    "encoder/encoderblocks/norm_mlp/scale",
    "encoder/encoderblocks/norm_mlp/bias",
    "encoder/encoder_norm/scale",
    "encoder/encoder_norm/bias",
  }
  # Dense and Conv biases are decayed unless asked otherwise.
  biases = optim.decay_mask(params, optim.NO_DECAY_PATTERNS + (r"/bias$",))
  skipped = {k for k, v in traverse_util.flatten_dict(biases, sep="/").items() if not v}
  assert {"embedding/bias", "head/bias", "encoder/encoderblocks/mlp/Dense_0/bias"} <= skipped
  assert "head/kernel" not in skipped
  # No patterns: everything decays.
  assert all(jax.tree.leaves(optim.decay_mask(params, ())))


# --- masked optimizers ---------------------------------------------------------------------------

LR, WD = 0.5, 0.1


def _toy_params() -> dict:
  return {
    "dense": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.full((3,), -1.0)},
    "norm_mlp": {"scale": jnp.full((3,), 3.0), "bias": jnp.full((3,), 0.5)},
    "pos_embedding": {"embedding": jnp.full((4, 3), 1.5)},
    "cls": jnp.full((1, 1, 3), 0.7),
  }


def _config(optimizer: str, **opt) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      optimizer=optimizer,
      max_grad_norm=None,
      optimizer_configs=dict(momentum=0.9, nesterov=False) | opt,
    )
  )


def _one_update(config, params, grads=None):
  tx = optim.make_optimizer(config, optax.constant_schedule(LR))
  grads = jax.tree.map(jnp.zeros_like, params) if grads is None else grads
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  return updates


def _expect_decay_on(params, updates, decayed):
  for path, p in traverse_util.flatten_dict(params, sep="/").items():
    u = traverse_util.flatten_dict(updates, sep="/")[path]
    expected = -LR * WD * p if path in decayed else jnp.zeros_like(p)
    np.testing.assert_allclose(u, expected, rtol=1e-6, err_msg=path)


@pytest.mark.parametrize(
  "optimizer, fields",
  [
    ("momentum", dict(weight_decay=WD)),  # coupled L2 through momentum's first step
    ("adamw", dict(adamw_weight_decay=WD)),  # decoupled: not normalised by Adam
  ],
)
def test_masked_weight_decay_moves_only_decayed_params(optimizer, fields):
  params = _toy_params()
  _expect_decay_on(
    params,
    _one_update(_config(optimizer, **fields), params),
    decayed={"dense/kernel", "dense/bias"},
  )
  # Custom patterns replace the default; () decays everything.
  config = _config(optimizer, no_decay_patterns=(r"/bias$",), **fields)
  _expect_decay_on(
    params,
    _one_update(config, params),
    decayed={"dense/kernel", "norm_mlp/scale", "pos_embedding/embedding", "cls"},
  )
  config = _config(optimizer, no_decay_patterns=(), **fields)
  _expect_decay_on(
    params, _one_update(config, params), decayed=set(traverse_util.flatten_dict(params, sep="/"))
  )


def test_coupled_weight_decay_goes_through_momentum():
  # Two steps with zero gradients: the second update carries momentum * the first decay term.
  params = _toy_params()
  tx = optim.make_optimizer(_config("momentum", weight_decay=WD), optax.constant_schedule(LR))
  grads = jax.tree.map(jnp.zeros_like, params)
  state = tx.init(params)
  _, state = tx.update(grads, state, params)
  updates, _ = tx.update(grads, state, params)
  k = params["dense"]["kernel"]
  np.testing.assert_allclose(updates["dense"]["kernel"], -LR * (WD * k + 0.9 * WD * k), rtol=1e-6)
  np.testing.assert_allclose(updates["cls"], 0.0)


def test_no_decay_patterns_errors():
  params = _toy_params()
  with pytest.raises(ValueError, match="config.optimizer_configs.no_decay_patterns.*tuple"):
    optim.make_optimizer(
      _config("momentum", weight_decay=WD, no_decay_patterns="/bias$"), optax.constant_schedule(LR)
    )
  with pytest.raises(ValueError, match="config.optimizer_configs.no_decay_patterns.*regex"):
    optim.make_optimizer(
      _config("momentum", weight_decay=WD, no_decay_patterns=("(",)), optax.constant_schedule(LR)
    )
  with pytest.raises(ValueError, match="config.optimizer_configs.weight_decay=-0.1"):
    _one_update(_config("momentum", weight_decay=-0.1), params)


def test_optimizer_state_on_a_real_model_tree():
  params = _param_shapes("xvit", dict(num_layers=1))
  config = _config("momentum", weight_decay=WD)
  tx = optim.make_optimizer(config, optax.constant_schedule(LR))
  state = jax.eval_shape(tx.init, params)
  updates, _ = jax.eval_shape(tx.update, params, state, params)
  assert jax.tree.structure(updates) == jax.tree.structure(params)


# --- clipping ------------------------------------------------------------------------------------


def test_clipping_scales_the_gradient_to_max_grad_norm_first():
  params = _toy_params()
  grads = jax.tree.map(
    lambda p: jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape) - 2.0, params
  )
  norm = optax.global_norm(grads)
  grads = jax.tree.map(lambda g: g * 10.0 / norm, grads)  # global norm 10
  unit = jax.tree.map(lambda g: g / 10.0, grads)  # global norm 1
  clipped = _config("momentum", weight_decay=WD)
  clipped.max_grad_norm = 1.0
  expected = _one_update(_config("momentum", weight_decay=WD), params, unit)
  for a, b in zip(
    jax.tree.leaves(_one_update(clipped, params, grads)), jax.tree.leaves(expected), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # Clipping happens before the decay is added: the decay term is not clipped.
  small = jax.tree.map(lambda g: g / 100.0, grads)  # norm 0.1: untouched by clipping
  for a, b in zip(
    jax.tree.leaves(_one_update(clipped, params, small)),
    jax.tree.leaves(_one_update(_config("momentum", weight_decay=WD), params, small)),
    strict=True,
  ):
    np.testing.assert_allclose(a, b, rtol=1e-6)


# --- EMA -----------------------------------------------------------------------------------------


def test_ema_update_formula_and_dtype():
  ema = {"a": jnp.array([1.0, 2.0], jnp.float32), "b": {"c": jnp.array(4.0, jnp.float32)}}
  params = {"a": jnp.array([3.0, -2.0], jnp.bfloat16), "b": {"c": jnp.array(0.0, jnp.bfloat16)}}
  out = jax.jit(optim.ema_update, static_argnums=2)(ema, params, 0.75)
  np.testing.assert_allclose(out["a"], [0.75 * 1 + 0.25 * 3, 0.75 * 2 - 0.25 * 2], rtol=1e-6)
  np.testing.assert_allclose(out["b"]["c"], 3.0, rtol=1e-6)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(out))
  # decay 1 keeps the EMA; decay 0 copies the parameters.
  np.testing.assert_allclose(optim.ema_update(ema, params, 1.0)["a"], ema["a"])
  np.testing.assert_allclose(optim.ema_update(ema, params, 0.0)["a"], [3.0, -2.0])


def test_cosine_schedule_with_linear_warmup():
  lr = ml_collections.ConfigDict(
    dict(schedule="cosine", base_learning_rate=0.4, warmup_steps=10, end_learning_rate=0.0)
  )
  schedule = optim.make_schedule(lr, 110)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5)), 0.2, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), 0.4, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(60)), 0.2, rtol=1e-5)  # half way down the cosine
  assert float(schedule(110)) < 1e-6


def test_steps_win_over_epochs():
  config = ml_collections.ConfigDict(dict(num_training_steps=None, num_training_epochs=2.5))
  assert optim.resolve_steps(config, "num_training", examples=100, batch_size=8) == 32
  config.num_training_steps = 7
  assert optim.resolve_steps(config, "num_training", examples=100, batch_size=8) == 7


def test_unknown_optimizer_is_a_clear_error():
  config = ml_collections.ConfigDict(
    dict(optimizer="sgdd", optimizer_configs={}, max_grad_norm=None)
  )
  with pytest.raises(ValueError, match="config.optimizer"):
    optim.make_optimizer(
      config,
      optim.make_schedule(
        ml_collections.ConfigDict(dict(schedule="cosine", base_learning_rate=0.1, warmup_steps=1)),
        10,
      ),
    )
