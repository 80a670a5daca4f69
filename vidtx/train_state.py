"""Training state: creation sharded on the mesh and the training step.

Its checkpoints (save, resume, damaged ones): vidtx.run_checkpoints.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vidtx import device_augment, losses, models, optim, sharding
from vidtx.errors import UserError

if TYPE_CHECKING:  # vidtx.data is on the same floor (docs/architecture.md): its type only.
  from vidtx.data.reader_config import DatasetConfig


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of optimizer updates applied so far.
  params: Any
  opt_state: Any
  # uint32 (2,): the key data every step's randomness (dropout, stochastic depth, mixup) is
  # folded from with the step; saved so a resumed run draws what the uninterrupted one drew.
  rng: jax.Array
  # Exponential moving average of the parameters (config.ema_decay > 0), else None.
  ema_params: Any = None


def _init_fn(
  model: nn.Module, tx: optax.GradientTransformation, input_shape: tuple[int, ...], ema: bool
) -> Callable[[jax.Array], TrainState]:
  def init(rng: jax.Array) -> TrainState:
    init_rng, train_rng = jax.random.split(rng)
    dummy = jnp.zeros(input_shape, jnp.float32)
    params = model.init({"params": init_rng, "dropout": init_rng}, dummy, train=False)["params"]
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      rng=jax.random.key_data(train_rng),
      ema_params=jax.tree.map(jnp.copy, params) if ema else None,
    )

  return init


def abstract_train_state(
  model: nn.Module,
  tx: optax.GradientTransformation,
  input_shape: tuple[int, ...],
  mesh: Mesh,
  *,
  ema: bool = False,
  rules: sharding.Rules | None = None,
) -> TrainState:
  """Shapes, dtypes and shardings of the state, without memory: what checkpoints restore into.

  Shardings follow the parameters' logical axes (vidtx.models.param_logical_axes) and `rules`
  (config.mesh.rules, sharding.rules_from_config; default sharding.DEFAULT_RULES): replicated,
  FSDP or tensor-parallel per parameter; optimizer state and EMA as their parameter.
  """
  shapes = jax.eval_shape(_init_fn(model, tx, input_shape, ema), jax.random.key(0))
  param_axes = models.param_logical_axes(model, input_shape)
  shardings = sharding.tree_shardings(shapes, mesh, param_axes, rules)
  return jax.tree.map(
    lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
  )


def abstract_state_from_config(
  config: ml_collections.ConfigDict,
  dataset: "DatasetConfig | ml_collections.ConfigDict",
  mesh: Mesh,
) -> tuple[nn.Module, TrainState]:
  """The model of `config` and the abstract state of train.py's checkpoints for it.

  Built from config fields only (model, optimizer, schedule; the dataset's num_classes,
  num_frames, crop_size and examples_per_subset['train']), so a run's checkpoints restore as
  they are without reading any data (eval.py, vidtx.run_files). `dataset`: the typed one, or
  a plain config.dataset_configs, whose attributes have the same names.
  """
  model = models.build(config.model_name, config.model, dataset.num_classes)
  tx, _ = optimizer_from_config(config, dataset)
  input_shape = (1, dataset.num_frames, dataset.crop_size, dataset.crop_size, 3)
  return model, abstract_train_state(
    model,
    tx,
    input_shape,
    mesh,
    ema=bool(config.get("ema_decay")),
    rules=sharding.rules_from_config(config.get("mesh")),
  )


def optimizer_from_config(
  config: ml_collections.ConfigDict, dataset: "DatasetConfig | ml_collections.ConfigDict"
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer and learning-rate schedule of `config`, sized by the training split."""
  examples = dataset.examples_per_subset["train"]
  # The schedule's length does not change the state's structure; at least 1 so it builds.
  total_steps = max(optim.resolve_steps(config, "num_training", examples, config.batch_size), 1)
  schedule = optim.make_schedule(
    config.lr_configs, total_steps, steps_per_epoch=examples / config.batch_size
  )
  return optim.make_optimizer(config, schedule), schedule


def create_train_state(
  model: nn.Module,
  tx: optax.GradientTransformation,
  input_shape: tuple[int, ...],
  mesh: Mesh,
  rng: jax.Array,
  *,
  ema: bool = False,
  rules: sharding.Rules | None = None,
) -> tuple[TrainState, TrainState]:
  """Initialises the state directly in its sharding (`rules`: as abstract_train_state);
  returns (state, abstract state)."""
  abstract = abstract_train_state(model, tx, input_shape, mesh, ema=ema, rules=rules)
  shardings = jax.tree.map(lambda s: s.sharding, abstract)
  # Traced under the mesh (a Pallas attention kernel runs in shard_map over it), not the rules:
  # its dummy input lies on one device, which an activation constraint on the mesh refuses
  # when jit is disabled; the outputs take their shardings from out_shardings anyway.
  init = sharding.under_mesh(_init_fn(model, tx, input_shape, ema), mesh)
  state = jax.jit(init, out_shardings=shardings)(rng)
  return state, abstract


