"""vidtx.checkpoints.readers: each format detected and read, names cleaned up."""

import os

import flax
import numpy as np
import pytest
import torch

from vidtx.checkpoints import readers


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
