"""vidtx -> Hugging Face folders (vidtx.checkpoints.export_hf): logits, round trip, refusals.

The references are transformers 5.23's own TimesformerForVideoClassification and
VivitForVideoClassification (PyTorch CPU), loaded with from_pretrained from what `write` wrote.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import reference
import torch
import transformers
from safetensors.numpy import load_file
from shared import REPO
from test_checkpoints import SIZES, TOL, _clip, _hf_timesformer, _randomise, _torch_video

from vidtx import models
from vidtx.checkpoints import convert_source, export_hf, video
from vidtx.checkpoints.store import Converted

SMALL = dict(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
# Within the 1e-4 (TOL), and tight enough to tell the GELU forms apart: exact and tanh
# GELU differ by ~8e-5 in these logits; the measured differences are ~4e-7.
EXPORT_TOL = 1e-5


def _random_converted(model_name, config, num_frames=4, labels=None, seed=0):
  """A vidtx model with every parameter random (the zero-initialised ones too)."""
  model = models.build(model_name, config, 5)
  shapes = reference.init_shapes(model, (1, num_frames, 32, 32, 3))
  params = jax.tree.map(np.asarray, reference.random_like(shapes, seed=seed))
  preprocessing = (
    video.vivit_preprocessing(num_frames, 32)
    if model_name == "vivit"
    else video.timesformer_preprocessing(num_frames, 32)
  )
  return Converted(model_name, dict(config), 5, params, preprocessing, labels=labels)


def _write(converted, tmp_path, name="hf"):
  out = tmp_path / name
  out.mkdir()
  export_hf.write(converted, str(out))
  return str(out)


def _vidtx_logits(converted, x):
  logits, _ = converted.build_model().apply({"params": converted.params}, x, train=False)
  return np.asarray(logits)


def _hf_logits(cls, path, x):
  model = cls.from_pretrained(path).eval()
  with torch.no_grad():
    return model(pixel_values=_torch_video(x)).logits.numpy()


# ----------------------------------------------------------------------------------------
# (a) vidtx -> HF: the same logits.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "model_name,config,num_frames",
  [
    ("timesformer", dict(variant="Ti/16", attention="divided"), 4),
    ("timesformer", dict(variant="Ti/16", attention="joint", gelu_approximate=True), 4),
    # No positional embeddings at all: written as zeros.
    ("timesformer", dict(variant="Ti/16", attention="joint", positional_embedding="none"), 4),
    ("timesformer", dict(variant="Ti/16", attention="space", layer_norm_epsilon=1e-12), 1),
    # Scanned layers and no time embedding (written as zeros) on the way.
    (
      "timesformer",
      dict(variant="Ti/16", attention="divided", scan_layers=True, positional_embedding="space"),
      4,
    ),
    ("vivit", dict(variant="Ti/16x2", attention="spatio_temporal", classifier="token"), 4),
  ],
)
def test_vidtx_to_hf_logits(tmp_path, model_name, config, num_frames):
  converted = _random_converted(model_name, dict(config, **SMALL), num_frames)
  path = _write(converted, tmp_path)
  assert sorted(os.listdir(path)) == [
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
  ]
  cls = (
    transformers.VivitForVideoClassification
    if model_name == "vivit"
    else transformers.TimesformerForVideoClassification
  )
  x = _clip(frames=num_frames, seed=3)  # (B, T, H, W, C); HF takes (B, T, C, H, W).
  ours, theirs = _vidtx_logits(converted, x), _hf_logits(cls, path, x)
  np.testing.assert_allclose(theirs, ours, atol=min(TOL, EXPORT_TOL), rtol=0)
  assert np.abs(ours).max() > 0.1  # Not a trivially small output.
  # The numerics too small for logits at this size to show.
  with open(os.path.join(path, "config.json")) as f:
    hf_config = json.load(f)
  model_config = converted.build_model().config
  assert hf_config["layer_norm_eps"] == model_config.layer_norm_epsilon
  assert hf_config["hidden_act"] == ("gelu_fast" if model_config.gelu_approximate else "gelu")


# ----------------------------------------------------------------------------------------
# (b) HF -> vidtx -> HF: the same tensors and config.
# ----------------------------------------------------------------------------------------

CONFIG_FIELDS = (
  "model_type",
  "architectures",
  "image_size",
  "num_frames",
  "num_channels",
  "hidden_size",
  "num_hidden_layers",
  "num_attention_heads",
  "intermediate_size",
  "hidden_act",
  "layer_norm_eps",
  "qkv_bias",
  "id2label",
  "label2id",
)


def _hf_vivit(tmp_path, seed=2):
  config = transformers.VivitConfig(
    image_size=32, num_frames=4, tubelet_size=[2, 16, 16], num_labels=5, **SIZES
  )
  model = _randomise(transformers.VivitForVideoClassification(config), seed)
  path = str(tmp_path / "hf_vivit")
  model.save_pretrained(path)
  return model, path


@pytest.mark.parametrize("kind", ["divided_space_time", "joint_space_time", "vivit"])
def test_hf_round_trip_identical(tmp_path_factory, tmp_path, kind):
  if kind == "vivit":
    _, original = _hf_vivit(tmp_path)
    fields = (*CONFIG_FIELDS, "tubelet_size")
  else:
    _, original = _hf_timesformer(tmp_path_factory, kind, seed=4)
    fields = (*CONFIG_FIELDS, "patch_size", "attention_type")
  path = _write(convert_source(original), tmp_path, "again")
  expected, got = (load_file(os.path.join(p, "model.safetensors")) for p in (original, path))
  assert sorted(got) == sorted(expected)
  for name, value in expected.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  configs = []
  for p in (original, path):
    with open(os.path.join(p, "config.json")) as f:
      configs.append(json.load(f))
  assert {k: configs[1][k] for k in fields} == {k: configs[0][k] for k in fields}


# ----------------------------------------------------------------------------------------
# (c) What HF cannot express.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "model_name,config,message",
  [
    ("vivit", dict(variant="Ti/16x2", attention="factorised_encoder"), "Model 1"),
    (
      "vivit",
      dict(variant="Ti/16x2", attention="factorised_self_attention", classifier="gap"),
      "Model 1",
    ),
    (
      "vivit",
      dict(variant="Ti/16x2", attention="factorised_dot_product", classifier="gap"),
      "Model 1",
    ),
    ("vivit", dict(variant="Ti/16x2", attention="spatio_temporal", classifier="gap"), "class"),
    ("timesformer", dict(variant="Ti/16", attention="local_global"), "attention_type"),
    ("timesformer", dict(variant="Ti/16", attention="axial"), "attention_type"),
    ("timesformer", dict(variant="Ti/16", attention="space_first"), "attention_type"),
    ("timesformer", dict(variant="Ti/16", attention="parallel"), "attention_type"),
    ("timesformer", dict(variant="Ti/16", attention="space"), "every frame on its own"),
    ("timesformer", dict(variant="Ti/16", classifier="gap"), "class token"),
    ("xvit", dict(variant="Ti/16"), "no equivalent"),
  ],
)
def test_unsupported_models_raise(tmp_path, model_name, config, message):
  preprocessing = video.timesformer_preprocessing(4, 32)
  converted = Converted(model_name, dict(config, **SMALL), 5, {}, preprocessing)
  with pytest.raises(ValueError, match=message) as error:
    export_hf.write(converted, str(tmp_path))
  assert "export supports" in str(error.value) and "\n" not in str(error.value)
  assert os.listdir(tmp_path) == []  # Nothing written.


def test_hf_space_only_on_several_frames_is_refused(tmp_path_factory, tmp_path):
  _, path = _hf_timesformer(tmp_path_factory, "space_only", seed=6)
  with pytest.raises(ValueError, match="every frame on its own"):
    export_hf.write(convert_source(path), str(tmp_path))


# ----------------------------------------------------------------------------------------
# (d) Labels and preprocessing.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["timesformer", "vivit"])
def test_labels_and_preprocessing(tmp_path, model_name):
  config = dict(variant="Ti/16", attention="divided", **SMALL)
  if model_name == "vivit":
    config.update(variant="Ti/16x2", attention="spatio_temporal", classifier="token")
  labels = ["archery", "bowling", "cooking", "diving", "eating"]
  converted = _random_converted(model_name, config, labels=labels)
  converted.preprocessing.update(
    min_resize=32, eval_min_resize=36, mean=[0.4, 0.45, 0.5], std=[0.2, 0.25, 0.3]
  )
  path = _write(converted, tmp_path)
  hf_config = transformers.AutoConfig.from_pretrained(path)
  assert hf_config.id2label == dict(enumerate(labels))
  assert hf_config.label2id == {label: i for i, label in enumerate(labels)}
  processor = transformers.AutoImageProcessor.from_pretrained(path)
  assert processor.size["shortest_edge"] == 36 and processor.crop_size["height"] == 32
  # uint8 frames already of the crop size: only the normalisation acts.
  frames = np.random.RandomState(0).randint(0, 256, (4, 32, 32, 3)).astype(np.uint8)
  processor.size = {"shortest_edge": 32}  # No resize: frames are of the crop size.
  pixels = processor(list(frames), return_tensors="np")["pixel_values"]  # (1, T, C, H, W)
  expected = (frames / 255.0 - converted.preprocessing["mean"]) / converted.preprocessing["std"]
  # (T, H, W, C) -> (T, C, H, W)
  np.testing.assert_allclose(pixels[0], expected.transpose(0, 3, 1, 2), atol=1e-5, rtol=0)
  # The vidtx reader reads the folder back with the same labels and the whole preprocessing.
  again = convert_source(path)
  assert again.labels == labels
  assert again.preprocessing == converted.preprocessing


def test_placeholder_labels_without_names(tmp_path):
  converted = _random_converted("timesformer", dict(variant="Ti/16", attention="joint", **SMALL))
  hf_config = transformers.AutoConfig.from_pretrained(_write(converted, tmp_path))
  assert hf_config.id2label == {i: f"LABEL_{i}" for i in range(5)}


def test_write_needs_no_torch(tmp_path):
  """`write` runs on numpy: PyTorch is never imported (a subprocess, as this one has it)."""
  script = f"""
import sys
sys.path[:0] = ["tests"]
import jax, numpy as np, reference
from vidtx import models
from vidtx.checkpoints import export_hf, video
from vidtx.checkpoints.store import Converted
config = dict(variant="Ti/16x2", attention="spatio_temporal", classifier="token", **{SMALL!r})
shapes = reference.init_shapes(models.build("vivit", config, 5), (1, 4, 32, 32, 3))
params = jax.tree.map(np.asarray, reference.random_like(shapes))
export_hf.write(
  Converted("vivit", config, 5, params, video.vivit_preprocessing(4, 32)), {str(tmp_path)!r}
)
assert "torch" not in sys.modules, "torch was imported"
"""
  subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120)
  assert sorted(os.listdir(tmp_path)) == sorted(
    [export_hf.CONFIG_FILE, export_hf.WEIGHTS_FILE, export_hf.PREPROCESSOR_FILE]
  )
