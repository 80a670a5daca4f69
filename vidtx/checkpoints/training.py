"""Training checkpoints: a run's orbax checkpoints of the train state and data position.

    WORKDIR/checkpoints/<step>/   one per saved step (state, data position, metrics)

checkpoint_manager -> save at every checkpoint interval; on start, restore_newest_intact resumes
from the newest checkpoint that reads, naming damaged ones (and, when asked, moving them aside).
Checkpoints of other projects' formats: vidtx.checkpoints (readers, convert_source).
"""

import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation

from vidtx.train_state import TrainState


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
