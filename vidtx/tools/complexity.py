r"""Parameters and multiply-adds of a config's model, counted without allocating anything.

  python -m vidtx.tools.complexity --config=configs/synthetic_timesformer.py
  python -m vidtx.tools.complexity --config=configs/synthetic_timesformer.py:attention=space \
      --config.model.num_layers=2

Prints one JSON line: {"config", "model", "variant", "attention", "input_shape", "params",
"macs_per_view", "gmacs_per_view", "views", "gmacs_per_video", "breakdown"}. A view is one clip
(1, num_frames, crop_size, crop_size, 3); a video is evaluated on num_test_clips x (3 if
do_three_spatial_crops else 1) views.

How multiply-adds are counted. The ViViT, TimeSformer and X-ViT papers report multiply-adds
(MACs) and call them "FLOPs", counted as fvcore counts them: every matrix product and
convolution costs its multiply-adds; element-wise ops, softmax, LayerNorm, GELU and reductions
are free. Here the model's forward pass on one view is traced with abstract inputs (parameter
shapes come from jax.eval_shape, so even ViT-H costs no memory) and lowered to StableHLO for CPU
(lowered, never compiled or run; CPU so that no backend swaps an attention for a fused kernel).
Then every op of the lowered program is read, so every model, present or future, is counted the
same way with no per-model formula:
- dot_general: output elements x contracted size (= batch x free dims x contracted dims);
- convolution: output elements x kernel window size x kernel input channels (the input channels
  divided by the feature groups);
- a function call counts its callee once per call; a loop counts its body once per iteration
  (the trip count is read from the loop's counter); the branches of a conditional must cost the
  same (otherwise a ValueError: there is no single answer); an unknown custom call is an error
  rather than a silent zero.

Breakdown (GMACs; the categories add up to gmacs_per_view). A product with a parameter operand
(followed through casts, reshapes, transposes, slices and calls) is attributed by that
parameter's path, outermost module first: a module name containing 'embed' -> 'embedding'; a
module named 'head' (or 'head_*', '*_head', 'output_projection') -> 'head'; a module name
containing 'mlp' -> 'mlp'; any other weight -> 'projections' (attention query/key/value/out and
any other linear layer, e.g. TimeSformer's temporal_fc). A product of two activations is token
mixing -> 'attention' (attention scores and weighted values); a convolution of two activations
-> 'other'.
"""

import collections
import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags, logging
from jax.extend.mlir import ir
from jax.extend.mlir.dialects import stablehlo
from ml_collections import config_flags

from vidtx import cli, models
from vidtx.errors import UserError

# Ops whose result holds the same parameter as their first operand (in another dtype, shape or
# layout, or a slice of it: a scanned layer's kernel is sliced out of the stacked kernels).
_PASS_THROUGH = frozenset(
  {
    "stablehlo.convert",
    "stablehlo.bitcast_convert",
    "stablehlo.reduce_precision",
    "stablehlo.reshape",
    "stablehlo.transpose",
    "stablehlo.broadcast_in_dim",
    "stablehlo.slice",
    "stablehlo.dynamic_slice",
  }
)
# Custom calls that only annotate placement or sharding: no arithmetic.
_FREE_CUSTOM_CALLS = frozenset(
  {
    "Sharding",
    "SPMDFullToShardShape",
    "SPMDShardToFullShape",
    "annotate_device_placement",
  }
)
_CALLS = ("func.call", "stablehlo.composite")
# Breakdown categories, in the order they are reported.
CATEGORIES = ("embedding", "projections", "attention", "mlp", "head", "other")


@dataclasses.dataclass(frozen=True)
class MacCount:
  """Multiply-adds of one call: the total and its split over CATEGORIES (only non-zero ones)."""

  total: int
  breakdown: dict[str, int]


