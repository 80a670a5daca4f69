"""vidtx.losses: label smoothing's targets and the cross-entropy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_losses_of_each_label_kind():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  hot = jnp.asarray([[0, 0, 1, 0, 1], [1, 0, 0, 1, 0], [0, 1, 0, 1, 0]], jnp.float32)
  kind = dict(class_splits=(3, 2))
  targets = losses.targets(hot, 5, 0.3, **kind)
  np.testing.assert_allclose(targets[:, :3].sum(1), 1, rtol=1e-6)
  np.testing.assert_allclose(targets[:, 3:].sum(1), 1, rtol=1e-6)
  assert float(targets[0, 2]) == pytest.approx(0.7 + 0.1, rel=1e-6)
  assert float(targets[0, 3]) == pytest.approx(0.15, rel=1e-6)

  def cross_entropy(z, t):
    return -(t * (z - np.log(np.exp(z).sum(-1, keepdims=True)))).sum(-1)

  z, t = np.asarray(logits, np.float64), np.asarray(targets, np.float64)
  np.testing.assert_allclose(
    losses.loss(logits, targets, **kind),
    cross_entropy(z[:, :3], t[:, :3]) + cross_entropy(z[:, 3:], t[:, 3:]),
    rtol=1e-5,
  )
  bce = -(hot * np.log(1 / (1 + np.exp(-z))) + (1 - hot) * np.log(1 - 1 / (1 + np.exp(-z))))
  np.testing.assert_allclose(losses.loss(logits, hot, multi_label=True), bce.sum(-1), rtol=1e-5)
  # Action correct: every split's top-1 right; multi-label: the top class is a positive.
  right = (z[:, :3].argmax(1) == np.asarray(hot)[:, :3].argmax(1)) & (
    z[:, 3:].argmax(1) == np.asarray(hot)[:, 3:].argmax(1)
  )
  np.testing.assert_array_equal(losses.correct(logits, hot, **kind), right)
  np.testing.assert_array_equal(
    losses.correct(logits, hot, multi_label=True), np.asarray(hot)[np.arange(3), z.argmax(1)]
  )


def test_mixup_mixes_each_clip_with_the_reversed_batch():
  inputs = jnp.arange(4 * 6, dtype=jnp.float32).reshape(4, 6)
  targets = jax.nn.one_hot(jnp.arange(4), 4)
  lams = []
  for seed in range(20):
    mixed, mixed_targets, lam = losses.mixup(jax.random.key(seed), inputs, targets, 0.3)
    np.testing.assert_allclose(mixed, lam * inputs + (1 - lam) * inputs[::-1], rtol=1e-6)
    np.testing.assert_allclose(mixed_targets.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(mixed_targets[0], [lam, 0, 0, 1 - lam], rtol=1e-6, atol=1e-7)
    lams.append(float(lam))
  # Beta(0.3, 0.3) piles up at the ends.
  assert min(lams) < 0.1 and max(lams) > 0.9
