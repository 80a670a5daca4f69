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
  # 16 reads waiting 50 ms each: 0.8 s one after another, 0.1 s eight at a time.
  assert rows[3]["wall_s"] < 0.3