def count_macs(fn: Callable[..., Any], params: Any, *inputs: Any) -> MacCount:
  """Multiply-adds of `fn(params, *inputs)`, counted on its lowered StableHLO.

  params, inputs: pytrees of arrays or jax.ShapeDtypeStruct (nothing is allocated). The leaves
  of `params` are parameters: products with one are attributed by its path (see module doc);
  the leaves of `inputs` are activations.
  """
  # keep_unused: one program argument per leaf, so argument i is leaf i of (params, *inputs).
  lowered = jax.jit(fn, keep_unused=True).trace(params, *inputs).lower(lowering_platforms=("cpu",))
  param_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  sources = [jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in param_leaves]
  sources += [None] * len(jax.tree.leaves(inputs))
  return count_module_macs(lowered.compiler_ir("stablehlo"), sources)


def count_module_macs(module: ir.Module, sources: Sequence[str | None]) -> MacCount:
  """Multiply-adds of the 'main' function of a StableHLO module.

  sources: per argument of 'main', the path of the parameter it holds, or None (activation).
  """
  with module.context:
    walker = _Walker(module)
    num_args = len(walker.entry_block("main").arguments)
    if num_args != len(sources):
      raise UserError(f"count_macs: the program has {num_args} arguments, {len(sources)} given.")
    counts = walker.count_function("main", tuple(sources))
  breakdown = {k: counts[k] for k in CATEGORIES if counts[k]}
  return MacCount(total=sum(breakdown.values()), breakdown=breakdown)


def _category_of_parameter(path: str) -> str:
  """The breakdown category of a product with the parameter at `path` (see module doc)."""
  for part in path.split("/")[:-1]:  # Module names, outermost first; the leaf name is skipped.
    name = part.lower()
    if "embed" in name:
      return "embedding"
    if name in ("head", "output_projection") or name.startswith("head_") or name.endswith("_head"):
      return "head"
    if "mlp" in name:
      return "mlp"
  return "projections"


def _shape(value: ir.Value) -> list[int]:
  tensor = ir.RankedTensorType(value.type)
  if not tensor.has_static_shape:
    raise UserError(f"count_macs: cannot count an op on the dynamic shape {tensor}.")
  return list(tensor.shape)


def _owner(value: ir.Value) -> ir.Operation:
  return value.owner.operation


def _constant_int(value: ir.Value) -> int | None:
  """The integer of a scalar stablehlo.constant, or None."""
  if not isinstance(value, ir.OpResult) or _owner(value).name != "stablehlo.constant":
    return None
  attr = _owner(value).attributes["value"]
  if not isinstance(attr, ir.DenseIntElementsAttr):
    return None
  return int(attr[0]) if len(attr) == 1 else None


