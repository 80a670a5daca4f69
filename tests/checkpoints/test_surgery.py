"""vidtx.checkpoints piece by piece: the PyTorch -> Flax layouts against torch itself, the
positional-embedding surgery against hand-computed references, the readers' format detection
and name clean-up, `names.Keys`' full-list errors, the converted-checkpoint store, the
`python -m vidtx.convert` command, and `init_from` from an image ViT into ViViT Model 1."""

import dataclasses
import os
import subprocess
import sys

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
import torch
from shared import REPO, TINY_PREPROCESSING

from vidtx import models
from vidtx.checkpoints import init_from, names, readers, store, surgery
from vidtx.models import layers, tokenizer

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


# ----------------------------------------------------------------------------------------
# 3. Readers.
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_vit_dir(tmp_path_factory) -> str:
  """A tiny Hugging Face ViTForImageClassification folder (3 classes, 32 x 32 images)."""
  import transformers

  torch.manual_seed(0)
  config = transformers.ViTConfig(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=32,
    patch_size=16,
    num_labels=3,
  )
  model = transformers.ViTForImageClassification(config)
  path = str(tmp_path_factory.mktemp("hf") / "vit")
  model.save_pretrained(path)
  return path


def _timm_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
  """The state dict of a tiny timm ViT: width 32, 2 heads, 1 block, 16 x 16 patches of 32 x 32
  images, 3 classes."""
  g = _torch_rng(seed)
  shapes = {
    "cls_token": (1, 1, 32),
    "pos_embed": (1, 5, 32),
    "patch_embed.proj.weight": (32, 3, 16, 16),
    "patch_embed.proj.bias": (32,),
    "blocks.0.norm1.weight": (32,),
    "blocks.0.norm1.bias": (32,),
    "blocks.0.attn.qkv.weight": (96, 32),
    "blocks.0.attn.qkv.bias": (96,),
    "blocks.0.attn.proj.weight": (32, 32),
    "blocks.0.attn.proj.bias": (32,),
    "blocks.0.norm2.weight": (32,),
    "blocks.0.norm2.bias": (32,),
    "blocks.0.mlp.fc1.weight": (64, 32),
    "blocks.0.mlp.fc1.bias": (64,),
    "blocks.0.mlp.fc2.weight": (32, 64),
    "blocks.0.mlp.fc2.bias": (32,),
    "norm.weight": (32,),
    "norm.bias": (32,),
    "head.weight": (3, 32),
    "head.bias": (3,),
  }
  return {name: 0.1 * torch.randn(shape, generator=g) for name, shape in shapes.items()}


def test_detect_format_hf_folder(hf_vit_dir):
  assert readers.detect_format(hf_vit_dir) == "hf"
  source = readers.read(hf_vit_dir)
  assert source.format == "hf" and source.config["model_type"] == "vit"
  assert any(k.endswith("patch_embeddings.projection.weight") for k in source.tensors)
  assert all(isinstance(v, np.ndarray) for v in source.tensors.values())


def test_detect_format_and_read_npz(tmp_path):
  kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
  vit_npz = str(tmp_path / "vit.npz")
  np.savez(
    vit_npz,
    **{"Transformer/encoder_norm/scale": np.ones(3, np.float32), "embedding/kernel": kernel},
  )
  assert readers.detect_format(vit_npz) == "vit_npz"
  source = readers.read(vit_npz)
  assert source.format == "vit_npz"
  assert sorted(source.tensors) == ["Transformer/encoder_norm/scale", "embedding/kernel"]

  big_vision = str(tmp_path / "bv.npz")
  np.savez(
    big_vision,
    **{
      "params/embedding/kernel": kernel,
      "params/Transformer/encoder_norm/scale": np.ones(3, np.float32),
    },
  )
  assert readers.detect_format(big_vision) == "big_vision"
  source = readers.read(big_vision)
  assert source.format == "big_vision"
  assert sorted(source.tensors) == ["Transformer/encoder_norm/scale", "embedding/kernel"]
  np.testing.assert_array_equal(source.tensors["embedding/kernel"], kernel)

  two_tower = str(tmp_path / "siglip.npz")
  np.savez(
    two_tower,
    **{
      "params/img/embedding/kernel": kernel,
      "params/img/Transformer/encoder_norm/scale": np.ones(3, np.float32),
    },
  )
  source = readers.read(two_tower)
  assert source.format == "big_vision"
  assert sorted(source.tensors) == ["Transformer/encoder_norm/scale", "embedding/kernel"]
  np.testing.assert_array_equal(source.tensors["embedding/kernel"], kernel)


