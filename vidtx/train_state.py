"""Training state: creation sharded on the mesh, and orbax checkpoints that resume it."""

import os
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from vidtx import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of optimizer updates applied so far.
  params: Any
  opt_state: Any


def _init_fn(model: nn.Module, tx: optax.GradientTransformation,
             input_shape: tuple[int, ...]) -> Callable[[jax.Array], TrainState]:
  def init(rng: jax.Array) -> TrainState:
    dummy = jnp.zeros(input_shape, jnp.float32)
    params = model.init({"params": rng, "dropout": rng}, dummy, train=False)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return init


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation,
                         input_shape: tuple[int, ...], mesh: Mesh) -> TrainState:
  """Shapes, dtypes and shardings of the state, without memory: what checkpoints restore into."""
  shapes = jax.eval_shape(_init_fn(model, tx, input_shape), jax.random.key(0))
  # Everything replicated for now; model-parallel rules replace this tree, not the code around it.
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding.replicated(mesh)),
      shapes)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       input_shape: tuple[int, ...], mesh: Mesh,
                       rng: jax.Array) -> tuple[TrainState, TrainState]:
  """Initialises the state directly in its sharding; returns (state, abstract state)."""
  abstract = abstract_train_state(model, tx, input_shape, mesh)
  shardings = jax.tree.map(lambda s: s.sharding, abstract)
  state = jax.jit(_init_fn(model, tx, input_shape), out_shardings=shardings)(rng)
  return state, abstract


def replace_params(state: TrainState, params: Any, tx: optax.GradientTransformation,
                   abstract_state: TrainState) -> TrainState:
  """`state` with new (host) params placed in their shardings and a fresh optimizer state."""
  param_shardings = jax.tree.map(lambda s: s.sharding, abstract_state.params)
  params = jax.device_put(params, param_shardings)
  opt_shardings = jax.tree.map(lambda s: s.sharding, abstract_state.opt_state)
  opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
  return state.replace(params=params, opt_state=opt_state)


def checkpoint_manager(workdir: str, *, max_to_keep: int = 3,
                       read_only: bool = False) -> ocp.CheckpointManager:
  """Checkpoints under WORKDIR/checkpoints/<step>; orbax writes each to a temporary directory
  and renames it when complete, so an interrupted save never looks like a checkpoint."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                         read_only=read_only)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


def restore_latest(manager: ocp.CheckpointManager,
                   abstract_state: TrainState) -> TrainState | None:
  """The newest checkpoint restored into `abstract_state`'s shapes and shardings, or None."""
  step = manager.latest_step()
  if step is None:
    return None
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
  except (ValueError, KeyError) as e:
    raise ValueError(
        f"Checkpoint {manager.directory}/{step} does not match the model built from the config "
        f"(a different model or optimizer?): {e}") from e