class _Walker:
  """Counts multiply-adds over the functions of a StableHLO module."""

  def __init__(self, module: ir.Module):
    self._funcs = {}
    for op in module.body.operations:
      if op.operation.name == "func.func":
        self._funcs[ir.StringAttr(op.attributes["sym_name"]).value] = op
    self._memo = {}
    # (block, parameter path or None per block argument) of the blocks being walked.
    self._frames = []

  def entry_block(self, name: str) -> ir.Block:
    return self._funcs[name].regions[0].blocks[0]

  def count_function(self, name: str, sources: tuple[str | None, ...]) -> collections.Counter:
    # Functions are isolated from their callers: the count depends only on the arguments.
    key = (name, sources)
    if key not in self._memo:
      self._memo[key] = self._count_block(self.entry_block(name), sources)
    return self._memo[key]

  def _count_block(self, block: ir.Block, sources: Sequence[str | None]) -> collections.Counter:
    self._frames.append((block, sources))
    try:
      total = collections.Counter()
      for op in block.operations:
        total.update(self._count_op(op.operation))
      return total
    finally:
      self._frames.pop()

  def _count_op(self, op: ir.Operation) -> collections.Counter:
    name = op.name
    if name == "stablehlo.dot_general":
      numbers = stablehlo.DotDimensionNumbers(op.attributes["dot_dimension_numbers"])
      lhs = _shape(op.operands[0])
      contracted = math.prod(lhs[d] for d in numbers.lhs_contracting_dimensions)
      macs = math.prod(_shape(op.results[0])) * contracted
      return collections.Counter({self._category(op, "attention"): macs})
    if name == "stablehlo.convolution":
      numbers = stablehlo.ConvDimensionNumbers(op.attributes["dimension_numbers"])
      kernel = _shape(op.operands[1])
      # The kernel's input-feature size is already the input channels / feature groups.
      per_output = kernel[numbers.kernel_input_feature_dimension] * math.prod(
        kernel[d] for d in numbers.kernel_spatial_dimensions
      )
      macs = math.prod(_shape(op.results[0])) * per_output
      return collections.Counter({self._category(op, "other"): macs})
    if name in _CALLS:
      return self.count_function(self._callee(op), self._sources(op.operands))
    if name == "stablehlo.while":
      body = self._count_block(op.regions[1].blocks[0], self._sources(op.operands))
      if not body:
        return body
      trips = self._trip_count(op)
      return collections.Counter({k: v * trips for k, v in body.items()})
    if name in ("stablehlo.case", "stablehlo.if"):
      branches = [self._count_block(region.blocks[0], ()) for region in op.regions]
      if any(branch != branches[0] for branch in branches):
        raise UserError(
          f"count_macs: the branches of a {name} cost different multiply-adds "
          f"({[dict(b) for b in branches]}); the cost depends on run-time data."
        )
      return branches[0]
    if name == "stablehlo.custom_call":
      target = ir.StringAttr(op.attributes["call_target_name"]).value
      if target not in _FREE_CUSTOM_CALLS:
        raise UserError(
          f"count_macs: custom call {target!r} has unknown cost; the count would be wrong."
        )
    # Every other op is element-wise, a reduction or data movement; the regions some of them
    # hold (reduce, sort, scatter bodies) are scalar code. A region with matrix products (e.g. a
    # manual sharding computation) has no known repetition count: refuse rather than guess.
    for region in op.regions:
      for block in region.blocks:
        if self._count_block(block, ()):
          raise UserError(f"count_macs: matrix products inside a {name} region; cannot count.")
    return collections.Counter()

  def _callee(self, op: ir.Operation) -> str:
    attr = "callee" if op.name == "func.call" else "decomposition"
    return ir.FlatSymbolRefAttr(op.attributes[attr]).value

  def _category(self, op: ir.Operation, default: str) -> str:
    for source in self._sources(op.operands):
      if source is not None:
        return _category_of_parameter(source)
    return default

  def _sources(self, values: Sequence[ir.Value]) -> tuple[str | None, ...]:
    return tuple(self._source(value) for value in values)

  def _source(self, value: ir.Value) -> str | None:
    """The path of the parameter `value` holds (possibly cast, reshaped, sliced), or None."""
    if isinstance(value, ir.BlockArgument):
      for block, sources in reversed(self._frames):
        if block == value.owner:
          return sources[value.arg_number] if value.arg_number < len(sources) else None
      return None
    op = _owner(value)
    if op.name in _PASS_THROUGH:
      return self._source(op.operands[0])
    if op.name == "stablehlo.optimization_barrier":  # Rematerialisation: operand i -> result i.
      return self._source(op.operands[value.result_number])
    if op.name in _CALLS:
      # Follow the callee's returned value back to its arguments.
      block = self.entry_block(self._callee(op))
      returned = list(block.operations)[-1].operation.operands[value.result_number]
      self._frames.append((block, self._sources(op.operands)))
      try:
        return self._source(returned)
      finally:
        self._frames.pop()
    return None

  def _trip_count(self, op: ir.Operation) -> int:
    """Iterations of a while loop with a counter: start; while counter < limit; counter += step.

    This is how jax lowers lax.scan, lax.fori_loop with static bounds and Flax's nn.scan.
    """
    cond = list(op.regions[0].blocks[0].operations)
    body = list(op.regions[1].blocks[0].operations)
    compare = cond[-1].operation.operands[0]
    if isinstance(compare, ir.OpResult) and _owner(compare).name == "stablehlo.compare":
      compare_op = _owner(compare)
      direction = stablehlo.ComparisonDirectionAttr(
        compare_op.attributes["comparison_direction"]
      ).value
      counter, limit = compare_op.operands[0], _constant_int(compare_op.operands[1])
      if direction == "LT" and isinstance(counter, ir.BlockArgument) and limit is not None:
        index = counter.arg_number
        start = _constant_int(op.operands[index])
        step = self._counter_step(body[-1].operation.operands[index], index)
        if start is not None and step is not None and step > 0:
          return max(0, -(-(limit - start) // step))
    raise UserError(
      "count_macs: a loop contains matrix products but its trip count is not a constant "
      "(expected a counter from a constant, compared LT with a constant, incremented by a "
      "constant)."
    )

  def _counter_step(self, updated: ir.Value, index: int) -> int | None:
    """The constant step of `updated` = body argument `index` + constant, or None."""
    if not isinstance(updated, ir.OpResult) or _owner(updated).name != "stablehlo.add":
      return None
    lhs, rhs = _owner(updated).operands
    for arg, const in ((lhs, rhs), (rhs, lhs)):
      if isinstance(arg, ir.BlockArgument) and arg.arg_number == index:
        return _constant_int(const)
    return None


# ----------------------------------------------------------------------------------------
# Models and configs.
# ----------------------------------------------------------------------------------------


def abstract_params(model: Any, input_shape: Sequence[int]) -> Any:
  """The model's parameters as jax.ShapeDtypeStructs (jax.eval_shape: nothing allocated)."""
  video = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)

  def init(key, video):
    return model.init({"params": key, "dropout": key}, video, train=False)["params"]

  return jax.eval_shape(init, jax.random.key(0), video)


def model_complexity(
  model_name: str,
  model_config: ml_collections.ConfigDict | Mapping[str, Any],
  num_classes: int,
  input_shape: Sequence[int],
) -> dict[str, Any]:
  """{'params': int, 'macs': int, 'breakdown': {category: MACs}} of one forward pass on a
  (B, T, H, W, C) input (evaluation mode), without allocating parameters or activations.

  Counted on the model as specified: a TimeSformer's folded projections (model.fold_projections,
  a speed option computing the same function) are unfolded for the count, and the attention runs
  on XLA (a fused kernel, picked by 'auto' on a GPU or TPU host, would not lower for CPU).
  """
  if isinstance(model_config, ml_collections.ConfigDict):
    model_config = model_config.to_dict()
  model_config = dict(model_config, attention_implementation="xla")
  if model_name == "timesformer":
    model_config = dict(model_config, fold_projections=False)
  model = models.build(model_name, model_config, num_classes)
  params = abstract_params(model, input_shape)

  def forward(params, video):
    # All outputs are returned so that nothing the forward pass computes is left out.
    return model.apply({"params": params}, video, train=False)

  count = count_macs(forward, params, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  return {"params": num_params, "macs": count.total, "breakdown": count.breakdown}


def config_complexity(config: ml_collections.ConfigDict, name: str = "") -> dict[str, Any]:
  """The JSON record of a training config (model_name, model, dataset_configs)."""
  data = config.dataset_configs
  input_shape = (1, data.num_frames, data.crop_size, data.crop_size, 3)
  result = model_complexity(config.model_name, config.model, data.num_classes, input_shape)
  views = data.get("num_test_clips", 1) * (3 if data.get("do_three_spatial_crops", False) else 1)
  gmacs = result["macs"] / 1e9
  return {
    "config": name,
    "model": config.model_name,
    "variant": config.model.get("variant"),
    "attention": config.model.get("attention"),
    "input_shape": list(input_shape),
    "params": result["params"],
    "macs_per_view": result["macs"],
    "gmacs_per_view": gmacs,
    "views": views,
    "gmacs_per_video": gmacs * views,
    "breakdown": {k: v / 1e9 for k, v in result["breakdown"].items()},
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}.")
  # jax logs its backend search at INFO; the JSON line is the output.
  logging.set_verbosity(logging.WARNING)
  name = config_flags.get_config_filename(flags.FLAGS["config"])
  print(json.dumps(config_complexity(flags.FLAGS.config, name)), flush=True)


if __name__ == "__main__":
  # Flags are defined here, not at import, as in train.py: importing this module defines none.
  cli.define_config_flag()
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=cli.flags_parser(__doc__))
