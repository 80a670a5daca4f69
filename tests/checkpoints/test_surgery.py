"""vidtx.checkpoints.surgery: the PyTorch -> Flax layouts against torch itself, the
positional-embedding surgery against hand-computed references. The other pieces of
vidtx.checkpoints are tested beside this file (test_readers.py, test_names.py, test_store.py,
test_init_from.py), the command in tests/test_convert.py."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from shared import TINY_PREPROCESSING

from vidtx.checkpoints import surgery
from vidtx.models import layers

TINY = dict(variant="Ti/16", hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64)
PREPROCESSING = dict(TINY_PREPROCESSING)


def _torch_rng(seed: int) -> torch.Generator:
  return torch.Generator().manual_seed(seed)


def _flat(tree) -> dict[str, np.ndarray]:
  return {
    k: np.asarray(v)
    for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/").items()
  }


# ----------------------------------------------------------------------------------------
# 1. Layouts, against torch.
# ----------------------------------------------------------------------------------------


def test_linear_kernel_matches_torch_linear():
  torch.manual_seed(0)
  linear = torch.nn.Linear(5, 7)
  x = torch.randn(4, 5)
  kernel = surgery.linear_kernel(linear.weight.detach().numpy())
  assert kernel.shape == (5, 7)
  got = x.numpy() @ kernel + linear.bias.detach().numpy()
  np.testing.assert_allclose(got, linear(x).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel_size", [(4, 4), (2, 4)])
def test_conv2d_kernel_matches_torch_conv2d(kernel_size):
  torch.manual_seed(1)
  conv = torch.nn.Conv2d(3, 8, kernel_size, stride=kernel_size)
  image = torch.randn(2, 3, 16, 16)
  want = conv(image).detach().numpy().transpose(0, 2, 3, 1)  # NCHW -> NHWC
  kernel = surgery.conv2d_kernel(conv.weight.detach().numpy())
  bias = conv.bias.detach().numpy()
  assert kernel.shape == (*kernel_size, 3, 8)
  x = jnp.asarray(image.numpy().transpose(0, 2, 3, 1))  # NHWC
  by_lax = jax.lax.conv_general_dilated(
    x, jnp.asarray(kernel), kernel_size, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  by_lax = by_lax + bias[None, None, None]  # (D,) -> (1, 1, 1, D)
  np.testing.assert_allclose(np.asarray(by_lax), want, rtol=1e-4, atol=1e-5)
  flax_conv = nn.Conv(8, kernel_size, strides=kernel_size, padding="VALID")
  by_flax = flax_conv.apply({"params": {"kernel": kernel, "bias": bias}}, x)
  np.testing.assert_allclose(np.asarray(by_flax), want, rtol=1e-4, atol=1e-5)


def test_conv3d_kernel_matches_torch_conv3d():
  torch.manual_seed(2)
  size = (2, 4, 3)  # Every axis different, so a swapped axis shows.
  conv = torch.nn.Conv3d(3, 8, size, stride=size)
  video = torch.randn(2, 3, 4, 8, 9)  # (B, C, T, H, W)
  want = conv(video).detach().numpy().transpose(0, 2, 3, 4, 1)  # -> (B, T, H, W, D)
  kernel = surgery.conv3d_kernel(conv.weight.detach().numpy())
  assert kernel.shape == (*size, 3, 8)
  x = jnp.asarray(video.numpy().transpose(0, 2, 3, 4, 1))  # (B, T, H, W, C)
  flax_conv = nn.Conv(8, size, strides=size, padding="VALID")
  got = flax_conv.apply({"params": {"kernel": kernel, "bias": conv.bias.detach().numpy()}}, x)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_split_qkv_and_attention_output_match_torch_attention():
  torch.manual_seed(3)
  batch, length, width, heads = 2, 5, 12, 3
  head_dim = width // heads
  qkv = torch.nn.Linear(width, 3 * width)
  proj = torch.nn.Linear(width, width)
  x = torch.randn(batch, length, width)
  with torch.no_grad():  # timm's Attention, written out.
    q, k, v = qkv(x).reshape(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-2, -1) / head_dim**0.5, dim=-1)  # (B, H, L, L)
    want = proj((weights @ v).transpose(1, 2).reshape(batch, length, width)).numpy()

  params = surgery.split_qkv(qkv.weight.detach().numpy(), qkv.bias.detach().numpy(), heads)
  params["out"] = surgery.attention_output(
    proj.weight.detach().numpy(), proj.bias.detach().numpy(), heads
  )
  assert params["query"]["kernel"].shape == (width, heads, head_dim)
  assert params["query"]["bias"].shape == (heads, head_dim)
  assert params["out"]["kernel"].shape == (heads, head_dim, width)
  mha = layers.MultiHeadAttention(num_heads=heads)
  got = mha.apply({"params": params}, jnp.asarray(x.numpy()), deterministic=True)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_attention_projection_without_bias_has_zero_bias():
  weight = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
  got = surgery.attention_projection(weight, None, num_heads=2)
  np.testing.assert_array_equal(got["bias"], np.zeros((2, 3), np.float32))
  assert got["bias"].dtype == np.float32
  # kernel[d, h, c] = weight[h * 3 + c, d]
  np.testing.assert_array_equal(got["kernel"], weight.T.reshape(4, 2, 3))
  np.testing.assert_array_equal(got["kernel"][1, 1, 2], weight[5, 1])
  with pytest.raises(ValueError, match="divisible"):
    surgery.attention_projection(weight, None, num_heads=4)


def test_split_qkv_without_bias_gives_three_zero_biases():
  weight = np.arange(6 * 2, dtype=np.float32).reshape(6, 2)
  got = surgery.split_qkv(weight, None, num_heads=1)
  for i, name in enumerate(("query", "key", "value")):
    np.testing.assert_array_equal(got[name]["bias"], np.zeros((1, 2)))
    np.testing.assert_array_equal(got[name]["kernel"][:, 0], weight[2 * i : 2 * i + 2].T)


# ----------------------------------------------------------------------------------------
# 2. Positional embeddings.
# ----------------------------------------------------------------------------------------


def _bilinear_reference(grid: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
  """[h, w, D] -> [new_h, new_w, D]: half-pixel centres, source coordinates clamped to the
  edge, linear in each axis (float64 numpy, independent of jax)."""

  def weights(old: int, new: int) -> np.ndarray:
    m = np.zeros((new, old))
    for i in range(new):
      src = min(max((i + 0.5) * old / new - 0.5, 0.0), old - 1.0)
      lo = int(np.floor(src))
      hi = min(lo + 1, old - 1)
      m[i, lo] += 1 - (src - lo)
      m[i, hi] += src - lo
    return m

  return np.einsum(
    "ai,bj,ijd->abd",
    weights(grid.shape[0], new_h),
    weights(grid.shape[1], new_w),
    grid.astype(np.float64),
  )


def test_resize_posemb_grid_identity_for_the_same_grid():
  posemb = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
  np.testing.assert_array_equal(surgery.resize_posemb_grid(posemb, (2, 3), (2, 3)), posemb)


def test_resize_posemb_grid_2x2_to_4x4_is_bilinear():
  posemb = np.array([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0], [3.0, 40.0]], np.float32)
  got = surgery.resize_posemb_grid(posemb, (2, 2), (4, 4))
  assert got.shape == (16, 2) and got.dtype == np.float32
  want = _bilinear_reference(posemb.reshape(2, 2, 2), 4, 4).reshape(16, 2)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # Written out for channel 0 (grid [[0, 1], [2, 3]]): axis weights (1, .75/.25, .25/.75, 1).
  axis = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
  np.testing.assert_allclose(got[:, 0].reshape(4, 4), axis @ [[0, 1], [2, 3]] @ axis.T, atol=1e-6)


def test_resize_posemb_grid_3x3_to_5x4_matches_reference():
  posemb = np.random.default_rng(1).standard_normal((9, 3)).astype(np.float32)
  got = surgery.resize_posemb_grid(posemb, (3, 3), (5, 4))
  want = _bilinear_reference(posemb.reshape(3, 3, 3), 5, 4).reshape(20, 3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_resize_posemb_grid_resizes_the_2d_grid_not_the_sequence():
  h, w, d = 3, 3, 2
  rows = np.array([[1.0, -1.0], [5.0, 2.0], [-3.0, 7.0]], np.float32)  # [h, D]
  posemb = np.repeat(rows[:, None], w, axis=1).reshape(h * w, d)  # constant along each row
  got = surgery.resize_posemb_grid(posemb, (h, w), (5, 4)).reshape(5, 4, d)
  np.testing.assert_allclose(got, np.broadcast_to(got[:, :1], got.shape), atol=1e-6)
  assert np.ptp(got[:, 0, 0]) > 1  # ... and varies from row to row.
  # The same holds for columns.
  cols = np.transpose(posemb.reshape(h, w, d), (1, 0, 2)).reshape(h * w, d)
  got = surgery.resize_posemb_grid(cols, (h, w), (4, 5)).reshape(4, 5, d)
  np.testing.assert_allclose(got, np.broadcast_to(got[:1], got.shape), atol=1e-6)


def test_resize_posemb_grid_rejects_a_wrong_length():
  with pytest.raises(ValueError, match="not a 3x3 grid"):
    surgery.resize_posemb_grid(np.zeros((8, 2)), (3, 3), (4, 4))


def test_tile_posemb_repeats_every_block():
  posemb = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
  got = surgery.tile_posemb(posemb, 3)
  assert got.shape == (18, 4)
  for t in range(3):
    np.testing.assert_array_equal(got[6 * t : 6 * (t + 1)], posemb)


def test_posemb_for_video_methods():
  posemb = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)
  # 'tile' keeps the grid.
  np.testing.assert_array_equal(
    surgery.posemb_for_video(posemb, old_grid=(2, 2), new_grid=(2, 2), num_frames=3, method="tile"),
    np.tile(posemb, (3, 1)),
  )
  with pytest.raises(ValueError, match="resize_tile"):
    surgery.posemb_for_video(posemb, old_grid=(2, 2), new_grid=(3, 3), num_frames=2, method="tile")
  with pytest.raises(ValueError, match="temporal indices"):
    surgery.posemb_for_video(
      posemb, old_grid=(2, 2), new_grid=(3, 3), num_frames=2, method="resize"
    )
  with pytest.raises(ValueError, match="expected one of"):
    surgery.posemb_for_video(
      posemb, old_grid=(2, 2), new_grid=(2, 2), num_frames=1, method="bicubic"
    )
  resized = _bilinear_reference(posemb.reshape(2, 2, 3), 3, 3).reshape(9, 3)
  got = surgery.posemb_for_video(
    posemb, old_grid=(2, 2), new_grid=(3, 3), num_frames=1, method="resize"
  )
  np.testing.assert_allclose(got, resized, atol=1e-6)
  got = surgery.posemb_for_video(
    posemb, old_grid=(2, 2), new_grid=(3, 3), num_frames=2, method="resize_tile"
  )
  assert got.shape == (18, 3)
  np.testing.assert_allclose(got, np.concatenate([resized, resized]), atol=1e-6)
  np.testing.assert_array_equal(
    got, surgery.tile_posemb(surgery.resize_posemb_grid(posemb, (2, 2), (3, 3)), 2)
  )


@pytest.mark.parametrize(
  "old, new",
  [(8, 4), (4, 8), (8, 3), (3, 8), (5, 7), (7, 5), (16, 6), (6, 16), (1, 4), (4, 1), (3, 3)],
)
def test_resize_1d_matches_torch_nearest(old, new):
  embedding = np.random.default_rng(old * 100 + new).standard_normal((old, 3)).astype(np.float32)
  # interpolate works on (N, C, L): [L, D] -> (1, D, L).
  want = (
    torch.nn.functional.interpolate(
      torch.from_numpy(embedding.T[None].copy()), size=new, mode="nearest"
    )[0]
    .numpy()
    .T
  )
  np.testing.assert_array_equal(surgery.resize_1d(embedding, new), want)


def test_grid_size():
  assert surgery.grid_size(196) == (14, 14)
  assert surgery.grid_size(1) == (1, 1)
  for bad in (8, 197, 2):
    with pytest.raises(ValueError, match="not a square"):
      surgery.grid_size(bad)
