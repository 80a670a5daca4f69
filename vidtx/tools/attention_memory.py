r"""The memory of a config's gradient program with each attention kernel, compiled for this host.

  python -m vidtx.tools.attention_memory --config=configs/k400_vivit_st.py
  python -m vidtx.tools.attention_memory --config=configs/k400_timesformer.py:attention=joint \
      --implementations=xla,splash --batch=2

Prints one JSON line per model.attention_implementation: {"config", "implementation",
"input_shape", "dtype", "temp_gib", "argument_gib", "output_gib", "largest"}. The program is the
gradient of the softmax cross-entropy with respect to the parameters on `batch` clips
(train=True, the recipe's dtype, remat and dropout), traced with abstract inputs, compiled and
never run. temp_gib is what `compiled.memory_analysis()` says the program needs beyond its
arguments and outputs (activations kept for the backward pass and scratch); largest lists the
three largest array shapes in the compiled program's text, in GiB.

On a CPU, 'splash' runs the Pallas kernel in interpret mode: the kernel becomes XLA loops over
its 128 x 128 tiles, so the figures are a proxy for a TPU's: they show which tensors the kernel
removes (the (heads, L, L) logits and probabilities), not the TPU's own buffer assignment or
speed.
"""

import json
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import app, flags, logging
from ml_collections import config_flags

from vidtx import cli, models
from vidtx.errors import UserError
from vidtx.models import kernels

GIB = 2**30
# An array type in HLO text: element type and dimensions, e.g. f32[1,12,3137,3137].
_ARRAY = re.compile(r"\b(pred|[su](?:8|16|32|64)|bf16|f(?:16|32|64))\[([\d,]*)\]")
_BYTES = dict(pred=1, s8=1, u8=1, s16=2, u16=2, bf16=2, f16=2, s32=4, u32=4, f32=4)


def largest_arrays(hlo_text: str, count: int = 3) -> list[tuple[str, float]]:
  """The `count` largest distinct array types in HLO text, as (type, GiB), largest first."""
  sizes = {}
  for element, dims in _ARRAY.findall(hlo_text):
    size = _BYTES.get(element, 8)
    for dim in filter(None, dims.split(",")):
      size *= int(dim)
    sizes[f"{element}[{dims}]"] = size / GIB
  return sorted(sizes.items(), key=lambda item: -item[1])[:count]


def gradient_memory(
  config: ml_collections.ConfigDict, implementation: str, batch: int = 1
) -> dict[str, Any]:
  """memory_analysis() and the largest arrays of the config's gradient program with
  model.attention_implementation=implementation, compiled for the default backend."""
  kernels.check_attention_implementation(implementation)
  data = config.dataset_configs
  input_shape = (batch, data.num_frames, data.crop_size, data.crop_size, 3)
  model_config = dict(config.model.to_dict(), attention_implementation=implementation)
  model = models.build(config.model_name, model_config, data.num_classes)
  video = jax.ShapeDtypeStruct(input_shape, jnp.float32)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32)

  def init(key, video):
    return model.init({"params": key, "dropout": key}, video, train=False)["params"]

  params = jax.eval_shape(init, jax.random.key(0), video)

  def loss(params, video, labels):
    rngs = {"dropout": jax.random.key(1)}
    logits, _ = model.apply({"params": params}, video, train=True, rngs=rngs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  compiled = jax.jit(jax.grad(loss)).lower(params, video, labels).compile()
  stats = compiled.memory_analysis()
  return {
    "implementation": implementation,
    "input_shape": list(input_shape),
    "dtype": config.model.get("dtype", "float32"),
    "temp_gib": round(stats.temp_size_in_bytes / GIB, 3),
    "argument_gib": round(stats.argument_size_in_bytes / GIB, 3),
    "output_gib": round(stats.output_size_in_bytes / GIB, 3),
    "largest": [[name, round(gib, 3)] for name, gib in largest_arrays(compiled.as_text())],
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}.")
  logging.set_verbosity(logging.WARNING)
  batch = flags.FLAGS.batch
  if batch < 1:
    raise UserError(f"--batch={batch}: expected a positive number of clips.")
  name = config_flags.get_config_filename(flags.FLAGS["config"])
  for implementation in flags.FLAGS.implementations:
    record = gradient_memory(flags.FLAGS.config, implementation, batch)
    print(json.dumps(dict(config=name, **record)), flush=True)


if __name__ == "__main__":
  # Flags are defined here, not at import, as in train.py: importing this module defines none.
  cli.define_config_flag()
  flags.DEFINE_list(
    "implementations", ["xla", "splash"], "model.attention_implementation values to compile."
  )
  flags.DEFINE_integer("batch", 1, "Clips per program.")
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=cli.flags_parser(__doc__))
