"""Training state: creation sharded on the mesh, the training step, and orbax checkpoints."""

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
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation

from vidtx import losses, models, optim, sharding


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
) -> TrainState:
  """Shapes, dtypes and shardings of the state, without memory: what checkpoints restore into.

  Shardings follow vidtx.sharding.RULES (replicated, FSDP or tensor-parallel per parameter;
  optimizer state as its parameter).
  """
  shapes = jax.eval_shape(_init_fn(model, tx, input_shape, ema), jax.random.key(0))
  shardings = sharding.tree_shardings(shapes, mesh)
  return jax.tree.map(
    lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
  )


def abstract_state_from_config(
  config: ml_collections.ConfigDict, dataset_configs: ml_collections.ConfigDict, mesh: Mesh
) -> tuple[nn.Module, TrainState]:
  """The model of `config` and the abstract state of train.py's checkpoints for it.

  Built from config fields only (model, optimizer, schedule; dataset_configs.num_classes,
  num_frames, crop_size and examples_per_subset['train']), so a run's checkpoints restore as
  they are without reading any data (eval.py, vidtx.checkpoints.run).
  """
  model = models.build(config.model_name, config.model, dataset_configs.num_classes)
  tx, _ = optimizer_from_config(config, dataset_configs)
  input_shape = (
    1,
    dataset_configs.num_frames,
    dataset_configs.crop_size,
    dataset_configs.crop_size,
    3,
  )
  return model, abstract_train_state(
    model, tx, input_shape, mesh, ema=bool(config.get("ema_decay"))
  )


