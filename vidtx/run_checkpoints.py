"""Training checkpoints: a run's orbax checkpoints of the train state and data position.

    WORKDIR/checkpoints/<step>/   one per saved step (state, data position, metrics)

checkpoint_manager -> save at every checkpoint interval; on start, restore_newest_intact resumes
from the newest checkpoint that reads, naming damaged ones (and, when asked, moving them aside).
Checkpoints of other projects' formats: vidtx.checkpoints (readers, convert_source).

Orbax takes every integer-named directory in WORKDIR/checkpoints for a step and deletes the
oldest when it keeps the newest N: a writing manager therefore starts only on a real checkpoints
directory (not a link into someone's folder) that holds nothing but vidtx's steps
(check_checkpoints_dir). A failed write (a full disk, a quota) ends in one WriteError naming the
file or checkpoint (write_error), without the tracebacks orbax's background threads log for it
(quiet_background_errors).
"""

import contextlib
import errno
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation

from vidtx import paths
from vidtx.errors import UserError
from vidtx.train_state import TrainState


def check_workdir(workdir: str) -> None:
  """Accepts a directory or a GCS location (gs://bucket/run); refuses other URLs (s3://, ...).

  On gs:// every file of the run is written directly in the bucket: the run's own files as
  whole objects (vidtx.paths), each checkpoint by orbax's commit-file protocol (the step's
  objects, then `commit_success.txt` last: a step without it is an unfinished save), since GCS
  has no atomic rename. Orbax uses that protocol for gs:// only; elsewhere it renames a
  temporary directory, which other object stores (and gcsfuse mounts) do not do atomically."""
  if "://" in workdir and not workdir.startswith("gs://"):
    raise UserError(
      f"--workdir={workdir}: a URL vidtx cannot keep a run in; the workdir must be a "
      "directory (on several hosts a shared file system: NFS, Filestore) or a GCS location "
      "(gs://BUCKET/runs/NAME), where checkpoints are committed without renames."
    )


CHECKPOINTS = "checkpoints"

# What orbax writes in a step directory of a vidtx run: the run's items (`state`, `data`; older
# vidtx saved one item, `default`; older orbax saved `metrics` and `descriptor` items), the step's
# metadata and, on some file systems, a commit marker.
_STEP_METADATA = "_CHECKPOINT_METADATA"
_STEP_ENTRIES = frozenset(
  {_STEP_METADATA, "commit_success.txt", "state", "data", "default", "metrics", "descriptor"}
)
_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # An unfinished save: <step>.orbax-checkpoint-tmp[-<n>].
# On gs:// orbax writes the step in place and marks it complete with this object, written last:
# a step directory without it is an unfinished save.
_COMMIT_FILE = "commit_success.txt"


def _foreign_in_step(name: str, path: str, unfinished: bool) -> list[str]:
  """What in a step-named directory orbax did not write: the user's files inside a checkpoint
  ('4/NOTES.md'), or the whole directory when it is no checkpoint ('0/ (not a checkpoint: ...)').
  An unfinished save (orbax's temporary name) may still be empty."""
  inside = paths.listdir(path)
  base = {entry.split(_TMP_SUFFIX, 1)[0] for entry in inside}  # Items being written count.
  if not unfinished and not base & {_STEP_METADATA, "state", "default"}:
    held = ", ".join(inside[:3]) + (" ..." if len(inside) > 3 else "") if inside else "empty"
    return [f"{name}/ (not a checkpoint: {held})"]
  return [
    f"{name}/{entry}" for entry in inside if entry.split(_TMP_SUFFIX, 1)[0] not in _STEP_ENTRIES
  ]


