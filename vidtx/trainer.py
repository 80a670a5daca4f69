r"""Trains a video transformer; resumes from the newest checkpoint in the workdir.

  from vidtx import trainer
  results = trainer.train_and_evaluate(config, "runs/ts")   # {'top1': ..., 'top5': ...}

  python train.py --config=configs/synthetic_timesformer.py --workdir=runs/ts
  vidtx-train --config=synthetic_timesformer:attention=space --workdir=runs/space \
      --config.num_training_steps=100

Every config field can be overridden with --config.a.b=value. The phases run top to bottom, each
a function below that takes what it reads and returns what it makes:
  config checks (vidtx.config_checks) -> workdir, lock and checkpoint manager
  (train_and_evaluate) ->
  setup: mesh, data, model and optimizer (_setup) -> restore: sharded init, then the newest
  checkpoint or init_from (_init_or_restore) -> config.json and the start-up line ->
  the training stream (_train_batches, bad_records.CleanBatches), evaluator, step and writers
  (_loop_parts) -> loop (_loop), with the periodic work of each step in one place
  (_after_step: log, evaluate, checkpoint, stop check; _Profile: config.profile_steps) ->
  final evaluation and the last checkpoint.
What the loop changes (the state, the stream's position, the metrics not yet fetched) is one
_LoopState passed explicitly; what it only reads is one frozen _Run.

The config checks (vidtx.config_checks.check_config, also run by eval.py and printed by
`python -m vidtx.config`) read no data and no parameters; see that module. The start-up line
says where the parameters come from: resuming at step N, from init_from PATH, or from scratch.

The workdir must be new, empty or a run's (vidtx.ownership); a damaged newest checkpoint is named
(--skip_damaged_checkpoints resumes from the newest intact one). Export a run for vidtx.predict
with vidtx-convert --src WORKDIR --out DIR.

One writer per run: the trainer holds the workdir's lock (vidtx.locks, WORKDIR/.vidtx.lock) from
start to end, so a second train.py, or an eval.py writing its results there, refuses in one line
naming this run's process. On several hosts process 0 holds it (the workdir is shared): when it
is refused, the other processes of that launch end only once they lose process 0 (JAX's
coordinator). WORKDIR/checkpoints must hold only vidtx's checkpoints (orbax deletes old ones;
vidtx.run_checkpoints), and a full disk ends the run in one line naming the file or
checkpoint it was writing.
"""

import contextlib
import dataclasses
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import flags, logging
from clu import metric_writers
from jax.experimental import multihost_utils

from vidtx import (
  cli,
  config_checks,
  distributed,
  evaluation,
  locks,
  metrics,
  models,
  optim,
  ownership,
  paths,
  run_checkpoints,
  run_files,
  sharding,
)
from vidtx import data as vidtx_data
from vidtx import train_state as state_lib
from vidtx.checkpoints import init_from
from vidtx.data import bad_records, global_order, reader_config, records
from vidtx.errors import UserError, UserFloatingPointError
from vidtx.progress import MetricsLog, Progress

