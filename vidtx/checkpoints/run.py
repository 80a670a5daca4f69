"""A train.py run as a converted checkpoint: python -m vidtx.convert --src RUN --out DIR.

    RUN/config.json    the run's full config (train.py writes it at every start)
    RUN/checkpoints/   orbax checkpoints of the train state, one directory per saved step

`export_run(RUN)` builds the model of config.json and restores the parameters of the newest
checkpoint (or of `step`) into the exact state train.py saved (eval.py's abstract state), then
describes the input as config.dataset_configs does. No data is read or generated: only the
config's fields are used, so a run exports on a machine without its dataset.
"""

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from vidtx import sharding
from vidtx import train_state as state_lib
from vidtx.checkpoints import store, training
from vidtx.checkpoints.store import Converted

CONFIG_FILE = "config.json"
CHECKPOINTS_DIR = "checkpoints"

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
  """Writes WORKDIR/config.json (the full config) atomically; returns its path."""
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2) + "\n")
  os.replace(tmp, path)  # Readers see the old file or the new one, never half of one.
  return path


def is_run_dir(path: str) -> bool:
  """Whether `path` is a train.py workdir with its config: config.json and checkpoints/."""
  return os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isdir(
    os.path.join(path, CHECKPOINTS_DIR)
  )


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """WORKDIR/config.json as a ConfigDict; errors say what is missing and how to get it."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"Run directory {workdir!r} does not exist.")
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"{workdir}: no {CONFIG_FILE}. train.py writes it when a run starts; for a run trained "
      f"before it did, run train.py again with the run's --config (and overrides) and "
      f"--workdir={workdir}: it writes {CONFIG_FILE} and resumes from the last checkpoint (a "
      "finished run only repeats its final evaluation)."
    )
  with open(path) as f:
    try:
      fields = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e}).") from e
  if not isinstance(fields, dict):
    raise ValueError(f"{path}: expected a JSON object (the config), got {type(fields).__name__}.")
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
    raise ValueError(f"{path}: field(s) {missing} missing; expected the config train.py wrote.")
  return config


def export_run(workdir: str, step: int | None = None) -> Converted:
  """The model and parameters of `workdir`'s newest checkpoint (or of `step`), with the
  preprocessing, aggregation and class names of its config."""
  workdir = os.path.abspath(workdir)
  config = read_config(workdir)
  config_path = os.path.join(workdir, CONFIG_FILE)
  preprocessing = _preprocessing(config, config_path)

  checkpoints = os.path.join(workdir, CHECKPOINTS_DIR)
  if not os.path.isdir(checkpoints):
    raise FileNotFoundError(
      f"{workdir}: no {CHECKPOINTS_DIR}/ directory; train first with "
      f"python train.py --workdir={workdir}."
    )
  with training.checkpoint_manager(workdir, read_only=True) as manager:
    steps = sorted(manager.all_steps())
    if not steps:
      raise FileNotFoundError(
        f"No checkpoint in {checkpoints}; train first with python train.py --workdir={workdir}."
      )
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise ValueError(
        f"--step={step}: {checkpoints} has no checkpoint of that step; it has step(s) {steps}."
      )
    # One device: the parameters only pass through on their way to the host, whatever mesh
    # saved them (orbax reshards on restore).
    mesh = Mesh(np.asarray(jax.local_devices()[:1]), (sharding.DATA_AXIS,))
    _, abstract_state = state_lib.abstract_state_from_config(config, config.dataset_configs, mesh)
    state = training.restore_step(manager, abstract_state, step)
  # The optimizer state stays behind: a converted checkpoint holds the parameters only.
  # A run that keeps an EMA (config.ema_decay) is evaluated with it, so that is what it exports.
  params = jax.tree.map(np.asarray, jax.device_get(state_lib.eval_params(state)))

  dataset = config.dataset_name
  if dataset == "synthetic":
    dataset += f" ({config.dataset_configs.get('task', 'motion')})"
  notes = [
    f"train.py run {config.get('experiment_name', '')!r} on {dataset}: the parameters "
    f"of step {step} as checkpointed (steps {steps} are)"
  ]
  labels = _labels(config, config_path, notes)
  return Converted(
    model_name=config.model_name,
    model_config=config.model.to_dict(),
    num_classes=int(config.dataset_configs.num_classes),
    params=params,
    preprocessing=preprocessing,
    labels=labels,
    source=dict(path=workdir, format="run", step=int(step), notes=notes),
  )


def _preprocessing(config: ml_collections.ConfigDict, config_path: str) -> dict[str, Any]:
  """The input of the run's evaluation, from config.dataset_configs (as the reader reads it)."""
  from vidtx.data import reader_config  # Imports TensorFlow: only when exporting.

  dc = config.dataset_configs
  try:
    mean, std = reader_config.normalisation(dc)
  except ValueError as e:
    raise ValueError(f"{config_path}: {e}") from e
  return dict(
    num_frames=int(dc.num_frames),
    stride=int(dc.stride),
    min_resize=int(dc.min_resize),
    crop_size=int(dc.crop_size),
    mean=[float(x) for x in mean],
    std=[float(x) for x in std],
    num_test_clips=int(dc.get("num_test_clips", 1)),
    do_three_spatial_crops=bool(dc.get("do_three_spatial_crops", False)),
    aggregation=config.eval_aggregation,
    **{k: dc[k] for k in store.SAMPLING_FIELDS if dc.get(k) is not None},
  )


def _labels(
  config: ml_collections.ConfigDict, config_path: str, notes: list[str]
) -> list[str] | None:
  """Class names: the synthetic task's, or base_dir/labels.txt of a DMVR dataset, else None."""
  from vidtx import data  # Imports TensorFlow: only when exporting.

  dc = config.dataset_configs
  if config.dataset_name == "synthetic":
    try:
      names = list(data.synthetic.get_task(dc.get("task", "motion")).class_names)
    except ValueError as e:
      raise ValueError(f"{config_path}: dataset_configs.task: {e}") from e
    if len(names) != dc.num_classes:  # train.py refuses such a config (prepare_dataset).
      raise ValueError(
        f"{config_path}: the synthetic task has {len(names)} classes, "
        f"dataset_configs.num_classes={dc.num_classes}."
      )
    return names
  if config.dataset_name != "dmvr" or not dc.get("base_dir"):
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
    os.path.isdir(os.path.join(path, CHECKPOINTS_DIR))
    and os.path.isfile(os.path.join(path, "metrics.jsonl"))
  )
