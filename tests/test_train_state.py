"""vidtx.train_state's step on one device, in process: gradient accumulation equal to the whole
batch, bfloat16 compute, the EMA formula."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vidtx import models, sharding
from vidtx import train_state as state_lib

jax.config.update("jax_numpy_rank_promotion", "raise")


def _tiny_state(ema: bool):
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  model = models.build(
    "vivit",
    dict(
      variant="Ti/8x2",
      hidden_size=32,
      num_heads=2,
      mlp_dim=64,
      num_layers=1,
      attention="spatio_temporal",
    ),
    3,
  )
  tx = optax.sgd(0.5, momentum=0.9)
  state, abstract = state_lib.create_train_state(
    model, tx, (8, 4, 16, 16, 3), mesh, jax.random.key(0), ema=ema
  )
  return model, tx, mesh, state, abstract


def test_gradient_accumulation_equals_the_whole_batch():
  batch = {
    "inputs": jax.random.normal(jax.random.key(1), (8, 4, 16, 16, 3)),
    "label": jnp.arange(8) % 3,
  }
  results = {}
  for k in (1, 2, 4):
    model, tx, mesh, state, abstract = _tiny_state(ema=False)
    step = state_lib.make_train_step(
      model,
      tx,
      optax.constant_schedule(0.5),
      abstract,
      mesh,
      num_classes=3,
      label_smoothing=0.1,
      grad_accum_steps=k,
    )
    for _ in range(2):
      state, step_metrics = step(state, batch)
    results[k] = jax.device_get((state.params, step_metrics))
  for k in (2, 4):
    np.testing.assert_allclose(results[k][1]["loss"], results[1][1]["loss"], rtol=1e-5)
    np.testing.assert_allclose(results[k][1]["grad_norm"], results[1][1]["grad_norm"], rtol=1e-4)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
      results[k][0],
      results[1][0],
    )
  with pytest.raises(ValueError, match="grad_accum_steps=0"):
    state_lib.make_train_step(
      model, tx, optax.constant_schedule(0.5), abstract, mesh, num_classes=3, grad_accum_steps=0
    )


@pytest.mark.tier2
def test_bfloat16_computes_in_bf16_and_keeps_state_and_loss_in_float32():
  batch = {
    "inputs": jax.random.normal(jax.random.key(1), (8, 4, 16, 16, 3)),
    "label": jnp.arange(8) % 3,
  }
  losses = {}
  for dtype in ("float32", "bfloat16"):
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    model = models.build(
      "vivit",
      dict(
        variant="Ti/8x2",
        hidden_size=32,
        num_heads=2,
        mlp_dim=64,
        num_layers=1,
        attention="spatio_temporal",
        dtype=dtype,
      ),
      3,
    )
    tx = optax.sgd(0.5, momentum=0.9)
    state, abstract = state_lib.create_train_state(
      model, tx, (8, 4, 16, 16, 3), mesh, jax.random.key(0)
    )
    step = state_lib.make_train_step(
      model, tx, optax.constant_schedule(0.5), abstract, mesh, num_classes=3
    )
    if dtype == "bfloat16":
      # The matmuls run in bf16: the compiled step's dot products take bf16 operands.
      hlo = step.lower(state, batch).as_text()
      assert "bf16" in hlo and "dot_general" in hlo
    state, metrics = step(state, batch)
    for leaf in jax.tree.leaves((state.params, state.opt_state)):
      if jnp.issubdtype(leaf.dtype, jnp.floating):
        assert leaf.dtype == jnp.float32, dtype
    assert metrics["loss"].dtype == jnp.float32
    losses[dtype] = float(metrics["loss"])
  # Same parameters, bf16 rounding only.
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=2e-2)


def test_ema_follows_the_formula_and_is_what_evaluation_uses():
  model, tx, mesh, state, abstract = _tiny_state(ema=True)
  initial = jax.device_get(state.params)
  step = state_lib.make_train_step(
    model, tx, optax.constant_schedule(0.5), abstract, mesh, num_classes=3, ema_decay=0.75
  )
  batch = {
    "inputs": jax.random.normal(jax.random.key(1), (8, 4, 16, 16, 3)),
    "label": jnp.arange(8) % 3,
  }
  state, _ = step(state, batch)
  params, ema = jax.device_get((state.params, state.ema_params))
  jax.tree.map(
    lambda e, p0, p1: np.testing.assert_allclose(e, 0.75 * p0 + 0.25 * p1, rtol=1e-5, atol=1e-7),
    ema,
    initial,
    params,
  )
  assert state_lib.eval_params(state) is state.ema_params
  assert not np.allclose(params["head"]["kernel"], ema["head"]["kernel"])