METRICS_FILE = "metrics.jsonl"
PROFILE_DIR = "profile"  # config.profile_steps' trace, under the workdir.


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, skip_damaged_checkpoints: bool = False
) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the final eval.

  Returns {'preempted': True, 'step': N} instead when SIGTERM/SIGINT (or JAX's multi-host
  preemption notice) stopped the run after saving checkpoint N; a signal before the first step
  raises distributed.Stopped (nothing saved). `skip_damaged_checkpoints`: resume from the newest
  intact checkpoint when newer ones are damaged (they are moved aside, not deleted).
  """
  # Before any work: the command line's overrides against the recipe's values, the model
  # against its init checkpoint's sizes, evaluation's geometry against training's.
  for line in config_checks.check_config(config):
    if jax.process_index() == 0:
      print(line, flush=True)
  # Until the loop starts a signal stops the run at once (nothing to save yet).
  stop = distributed.StopRequest(immediate=True)
  try:
    with contextlib.ExitStack() as run:
      # --- Workdir: new, empty, or a run's (vidtx.ownership); never a folder of someone's
      # files. One writer at a time: the lock is taken before any slow work, so a second
      # train.py (or an eval.py) on the run refuses at once, naming this one.
      run_checkpoints.check_workdir(workdir)
      if jax.process_index() == 0:
        ownership.claim(
          workdir,
          "run",
          legacy=run_files.is_earlier_run,
          hint="Choose a new --workdir for the run.",
        )
        run.enter_context(locks.hold(workdir, "train.py"))
      else:
        paths.makedirs(workdir)  # A directory, or nothing to make on gs://.
      # A full disk: one line naming the file or checkpoint, not orbax's background tracebacks.
      run.enter_context(run_checkpoints.quiet_background_errors())
      run.enter_context(run_checkpoints.named_write_errors(workdir))
      manager = run_checkpoints.checkpoint_manager(  # Refuses a linked or foreign checkpoints/.
        workdir,
        max_to_keep=config.max_checkpoints_to_keep,
        best_metric=config.get("best_checkpoint_metric") or "",
      )
      try:
        return _train_and_evaluate(config, workdir, stop, manager, skip_damaged_checkpoints)
      finally:
        manager.close()  # Also after an error: no background save is left to fail at exit.
  finally:
    stop.restore()


def _train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  stop: distributed.StopRequest,
  manager: ocp.CheckpointManager,
  skip_damaged_checkpoints: bool,
) -> dict[str, Any]:
  """The phases, top to bottom: setup, restore, loop, final evaluation."""
  setup = _setup(config)
  state, abstract_state, started_from = _init_or_restore(
    config, setup, manager, skip_damaged_checkpoints
  )
  setup = _choose_stream(config, setup, manager, int(state.step))
  _write_config_and_announce(config, workdir, setup, state, abstract_state, started_from)
  batches = _train_batches(config, setup, manager, int(state.step))
  run = _loop_parts(config, workdir, setup, abstract_state, int(state.step), stop, manager)
  loop_state = _LoopState(state=state, batches=batches)
  try:
    stopped = _loop(run, loop_state)
    if stopped is not None:
      return stopped
    # --- Final evaluation (also when resuming a finished run: it is cheap and answers the
    # question), then the last checkpoint, ranked by it.
    try:
      results = _evaluate(run, loop_state, run.total_steps, final=True)
    except evaluation.EvaluationStopped:  # Resuming repeats the final evaluation.
      return _stop_here(run, loop_state, run.total_steps)
    _save(run, loop_state, run.total_steps, results)
  finally:
    manager.wait_until_finished()
  _final_report(run, loop_state, results)
  return results


# ---------------------------------------------------------------------------------------------
# Setup and restore.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Setup:
  """The mesh, the data's description and the model: what the later phases are built from."""

  mesh: jax.sharding.Mesh
  local_batch_size: int
  dataset: reader_config.DatasetConfig  # config.dataset_configs, read once (prepare_dataset).
  class_names: list[str] | None
  total_steps: int
  model: Any  # flax.linen.Module
  tx: Any  # optax.GradientTransformation
  schedule: Any  # step -> learning rate
  ema_decay: float


def _setup(config: ml_collections.ConfigDict) -> _Setup:
  """Mesh ('data', 'fsdp', 'model' sizes from config.mesh), data (the synthetic dataset is
  generated on first use, cached), model and optimizer."""
  mesh = sharding.make_mesh(config.get("mesh"))
  local_batch_size = sharding.check_batch_size(config.batch_size, mesh)
  dataset = vidtx_data.prepare_dataset(config)
  if jax.process_index() == 0:  # A split of which some files are empty trains on the others.
    for split in dataset.tables:
      warning = records.empty_files_warning(dataset, split)
      if warning:
        print(warning, flush=True)
    # With global_order=None (auto) _choose_stream says why a stream is per process, and how
    # to index the shards (which also gives clips their frame reads).
    note = records.frame_tables_note(dataset, "train")
    if note and dataset.dataset_name == "dmvr" and dataset.global_order is False:
      print(note, flush=True)
  total_steps = optim.resolve_steps(
    config, "num_training", dataset.examples_per_subset["train"], config.batch_size
  )
  if total_steps <= 0:
    raise UserError("Set config.num_training_steps or config.num_training_epochs (> 0).")
  model = models.build(config.model_name, config.model, dataset.num_classes)
  tx, schedule = state_lib.optimizer_from_config(config, dataset)
  return _Setup(
    mesh=mesh,
    local_batch_size=local_batch_size,
    dataset=dataset,
    class_names=vidtx_data.class_names(dataset),
    total_steps=total_steps,
    model=model,
    tx=tx,
    schedule=schedule,
    ema_decay=float(config.get("ema_decay") or 0.0),
  )


