"""vidtx.tools.benchmark: its figures are consistent with each other and with the FLOP count."""

import json
import os
import subprocess
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest
import shared
from shared import REPO

from vidtx import models
from vidtx.configs import k400_timesformer, k400_vivit_st, synthetic_xvit
from vidtx.tools import benchmark, complexity, hf_peer

jax.config.update("jax_numpy_rank_promotion", "raise")


def test_benchmark_measures_compute_and_end_to_end(tmp_path):
  config = shared.tiny_config(str(tmp_path / "data"), steps=10)
  result = benchmark.benchmark(config, steps=3, warmup=1, batch_size=8, peak_tflops=0.5)
  macs = complexity.config_complexity(config)["macs_per_view"]
  assert result["training_gflops_per_clip"] == 6 * macs / 1e9
  assert result["batch_size"] == 8 and result["devices"] == jax.device_count()
  assert result["compile_seconds"] > 0 and result["peak_memory_gib"] > 0
  for mode in ("compute", "end_to_end"):
    r = result[mode]
    assert r["steps_per_sec"] > 0
    np.testing.assert_allclose(r["clips_per_sec"], 8 * r["steps_per_sec"])
    np.testing.assert_allclose(r["tflops"], r["clips_per_sec"] * 6 * macs / 1e12)
    np.testing.assert_allclose(r["mfu"], r["tflops"] / (0.5 * jax.device_count()))
  # The step takes uint8 clips and augments them on the device; that share is timed alone.
  assert 0 < result["compute"]["augmentation_share"] < 1
  text = benchmark.summary(result)
  assert "compute:" in text and "end_to_end:" in text and "MFU" in text
  assert "augmentation on the device" in text


def test_compute_mode_includes_the_window_resize(tmp_path):
  """With scale jitter that shrinks the short side (0.8 x 20 = 16 = the crop) the reader sends
  21 x 21 window buffers: the compute mode's batch is those, and its step resizes them."""
  config = shared.tiny_config(str(tmp_path / "data"))
  config.dataset_configs.augmentation_params = ml_collections.ConfigDict(
    dict(do_jitter_scale=True, scale_min_factor=0.8, scale_max_factor=1.25)
  )
  dc = benchmark.reader_config.DatasetConfig.from_config(config.dataset_configs, views_only=True)
  assert dc.window_size == 21  # floor(16 * 20 / (16 - 0.5)) + 1
  mesh = benchmark.sharding.make_mesh(config.get("mesh"))
  batch = benchmark._random_batch(dc, (8, 4, 16, 16, 3), mesh)
  windows = np.asarray(batch[benchmark.device_augment.WINDOW])
  assert batch["inputs"].shape == (8, 4, 21, 21, 3)
  assert windows.min() >= 12 and windows.max() <= 21 and len(np.unique(windows)) > 2
  result = benchmark.benchmark(config, steps=2, warmup=1, batch_size=8, modes=("compute",))
  assert result["compute"]["steps_per_sec"] > 0 and result["clip"] == [4, 16, 16, 3]
  assert 0 < result["compute"]["augmentation_share"] < 1


def test_known_peaks_apply_to_bfloat16_only():
  h100 = types.SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")
  assert benchmark.default_peak_tflops(h100, "bfloat16") == 989.0
  assert benchmark.default_peak_tflops(h100, "float32") is None
  assert benchmark.default_peak_tflops(types.SimpleNamespace(device_kind="cpu"), "bfloat16") is None


# --------------------------------------------------------------------------------------------
# Without TensorFlow, and side by side with the Hugging Face PyTorch peer.
# --------------------------------------------------------------------------------------------

TINY = [
  "--config.model.hidden_size=32",
  "--config.model.num_layers=2",
  "--config.model.num_heads=2",
  "--config.model.mlp_dim=64",
  "--config.dataset_configs.num_frames=4",
  "--config.dataset_configs.crop_size=32",
]


def _tiny(config: ml_collections.ConfigDict, **model: object) -> ml_collections.ConfigDict:
  with config.unlocked():
    config.model.update(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, **model)
    config.dataset_configs.update(num_frames=4, crop_size=32)
  return config


