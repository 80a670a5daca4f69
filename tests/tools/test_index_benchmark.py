"""vidtx.tools.index_benchmark: its rows, and reads issued in parallel on a slow store."""

import os

import tensorflow as tf

from vidtx.data import record_index
from vidtx.tools import index_benchmark


def test_reads_at_offsets_overlap_on_a_slow_store(tmp_path):
  shard = str(tmp_path / "train.tfrecord-00000-of-00001")
  with tf.io.TFRecordWriter(shard) as writer:
    for i in range(16):
      writer.write(b"x" * (100 + i))
  record_index.write_index(
    record_index.index_path(shard), record_index.scan_shard(shard), os.stat(shard)
  )
  rows = index_benchmark.measure([shard], None, passes=1, parallel=8, latency_ms=50)
  assert [row["name"][:3] for row in rows] == ["(a)", "(b)", "(c)", "(d)", "(e)"]
  assert all(row["records"] == 16 for row in rows)
  # The reads waiting on the slow store overlap (8 at most: the map's parallelism); one after
  # another, never more than 1 would wait at once.
  assert 2 <= rows[3]["most_in_flight"] <= 8