def _init_or_restore(
  config: ml_collections.ConfigDict,
  setup: _Setup,
  manager: ocp.CheckpointManager,
  skip_damaged_checkpoints: bool,
) -> tuple[state_lib.TrainState, Any, str]:
  """(state, its abstract twin, where it came from for the start-up line): the sharded init
  (parameters and optimizer state laid out by vidtx.sharding.RULES), then the newest intact
  checkpoint if there is one, else config.init_from's checkpoint if set, else the init."""
  dc = setup.dataset
  input_shape = (setup.local_batch_size, dc.num_frames, dc.crop_size, dc.crop_size, 3)
  state, abstract_state = state_lib.create_train_state(
    setup.model,
    setup.tx,
    input_shape,
    setup.mesh,
    jax.random.key(config.rng_seed),
    ema=setup.ema_decay > 0,
    rules=sharding.rules_from_config(config.get("mesh")),
  )
  restored = run_checkpoints.restore_newest_intact(
    manager, abstract_state, skip_damaged=skip_damaged_checkpoints
  )
  if restored is not None:
    # Checkpoints of older vidtx hold no rng: the seed's, as they drew it.
    state = restored if restored.rng is not None else restored.replace(rng=state.rng)
    return state, abstract_state, f"resuming at step {int(state.step)}"
  if not (config.get("init_from") and config.init_from.get("checkpoint_path")):
    return state, abstract_state, "from scratch"
  # A fresh run starts from a pretrained checkpoint by the papers' rules (image ViT) or by
  # name (a video model of the same family); a resumed run has its own parameters already.
  # The fresh parameters on every host (gathered one array at a time: a process cannot
  # fetch shards of other hosts' devices); every process computes the same result and
  # places only its own devices' shards of it (state_lib.replace_params).
  params, report = init_from.initialise(
    state_lib.host_copy(state.params, setup.mesh),
    model_name=config.model_name,
    model_config=setup.model.config,
    init_config=config.init_from,
    num_frames=dc.num_frames,
    crop_size=dc.crop_size,
    class_names=setup.class_names,
  )
  if jax.process_index() == 0:
    print(report.summary(), flush=True)
  state = state_lib.replace_params(state, params, setup.tx, abstract_state)
  return state, abstract_state, f"from init_from {config.init_from.checkpoint_path}"


def _write_config_and_announce(
  config: ml_collections.ConfigDict,
  workdir: str,
  setup: _Setup,
  state: state_lib.TrainState,
  abstract_state: Any,
  started_from: str,
) -> None:
  """WORKDIR/config.json, rewritten at every start (a resumed run may override fields) once its
  checkpoint restored, so a failed resume leaves the run's record intact; it lets
  vidtx.convert export the run without its data. Then the start-up line (process 0)."""
  if jax.process_index() != 0:
    return
  with run_checkpoints.named_write_errors(workdir, os.path.join(workdir, run_files.CONFIG_FILE)):
    run_files.write_config(config, workdir)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  mesh = setup.mesh
  print(
    f"{config.model_name} ({num_params / 1e6:.2f} M params) on {mesh.devices.size} "
    f"device(s) of {jax.process_count()} process(es), mesh {dict(mesh.shape)}: "
    f"{sharding.describe(abstract_state)}; {started_from}, {setup.total_steps} steps "
    f"of {config.batch_size} clips.",
    flush=True,
  )


def _train_batches(
  config: ml_collections.ConfigDict,
  setup: _Setup,
  manager: ocp.CheckpointManager,
  start_step: int,
) -> bad_records.CleanBatches:
  """This process's training batches. The stream is deterministic for the seed; a resumed run
  starts it at the position saved with the checkpoint, so it sees exactly the clips an
  uninterrupted run would have seen."""
  if setup.dataset.global_order:
    position = _global_stream_start(manager, start_step, config.batch_size)
  else:
    position = _stream_start(manager, start_step, setup.local_batch_size, setup.dataset)
  process = dict(process_index=jax.process_index(), process_count=jax.process_count())
  stream = vidtx_data.build_train_dataset(
    setup.dataset,
    batch_size=setup.local_batch_size,
    seed=config.rng_seed,
    start_position=position,
    **process,
  ).as_numpy_iterator()
  return bad_records.CleanBatches(
    stream, setup.dataset, "train", start_position=position, **process
  )


