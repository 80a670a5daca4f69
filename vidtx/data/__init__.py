"""Video data: DMVR TFRecords (vidtx.data.dmvr), the synthetic dataset, TFDS datasets
(vidtx.data.tfds_data), the tf.data reader (vidtx.data.pipeline), augmentation
(vidtx.data.augment) and the converter from video files (python -m vidtx.data.make_shards).

  dataset = prepare_dataset(config)   # a DatasetConfig; generates the synthetic data on first use
  train = build_train_dataset(dataset, batch_size=32, seed=0)
  val = build_eval_dataset(dataset, "validation", batch_size=32)
"""

import dataclasses
import importlib
import os
from typing import Any

import ml_collections

from vidtx.data.reader_config import DatasetConfig
from vidtx.errors import UserError

__all__ = [
  "DATASETS",
  "build_eval_dataset",
  "build_train_dataset",
  "class_names",
  "count_eval_elements",
  "prepare_dataset",
  "read_label_names",
  "reader_error",
]

DATASETS = ("synthetic", "dmvr", "tfds:NAME")

# TensorFlow's import takes seconds: the readers and the submodules that use it are imported when
# first asked for (vidtx.data.build_train_dataset, vidtx.data.dmvr), so that vidtx-make-shards
# --help answers at once.
_LAZY = {
  "build_eval_dataset": "pipeline",
  "build_train_dataset": "pipeline",
  "count_eval_elements": "pipeline",
  "reader_error": "bad_records",
}


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    return getattr(importlib.import_module(f"vidtx.data.{_LAZY[name]}"), name)
  try:
    return importlib.import_module(f"vidtx.data.{name}")  # A submodule: vidtx.data.synthetic.
  except ModuleNotFoundError:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def prepare_dataset(config: ml_collections.ConfigDict) -> DatasetConfig:
  """config.dataset_configs read once, checked and typed (a DatasetConfig), base_dir filled in:
  what the readers and the rest of a run take.

  'synthetic': generates the dataset unless cached (vidtx.data.synthetic.ensure_dataset) and
  checks num_classes against the task. 'dmvr': checks that base_dir and every table's files exist.
  'tfds:NAME': a TFDS dataset prepared locally; tables map split names to TFDS splits (default
  train and validation), num_classes and examples_per_subset come from its info when unset.
  The source's name is recorded as DatasetConfig.dataset_name for the reader. A split that
  holds no record raises UserError naming it (and its files).
  """
  name = config.get("dataset_name")
  if not isinstance(name, str) or (name not in DATASETS[:2] and not name.startswith("tfds:")):
    raise UserError(f"Unknown config.dataset_name {name!r}; expected one of {list(DATASETS)}.")
  dataset_configs = ml_collections.ConfigDict(config.dataset_configs.to_dict())
  with dataset_configs.unlocked():
    dataset_configs.dataset_name = name
  if name.startswith("tfds:"):
    return _prepare_tfds(name, dataset_configs)
  dataset = DatasetConfig.from_config(dataset_configs)  # Checked before the (slow) generation.
  import jax
  import tensorflow as tf

  from vidtx.data import records, synthetic

  if name == "synthetic":
    task = synthetic.get_task(dataset.task)
    if dataset.num_classes != len(task.class_names):
      raise UserError(
        f"dataset_configs.num_classes={dataset.num_classes} but the synthetic "
        f"task {dataset.task!r} has {len(task.class_names)} classes {list(task.class_names)}."
      )
    if dataset.random_flip and not task.flip_invariant:
      raise UserError(
        f"dataset_configs.random_flip=True would mirror the videos of the synthetic task "
        f"{dataset.task!r} and swap its classes {list(task.class_names)}; set it to False."
      )
    # The generator reads its own fields (video_length, video_size, seed) of dataset_configs.
    return dataclasses.replace(dataset, base_dir=synthetic.ensure_dataset(dataset_configs))
  else:
    base_dir = dataset.base_dir
    if not base_dir:
      raise UserError(
        "config.dataset_configs.base_dir is empty; expected the directory that "
        "holds the TFRecord shards."
      )
    if not tf.io.gfile.isdir(base_dir):
      raise UserError(f"config.dataset_configs.base_dir={base_dir!r} is not a directory.")
    tables = dataset.tables
    if not tables:
      raise UserError(
        "config.dataset_configs.tables is empty; expected e.g. "
        "{'train': 'train.tfrecord@16', 'validation': 'validation.tfrecord@4'}."
      )
    for split in tables:
      # One listing of the split's files for the whole run (records.split_files); raises
      # ValueError naming a missing file.
      records.split_files(dataset, split, refresh=True)
      # A split of 0-byte files would train forever on nothing: name it before any compile.
      records.check_split_has_records(
        dataset,
        split,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        whole_split=True,
      )
  return dataset


def _prepare_tfds(name: str, dataset_configs: ml_collections.ConfigDict) -> DatasetConfig:
  from vidtx.data import tfds_data  # TFDS only when asked for: its import is slow.

  dc = dataset_configs
  info = tfds_data.info(name[len("tfds:") :], dc)  # Raises ValueError when not prepared.
  with dc.unlocked():
    if not dc.get("tables"):
      dc.tables = {"train": "train", "validation": "validation"}
    if dc.get("num_classes") is None:
      dc.num_classes = info["num_classes"]
    elif int(dc.num_classes) != info["num_classes"]:
      raise UserError(
        f"config.dataset_configs.num_classes={dc.num_classes} but {name} has "
        f"{info['num_classes']} classes."
      )
    examples = dict(dc.get("examples_per_subset") or {})
    for split, tfds_split in dict(dc.tables).items():
      if tfds_split not in info["examples_per_subset"]:
        raise UserError(
          f"config.dataset_configs.tables.{split}={tfds_split!r}: {name} has "
          f"the splits {sorted(info['examples'])}."
        )
      if not info["examples_per_subset"][tfds_split]:
        raise UserError(
          f"config.dataset_configs.tables.{split}={tfds_split!r}: this split of "
          f"{name} holds no example (tfds_data_dir="
          f"{dc.get('tfds_data_dir') or 'the TFDS default'}); "
          "prepare it again or point the table at another split."
        )
      examples.setdefault(split, info["examples_per_subset"][tfds_split])
    dc.examples_per_subset = examples
    if not dc.get("base_dir"):
      dc.base_dir = dc.get("tfds_data_dir") or ""
  return DatasetConfig.from_config(dc)


def read_label_names(base_dir: str) -> list[str]:
  """Class names, one per line of base_dir/labels.txt (line i is class i)."""
  import tensorflow as tf

  path = os.path.join(base_dir, "labels.txt")
  if not tf.io.gfile.exists(path):
    raise UserError(f"No labels.txt in {base_dir!r}; expected one class name per line.")
  with tf.io.gfile.GFile(path) as f:
    return [line.rstrip("\n") for line in f.read().splitlines() if line.strip()]


def class_names(dataset: DatasetConfig) -> list[str] | None:
  """Class names for the confusion matrix and per-video results, when the dataset has them."""
  from vidtx.data import synthetic

  if dataset.dataset_name == "synthetic":
    return list(synthetic.get_task(dataset.task).class_names)
  if dataset.is_tfds:
    from vidtx.data import tfds_data  # TFDS only when asked for: its import is slow.

    return tfds_data.info(dataset.dataset_name[len("tfds:") :], dataset.tfds_options)["class_names"]
  try:
    names = read_label_names(dataset.base_dir)
  except ValueError:
    return None
  return names if len(names) == dataset.num_classes else None
