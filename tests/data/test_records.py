"""The filesystem requests of a start: each split's files listed once per process, and only the
files of the process's own share looked at (process 1 of 2 simulated in one process). Shards made
by another tool: read whole, with a note, until index_shards writes their frame tables."""

import collections
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf
from shared import reader_configs, tiny_config

from vidtx import data as vidtx_data
from vidtx.data import dmvr, index_shards, pipeline, reader_config, records

TRAIN_SHARDS, VALIDATION_SHARDS = 64, 8


def counted_gfile(monkeypatch) -> collections.Counter:
  """Counts each tf.io.gfile request by (function, path): what the cost on a bucket is."""
  calls = collections.Counter()
  for name in ("glob", "listdir", "exists", "stat", "isdir", "GFile", "walk"):
    original = getattr(tf.io.gfile, name)

    def counted(path, *args, _original=original, _name=name, **kwargs):
      calls[_name, str(path)] += 1
      return _original(path, *args, **kwargs)

    monkeypatch.setattr(tf.io.gfile, name, counted)
  return calls


@pytest.fixture
def dataset(tmp_path):
  """A DMVR config of 64 train and 8 validation shards of 2 small records each."""
  for split, shards in (("train", TRAIN_SHARDS), ("validation", VALIDATION_SHARDS)):
    for i in range(shards):
      with tf.io.TFRecordWriter(str(tmp_path / f"{split}.tfrecord-{i:05d}-of-{shards:05d}")) as w:
        w.write(b"a record")
        w.write(b"another")
  config = tiny_config(str(tmp_path))
  config.dataset_name = "dmvr"
  config.dataset_configs.tables = {
    "train": f"train.tfrecord@{TRAIN_SHARDS}",
    "validation": f"validation.tfrecord@{VALIDATION_SHARDS}",
  }
  return config


def test_a_start_lists_each_split_once_and_looks_only_at_its_own_files(dataset, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  calls = counted_gfile(monkeypatch)
  shares = dict(process_index=1, process_count=2)
  # What train.py does on process 1 before step 1, then an evaluation (twice: the counts once).
  dc = vidtx_data.prepare_dataset(dataset)
  vidtx_data.build_train_dataset(dc, batch_size=2, seed=0, **shares)
  for _ in range(2):
    vidtx_data.build_eval_dataset(dc, "validation", batch_size=2, **shares)
  assert pipeline.count_eval_elements(dc, "validation", **shares) == VALIDATION_SHARDS // 2 * 2

  by_function = collections.Counter()
  for (function, _), n in calls.items():
    by_function[function] += n
  own = set()
  for split in ("train", "validation"):
    own |= set(records.share_files(dc, split, 1, 2)[0])
  looked_at = {path for (function, path) in calls if function not in ("glob", "isdir")}
  assert looked_at <= own, sorted(looked_at - own)[:3]
  assert len(own) == (TRAIN_SHARDS + VALIDATION_SHARDS) // 2
  # 1 listing per split; base_dir checked once; 1 stat per split at prepare_dataset, 1 for the
  # training share, 1 per evaluation; the 4 own validation files counted (stat + header read).
  assert by_function == {"glob": 2, "isdir": 1, "stat": 2 + 1 + 2 + 4, "GFile": 4}, by_function


def test_prepare_dataset_lists_again_and_names_a_missing_shard(dataset):
  dc = vidtx_data.prepare_dataset(dataset)
  assert len(records.split_files(dc, "train")) == TRAIN_SHARDS
  os.remove(os.path.join(dc.base_dir, f"train.tfrecord-00005-of-{TRAIN_SHARDS:05d}"))
  with pytest.raises(ValueError, match=r"Shard .*train.tfrecord-00005-of-00064 .*\(1 of its 64"):
    vidtx_data.prepare_dataset(dataset)


def test_shards_of_another_tool_read_by_frames_once_indexed_elsewhere(tmp_path, capsys):
  users = tmp_path / "users"
  users.mkdir()
  rng = np.random.default_rng(0)
  with tf.io.TFRecordWriter(str(users / "train.tfrecord-00000-of-00001")) as writer:
    for i in range(6):
      video = rng.integers(0, 255, (5 + i, 16, 16, 3), np.uint8)
      writer.write(dmvr.make_sequence_example(video, i % 4))
  # The per-process stream, the same before and after indexing (auto would turn to the global
  # stream once the shards have their tables).
  configs = reader_configs(str(users), shuffle_buffer_size=3, random_flip=True, global_order=False)
  dc = reader_config.DatasetConfig.from_config(configs)
  note = records.frame_tables_note(dc, "train")
  assert "it has no frame table" in note and "vidtx.data.index_shards --shards=" in note

  def stream(dc):
    ds = pipeline.build_train_dataset(dc, batch_size=2, seed=1)
    return [b for _, b in zip(range(4), ds.as_numpy_iterator(), strict=False)]

  whole = stream(dc)
  index_dir = str(tmp_path / "indexes")
  index_shards.main([f"--shards={users}/train.tfrecord@1", f"--index_dir={index_dir}", "--quiet"])
  assert os.listdir(users) == ["train.tfrecord-00000-of-00001"]  # The user's folder untouched.
  configs.index_dir = index_dir
  dc = reader_config.DatasetConfig.from_config(configs)
  assert records.frame_tables_note(dc, "train") is None
  by_frames = stream(dc)
  for a, b in zip(by_frames, whole, strict=True):
    for field in a:
      np.testing.assert_array_equal(a[field], b[field], err_msg=field)


@pytest.mark.slow
def test_a_script_ends_with_a_frame_table_stream_still_open(tmp_path):
  # Without records._release_iterators, the iterator is destroyed during interpreter
  # finalization while tf.data's threads wait for the GIL: 5 exits in 6 hung.
  rng = np.random.default_rng(0)
  examples = [
    dmvr.make_sequence_example(rng.integers(0, 255, (12, 16, 16, 3), np.uint8), i % 4)
    for i in range(12)
  ]
  dmvr.write_shards(examples, str(tmp_path / "train.tfrecord"), 1)
  script = tmp_path / "script.py"
  script.write_text(
    "from shared import reader_configs\n"
    "from vidtx.data import pipeline, reader_config, records\n"
    f"dc = reader_config.DatasetConfig.from_config(reader_configs({str(tmp_path)!r}))\n"
    "assert records.frame_tables_missing(dc, 'train') is None\n"
    "it = pipeline.build_train_dataset(dc, batch_size=4, seed=0).as_numpy_iterator()\n"
    "for _ in range(3):\n"
    "  next(it)\n"
    "print('read', flush=True)\n"  # and exit with `it` alive
  )
  tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])}
  for _ in range(2):
    done = subprocess.run(
      [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "read", done.stderr[-2000:]
