"""Space-time attention patterns on video tokens.

Video tokens live as (B, T, N, D): batch, time (frames or tubelets), space (patches per
frame), channels. A pattern decides which tokens attend to which by folding the axes that
do NOT take part into the batch axis, calling `attend` on (batch, length, D) sequences and
unfolding the result. `attend` is a multi-head attention module (common.MultiHeadAttention
with its arguments bound), so every pattern shares the one attention core and no pattern
re-implements softmax attention.
"""

from collections.abc import Callable

import jax

Attend = Callable[[jax.Array], jax.Array]


def joint_attention(attend: Attend, x: jax.Array) -> jax.Array:
  """Every token attends to every token of the same example.

  Works for any token layout (B, *S, D): (B, T, N, D) gives joint space-time attention
  (ViViT Model 1, TimeSformer 'ST'); (B, L, D) is plain sequence attention.
  """
  shape = x.shape
  # (B, *S, D) -> (B, prod(S), D)
  y = attend(x.reshape(shape[0], -1, shape[-1]))
  # (B, prod(S), D) -> (B, *S, D)
  return y.reshape(shape)


def spatial_attention(attend: Attend, x: jax.Array) -> jax.Array:
  """Each token attends to the tokens of its own frame (time index)."""
  b, t, n, d = x.shape
  # (B, T, N, D) -> (B*T, N, D)
  y = attend(x.reshape(b * t, n, d))
  # (B*T, N, D) -> (B, T, N, D)
  return y.reshape(b, t, n, d)


def temporal_attention(attend: Attend, x: jax.Array) -> jax.Array:
  """Each token attends to the tokens at its own spatial location in all frames."""
  b, t, n, d = x.shape
  # (B, T, N, D) -> (B, N, T, D) -> (B*N, T, D)
  y = attend(x.transpose(0, 2, 1, 3).reshape(b * n, t, d))
  # (B*N, T, D) -> (B, N, T, D) -> (B, T, N, D)
  return y.reshape(b, n, t, d).transpose(0, 2, 1, 3)
