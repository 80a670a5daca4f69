r"""Trains a video transformer; resumes from the newest checkpoint in the workdir.

  from vidtx import trainer
  results = trainer.train_and_evaluate(config, "runs/ts")   # {'top1': ..., 'top5': ...}

  python train.py --config=configs/synthetic_timesformer.py --workdir=runs/ts
  vidtx-train --config=synthetic_timesformer:attention=space --workdir=runs/space \
      --config.num_training_steps=100

Every config field can be overridden with --config.a.b=value. The phases below run top to bottom:
config checks -> workdir -> mesh -> data -> model -> sharded init and resume -> config.json ->
step -> loop -> final evaluation. The config checks (check_config) read no data and no
parameters: the overrides of what a recipe set (config.recipe_defaults, configs/finetune.py's
model from init= and clip geometry) are named in a note, an overridden crop or short side takes
the evaluation's short side along; an init_from checkpoint that cannot start the model (its
sizes from its vidtx_model.json or config.json) stops the run in one line naming both shapes and
the flags; evaluation resizing far from training is flagged in one line. The start-up line says
where the parameters come from: resuming at step N, from init_from PATH, or from scratch.

The workdir must be new, empty or a run's (vidtx.ownership); a damaged newest checkpoint is named
(--skip_damaged_checkpoints resumes from the newest intact one). Export a run for vidtx.predict
with vidtx-convert --src WORKDIR --out DIR.

One writer per run: the trainer holds the workdir's lock (vidtx.locks, WORKDIR/.vidtx.lock) from
start to end, so a second train.py, or an eval.py writing its results there, refuses in one line
naming this run's process. On several hosts process 0 holds it (the workdir is shared): when it
is refused, the other processes of that launch end only once they lose process 0 (JAX's
coordinator). WORKDIR/checkpoints must hold only vidtx's checkpoints (orbax deletes old ones;
vidtx.checkpoints.training), and a full disk ends the run in one line naming the file or
checkpoint it was writing.
"""

import contextlib
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
from absl import flags, logging
from clu import metric_writers
from jax.experimental import multihost_utils