def foreign_checkpoint_entries(directory: str) -> list[str]:
  """The entries of a run's checkpoints directory that are not steps orbax wrote for vidtx: a
  link, a file, a directory whose name is not a step's, a step-named directory that is no
  checkpoint, or anything but orbax's files inside a checkpoint. On gs:// a step without
  orbax's commit file is an unfinished save (orbax's, resumed over), not a foreign entry."""
  found = []
  remote = paths.is_url(directory)
  for name in paths.listdir(directory):
    path = os.path.join(directory, name)
    step = re.fullmatch(rf"\d+({re.escape(_TMP_SUFFIX)}(-\d+)?)?", name)
    if not remote and os.path.islink(path):
      found.append(f"{name} (a link)")
    elif not paths.isdir(path):
      found.append(name)
    elif step is None:
      found.append(f"{name}/")
    else:
      unfinished = bool(step.group(1)) or (
        remote and not paths.exists(os.path.join(path, _COMMIT_FILE))
      )
      found += _foreign_in_step(name, path, unfinished=unfinished)
  return found


def check_checkpoints_dir(workdir: str) -> None:
  """Raises ValueError (one line) unless WORKDIR/checkpoints is absent or a real directory of
  vidtx's steps only: orbax would take a user's integer-named directory for a step and delete it
  when rotating, and would rotate inside whatever folder a link points to. Writes nothing."""
  directory = os.path.join(workdir, CHECKPOINTS)
  if paths.is_url(directory):  # No links, and no files in the way of a prefix on GCS.
    foreign = foreign_checkpoint_entries(directory) if paths.isdir(directory) else []
    if foreign:
      _refuse_foreign(directory, foreign)
    return
  if os.path.islink(directory):
    raise UserError(
      f"{directory} is a symbolic link (to {os.readlink(directory)}); vidtx keeps a run's "
      "checkpoints in a directory of its own, where it deletes old checkpoints, and never "
      "inside a folder a link points to. Remove the link (its target is not touched) or "
      "choose a new --workdir."
    )
  if not os.path.lexists(directory):
    return
  if not os.path.isdir(directory):
    raise UserError(
      f"{directory} is a file, not the run's checkpoints directory; move it out of the "
      "workdir or choose a new --workdir."
    )
  foreign = foreign_checkpoint_entries(directory)
  if foreign:
    _refuse_foreign(directory, foreign)


def _refuse_foreign(directory: str, foreign: list[str]) -> None:
  shown = "; ".join(foreign[:5]) + (f"; ... ({len(foreign)} in all)" if len(foreign) > 5 else "")
  raise UserError(
    f"{directory} holds entries that are not checkpoints vidtx wrote: {shown}. Orbax takes "
    "an integer-named directory for a checkpoint and deletes old ones, so vidtx does not "
    "train here: move these out of the checkpoints directory, or choose a new --workdir."
  )


