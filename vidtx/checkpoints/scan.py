"""Per-layer <-> scanned parameter layouts (model.scan_layers), as pure pytree functions.

A model built with model.scan_layers=False names its blocks `encoderblock_0` ..
`encoderblock_{L-1}`; with True, each stack is one `encoderblocks` whose leaves carry a leading
layer axis of length L (vidtx.models.encoder.stack_blocks). E.g.
encoder/encoderblock_{i}/attention/query/kernel (D, H, Dh) <->
encoder/encoderblocks/attention/query/kernel (L, D, H, Dh).

    scanned = stack_layers(params)         # checkpoint of an unscanned model -> scanned model
    params = unstack_layers(scanned)       # and back; unstack_layers(stack_layers(p)) == p

Both work at any depth (ViViT Model 2 has spatial_encoder/ and temporal_encoder/ stacks), on
nested dicts (or FrozenDicts) of numpy or jax arrays; they return plain dicts, numpy stays numpy.
A tree without blocks of the other layout comes back unchanged.
"""

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vidtx.errors import UserError

BLOCK_RE = re.compile(r"^encoderblock_(\d+)$")
STACKED = "encoderblocks"


def _stack(leaves: tuple[Any, ...]) -> Any:
  if all(isinstance(leaf, np.ndarray | np.generic) for leaf in leaves):
    return np.stack(leaves)
  return jnp.stack(leaves)


def stack_layers(params: Mapping[str, Any]) -> dict[str, Any]:
  """Every group of sibling `encoderblock_{i}` (i = 0..N-1) -> `encoderblocks`, leaves stacked
  on a new axis 0 (layer i at index i).

  Raises ValueError when a group's indices are not 0..N-1, when its blocks differ in structure or
  shapes, or when `encoderblocks` already sits beside them.
  """
  return _stack_tree(params, "")


def unstack_layers(params: Mapping[str, Any]) -> dict[str, Any]:
  """Every `encoderblocks` -> `encoderblock_0` .. `encoderblock_{L-1}`, L the leading axis of its
  leaves; the inverse of stack_layers. Leaves may sit in tuples (sown intermediates).

  Raises ValueError when the leaves of an `encoderblocks` disagree on L, or when per-layer
  blocks already sit beside it.
  """
  return _unstack_tree(params, "")


def _stack_tree(params: Mapping[str, Any], path: str) -> dict[str, Any]:
  out: dict[str, Any] = {}
  blocks: dict[int, Any] = {}
  for key, value in params.items():
    match = BLOCK_RE.match(key) if isinstance(key, str) else None
    child = _stack_tree(value, f"{path}{key}/") if isinstance(value, Mapping) else value
    if match:
      blocks[int(match.group(1))] = child
    else:
      out[key] = child
  if not blocks:
    return out
  where = path.rstrip("/") or "the top level"
  if sorted(blocks) != list(range(len(blocks))):
    raise UserError(
      f"stack_layers: the blocks at {where} are encoderblock_{sorted(blocks)}; expected "
      f"contiguous indices 0..{len(blocks) - 1} to stack them into {STACKED}."
    )
  if STACKED in out:
    raise UserError(
      f"stack_layers: {where} has both encoderblock_{{i}} and {STACKED}; expected one layout."
    )
  layers = [blocks[i] for i in range(len(blocks))]
  first = jax.tree.map(np.shape, layers[0])
  for i, layer in enumerate(layers[1:], start=1):
    if jax.tree.map(np.shape, layer) != first:
      raise UserError(
        f"stack_layers: {path}encoderblock_{i} differs from encoderblock_0 in its parameter "
        "names or shapes; only identical blocks can be stacked."
      )
  out[STACKED] = jax.tree.map(lambda *leaves: _stack(leaves), *layers)
  return out


def _unstack_tree(params: Mapping[str, Any], path: str) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for key, value in params.items():
    out[key] = _unstack_tree(value, f"{path}{key}/") if isinstance(value, Mapping) else value
  if STACKED not in out:
    return out
  stacked = out.pop(STACKED)
  where = path.rstrip("/") or "the top level"
  if any(isinstance(key, str) and BLOCK_RE.match(key) for key in out):
    raise UserError(
      f"unstack_layers: {where} has both {STACKED} and encoderblock_{{i}}; expected one layout."
    )
  lengths = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(stacked)}
  if len(lengths) != 1 or None in lengths:
    found = sorted(map(str, lengths))
    raise UserError(
      f"unstack_layers: the leaves of {path}{STACKED} have leading axes {found}; expected one "
      "layer axis shared by all of them."
    )
  (num_layers,) = lengths
  for i in range(num_layers):
    out[f"encoderblock_{i}"] = jax.tree.map(lambda leaf, i=i: leaf[i], stacked)
  return out
