"""Space-time attention patterns on video tokens.

Video tokens live as (B, T, N, D): batch, time (frames or tubelets), space (patches per
frame), channels. A pattern decides which tokens attend to which by folding the axes that
do NOT take part into the batch axis, calling `attend` on (batch, length, D) sequences and
unfolding the result. `attend` is a multi-head attention module (layers.MultiHeadAttention
with its arguments bound), so every pattern shares the one attention core and no pattern
re-implements softmax attention.

Below them, the same idea as *groupings*: functions that map tokens (B, T, N, D) to
independent groups (B, G, L, D) and return the inverse map, for space, time and joint
attention and for the patterns that split a frame's h x w patch grid (`grid`; N = h*w,
patches in raster order): local windows and strided global groups (TimeSformer L+G), rows and
columns (axial). A model can carry a class token into every group with `prepend_class_token`
and `average_class_token` (TimeSformer's convention); `grouped_attention` and the named
patterns (`local_attention`, ...) are the plain token-only forms.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from vidtx.errors import UserError

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


# ----------------------------------------------------------------------------------------
# Groupings: tokens (B, T, N, D) -> (groups (B, G, L, D), ungroup). A token attends to the
# L tokens of its group; `ungroup` maps (B, G, L, D) results back to (B, T, N, D).
# ----------------------------------------------------------------------------------------

Grid = tuple[int, int]  # (h, w): patches along a frame's height and width; N = h * w.
Ungroup = Callable[[jax.Array], jax.Array]
Grouping = Callable[[jax.Array, Grid], tuple[jax.Array, Ungroup]]


def _check_grid(x: jax.Array, grid: Grid, what: str, divisors: tuple[int, int, int]) -> None:
  """Raises unless x's N equals h*w and (T, h, w) are divisible by `divisors`."""
  t, n = x.shape[1], x.shape[2]
  h, w = grid
  if h * w != n:
    raise UserError(f"{what}: grid {grid} has {h * w} patches, tokens have N={n}.")
  if t % divisors[0] or h % divisors[1] or w % divisors[2]:
    raise UserError(
      f"{what} needs (frames, patch rows, patch columns) = ({t}, {h}, {w}) divisible by {divisors}."
    )


def frame_groups(x: jax.Array, grid: Grid | None = None) -> tuple[jax.Array, Ungroup]:
  """Space (S): a group is one frame. (B, T, N, D) already is (B, G=T, L=N, D)."""
  del grid  # Frames need no grid; x may even hold extra tokens (a per-frame class token).
  return x, lambda y: y


def location_groups(x: jax.Array, grid: Grid | None = None) -> tuple[jax.Array, Ungroup]:
  """Time (T): a group is one spatial location in every frame."""
  del grid
  # (B, T, N, D) -> (B, N, T, D): G = N groups of L = T tokens.
  groups = x.transpose(0, 2, 1, 3)
  # (B, N, T, D) -> (B, T, N, D)
  return groups, lambda y: y.transpose(0, 2, 1, 3)


def clip_groups(x: jax.Array, grid: Grid | None = None) -> tuple[jax.Array, Ungroup]:
  """Joint space-time (ST): one group holding every token of the clip."""
  del grid
  b, t, n, d = x.shape
  # (B, T, N, D) -> (B, 1, T*N, D)
  groups = x.reshape(b, 1, t * n, d)
  # (B, 1, T*N, D) -> (B, T, N, D)
  return groups, lambda y: y.reshape(b, t, n, d)


def window_groups(x: jax.Array, grid: Grid, splits: int = 2) -> tuple[jax.Array, Ungroup]:
  """Local (L of TimeSformer's L+G): the h x w grid is cut into splits x splits windows of
  h/splits x w/splits patches; a group is one window in every frame, F x h/2 x w/2 tokens for
  the paper's splits=2. Windows do not overlap (Child et al.'s local blocks), so the groups
  are a reshape and every token's neighbourhood has the same size."""
  _check_grid(x, grid, f"local attention ({splits}x{splits} windows)", (1, splits, splits))
  b, t, n, d = x.shape
  h, w = grid
  s, hs, ws = splits, h // splits, w // splits
  # (B, T, N, D) -> (B, T, s, h/s, s, w/s, D): window row, row in window, window col, col in it.
  x = x.reshape(b, t, s, hs, s, ws, d)
  # -> (B, s, s, T, h/s, w/s, D) -> (B, s*s, T*h/s*w/s, D)
  groups = x.transpose(0, 2, 4, 1, 3, 5, 6).reshape(b, s * s, t * hs * ws, d)

  def ungroup(y: jax.Array) -> jax.Array:
    # (B, s*s, T*h/s*w/s, D) -> (B, s, s, T, h/s, w/s, D) -> (B, T, s, h/s, s, w/s, D)
    y = y.reshape(b, s, s, t, hs, ws, d).transpose(0, 3, 1, 4, 2, 5, 6)
    # (B, T, s, h/s, s, w/s, D) -> (B, T, N, D)
    return y.reshape(b, t, h * w, d)

  return groups, ungroup


