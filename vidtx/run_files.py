"""A train.py run as a converted checkpoint: python -m vidtx.convert --src RUN --out DIR.

    RUN/config.json    the run's full config (train.py writes it at every start)
    RUN/checkpoints/   orbax checkpoints of the train state, one directory per saved step

`export_run(RUN)` builds the model of config.json and restores the parameters of one checkpoint
into the exact state train.py saved (eval.py's abstract state), then describes the input as
config.dataset_configs does. No data is read or generated: only the config's fields are used, so
a run exports on a machine without its dataset.

Which checkpoint: a run that ranks its checkpoints (config.best_checkpoint_metric, 'top1' by
default) gives its best complete one, the one with the highest evaluation value of that metric
(ties: the newer), as train.py keeps it; `which='latest'` gives the newest complete one, `step` that
step. A run that ranks none, or whose complete checkpoints have no evaluation yet, gives the
newest complete one. Each step's value is orbax's saved metric where train.py stored one, else
the evaluation of that step in RUN/metrics.jsonl (`val_<metric>`). `choice_line` says in one line
which step was taken and why, with its value, the best's and the newest's
('runs/ft: checkpoint step 8 (best eval top1 0.4412; newest is step 51, top1 0.3333)'); it is
converted.source['checkpoint'], which vidtx.convert, vidtx.export, vidtx.predict and init_from
print.

A run may be exported while train.py writes it: only complete checkpoints are read (is_complete;
one being saved or being removed by the rotation is skipped, and the note says so), a checkpoint
removed while it is read gives way to the newest complete one, and a run with none complete yet
is one line naming the train.py writing it (its lock, vidtx.locks).

RUN may be a local directory or a run kept in a bucket (gs://bucket/run): its files are read
through vidtx.paths (os locally, etils' epath for URLs), its checkpoints by orbax.
"""

import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from vidtx import locks, outputs, paths, run_checkpoints, sharding
from vidtx import train_state as state_lib
from vidtx.checkpoints import store
from vidtx.checkpoints.store import Converted
from vidtx.data import reader_config
from vidtx.errors import UserError

CONFIG_FILE = "config.json"
CHECKPOINTS_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
# Which checkpoint of a run: the best by config.best_checkpoint_metric (the default), or the newest.
WHICH = ("best", "latest")