def eval_params(state: TrainState) -> Any:
  """The parameters a run is evaluated and exported with: the EMA when it keeps one."""
  return state.params if state.ema_params is None else state.ema_params


def replace_params(
  state: TrainState, params: Any, tx: optax.GradientTransformation, abstract_state: TrainState
) -> TrainState:
  """`state` with new (host) params placed in their shardings, a fresh optimizer state and the
  EMA (if kept) starting from them. On several hosts every process passes the same `params`
  and places only its own devices' shards (place)."""
  param_shardings = jax.tree.map(lambda s: s.sharding, abstract_state.params)
  params = place(params, abstract_state.params)
  opt_shardings = jax.tree.map(lambda s: s.sharding, abstract_state.opt_state)
  opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
  ema_params = None
  if state.ema_params is not None:
    ema_params = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=param_shardings)(params)
  return state.replace(params=params, opt_state=opt_state, ema_params=ema_params)


# ----------------------------------------------------------------------------------------
# Between host and devices on any number of hosts. A global array sharded over several
# hosts cannot be fetched by one of them (jax.device_get raises "spans non-addressable
# devices"); these move only what each process holds itself.
# ----------------------------------------------------------------------------------------


def fetch_replicated(tree: Any) -> Any:
  """`tree`'s arrays on the host as numpy, each read from this process's own copy: they must be
  replicated (a train step's metrics, arrays on one local device). ValueError for a sharded
  array (gather it with host_copy)."""

  def fetch(x: Any) -> np.ndarray:
    if not isinstance(x, jax.Array):
      return np.asarray(x)
    if not x.is_fully_replicated:
      raise ValueError(
        f"fetch_replicated: an array of shape {x.shape} is sharded ({x.sharding}); "
        "gather it with train_state.host_copy."
      )
    return np.asarray(x.addressable_data(0))

  return jax.tree.map(fetch, tree)


def host_copy(tree: Any, mesh: Mesh) -> Any:
  """`tree`'s (sharded) arrays as numpy on every host: each array is gathered by a jit whose
  output is replicated on `mesh`, then read from this process's copy. One array at a time, so
  devices hold at most the largest one whole, never the whole tree."""
  gather = jax.jit(lambda x: x, out_shardings=sharding.replicated(mesh))
  return jax.tree.map(lambda x: fetch_replicated(gather(x)), tree)


def place(host_tree: Any, abstract_tree: Any) -> Any:
  """Host (numpy) arrays as global arrays in the shapes, dtypes and shardings of
  `abstract_tree` (jax.ShapeDtypeStruct leaves). Each process builds only the shards of its own
  devices from its copy, so every process must pass the same values."""

  def put(value: Any, abstract: jax.ShapeDtypeStruct) -> jax.Array:
    value = np.asarray(value, abstract.dtype)
    if value.shape != abstract.shape:
      raise UserError(f"place: a value of shape {value.shape} for an array of {abstract.shape}.")
    return jax.make_array_from_callback(abstract.shape, abstract.sharding, lambda i: value[i])

  return jax.tree.map(put, host_tree, abstract_tree)


# ----------------------------------------------------------------------------------------
# The training step.
# ----------------------------------------------------------------------------------------


def augment_on_mesh(
  batch: dict[str, jax.Array], augmentation: device_augment.Augmentation, mesh: Mesh
) -> dict[str, jax.Array]:
  """device_augment.augment_batch with every device augmenting the clips it holds (shard_map
  over the data-parallel axes): RandAugment's per-clip loop (lax.map) would otherwise gather
  the whole batch on every device. Call it under jit."""
  spec = sharding.data_sharding(mesh).spec
  return jax.shard_map(
    lambda local: device_augment.augment_batch(local, augmentation),
    mesh=mesh,
    in_specs=spec,
    out_specs=spec,
  )(batch)


