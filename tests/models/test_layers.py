"""vidtx.models.layers: drop path drops whole examples; the exact GELU in float32 and its
gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidtx.models import encoder, layers


def test_drop_path_drops_whole_examples():
  x = jnp.ones((64, 3, 5))
  y = layers.DropPath(0.5).apply(
    {}, x, deterministic=False, rngs={"dropout": jax.random.key(0, impl="rbg")}
  )
  per_example = np.asarray(y).reshape(64, -1)
  assert set(np.unique(per_example)) == {0.0, 2.0}
  assert (per_example == per_example[:, :1]).all()
  assert encoder.drop_path_rates(0.2, 5) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_gelu_exact_to_float32_and_its_gradient():
  """The erf form equals x * Phi(x) computed in float64 to float32 rounding, in the tails too,
  and so does its gradient Phi(x) + x * phi(x); the tanh form is Flax's."""
  from scipy import special

  x64 = np.concatenate([np.linspace(-12, 12, 20001), [-40.0, -9.5, 0.0, 1e-30, 9.5, 40.0]])
  x = jnp.asarray(x64, jnp.float32)
  x64 = np.asarray(x, np.float64)  # The float32 inputs, exactly.
  cdf = 0.5 * special.erfc(-x64 / np.sqrt(2))
  expected = x64 * cdf
  got = np.asarray(layers.gelu(x), np.float64)
  # float32 rounding: within 3 units of 2^-24 of |x * Phi(x)| + |x| (the sum 1 + erf rounds at
  # the scale of 1, so where Phi is tiny the error is relative to x, as in PyTorch).
  eps = 2.0**-24
  assert np.all(np.abs(got - expected) <= 3 * eps * (np.abs(expected) + np.abs(x64)))
  grad = np.asarray(jax.vmap(jax.grad(layers.gelu))(x), np.float64)
  expected_grad = cdf + x64 * np.exp(-(x64**2) / 2) / np.sqrt(2 * np.pi)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(layers.gelu(x, approximate=True), jax.nn.gelu(x, approximate=True))
  # The erfc form (TensorFlow export) is the same function, and the traced program has no erf.
  with layers.gelu_with_erfc():
    erfc_form = np.asarray(layers.gelu(x), np.float64)
    text = jax.jit(lambda v: layers.gelu(v)).lower(x).as_text()
  assert np.all(np.abs(erfc_form - expected) <= 3 * eps * (np.abs(expected) + np.abs(x64)))
  assert "erfc" in text and "chlo.erf " not in text
  assert "chlo.erf " in jax.jit(lambda v: layers.gelu(v)).lower(x).as_text()
