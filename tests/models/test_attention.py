"""vidtx.models.attention: each pattern against full softmax attention with its explicit mask,
and the core's weight path against the fused one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import (
  as_float64,
  random_attention,
  ref_attention,
)
from test_models import _video

from vidtx.models import attention, kernels


@pytest.mark.parametrize("pattern", ["spatial", "temporal", "joint"])
def test_pattern_equals_masked_full_attention(pattern):
  b, t, n, d = 2, 3, 4, 8
  x = _video(shape=(b, t, n, d))
  mha, params = random_attention(x[:, 0])

  def attend(tokens):
    return mha.apply(params, tokens, deterministic=True)

  got = getattr(attention, f"{pattern}_attention")(attend, x)
  frame, place = np.repeat(np.arange(t), n), np.tile(np.arange(n), t)
  mask = {
    "spatial": frame[:, None] == frame[None, :],
    "temporal": place[:, None] == place[None, :],
    "joint": np.ones((t * n, t * n), bool),
  }[pattern]
  p = as_float64(params["params"])
  want = np.stack(
    [ref_attention(np.asarray(xb, np.float64).reshape(t * n, d), p, mask) for xb in x]
  )
  np.testing.assert_allclose(np.asarray(got).reshape(b, t * n, d), want, atol=1e-5)


def test_attention_core_weight_path_matches_fused():
  """The explicit-weights path (used for attention dropout) equals the fused one."""
  q, k, v = (_video(seed, (2, 5, 2, 4)) for seed in range(3))
  mask = jnp.asarray(np.tril(np.ones((5, 5), bool)))[None, None]
  # An 'rbg' key: threefry random bits take seconds to compile on CPU.
  rbg_key = jax.random.key(0, impl="rbg")
  core = jax.jit(kernels.dot_product_attention, static_argnames=("dropout_rate", "deterministic"))
  fused = core(q, k, v, mask=mask)
  explicit = core(q, k, v, mask=mask, dropout_rate=1e-12, dropout_rng=rbg_key, deterministic=False)
  np.testing.assert_allclose(explicit, fused, atol=1e-6)
  dropped = core(q, k, v, mask=mask, dropout_rate=0.5, dropout_rng=rbg_key, deterministic=False)
  assert not np.allclose(dropped, fused, atol=1e-3)
