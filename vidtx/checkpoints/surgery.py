"""Checkpoint surgery: pure functions on arrays and flat parameter dicts.

Layouts (vidtx follows vit_jax / Flax):
- Dense kernel [in, out]; a PyTorch Linear weight is [out, in].
- Attention query/key/value kernels [D, H, Dh] with biases [H, Dh]; out kernel [H, Dh, D].
- Patch kernel [P, P, C, D] (PyTorch Conv2d [D, C, P, P]); tubelet kernel [t, P, P, C, D]
  (PyTorch Conv3d [D, C, t, P, P]).
- Positional embedding [L, D] (the leading 1 of the sources is dropped); the patch part is a
  raster-order h x w grid, the class token's entry (if any) first.

The papers' initialisation rules (ViViT Sec. 3.4, TimeSformer Sec. 3):
- `resize_posemb_grid`: bilinear on the 2D grid of patches, never on the flattened sequence.
- `tile_posemb`: the spatial embedding repeated for every temporal index ("repeat").
- `posemb_for_video`: both, as model config `positional_embed_size_change` says.
- tubelet kernels from 2D ones: vidtx.models.tokenizer.kernel_from_2d (Eq. 8 and 9).
"""

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vidtx.errors import UserError

POSEMB_SIZE_CHANGES = ("tile", "resize", "resize_tile")


# ----------------------------------------------------------------------------------------
# PyTorch -> Flax layouts.
# ----------------------------------------------------------------------------------------


def linear_kernel(weight: np.ndarray) -> np.ndarray:
  """PyTorch Linear weight [out, in] -> Dense kernel [in, out]."""
  return np.ascontiguousarray(np.asarray(weight).T)


def conv2d_kernel(weight: np.ndarray) -> np.ndarray:
  """PyTorch Conv2d weight [D, C, P, P] -> Flax [P, P, C, D]."""
  return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)))


def conv3d_kernel(weight: np.ndarray) -> np.ndarray:
  """PyTorch Conv3d weight [D, C, t, P, P] -> Flax [t, P, P, C, D]."""
  return np.ascontiguousarray(np.transpose(weight, (2, 3, 4, 1, 0)))


def attention_projection(
  weight: np.ndarray, bias: np.ndarray | None, num_heads: int
) -> dict[str, np.ndarray]:
  """A query, key or value Linear [H*Dh, D] -> {'kernel': [D, H, Dh], 'bias': [H, Dh]}."""
  out_features, in_features = weight.shape
  if out_features % num_heads:
    raise UserError(
      f"attention projection {weight.shape}: {out_features} outputs are not "
      f"divisible by {num_heads} heads."
    )
  head_dim = out_features // num_heads
  # [H*Dh, D] -> [D, H*Dh] -> [D, H, Dh]
  kernel = linear_kernel(weight).reshape(in_features, num_heads, head_dim)
  if bias is None:  # qkv_bias=False: the same function with a zero bias.
    bias = np.zeros(out_features, weight.dtype)
  return {"kernel": kernel, "bias": np.asarray(bias).reshape(num_heads, head_dim)}


def split_qkv(
  weight: np.ndarray, bias: np.ndarray | None, num_heads: int
) -> dict[str, dict[str, np.ndarray]]:
  """A fused qkv Linear [3*D, D] (timm, TimeSformer) -> query/key/value projections."""
  if weight.shape[0] % 3:
    raise UserError(f"fused qkv weight {weight.shape}: the first axis is not 3 * D.")
  weights = np.split(weight, 3, axis=0)  # [3D, D] -> 3 x [D, D], in the order q, k, v.
  biases = np.split(bias, 3) if bias is not None else [None] * 3
  return {
    name: attention_projection(w, b, num_heads)
    for name, w, b in zip(("query", "key", "value"), weights, biases, strict=True)
  }