def strided_groups(x: jax.Array, grid: Grid, stride: int = 2) -> tuple[jax.Array, Ungroup]:
  """Global (G of TimeSformer's L+G): sparse attention over the whole clip with a stride in
  time, height and width. A token attends to the tokens whose frame, row and column differ
  from its own by multiples of `stride` (Child et al.'s strided pattern in 3D), so the clip
  splits into stride**3 groups of T/s x h/s x w/s tokens, each spread over the entire clip."""
  _check_grid(x, grid, f"strided global attention (stride {stride})", (stride,) * 3)
  b, t, n, d = x.shape
  h, w = grid
  s, ts, hs, ws = stride, t // stride, h // stride, w // stride
  # (B, T, N, D) -> (B, T/s, s, h/s, s, w/s, s, D): index = coarse index * s + phase.
  x = x.reshape(b, ts, s, hs, s, ws, s, d)
  # -> (B, s, s, s, T/s, h/s, w/s, D) -> (B, s**3, T/s*h/s*w/s, D); a group is one phase.
  groups = x.transpose(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, s**3, ts * hs * ws, d)

  def ungroup(y: jax.Array) -> jax.Array:
    # (B, s**3, L, D) -> (B, s, s, s, T/s, h/s, w/s, D) -> (B, T/s, s, h/s, s, w/s, s, D)
    y = y.reshape(b, s, s, s, ts, hs, ws, d).transpose(0, 4, 1, 5, 2, 6, 3, 7)
    # (B, T/s, s, h/s, s, w/s, s, D) -> (B, T, N, D)
    return y.reshape(b, t, h * w, d)

  return groups, ungroup


def row_groups(x: jax.Array, grid: Grid) -> tuple[jax.Array, Ungroup]:
  """Width (W of axial T+W+H): a group is one row of patches of one frame."""
  _check_grid(x, grid, "width attention", (1, 1, 1))
  b, t, n, d = x.shape
  h, w = grid
  # (B, T, N, D) -> (B, T*h, w, D): raster order puts a row's patches next to each other.
  groups = x.reshape(b, t * h, w, d)
  # (B, T*h, w, D) -> (B, T, N, D)
  return groups, lambda y: y.reshape(b, t, n, d)


def column_groups(x: jax.Array, grid: Grid) -> tuple[jax.Array, Ungroup]:
  """Height (H of axial T+W+H): a group is one column of patches of one frame."""
  _check_grid(x, grid, "height attention", (1, 1, 1))
  b, t, n, d = x.shape
  h, w = grid
  # (B, T, N, D) -> (B, T, h, w, D) -> (B, T, w, h, D) -> (B, T*w, h, D)
  groups = x.reshape(b, t, h, w, d).transpose(0, 1, 3, 2, 4).reshape(b, t * w, h, d)

  def ungroup(y: jax.Array) -> jax.Array:
    # (B, T*w, h, D) -> (B, T, w, h, D) -> (B, T, h, w, D) -> (B, T, N, D)
    return y.reshape(b, t, w, h, d).transpose(0, 1, 3, 2, 4).reshape(b, t, n, d)

  return groups, ungroup


def attend_in_groups(attend: Attend, groups: jax.Array) -> jax.Array:
  """Attention within each group: (B, G, L, D) -> (B, G, L, D)."""
  b, g, length, d = groups.shape
  # (B, G, L, D) -> (B*G, L, D): the groups become batch entries of the one attention core.
  y = attend(groups.reshape(b * g, length, d))
  # (B*G, L, D) -> (B, G, L, D)
  return y.reshape(b, g, length, d)


def prepend_class_token(groups: jax.Array, cls: jax.Array) -> jax.Array:
  """A copy of the class token cls (B, 1, D) in front of every group: (B, G, 1+L, D).

  Every token then also attends to the class token, and the class token attends to each
  group separately (TimeSformer's spatial attention: one copy per frame).
  """
  b, g, _, d = groups.shape
  # (B, 1, D) -> (B, 1, 1, D) -> (B, G, 1, D)
  copies = jnp.broadcast_to(cls[:, None], (b, g, 1, d)).astype(groups.dtype)
  return jnp.concatenate([copies, groups], axis=2)