from vidtx import cli, distributed, locks, metrics, models, optim, ownership, paths, sharding
from vidtx import data as vidtx_data
from vidtx import evaluator as evaluator_lib
from vidtx import train_state as state_lib
from vidtx.checkpoints import init_from, training, vit
from vidtx.checkpoints import run as run_lib
from vidtx.data import bad_records, reader_config, records
from vidtx.progress import MetricsLog, Progress


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
  for line in check_config(config):
    if jax.process_index() == 0:
      print(line, flush=True)
  # Until the loop starts a signal stops the run at once (nothing to save yet).
  stop = distributed.StopRequest(immediate=True)
  try:
    with contextlib.ExitStack() as run:
      # --- Workdir: new, empty, or a run's (vidtx.ownership); never a folder of someone's
      # files. One writer at a time: the lock is taken before any slow work, so a second
      # train.py (or an eval.py) on the run refuses at once, naming this one.
      training.check_workdir(workdir)
      if jax.process_index() == 0:
        ownership.claim(
          workdir, "run", legacy=run_lib.is_earlier_run, hint="Choose a new --workdir for the run."
        )
        run.enter_context(locks.hold(workdir, "train.py"))
      else:
        paths.makedirs(workdir)  # A directory, or nothing to make on gs://.
      # A full disk: one line naming the file or checkpoint, not orbax's background tracebacks.
      run.enter_context(training.quiet_background_errors())
      run.enter_context(training.named_write_errors(workdir))
      manager = training.checkpoint_manager(  # Refuses a linked or foreign checkpoints/.
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
  is_main = jax.process_index() == 0

  # --- Mesh: ('data', 'fsdp', 'model') sizes from config.mesh (vidtx.sharding).
  mesh = sharding.make_mesh(config.get("mesh"))
  local_batch_size = sharding.check_batch_size(config.batch_size, mesh)

  # --- Data: the synthetic dataset is generated on first use (cached).
  dataset_configs = vidtx_data.prepare_dataset(config)
  if is_main:  # A split of which some files are empty trains on the others only: say so.
    for split in dataset_configs.tables:
      warning = records.empty_files_warning(dataset_configs, split)
      if warning:
        print(warning, flush=True)
  num_classes = dataset_configs.num_classes
  class_names = vidtx_data.class_names(dataset_configs)
  total_steps = optim.resolve_steps(
    config, "num_training", dataset_configs.examples_per_subset["train"], config.batch_size
  )
  if total_steps <= 0:
    raise ValueError("Set config.num_training_steps or config.num_training_epochs (> 0).")

  # --- Model and optimizer.
  model = models.build(config.model_name, config.model, num_classes)
  tx, schedule = state_lib.optimizer_from_config(config, dataset_configs)
  ema_decay = float(config.get("ema_decay") or 0.0)

  # --- Sharded init (parameters and optimizer state laid out by vidtx.sharding.RULES), then
  # resume from the newest checkpoint if there is one.
  input_shape = (
    local_batch_size,
    dataset_configs.num_frames,
    dataset_configs.crop_size,
    dataset_configs.crop_size,
    3,
  )
  state, abstract_state = state_lib.create_train_state(
    model, tx, input_shape, mesh, jax.random.key(config.rng_seed), ema=ema_decay > 0
  )
  best_metric = config.get("best_checkpoint_metric") or ""
  restored = training.restore_newest_intact(
    manager, abstract_state, skip_damaged=skip_damaged_checkpoints
  )
  if restored is not None:
    # Checkpoints of older vidtx hold no rng: the seed's, as they drew it.
    state = restored if restored.rng is not None else restored.replace(rng=state.rng)
  started_from = "from scratch"
  if restored is None and config.get("init_from") and config.init_from.get("checkpoint_path"):
    # A fresh run starts from a pretrained checkpoint by the papers' rules (image ViT) or by
    # name (a video model of the same family); a resumed run has its own parameters already.
    # The fresh parameters on every host (gathered one array at a time: a process cannot
    # fetch shards of other hosts' devices); every process computes the same result and
    # places only its own devices' shards of it (state_lib.replace_params).
    params, report = init_from.initialise(
      state_lib.host_copy(state.params, mesh),
      model_name=config.model_name,
      model_config=model.config,
      init_config=config.init_from,
      num_frames=dataset_configs.num_frames,
      crop_size=dataset_configs.crop_size,
      class_names=class_names,
    )
    if is_main:
      print(report.summary(), flush=True)
    state = state_lib.replace_params(state, params, tx, abstract_state)
    started_from = f"from init_from {config.init_from.checkpoint_path}"
  start_step = int(state.step)
  # --- Config: WORKDIR/config.json, rewritten at every start (a resumed run may override
  # fields) once its checkpoint restored, so a failed resume leaves the run's record intact;
  # it lets vidtx.convert export the run without its data.
  if is_main:
    with training.named_write_errors(workdir, os.path.join(workdir, run_lib.CONFIG_FILE)):
      run_lib.write_config(config, workdir)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  if is_main:
    print(
      f"{config.model_name} ({num_params / 1e6:.2f} M params) on {mesh.devices.size} "
      f"device(s) of {jax.process_count()} process(es), mesh {dict(mesh.shape)}: "
      f"{sharding.describe(abstract_state, mesh)}; "
      f"{'resuming at step ' + str(start_step) if start_step else started_from}, "
      f"{total_steps} steps of {config.batch_size} clips.",
      flush=True,
    )

  # The stream is deterministic for the seed; a resumed run starts it at the position saved
  # with the checkpoint, so it sees exactly the clips an uninterrupted run would have seen.
  position = _stream_start(manager, start_step, local_batch_size, dataset_configs)
  train_iter = vidtx_data.build_train_dataset(
    dataset_configs,
    batch_size=local_batch_size,
    seed=config.rng_seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    start_position=position,
  ).as_numpy_iterator()
  evaluator = evaluator_lib.MultiViewEvaluator(
    model,
    dataset_configs,
    "validation",
    batch_size=config.eval_batch_size,
    mesh=mesh,
    aggregation=config.eval_aggregation,
    class_names=class_names,
  )

  # --- The training step: one jit with explicit shardings, the state donated, the batch split
  # over the data-parallel axes, gradients accumulated over config.grad_accum_steps.
  train_step = state_lib.make_train_step(
    model,
    tx,
    schedule,
    abstract_state,
    mesh,
    num_classes=num_classes,
    label_smoothing=config.label_smoothing,
    class_splits=reader_config.class_splits(dataset_configs),
    multi_label=bool(dataset_configs.get("multi_label", False)),
    mixup_alpha=float(config.get("mixup", {}).get("alpha", 0.0) or 0.0),
    grad_accum_steps=int(config.get("grad_accum_steps") or 1),
    ema_decay=ema_decay,
  )

  # --- Loop: log, checkpoint, evaluate; stop cleanly on SIGTERM/SIGINT.
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  with training.named_write_errors(workdir, metrics_path):
    metrics_log = MetricsLog(metrics_path, enabled=is_main, drop_after_step=start_step)

  def log_metrics(step: int, values: dict[str, Any]) -> None:
    with training.named_write_errors(workdir, metrics_path):
      metrics_log.write(step, values)

  progress = Progress(total_steps, start_step, config.batch_size, enabled=is_main)
  pending = []  # (step, device metrics) since the last fetch, fetched together (no host syncs).
  skipped_records = 0  # bad records dropped (dataset_configs.skip_bad_records) since the start

  def fetch_and_check() -> list[dict[str, float]]:
    """The pending metrics on the host; stops at the first non-finite loss or gradient."""
    nonlocal pending
    # Metrics are replicated (the step's out_shardings): each process reads its own copy.
    fetched = [(s, state_lib.fetch_replicated(m)) for s, m in pending]
    pending = []
    for s, m in fetched:
      if not (np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])):
        # Nothing after the last good step is saved; async saves in flight finish first.
        manager.wait_until_finished()
        raise FloatingPointError(
          f"Non-finite training at step {s}: loss {float(m['loss'])}, gradient norm "
          f"{float(m['grad_norm'])}. Stopped without saving; the last good checkpoint is "
          f"{manager.latest_step()} in {manager.directory} (lower the learning rate or "
          "enable config.max_grad_norm, then resume)."
        )
    return [m for _, m in fetched]

  # One process can leave an evaluation for a signal; several must finish it together.
  should_stop = (lambda: stop.reason is not None) if jax.process_count() == 1 else None

  def evaluate(step: int, final: bool = False) -> dict[str, Any]:
    results = evaluator.run(state_lib.eval_params(state), should_stop=should_stop)
    scalars = {f"val_{k}": v for k, v in results.items()}
    writer.write_scalars(step, scalars)
    if evaluator.confusion is not None and is_main:
      writer.write_images(
        step,
        {
          "val_confusion_matrix": metrics.confusion_matrix_image(evaluator.confusion, class_names)[
            None
          ]
        },
      )
    log_metrics(step, scalars)
    if final:
      videos = os.path.join(workdir, "eval_validation_videos.jsonl")
      with training.named_write_errors(workdir, videos):
        evaluator.write_videos(videos)
    if is_main:
      # At every evaluation: during a long run the files show the newest one.
      with training.named_write_errors(workdir, os.path.join(workdir, "eval_validation_*")):
        evaluator.write_class_reports(workdir)
      print(
        f"[eval step {step}] {evaluator_lib.summary(results)} "
        f"({results['num_videos']} videos x {results['views_per_video']:g} views, "
        f"{config.eval_aggregation}{', EMA parameters' if ema_decay else ''})",
        flush=True,
      )
    if best_metric and best_metric not in results:
      raise ValueError(
        f"config.best_checkpoint_metric={best_metric!r} is not an evaluation "
        f"result; expected one of {sorted(results)} or ''."
      )
    return results

  def save(step: int, results: dict[str, Any] | None = None) -> None:
    fetch_and_check()  # Never save parameters that went non-finite since the last log.
    if step in manager.all_steps():  # A finished run resumed: its last step is saved already.
      return
    training.save(
      manager,
      step,
      state,
      _data_state(position),
      metrics={best_metric: float(results[best_metric])}
      if results is not None and best_metric
      else None,
    )

  def stop_here(step: int) -> dict[str, Any]:
    """Saves `step` (the last one done) and stops; before any step there is nothing to save."""
    if step == start_step:
      raise distributed.Stopped(stop.reason)
    save(step)
    manager.wait_until_finished()
    if is_main:
      print(
        f"Stopped by {stop.reason} at step {step}; checkpoint {step} is saved. Run the "
        "same command to resume.",
        flush=True,
      )
    writer.flush()
    return {"preempted": True, "step": step}

  stop.begin_loop()  # From here a signal saves the last step done, then stops.
  if is_main:  # The first step waits for XLA's compilation: minutes for a large model.
    print("Compiling the train step (the first step waits for it) ...", flush=True)
  loop_start = time.monotonic()
  try:
    for step in range(start_step + 1, total_steps + 1):
      try:
        batch = distributed.next_or_stop(train_iter, stop)
      except tf.errors.OpError as error:  # Named: the file and record, the split, the counts.
        raise bad_records.reader_error(
          error,
          dataset_configs,
          "train",
          process_index=jax.process_index(),
          process_count=jax.process_count(),
        ) from error
      if batch is None:  # A signal while waiting for data (which may never come).
        return stop_here(step - 1)
      device_batch, host = bad_records.split_host_fields(batch)
      position = bad_records.next_position(host)
      skipped_records += int(host["skipped"].sum())
      state, step_metrics = train_step(state, sharding.to_global(device_batch, mesh))
      pending.append((step, step_metrics))
      if step == start_step + 1 and is_main:
        jax.block_until_ready(step_metrics["loss"])  # Once: says when compilation ended.
        print(
          f"First step done after {time.monotonic() - loop_start:.0f} s (compilation and the "
          f"first batch); a line every {config.log_every_steps} steps from here.",
          flush=True,
        )

      if step % config.log_every_steps == 0 or step == total_steps:
        fetched = fetch_and_check()
        summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        summary["learning_rate"] = float(fetched[-1]["learning_rate"])
        if skipped_records:
          summary["skipped_records"] = skipped_records
        summary.update(progress.update(step, summary))  # Prints the line on process 0.
        writer.write_scalars(step, summary)
        log_metrics(step, summary)

      if step == total_steps:
        break  # Saved after the final evaluation below, which ranks it.
      results = None
      if config.eval_every_steps and step % config.eval_every_steps == 0:
        try:
          results = evaluate(step)
        except evaluator_lib.EvaluationStopped:
          return stop_here(step)
      if step % config.checkpoint_every_steps == 0 or results is not None:
        save(step, results)
      if stop.requested(step, sync=step % config.log_every_steps == 0):
        return stop_here(step)

    # --- Final evaluation (also when resuming a finished run: it is cheap and answers the
    # question), then the last checkpoint, ranked by it.
    try:
      results = evaluate(total_steps, final=True)
    except evaluator_lib.EvaluationStopped:  # Resuming repeats the final evaluation.
      return stop_here(total_steps)
    save(total_steps, results)
  finally:
    manager.wait_until_finished()
  if is_main:
    print(
      f"Final: {evaluator_lib.summary(results)} on {results['num_videos']} validation "
      f"videos (chance top-1 {1 / num_classes:.2%}).",
      flush=True,
    )
    worst = evaluator.worst_classes_summary()
    if worst:
      print(worst, flush=True)
    if skipped_records:
      print(
        f"Skipped {skipped_records} bad training record(s) (skip_bad_records); the reasons "
        "are in the log above.",
        flush=True,
      )
  writer.flush()
  return results


