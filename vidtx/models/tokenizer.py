"""Video tokenisers: (B, T, H, W, C) video -> (B, T', N, D) tokens.

- `frame_embedding`: each frame cut into P x P patches and embedded as in ViT ("uniform
  frame sampling", TimeSformer); kernel [P, P, C, D], the vit_jax layout.
- `tubelet_embedding`: non-overlapping t x P x P tubes embedded by a 3D convolution (ViViT
  Sec. 3.2); kernel [t, P, P, C, D], the scenic layout.

Both are functions to call inside a compact Flax method: they create one nn.Conv named
`name` (default 'embedding') in the calling module, so its parameters are
`embedding/{kernel, bias}` there. The kernels use the Flax default initialiser (LeCun
normal), as ViT does for its patch embedding.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _check_video(video: jax.Array, patch_size: int, tubelet_size: int) -> None:
  if video.ndim != 5:
    raise ValueError(f"video: expected shape (B, T, H, W, C), got {video.shape}.")
  _, t, h, w, _ = video.shape
  if h % patch_size or w % patch_size:
    raise ValueError(
      f"video frames are {h}x{w}, not divisible by the patch size {patch_size} (model.variant)."
    )
  if t % tubelet_size:
    raise ValueError(
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
  name: str = "embedding",
) -> jax.Array:
  """Embeds t x P x P tubelets: (B, T, H, W, C) -> (B, T/t, H/P * W/P, D)."""
  _check_video(video, patch_size, tubelet_size)
  size = (tubelet_size, patch_size, patch_size)
  # (B, T, H, W, C) -> (B, T/t, h, w, D)
  x = nn.Conv(hidden_size, size, strides=size, padding="VALID", dtype=dtype, name=name)(video)
  b, t, h, w, d = x.shape
  # (B, T', h, w, D) -> (B, T', h*w, D)
  return x.reshape(b, t, h * w, d)