def _vidtx_params(config: ml_collections.ConfigDict) -> int:
  model = models.build(config.model_name, config.model, config.dataset_configs.num_classes)
  dc = config.dataset_configs
  video = jax.ShapeDtypeStruct((1, dc.num_frames, dc.crop_size, dc.crop_size, 3), np.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), video)
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize(
  "make",
  [
    lambda: _tiny(k400_timesformer.get_config()),  # divided, B/16: 2 x 2 patches.
    lambda: _tiny(k400_timesformer.get_config("attention=space")),
    lambda: _tiny(k400_timesformer.get_config("attention=joint")),
    lambda: _tiny(k400_vivit_st.get_config(), variant="B/16x2"),  # ViViT Model 1.
  ],
  ids=["timesformer_divided", "timesformer_space", "timesformer_joint", "vivit_model1"],
)
def test_peer_spec_is_the_same_model(make):
  """The HF model peer_spec describes has exactly vidtx's parameters, and its optimizer."""
  config = make()
  spec = benchmark.peer_spec(config, batch_size=2)
  hf = hf_peer.build_model(spec)
  assert hf_peer.count_params(hf) == _vidtx_params(config) > 0
  assert hf.config.hidden_size == 32 and hf.config.num_hidden_layers == 2
  assert hf.config.num_attention_heads == 2 and hf.config.intermediate_size == 64
  assert hf.config.num_frames == 4 and hf.config.image_size == 32
  assert hf.config.num_labels == config.dataset_configs.num_classes
  # Both recipes train with SGD momentum 0.9 in float32 (TimeSformer with L2 1e-4).
  assert spec["optimizer"]["name"] == "sgd" and spec["optimizer"]["momentum"] == 0.9
  assert spec["optimizer"]["weight_decay"] == (config.optimizer_configs.get("weight_decay") or 0)
  assert spec["dtype"] == "float32" and spec["batch_size"] == 2 and spec["differences"] == []
  if config.model_name == "timesformer":
    attention = {
      "divided": "divided_space_time",
      "space": "space_only",
      "joint": "joint_space_time",
    }[config.model.attention]
    assert hf.config.attention_type == attention and hf.config.drop_path_rate == 0.1
  else:
    assert list(hf.config.tubelet_size) == [2, 16, 16]


def test_peer_spec_maps_dtype_and_adamw():
  config = _tiny(k400_timesformer.get_config(), dtype="bfloat16")
  with config.unlocked():
    config.optimizer = "adamw"
    config.optimizer_configs.update(
      beta1=0.8, beta2=0.95, adamw_weight_decay=0.05, weight_decay=0.0
    )
  spec = benchmark.peer_spec(config)
  assert spec["dtype"] == "bfloat16"
  assert spec["optimizer"] == {
    "name": "adamw",
    "lr": config.lr_configs.base_learning_rate,
    "betas": [0.8, 0.95],
    "eps": 1e-8,
    "weight_decay": 0.05,
  }


@pytest.mark.parametrize(
  "make",
  [
    lambda: k400_timesformer.get_config("attention=axial"),
    lambda: _tiny(k400_vivit_st.get_config(), attention="factorised_encoder"),
    synthetic_xvit.get_config,
  ],
  ids=["timesformer_axial", "vivit_model2", "xvit"],
)
def test_peer_refuses_models_without_a_peer(make):
  config = make()
  with pytest.raises(ValueError, match="has no Hugging Face peer"):
    benchmark.peer_spec(config)


def _without_tensorflow(tmp_path) -> dict[str, str]:
  """An environment where tensorflow, clu and av fail to import, as on accelerator images."""
  blocked = tmp_path / "blocked"
  for name in ("tensorflow", "clu", "av"):
    (blocked / name).mkdir(parents=True)
    (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed')\n")
  return dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocked), REPO]))


def _run_benchmark(tmp_path, *args: str) -> tuple[str, dict]:
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "vidtx.tools.benchmark",
      "--config=" + os.path.join(REPO, "configs", "synthetic_timesformer.py"),
      "--batch_size=2",
      *TINY,
      *args,
    ],
    capture_output=True,
    text=True,
    cwd=REPO,
    env=_without_tensorflow(tmp_path),
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout, json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_compute_mode_runs_without_tensorflow(tmp_path):
  stdout, result = _run_benchmark(tmp_path, "--mode=compute", "--steps=2", "--warmup=1")
  assert result["compute"]["steps_per_sec"] > 0 and "end_to_end" not in result
  assert "compute:" in stdout


@pytest.mark.slow
@pytest.mark.tier2
def test_peer_hf_side_by_side(tmp_path):
  """--peer hf (on an image without TensorFlow): both sides timed, their ratio, one JSON line."""
  stdout, result = _run_benchmark(
    tmp_path, "--peer=hf", "--steps=2", "--warmup=1", "--peer_rounds=2"
  )
  peer = result["peer"]
  assert "end_to_end" not in result  # --peer times the compute mode unless --mode says both.
  assert peer["hf"]["model"] == "TimesformerForVideoClassification"
  assert peer["hf"]["params"] == result["params"] and peer["hf"]["optimizer"] == "SGD"
  assert peer["hf"]["attention_type"] == "divided_space_time"
  for side in ("vidtx", "hf"):
    for key in ("train_step", "forward"):
      assert len(peer[side][f"{key}_seconds_all"]) == 2
      assert peer[side][f"{key}_seconds"] == np.median(peer[side][f"{key}_seconds_all"]) > 0
  for key in ("train_step", "forward"):
    np.testing.assert_allclose(
      peer["speedup"][key], peer["hf"][f"{key}_seconds"] / peer["vidtx"][f"{key}_seconds"]
    )
  np.testing.assert_allclose(
    result["compute"]["steps_per_sec"], 1 / peer["vidtx"]["train_step_seconds"]
  )
  assert "HF PyTorch" in stdout and "speedup" in stdout
