"""Shared by every test module: XLA's persistent compilation cache, the test order, and the
fixtures of several areas.

Many tests compile the same programs (the shrunk recipes of one family, tiny train.py runs in
subprocesses); with the cache, each distinct program is compiled once per machine. The cache
is keyed by the program and the compiler, so a hit gives the same executable.
"""

import os
import tempfile

import jax
import pytest

CACHE_DIR = os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR",
  os.path.join(tempfile.gettempdir(), f"vidtx-tests-xla-cache-{os.getuid()}"),
)
# As the commands set it (vidtx.cli.quiet_start_up): TensorFlow's input pipeline computes the
# same on every CPU, in the tests' own process as in the commands they start.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Subprocesses started by tests inherit these through the environment.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Tests compile hundreds of tiny programs and run each a few times: XLA:CPU's LLVM optimisation
# costs more than it saves there (a cold suite is mostly compilation). HLO passes, hence the
# programs' arithmetic, are unchanged. Appended, so a user's flags stay; subprocesses inherit
# them (and get fake devices through JAX_NUM_CPU_DEVICES, not XLA_FLAGS).
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if FAST_COMPILE_FLAGS not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAGS}".strip()
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_collection_modifyitems(items: list) -> None:
  """Modules that hold slow tests run first: under xdist their long tests then start early
  instead of leaving one worker busy at the end. Each module's tests stay together (the sort is
  stable), so a module's fixtures are built once."""
  slow_modules = {item.path for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.path not in slow_modules)


# A peer checkpoint that tests of several areas read (the readers, the convert command).
@pytest.fixture(scope="module")
def hf_vit_dir(tmp_path_factory) -> str:
  """A tiny Hugging Face ViTForImageClassification folder (3 classes, 32 x 32 images)."""
  import torch
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