def checkpoint_manager(
  workdir: str, *, max_to_keep: int = 3, best_metric: str = "", read_only: bool = False
) -> ocp.CheckpointManager:
  """Checkpoints under WORKDIR/checkpoints/<step>, written asynchronously.

  Keeps the newest `max_to_keep` and, with `best_metric`, also the one whose evaluation had the
  highest value of it (saved with `save(..., metrics=...)`). Orbax writes each checkpoint to a
  temporary directory and renames it when complete or, on gs://, in place with a commit file
  written last (orbax's default there), so an interrupted save (even kill -9) never looks like
  a checkpoint.
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
      # best_fn makes orbax write each step's metrics to disk (<step>/metrics): without them a
      # resumed run's manager sees the old best as unranked and its next save deletes it.
      best_fn=(lambda m: m[best_metric]) if best_metric else None,
    )
    if best_metric:
      _quiet_unranked_saves()
  check_workdir(workdir)
  if not read_only:
    check_checkpoints_dir(workdir)  # Before orbax lists (and later rotates) its steps.
  logging.getLogger("absl").addFilter(_DROP_HEALTHY_RESTORE_WARNINGS)  # Idempotent.
  return ocp.CheckpointManager(_checkpoints_path(workdir), options=options)


def _checkpoints_path(workdir: str) -> str:
  directory = os.path.join(workdir, CHECKPOINTS)
  return directory if paths.is_url(directory) else os.path.abspath(directory)


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


class DamagedCheckpointError(UserError):
  """The newest checkpoint(s) cannot be read; older ones can."""


def restore_newest_intact(
  manager: ocp.CheckpointManager, abstract_state: TrainState, *, skip_damaged: bool = False
) -> TrainState | None:
  """Like `restore_latest`, but a damaged newest checkpoint (files missing or corrupt) is named.

  Then, with `skip_damaged`, the newest intact checkpoint is restored and the damaged ones are
  moved to WORKDIR/damaged_checkpoints/ (kept, never deleted: they may be repairable);
  otherwise DamagedCheckpointError says which are damaged and which is the newest intact one.
  Damage is what _is_damage recognises (a file missing, empty, cut short, not parseable); a read
  that fails otherwise (an I/O error, a permission) raises DamagedCheckpointError with its reason
  and moves nothing. A checkpoint of another model fails as ValueError naming the parameters
  that differ.

  On several processes the choice is made once (restore_decided_once): process 0 decides which
  checkpoint every process restores and which are damaged, and alone moves them aside.
  """
  if jax.process_count() > 1:
    return restore_decided_once(manager, abstract_state, skip_damaged=skip_damaged)
  steps = sorted(manager.all_steps(), reverse=True)
  damaged: list[tuple[int, str]] = []
  for step in steps:
    try:
      state = restore_step(manager, abstract_state, step)
    except CheckpointMismatchError:
      raise
    except Exception as e:  # noqa: BLE001 - told apart by _is_damage below.
      if not _is_damage(e):
        raise DamagedCheckpointError(_unreadable_message(manager, step, e)) from e
      damaged.append((step, _first_line(e)))
      continue
    if damaged:
      _report_damaged(manager, damaged, step, skip_damaged)
    return state
  if damaged:
    raise DamagedCheckpointError(_none_restorable(manager, damaged))
  return None


def _first_line(error: BaseException) -> str:
  text = f"{type(error).__name__}: {error}".strip()
  line = text.splitlines()[0] if text else type(error).__name__
  return line if len(line) <= 300 else line[:297] + "..."


def _unreadable_message(manager: ocp.CheckpointManager, step: int, error: BaseException) -> str:
  return (
    f"Reading checkpoint {manager.directory}/{step} failed: {_first_line(error)}. This does not "
    "show the checkpoint is damaged (a permission, an I/O error, a time-out?), so nothing was "
    "moved: check the file system and rerun."
  )


def _none_restorable(manager: ocp.CheckpointManager, damaged: list[tuple[int, str]]) -> str:
  step, reason = damaged[0]
  return (
    f"No checkpoint in {manager.directory} can be restored: checkpoint {step}: {reason} "
    f"(all {len(damaged)} fail). Nothing was changed; restore a copy of the workdir or "
    "start in a new --workdir."
  )


def _damaged_message(
  manager: ocp.CheckpointManager, damaged: list[tuple[int, str]], intact: int
) -> str:
  names = ", ".join(str(step) for step, _ in damaged)
  reasons = "; ".join(f"checkpoint {step}: {reason}" for step, reason in damaged)
  return (
    f"Checkpoint(s) {names} in {manager.directory} are damaged ({reasons}). The newest intact "
    f"one is {intact}: rerun with --skip_damaged_checkpoints to resume from it (the damaged ones "
    "are then moved to damaged_checkpoints/ in the workdir, not deleted)."
  )


def _report_damaged(
  manager: ocp.CheckpointManager, damaged: list[tuple[int, str]], intact: int, skip_damaged: bool
) -> None:
  if not skip_damaged:
    raise DamagedCheckpointError(_damaged_message(manager, damaged, intact))
  _move_aside(manager, damaged, intact)
  manager.reload()


def _move_aside(
  manager: ocp.CheckpointManager, damaged: list[tuple[int, str]], intact: int
) -> None:
  """Moves the damaged checkpoints to WORKDIR/damaged_checkpoints/<step>[.n] and says so."""
  directory = str(manager.directory)
  aside = os.path.join(os.path.dirname(directory), "damaged_checkpoints")
  paths.makedirs(aside)
  for step, _ in damaged:
    target = os.path.join(aside, str(step))
    suffix = 1
    while paths.exists(target):
      target, suffix = os.path.join(aside, f"{step}.{suffix}"), suffix + 1
    paths.move_tree(os.path.join(directory, str(step)), target)  # On GCS: copy, then delete.
  names = ", ".join(str(step) for step, _ in damaged)
  reasons = "; ".join(f"checkpoint {step}: {reason}" for step, reason in damaged)
  print(
    f"Checkpoint(s) {names} in {directory} are damaged ({reasons}); moved to {aside}. "
    f"Resuming from checkpoint {intact}.",
    flush=True,
  )


# ---------------------------------------------------------------------------------------------
# Several processes: one decision. Each process reading on its own could find a checkpoint
# damaged that another reads (a transient error, a file of one host's shards), and each would
# rename directories: hosts would resume different steps. Process 0 decides from what it reads
# itself (check_intact: no other process takes part, so a failure cannot leave the others
# waiting in a collective restore), broadcasts the decision, and alone moves damaged ones aside
# between two barriers; then every process restores the same step together.
# ---------------------------------------------------------------------------------------------

# The decision travels as JSON in a fixed-size byte array (every process passes the same shape).
_DECISION_BYTES = 1 << 16


def check_intact(manager: ocp.CheckpointManager, abstract_state: TrainState, step: int) -> None:
  """Reads checkpoint `step` on this host alone, without restoring it: its metadata, its input
  position and every value of the state's store (orbax's OCDBT, read through tensorstore).
  Raises CheckpointMismatchError for another model's checkpoint; otherwise raises what the
  read met: a missing, empty, truncated or unparseable file fails with words _is_damage knows."""
  tree = _metadata_tree(manager, step)
  target = {
    name: getattr(abstract_state, name) if has_value else None
    for name, has_value in _saved_fields(tree).items()
  }
  _check_same_model(manager, step, tree, target)
  step_dir = os.path.join(str(manager.directory), str(step))
  legacy = _legacy_item(manager, step)
  if not legacy:
    data = os.path.join(step_dir, "data", "metadata")
    try:
      json.loads(paths.read_bytes(data))
    except json.JSONDecodeError as e:
      raise UserError(f"{data} is corrupt: {e}") from e
  state_dir = legacy or os.path.join(step_dir, "state")
  # (_metadata_tree read it above; older orbax wrote none, or a directory per array instead
  # of one store: their restore reads those.)
  metadata = os.path.join(state_dir, "_METADATA")
  if not paths.isfile(metadata):
    return
  if not json.loads(paths.read_bytes(metadata)).get("use_ocdbt"):
    return
  # A bucket's checkpoint is read where it is (tensorstore's gs:// driver, as orbax wrote it).
  base = (
    state_dir.rstrip("/") + "/"
    if paths.is_url(state_dir)
    else f"file://{os.path.abspath(state_dir)}"
  )
  store = ts.KvStore.open({"driver": "ocdbt", "base": base}).result()
  for key in store.list().result():
    read = store.read(key).result()
    # A value whose data file is gone reads as empty, not as an error; no stored chunk is empty.
    if read.state != "value" or not read.value:
      raise UserError(
        f"NOT_FOUND: {state_dir}: the stored value {key.decode(errors='replace')} is missing "
        "(its data file is gone or empty)"
      )


def restore_decided_once(
  manager: ocp.CheckpointManager, abstract_state: TrainState, *, skip_damaged: bool = False
) -> TrainState | None:
  """restore_newest_intact on several processes: process 0 decides (check_intact, newest
  first), every process gets its decision (multihost_utils.broadcast_one_to_all) and raises the
  same one-line error or restores the same step. Only what _is_damage recognises is damage; any
  other failure to read (permissions, an I/O error, a time-out) refuses with its reason and
  moves nothing. Damaged checkpoints are moved aside by process 0 only, after a barrier (no
  process still reads them) and before another (every process then sees them gone)."""
  decision: dict[str, Any] = {}
  if jax.process_index() == 0:
    decision = _decide(manager, abstract_state, skip_damaged)
  decision = _broadcast_json(decision)
  if decision.get("error"):
    error = {"mismatch": CheckpointMismatchError, "damaged": DamagedCheckpointError}
    raise error.get(decision["kind"], RuntimeError)(decision["error"])
  damaged = [(int(step), reason) for step, reason in decision["damaged"]]
  if damaged:
    multihost_utils.sync_global_devices("vidtx: before moving damaged checkpoints aside")
    if jax.process_index() == 0:
      _move_aside(manager, damaged, decision["step"])
    multihost_utils.sync_global_devices("vidtx: damaged checkpoints moved aside")
    manager.reload()
  if decision["step"] is None:
    return None
  return restore_step(manager, abstract_state, int(decision["step"]))


def _decide(
  manager: ocp.CheckpointManager, abstract_state: TrainState, skip_damaged: bool
) -> dict[str, Any]:
  """Process 0's decision: {'step': N or None, 'damaged': [[step, reason], ...]}, or {'error':
  one line, 'kind': 'mismatch' | 'damaged' | 'unreadable'} for every process to raise."""
  damaged: list[tuple[int, str]] = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      check_intact(manager, abstract_state, step)
    except CheckpointMismatchError as e:
      return {"error": str(e), "kind": "mismatch"}
    except Exception as e:  # noqa: BLE001 - told apart by _is_damage below.
      if not _is_damage(e):
        return {"error": _unreadable_message(manager, step, e), "kind": "unreadable"}
      damaged.append((step, _first_line(e)))
      continue
    if damaged and not skip_damaged:
      return {"error": _damaged_message(manager, damaged, step), "kind": "damaged"}
    return {"step": step, "damaged": damaged}
  if damaged:
    return {"error": _none_restorable(manager, damaged), "kind": "damaged"}
  return {"step": None, "damaged": []}


def _broadcast_json(value: Any) -> Any:
  """Process 0's `value` (JSON) on every process."""
  buffer = np.zeros(_DECISION_BYTES, np.uint8)
  if jax.process_index() == 0:
    encoded = json.dumps(value).encode()
    if len(encoded) > _DECISION_BYTES:
      raise UserError(f"_broadcast_json: {len(encoded)} bytes; at most {_DECISION_BYTES}.")
    buffer[: len(encoded)] = np.frombuffer(encoded, np.uint8)
  received = np.asarray(multihost_utils.broadcast_one_to_all(buffer), np.uint8)
  return json.loads(received.tobytes().rstrip(b"\0").decode())


