"""vidtx.checkpoints.scan: layers stacked for nn.scan and unstacked, at any depth, and what is
wrong said."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from shared import assert_trees_equal as _assert_trees_equal

from vidtx.checkpoints import scan


def _block(value: float) -> dict:
  return {"mlp": {"kernel": np.full((2, 3), value, np.float32)}, "norm": {"scale": np.ones(1)}}


def test_stack_and_unstack_at_any_depth_keep_numpy():
  tree = {
    "spatial_encoder": {f"encoderblock_{i}": _block(i) for i in range(3)},
    "temporal_encoder": {"encoderblock_0": _block(7), "encoder_norm": {"scale": np.ones(2)}},
    "head": {"kernel": np.zeros(2)},
  }
  stacked = scan.stack_layers(tree)
  kernel = stacked["spatial_encoder"]["encoderblocks"]["mlp"]["kernel"]
  assert isinstance(kernel, np.ndarray) and kernel.shape == (3, 2, 3)
  np.testing.assert_array_equal(kernel[:, 0, 0], [0, 1, 2])  # Layer i at index i.
  assert stacked["temporal_encoder"]["encoderblocks"]["mlp"]["kernel"].shape == (1, 2, 3)
  assert sorted(stacked["temporal_encoder"]) == ["encoder_norm", "encoderblocks"]
  _assert_trees_equal(stacked["head"], tree["head"])
  _assert_trees_equal(scan.unstack_layers(stacked), tree)
  # jax arrays stay jax arrays; a tree without blocks comes back unchanged.
  jax_tree = jax.tree.map(jnp.asarray, tree)
  assert isinstance(
    scan.stack_layers(jax_tree)["spatial_encoder"]["encoderblocks"]["mlp"]["kernel"], jax.Array
  )
  _assert_trees_equal(scan.stack_layers(tree["head"]), tree["head"])


def test_stack_and_unstack_say_what_is_wrong():
  ones = {"kernel": np.ones(2)}
  with pytest.raises(ValueError, match=r"encoder.*\[0, 2\].*contiguous"):
    scan.stack_layers({"encoder": {"encoderblock_0": ones, "encoderblock_2": ones}})
  with pytest.raises(ValueError, match="encoderblock_1 differs"):
    scan.stack_layers({"encoderblock_0": ones, "encoderblock_1": {"kernel": np.ones(3)}})
  with pytest.raises(ValueError, match="both"):
    scan.stack_layers({"encoderblock_0": ones, "encoderblocks": ones})
  with pytest.raises(ValueError, match="leading axes"):
    scan.unstack_layers({"encoderblocks": {"a": np.ones((2, 1)), "b": np.ones((3, 1))}})
