"""Video data: DMVR TFRecords (vidtx.data.dmvr), the synthetic dataset, the tf.data reader.

  dataset_configs = prepare_dataset(config)   # generates the synthetic data on first use
  train = build_train_dataset(dataset_configs, batch_size=32, seed=0)
  val = build_eval_dataset(dataset_configs, "validation", batch_size=32)
"""

import os

import ml_collections
import tensorflow as tf

from vidtx.data import dmvr, synthetic
from vidtx.data.pipeline import (
  build_eval_dataset,
  build_train_dataset,
  validate_dataset_configs,
)

__all__ = [
    "DATASETS",
    "build_eval_dataset",
    "build_train_dataset",
    "prepare_dataset",
    "read_label_names",
]

DATASETS = ("synthetic", "dmvr")


def prepare_dataset(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of config.dataset_configs ready for the readers, checked; base_dir filled in.

  'synthetic': generates the dataset unless cached (vidtx.data.synthetic.ensure_dataset) and
  checks num_classes against the task. 'dmvr': checks that base_dir and every table's files exist.
  """
  name = config.get("dataset_name")
  if name not in DATASETS:
    raise ValueError(f"Unknown config.dataset_name {name!r}; expected one of {list(DATASETS)}.")
  dataset_configs = ml_collections.ConfigDict(config.dataset_configs.to_dict())
  validate_dataset_configs(dataset_configs)  # Before the (slow) generation.
  if name == "synthetic":
    task_name = dataset_configs.get("task", "motion")
    task = synthetic.get_task(task_name)
    if dataset_configs.get("num_classes") != len(task.class_names):
      raise ValueError(
          f"dataset_configs.num_classes={dataset_configs.get('num_classes')} but the synthetic "
          f"task {task_name!r} has {len(task.class_names)} classes {list(task.class_names)}.")
    if dataset_configs.get("random_flip", False) and not task.flip_invariant:
      raise ValueError(
          f"dataset_configs.random_flip=True would mirror the videos of the synthetic task "
          f"{task_name!r} and swap its classes {list(task.class_names)}; set it to False.")
    with dataset_configs.unlocked():
      dataset_configs.base_dir = synthetic.ensure_dataset(dataset_configs)
  else:
    base_dir = dataset_configs.get("base_dir")
    if not base_dir:
      raise ValueError("config.dataset_configs.base_dir is empty; expected the directory that "
                       "holds the TFRecord shards.")
    if not tf.io.gfile.isdir(base_dir):
      raise ValueError(f"config.dataset_configs.base_dir={base_dir!r} is not a directory.")
    tables = dataset_configs.get("tables") or {}
    if not tables:
      raise ValueError("config.dataset_configs.tables is empty; expected e.g. "
                       "{'train': 'train.tfrecord@16', 'validation': 'validation.tfrecord@4'}.")
    for table in tables.values():
      dmvr.expand_table(base_dir, table)  # Raises ValueError naming the missing file.
  return dataset_configs


def read_label_names(base_dir: str) -> list[str]:
  """Class names, one per line of base_dir/labels.txt (line i is class i)."""
  path = os.path.join(base_dir, "labels.txt")
  if not tf.io.gfile.exists(path):
    raise ValueError(f"No labels.txt in {base_dir!r}; expected one class name per line.")
  with tf.io.gfile.GFile(path) as f:
    return [line.rstrip("\n") for line in f.read().splitlines() if line.strip()]
