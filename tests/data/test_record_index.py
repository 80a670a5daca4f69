"""vidtx.data.record_index: DALI's index of each shard, and reading one record at its offset."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
from shared import write_lines, write_video

from vidtx.data import dmvr, record_index, shard_tables, sources
from vidtx.errors import UserError


def tf_records(shard: str) -> list[bytes]:
  return [record.numpy() for record in tf.data.TFRecordDataset(shard)]


def test_make_shards_index_reads_every_record_in_order(tmp_path):
  videos = tmp_path / "videos"
  for i in range(5):
    write_video(str(videos / f"v{i}.mp4"), 2 + i)  # Records of different sizes.
  annotations = write_lines(tmp_path / "train.csv", [f"v{i}.mp4,c{i % 2}" for i in range(5)])
  out = tmp_path / "out"
  items = sources.csv_source(annotations, str(videos)).items
  shard_tables.write_split(items, str(out), "train", num_shards=2, progress=False)
  for shard in dmvr.shard_names(str(out / "train.tfrecord"), 2):
    index = record_index.index_path(shard)
    assert index == str(out / "train_shards" / (os.path.basename(shard) + ".idx"))
    rows = record_index.load_index(shard)
    expected = tf_records(shard)
    assert rows.dtype == np.int64 and rows.shape == (len(expected), 2) and len(expected) >= 2
    # DALI's format exactly: the lines tfrecord2idx writes, from the record headers.
    np.testing.assert_array_equal(rows, record_index.scan_shard(shard))
    assert rows[0, 0] == 0 and rows[-1].sum() == os.path.getsize(shard)
    read = [record_index.read_record(shard, offset, size) for offset, size in rows]
    assert read == expected
    # The tf.data reader, records in a shuffled order.
    order = np.random.default_rng(0).permutation(len(rows))
    dataset = tf.data.Dataset.from_tensor_slices((rows[order, 0], rows[order, 1])).map(
      lambda offset, size, shard=shard: record_index.tf_read_record(shard, offset, size),
      num_parallel_calls=2,
      deterministic=True,
    )
    assert [record.numpy() for record in dataset] == [expected[i] for i in order]
  # A glob `train.*` finds the shards only; the table finds them too.
  assert sorted(tf.io.gfile.glob(str(out / "train.*"))) == dmvr.shard_names(
    str(out / "train.tfrecord"), 2
  )


def small_shard(path, records=(b"first", b"the second record", b"3")) -> str:
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)
  return str(path)


def flip_byte(path: str, offset: int) -> None:
  with open(path, "r+b") as f:
    f.seek(offset)
    byte = f.read(1)
    f.seek(offset)
    f.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize(
  "where, message",
  [
    (lambda row: row[0] + 12 + 3, "record 1 (byte 21) is corrupt (its data checksum"),
    (lambda row: row[0] + 2, "record 1 (byte 21) has a corrupt header"),
    (lambda row: row[0] + row[1] - 1, "record 1 (byte 21) is corrupt (its data checksum"),
  ],
)
def test_read_record_names_a_corrupted_byte(tmp_path, where, message):
  shard = small_shard(tmp_path / "s.tfrecord")
  rows = record_index.scan_shard(shard)
  np.testing.assert_array_equal(rows, record_index.rows_from_sizes([5, 17, 1]))
  flip_byte(shard, int(where(rows[1])))
  with pytest.raises(UserError, match=re.escape(message)) as raised:
    record_index.read_record(shard, *rows[1], record=1)
  assert str(raised.value).startswith(shard + ": ") and "\n" not in str(raised.value)
  # The neighbours still read.
  assert record_index.read_record(shard, *rows[0]) == b"first"
  assert record_index.read_record(shard, *rows[2]) == b"3"


def test_read_record_names_an_index_that_does_not_fit(tmp_path):
  shard = small_shard(tmp_path / "s.tfrecord")
  offset, size = record_index.scan_shard(shard)[1]
  with pytest.raises(UserError, match="holds 17 bytes of data, the index says 16"):
    record_index.read_record(shard, offset, size - 1)
  with pytest.raises(UserError, match="corrupt header"):
    record_index.read_record(shard, offset + 1, size)
  with pytest.raises(UserError, match="is truncated"):
    record_index.read_record(shard, os.path.getsize(shard) - 4, size)


def test_an_index_that_disagrees_with_a_replaced_shard_is_named(tmp_path):
  shard = small_shard(tmp_path / "train.tfrecord-00000-of-00001")
  index = record_index.index_path(shard)
  record_index.write_index(index, record_index.scan_shard(shard), os.stat(shard))
  assert record_index.load_index(shard).shape == (3, 2)
  small_shard(shard, [b"another", b"shard"])  # Replaced: another size.
  with pytest.raises(UserError, match=r"disagrees with .*: the shard has \d+ bytes, the index"):
    record_index.load_index(shard)
  record_index.write_index(index, record_index.scan_shard(shard), os.stat(shard))
  small_shard(shard, [b"ANOTHER", b"shard"])  # Replaced: the same size.
  os.utime(shard, ns=(1, 1))
  with pytest.raises(UserError, match="modified after the index was made") as raised:
    record_index.load_index(shard)
  assert "python -m vidtx.data.index_shards --shards=" in str(raised.value)


def test_read_index_names_a_bad_line(tmp_path):
  index = write_lines(tmp_path / "s.idx", ["0 21", "21 x"])
  with pytest.raises(UserError, match=r"s.idx, line 2: '21 x' is not 'offset size'"):
    record_index.read_index(index)
  with pytest.raises(UserError, match="no such record index"):
    record_index.read_index(str(tmp_path / "none.idx"))
