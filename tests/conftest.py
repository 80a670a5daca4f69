"""Shared by every test module: XLA's persistent compilation cache.

Many tests compile the same programs (the shrunk recipes of one family, tiny train.py runs in
subprocesses); with the cache, each distinct program is compiled once per machine. The cache
is keyed by the program and the compiler, so a hit gives the same executable.
"""

import os
import tempfile

import jax

CACHE_DIR = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"vidtx-tests-xla-cache-{os.getuid()}"))
# Subprocesses started by tests inherit these through the environment.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