# ---------------------------------------------------------------------------------------------
# The loop: what it reads (_Run, fixed) and what it changes (_LoopState, passed explicitly).
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Run:
  """What the loop, the evaluations and the saves read; nothing rebinds it."""

  config: ml_collections.ConfigDict
  workdir: str
  setup: _Setup
  start_step: int
  stop: distributed.StopRequest
  manager: ocp.CheckpointManager
  evaluator: evaluation.MultiViewEvaluator
  train_step: Any  # (state, global batch) -> (state, device metrics); jitted
  writer: metric_writers.MetricWriter
  metrics_log: MetricsLog
  progress: Progress

  @property
  def is_main(self) -> bool:
    return jax.process_index() == 0

  @property
  def total_steps(self) -> int:
    return self.setup.total_steps

  @property
  def best_metric(self) -> str:
    return self.config.get("best_checkpoint_metric") or ""


@dataclasses.dataclass
class _LoopState:
  """What the loop changes, step by step: the state, the batches (their position in the stream
  and the bad records skipped are saved with checkpoints), and the metrics not yet fetched."""

  state: state_lib.TrainState
  batches: bad_records.CleanBatches
  # (step, device metrics) since the last fetch, fetched together (no host syncs).
  pending: list[tuple[int, dict[str, jax.Array]]] = dataclasses.field(default_factory=list)


def _loop_parts(
  config: ml_collections.ConfigDict,
  workdir: str,
  setup: _Setup,
  abstract_state: Any,
  start_step: int,
  stop: distributed.StopRequest,
  manager: ocp.CheckpointManager,
) -> _Run:
  """The evaluator, the training step, the writers and the progress line."""
  evaluator = evaluation.MultiViewEvaluator(
    setup.model,
    setup.dataset,
    "validation",
    batch_size=config.eval_batch_size,
    mesh=setup.mesh,
    aggregation=config.eval_aggregation,
    class_names=setup.class_names,
    rules=sharding.rules_from_config(config.get("mesh")),
  )
  # One jit with explicit shardings, the state donated, the batch split over the data-parallel
  # axes, gradients accumulated over config.grad_accum_steps.
  train_step = state_lib.make_train_step(
    setup.model,
    setup.tx,
    setup.schedule,
    abstract_state,
    setup.mesh,
    num_classes=setup.dataset.num_classes,
    label_smoothing=config.label_smoothing,
    class_splits=setup.dataset.class_splits,
    multi_label=setup.dataset.multi_label,
    mixup_alpha=float(config.get("mixup", {}).get("alpha", 0.0) or 0.0),
    grad_accum_steps=int(config.get("grad_accum_steps") or 1),
    ema_decay=setup.ema_decay,
    augmentation=reader_config.device_augmentation(setup.dataset),
    rules=sharding.rules_from_config(config.get("mesh")),
  )
  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  metrics_path = os.path.join(workdir, METRICS_FILE)
  with run_checkpoints.named_write_errors(workdir, metrics_path):
    metrics_log = MetricsLog(metrics_path, enabled=is_main, drop_after_step=start_step)
  return _Run(
    config=config,
    workdir=workdir,
    setup=setup,
    start_step=start_step,
    stop=stop,
    manager=manager,
    evaluator=evaluator,
    train_step=train_step,
    writer=writer,
    metrics_log=metrics_log,
    progress=Progress(setup.total_steps, start_step, config.batch_size, enabled=is_main),
  )