def _accumulate_micro_batches(
  loss_and_grads: Callable[..., tuple[jax.Array, jax.Array, Any]],
  params: Any,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  k: int,
  mesh: Mesh,
) -> tuple[jax.Array, jax.Array, Any]:
  """(loss, accuracy, grads) of `batch` as k micro-batches of B/k clips, averaged: the same mean
  as the whole batch at the activation memory of B/k clips (config.grad_accum_steps)."""
  batch_size = batch["inputs"].shape[0]
  if batch_size % k:
    raise UserError(f"config.grad_accum_steps={k} does not divide the batch of {batch_size} clips.")
  # (B, ...) -> (B/k, k, ...) -> (k, B/k, ...): micro-batch j holds rows j, j+k, j+2k...,
  # so every device keeps its own rows and nothing moves between devices.
  micro = jax.tree.map(
    lambda x: jnp.swapaxes(x.reshape((batch_size // k, k) + x.shape[1:]), 0, 1), batch
  )
  micro = jax.lax.with_sharding_constraint(
    micro, NamedSharding(mesh, PartitionSpec(None, sharding.data_sharding(mesh).spec[0]))
  )

  def accumulate(carry, xs):
    micro_batch, j = xs
    loss, accuracy, grads = loss_and_grads(params, micro_batch, jax.random.fold_in(rng, j))
    total_loss, total_accuracy, total_grads = carry
    return (
      total_loss + loss,
      total_accuracy + accuracy,
      jax.tree.map(jnp.add, total_grads, grads),
    ), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  (loss, accuracy, grads), _ = jax.lax.scan(
    accumulate, (jnp.zeros(()), jnp.zeros(()), zeros), (micro, jnp.arange(k))
  )
  return loss / k, accuracy / k, jax.tree.map(lambda g: g / k, grads)


def make_train_step(
  model: nn.Module,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  abstract_state: TrainState,
  mesh: Mesh,
  *,
  num_classes: int,
  label_smoothing: float = 0.0,
  class_splits: tuple[int, ...] = (),
  multi_label: bool = False,
  mixup_alpha: float = 0.0,
  grad_accum_steps: int = 1,
  ema_decay: float = 0.0,
  augmentation: device_augment.Augmentation | None = None,
  rules: sharding.Rules | None = None,
) -> Callable[..., tuple[TrainState, dict[str, Any]]]:
  """The jitted training step `(state, batch) -> (state, metrics)`.

  The state keeps the shardings of `abstract_state` (in and out) and is donated; the batch
  ({'inputs', 'label'}) is split over the mesh's data-parallel axes; metrics are replicated
  scalars. With `augmentation` (the reader's: reader_config.device_augmentation) the batch holds
  uint8 clips (with scale jitter, window buffers resized to the crop on the accelerator) and
  their augmentation parameters, applied first, on the accelerator
  (vidtx.device_augment.augment_batch); without it 'inputs' go to the model as they are. With
  `grad_accum_steps` = k the batch is processed as k micro-batches of B/k clips whose gradients
  are averaged before one update (same mean loss and gradient as the whole batch, at the
  activation memory of B/k clips; mixup pairs clips within a micro-batch).

  The step is traced under `mesh` and `rules` (config.mesh.rules, default
  sharding.DEFAULT_RULES), so the models' activation constraints (vidtx.models.layers.constrain)
  pin the activations' batch to the data-parallel axes.
  """
  label_kind = dict(class_splits=class_splits, multi_label=multi_label)
  k = int(grad_accum_steps)
  if k < 1:
    raise UserError(f"config.grad_accum_steps={grad_accum_steps}: expected an integer >= 1.")

  def loss_and_grads(params, batch, rng):
    dropout_rng, mixup_rng = jax.random.split(rng)

    def loss_fn(params):
      targets = losses.targets(batch["label"], num_classes, label_smoothing, **label_kind)
      inputs = batch["inputs"]
      if mixup_alpha > 0:
        inputs, targets, _ = losses.mixup(mixup_rng, inputs, targets, mixup_alpha)
      logits, _ = model.apply({"params": params}, inputs, train=True, rngs={"dropout": dropout_rng})
      return jnp.mean(losses.loss(logits, targets, **label_kind)), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    accuracy = jnp.mean(losses.correct(logits, batch["label"], **label_kind))
    return loss, accuracy, grads

  def train_step(
    state: TrainState, batch: dict[str, jax.Array]
  ) -> tuple[TrainState, dict[str, Any]]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if augmentation is not None:
      # Before the micro-batch split: one pass over the whole batch, each clip on its device.
      batch = augment_on_mesh(batch, augmentation, mesh)
    elif batch["inputs"].dtype == jnp.uint8:
      raise ValueError(
        "make_train_step: uint8 inputs (the reader's pixels) need "
        "augmentation=reader_config.device_augmentation(dataset) to be normalised."
      )
    if k == 1:
      loss, accuracy, grads = loss_and_grads(state.params, batch, rng)
    else:
      loss, accuracy, grads = _accumulate_micro_batches(
        loss_and_grads, state.params, batch, rng, k, mesh
      )

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_params is not None:
      ema_params = optim.ema_update(ema_params, params, ema_decay)
    new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params
    )
    metrics = {
      "loss": loss,
      "accuracy": accuracy,
      "learning_rate": schedule(state.step),
      "grad_norm": optax.global_norm(grads),
    }
    return new_state, metrics

  state_shardings = jax.tree.map(lambda s: s.sharding, abstract_state)
  batch_sharding = sharding.data_sharding(mesh)
  return jax.jit(
    sharding.under_rules(train_step, mesh, rules),
    donate_argnums=0,
    in_shardings=(state_shardings, batch_sharding),
    out_shardings=(state_shardings, sharding.replicated(mesh)),
  )
