r"""Multi-view evaluation of the newest checkpoint in --workdir, or of a converted checkpoint.

  from vidtx import evaluate
  results = evaluate.evaluate(config, "runs/ts", "validation")

  python eval.py --config=configs/synthetic_timesformer.py --workdir=runs/ts \
      --config.dataset_configs.num_test_clips=4 --config.eval_aggregation=mean_softmax
  vidtx-eval --config=k400_timesformer --checkpoint=ckpt/timesformer_k400 \
      --config.dataset_configs.base_dir=/data/k400 [--workdir=runs/eval_converted]

With --checkpoint (a directory from vidtx-convert) the model and its parameters come
from the checkpoint, and the dataset, views and aggregation from the config.

Prints top-1 / top-5 and the 5 worst classes, and writes WORKDIR/eval_<split>.json, the
per-video results (eval_<split>_videos.jsonl) and, for single-label data, the per-class files
eval_<split>_per_class.csv, eval_<split>_confusion.csv and eval_<split>_confusion.png (one set
per head, e.g. eval_<split>_noun_*, with class splits). Uses the same evaluator as train.py, so
the numbers are those train.py reports for the same views and aggregation.

--workdir may be a run kept in a bucket (gs://bucket/run): its checkpoint is read there and the
results are written there as objects, each whole or not at all (vidtx.paths); a bucket has no
lock, so nothing keeps a train.py from writing that run meanwhile (vidtx.locks).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ml_collections
from absl import app, flags, logging

from vidtx import cli, locks, outputs, ownership, paths
from vidtx.errors import UserError

# JAX, TensorFlow, orbax and clu are imported inside the functions that use them, so that
# vidtx-eval --help and its flag errors answer at once (vidtx.cli).
if TYPE_CHECKING:
  from vidtx import evaluation
  from vidtx.data.reader_config import DatasetConfig


def evaluate(
  config: ml_collections.ConfigDict,
  workdir: str | None,
  split: str = "validation",
  checkpoint: str | None = None,
) -> dict[str, Any]:
  """Evaluates the newest checkpoint of `workdir` (or the converted `checkpoint`) on `split`;
  writes WORKDIR/eval_<split>.json when there is a workdir.

  The results have one writer at a time: process 0 holds the workdir's lock (vidtx.locks) from
  the start, so this refuses at once, naming the holder, while train.py trains that run (or
  another eval.py writes there)."""
  import jax

  from vidtx import config_checks, optim, run_checkpoints, run_files

  # The recipe's geometry as train.py resolves it (an overridden crop moves the evaluation
  # resize along), so eval.py with train.py's --config evaluates what train.py did.
  notes = config_checks.apply_recipe_defaults(config) + optim.resolve_batch(config)
  notes.append(config_checks.geometry_warning(config.dataset_configs) or "")
  if jax.process_index() == 0:
    for line in filter(None, notes):
      print(line, flush=True)

  with contextlib.ExitStack() as stack:
    held = False

    def own_workdir() -> None:
      """Process 0: the workdir takes results (vidtx.ownership) and is locked by this run."""
      nonlocal held
      if not workdir or jax.process_index() != 0 or held:
        return
      if paths.isdir(workdir):
        ownership.check_claimable(workdir, "run", legacy=run_files.is_earlier_run, hint=_HINT)
      else:  # A new directory for a converted checkpoint's results: made when results exist.
        ownership.claim(workdir, "run", legacy=run_files.is_earlier_run, hint=_HINT)
      stack.enter_context(locks.hold(workdir, "eval.py"))
      held = True

    if workdir:
      run_checkpoints.check_workdir(workdir)
      if paths.isdir(workdir):
        own_workdir()  # Before any work: a run being trained refuses this at once.
    return _evaluate(config, workdir, split, checkpoint, own_workdir)


_HINT = "Pass a new --workdir for the evaluation results."


def _evaluate(
  config: ml_collections.ConfigDict,
  workdir: str | None,
  split: str,
  checkpoint: str | None,
  own_workdir: Callable[[], None],
) -> dict[str, Any]:
  import jax

  from vidtx import data as vidtx_data
  from vidtx import run_checkpoints, sharding
  from vidtx import train_state as state_lib
  from vidtx.checkpoints import store
  from vidtx.data import records

  mesh = sharding.make_mesh(config.get("mesh"))
  dataset = vidtx_data.prepare_dataset(config)
  if split not in dataset.tables:
    raise UserError(
      f"--split={split!r} is not in config.dataset_configs.tables ({sorted(dataset.tables)})."
    )
  warning = records.empty_files_warning(dataset, split)
  if warning and jax.process_index() == 0:
    print(warning, flush=True)
  if checkpoint:
    converted = store.load(checkpoint)
    if converted.num_classes != dataset.num_classes:
      raise UserError(
        f"--checkpoint={checkpoint} has {converted.num_classes} classes, "
        f"config.dataset_configs.num_classes={dataset.num_classes}."
      )
    model = converted.build_model()
    store.check_params(
      model,
      converted.params,
      dict(num_frames=dataset.num_frames, crop_size=dataset.crop_size),
      where=f"--checkpoint={checkpoint} with the config's clips",
    )
    # Every process read the same file: each places its own devices' copies (any host count).
    replicated = sharding.replicated(mesh)
    params = state_lib.place(
      converted.params,
      jax.tree.map(
        lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=replicated), converted.params
      ),
    )
    return _evaluate_params(
      config, model, params, dataset, mesh, split, workdir, own_workdir, step=0
    )
  # The abstract state is built exactly as train.py builds it, so the checkpoint restores as is.
  model, abstract_state = state_lib.abstract_state_from_config(config, dataset, mesh)
  manager = run_checkpoints.checkpoint_manager(workdir, read_only=True)
  state = run_checkpoints.restore_latest(manager, abstract_state)
  if state is None:
    raise FileNotFoundError(
      f"No checkpoint in {os.path.join(workdir, 'checkpoints')}; "
      "train first with train.py --workdir=" + workdir
    )

  # A run that keeps an EMA of its parameters (config.ema_decay) is evaluated with it.
  return _evaluate_params(
    config,
    model,
    state_lib.eval_params(state),
    dataset,
    mesh,
    split,
    workdir,
    own_workdir,
    step=int(state.step),
  )


def _evaluate_params(
  config: ml_collections.ConfigDict,
  model: Any,
  params: Any,
  dataset: DatasetConfig,
  mesh: Any,
  split: str,
  workdir: str | None,
  own_workdir: Callable[[], None],
  step: int,
) -> dict[str, Any]:
  import jax

  from vidtx import data as vidtx_data
  from vidtx import evaluation, run_checkpoints, run_files, sharding

  own_workdir()  # A new --workdir: created (and locked) only now, with results to write.
  if workdir and jax.process_index() == 0:
    # Results go only into a run's directory or a new/empty one (vidtx.ownership).
    ownership.claim(workdir, "run", legacy=run_files.is_earlier_run, hint=_HINT)
  class_names = vidtx_data.class_names(dataset)
  evaluator = evaluation.MultiViewEvaluator(
    model,
    dataset,
    split,
    batch_size=config.eval_batch_size,
    mesh=mesh,
    aggregation=config.eval_aggregation,
    class_names=class_names,
    rules=sharding.rules_from_config(config.get("mesh")),
  )
  results = evaluator.run(params)
  results.update(
    step=step,
    split=split,
    aggregation=config.eval_aggregation,
    num_test_clips=dataset.num_test_clips,
    three_spatial_crops=dataset.do_three_spatial_crops,
  )
  if workdir and jax.process_index() > 0:
    # Each process's own videos (process 0's with the results below). Process 0 made the
    # workdir before the evaluation's first step, which every process has passed by now.
    path = os.path.join(workdir, f"eval_{split}_videos.jsonl")
    with run_checkpoints.named_write_errors(workdir, path):
      evaluator.write_videos(path)
  if jax.process_index() == 0:
    written = ""
    if workdir:
      # A full disk: one line naming the results being written (run_checkpoints.WriteError).
      with run_checkpoints.named_write_errors(workdir, os.path.join(workdir, f"eval_{split}*")):
        written = _write_results(evaluator, results, class_names, split, workdir, step)
    print(
      f"step {results['step']}: {evaluation.summary(results)} on "
      f"{results['num_videos']} {split} videos x {results['views_per_video']:g} views "
      f"({config.eval_aggregation}){written}",
      flush=True,
    )
    worst = evaluator.worst_classes_summary()
    if worst:
      print(worst, flush=True)
  return results


def _write_results(
  evaluator: evaluation.MultiViewEvaluator,
  results: dict[str, Any],
  class_names: list[str] | None,
  split: str,
  workdir: str,
  step: int,
) -> str:
  """Writes WORKDIR/eval_<split>.json, the per-video and per-class files and the TensorBoard
  scalars; returns what was written, in words, for the summary line."""
  from clu import metric_writers  # TensorFlow.

  from vidtx import metrics

  path = os.path.join(workdir, f"eval_{split}.json")
  with outputs.atomic_writer(path) as f:
    json.dump(results, f, indent=2)
  videos = evaluator.write_videos(os.path.join(workdir, f"eval_{split}_videos.jsonl"))
  written = f"; written to {path} (per video: {videos}"
  reports = evaluator.write_class_reports(workdir)
  if reports:
    written += "; per class: " + ", ".join(os.path.basename(p) for p in reports)
  written += ")"
  # TensorBoard: the scalars and the confusion matrix under WORKDIR/eval_<split>.
  writer = metric_writers.create_default_writer(os.path.join(workdir, f"eval_{split}"))
  writer.write_scalars(
    step,
    {k: v for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
  )
  if evaluator.confusion is not None:
    writer.write_images(
      step,
      {"confusion_matrix": metrics.confusion_matrix_image(evaluator.confusion, class_names)[None]},
    )
  writer.flush()
  return written


def main(argv):
  del argv
  from vidtx import distributed

  logging.set_verbosity(logging.WARNING)
  if not flags.FLAGS.workdir and not flags.FLAGS.checkpoint:
    raise app.UsageError("Pass --workdir (a train.py run) or --checkpoint (a converted one).")
  distributed.initialize(
    flags.FLAGS.coordinator_address, flags.FLAGS.num_processes, flags.FLAGS.process_id
  )
  stop = distributed.StopRequest(immediate=True)  # A signal ends it at once, in one line.
  try:
    evaluate(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.split, flags.FLAGS.checkpoint)
  finally:
    stop.restore()


def run_cli() -> None:
  """The command line (eval.py, vidtx-eval); flags are defined here, not at import."""
  cli.quiet_start_up()
  cli.define_config_flag()
  flags.DEFINE_string(
    "workdir",
    None,
    "Directory holding checkpoints/ from train.py (with "
    "--checkpoint: where eval_<split>.json goes, optional).",
  )
  flags.DEFINE_string("checkpoint", None, "A converted checkpoint directory (vidtx.convert).")
  flags.DEFINE_string("split", "validation", "Split of config.dataset_configs.tables.")
  # Multi-host launches (vidtx.distributed), as train.py.
  flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0.")
  flags.DEFINE_integer("num_processes", None, "Number of processes in the job.")
  flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes-1.")
  flags.mark_flags_as_required(["config"])
  cli.run(main, user_errors=cli.write_errors, doc=__doc__)


if __name__ == "__main__":
  run_cli()