def _loop(run: _Run, loop_state: _LoopState) -> dict[str, Any] | None:
  """Steps start_step + 1 .. total_steps, each followed by the periodic work (_after_step).
  Returns the stop's result when a signal (or an interrupted evaluation) ended the run early,
  None after the last step. A signal from here on saves the last step done, then stops."""
  run.stop.begin_loop()
  if run.is_main:  # The first step waits for XLA's compilation: minutes for a large model.
    print("Compiling the train step (the first step waits for it) ...", flush=True)
  loop_start = time.monotonic()
  profile = _Profile(run.workdir, run.start_step, run.config.get("profile_steps") or 0)
  # next_or_stop reads in a thread it may abandon on a signal: only the raw read happens
  # there; the batch is cleaned (its position counted) here, once it is trained on.
  raw_batches = iter(loop_state.batches.read, None)
  try:
    for step in range(run.start_step + 1, run.total_steps + 1):
      batch = distributed.next_or_stop(raw_batches, run.stop)
      if batch is None:  # A signal while waiting for data (which may never come).
        return _stop_here(run, loop_state, step - 1)
      global_batch = sharding.to_global(loop_state.batches.clean(batch), run.setup.mesh)
      loop_state.state, step_metrics = run.train_step(loop_state.state, global_batch)
      loop_state.pending.append((step, step_metrics))
      if step == run.start_step + 1 and run.is_main:
        jax.block_until_ready(step_metrics["loss"])  # Once: says when compilation ended.
        print(
          f"First step done after {time.monotonic() - loop_start:.0f} s (compilation and the "
          f"first batch); a line every {run.config.log_every_steps} steps from here.",
          flush=True,
        )
      stopped = _after_step(run, loop_state, profile, step)
      if stopped is not None:
        return stopped
  finally:
    profile.close()
  return None


def _after_step(
  run: _Run, loop_state: _LoopState, profile: "_Profile", step: int
) -> dict[str, Any] | None:
  """The periodic work after `step`, in this order: profile, log, evaluate, checkpoint (a
  checkpoint follows every evaluation, ranked by it), check for a stop request (synced across
  processes on log steps). After the last step only the first two: the final evaluation and
  the last checkpoint follow the loop. Returns the stop's result when the run stops here."""
  config = run.config
  profile.after_step(step, loop_state.state)
  if step % config.log_every_steps == 0 or step == run.total_steps:
    _log(run, loop_state, step)
  if step == run.total_steps:
    return None
  results = None
  if config.eval_every_steps and step % config.eval_every_steps == 0:
    try:
      results = _evaluate(run, loop_state, step)
    except evaluation.EvaluationStopped:
      return _stop_here(run, loop_state, step)
  if step % config.checkpoint_every_steps == 0 or results is not None:
    _save(run, loop_state, step, results)
  if run.stop.requested(step, sync=step % config.log_every_steps == 0):
    return _stop_here(run, loop_state, step)
  return None


# ---------------------------------------------------------------------------------------------
# The periodic actions.
# ---------------------------------------------------------------------------------------------


def _fetch_and_check(run: _Run, loop_state: _LoopState) -> list[dict[str, float]]:
  """The pending metrics on the host; stops at the first non-finite loss or gradient."""
  # Metrics are replicated (the step's out_shardings): each process reads its own copy.
  fetched = [(s, state_lib.fetch_replicated(m)) for s, m in loop_state.pending]
  loop_state.pending = []
  for s, m in fetched:
    if not (np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])):
      # Nothing after the last good step is saved; async saves in flight finish first.
      run.manager.wait_until_finished()
      raise UserFloatingPointError(
        f"Non-finite training at step {s}: loss {float(m['loss'])}, gradient norm "
        f"{float(m['grad_norm'])}. Stopped without saving; the last good checkpoint is "
        f"{run.manager.latest_step()} in {run.manager.directory} (lower the learning rate or "
        "enable config.max_grad_norm, then resume)."
      )
  return [m for _, m in fetched]


def _write_metrics(run: _Run, step: int, values: dict[str, Any]) -> None:
  with run_checkpoints.named_write_errors(run.workdir, os.path.join(run.workdir, METRICS_FILE)):
    run.metrics_log.write(step, values)


def _log(run: _Run, loop_state: _LoopState, step: int) -> None:
  """The mean of the metrics since the last log: the progress line, TensorBoard, metrics.jsonl."""
  fetched = _fetch_and_check(run, loop_state)
  summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
  summary["learning_rate"] = float(fetched[-1]["learning_rate"])
  if loop_state.batches.skipped:
    summary["skipped_records"] = loop_state.batches.skipped
  summary.update(run.progress.update(step, summary))  # Prints the line on process 0.
  run.writer.write_scalars(step, summary)
  _write_metrics(run, step, summary)


