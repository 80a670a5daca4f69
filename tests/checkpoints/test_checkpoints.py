"""Conversion parity: every peer format converted by vidtx computes what the peer computes.

The references are the Hugging Face models themselves (transformers 5.23, PyTorch CPU), built
small with random weights and saved with save_pretrained. The other formats are written here
from those weights under each format's own names, with tables that live in this file (not the
library's), so a naming mistake in the library cannot cancel out.
"""

import os

import flax
import jax
import numpy as np
import pytest
import torch
import transformers

from vidtx import models, trainer
from vidtx.checkpoints import convert_source, init_from, store

TOL = 1e-4  # The bound; measured differences are ~1e-7.
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Every parameter random (HF initialises some to zero, which would hide mistakes)."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
  return model.eval()


def _clip(batch=2, frames=4, size=32, seed=0):
  return np.random.RandomState(seed).randn(batch, frames, size, size, 3).astype(np.float32)


def _torch_video(x):
  return torch.from_numpy(x).permute(0, 1, 4, 2, 3)  # (B, T, H, W, C) -> (B, T, C, H, W)


def _apply(converted, x):
  logits, out = converted.build_model().apply({"params": converted.params}, x, train=False)
  return np.asarray(logits), out


def _hf_timesformer(tmp_path_factory, attention_type, seed=0):
  config = transformers.TimesformerConfig(
    image_size=32, patch_size=16, num_frames=4, num_labels=5, attention_type=attention_type, **SIZES
  )
  model = _randomise(transformers.TimesformerForVideoClassification(config), seed)
  path = str(tmp_path_factory.mktemp(f"hf_timesformer_{attention_type}"))
  model.save_pretrained(path)
  return model, path


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
  # layer_norm_eps 1e-6 so that the timm-named copy (timm's 1e-6) computes the same function.
  config = transformers.ViTConfig(
    image_size=32, patch_size=16, num_labels=5, layer_norm_eps=1e-6, **SIZES
  )
  model = _randomise(transformers.ViTForImageClassification(config), 1)
  path = str(tmp_path_factory.mktemp("hf_vit"))
  model.save_pretrained(path)
  return model, path


def _vit_features(hf_model, images):
  """The ViT's final LayerNorm'd class token for (B, H, W, C) images."""
  with torch.no_grad():
    out = hf_model.vit(pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2))
  return out.last_hidden_state[:, 0].numpy()


# ----------------------------------------------------------------------------------------
# Hugging Face folders.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "attention_type,vidtx_attention",
  [("divided_space_time", "divided"), ("joint_space_time", "joint")],
)
def test_hf_timesformer_logits(tmp_path_factory, attention_type, vidtx_attention):
  hf_model, path = _hf_timesformer(tmp_path_factory, attention_type)
  converted = convert_source(path)
  assert converted.model_config["attention"] == vidtx_attention
  assert converted.model_config["gelu_approximate"] is False
  x = _clip()
  ours, _ = _apply(converted, x)
  with torch.no_grad():
    theirs = hf_model(pixel_values=_torch_video(x)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)
  assert np.abs(theirs).max() > 0.1  # Not a trivially small output.


def test_hf_timesformer_space_only_per_frame_and_official_average(tmp_path_factory):
  hf_model, path = _hf_timesformer(tmp_path_factory, "space_only")
  converted = convert_source(path)
  assert any("one row of logits per frame" in n for n in converted.source["notes"])
  x = _clip()
  with torch.no_grad():
    hf_out = hf_model(pixel_values=_torch_video(x), output_hidden_states=True)
  # Hugging Face: one row per frame, (B*T, classes).
  assert hf_out.logits.shape == (8, 5)
  # The per-frame computation is the same: vidtx on each frame as a 1-frame clip.
  # (B, T, H, W, C) -> (B*T, 1, H, W, C)
  per_frame, _ = _apply(converted, x.reshape(8, 1, 32, 32, 3))
  np.testing.assert_allclose(per_frame, hf_out.logits.numpy(), atol=TOL, rtol=0)
  # The official semantics, which vidtx keeps: tokens averaged over frames, then the final
  # LayerNorm and the head; built here from Hugging Face's own last hidden state.
  hidden = hf_out.hidden_states[-1].reshape(2, 4, 5, 32).mean(1)  # (B*T, 1+N, D) -> (B, 1+N, D)
  with torch.no_grad():
    official = hf_model.classifier(hf_model.timesformer.layernorm(hidden)[:, 0]).numpy()
  ours, _ = _apply(converted, x)
  np.testing.assert_allclose(ours, official, atol=TOL, rtol=0)
  assert not np.allclose(ours, hf_out.logits.numpy().reshape(2, 4, 5).mean(1), atol=1e-3)


