"""vidtx.losses: label smoothing's targets and the cross-entropy."""

import jax
import jax.numpy as jnp
import numpy as np

from vidtx import losses

jax.config.update("jax_numpy_rank_promotion", "raise")


def test_label_smoothing_targets_and_cross_entropy():
  targets = losses.smoothed_one_hot(jnp.array([2]), 4, 0.2)
  np.testing.assert_allclose(targets, [[0.05, 0.05, 0.85, 0.05]], rtol=1e-6)
  logits = jnp.array([[1.0, 2.0, 3.0, 4.0]])
  log_probs = logits - jnp.log(jnp.sum(jnp.exp(logits)))
  np.testing.assert_allclose(
    losses.softmax_cross_entropy(logits, targets), -jnp.sum(targets * log_probs, -1), rtol=1e-6
  )