def test_read_official_timesformer_pyth(tmp_path):
  weight = torch.arange(6, dtype=torch.float32).reshape(2, 3)
  path = str(tmp_path / "TimeSformer_divST_8x32_224_K400.pyth")
  torch.save(
    {
      "model_state": {
        "model.patch_embed.proj.weight": weight,
        "model.cls_token": torch.zeros(1, 1, 3),
      },
      "cfg": "DATA:\n  NUM_FRAMES: 8\n",
    },
    path,
  )
  assert readers.detect_format(path) == "timesformer"
  source = readers.read(path)
  assert source.format == "timesformer"
  assert sorted(source.tensors) == ["cls_token", "patch_embed.proj.weight"]
  np.testing.assert_array_equal(source.tensors["patch_embed.proj.weight"], weight.numpy())
  assert source.config == {"DATA": {"NUM_FRAMES": 8}}


def test_detect_format_official_timesformer_by_contents(tmp_path):
  pth = str(tmp_path / "official.pth")
  torch.save(
    {
      "model_state": {"model.patch_embed.proj.weight": torch.zeros(2, 3)},
      "cfg": "DATA:\n  NUM_FRAMES: 8\n",
    },
    pth,
  )
  assert readers.detect_format(pth) == "timesformer"


def test_read_timm_pth_strips_module_and_upcasts_bf16(tmp_path):
  path = str(tmp_path / "vit.pth")
  weight = torch.tensor([[1.5, -2.25], [3.0, 0.125]], dtype=torch.bfloat16)
  torch.save(
    {
      "module.patch_embed.proj.weight": weight,
      "module.cls_token": torch.ones(1, 1, 2, dtype=torch.float16),
    },
    path,
  )
  assert readers.detect_format(path) == "timm"
  source = readers.read(path)
  assert source.format == "timm"
  assert sorted(source.tensors) == ["cls_token", "patch_embed.proj.weight"]
  got = source.tensors["patch_embed.proj.weight"]
  assert got.dtype == np.float32 and source.tensors["cls_token"].dtype == np.float32
  np.testing.assert_array_equal(got, [[1.5, -2.25], [3.0, 0.125]])


def test_read_safetensors(tmp_path):
  from safetensors.torch import save_file

  path = str(tmp_path / "model.safetensors")
  save_file(
    {
      "module.head.weight": torch.tensor([[0.5, 1.0]]),
      "module.norm.weight": torch.tensor([2.5, -1.0]),
    },
    path,
  )
  assert readers.detect_format(path) == "timm"
  source = readers.read(path)
  assert source.format == "timm"
  assert sorted(source.tensors) == ["head.weight", "norm.weight"]
  np.testing.assert_array_equal(source.tensors["head.weight"], [[0.5, 1.0]])
  assert source.tensors["head.weight"].dtype == np.float32


def test_read_safetensors_bf16_comes_back_float32(tmp_path):
  from safetensors.torch import save_file

  path = str(tmp_path / "model.safetensors")
  save_file({"norm.weight": torch.tensor([2.5, -1.0], dtype=torch.bfloat16)}, path)
  got = readers.read(path).tensors["norm.weight"]
  np.testing.assert_array_equal(got.astype(np.float32), [2.5, -1.0])
  assert got.dtype == np.float32


def test_read_scenic_file_and_directory(tmp_path):
  def write(path, value):
    state = {
      "optimizer": {
        "target": {
          "Transformer": {"encoder_norm": {"scale": np.full(3, value, np.float32)}},
          "cls": np.zeros((1, 1, 3), np.float32),
        }
      },
      "step": 7,
    }
    with open(path, "wb") as f:
      f.write(flax.serialization.msgpack_serialize(state))

  directory = tmp_path / "run"
  directory.mkdir()
  write(str(directory / "checkpoint_100"), 1.0)
  write(str(directory / "checkpoint_200"), 2.0)
  write(str(directory / "checkpoint_30"), 0.3)  # 30 < 200 though "30" > "200" as strings.
  single = str(directory / "checkpoint_100")
  assert readers.detect_format(single) == "scenic"
  source = readers.read(single)
  assert source.format == "scenic"
  assert sorted(source.tensors) == ["Transformer/encoder_norm/scale", "cls"]
  np.testing.assert_array_equal(source.tensors["Transformer/encoder_norm/scale"], [1.0] * 3)

  assert readers.detect_format(str(directory)) == "scenic"
  newest = readers.read(str(directory))
  np.testing.assert_array_equal(newest.tensors["Transformer/encoder_norm/scale"], [2.0] * 3)
  assert newest.path.endswith("checkpoint_200")

  # A msgpack file under another name is recognised from its first byte.
  renamed = str(tmp_path / "weights.msgpack")
  os.rename(single, renamed)
  assert readers.detect_format(renamed) == "scenic"