def _evaluate(run: _Run, loop_state: _LoopState, step: int, final: bool = False) -> dict[str, Any]:
  """Evaluates the state's parameters (the EMA ones with config.ema_decay), logs and writes the
  results (the per-class files at every evaluation, the per-video file at the final one)."""
  evaluator, workdir, config = run.evaluator, run.workdir, run.config
  # One process can leave an evaluation for a signal; several must finish it together.
  should_stop = (lambda: run.stop.reason is not None) if jax.process_count() == 1 else None
  results = evaluator.run(state_lib.eval_params(loop_state.state), should_stop=should_stop)
  scalars = {f"val_{k}": v for k, v in results.items()}
  run.writer.write_scalars(step, scalars)
  if evaluator.confusion is not None and run.is_main:
    image = metrics.confusion_matrix_image(evaluator.confusion, run.setup.class_names)
    run.writer.write_images(step, {"val_confusion_matrix": image[None]})
  _write_metrics(run, step, scalars)
  if final:
    videos = os.path.join(workdir, "eval_validation_videos.jsonl")
    with run_checkpoints.named_write_errors(workdir, videos):
      evaluator.write_videos(videos)
  if run.is_main:
    # At every evaluation: during a long run the files show the newest one.
    with run_checkpoints.named_write_errors(workdir, os.path.join(workdir, "eval_validation_*")):
      evaluator.write_class_reports(workdir)
    print(
      f"[eval step {step}] {evaluation.summary(results)} "
      f"({results['num_videos']} videos x {results['views_per_video']:g} views, "
      f"{config.eval_aggregation}{', EMA parameters' if run.setup.ema_decay else ''})",
      flush=True,
    )
  if run.best_metric and run.best_metric not in results:
    raise UserError(
      f"config.best_checkpoint_metric={run.best_metric!r} is not an evaluation "
      f"result; expected one of {sorted(results)} or ''."
    )
  return results


def _save(
  run: _Run, loop_state: _LoopState, step: int, results: dict[str, Any] | None = None
) -> None:
  """Checkpoint `step` (asynchronously) with every process's stream position, ranked by
  `results` when config.best_checkpoint_metric is set."""
  _fetch_and_check(run, loop_state)  # Never save parameters that went non-finite since the log.
  if step in run.manager.all_steps():  # A finished run resumed: its last step is saved already.
    return
  best = run.best_metric
  run_checkpoints.save(
    run.manager,
    step,
    loop_state.state,
    _data_state(loop_state.batches.position, _global_position(run, loop_state)),
    metrics={best: float(results[best])} if results is not None and best else None,
  )


def _stop_here(run: _Run, loop_state: _LoopState, step: int) -> dict[str, Any]:
  """Saves `step` (the last one done) and stops; before any step there is nothing to save."""
  if step == run.start_step:
    raise distributed.Stopped(run.stop.reason)
  _save(run, loop_state, step)
  run.manager.wait_until_finished()
  if run.is_main:
    print(
      f"Stopped by {run.stop.reason} at step {step}; checkpoint {step} is saved. Run the "
      "same command to resume.",
      flush=True,
    )
  run.writer.flush()
  return {"preempted": True, "step": step}


def _final_report(run: _Run, loop_state: _LoopState, results: dict[str, Any]) -> None:
  """The final lines (process 0): the headline metrics, the worst classes, the skipped records."""
  if run.is_main:
    print(
      f"Final: {evaluation.summary(results)} on {results['num_videos']} validation "
      f"videos (chance top-1 {1 / run.setup.dataset.num_classes:.2%}).",
      flush=True,
    )
    worst = run.evaluator.worst_classes_summary()
    if worst:
      print(worst, flush=True)
    if loop_state.batches.skipped:
      print(
        f"Skipped {loop_state.batches.skipped} bad training record(s) (skip_bad_records); the "
        "reasons are in the log above.",
        flush=True,
      )
  run.writer.flush()


