"""Counts the collectives in the compiled training step on a device mesh.

    JAX_NUM_CPU_DEVICES=8 python -m vidtx.tools.collectives

compiles (lowers and compiles, runs nothing) vidtx's training step
(vidtx.train_state.make_train_step, AdamW) of ViViT factorised encoder and TimeSformer divided
at a small but not trivial size (`SHAPES`: hidden 256, 4 heads, MLP 1024, 2 layers, 8 frames of
32x32 in 8x8 patches, ViViT with tubelets of 2 frames, a global batch of 16) on each mesh of
`MESHES` over 8 devices, and prints one row per (model, mesh): the collectives in the compiled
program's text. All-gathers are split by what they gather: a parameter (a weight all-gather,
expected under FSDP: its output has a parameter's shape, or a shard of it), or an activation,
and among those the ones over the batch axis (dimension 0, a multiple of the batch). A step
whose activations are pinned by the logical axis rules (vidtx.sharding) has no all-to-all and no
all-gather of activations over the batch.
"""

import argparse
import math
import re
import sys
from typing import Any

import jax
import jax.numpy as jnp
import optax

from vidtx import models, sharding
from vidtx import train_state as state_lib

# The meshes over 8 devices: (data, fsdp, model) sizes as config.mesh takes them.
MESHES: dict[str, dict[str, int]] = {
  "data": dict(data=8, fsdp=1, model=1),
  "fsdp": dict(data=1, fsdp=8, model=1),
  "fsdp x model": dict(data=1, fsdp=4, model=2),
  "data x fsdp x model": dict(data=2, fsdp=2, model=2),
}
SHAPES = dict(batch=16, frames=8, size=32)
_SIZES = dict(hidden_size=256, num_heads=4, mlp_dim=1024, num_layers=2)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
  "vivit factorised_encoder": (
    "vivit",
    dict(
      _SIZES,
      variant="Ti/8x2",
      attention="factorised_encoder",
      spatial_layers=2,
      temporal_layers=2,
    ),
  ),
  "timesformer divided": ("timesformer", dict(_SIZES, variant="Ti/8", attention="divided")),
}
NUM_CLASSES = 10
COLUMNS = (
  "all-to-all",
  "activation all-gather (batch)",
  "activation all-gather (other)",
  "weight all-gather",
  "all-reduce",
  "reduce-scatter",
)

# One HLO instruction: `%name = <shape or (shapes)> <op>(operands), attributes`.
_INSTRUCTION = re.compile(
  r"=\s*(?P<shapes>\(.*?\)|\S+)\s+(?P<op>all-gather|all-to-all|all-reduce|reduce-scatter)"
  r"(?:-start)?\((?P<rest>.*)$"
)
_SHAPE = re.compile(r"[a-z]+[0-9]*\[([0-9,]*)\]")
_DIMENSIONS = re.compile(r"dimensions=\{([0-9,]+)\}")


def _shapes(text: str) -> list[tuple[int, ...]]:
  return [tuple(int(d) for d in dims.split(",") if d) for dims in _SHAPE.findall(text)]


def _is_parameter_shaped(shape: tuple[int, ...], parameter_shapes: set[tuple[int, ...]]) -> bool:
  """A parameter's shape, or a shard of it (every dimension divides the parameter's)."""
  return any(
    len(p) == len(shape) and all(d and full % d == 0 for d, full in zip(shape, p, strict=True))
    for p in parameter_shapes
  )