def test_read_scenic_directory_with_brackets_in_its_name(tmp_path):
  directory = tmp_path / "exp[1]"
  directory.mkdir()
  with open(directory / "checkpoint_100", "wb") as f:
    f.write(flax.serialization.msgpack_serialize({"params": {"a": np.ones(2, np.float32)}}))
  assert readers.detect_format(str(directory)) == "scenic"


def test_detect_format_unknown_and_missing(tmp_path):
  unknown = tmp_path / "notes.txt"
  unknown.write_text("hello")
  with pytest.raises(ValueError) as error:
    readers.detect_format(str(unknown))
  for name in readers.FORMATS:
    assert repr(name) in str(error.value)
  with pytest.raises(ValueError, match="neither a Hugging Face folder"):
    readers.detect_format(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    readers.read(str(tmp_path / "nowhere.pth"))
  with pytest.raises(ValueError, match="expected 'auto' or one of"):
    readers.read(str(unknown), format="onnx")


# ----------------------------------------------------------------------------------------
# 4. names.Keys.
# ----------------------------------------------------------------------------------------


def test_keys_finish_lists_every_missing_and_unknown_name():
  tensors = {
    "a.weight": np.zeros((2, 3)),
    "b.weight": np.zeros(4),
    "c.bias": np.zeros(5),
    "extra.weight": np.zeros(1),
  }
  keys = names.Keys(tensors, "ckpt.pth")
  assert keys.get("a.weight") is tensors["a.weight"]
  assert keys.get("x.weight") is None and keys.get("y.bias") is None
  assert keys.get("z.bias", optional=True) is None  # optional: not missing
  with pytest.raises(ValueError) as error:
    keys.finish()
  message = str(error.value)
  assert "ckpt.pth" in message and "2 missing, 3 unknown" in message
  for line in (
    "missing: x.weight",
    "missing: y.bias",
    "unknown: b.weight (4,)",
    "unknown: c.bias (5,)",
    "unknown: extra.weight (1,)",
  ):
    assert line in message
  assert "z.bias" not in message
  assert "missing: a.weight" not in message and "unknown: a.weight" not in message


def test_keys_ignore_suppresses_unknowns_by_full_match():
  tensors = {
    "a.weight": np.zeros(1),
    "pre_logits.weight": np.zeros(1),
    "pre_logits.bias": np.zeros(1),
    "extra.weight": np.zeros(1),
  }
  keys = names.Keys(tensors, "ckpt")
  keys.get("a.weight")
  keys.ignore([r"pre_logits\..*", "extra"])  # 'extra' does not match all of 'extra.weight'
  with pytest.raises(ValueError) as error:
    keys.finish()
  assert "unknown: extra.weight" in str(error.value)
  assert "pre_logits" not in str(error.value)
  keys.ignore([r"extra\..*"])
  keys.finish()  # Nothing left over.


def test_keys_count_and_shape():
  keys = names.Keys(
    {"blocks.0.w": np.zeros(1), "blocks.1.w": np.zeros((2, 3)), "blocks.1.b": np.zeros(1)}, "ckpt"
  )
  assert keys.count(r"blocks\.(\d+)\.") == 2
  assert keys.shape("blocks.1.w") == (2, 3)
  with pytest.raises(ValueError, match="'blocks.2.w' is missing"):
    keys.shape("blocks.2.w")
  gappy = names.Keys({"blocks.0.w": np.zeros(1), "blocks.2.w": np.zeros(1)}, "ckpt")
  with pytest.raises(ValueError, match="not 0..N-1"):
    gappy.count(r"blocks\.(\d+)\.")


# ----------------------------------------------------------------------------------------
# 5. The converted-checkpoint store.
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_converted() -> store.Converted:
  model = models.build("timesformer", TINY, 3)
  params = model.init(jax.random.key(0), np.zeros((1, 2, 32, 32, 3), np.float32), train=False)[
    "params"
  ]
  params = jax.tree.map(np.asarray, flax.core.unfreeze(params))
  return store.Converted(
    model_name="timesformer",
    model_config=dict(TINY),
    num_classes=3,
    params=params,
    preprocessing=dict(PREPROCESSING),
    labels=["run", "jump", "sit"],
    source=dict(path="x", format="timm"),
  )


def _with(converted: store.Converted, **changes) -> store.Converted:
  return dataclasses.replace(converted, **changes)


def test_store_round_trip(tmp_path, tiny_converted):
  out = store.save(str(tmp_path / "tiny"), tiny_converted)
  assert out == str(tmp_path / "tiny")
  assert store.is_converted_dir(out)
  loaded = store.load(out)
  assert loaded.model_name == "timesformer"
  assert loaded.model_config == TINY
  assert loaded.num_classes == 3
  assert loaded.labels == ["run", "jump", "sit"]
  assert loaded.preprocessing == PREPROCESSING
  assert loaded.source["path"] == "x" and "written" in loaded.source
  want, got = _flat(tiny_converted.params), _flat(loaded.params)
  assert sorted(got) == sorted(want)
  for name in want:
    assert got[name].dtype == want[name].dtype, name
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  assert sorted(os.listdir(tmp_path)) == ["tiny"]


def test_store_refuses_an_existing_dir_unless_overwrite(tmp_path, tiny_converted):
  out = str(tmp_path / "tiny")
  store.save(out, tiny_converted)
  with open(os.path.join(out, store.MODEL_FILE)) as f:
    before = f.read()
  changed = _with(tiny_converted, labels=["a", "b", "c"])
  with pytest.raises(FileExistsError, match="--overwrite"):
    store.save(out, changed)
  with open(os.path.join(out, store.MODEL_FILE)) as f:
    assert f.read() == before
  assert store.load(out).labels == ["run", "jump", "sit"]
  store.save(out, changed, overwrite=True)
  assert store.load(out).labels == ["a", "b", "c"]
  assert sorted(os.listdir(tmp_path)) == ["tiny"]  # No temporary or '.old' directory left.


def test_store_lists_every_parameter_problem(tmp_path, tiny_converted):
  params = _flat(tiny_converted.params)
  del params["head/bias"]
  params["bogus/kernel"] = np.zeros((2, 2), np.float32)
  params["embedding/bias"] = np.zeros(31, np.float32)
  bad = _with(tiny_converted, params=flax.traverse_util.unflatten_dict(params, sep="/"))
  with pytest.raises(ValueError) as error:
    store.save(str(tmp_path / "bad"), bad)
  message = str(error.value)
  assert "3 problem(s)" in message
  assert "missing: head/bias (3,)" in message
  assert "unexpected: bogus/kernel (2, 2)" in message
  assert "shape of embedding/bias: (31,), the model expects (32,)" in message
  assert os.listdir(tmp_path) == []  # Neither the output nor a temporary directory.


def test_store_failure_midway_leaves_no_temporary_dir(tmp_path, tiny_converted, monkeypatch):
  out = str(tmp_path / "tiny")
  store.save(out, tiny_converted)

  def fail(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(store.json, "dump", fail)  # After the parameters are written.
  with pytest.raises(OSError, match="disk full"):
    store.save(str(tmp_path / "other"), tiny_converted)
  with pytest.raises(OSError, match="disk full"):
    store.save(out, _with(tiny_converted, labels=["a", "b", "c"]), overwrite=True)
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path)) == ["tiny"]
  assert store.load(out).labels == ["run", "jump", "sit"]  # The old one is intact.