def optimizer_from_config(
  config: ml_collections.ConfigDict, dataset_configs: ml_collections.ConfigDict
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer and learning-rate schedule of `config`, sized by the training split."""
  examples = dataset_configs.examples_per_subset["train"]
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
) -> tuple[TrainState, TrainState]:
  """Initialises the state directly in its sharding; returns (state, abstract state)."""
  abstract = abstract_train_state(model, tx, input_shape, mesh, ema=ema)
  shardings = jax.tree.map(lambda s: s.sharding, abstract)
  state = jax.jit(_init_fn(model, tx, input_shape, ema), out_shardings=shardings)(rng)
  return state, abstract


def eval_params(state: TrainState) -> Any:
  """The parameters a run is evaluated and exported with: the EMA when it keeps one."""
  return state.params if state.ema_params is None else state.ema_params


def replace_params(
  state: TrainState, params: Any, tx: optax.GradientTransformation, abstract_state: TrainState
) -> TrainState:
  """`state` with new (host) params placed in their shardings, a fresh optimizer state and the
  EMA (if kept) starting from them."""
  param_shardings = jax.tree.map(lambda s: s.sharding, abstract_state.params)
  params = jax.device_put(params, param_shardings)
  opt_shardings = jax.tree.map(lambda s: s.sharding, abstract_state.opt_state)
  opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
  ema_params = None
  if state.ema_params is not None:
    ema_params = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=param_shardings)(params)
  return state.replace(params=params, opt_state=opt_state, ema_params=ema_params)


# ----------------------------------------------------------------------------------------
# The training step.
# ----------------------------------------------------------------------------------------


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
) -> Callable[..., tuple[TrainState, dict[str, Any]]]:
  """The jitted training step `(state, batch) -> (state, metrics)`.

  The state keeps the shardings of `abstract_state` (in and out) and is donated; the batch
  ({'inputs', 'label'}) is split over the mesh's data-parallel axes; metrics are replicated
  scalars. With `grad_accum_steps` = k the batch is processed as k micro-batches of B/k clips
  whose gradients are averaged before one update (same mean loss and gradient as the whole
  batch, at the activation memory of B/k clips; mixup pairs clips within a micro-batch).
  """
  label_kind = dict(class_splits=class_splits, multi_label=multi_label)
  k = int(grad_accum_steps)
  if k < 1:
    raise ValueError(f"config.grad_accum_steps={grad_accum_steps}: expected an integer >= 1.")

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
    if k == 1:
      loss, accuracy, grads = loss_and_grads(state.params, batch, rng)
    else:
      batch_size = batch["inputs"].shape[0]
      if batch_size % k:
        raise ValueError(
          f"config.grad_accum_steps={k} does not divide the batch of {batch_size} clips."
        )
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
        loss, accuracy, grads = loss_and_grads(
          state.params, micro_batch, jax.random.fold_in(rng, j)
        )
        total_loss, total_accuracy, total_grads = carry
        return (
          total_loss + loss,
          total_accuracy + accuracy,
          jax.tree.map(jnp.add, total_grads, grads),
        ), None

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (loss, accuracy, grads), _ = jax.lax.scan(
        accumulate, (jnp.zeros(()), jnp.zeros(()), zeros), (micro, jnp.arange(k))
      )
      loss, accuracy = loss / k, accuracy / k
      grads = jax.tree.map(lambda g: g / k, grads)

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
    train_step,
    donate_argnums=0,
    in_shardings=(state_shardings, batch_sharding),
    out_shardings=(state_shardings, sharding.replicated(mesh)),
  )


# ----------------------------------------------------------------------------------------
# Checkpoints.
# ----------------------------------------------------------------------------------------


def check_workdir(workdir: str) -> None:
  """Refuses a URL workdir (gs://, s3://): metrics.jsonl, config.json and the checkpoints are
  written with POSIX files (appends, atomic renames), which object stores do not have. On a TPU
  pod or cluster mount the bucket on every host (gcsfuse) or use a shared file system."""
  if "://" in workdir:
    raise ValueError(
      f"--workdir={workdir}: a URL; the workdir must be a directory on a file "
      "system (on several hosts a shared one: NFS, Filestore, or a bucket mounted "
      "with gcsfuse, e.g. /gcs/BUCKET/runs/NAME). Data may stay in the bucket: "
      "dataset_configs.base_dir=gs://... is read directly."
    )


def checkpoint_manager(
  workdir: str, *, max_to_keep: int = 3, best_metric: str = "", read_only: bool = False
) -> ocp.CheckpointManager:
  """Checkpoints under WORKDIR/checkpoints/<step>, written asynchronously.

  Keeps the newest `max_to_keep` and, with `best_metric`, also the one whose evaluation had the
  highest value of it (saved with `save(..., metrics=...)`). Orbax writes each checkpoint to a
  temporary directory and renames it when complete, so an interrupted save (even kill -9) never
  looks like a checkpoint.
  """
  if read_only:
    # No saving and no pruning (orbax warns when it has to switch these off itself).
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  else:
    keep = [preservation.LatestN(n=max_to_keep)]
    if best_metric:
      keep.append(
        preservation.BestN(
          get_metric_fn=lambda m: m[best_metric], n=1, keep_checkpoints_without_metrics=False
        )
      )
    options = ocp.CheckpointManagerOptions(
      create=True,
      save_interval_steps=1,
      enable_async_checkpointing=True,
      preservation_policy=preservation.AnyPreservationPolicy(keep),
    )
  check_workdir(workdir)
  return ocp.CheckpointManager(
    os.path.abspath(os.path.join(workdir, "checkpoints")), options=options
  )


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state: TrainState,
  data_state: dict[str, Any],
  metrics: dict[str, float] | None = None,
) -> None:
  """Saves `state` and the input stream's position (JSON) as checkpoint `step`, in the
  background; `metrics` (an evaluation of this step) rank it for the best-checkpoint rule."""
  manager.save(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
    metrics=metrics,
    force=True,
  )


def restore_latest(manager: ocp.CheckpointManager, abstract_state: TrainState) -> TrainState | None:
  """The newest checkpoint restored into `abstract_state`'s shapes and shardings, or None."""
  step = manager.latest_step()
  return None if step is None else restore_step(manager, abstract_state, step)


class DamagedCheckpointError(ValueError):
  """The newest checkpoint(s) cannot be read; older ones can."""


def restore_newest_intact(
  manager: ocp.CheckpointManager, abstract_state: TrainState, *, skip_damaged: bool = False
) -> TrainState | None:
  """Like `restore_latest`, but a damaged newest checkpoint (files missing or corrupt) is named.

  Then, with `skip_damaged`, the newest intact checkpoint is restored and the damaged ones are
  moved to WORKDIR/damaged_checkpoints/ (kept, never deleted: they may be repairable);
  otherwise DamagedCheckpointError says which are damaged and which is the newest intact one.
  A checkpoint of another model fails as ValueError naming the parameters that differ.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  damaged: list[tuple[int, str]] = []
  for step in steps:
    try:
      state = restore_step(manager, abstract_state, step)
    except CheckpointMismatchError:
      raise
    except Exception as e:  # noqa: BLE001 - any failure to read it: a missing file, bad bytes.
      damaged.append((step, _first_line(e)))
      continue
    if damaged:
      _report_damaged(manager, damaged, step, skip_damaged)
    return state
  if damaged:
    step, reason = damaged[0]
    raise DamagedCheckpointError(
      f"No checkpoint in {manager.directory} can be restored: checkpoint {step}: {reason} "
      f"(all {len(damaged)} fail). Nothing was changed; restore a copy of the workdir or "
      "start in a new --workdir."
    )
  return None


def _first_line(error: BaseException) -> str:
  text = f"{type(error).__name__}: {error}".strip()
  line = text.splitlines()[0] if text else type(error).__name__
  return line if len(line) <= 300 else line[:297] + "..."


def _report_damaged(
  manager: ocp.CheckpointManager, damaged: list[tuple[int, str]], intact: int, skip_damaged: bool
) -> None:
  directory = str(manager.directory)
  names = ", ".join(str(step) for step, _ in damaged)
  reasons = "; ".join(f"checkpoint {step}: {reason}" for step, reason in damaged)
  if not skip_damaged:
    raise DamagedCheckpointError(
      f"Checkpoint(s) {names} in {directory} are damaged ({reasons}). The newest intact one is "
      f"{intact}: rerun with --skip_damaged_checkpoints to resume from it (the damaged ones "
      "are then moved to damaged_checkpoints/ in the workdir, not deleted)."
    )
  aside = os.path.join(os.path.dirname(directory), "damaged_checkpoints")
  os.makedirs(aside, exist_ok=True)
  for step, _ in damaged:
    target = os.path.join(aside, str(step))
    suffix = 1
    while os.path.exists(target):
      target, suffix = os.path.join(aside, f"{step}.{suffix}"), suffix + 1
    os.rename(os.path.join(directory, str(step)), target)
  manager.reload()
  print(
    f"Checkpoint(s) {names} in {directory} are damaged ({reasons}); moved to {aside}. "
    f"Resuming from checkpoint {intact}.",
    flush=True,
  )


class CheckpointMismatchError(ValueError):
  """A checkpoint that is readable but of another model or optimizer than the config's."""


def _shape_differences(tree: dict[str, Any], target: dict[str, Any]) -> list[str]:
  """'name: checkpoint (a, b), config (c, d)' for parameters that differ, from the checkpoint's
  metadata `tree` (`_metadata_tree`)."""
  saved = tree.get("params")
  if not isinstance(saved, dict) or target.get("params") is None:
    return []
  flat_saved = flax.traverse_util.flatten_dict(saved, sep="/")
  flat_target = flax.traverse_util.flatten_dict(flax.core.unfreeze(target["params"]), sep="/")
  problems = [
    f"{k}: only in the config, {tuple(flat_target[k].shape)}"
    for k in sorted(set(flat_target) - set(flat_saved))
  ]
  problems += [
    f"{k}: only in the checkpoint, {tuple(flat_saved[k].shape)}"
    for k in sorted(set(flat_saved) - set(flat_target))
  ]
  problems += [
    f"{k}: checkpoint {tuple(flat_saved[k].shape)}, config {tuple(flat_target[k].shape)}"
    for k in sorted(set(flat_saved) & set(flat_target))
    if tuple(flat_saved[k].shape) != tuple(flat_target[k].shape)
  ]
  return problems


def _legacy_item(manager: ocp.CheckpointManager, step: int) -> str | None:
  """The state's directory in a checkpoint written before the data position was saved with it."""
  path = os.path.join(str(manager.directory), str(step), "default")
  return path if os.path.isdir(path) else None


def _metadata_tree(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """Checkpoint `step`'s saved state as orbax describes it (shapes, dtypes), without arrays."""
  path = _legacy_item(manager, step) or os.path.join(str(manager.directory), str(step), "state")
  return ocp.StandardCheckpointer().metadata(path).item_metadata.tree


def _saved_fields(tree: dict[str, Any]) -> dict[str, bool]:
  """The TrainState fields of a checkpoint's metadata `tree` -> whether with a value (older
  vidtx saved no rng and no EMA; a run without EMA saves it as None)."""
  return {name: getattr(value, "value_type", None) != "None" for name, value in tree.items()}


def restore_step(
  manager: ocp.CheckpointManager, abstract_state: TrainState, step: int
) -> TrainState:
  """Checkpoint `step` (one of manager.all_steps()) restored into `abstract_state`.

  Checkpoints of older vidtx (no rng or EMA saved) restore too: the rng then comes from the
  seed as they drew it (the caller fills `rng`, which is None here), and an EMA starts from the
  parameters.
  """
  tree = _metadata_tree(manager, step)  # Read once: unreadable metadata is a damaged checkpoint.
  # The checkpoint's own structure: fields it holds as None stay None.
  target = {
    name: getattr(abstract_state, name) if has_value else None
    for name, has_value in _saved_fields(tree).items()
  }
  differences = _shape_differences(tree, target)
  if differences:
    shown = "; ".join(differences[:4]) + (
      f"; ... ({len(differences)} in all)" if len(differences) > 4 else ""
    )
    raise CheckpointMismatchError(
      f"Checkpoint {manager.directory}/{step} is of another model than the config ({shown}). "
      "Resume with the run's own config (its config.json lists it), or train the new config "
      "in a new --workdir."
    )
  try:
    legacy = _legacy_item(manager, step)
    if legacy:
      restored = ocp.StandardCheckpointer().restore(legacy, target)
    else:
      restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
      ).state
  except (ValueError, KeyError) as e:
    if _is_damage(e):
      raise
    raise CheckpointMismatchError(
      f"Checkpoint {manager.directory}/{step} does not match the state built from the config "
      f"(a different optimizer or config.ema_decay?): {_first_line(e)}"
    ) from e
  if "rng" not in restored:
    print(
      f"Checkpoint {step} has no rng (older vidtx); training continues with the seed's.", flush=True
    )
  state = TrainState(
    step=restored["step"],
    params=restored["params"],
    opt_state=restored["opt_state"],
    rng=restored.get("rng"),
    ema_params=restored.get("ema_params"),
  )
  if abstract_state.ema_params is not None and state.ema_params is None:
    state = state.replace(ema_params=jax.tree.map(jnp.copy, state.params))
  return state


def _is_damage(error: BaseException) -> bool:
  """Whether a restore failed on the files themselves (missing, truncated, corrupt)."""
  text = str(error)
  return any(
    word in text
    for word in (
      "NOT_FOUND",
      "DATA_LOSS",
      "No such file",
      "not found",
      "does not exist",
      "corrupt",
      "Truncated",
      "truncated",
    )
  )


def restore_data_state(manager: ocp.CheckpointManager, step: int) -> dict[str, Any] | None:
  """The input stream's position saved with checkpoint `step`; None for older checkpoints."""
  if _legacy_item(manager, step):
    return None
  return manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