def count_collectives(
  hlo_text: str, parameter_shapes: set[tuple[int, ...]], batch_size: int
) -> tuple[dict[str, int], list[str]]:
  """The COLUMNS counts of a compiled program's text, and one line per activation all-gather.

  A combined collective (a tuple of operands) counts once per operand."""
  counts = dict.fromkeys(COLUMNS, 0)
  activations = []
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.search(line)
    if not match:
      continue
    op, shapes = match["op"], _shapes(match["shapes"])
    if op != "all-gather":
      counts[op] += len(shapes)
      continue
    dims = _DIMENSIONS.search(match["rest"])
    dimension = int(dims[1].split(",")[0]) if dims else -1
    for shape in shapes:
      if _is_parameter_shaped(shape, parameter_shapes):
        counts["weight all-gather"] += 1
      elif dimension == 0 and shape and shape[0] % batch_size == 0:
        counts["activation all-gather (batch)"] += 1
        activations.append(f"batch: {shape} gathered on dimension {dimension}")
      else:
        counts["activation all-gather (other)"] += 1
        activations.append(f"other: {shape} gathered on dimension {dimension}")
  return counts, activations


def compiled_train_step_text(
  model_name: str,
  model_config: dict[str, Any],
  mesh_config: dict[str, Any],
  devices: list[Any] | None = None,
) -> tuple[str, set[tuple[int, ...]]]:
  """The compiled training step's text on the mesh of `mesh_config`, and the parameter shapes
  (whole, and per layer where layers are scanned) that mark weight all-gathers."""
  mesh = sharding.make_mesh(mesh_config, devices)
  model = models.build(model_name, model_config, NUM_CLASSES)
  tx = optax.adamw(1e-3)
  batch, frames, size = SHAPES["batch"], SHAPES["frames"], SHAPES["size"]
  input_shape = (batch, frames, size, size, 3)
  abstract = state_lib.abstract_train_state(model, tx, (1,) + input_shape[1:], mesh)
  step = state_lib.make_train_step(
    model, tx, optax.constant_schedule(1e-3), abstract, mesh, num_classes=NUM_CLASSES
  )
  data = sharding.data_sharding(mesh)
  abstract_batch = {
    "inputs": jax.ShapeDtypeStruct(input_shape, jnp.float32, sharding=data),
    "label": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=data),
  }
  text = step.lower(abstract, abstract_batch).compile().as_text()
  parameter_shapes = set()
  for leaf in jax.tree.leaves(abstract.params):
    parameter_shapes.add(tuple(leaf.shape))
    parameter_shapes.add(tuple(leaf.shape[1:]))  # One layer of a scanned stack.
  return text, {s for s in parameter_shapes if math.prod(s) > 1}


def table(model_names: list[str], mesh_names: list[str], verbose: bool = False) -> str:
  """A Markdown table of COLUMNS per (model, mesh)."""
  rows = [
    "| model | mesh (data, fsdp, model) | " + " | ".join(COLUMNS) + " |",
    "|---|---|" + "---:|" * len(COLUMNS),
  ]
  for model_key in model_names:
    model_name, model_config = MODELS[model_key]
    for mesh_key in mesh_names:
      mesh_config = MESHES[mesh_key]
      text, parameter_shapes = compiled_train_step_text(model_name, model_config, mesh_config)
      counts, activations = count_collectives(text, parameter_shapes, SHAPES["batch"])
      sizes = ", ".join(str(mesh_config[a]) for a in sharding.MESH_AXES)
      rows.append(
        f"| {model_key} | {mesh_key} ({sizes}) | "
        + " | ".join(str(counts[c]) for c in COLUMNS)
        + " |"
      )
      if verbose:
        rows.extend(f"<!-- {line} -->" for line in activations)
      print(rows[-1], file=sys.stderr, flush=True)
  return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
  parser.add_argument("--meshes", nargs="*", default=list(MESHES), choices=list(MESHES))
  parser.add_argument("--verbose", action="store_true", help="list each activation all-gather")
  args = parser.parse_args(argv)
  if jax.device_count() != 8:
    raise SystemExit(
      f"vidtx.tools.collectives: the meshes need 8 devices, found {jax.device_count()}; "
      "on a CPU run it with JAX_NUM_CPU_DEVICES=8."
    )
  print(table(args.models, args.meshes, args.verbose))


if __name__ == "__main__":
  main()
