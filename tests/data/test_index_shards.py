"""python -m vidtx.data.index_shards: indexes of existing shards, never written into a user's
folder."""

import os

import numpy as np
import pytest
import tensorflow as tf
from shared import digests

from vidtx import ownership
from vidtx.data import dmvr, index_shards, record_index


def write_examples(path: str, count: int, num_shards: int) -> list[str]:
  """Shards as another tool writes them: round-robin records, no index, no frame table."""
  names = dmvr.shard_names(path, num_shards)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  writers = [tf.io.TFRecordWriter(name) for name in names]
  for i in range(count):
    writers[i % num_shards].write(b"record %d " % i * (i + 1))
  for writer in writers:
    writer.close()
  return names


def test_a_users_folder_is_refused_and_left_as_it_was(tmp_path, capsys):
  users = tmp_path / "users"
  shards = write_examples(str(users / "train.tfrecord"), 7, 3)
  before = digests(users)
  table = f"--shards={users}/train.tfrecord@3"
  with pytest.raises(SystemExit):
    index_shards.main([table, "--quiet"])
  error = capsys.readouterr().err.strip()
  assert error.startswith(f"vidtx.data.index_shards: error: {users} is not a folder of shards")
  assert "--index_dir" in error and "\n" not in error
  index_dir = str(tmp_path / "indexes")
  counts = index_shards.main([table, f"--index_dir={index_dir}", "--quiet"])
  assert (counts["written"], counts["records"]) == (3, 7)
  assert ownership.marker_kind(index_dir) == "index"
  for shard in shards:
    rows = record_index.load_index(shard, index_dir)
    expected = [record.numpy() for record in tf.data.TFRecordDataset(shard)]
    assert [record_index.read_record(shard, *row) for row in rows] == expected
  # Idempotent; a replaced shard's index is named and written again.
  assert index_shards.main([table, f"--index_dir={index_dir}", "--quiet"])["kept"] == 3
  capsys.readouterr()
  os.remove(shards[1])
  os.rename(write_examples(str(tmp_path / "other"), 2, 1)[0], shards[1])
  counts = index_shards.main([table, f"--index_dir={index_dir}", "--quiet"])
  assert (counts["kept"], counts["rewritten"]) == (
    2,
    [record_index.index_path(shards[1], index_dir)],
  )
  assert f"disagreed with {shards[1]}" in capsys.readouterr().err
  assert record_index.load_index(shards[1], index_dir).shape == (2, 2)
  del before[os.path.basename(shards[1])]
  after = digests(users)
  del after[os.path.basename(shards[1])]
  assert after == before  # Nothing of the user's was written, moved or added.


def test_shards_of_a_vidtx_folder_get_their_index_beside_them(tmp_path):
  out = str(tmp_path / "out")
  ownership.claim(out, "shards")
  shards = write_examples(os.path.join(out, "train.tfrecord"), 5, 2)
  ownership.record_written(out, [os.path.basename(shard) for shard in shards])
  counts = index_shards.main([f"--shards={out}/train.*", "--quiet"])
  assert (counts["written"], counts["records"]) == (2, 5)
  np.testing.assert_array_equal(
    record_index.load_index(shards[0]), record_index.scan_shard(shards[0])
  )
  assert ownership.foreign_entries(out, "shards") == []  # The indexes are recorded as vidtx's.