def attention_output(weight: np.ndarray, bias: np.ndarray, num_heads: int) -> dict[str, np.ndarray]:
  """The output Linear [D, H*Dh] -> {'kernel': [H, Dh, D], 'bias': [D]}."""
  out_features, in_features = weight.shape
  # [D, H*Dh] -> [H*Dh, D] -> [H, Dh, D]
  kernel = linear_kernel(weight).reshape(num_heads, in_features // num_heads, out_features)
  return {"kernel": kernel, "bias": np.asarray(bias)}


# ----------------------------------------------------------------------------------------
# Positional embeddings.
# ----------------------------------------------------------------------------------------


def grid_size(num_patches: int, where: str = "positional embedding") -> tuple[int, int]:
  """The square h x w grid of `num_patches` patches (ViT checkpoints are square)."""
  side = math.isqrt(num_patches)
  if side * side != num_patches:
    raise UserError(
      f"{where}: {num_patches} patch entries are not a square grid; pass the grid explicitly."
    )
  return side, side


def resize_posemb_grid(
  posemb: np.ndarray, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> np.ndarray:
  """[h*w, D] patch embeddings on an h x w raster grid -> [h'*w', D], bilinear in 2D.

  Interpolation on the grid, so a row stays a row: never on the flattened sequence.
  """
  posemb = np.asarray(posemb)
  (h, w), (new_h, new_w) = old_grid, new_grid
  if posemb.shape[0] != h * w:
    raise UserError(f"positional embedding of {posemb.shape[0]} entries is not a {h}x{w} grid.")
  if (h, w) == (new_h, new_w):
    return posemb
  d = posemb.shape[-1]
  # [h*w, D] -> [h, w, D] -> [h', w', D] -> [h'*w', D]
  grid = jnp.asarray(posemb, jnp.float32).reshape(h, w, d)
  resized = jax.image.resize(grid, (new_h, new_w, d), method="bilinear", antialias=False)
  return np.asarray(resized, posemb.dtype).reshape(new_h * new_w, d)


def tile_posemb(posemb: np.ndarray, num_frames: int) -> np.ndarray:
  """[N, D] spatial embedding -> [T*N, D], the same N entries for every temporal index."""
  # [N, D] -> [T, N, D] -> [T*N, D], temporal index major like the tokens.
  return np.tile(np.asarray(posemb)[None], (num_frames, 1, 1)).reshape(-1, posemb.shape[-1])


def split_class_entry(
  posemb: np.ndarray, has_class_token: bool
) -> tuple[np.ndarray | None, np.ndarray]:
  """[(1+)N, D] -> (class token entry [1, D] or None, patch entries [N, D])."""
  posemb = np.asarray(posemb)
  return (posemb[:1], posemb[1:]) if has_class_token else (None, posemb)


def posemb_for_video(
  patch_posemb: np.ndarray,
  *,
  old_grid: tuple[int, int],
  new_grid: tuple[int, int],
  num_frames: int,
  method: str,
) -> np.ndarray:
  """An image model's [h*w, D] patch embedding for a target with `num_frames` temporal indices.

  method (init_from.positional_embed_size_change):
  - 'tile': repeat over the temporal indices; the grid must be the same.
  - 'resize': bilinear resize to the new grid; only for targets with one spatial table
    (num_frames == 1: TimeSformer, X-ViT, ViViT Model 2's spatial encoder).
  - 'resize_tile': resize to the new grid (if it differs), then tile.
  Returns [num_frames * h'*w', D].
  """
  if method not in POSEMB_SIZE_CHANGES:
    raise UserError(
      f"init_from.positional_embed_size_change={method!r}: expected one of "
      f"{list(POSEMB_SIZE_CHANGES)}."
    )
  if tuple(old_grid) != tuple(new_grid):
    if method == "tile":
      raise UserError(
        f"init_from.positional_embed_size_change='tile' but the checkpoint's patch grid "
        f"{old_grid[0]}x{old_grid[1]} differs from the model's {new_grid[0]}x{new_grid[1]}; "
        "use 'resize_tile' (or 'resize' for models with a spatial-only embedding)."
      )
    patch_posemb = resize_posemb_grid(patch_posemb, old_grid, new_grid)
  if num_frames > 1:
    if method == "resize":
      raise UserError(
        f"init_from.positional_embed_size_change='resize' cannot fill the {num_frames} "
        "temporal indices of this model's space-time positional embedding; use 'tile' or "
        "'resize_tile'."
      )
    patch_posemb = tile_posemb(patch_posemb, num_frames)
  return patch_posemb


def resize_1d(embedding: np.ndarray, length: int) -> np.ndarray:
  """[L, D] -> [length, D] by nearest-neighbour, as the official TimeSformer resizes its time
  embedding when the frame count changes."""
  embedding = np.asarray(embedding)
  if embedding.shape[0] == length:
    return embedding
  # PyTorch 'nearest': source index floor(i * L / length).
  index = np.floor(np.arange(length) * embedding.shape[0] / length).astype(int)
  return embedding[index]


# ----------------------------------------------------------------------------------------
# Flat parameter dicts.
# ----------------------------------------------------------------------------------------


def rename(
  tensors: Mapping[str, np.ndarray], rules: list[tuple[str, str]]
) -> dict[str, np.ndarray]:
  """Renames keys by the first matching (regex, replacement) rule; others keep their name."""
  import re

  out = {}
  for key, value in tensors.items():
    for pattern, replacement in rules:
      new_key, count = re.subn(f"^{pattern}$", replacement, key)
      if count:
        key = new_key
        break
    out[key] = value
  return out