class _Profile:
  """config.profile_steps > 0: a jax.profiler trace of that many steps after the first
  (compiled) one, into WORKDIR/profile/, on process 0 (as scenic and big_vision profile one
  host), with a Perfetto copy. Not clu's periodic_actions.Profile: that one records the trace
  as a work-unit artifact instead of saying where it is, traces for at least 3 s by default
  whatever the steps, and leaves its trace running when the loop ends first."""

  def __init__(self, workdir: str, start_step: int, num_steps: int):
    self.workdir, self.logdir = workdir, os.path.join(workdir, PROFILE_DIR)
    self.first, self.last = start_step + 2, start_step + 1 + int(num_steps)
    self.enabled = num_steps > 0 and jax.process_index() == 0
    self.running = False
    self.step = start_step  # The last step done.

  def after_step(self, step: int, state: Any) -> None:
    """Starts the trace after step first - 1, stops it after step `last` (its work done)."""
    if not self.enabled:
      return
    self.step = step
    if step == self.first - 1:
      if ownership.written_names(self.workdir) is not None:  # The marker's inventory.
        ownership.record_written(self.workdir, [PROFILE_DIR])
      jax.profiler.start_trace(self.logdir, create_perfetto_trace=True)
      self.running = True
    elif step == self.last and self.running:
      jax.block_until_ready(state)
      self.close()

  def close(self) -> None:
    """Ends a running trace (also when the loop ends before its last step) and says where."""
    if not self.running:
      return
    jax.profiler.stop_trace()
    self.running = False
    print(
      f"Profile of steps {self.first}-{self.step} written to {self.logdir}: open it with "
      "TensorBoard's profile plugin (pip install tensorboard-plugin-profile; tensorboard "
      f"--logdir {self.logdir}, the Profile tab), or open its perfetto_trace.json.gz in "
      "https://ui.perfetto.dev.",
      flush=True,
    )