def _stream_start(
  manager: ocp.CheckpointManager,
  step: int,
  local_batch_size: int,
  dataset_configs: ml_collections.ConfigDict,
) -> tuple[int, int]:
  """Where this process's training stream resumes: the position saved with checkpoint `step`."""
  if not step:
    return 0, 0
  data_state = training.restore_data_state(manager, step)
  if data_state and data_state["process_count"] == jax.process_count():
    epoch, index = data_state["positions"][jax.process_index()]
    return int(epoch), int(index)
  # A checkpoint without a position (older vidtx), or another number of processes (other
  # shares): count the examples consumed; the stream then differs from an uninterrupted run.
  per_process = max(dataset_configs.examples_per_subset["train"] // jax.process_count(), 1)
  epoch, index = divmod(step * local_batch_size, per_process)
  print(
    f"Checkpoint {step} has no input position for {jax.process_count()} process(es); the "
    f"stream restarts at epoch {epoch}, record {index}, counted from the step.",
    flush=True,
  )
  return epoch, index


def _data_state(position: tuple[int, int]) -> dict[str, Any]:
  """The input position of every process, saved with a checkpoint (JSON)."""
  positions = np.asarray([position], np.int64)
  if jax.process_count() > 1:
    positions = multihost_utils.process_allgather(np.asarray(position, np.int64))
  return {
    "positions": np.asarray(positions).reshape(-1, 2).tolist(),
    "process_count": jax.process_count(),
  }


# ---------------------------------------------------------------------------------------------
# Start-up checks of the config (before any work; nothing here reads data or parameters).
# ---------------------------------------------------------------------------------------------

# Evaluation's short side over training's beyond this factor (either way) is flagged.
GEOMETRY_FACTOR = 2.0


def check_config(config: ml_collections.ConfigDict) -> list[str]:
  """The lines to print at start-up: overrides of the recipe's values (apply_recipe_defaults),
  the batch and learning rate for this many devices (optim.resolve_batch), a geometry warning
  (geometry_warning); raises ValueError when the init checkpoint cannot start the model
  (check_init_fits) or the batch does not split over the devices. May set
  dataset_configs.eval_min_resize (see apply_recipe_defaults), batch_size, eval_batch_size and
  lr_configs.base_learning_rate (see optim.resolve_batch)."""
  lines = apply_recipe_defaults(config) + optim.resolve_batch(config)
  check_init_fits(config)
  warning = geometry_warning(config.dataset_configs)
  return lines + ([warning] if warning else [])


def _differences(config: ml_collections.ConfigDict, group: str) -> dict[str, tuple[Any, Any]]:
  """Field -> (recipe's value, current value) of config.<group> fields that differ from
  config.recipe_defaults.<group>."""
  defaults = config.recipe_defaults.get(group) or {}
  return {
    field: (value, config[group].get(field))
    for field, value in defaults.items()
    if config[group].get(field) != value
  }


def apply_recipe_defaults(config: ml_collections.ConfigDict) -> list[str]:
  """Tells the command line's overrides from what the recipe set (config.recipe_defaults, which
  configs/finetune.py writes: the model fields it followed from init= and its clip geometry),
  and returns the notes to print.

  An override wins, with a note naming it and the recipe's value. An overridden crop_size or
  min_resize takes dataset_configs.eval_min_resize along unless that is overridden too:
  evaluation then resizes short sides as training does (the recipe's eval_min_resize /
  min_resize, at least the crop), so that a 32-pixel crop is not evaluated on a 224-pixel frame.
  Configs without recipe_defaults (every other recipe, older runs) are left as they are.
  """
  if not config.get("recipe_defaults"):
    return []
  source = config.recipe_defaults.get("source") or ""
  model = _differences(config, "model")
  geometry = _differences(config, "dataset_configs")
  lines = []
  changed = [(f"model.{k}", v) for k, v in model.items()]
  changed += [(f"dataset_configs.{k}", v) for k, v in geometry.items()]
  if changed:
    where = f" ({source})" if source else ""
    lines.append(
      f"note: --config overrides win over configs/finetune.py's values{where}: "
      + ", ".join(f"{name}={ours} (recipe: {theirs})" for name, (theirs, ours) in changed)
      + "."
    )
  dc, defaults = config.dataset_configs, config.recipe_defaults.dataset_configs
  follows = {"crop_size", "min_resize"} & set(geometry)
  if follows and "eval_min_resize" in defaults and "eval_min_resize" not in geometry:
    ratio = defaults.eval_min_resize / defaults.min_resize
    dc.eval_min_resize = max(int(dc.crop_size), round(dc.min_resize * ratio))
    given = ", ".join(f"{k}={dc[k]}" for k in sorted(follows))
    lines.append(
      f"note: dataset_configs.eval_min_resize={dc.eval_min_resize} follows the overridden "
      f"{given} (evaluation resizes short sides as training does); "
      "--config.dataset_configs.eval_min_resize sets it."
    )
  return lines


def check_init_fits(config: ml_collections.ConfigDict) -> None:
  """ValueError in one line, before any work, when config.init_from's checkpoint (a converted
  directory or a train.py run: its sizes read from its description) cannot start the model:
  both shapes, what differs, and the flags that make them agree."""
  init = config.get("init_from") or {}
  path = init.get("checkpoint_path") or ""
  if not path or init.get("skip_patterns") or not os.path.isdir(path):
    return  # Parameters kept fresh on purpose, or a format read only by converting it:
    # init_from checks them parameter by parameter.
  shape = vit.read_shape(path)
  if shape is None:
    return
  if config.model_name not in models.MODELS:
    return  # models.build names it.
  model = models.MODELS[config.model_name].make_config(config.model)
  misfits = vit.misfits(shape, config.model_name, model)
  if not misfits:
    return
  dc = config.dataset_configs
  ours = vit.shape_of(
    config.model_name,
    config.model.to_dict(),
    crop_size=dc.get("crop_size"),
    num_frames=dc.get("num_frames"),
  )
  source = (config.get("recipe_defaults") or {}).get("source") or ""
  name = source or f"config.init_from.checkpoint_path={path}"
  if misfits[0][0] == "model_name":
    raise ValueError(
      f"{name} holds a {shape.describe(family=True)}, which cannot start a {config.model_name}; "
      f"pass an image ViT or a {config.model_name} checkpoint."
    )
  overridden = _differences(config, "model") if source else {}
  words = dict(hidden_size="width", num_heads="heads", mlp_dim="MLP", patch_size="patch")
  words.update(num_layers="layers", spatial_layers="spatial layers", tubelet_size="tubelet")
  words.update(attention="attention")
  differ = ", ".join(f"{words[f]} {theirs} vs {mine}" for f, theirs, mine in misfits)
  fixes = []
  for field, theirs, _ in misfits:
    if field in ("patch_size", "tubelet_size"):  # Both live in model.variant.
      letter = str(config.model.variant).split("/")[0]
      tubelet = ours.tubelet_size if shape.is_image_vit else shape.tubelet_size
      field, theirs = (
        "variant",
        f"{letter}/{shape.patch_size}" + (f"x{tubelet}" if tubelet > 1 else ""),
      )
    if field in overridden:
      fix = f"drop --config.model.{field}={overridden[field][1]}"
    else:
      fix = f"--config.model.{field}={theirs}"
    if fix not in fixes:
      fixes.append(fix)
  hint = "" if source else " (configs/finetune.py's init= sets them by itself)"
  raise ValueError(
    f"{name} holds {shape.describe(family=True)}; the model is {ours.describe(family=True)}: "
    f"{differ}. To start from it: {' '.join(fixes)}{hint}."
  )


def geometry_warning(dataset_configs: ml_collections.ConfigDict) -> str | None:
  """One line when evaluation resizes frames far from how training does (their short sides
  over GEOMETRY_FACTOR apart): its crops then see another part of the frame, at another
  scale, and validation can sit at chance while training learns."""
  dc = dataset_configs
  if dc.get("crop_size") is None or dc.get("min_resize") is None:
    return None  # The reader's validation names it.
  crop, train = int(dc.crop_size), int(dc.min_resize)
  evaluation = int(dc.get("eval_min_resize") or train)
  if 1 / GEOMETRY_FACTOR <= evaluation / train <= GEOMETRY_FACTOR:
    return None
  return (
    f"warning: evaluation resizes short sides to {evaluation} "
    f"(dataset_configs.eval_min_resize), training to {train} (dataset_configs.min_resize), "
    f"both then crop {crop} (dataset_configs.crop_size): a validation crop sees "
    f"{crop / evaluation:.0%} of the short side, a training crop {crop / train:.0%}, so "
    "validation may stay at chance however well training goes; "
    f"--config.dataset_configs.eval_min_resize={max(crop, train)} evaluates as training sees."
  )


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