def average_class_token(y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Splits results (B, G, 1+L, D) of `prepend_class_token` groups into the tokens' results
  (B, G, L, D) and the average of the G class-token copies (B, 1, D)."""
  # (B, G, D) -> (B, 1, D)
  return y[:, :, 1:], jnp.mean(y[:, :, 0], axis=1, keepdims=True)


def grouped_attention(
  attend: Attend, x: jax.Array, grouping: Grouping, grid: Grid | None = None, **kwargs
) -> jax.Array:
  """Tokens (B, T, N, D) attend within the groups of `grouping` (the functions above)."""
  groups, ungroup = grouping(x, grid, **kwargs)
  return ungroup(attend_in_groups(attend, groups))


def local_attention(attend: Attend, x: jax.Array, *, grid: Grid, splits: int = 2) -> jax.Array:
  """TimeSformer L+G's local attention: within F x h/splits x w/splits windows."""
  return grouped_attention(attend, x, window_groups, grid, splits=splits)


def global_attention(attend: Attend, x: jax.Array, *, grid: Grid, stride: int = 2) -> jax.Array:
  """TimeSformer L+G's sparse global attention: stride `stride` in time, height and width."""
  return grouped_attention(attend, x, strided_groups, grid, stride=stride)


def width_attention(attend: Attend, x: jax.Array, *, grid: Grid) -> jax.Array:
  """Axial attention along a frame's width (within a row of patches)."""
  return grouped_attention(attend, x, row_groups, grid)


def height_attention(attend: Attend, x: jax.Array, *, grid: Grid) -> jax.Array:
  """Axial attention along a frame's height (within a column of patches)."""
  return grouped_attention(attend, x, column_groups, grid)


def factorised_dot_product_attention(
  core: Callable[..., jax.Array],
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  *,
  mask: jax.Array | None = None,
  dropout_rate: float = 0.0,
  dropout_rng: jax.Array | None = None,
  deterministic: bool = True,
  implementation: str = "auto",
) -> jax.Array:
  """ViViT Model 4: the first half of the heads attend over space, the second over time.

  An `attention_fn` for layers.MultiHeadAttention applied to (B, T, N, D) tokens, so that
  query, key, value are (B, T, N, heads, head_dim): heads [0, H/2) attend to the tokens of
  their own frame (Y_s), heads [H/2, H) to the tokens at their own spatial index (Y_t); the
  halves are concatenated in that order, Concat(Y_s, Y_t) as in the paper (scenic's code puts
  the temporal half first), and the module's out projection mixes them. `core` is
  kernels.dot_product_attention, passed in by the model; `implementation`
  (model.attention_implementation) is passed on to it. Returns (B, T, N, heads, head_dim).
  """
  if query.ndim != 5:
    raise ValueError(
      f"factorised_dot_product_attention: expected (B, T, N, heads, head_dim), got {query.shape}."
    )
  if mask is not None:
    raise ValueError("factorised_dot_product_attention: masks are not supported.")
  b, t, n, h, c = query.shape
  if h % 2:
    raise UserError(f"factorised_dot_product_attention: {h} heads do not split in two halves.")
  half = h // 2
  rngs = [None, None] if dropout_rng is None else list(jax.random.split(dropout_rng))

  def attend(q, k, v, rng):
    return core(
      q,
      k,
      v,
      dropout_rate=dropout_rate,
      dropout_rng=rng,
      deterministic=deterministic,
      implementation=implementation,
    )

  # Space heads: (B, T, N, H/2, c) -> (B*T, N, H/2, c), one sequence per frame.
  space = [x[..., :half, :].reshape(b * t, n, half, c) for x in (query, key, value)]
  # (B*T, N, H/2, c) -> (B, T, N, H/2, c)
  y_space = attend(*space, rngs[0]).reshape(b, t, n, half, c)
  # Time heads: (B, T, N, H/2, c) -> (B, N, T, H/2, c) -> (B*N, T, H/2, c), one per location.
  time = [
    x[..., half:, :].transpose(0, 2, 1, 3, 4).reshape(b * n, t, h - half, c)
    for x in (query, key, value)
  ]
  # (B*N, T, H/2, c) -> (B, N, T, H/2, c) -> (B, T, N, H/2, c)
  y_time = attend(*time, rngs[1]).reshape(b, n, t, h - half, c).transpose(0, 2, 1, 3, 4)
  return jax.numpy.concatenate([y_space, y_time], axis=-2)