def _stream_start(
  manager: ocp.CheckpointManager,
  step: int,
  local_batch_size: int,
  dataset: reader_config.DatasetConfig,
) -> tuple[int, int]:
  """Where this process's training stream resumes: the position saved with checkpoint `step`."""
  if not step:
    return 0, 0
  data_state = run_checkpoints.restore_data_state(manager, step)
  # A global-order checkpoint saves no per-process positions (_data_state): counted below.
  if (
    data_state and "positions" in data_state and data_state["process_count"] == jax.process_count()
  ):
    epoch, index = data_state["positions"][jax.process_index()]
    return int(epoch), int(index)
  # A checkpoint without a position (older vidtx), or another number of processes (other
  # shares): count the examples consumed; the stream then differs from an uninterrupted run.
  per_process = max(dataset.examples_per_subset["train"] // jax.process_count(), 1)
  epoch, index = divmod(step * local_batch_size, per_process)
  print(
    f"Checkpoint {step} has no input position for {jax.process_count()} process(es); the "
    f"stream restarts at epoch {epoch}, record {index}, counted from the step.",
    flush=True,
  )
  return epoch, index


def _global_stream_start(manager: ocp.CheckpointManager, step: int, global_batch: int):
  """Where a global-order stream resumes (vidtx.data.global_order): the global position saved
  with checkpoint `step`, on any number of processes; as build_train_dataset reads it, (0, q)."""
  if not step:
    return 0, 0
  data_state = run_checkpoints.restore_data_state(manager, step) or {}
  if "global_position" in data_state:
    return 0, int(data_state["global_position"])
  # A checkpoint of the per-process stream (global_order was off): the global stream from the
  # examples consumed.
  print(
    f"Checkpoint {step} has no global input position (dataset_configs.global_order was off); "
    f"the global stream starts at position {step * global_batch}, counted from the step.",
    flush=True,
  )
  return 0, step * global_batch


def _global_position(run: _Run, loop_state: _LoopState) -> int | None:
  """With dataset_configs.global_order, the global position after the last batch trained on (the
  same on every process); None otherwise."""
  dataset = run.setup.dataset
  if not dataset.global_order:
    return None
  total = global_order.record_count(dataset, "train")
  return global_order.global_position_after(
    loop_state.batches.position, total, run.config.batch_size
  )


def _choose_stream(
  config: ml_collections.ConfigDict, setup: _Setup, manager: ocp.CheckpointManager, step: int
) -> _Setup:
  """setup with dataset.global_order decided (a bool). None (auto): the global stream when the
  train split can be read in global order (global_order.why_not), the mesh gives each process
  its rows, and the run does not resume a checkpoint of the per-process stream (the resumed run
  keeps the stream it was written with: no silent jump); else the per-process stream, said in
  one line. True: required (an error names what is missing). False: per process."""
  dc = setup.dataset
  if dc.global_order is False:
    return setup
  rows_problem = _process_rows_problem(setup.mesh, config.batch_size)
  if dc.global_order:
    global_order.record_table(dc, "train")  # Raises, naming what is missing.
    if rows_problem:
      raise UserError(
        f"dataset_configs.global_order=True: {rows_problem}. Set "
        "dataset_configs.global_order=False."
      )
    return setup
  reason, fix = global_order.why_not(dc, "train"), None
  if reason is None and rows_problem:
    reason, fix = rows_problem, "a mesh whose devices are ordered by process"
  if reason is None and step and _checkpoint_stream(manager, step) == "per_process":
    reason = f"checkpoint {step} was written with it, and a resumed run continues its stream"
    fix = (
      "a new run, or --config.dataset_configs.global_order=True (which starts the global "
      f"stream at position {step * config.batch_size})"
    )
  if reason is not None and jax.process_index() == 0:
    print(global_order.per_process_note(dc, reason, fix), flush=True)
  return dataclasses.replace(setup, dataset=dataclasses.replace(dc, global_order=reason is None))


def _checkpoint_stream(manager: ocp.CheckpointManager, step: int) -> str | None:
  """'global' or 'per_process': the stream checkpoint `step` saved its position in (_data_state);
  None when it saved none (older vidtx)."""
  data_state = run_checkpoints.restore_data_state(manager, step) or {}
  if "stream" in data_state:
    return str(data_state["stream"])
  if "global_position" in data_state:
    return "global"
  return "per_process" if "positions" in data_state else None


def _process_rows_problem(mesh: jax.sharding.Mesh, global_batch: int) -> str | None:
  """A global-order stream gives process p rows [p * b, (p + 1) * b) of each global batch: the
  rows its devices must hold in the mesh (they do when the mesh orders devices by process).
  Why they do not, or None; every process checks every process's rows, so that all of them
  decide alike."""
  local = global_batch // jax.process_count()
  rows: dict[int, set[int]] = {}
  slices = sharding.data_sharding(mesh).devices_indices_map((global_batch,))
  for device, index in slices.items():
    rows.setdefault(device.process_index, set()).update(range(*index[0].indices(global_batch)))
  for process, held in sorted(rows.items()):
    first = process * local
    if sorted(held) != list(range(first, first + local)):
      return (
        f"process {process}'s devices hold rows {min(held)}..{max(held)} of the global batch, "
        f"not [{first}, {first + local}) as the global stream feeds them: the mesh does not "
        "order its devices by process"
      )
  return None


def _data_state(position: tuple[int, int], global_position: int | None = None) -> dict[str, Any]:
  """The input position saved with a checkpoint (JSON): every process's (epoch, index), or with
  dataset_configs.global_order the one global position (the same for any number of processes)."""
  if global_position is not None:
    return {
      "stream": "global",
      "global_position": int(global_position),
      "process_count": jax.process_count(),
    }
  positions = np.asarray([position], np.int64)
  if jax.process_count() > 1:
    positions = multihost_utils.process_allgather(np.asarray(position, np.int64))
  return {
    "stream": "per_process",
    "positions": np.asarray(positions).reshape(-1, 2).tolist(),
    "process_count": jax.process_count(),
  }


def main(argv):
  del argv
  # Orbax and clu log every save and metric at INFO; the progress line says what matters.
  logging.set_verbosity(logging.WARNING)
  distributed.initialize(
    flags.FLAGS.coordinator_address, flags.FLAGS.num_processes, flags.FLAGS.process_id
  )
  config = flags.FLAGS.config
  results = train_and_evaluate(
    config, flags.FLAGS.workdir, skip_damaged_checkpoints=flags.FLAGS.skip_damaged_checkpoints
  )
  if jax.process_index() == 0 and not results.get("preempted"):
    print(json.dumps({"top1": results["top1"], "top5": results["top5"]}))


def run_cli() -> None:
  """python -m vidtx.trainer: the same command line as train.py and vidtx-train (vidtx.cli)."""
  cli.train()


if __name__ == "__main__":
  run_cli()
