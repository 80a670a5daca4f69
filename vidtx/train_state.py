"""Training state: creation sharded on the mesh, and orbax checkpoints that resume it."""

import os
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from vidtx import models, optim, sharding


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


def abstract_state_from_config(config: ml_collections.ConfigDict,
                               dataset_configs: ml_collections.ConfigDict,
                               mesh: Mesh) -> tuple[nn.Module, TrainState]:
  """The model of `config` and the abstract state of train.py's checkpoints for it.

  Built from config fields only (model, optimizer, schedule; dataset_configs.num_classes,
  num_frames, crop_size and examples_per_subset['train']), so a run's checkpoints restore as
  they are without reading any data (eval.py, vidtx.checkpoints.run).
  """
  model = models.build(config.model_name, config.model, dataset_configs.num_classes)
  # The schedule's length does not change the state's structure; at least 1 so it builds.
  total_steps = max(optim.resolve_steps(config, "num_training",
                                        dataset_configs.examples_per_subset["train"],
                                        config.batch_size), 1)
  tx = optim.make_optimizer(config, optim.make_schedule(config.lr_configs, total_steps))
  input_shape = (1, dataset_configs.num_frames, dataset_configs.crop_size,
                 dataset_configs.crop_size, 3)
  return model, abstract_train_state(model, tx, input_shape, mesh)


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
  # Read-only: no saving and no pruning (orbax warns when it has to switch these off itself).
  options = ocp.CheckpointManagerOptions(
      max_to_keep=None if read_only else max_to_keep, create=not read_only, read_only=read_only,
      save_interval_steps=0 if read_only else 1)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


def save(manager: ocp.CheckpointManager, step: int, state: TrainState,
         data_state: dict[str, Any]) -> None:
  """Saves `state` and the input stream's position (JSON) as checkpoint `step` (asynchronous)."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data=ocp.args.JsonSave(data_state)))


def restore_latest(manager: ocp.CheckpointManager,
                   abstract_state: TrainState) -> TrainState | None:
  """The newest checkpoint restored into `abstract_state`'s shapes and shardings, or None."""
  step = manager.latest_step()
  return None if step is None else restore_step(manager, abstract_state, step)


def _legacy_item(manager: ocp.CheckpointManager, step: int) -> str | None:
  """The state's directory in a checkpoint written before the data position was saved with it."""
  path = os.path.join(str(manager.directory), str(step), "default")
  return path if os.path.isdir(path) else None


def restore_step(manager: ocp.CheckpointManager, abstract_state: TrainState,
                 step: int) -> TrainState:
  """Checkpoint `step` (one of manager.all_steps()) restored into `abstract_state`."""
  try:
    legacy = _legacy_item(manager, step)
    if legacy:
      return ocp.StandardCheckpointer().restore(legacy, abstract_state)
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    return restored.state
  except (ValueError, KeyError) as e:
    raise ValueError(
        f"Checkpoint {manager.directory}/{step} does not match the model built from the config "
        f"(a different model or optimizer?): {e}") from e


def restore_data_state(manager: ocp.CheckpointManager, step: int) -> dict[str, Any] | None:
  """The input stream's position saved with checkpoint `step`; None for older checkpoints."""
  if _legacy_item(manager, step):
    return None
  return manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
