"""Classification losses and targets: label smoothing, mixup, class splits, multi-label.

Targets are (B, K) distributions (or multi-hot rows) built once from the reader's labels:
int (B,) for single-label data, float multi-hot (B, K) with `class_splits` (EPIC: one class per
split) or `multi_label`. The loss is then chosen by the label kind:
- single-label: softmax cross-entropy over the K classes;
- class splits: a softmax cross-entropy per split (its slice of the logits), summed over splits,
  as scenic's ViViT trains EPIC-Kitchens' noun and verb heads;
- multi-label: sigmoid binary cross-entropy, summed over classes.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def smoothed_one_hot(labels: jax.Array, num_classes: int, label_smoothing: float) -> jax.Array:
  """(B,) int labels -> (B, K) targets with `label_smoothing` mass spread over all classes."""
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes


def _split_slices(class_splits: Sequence[int]) -> list[slice]:
  starts = [sum(class_splits[:i]) for i in range(len(class_splits))]
  return [slice(s, s + n) for s, n in zip(starts, class_splits, strict=True)]


def targets(
  labels: jax.Array,
  num_classes: int,
  label_smoothing: float = 0.0,
  *,
  class_splits: Sequence[int] = (),
  multi_label: bool = False,
) -> jax.Array:
  """The reader's labels as (B, K) float32 targets, smoothed (ViViT 2103.15691 Eq. 11).

  Smoothing mixes each distribution with the uniform one over its own classes: all K classes,
  each split's classes, or, for independent sigmoid outputs, 0.5.
  """
  if labels.ndim == 1:
    return smoothed_one_hot(labels, num_classes, label_smoothing)
  hot = labels.astype(jnp.float32)  # (B, K) multi-hot
  if multi_label:
    return hot * (1.0 - label_smoothing) + 0.5 * label_smoothing
  parts = [
    hot[:, s] * (1.0 - label_smoothing) + label_smoothing / (s.stop - s.start)
    for s in _split_slices(class_splits)
  ]
  return jnp.concatenate(parts, axis=-1)


def mixup(
  rng: jax.Array, inputs: jax.Array, batch_targets: jax.Array, alpha: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Mixup (ViViT 2103.15691 Eq. 12) on the device: every clip mixed with the batch reversed.

  One λ ~ Beta(α, α) per batch, as in Zhang et al.; x̃ = λ x + (1 - λ) x_rev and the same for
  the targets. Returns (inputs, targets, λ).
  """
  lam = jax.random.beta(rng, alpha, alpha)
  # Pairs (i, B-1-i): a permutation without a random gather; the batch order is random already.
  mixed_inputs = lam * inputs + (1.0 - lam) * jnp.flip(inputs, axis=0)
  mixed_targets = lam * batch_targets + (1.0 - lam) * jnp.flip(batch_targets, axis=0)
  return mixed_inputs.astype(inputs.dtype), mixed_targets, lam


def softmax_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example cross-entropy of (B, K) logits against (B, K) target distributions."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(targets * log_probs, axis=-1)


def loss(
  logits: jax.Array,
  batch_targets: jax.Array,
  *,
  class_splits: Sequence[int] = (),
  multi_label: bool = False,
) -> jax.Array:
  """(B,) per-example loss of the label kind (see the module docstring)."""
  logits = logits.astype(jnp.float32)
  if multi_label:
    return jnp.sum(sigmoid_binary_cross_entropy(logits, batch_targets), axis=-1)
  if class_splits:
    return sum(
      softmax_cross_entropy(logits[:, s], batch_targets[:, s]) for s in _split_slices(class_splits)
    )
  return softmax_cross_entropy(logits, batch_targets)


def sigmoid_binary_cross_entropy(logits: jax.Array, batch_targets: jax.Array) -> jax.Array:
  """Element-wise binary cross-entropy of sigmoid(logits), computed stably from the logits."""
  return jnp.maximum(logits, 0) - logits * batch_targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def correct(
  logits: jax.Array,
  labels: jax.Array,
  *,
  class_splits: Sequence[int] = (),
  multi_label: bool = False,
) -> jax.Array:
  """(B,) 1.0 where the top-1 prediction is right: the class; every split's class (EPIC
  "action"); or, multi-label, one of the positives."""
  if labels.ndim == 1:
    return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  if multi_label:
    top = jnp.argmax(logits, -1)
    return jnp.take_along_axis(labels, top[:, None], axis=-1)[:, 0].astype(jnp.float32)
  right = [
    jnp.argmax(logits[:, s], -1) == jnp.argmax(labels[:, s], -1)
    for s in _split_slices(class_splits)
  ]
  return jnp.all(jnp.stack(right), axis=0).astype(jnp.float32)
