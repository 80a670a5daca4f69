"""vidtx.data.shard_store and the bucket side of the record indexes and frame tables, on local
files (the bucket itself: tests/integration/test_gcs_shards.py): versions compared on the fields
both sides have, ranged reads through TensorFlow's GFile on handles kept per thread, and a
shard's index and table built in one pass, equal to those built record by record."""

import json
import os

import numpy as np
import pytest

from vidtx.data import dmvr, frame_table, record_index, shard_store
from vidtx.errors import UserError


def test_versions_compare_on_the_fields_both_sides_have():
  gcs = {"shard_bytes": 10, "shard_generation": "7", "shard_mtime_ns": 5_000}
  assert shard_store.changed(gcs, dict(gcs)) is None
  # An index made through gcsfs, read through TensorFlow (no generation): the mtime decides.
  assert shard_store.changed(gcs, {"shard_bytes": 10, "shard_mtime_ns": 5_000}) is None
  rewritten = {**gcs, "shard_generation": "8"}
  assert "its generation differs" in shard_store.changed(gcs, rewritten)
  assert "its mtime differs" in shard_store.changed(gcs, {**gcs, "shard_mtime_ns": 6_000})
  assert "has 11 bytes, the index was made from 10" in shard_store.changed(
    gcs, {**gcs, "shard_bytes": 11}, "the index"
  )
  assert "does not record the shard's version" in shard_store.changed(
    {"shard_bytes": 10}, {"shard_bytes": 10, "shard_generation": "7"}
  )


def test_gfile_ranges_equal_the_bytes_and_keep_few_handles(tmp_path, monkeypatch):
  monkeypatch.setattr(shard_store, "HANDLES_PER_THREAD", 2)
  data = os.urandom(3000)
  files = []
  for number in range(3):
    files.append(str(tmp_path / f"f{number}"))
    with open(files[-1], "wb") as f:
      f.write(bytes([number]) + data)
  for offset, length in (
    (1, 100),
    (2000, 50),
    (10, 5),
    (2990, 100),
  ):  # back and forth, past the end
    for number, file in enumerate(files):
      want = (bytes([number]) + data)[offset : offset + length]
      assert shard_store.gfile_range(file, offset, length) == want
      assert shard_store.read_range(file, offset, length) == want
  assert list(shard_store._HANDLES.open) == files[1:]  # the last 2 read


def _shard(tmp_path) -> str:
  frames = np.random.default_rng(0).integers(0, 255, (6, 8, 10, 3), np.uint8)
  examples = [dmvr.make_sequence_example(frames[: 2 + i], i) for i in range(4)]
  examples.append(b"not a SequenceExample")  # read whole: the table's WHOLE row
  return dmvr.write_shards(examples, str(tmp_path / "shards" / "s.tfrecord"), 1)[0]


def test_one_pass_index_and_table_equal_those_made_record_by_record(tmp_path):
  shard = _shard(tmp_path)  # write_shards wrote its index and table beside it
  rows = frame_table.index_remote_shard(shard, str(tmp_path / "tables"))
  np.testing.assert_array_equal(rows, record_index.load_index(shard))
  np.testing.assert_array_equal(rows, record_index.load_index(shard, str(tmp_path / "tables")))
  want, got = frame_table.FrameTable(shard), frame_table.FrameTable(shard, str(tmp_path / "tables"))
  np.testing.assert_array_equal(got.records, want.records)
  np.testing.assert_array_equal(got.frames, want.frames)
  assert got.records[-1, 3] == frame_table.WHOLE
  assert frame_table.stale_reason(shard, str(tmp_path / "tables")) is None
  sidecar = json.loads(
    open(shard.replace("s.tfrecord-", "s_shards/s.tfrecord-") + ".idx.json").read()
  )
  assert sidecar["shard_bytes"] == os.path.getsize(shard) and "shard_mtime_ns" in sidecar


def test_one_pass_names_a_damaged_record(tmp_path):
  shard = _shard(tmp_path)
  rows = record_index.load_index(shard)
  with open(shard, "r+b") as f:
    f.truncate(int(rows[2, 0]) + 30)  # record 2 cut in its data
  with pytest.raises(UserError, match=r"s.tfrecord-00000-of-00001: record 2 \(byte \d+\) is trunc"):
    list(record_index.stream_records(shard))
  with open(shard, "r+b") as f:
    f.seek(int(rows[1, 0]))
    f.write(b"\xff")  # record 1's length, its checksum no longer matching
  with pytest.raises(UserError, match=r"record 1 \(byte \d+\) has a corrupt header.*cannot index"):
    list(record_index.stream_records(shard))