# The config fields an export reads (besides the optimizer's, which train.py needed too).
_DATASET_FIELDS = (
  "num_classes",
  "num_frames",
  "stride",
  "min_resize",
  "crop_size",
  "examples_per_subset",
)


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes WORKDIR/config.json (the full config) atomically (readers see the old file or the
  new one, never half of one; a gs:// workdir too); returns its path."""
  path = os.path.join(workdir, CONFIG_FILE)
  with outputs.atomic_writer(path) as f:
    f.write(config.to_json_best_effort(indent=2) + "\n")
  return path


def is_run_dir(path: str) -> bool:
  """Whether `path` is a train.py workdir with its config: config.json and checkpoints/."""
  return paths.isfile(os.path.join(path, CONFIG_FILE)) and paths.isdir(
    os.path.join(path, CHECKPOINTS_DIR)
  )


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """WORKDIR/config.json as a ConfigDict; errors say what is missing and how to get it."""
  if not paths.isdir(workdir):
    raise FileNotFoundError(f"Run directory {workdir!r} does not exist.")
  path = os.path.join(workdir, CONFIG_FILE)
  if not paths.isfile(path):
    raise FileNotFoundError(
      f"{workdir}: no {CONFIG_FILE}. train.py writes it when a run starts; for a run trained "
      f"before it did, run train.py again with the run's --config (and overrides) and "
      f"--workdir={workdir}: it writes {CONFIG_FILE} and resumes from the last checkpoint (a "
      "finished run only repeats its final evaluation)."
    )
  try:
    fields = json.loads(paths.read_text(path))
  except json.JSONDecodeError as e:
    raise UserError(f"{path}: not valid JSON ({e}).") from e
  if not isinstance(fields, dict):
    raise UserError(f"{path}: expected a JSON object (the config), got {type(fields).__name__}.")
  config = ml_collections.ConfigDict(fields)
  missing = [
    k
    for k in ("model_name", "model", "dataset_name", "dataset_configs", "eval_aggregation")
    if k not in config
  ]
  missing += [
    f"dataset_configs.{k}"
    for k in _DATASET_FIELDS
    if "dataset_configs" in config and k not in config.dataset_configs
  ]
  if missing:
    raise UserError(f"{path}: field(s) {missing} missing; expected the config train.py wrote.")
  return config


def looks_like_run(path: str) -> bool:
  """A train.py workdir; also one without config.json (from before train.py wrote it), so that
  export_run says how to add it. The peer formats' folders have no checkpoints/ subfolder
  (Hugging Face: config.json and weights; scenic: checkpoint_<step> files)."""
  return is_run_dir(path) or (
    paths.isdir(os.path.join(path, CHECKPOINTS_DIR))
    and not paths.exists(os.path.join(path, CONFIG_FILE))
  )


def check_choice(step: int | None, which: str | None, option: str = "--") -> None:
  """Raises (one line) unless `step` and `which` pick a checkpoint: `which` one of WHICH (None:
  'best'), and not 'latest' with a step. `option` names the flags ('--' or 'config.init_from.')."""
  if which is not None and which not in WHICH:
    raise UserError(f"{option}which={which!r}: expected 'best' or 'latest'.")
  if step is not None and which == "latest":
    raise UserError(
      f"{option}step={step} and {option}which={which}: give one of them ({option}step picks "
      "that checkpoint)."
    )


def export_run(
  workdir: str, step: int | None = None, which: str | None = None, *, option: str = "--"
) -> Converted:
  """The model and parameters of `workdir`'s best complete checkpoint (the newest where the run
  ranks none; `which='latest'`: the newest; or `step`), with the preprocessing, aggregation and
  class names of its config. source['checkpoint'] is the one line saying which step was taken
  (choice_line); `option` names the flags in messages ('--' or 'config.init_from.')."""
  check_choice(step, which, option)
  requested = step
  shown = workdir  # As the user wrote it, in the line that names the step taken.
  workdir = paths.abspath(workdir)
  checkpoints = os.path.join(workdir, CHECKPOINTS_DIR)
  config_path = os.path.join(workdir, CONFIG_FILE)
  # A run that train.py has just started: checkpoints/ exists before config.json does.
  if not paths.isfile(config_path) and not _step_names(checkpoints) and _writer(workdir):
    raise FileNotFoundError(_no_checkpoint_yet(workdir, checkpoints, []))
  config = read_config(workdir)
  dataset = _dataset(config, config_path)
  preprocessing = _preprocessing(config, dataset)
  metric = config.get("best_checkpoint_metric") or ""

  if not paths.isdir(checkpoints):
    raise FileNotFoundError(
      f"{workdir}: no {CHECKPOINTS_DIR}/ directory; train first with "
      f"python train.py --workdir={workdir}."
    )
  with run_checkpoints.checkpoint_manager(workdir, read_only=True) as manager:

    def abstract_state() -> Any:
      # One device: the parameters only pass through on their way to the host, whatever mesh
      # saved them (orbax reshards on restore).
      mesh = Mesh(np.asarray(jax.local_devices()[:1]), (sharding.DATA_AXIS,))
      return state_lib.abstract_state_from_config(config, dataset, mesh)[1]

    def choose(complete: list[int]) -> int:
      # Read at every try: a running train.py adds evaluations.
      return pick_step(complete, step_metrics(workdir, metric, complete), which)

    state, step, steps, skipped = _restore_complete(
      manager, abstract_state, workdir, checkpoints, step, choose, option
    )
  # The optimizer state stays behind: a converted checkpoint holds the parameters only.
  # A run that keeps an EMA (config.ema_decay) is evaluated with it, so that is what it exports.
  # Restored on one local device (abstract_state): every process reads its own whole copy.
  params = state_lib.fetch_replicated(state_lib.eval_params(state))
  values = step_metrics(workdir, metric, steps)
  line = choice_line(
    shown, step, steps, values, metric, requested=requested, which=which, option=option
  )

  source_name = config.dataset_name
  if source_name == "synthetic":
    source_name += f" ({dataset.task})"
  notes = [
    f"train.py run {config.get('experiment_name', '')!r} on {source_name}: the parameters "
    f"of step {step} as checkpointed (steps {steps} are)"
  ]
  if skipped:
    notes.append(
      f"step(s) {skipped} of {checkpoints} skipped: not complete (being written or removed by "
      f"a running train.py, or interrupted); step {steps[-1]} is the newest complete checkpoint"
    )
  labels = _labels(config, dataset, config_path, notes)
  source = dict(path=workdir, format="run", step=int(step), checkpoint=line, notes=notes)
  if step in values:
    source["metric"] = {metric: values[step]}
  return Converted(
    model_name=config.model_name,
    model_config=config.model.to_dict(),
    num_classes=dataset.num_classes,
    params=params,
    preprocessing=preprocessing,
    labels=labels,
    source=source,
  )


def step_metrics(workdir: str, metric: str, steps: list[int] | None = None) -> dict[int, float]:
  """Step -> the evaluation value of `metric` ('top1') of each evaluated step of the run: orbax's
  saved metric of a checkpoint of `steps` where train.py stored one, else the step's evaluation
  in WORKDIR/metrics.jsonl (its `val_<metric>`, the last line of the step: a resumed run logs
  its final evaluation again). {} without a metric; torn or non-finite lines are skipped."""
  if not metric:
    return {}
  values: dict[int, float] = {}
  try:
    lines = paths.read_text(os.path.join(workdir, METRICS_FILE), errors="replace").splitlines()
  except OSError:  # No evaluation logged yet (epath says FileNotFoundError for an object too).
    lines = []
  for line in lines:
    try:
      record = json.loads(line)
      step, value = int(record["step"]), float(record[f"val_{metric}"])
    except (ValueError, TypeError, KeyError, AttributeError):
      continue  # A training line (no val_ field), or one torn by a kill.
    if math.isfinite(value):
      values[step] = value
  for step in steps or []:
    saved = _orbax_metric(os.path.join(workdir, CHECKPOINTS_DIR, str(step)), metric)
    if saved is not None:
      values[step] = saved
  return values


def _orbax_metric(step_dir: str, metric: str) -> float | None:
  """The value of `metric` orbax saved with a checkpoint (its 'metrics' item, or the step
  metadata's 'metrics'), or None: orbax stores them only when its manager ranks by best_fn."""
  for path, key in (
    (os.path.join(step_dir, "metrics", "metrics"), None),
    (os.path.join(step_dir, STEP_METADATA), "metrics"),
  ):
    try:
      saved = json.loads(paths.read_text(path))
      value = float((saved[key] if key else saved)[metric])
    except (OSError, ValueError, TypeError, KeyError):
      continue
    if math.isfinite(value):
      return value
  return None


def pick_step(complete: list[int], values: dict[int, float], which: str | None) -> int:
  """The checkpoint of `complete` (sorted, not empty) that `which` asks for: 'best' (None) the
  highest value (ties: the newer; the newest when none has a value), 'latest' the newest."""
  evaluated = [s for s in complete if s in values]
  if which == "latest" or not evaluated:
    return complete[-1]
  return max(evaluated, key=lambda s: (values[s], s))


def choice_line(
  run: str,
  step: int,
  complete: list[int],
  values: dict[int, float],
  metric: str,
  *,
  requested: int | None = None,
  which: str | None = None,
  option: str = "--",
) -> str:
  """One line: which checkpoint of `run` was taken, why, and its evaluation value, with the
  best's and the newest's ('runs/ft: checkpoint step 8 (best eval top1 0.4412; newest is step
  51, top1 0.3333)')."""

  def value(s: int) -> str:
    return f"{metric} {values[s]:.4f}" if s in values else "not evaluated"

  def evaluation(s: int) -> str:
    return f"eval {value(s)}" if s in values else "not evaluated"

  newest = complete[-1]
  evaluated = [s for s in complete if s in values]
  best = max(evaluated, key=lambda s: (values[s], s)) if evaluated else None
  if not metric:
    why = (
      f"{option}step={requested}; newest is step {newest}"
      if requested is not None
      else "the newest; the run ranks no checkpoint: best_checkpoint_metric is ''"
    )
    return f"{run}: checkpoint step {step} ({why})"
  if requested is not None:
    parts = [f"{option}step={requested}, {evaluation(step)}"]
  elif which == "latest":
    also = ", also the best" if step == best else ""
    parts = [f"the newest, {option}which=latest, {evaluation(step)}{also}"]
  elif best is None:
    parts = [f"the newest; no complete checkpoint has an eval {metric} yet"]
  else:
    parts = [f"best eval {value(step)}" + (", also the newest" if step == newest else "")]
  if best is not None and best != step:
    also = ", also the newest" if best == newest else ""
    parts.append(f"best is step {best}, {value(best)}{also}")
  if newest not in (step, best):
    parts.append(f"newest is step {newest}, {value(newest)}")
  # An evaluation better than every complete checkpoint's: its checkpoint was rotated away (or
  # is being written, or the run stopped before saving it).
  lost = [s for s in values if s not in complete and (best is None or values[s] > values[best])]
  if lost:
    top = max(lost, key=lambda s: (values[s], s))
    parts.append(f"step {top} evaluated higher, {value(top)}, but has no complete checkpoint")
  return f"{run}: checkpoint step {step} ({'; '.join(parts)})"


def class_names(workdir: str) -> list[str] | None:
  """The run's class names, as export_run gives them, without reading a checkpoint (None when
  its config names none)."""
  config = read_config(workdir)
  config_path = os.path.join(workdir, CONFIG_FILE)
  return _labels(config, _dataset(config, config_path), config_path, [])


def _dataset(config: ml_collections.ConfigDict, config_path: str) -> reader_config.DatasetConfig:
  """The run's config.dataset_configs read once, typed and checked (no data is read)."""
  try:
    return reader_config.DatasetConfig.from_config(config.dataset_configs, views_only=True)
  except ValueError as e:
    raise UserError(f"{config_path}: {e}") from e


def _preprocessing(
  config: ml_collections.ConfigDict, dataset: reader_config.DatasetConfig
) -> dict[str, Any]:
  """The input of the run's evaluation, as the reader reads it."""
  dc = config.dataset_configs
  mean, std = dataset.normalisation
  return dict(
    num_frames=dataset.num_frames,
    stride=dataset.stride,
    min_resize=dataset.min_resize,
    crop_size=dataset.crop_size,
    mean=[float(x) for x in mean],
    std=[float(x) for x in std],
    num_test_clips=dataset.num_test_clips,
    do_three_spatial_crops=dataset.do_three_spatial_crops,
    aggregation=config.eval_aggregation,
    # Only the fields the config sets, as it sets them (the converted format records them so).
    **{k: dc[k] for k in store.SAMPLING_FIELDS if dc.get(k) is not None},
  )


def _labels(
  config: ml_collections.ConfigDict,
  dc: reader_config.DatasetConfig,
  config_path: str,
  notes: list[str],
) -> list[str] | None:
  """Class names: the synthetic task's, or base_dir/labels.txt of a DMVR dataset, else None."""
  from vidtx import data  # Imports TensorFlow: only when exporting.

  if config.dataset_name == "synthetic":
    try:
      names = list(data.synthetic.get_task(dc.task).class_names)
    except ValueError as e:
      raise UserError(f"{config_path}: dataset_configs.task: {e}") from e
    if len(names) != dc.num_classes:  # train.py refuses such a config (prepare_dataset).
      raise UserError(
        f"{config_path}: the synthetic task has {len(names)} classes, "
        f"dataset_configs.num_classes={dc.num_classes}."
      )
    return names
  if config.dataset_name != "dmvr" or not dc.base_dir:
    return None
  try:
    names = data.read_label_names(dc.base_dir)
  except ValueError:  # No labels.txt: no class names (vidtx.convert --labels adds them).
    return None
  if len(names) != dc.num_classes:
    # Not fatal: --labels can name the classes, and predict prints 'class <i>' otherwise.
    notes.append(
      f"{dc.base_dir}/labels.txt has {len(names)} names for {dc.num_classes} classes: not used"
    )
    return None
  return names


def is_earlier_run(path: str) -> bool:
  """A train.py workdir written before vidtx marked its directories (vidtx.ownership)."""
  return is_run_dir(path) or (
    paths.isdir(os.path.join(path, CHECKPOINTS_DIR))
    and paths.isfile(os.path.join(path, "metrics.jsonl"))
  )


# orbax writes a checkpoint as '<step>.orbax-checkpoint-tmp-<time>' and renames it when complete
# (on file systems without atomic renames it writes '<step>/' in place and adds commit_success.txt
# last); train.py's rotation removes old checkpoints file by file. A step directory without its
# metadata files is therefore being written or being removed: never read it.
STEP_METADATA = "_CHECKPOINT_METADATA"
ITEM_METADATA = "_METADATA"
_TEMPORARY = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")
# On gs:// orbax writes '<step>/' in place, this object last (vidtx.run_checkpoints).
COMMIT_FILE = "commit_success.txt"
# How often a restore is retried when train.py removes the checkpoint being read (its rotation).
_ATTEMPTS = 5


def is_complete(checkpoints: str, step: int) -> bool:
  """Whether checkpoint `step` in the `checkpoints` directory is whole: orbax's step metadata and
  the state's metadata are there ('default' is the state of checkpoints of older vidtx), and on
  gs:// its commit file, which orbax writes after every other object of the step."""
  path = os.path.join(checkpoints, str(step))
  if paths.is_url(path) and not paths.isfile(os.path.join(path, COMMIT_FILE)):
    return False
  return paths.isfile(os.path.join(path, STEP_METADATA)) and any(
    paths.isfile(os.path.join(path, item, ITEM_METADATA)) for item in ("state", "default")
  )


def _being_written(checkpoints: str, incomplete: list[int]) -> list[int]:
  """The steps of `checkpoints` that are not complete yet: orbax's temporary directories and the
  `incomplete` step directories (on gs://, where orbax lists only committed steps, also every
  step without its commit file)."""
  try:
    names = paths.listdir(checkpoints)
  except OSError:
    names = []
  temporary = [int(m.group(1)) for m in map(_TEMPORARY.match, names) if m]
  if paths.is_url(checkpoints):
    temporary += [int(n) for n in names if n.isdigit() and not is_complete(checkpoints, int(n))]
  return sorted(set(temporary) | set(incomplete))


def _step_names(checkpoints: str) -> list[str]:
  """The step directories of `checkpoints`, complete or not ([] when there is none)."""
  try:
    names = paths.listdir(checkpoints)
  except OSError:
    return []
  return [name for name in names if name.isdigit() or _TEMPORARY.match(name)]


def _writer(workdir: str) -> str | None:
  """Who is writing the run (the train.py holding its lock, vidtx.locks), or None."""
  found = locks.holder(workdir)
  return locks.describe(found) if found else None


def _no_checkpoint_yet(workdir: str, checkpoints: str, writing: list[int]) -> str:
  """Why a run has no checkpoint to export, and what to do: wait, or train."""
  writer = _writer(workdir)
  if writer:
    return (
      f"{workdir} has no complete checkpoint yet: {writer} is writing it"
      + (f" (step(s) {writing} being written)" if writing else "")
      + "; wait until it has saved one, then export again."
    )
  if writing:
    return (
      f"{checkpoints} has no complete checkpoint yet (step(s) {writing} being written by a "
      "running train.py, or interrupted); wait until train.py has saved one, then export again."
    )
  return f"No checkpoint in {checkpoints}; train first with python train.py --workdir={workdir}."


def _first_line(error: BaseException) -> str:
  text = (str(error).strip().splitlines() or [""])[0]
  return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _restore_complete(
  manager: Any,
  abstract_state: Callable[[], Any],
  workdir: str,
  checkpoints: str,
  step: int | None,
  choose: Callable[[list[int]], int] = lambda complete: complete[-1],
  option: str = "--",
) -> tuple[Any, int, list[int], list[int]]:
  """Restores `step`, or the complete checkpoint `choose(complete steps)` picks (the newest by
  default), of a run that train.py may be writing now, into `abstract_state()` (built once,
  after the cheap checks); returns (state, its step, the complete steps, the incomplete steps
  newer than every complete one, skipped).

  A checkpoint that train.py removes while it is read (rotation keeps the newest few and the
  best) is retried with the one `choose` picks then; a complete one that does not read is
  damaged.
  """
  requested, target = step, None
  for _ in range(_ATTEMPTS):
    manager.reload()  # What is on disk now, not what was there when the manager opened.
    listed = sorted(manager.all_steps())
    complete = [s for s in listed if is_complete(checkpoints, s)]
    writing = _being_written(checkpoints, [s for s in listed if s not in complete])
    if requested is None:
      if not complete:
        raise FileNotFoundError(_no_checkpoint_yet(workdir, checkpoints, writing))
      step = choose(complete)
    elif requested not in complete:
      if requested in writing:
        raise UserError(
          f"{option}step={requested}: checkpoint {requested} in {checkpoints} is not complete "
          f"(being written or removed by a running train.py, or interrupted); complete step(s): "
          f"{complete}."
        )
      raise UserError(
        f"{option}step={requested}: {checkpoints} has no checkpoint of that step; it has step(s) "
        f"{complete}" + (f" (and {writing} being written)." if writing else ".")
      )
    target = abstract_state() if target is None else target
    try:
      state = run_checkpoints.restore_step(manager, target, step)
    except Exception as e:  # noqa: BLE001 - removed while read, or damaged: told apart below.
      manager.reload()
      now = sorted(s for s in manager.all_steps() if is_complete(checkpoints, s))
      if is_complete(checkpoints, step) and (requested is not None or choose(now) == step):
        # Still there and still the one to take: a damaged checkpoint, not one being replaced.
        if isinstance(e, run_checkpoints.CheckpointMismatchError):
          raise
        raise UserError(
          f"{checkpoints}/{step}: cannot be read ({_first_line(e)}): files missing "
          f"or corrupt; take another one with {option}step (complete: {complete})."
        ) from e
      if requested is not None:
        raise UserError(
          f"{option}step={requested}: checkpoint {requested} in {checkpoints} was removed while "
          "it was read (a running train.py keeps only its newest checkpoints and its best); "
          f"take another step (complete now: {now})."
        ) from e
      continue  # Rotated away by a running train.py: choose among the complete ones again.
    skipped = [s for s in writing if s > complete[-1]] if requested is None else []
    return state, step, complete, skipped
  raise UserError(
    f"{checkpoints}: every checkpoint read was removed by a running train.py before it could "
    f"be read ({_ATTEMPTS} tries); export when the run has finished, or with {option}step of a "
    "checkpoint it keeps."
  )
