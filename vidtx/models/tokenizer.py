"""Video tokenisers: (B, T, H, W, C) video -> (B, T', N, D) tokens.

- `frame_embedding`: each frame cut into P x P patches and embedded as in ViT ("uniform
  frame sampling", TimeSformer); kernel [P, P, C, D], the vit_jax layout.
- `tubelet_embedding`: non-overlapping t x P x P tubes embedded by a 3D convolution (ViViT
  Sec. 3.2); kernel [t, P, P, C, D], the scenic layout.

Both are functions to call inside a compact Flax method: they create one nn.Conv named
`name` (default 'embedding') in the calling module, so its parameters are
`embedding/{kernel, bias}` there. The kernels use the Flax default initialiser (LeCun
normal), as ViT does for its patch embedding.

Tubelet kernels from a 2D (image) kernel [h, w, C, D] (ViViT Sec. 3.4), `kernel_init_method`:
- 'random': a LeCun-normal 3D kernel (the paper's "random initialisation").
- 'inflate' (Eq. 8): the 2D kernel replicated over the t frames and divided by t, so a clip of
  one repeated image embeds as that image does.
- 'central_frame' (Eq. 9): the 2D kernel at frame floor(t / 2), zeros elsewhere, so the
  tubelet embedding starts as uniform frame sampling of the central frames.
`inflate_kernel` and `central_frame_kernel` map a given (e.g. pretrained) 2D kernel; for
'inflate' and 'central_frame' the module's initialiser applies them to a fresh LeCun-normal
2D kernel (fan-in h*w*C, that of the image model).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidtx.errors import UserError
from vidtx.models import layers

KERNEL_INIT_METHODS = ("random", "inflate", "central_frame")


def _check_video(video: jax.Array, patch_size: int, tubelet_size: int) -> None:
  if video.ndim != 5:
    raise UserError(f"video: expected shape (B, T, H, W, C), got {video.shape}.")
  _, t, h, w, _ = video.shape
  if h % patch_size or w % patch_size:
    raise UserError(
      f"video frames are {h}x{w}, not divisible by the patch size {patch_size} (model.variant)."
    )
  if t % tubelet_size:
    raise UserError(
      f"video has {t} frames, not divisible by the tubelet length {tubelet_size} (model.variant)."
    )


def frame_embedding(
  video: jax.Array,
  *,
  hidden_size: int,
  patch_size: int,
  dtype: Any = jnp.float32,
  name: str = "embedding",
) -> jax.Array:
  """Embeds every frame's P x P patches: (B, T, H, W, C) -> (B, T, H/P * W/P, D)."""
  _check_video(video, patch_size, 1)
  # nn.Conv treats the leading (B, T) axes as batch axes: (B, T, H, W, C) -> (B, T, h, w, D)
  x = nn.Conv(
    hidden_size,
    (patch_size, patch_size),
    strides=(patch_size, patch_size),
    padding="VALID",
    dtype=dtype,
    # (P, P, C, D): split, if at all, along the embedding.
    kernel_init=layers.logical(nn.linear.default_kernel_init, None, None, None, layers.EMBED),
    bias_init=layers.logical(nn.initializers.zeros, layers.EMBED),
    name=name,
  )(video)
  b, t, h, w, d = x.shape
  # (B, T, h, w, D) -> (B, T, h*w, D), patches in raster order.
  return x.reshape(b, t, h * w, d)


def tubelet_embedding(
  video: jax.Array,
  *,
  hidden_size: int,
  patch_size: int,
  tubelet_size: int,
  dtype: Any = jnp.float32,
  kernel_init_method: str = "random",
  name: str = "embedding",
) -> jax.Array:
  """Embeds t x P x P tubelets: (B, T, H, W, C) -> (B, T/t, H/P * W/P, D).

  The kernel is initialised by `kernel_init_method` (module docstring).
  """
  _check_video(video, patch_size, tubelet_size)
  size = (tubelet_size, patch_size, patch_size)
  # (B, T, H, W, C) -> (B, T/t, h, w, D)
  x = nn.Conv(
    hidden_size,
    size,
    strides=size,
    padding="VALID",
    dtype=dtype,
    # (t, P, P, C, D): split, if at all, along the embedding.
    kernel_init=layers.logical(
      tubelet_kernel_init(kernel_init_method), None, None, None, None, layers.EMBED
    ),
    bias_init=layers.logical(nn.initializers.zeros, layers.EMBED),
    name=name,
  )(video)
  b, t, h, w, d = x.shape
  # (B, T', h, w, D) -> (B, T', h*w, D)
  return x.reshape(b, t, h * w, d)


# ----------------------------------------------------------------------------------------
# Tubelet kernels from 2D kernels (ViViT Sec. 3.4).
# ----------------------------------------------------------------------------------------


def _check_kernel_2d(kernel_2d: jax.Array, tubelet_size: int) -> None:
  if kernel_2d.ndim != 4:
    raise UserError(f"2D patch kernel: expected shape [h, w, C, D], got {kernel_2d.shape}.")
  if not isinstance(tubelet_size, int) or tubelet_size < 1:
    raise UserError(f"tubelet_size={tubelet_size!r}: expected a positive integer.")


def inflate_kernel(kernel_2d: jax.Array, tubelet_size: int) -> jax.Array:
  """Eq. 8: [h, w, C, D] -> [t, h, w, C, D], the 2D kernel / t at every temporal position."""
  _check_kernel_2d(kernel_2d, tubelet_size)
  # (h, w, C, D) -> (t, h, w, C, D)
  return jnp.broadcast_to(kernel_2d / tubelet_size, (tubelet_size,) + kernel_2d.shape)


def central_frame_kernel(kernel_2d: jax.Array, tubelet_size: int) -> jax.Array:
  """Eq. 9: [h, w, C, D] -> [t, h, w, C, D], the 2D kernel at floor(t / 2), zeros elsewhere."""
  _check_kernel_2d(kernel_2d, tubelet_size)
  kernel = jnp.zeros((tubelet_size,) + kernel_2d.shape, kernel_2d.dtype)
  return kernel.at[tubelet_size // 2].set(kernel_2d)


_KERNEL_RULES = {"inflate": inflate_kernel, "central_frame": central_frame_kernel}


def kernel_from_2d(kernel_2d: jax.Array, tubelet_size: int, method: str) -> jax.Array:
  """[h, w, C, D] -> [t, h, w, C, D] by `method`, 'inflate' (Eq. 8) or 'central_frame' (Eq. 9)."""
  if method not in _KERNEL_RULES:
    raise UserError(
      f"kernel_init_method={method!r}: a 2D kernel maps to 3D by one of {list(_KERNEL_RULES)}."
    )
  return _KERNEL_RULES[method](kernel_2d, tubelet_size)


def tubelet_kernel_init(method: str) -> Callable[..., jax.Array]:
  """The Flax initialiser of a [t, h, w, C, D] tubelet kernel for `kernel_init_method`."""
  if method not in KERNEL_INIT_METHODS:
    raise UserError(
      f"model.kernel_init_method={method!r}: expected one of {list(KERNEL_INIT_METHODS)}."
    )
  if method == "random":
    return nn.linear.default_kernel_init  # What nn.Conv uses when given nothing.

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    # A fresh 2D kernel with the image model's fan-in, mapped by the rule.
    kernel_2d = nn.linear.default_kernel_init(key, shape[1:], dtype)
    return kernel_from_2d(kernel_2d, shape[0], method)

  return init