def test_store_rejects_labels_that_do_not_match_the_classes(tmp_path, tiny_converted):
  with pytest.raises(ValueError, match="2 labels for 3 classes"):
    store.save(str(tmp_path / "tiny"), _with(tiny_converted, labels=["a", "b"]))
  with pytest.raises(ValueError, match="preprocessing.std"):
    store.save(
      str(tmp_path / "tiny"),
      _with(tiny_converted, preprocessing=dict(PREPROCESSING, std=[0.5, 0.0, 0.5])),
    )
  assert os.listdir(tmp_path) == []


def test_store_reports_missing_preprocessing_fields(tmp_path, tiny_converted):
  preprocessing = {k: v for k, v in PREPROCESSING.items() if k != "num_frames"}
  with pytest.raises(ValueError, match=r"preprocessing lacks \['num_frames'\]"):
    store.save(str(tmp_path / "tiny"), _with(tiny_converted, preprocessing=preprocessing))


def test_store_load_of_a_plain_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="vidtx.convert"):
    store.load(str(tmp_path))


# ----------------------------------------------------------------------------------------
# 6. python -m vidtx.convert.
# ----------------------------------------------------------------------------------------


def _start(*args: str) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen(
    [sys.executable, "-m", "vidtx.convert", *args],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
  stdout, stderr = process.communicate(timeout=120)
  return process.returncode, stdout, stderr


@pytest.mark.slow
def test_convert_cli(tmp_path, hf_vit_dir):
  out = str(tmp_path / "hf_out")
  state = _timm_state_dict()
  state["extra.weight"] = torch.zeros(4, 2)
  timm_path = str(tmp_path / "vit.pth")
  torch.save(state, timm_path)
  timm_out = str(tmp_path / "timm_out")

  # Two at a time: each run spends most of its time importing.
  first = _start("--src", hf_vit_dir, "--out", out)
  unknown = _start("--src", timm_path, "--out", timm_out, "--num_heads", "2")
  code, stdout, stderr = _finish(first)
  assert code == 0, stderr
  assert f"wrote {out}" in stdout
  assert store.load(out).model_config["attention"] == "space"
  code, stdout, stderr = _finish(unknown)
  assert code == 1
  assert "unknown: extra.weight (4, 2)" in stderr
  assert "--ignore" in stderr and "Traceback" not in stderr
  assert not os.path.exists(timm_out)

  again = _start("--src", hf_vit_dir, "--out", out)
  ignored = _start(
    "--src", timm_path, "--out", timm_out, "--num_heads", "2", "--ignore", r"extra\..*"
  )
  code, stdout, stderr = _finish(again)
  assert code == 1
  assert "exists" in stderr and "--overwrite" in stderr and "Traceback" not in stderr
  code, stdout, stderr = _finish(ignored)
  assert code == 0, stderr
  assert f"wrote {timm_out}" in stdout
  converted = store.load(timm_out)
  np.testing.assert_allclose(
    converted.params["head"]["kernel"], state["head.weight"].numpy().T, rtol=0, atol=0
  )
  assert sorted(os.listdir(tmp_path)) == ["hf_out", "timm_out", "vit.pth"]


# ----------------------------------------------------------------------------------------
# 7. init_from: an image ViT into ViViT Model 1.
# ----------------------------------------------------------------------------------------

VIT_CONFIG = dict(TINY, num_layers=2, attention="space")
VIVIT_CONFIG = dict(
  variant="Ti/16x2",
  hidden_size=32,
  num_layers=2,
  num_heads=2,
  mlp_dim=64,
  attention="spatio_temporal",
  classifier="token",
)


@pytest.fixture(scope="module")
def image_vit() -> store.Converted:
  """A converted space-only TimeSformer (an image ViT: 16 x 16 patches of 32 x 32 images, a 2 x 2
  grid, class token, 3 classes), every parameter random."""
  model = models.build("timesformer", VIT_CONFIG, 3)
  params = reference.random_like(reference.init_shapes(model, (1, 1, 32, 32, 3)), seed=5)
  params = jax.tree.map(np.asarray, flax.core.unfreeze(params))
  return store.Converted(
    model_name="timesformer",
    model_config=dict(VIT_CONFIG),
    num_classes=3,
    params=params,
    preprocessing=dict(PREPROCESSING, num_frames=1),
  )


def _init_vivit(image_vit, variant="Ti/16x2", **init_config):
  model = models.build("vivit", dict(VIVIT_CONFIG, variant=variant), 5)
  fresh = model.init(jax.random.key(1), np.zeros((1, 4, 32, 32, 3), np.float32), train=False)
  fresh = jax.tree.map(np.asarray, flax.core.unfreeze(fresh["params"]))
  init_config = dict(
    dict(
      checkpoint_path="vit_dir",
      positional_embed_size_change="resize_tile",
      kernel_init_method="central_frame",
    ),
    **init_config,
  )
  params, report = init_from.initialise(
    fresh,
    model_name="vivit",
    model_config=model.config,
    init_config=init_config,
    num_frames=4,
    crop_size=32,
    source=image_vit,
  )
  return _flat(fresh), _flat(params), report


def test_init_from_image_vit_into_vivit_model_1(image_vit):
  vit = _flat(image_vit.params)
  fresh, got, report = _init_vivit(image_vit, skip_patterns=["encoder/encoderblock_0/.*"])
  assert sorted(got) == sorted(fresh)
  for name in got:
    assert got[name].shape == fresh[name].shape and got[name].dtype == fresh[name].dtype, name

  # Tubelet kernel by Eq. 9: the 2D kernel at frame 1 of 2, zeros at frame 0.
  want_kernel = np.asarray(tokenizer.kernel_from_2d(vit["embedding/kernel"], 2, "central_frame"))
  np.testing.assert_array_equal(got["embedding/kernel"], want_kernel)
  np.testing.assert_array_equal(got["embedding/kernel"][0], 0)
  np.testing.assert_array_equal(got["embedding/kernel"][1], vit["embedding/kernel"])
  np.testing.assert_array_equal(got["embedding/bias"], vit["embedding/bias"])
  np.testing.assert_array_equal(got["cls"], vit["cls"])

  # [class entry, the 4 patch entries for temporal index 0, the same for index 1].
  vit_posemb = vit["pos_embedding/embedding"]
  assert vit_posemb.shape == (5, 32) and got["pos_embedding/embedding"].shape == (9, 32)
  np.testing.assert_array_equal(
    got["pos_embedding/embedding"], np.concatenate([vit_posemb[:1], vit_posemb[1:], vit_posemb[1:]])
  )

  # Block 0 skipped by pattern: exactly the fresh initialisation, and reported.
  skipped = sorted(k for k in fresh if k.startswith("encoder/encoderblock_0/"))
  assert skipped and sorted(report.skipped) == skipped
  for name in skipped:
    np.testing.assert_array_equal(got[name], fresh[name], err_msg=name)
    assert not np.array_equal(
      got[name],
      vit[
        name.replace("encoder/", "")
        .replace("/norm_attention/", "/norm_spatial/")
        .replace("/attention/", "/attention_spatial/")
      ],
    )

  # Block 1 and the final norm from the ViT's (norm_spatial -> norm_attention, ...).
  ours_to_theirs = {
    "norm_attention": "norm_spatial",
    "attention": "attention_spatial",
    "norm_mlp": "norm_mlp",
    "mlp": "mlp",
  }
  block_1 = [k for k in got if k.startswith("encoder/encoderblock_1/")]
  assert len(block_1) == len(skipped)
  for name in block_1:
    ours = name.split("/")[2]
    theirs = name.replace("encoder/", "", 1).replace(f"/{ours}/", f"/{ours_to_theirs[ours]}/")
    np.testing.assert_array_equal(got[name], vit[theirs], err_msg=name)
  for leaf in ("scale", "bias"):
    np.testing.assert_array_equal(got[f"encoder/encoder_norm/{leaf}"], vit[f"encoder_norm/{leaf}"])

  # A head for 5 classes from a 3-class ViT: fresh, with a note.
  for leaf in ("kernel", "bias"):
    np.testing.assert_array_equal(got[f"head/{leaf}"], fresh[f"head/{leaf}"])
  assert {"head/kernel", "head/bias"} <= set(report.fresh)
  assert any("head re-initialised" in note and "3 classes" in note for note in report.notes)
  assert any("central_frame" in note for note in report.notes)
  assert {"embedding/kernel", "pos_embedding/embedding"} <= set(report.adapted)
  assert set(report.loaded) == set(got) - set(report.skipped) - set(report.fresh)


def test_init_from_image_vit_inflate_kernel(image_vit):
  vit = _flat(image_vit.params)
  _, got, _ = _init_vivit(image_vit, kernel_init_method="inflate")
  for t in range(2):
    np.testing.assert_allclose(got["embedding/kernel"][t], vit["embedding/kernel"] / 2, rtol=1e-6)


def test_init_from_image_vit_rejects_another_patch_size(image_vit):
  with pytest.raises(ValueError, match="16x16 patches, the model 8x8"):
    _init_vivit(image_vit, variant="Ti/8x2")
