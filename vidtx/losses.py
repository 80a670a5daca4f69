"""Classification losses."""

import jax
import jax.numpy as jnp


def smoothed_one_hot(labels: jax.Array, num_classes: int, label_smoothing: float) -> jax.Array:
  """(B,) int labels -> (B, K) targets with `label_smoothing` mass spread over all classes."""
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes


def softmax_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example cross-entropy of (B, K) logits against (B, K) target distributions."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(targets * log_probs, axis=-1)
