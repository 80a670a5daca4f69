"""vidtx.tools.benchmark: its figures are consistent with each other and with the FLOP count."""

import importlib.util
import os
import types

import jax
import numpy as np

from vidtx.tools import benchmark, complexity

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("e2e", os.path.join(REPO, "tests",
                                                                   "test_end_to_end.py"))
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)


def test_benchmark_measures_compute_and_end_to_end(tmp_path):
  config = e2e.tiny_config(str(tmp_path / "data"), steps=10)
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
  text = benchmark.summary(result)
  assert "compute:" in text and "end_to_end:" in text and "MFU" in text


def test_known_peaks_apply_to_bfloat16_only():
  h100 = types.SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")
  assert benchmark.default_peak_tflops(h100, "bfloat16") == 989.0
  assert benchmark.default_peak_tflops(h100, "float32") is None
  assert benchmark.default_peak_tflops(types.SimpleNamespace(device_kind="cpu"),
                                       "bfloat16") is None