class CheckpointMismatchError(UserError):
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
  return path if paths.isdir(path) else None


def _metadata_tree(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """Checkpoint `step`'s saved state as orbax describes it (shapes, dtypes), without arrays."""
  path = _legacy_item(manager, step) or os.path.join(str(manager.directory), str(step), "state")
  metadata = ocp.StandardCheckpointer().metadata(path)
  if metadata is None or metadata.item_metadata is None:  # Orbax reads a missing one as None.
    raise FileNotFoundError(f"{path}/_METADATA: not found or unreadable (no state metadata)")
  return metadata.item_metadata.tree


def _saved_fields(tree: dict[str, Any]) -> dict[str, bool]:
  """The TrainState fields of a checkpoint's metadata `tree` -> whether with a value (older
  vidtx saved no rng and no EMA; a run without EMA saves it as None)."""
  return {name: getattr(value, "value_type", None) != "None" for name, value in tree.items()}


def _check_same_model(
  manager: ocp.CheckpointManager, step: int, tree: dict[str, Any], target: dict[str, Any]
) -> None:
  """CheckpointMismatchError (one line) when checkpoint `step` (its metadata `tree`) holds
  parameters of other names or shapes than `target`."""
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
  _check_same_model(manager, step, tree, target)
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
  """Whether a read failed on the files themselves: a file missing, empty, truncated or not
  parseable (orbax's and tensorstore's NOT_FOUND, DATA_LOSS, OUT_OF_RANGE; a JSON file that does
  not parse). Other failures (permission denied, an I/O error, a time-out) may pass: they are
  not damage, and no checkpoint is moved aside for them."""
  if isinstance(error, (FileNotFoundError, json.JSONDecodeError)):
    return True
  text = str(error)
  return any(
    word in text
    for word in (
      "NOT_FOUND",
      "DATA_LOSS",
      "OUT_OF_RANGE",
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
  try:
    return manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
  except Exception as e:  # noqa: BLE001 - whatever failed, the user needs the checkpoint's name.
    raise DamagedCheckpointError(
      f"Reading the input position saved with checkpoint {manager.directory}/{step} failed: "
      f"{_first_line(e)}. Nothing was changed; check the disk, or move checkpoint {step} out of "
      "the checkpoints directory to resume from the one before it."
    ) from e


# ---------------------------------------------------------------------------------------------
# Failed writes (a full disk): one line, not the background threads' tracebacks.
# ---------------------------------------------------------------------------------------------

# Errors of the storage rather than of the program: the user frees space or picks another disk.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO)


class WriteError(UserError, OSError):
  """A run's file or checkpoint could not be written (a full disk, a quota, a read-only or
  failing file system); the message names it, on one line."""


def write_failure(error: BaseException) -> str | None:
  """Why `error` is a failed write, in words ('no space left on device'), or None when it is
  not one. Orbax and TensorFlow report the OS error inside their own exceptions' text."""
  if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
    return os.strerror(error.errno).lower()
  text = str(error)
  for number in _WRITE_ERRNOS:
    if os.strerror(number) in text or f"os_error_code='{number}'" in text:
      return os.strerror(number).lower()
  return None


def write_error(error: BaseException, workdir: str, path: str | None = None) -> WriteError | None:
  """`error` as a one-line WriteError naming what was being written, or None when it is not a
  failed write: `path` when given, else a checkpoint (orbax names its temporary directory), a
  file (Python names it), or the workdir."""
  if isinstance(error, WriteError):
    return error
  reason = write_failure(error)
  if reason is None:
    return None
  checkpoints = _checkpoints_path(workdir)
  step = re.search(rf"{re.escape(checkpoints)}/(\d+)(?:{re.escape(_TMP_SUFFIX)}|/|\")", str(error))
  filename = getattr(error, "filename", None)
  # TensorFlow names the file in its message (an event file: "Failed to flush ... to PATH").
  root = workdir if paths.is_url(workdir) else os.path.abspath(workdir)
  named = re.search(rf"{re.escape(root)}/[^\s\"':]+", str(error))
  after = "the saved checkpoints are intact"
  if path:
    what = path
  elif step:
    what = f"checkpoint {step.group(1)} in {checkpoints}"
    after = "the checkpoints saved before it are intact"
  elif filename or named:
    what = str(filename or named.group(0))
  else:
    what = f"the run's files in {workdir}"
  return WriteError(
    f"Writing {what} failed: {reason}. Training stopped; {after}. Free space there (or "
    "choose a --workdir on another disk), then run the same command to resume."
  )


@contextlib.contextmanager
def named_write_errors(workdir: str, path: str | None = None) -> Iterator[None]:
  """Turns a failed write inside the block into write_error's one-line WriteError (naming
  `path` when given)."""
  try:
    yield
  except Exception as e:  # noqa: BLE001 - only failed writes are turned; the rest re-raised.
    converted = write_error(e, workdir, path)
    if converted is None or converted is e:
      raise
    raise converted from e


# Writers whose background threads log a failure with its traceback and raise it again in the
# main thread: orbax's saves and clu's asynchronous metric writer (TensorBoard events).
_BACKGROUND_WRITERS = (f"{os.sep}orbax{os.sep}", f"{os.sep}clu{os.sep}asynclib.py")


def _from_background_writer(record: logging.LogRecord) -> bool:
  traceback = record.exc_info[2] if record.exc_info else None
  while traceback is not None:
    if any(part in traceback.tb_frame.f_code.co_filename for part in _BACKGROUND_WRITERS):
      return True
    traceback = traceback.tb_next
  return False


class _DropUnrankedSaveWarning(logging.Filter):
  """Orbax warns at every save without metrics once best_fn is set; a save between evaluations
  is not ranked by design (LatestN keeps it)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "did not provide metrics" not in record.getMessage()


_DROP_UNRANKED_SAVE_WARNING = _DropUnrankedSaveWarning()


def _quiet_unranked_saves() -> None:
  logging.getLogger("absl").addFilter(_DROP_UNRANKED_SAVE_WARNING)  # Idempotent.


class _DropHealthyRestoreWarnings(logging.Filter):
  """Two warnings orbax logs on every read of a healthy run (convert, export, predict, eval):
  that the read-only manager vidtx asked for is read only, and that the state item of a step has
  no _CHECKPOINT_METADATA of its own (orbax writes it for the step, not for each item). Any
  other warning, and any error, is kept."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (
      message.startswith("Given directory is read only=")
      or re.fullmatch(
        r"Metadata file does not exist: .*[/\\]state[/\\]_CHECKPOINT_METADATA", message
      )
    )


_DROP_HEALTHY_RESTORE_WARNINGS = _DropHealthyRestoreWarnings()


class _DropBackgroundTracebacks(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and _from_background_writer(record))


_DROP_BACKGROUND_TRACEBACKS = _DropBackgroundTracebacks()  # One instance: added at most once.


def _orbax_leftover(info: Any) -> bool:
  """Whether an unraisable exception is an echo of a failed orbax save: tensorstore finding
  orbax's event loop closed, or orbax's unfinished writes collected at exit."""
  error = info.exc_value
  if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
    return True
  return isinstance(error, ImportError) and "async_serialize" in repr(info.object)


@contextlib.contextmanager
def quiet_background_errors() -> Iterator[None]:
  """While the block runs, drops the copies of a failed write that orbax's and clu's
  background threads log with their tracebacks, and the "Event loop is closed" tracebacks
  tensorstore prints for each array still in flight once orbax gave up: hundreds of lines for
  one full disk. The failure itself is raised in the main thread, where vidtx reports it in one
  line. After a failure the echoes that come at exit stay dropped too. VIDTX_TRACEBACK=1 keeps
  them all."""
  if os.environ.get("VIDTX_TRACEBACK"):
    yield
    return
  absl_logger = logging.getLogger("absl")
  previous_hook = sys.unraisablehook

  def unraisable(info: Any) -> None:
    if not _orbax_leftover(info):
      previous_hook(info)

  absl_logger.addFilter(_DROP_BACKGROUND_TRACEBACKS)
  sys.unraisablehook = unraisable
  failed = True
  try:
    yield
    failed = False
  finally:
    if failed:
      # Orbax's threads may still be failing, and its unfinished writes are collected at exit,
      # after the one-line error: their echoes stay dropped.
      warnings.filterwarnings(
        "ignore", "coroutine 'async_serialize.*' was never awaited", RuntimeWarning
      )
    else:
      absl_logger.removeFilter(_DROP_BACKGROUND_TRACEBACKS)
      if sys.unraisablehook is unraisable:
        sys.unraisablehook = previous_hook