def test_hf_vivit_logits(tmp_path_factory):
  config = transformers.VivitConfig(
    image_size=32, num_frames=4, tubelet_size=[2, 16, 16], num_labels=5, **SIZES
  )
  hf_model = _randomise(transformers.VivitForVideoClassification(config), 2)
  path = str(tmp_path_factory.mktemp("hf_vivit"))
  hf_model.save_pretrained(path)
  converted = convert_source(path)
  assert converted.model_config["attention"] == "spatio_temporal"
  assert converted.model_config["gelu_approximate"] is True  # gelu_fast
  assert converted.preprocessing["mean"] == [0.5] * 3  # scenic's [-1, 1]
  x = _clip()
  ours, _ = _apply(converted, x)
  with torch.no_grad():
    theirs = hf_model(pixel_values=_torch_video(x)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


def test_hf_vit_logits_and_labels(tmp_path_factory):
  config = transformers.ViTConfig(
    image_size=32, patch_size=16, num_labels=3, id2label={0: "cat", 1: "dog", 2: "eel"}, **SIZES
  )
  hf_model = _randomise(transformers.ViTForImageClassification(config), 3)
  path = str(tmp_path_factory.mktemp("hf_vit_labels"))
  hf_model.save_pretrained(path)
  converted = convert_source(path)
  assert converted.labels == ["cat", "dog", "eel"]
  assert converted.model_config["layer_norm_epsilon"] == 1e-12  # HF ViT's default, recorded.
  images = _clip(frames=1)[:, 0]
  ours, _ = _apply(converted, images[:, None])
  with torch.no_grad():
    theirs = hf_model(pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


# ----------------------------------------------------------------------------------------
# Formats written here from the HF weights under their own names.
# ----------------------------------------------------------------------------------------


def _hf_vit_state(hf_model):
  return {k: v.detach().numpy().copy() for k, v in hf_model.state_dict().items()}


def _timm_names(state, num_layers):
  """HF ViT -> timm names (fused qkv)."""
  out = {
    "cls_token": state["vit.embeddings.cls_token"],
    "pos_embed": state["vit.embeddings.position_embeddings"],
    "patch_embed.proj.weight": state["vit.embeddings.patch_embeddings.projection.weight"],
    "patch_embed.proj.bias": state["vit.embeddings.patch_embeddings.projection.bias"],
    "norm.weight": state["vit.layernorm.weight"],
    "norm.bias": state["vit.layernorm.bias"],
    "head.weight": state["classifier.weight"],
    "head.bias": state["classifier.bias"],
  }
  for i in range(num_layers):
    h, t = f"vit.layers.{i}.", f"blocks.{i}."
    for leaf in ("weight", "bias"):
      out[t + "attn.qkv." + leaf] = np.concatenate(
        [state[h + f"attention.{x}_proj.{leaf}"] for x in ("q", "k", "v")]
      )
      out[t + "attn.proj." + leaf] = state[h + f"attention.o_proj.{leaf}"]
      out[t + "norm1." + leaf] = state[h + f"layernorm_before.{leaf}"]
      out[t + "norm2." + leaf] = state[h + f"layernorm_after.{leaf}"]
      out[t + "mlp.fc1." + leaf] = state[h + f"mlp.fc1.{leaf}"]
      out[t + "mlp.fc2." + leaf] = state[h + f"mlp.fc2.{leaf}"]
  return out


def test_timm_state_dict_logits(hf_vit, tmp_path):
  hf_model, _ = hf_vit
  timm_state = _timm_names(_hf_vit_state(hf_model), 2)
  path = str(tmp_path / "vit_tiny.pth")
  torch.save({"module." + k: torch.from_numpy(v) for k, v in timm_state.items()}, path)
  converted = convert_source(path, num_heads=2)
  assert converted.source["format"] == "timm"
  images = _clip(frames=1, seed=4)[:, 0]
  ours, _ = _apply(converted, images[:, None])
  with torch.no_grad():
    theirs = hf_model(pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)
  # The same weights as safetensors.
  from safetensors.numpy import save_file

  st_path = str(tmp_path / "vit_tiny.safetensors")
  save_file({k: np.ascontiguousarray(v) for k, v in timm_state.items()}, st_path)
  again, _ = _apply(convert_source(st_path, num_heads=2), images[:, None])
  np.testing.assert_array_equal(again, ours)


def _flax_vit_names(state, num_layers, num_heads, big_vision):
  """HF ViT -> vit_jax (pre-Linen) or big_vision names, Flax layouts written out here."""
  d = state["vit.embeddings.cls_token"].shape[-1]
  dh = d // num_heads

  def qkv(w, b):  # Linear [H*Dh, D] -> kernel [D, H, Dh], bias [H, Dh]
    return w.T.reshape(d, num_heads, dh), b.reshape(num_heads, dh)

  attention = "MultiHeadDotProductAttention_0" if big_vision else "MultiHeadDotProductAttention_1"
  ln2, mlp = ("LayerNorm_1", "MlpBlock_0") if big_vision else ("LayerNorm_2", "MlpBlock_3")
  posemb = state["vit.embeddings.position_embeddings"]
  out = {
    "embedding/kernel": state["vit.embeddings.patch_embeddings.projection.weight"].transpose(
      2, 3, 1, 0
    ),
    "embedding/bias": state["vit.embeddings.patch_embeddings.projection.bias"],
    "cls": state["vit.embeddings.cls_token"],
    "Transformer/encoder_norm/scale": state["vit.layernorm.weight"],
    "Transformer/encoder_norm/bias": state["vit.layernorm.bias"],
    "head/kernel": state["classifier.weight"].T,
    "head/bias": state["classifier.bias"],
  }
  if big_vision:
    out["pos_embedding"] = posemb[:, 1:]  # big_vision: no entry for the class token.
  else:
    out["Transformer/posembed_input/pos_embedding"] = posemb
  layers = []
  for i in range(num_layers):
    h = f"vit.layers.{i}."
    layer = {}
    for x, name in (("q", "query"), ("k", "key"), ("v", "value")):
      layer[f"{attention}/{name}/kernel"], layer[f"{attention}/{name}/bias"] = qkv(
        state[h + f"attention.{x}_proj.weight"], state[h + f"attention.{x}_proj.bias"]
      )
    layer[f"{attention}/out/kernel"] = state[h + "attention.o_proj.weight"].T.reshape(
      num_heads, dh, d
    )
    layer[f"{attention}/out/bias"] = state[h + "attention.o_proj.bias"]
    for norm, hf in (("LayerNorm_0", "layernorm_before"), (ln2, "layernorm_after")):
      layer[f"{norm}/scale"], layer[f"{norm}/bias"] = (
        state[h + hf + ".weight"],
        state[h + hf + ".bias"],
      )
    for j, fc in ((0, "fc1"), (1, "fc2")):
      layer[f"{mlp}/Dense_{j}/kernel"] = state[h + f"mlp.{fc}.weight"].T
      layer[f"{mlp}/Dense_{j}/bias"] = state[h + f"mlp.{fc}.bias"]
    layers.append(layer)
  if big_vision:  # big_vision's default scanned layout: a leading layer axis.
    for name in layers[0]:
      out[f"Transformer/encoderblock/{name}"] = np.stack([layer[name] for layer in layers])
    return {"params/" + k: v for k, v in out.items()}
  for i, layer in enumerate(layers):
    for name, value in layer.items():
      out[f"Transformer/encoderblock_{i}/{name}"] = value
  return out


@pytest.mark.parametrize("big_vision", [False, True])
def test_flax_npz_equals_hf_conversion(hf_vit, tmp_path, big_vision):
  hf_model, hf_path = hf_vit
  arrays = _flax_vit_names(_hf_vit_state(hf_model), 2, 2, big_vision)
  path = str(tmp_path / "vit.npz")
  np.savez(path, **arrays)
  converted = convert_source(path)
  assert converted.source["format"] == ("big_vision" if big_vision else "vit_npz")
  assert converted.model_config["gelu_approximate"] is True  # Flax nn.gelu
  reference = flax.traverse_util.flatten_dict(convert_source(hf_path).params, sep="/")
  got = flax.traverse_util.flatten_dict(converted.params, sep="/")
  assert sorted(got) == sorted(reference)
  for name, value in reference.items():
    expected = value.copy()
    if big_vision and name == "pos_embedding/embedding":
      expected[0] = 0.0  # No positional embedding on big_vision's class token.
    np.testing.assert_allclose(got[name], expected, rtol=0, atol=1e-7, err_msg=name)


def _official_timesformer_state(hf_model, num_layers):
  """HF TimeSformer (divided) -> the official .pyth names."""
  s = {k: v.detach().numpy().copy() for k, v in hf_model.state_dict().items()}
  e = "timesformer.embeddings."
  out = {
    "model.cls_token": s[e + "cls_token"],
    "model.pos_embed": s[e + "position_embeddings"],
    "model.time_embed": s[e + "time_embeddings"],
    "model.patch_embed.proj.weight": s[e + "patch_embeddings.projection.weight"],
    "model.patch_embed.proj.bias": s[e + "patch_embeddings.projection.bias"],
    "model.norm.weight": s["timesformer.layernorm.weight"],
    "model.norm.bias": s["timesformer.layernorm.bias"],
    "model.head.weight": s["classifier.weight"],
    "model.head.bias": s["classifier.bias"],
  }
  pairs = [
    ("layernorm_before", "norm1"),
    ("layernorm_after", "norm2"),
    ("attention.attention.qkv", "attn.qkv"),
    ("attention.output.dense", "attn.proj"),
    ("temporal_layernorm", "temporal_norm1"),
    ("temporal_attention.attention.qkv", "temporal_attn.qkv"),
    ("temporal_attention.output.dense", "temporal_attn.proj"),
    ("temporal_dense", "temporal_fc"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
  ]
  for i in range(num_layers):
    for hf, official in pairs:
      for leaf in ("weight", "bias"):
        out[f"model.blocks.{i}.{official}.{leaf}"] = s[f"timesformer.encoder.layer.{i}.{hf}.{leaf}"]
  return out


def test_official_timesformer_pyth_logits(tmp_path_factory, tmp_path):
  hf_model, _ = _hf_timesformer(tmp_path_factory, "divided_space_time", seed=5)
  state = _official_timesformer_state(hf_model, 2)
  cfg = (
    "DATA:\n  NUM_FRAMES: 4\n  SAMPLING_RATE: 16\n  TEST_CROP_SIZE: 32\n"
    "  MEAN: [0.45, 0.45, 0.45]\n  STD: [0.225, 0.225, 0.225]\n"
    "TIMESFORMER:\n  ATTENTION_TYPE: divided_space_time\n"
  )
  path = str(tmp_path / "TimeSformer_divST_tiny.pyth")
  torch.save(
    {"epoch": 15, "model_state": {k: torch.from_numpy(v) for k, v in state.items()}, "cfg": cfg},
    path,
  )
  converted = convert_source(path, num_heads=2)
  assert converted.model_config["attention"] == "divided"
  assert converted.preprocessing["stride"] == 16 and converted.preprocessing["num_frames"] == 4
  assert converted.preprocessing["aggregation"] == "sum_logits"
  x = _clip(seed=6)
  ours, _ = _apply(converted, x)
  with torch.no_grad():
    theirs = hf_model(pixel_values=_torch_video(x)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


def _write_scenic(path, params):
  """A scenic (flax msgpack) checkpoint: params under optimizer/target, as scenic writes them."""
  tree = flax.traverse_util.unflatten_dict(params, sep="/")
  with open(path, "wb") as f:
    f.write(
      flax.serialization.msgpack_serialize(
        {"optimizer": {"target": tree, "state": {"step": 7}}, "global_step": 7}
      )
    )


def test_scenic_model1_equals_hf_vivit(tmp_path_factory, tmp_path):
  """HF's ViViT is scenic's Model 1 ported: scenic names written from its weights convert back
  to the same logits."""
  config = transformers.VivitConfig(
    image_size=32, num_frames=4, tubelet_size=[2, 16, 16], num_labels=5, **SIZES
  )
  hf_model = _randomise(transformers.VivitForVideoClassification(config), 7)
  s = {k: v.detach().numpy().copy() for k, v in hf_model.state_dict().items()}
  d, heads = 32, 2
  params = {
    "cls": s["vivit.embeddings.cls_token"],
    "embedding/kernel": s["vivit.embeddings.patch_embeddings.projection.weight"].transpose(
      2, 3, 4, 1, 0
    ),
    "embedding/bias": s["vivit.embeddings.patch_embeddings.projection.bias"],
    "Transformer/posembed_input/pos_embedding": s["vivit.embeddings.position_embeddings"],
    "Transformer/encoder_norm/scale": s["vivit.layernorm.weight"],
    "Transformer/encoder_norm/bias": s["vivit.layernorm.bias"],
    "output_projection/kernel": s["classifier.weight"].T,
    "output_projection/bias": s["classifier.bias"],
  }
  for i in range(2):
    h, p = f"vivit.layers.{i}.", f"Transformer/encoderblock_{i}/"
    for x, name in (("q", "query"), ("k", "key"), ("v", "value")):
      params[p + f"MultiHeadDotProductAttention_0/{name}/kernel"] = s[
        h + f"attention.{x}_proj.weight"
      ].T.reshape(d, heads, d // heads)
      params[p + f"MultiHeadDotProductAttention_0/{name}/bias"] = s[
        h + f"attention.{x}_proj.bias"
      ].reshape(heads, d // heads)
    params[p + "MultiHeadDotProductAttention_0/out/kernel"] = s[
      h + "attention.o_proj.weight"
    ].T.reshape(heads, d // heads, d)
    params[p + "MultiHeadDotProductAttention_0/out/bias"] = s[h + "attention.o_proj.bias"]
    for norm, hf in (("LayerNorm_0", "layernorm_before"), ("LayerNorm_1", "layernorm_after")):
      params[p + f"{norm}/scale"] = s[h + hf + ".weight"]
      params[p + f"{norm}/bias"] = s[h + hf + ".bias"]
    for j, fc in ((0, "fc1"), (1, "fc2")):
      params[p + f"MlpBlock_0/Dense_{j}/kernel"] = s[h + f"mlp.{fc}.weight"].T
      params[p + f"MlpBlock_0/Dense_{j}/bias"] = s[h + f"mlp.{fc}.bias"]
  os.makedirs(tmp_path / "scenic")
  _write_scenic(str(tmp_path / "scenic" / "checkpoint_7"), params)
  converted = convert_source(str(tmp_path / "scenic"), crop_size=32)
  assert converted.model_config["attention"] == "spatio_temporal"
  assert converted.preprocessing["num_frames"] == 4
  x = _clip(seed=8)
  ours, _ = _apply(converted, x)
  with torch.no_grad():
    theirs = hf_model(pixel_values=_torch_video(x)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


# scenic names of vidtx's ViViT parameters (Models 2-4), written out here.
_SCENIC_BLOCK = {
  "norm_attention": "LayerNorm_0",
  "attention": "MultiHeadDotProductAttention_0",
  "norm_mlp": "LayerNorm_1",
  "mlp": "MlpBlock_0",
}
_SCENIC_M3_BLOCK = {
  "norm_spatial": "LayerNorm_space",
  "attention_spatial": "MultiHeadDotProductAttention_space",
  "norm_temporal": "LayerNorm_time",
  "attention_temporal": "MultiHeadDotProductAttention_time",
  "norm_mlp": "LayerNorm_mlp",
  "mlp": "MlpBlock",
}


def _to_scenic(flat, model):
  out = {}
  for name, value in flat.items():
    parts = name.split("/")
    if parts[0] == "head":
      out["output_projection/" + parts[1]] = value
    elif parts[0] in ("embedding",):
      out[name] = value
    elif parts[0] in ("cls", "spatial_cls", "temporal_cls"):
      out[
        {
          "cls": "cls",
          "spatial_cls": "cls_SpatialTransformer",
          "temporal_cls": "cls_TemporalTransformer",
        }[parts[0]]
      ] = value[None] if value.ndim == 2 else value
    elif parts[0].endswith("pos_embedding"):
      encoder = {
        "pos_embedding": "Transformer",
        "spatial_pos_embedding": "SpatialTransformer",
        "temporal_pos_embedding": "TemporalTransformer",
      }[parts[0]]
      out[f"{encoder}/posembed_input/pos_embedding"] = value[None]
    else:
      encoder = {
        "encoder": "Transformer",
        "spatial_encoder": "SpatialTransformer",
        "temporal_encoder": "TemporalTransformer",
      }[parts[0]]
      if parts[1] == "encoder_norm":
        out[f"{encoder}/{'/'.join(parts[1:])}"] = value
        continue
      table = _SCENIC_M3_BLOCK if model == "factorised_self_attention" else _SCENIC_BLOCK
      if model == "factorised_dot_product" and parts[2] == "attention":
        # scenic's Model 4 puts the temporal half of the heads first.
        axis = {"kernel": 1, "bias": 0}[parts[-1]] if parts[3] != "out" else 0
        if not (parts[3] == "out" and parts[-1] == "bias"):
          half = value.shape[axis] // 2
          value = np.concatenate(np.split(value, [half], axis=axis)[::-1], axis=axis)
      out[f"{encoder}/{parts[1]}/{table[parts[2]]}/{'/'.join(parts[3:])}"] = value
  return out


@pytest.mark.parametrize(
  "attention,extra",
  [
    ("factorised_encoder", dict(classifier="token", temporal_layers=1)),
    ("factorised_self_attention", dict(classifier="gap", attention_order="time_space")),
    ("factorised_dot_product", dict(classifier="gap")),
  ],
)
def test_scenic_models_2_3_4(tmp_path, attention, extra):
  import reference

  config = dict(
    variant="Ti/16x2",
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    mlp_dim=64,
    attention=attention,
    **extra,
  )
  model = models.build("vivit", config, 5)
  params = reference.random_like(reference.init_shapes(model, (1, 4, 32, 32, 3)), seed=3)
  params = jax.tree.map(np.asarray, params)
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  path = str(tmp_path / "checkpoint_100")
  _write_scenic(path, _to_scenic(flat, attention))
  options = dict(crop_size=32)
  if attention == "factorised_self_attention":
    with pytest.raises(ValueError, match="attention_order"):
      convert_source(path, **options)
    options["attention_order"] = "time_space"
  if attention == "factorised_dot_product":
    with pytest.raises(ValueError, match="same parameters"):
      convert_source(path, **options)
    options["attention"] = "factorised_dot_product"
  converted = convert_source(path, **options)
  assert converted.model_config["attention"] == attention
  got = flax.traverse_util.flatten_dict(converted.params, sep="/")
  assert sorted(got) == sorted(flat)
  for name, value in flat.items():
    np.testing.assert_array_equal(np.reshape(got[name], value.shape), value, err_msg=name)
  x = _clip(seed=9)
  ours, _ = _apply(converted, x)
  expected, _ = model.apply({"params": params}, x, train=False)
  np.testing.assert_allclose(ours, np.asarray(expected), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------
# Initialisation from an image ViT.
# ----------------------------------------------------------------------------------------


def _init_model(model_name, config, num_frames=4, path=None, **init_config):
  model = models.build(model_name, config, 7)
  fresh = model.init(
    jax.random.key(0), np.zeros((1, num_frames, 32, 32, 3), np.float32), train=False
  )["params"]
  params, report = init_from.initialise(
    fresh,
    model_name=model_name,
    model_config=model.config,
    init_config=dict(checkpoint_path=path, **init_config),
    num_frames=num_frames,
    crop_size=32,
  )
  return model, params, report


@pytest.mark.parametrize("through_convert", [False, True])
def test_timesformer_from_vit_on_a_static_clip_gives_the_vit_features(
  hf_vit, tmp_path, through_convert
):
  hf_model, path = hf_vit
  if through_convert:
    path = store.save(str(tmp_path / "vit_converted"), convert_source(path))
  config = dict(
    variant="B/16",
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    mlp_dim=64,
    attention="divided",
    layer_norm_epsilon=1e-6,
  )
  model, params, report = _init_model("timesformer", config, path=path)
  assert "time_embedding/embedding" in report.fresh
  assert any("re-initialised" in note for note in report.notes)
  images = _clip(frames=1, seed=10)[:, 0]
  clip = np.repeat(images[:, None], 4, axis=1)  # (B, H, W, C) -> (B, T, H, W, C)
  _, out = model.apply({"params": params}, clip, train=False)
  np.testing.assert_allclose(
    np.asarray(out["pre_logits"]), _vit_features(hf_model, images), atol=TOL, rtol=0
  )
  # The temporal attention starts as a copy of the spatial one (the official rule).
  block = params["encoderblock_0"]
  np.testing.assert_array_equal(
    block["attention_temporal"]["query"]["kernel"], block["attention_spatial"]["query"]["kernel"]
  )


@pytest.mark.parametrize("method", ["central_frame", "inflate"])
def test_vivit_factorised_encoder_from_vit_gives_the_vit_features_per_frame(hf_vit, method):
  hf_model, path = hf_vit
  config = dict(
    variant="B/16x2",
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    mlp_dim=64,
    attention="factorised_encoder",
    temporal_layers=1,
    gelu_approximate=False,
  )
  model, params, report = _init_model("vivit", config, path=path, kernel_init_method=method)
  assert "embedding/kernel" in report.adapted
  images = _clip(frames=1, seed=11)[:, 0]
  clip = np.repeat(images[:, None], 4, axis=1)
  _, out = model.apply({"params": params}, clip, train=False)
  features = _vit_features(hf_model, images)
  for t in range(2):  # A static clip: both tubelets embed as the image does.
    np.testing.assert_allclose(
      np.asarray(out["frame_representations"][:, t]), features, atol=TOL, rtol=0
    )


def test_vivit_model1_posemb_tiled_and_resized(hf_vit):
  _, path = hf_vit
  vit = flax.traverse_util.flatten_dict(convert_source(path).params, sep="/")
  config = dict(
    variant="B/8x2",
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    mlp_dim=64,
    attention="spatio_temporal",
  )
  with pytest.raises(ValueError, match="patches"):  # 16x16 ViT, 8x8 model.
    _init_model("vivit", config, path=path)
  config["variant"] = "B/16x2"
  model, params, _ = _init_model(
    "vivit", config, path=path, num_frames=6, positional_embed_size_change="tile"
  )
  posemb = params["pos_embedding"]["embedding"]  # (1 + 3 * 4, D)
  np.testing.assert_array_equal(posemb[0], vit["pos_embedding/embedding"][0])
  for t in range(3):
    np.testing.assert_array_equal(posemb[1 + 4 * t : 5 + 4 * t], vit["pos_embedding/embedding"][1:])
  with pytest.raises(ValueError, match="cannot fill"):
    _init_model("vivit", config, path=path, positional_embed_size_change="resize")


def test_init_from_a_video_checkpoint_resizes_time_and_resets_the_head(tmp_path_factory):
  _, path = _hf_timesformer(tmp_path_factory, "divided_space_time", seed=12)
  source = convert_source(path)
  config = dict(
    variant="B/16", hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, attention="divided"
  )
  model, params, report = _init_model("timesformer", config, num_frames=8, path=path)
  time = params["time_embedding"]["embedding"]
  np.testing.assert_array_equal(
    time, np.repeat(source.params["time_embedding"]["embedding"], 2, axis=0)
  )  # Nearest: 4 -> 8 frames.
  assert "time_embedding/embedding" in report.adapted
  assert report.fresh == ["head/kernel", "head/bias"]  # 5 classes -> 7.
  np.testing.assert_array_equal(
    params["encoderblock_1"]["temporal_fc"]["kernel"],
    source.params["encoderblock_1"]["temporal_fc"]["kernel"],
  )
  with pytest.raises(ValueError, match="cannot initialise a vivit"):
    _init_model("vivit", dict(config, variant="B/16x2", attention="spatio_temporal"), path=path)


# ----------------------------------------------------------------------------------------
# train.py with init_from.
# ----------------------------------------------------------------------------------------


def test_train_py_starts_from_a_converted_vit(hf_vit, tmp_path, capsys):
  """One step at learning rate 0 keeps the loaded parameters: the checkpoint holds the ViT's."""
  import orbax.checkpoint as ocp
  from shared import tiny_config

  _, hf_path = hf_vit
  converted_dir = store.save(str(tmp_path / "vit"), convert_source(hf_path))
  config = tiny_config(str(tmp_path / "data"), steps=1)
  config.dataset_configs.crop_size = config.dataset_configs.min_resize = 32
  config.dataset_configs.video_size = 32
  config.model.update(
    variant="B/16", hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, temporal_init="image"
  )
  config.lr_configs.base_learning_rate = 0.0
  config.init_from.checkpoint_path = converted_dir
  trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert "init_from" in capsys.readouterr().out
  restored = store.load(converted_dir).params
  with ocp.StandardCheckpointer() as checkpointer:
    state = checkpointer.restore(str(tmp_path / "run" / "checkpoints" / "1" / "state"))
  block = state["params"]["encoderblock_1"]
  np.testing.assert_array_equal(
    np.asarray(block["attention_temporal"]["key"]["kernel"]),
    restored["encoderblock_1"]["attention_spatial"]["key"]["kernel"],
  )
  np.testing.assert_array_equal(
    np.asarray(state["params"]["pos_embedding"]["embedding"]),
    restored["pos_embedding"]["embedding"],
  )
