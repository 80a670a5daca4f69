"""vidtx.data.frame_table: where each frame of each record sits, checked against TensorFlow's own
SequenceExample parser; layouts it cannot describe, and shards changed after their table."""

import os
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from shared import write_lines, write_video

from vidtx.data import dmvr, frame_table, record_index, shard_tables, sources


def jpegs(count: int, seed: int = 0) -> list[bytes]:
  rng = np.random.default_rng(seed)
  return dmvr.encode_jpegs(rng.integers(0, 255, (count, 12, 20, 3), np.uint8))


def parsed(data: bytes) -> tf.train.SequenceExample:
  return tf.train.SequenceExample.FromString(data)


def test_scan_finds_the_bytes_the_parser_finds():
  example = parsed(
    dmvr.sequence_example_from_jpegs(
      jpegs(7), [2, 5], label_text="two", video_id="v", start_us=3, end_us=9, frame_rate=12.5
    )
  )
  # Fields the reader does not read, in both parts, and another feature list before the frames.
  example.context.feature["extra"].float_list.value.extend([1.5, 2.5])
  example.feature_lists.feature_list["audio"].feature.add().float_list.value.extend([0.1] * 9)
  frames = list(example.feature_lists.feature_list[dmvr.IMAGE_KEY].feature)
  del example.feature_lists.feature_list[dmvr.IMAGE_KEY]
  example.feature_lists.feature_list[dmvr.IMAGE_KEY].feature.extend(frames)
  data = example.SerializeToString()
  (offset, size), spans = frame_table.scan_record(data)
  assert spans.shape == (7, 2)
  want = [f.bytes_list.value[0] for f in example.feature_lists.feature_list[dmvr.IMAGE_KEY].feature]
  assert [data[o : o + s] for o, s in spans.tolist()] == want
  # The context span alone is a SequenceExample with the record's context and no frames.
  context = parsed(data[offset : offset + size])
  assert context.context == example.context and not context.feature_lists.feature_list


def test_layouts_the_table_cannot_describe_are_read_whole():
  good = parsed(dmvr.sequence_example_from_jpegs(jpegs(3), 1))
  two_values = tf.train.SequenceExample()
  two_values.CopyFrom(good)
  two_values.feature_lists.feature_list[dmvr.IMAGE_KEY].feature[1].bytes_list.value.append(b"x")
  # A field written twice: the parser merges the two, a span cannot hold both.
  twice = good.SerializeToString() + good.SerializeToString()
  for data in (b"certainly not a SequenceExample", two_values.SerializeToString(), twice):
    assert frame_table.scan_record(data) is None
  # No frames at all: a context and an empty table row (the reader says "no frames").
  no_frames = tf.train.SequenceExample(context=good.context).SerializeToString()
  (offset, size), spans = frame_table.scan_record(no_frames)
  assert (offset, size, spans.shape) == (0, len(no_frames), (0, 2))


def test_a_shard_table_reads_every_record_as_the_parser_does(tmp_path):
  examples = [dmvr.sequence_example_from_jpegs(jpegs(n, seed=n), n) for n in (4, 1, 6)]
  examples.insert(1, b"not a SequenceExample")
  (shard,) = dmvr.write_shards(examples, str(tmp_path / "train.tfrecord"), 1)
  assert frame_table.stale_reason(shard) is None
  table = frame_table.FrameTable(shard)
  try:
    assert table.records[:, 3].tolist() == [4, frame_table.WHOLE, 1, 6]
    for record, data in enumerate(examples):
      head, count = table.context(record)
      if count == frame_table.WHOLE:
        assert head == data  # Read whole, checksum checked, for TensorFlow's parser to judge.
        continue
      assert parsed(head).context == parsed(data).context
      frames = parsed(data).feature_lists.feature_list[dmvr.IMAGE_KEY].feature
      wanted = np.array([count - 1, 0, count - 1])  # any order, repeats
      got = table.frame_bytes(record, wanted)
      assert got == [frames[int(i)].bytes_list.value[0] for i in wanted]
    with pytest.raises(ValueError, match="record 2 has no frames"):
      table.frame_bytes(2, np.array([1]))
  finally:
    table.close()
  # Built again from the shard alone (index_shards' way), the table is the same.
  written = [np.load(p) for p in sorted(tmp_path.glob("train_shards/*.npy"))]
  frame_table.build_table(shard, record_index.load_index(shard))
  again = [np.load(p) for p in sorted(tmp_path.glob("train_shards/*.npy"))]
  for a, b in zip(written, again, strict=True):
    np.testing.assert_array_equal(a, b)


def test_a_shard_changed_after_its_table_is_named(tmp_path):
  (shard,) = dmvr.write_shards(
    [dmvr.sequence_example_from_jpegs(jpegs(2), 0)], str(tmp_path / "train.tfrecord"), 1
  )
  assert frame_table.stale_reason(shard) is None
  os.utime(shard, ns=(0, 10**9))  # Rewritten in place (same size): the mtime says so.
  assert "changed after its frame table" in frame_table.stale_reason(shard)
  os.remove(str(tmp_path / "train_shards" / (os.path.basename(shard) + ".frames.json")))
  assert frame_table.stale_reason(shard) == "it has no frame table"


def test_make_shards_writes_the_tables_that_index_shards_would(tmp_path):
  videos = tmp_path / "videos"
  for i in range(3):
    write_video(str(videos / f"v{i}.mp4"), 2 + i)
  annotations = write_lines(tmp_path / "train.csv", [f"v{i}.mp4,c{i % 2}" for i in range(3)])
  out = tmp_path / "out"
  items = sources.csv_source(annotations, str(videos)).items
  shard_tables.write_split(items, str(out), "train", num_shards=2, progress=False)
  for shard in dmvr.shard_names(str(out / "train.tfrecord"), 2):
    assert frame_table.stale_reason(shard) is None
    written = [np.load(p) for p in sorted(out.glob(f"train_shards/{os.path.basename(shard)}*.npy"))]
    frame_table.build_table(shard, record_index.load_index(shard))
    again = [np.load(p) for p in sorted(out.glob(f"train_shards/{os.path.basename(shard)}*.npy"))]
    assert len(written) == 2 and written[1][:, 3].min() >= 2  # records.npy: 2+ frames each
    for a, b in zip(written, again, strict=True):
      np.testing.assert_array_equal(a, b)


def test_an_open_table_follows_its_shard_when_rewritten(tmp_path):
  path = str(tmp_path / "train.tfrecord")
  (shard,) = dmvr.write_shards([dmvr.sequence_example_from_jpegs(jpegs(2), 0)], path, 1)
  first = frame_table.open_table(shard)
  assert frame_table.open_table(shard) is first  # One per process, shared by the threads.
  again = [dmvr.sequence_example_from_jpegs(jpegs(n, seed=n), n) for n in (3, 5)]
  dmvr.write_shards(again, path, 1, overwrite=True)  # The same name, another file.
  table = frame_table.open_table(shard)
  assert table is not first and table.records[:, 3].tolist() == [3, 5]
  frames = parsed(again[1]).feature_lists.feature_list[dmvr.IMAGE_KEY].feature
  assert table.frame_bytes(1, np.array([4])) == [frames[4].bytes_list.value[0]]


def test_reads_go_in_parallel_once_the_store_is_slow(tmp_path, monkeypatch):
  example = dmvr.sequence_example_from_jpegs(jpegs(12), 0)
  (shard,) = dmvr.write_shards([example], str(tmp_path / "train.tfrecord"), 1)
  want = [
    f.bytes_list.value[0]
    for f in parsed(example).feature_lists.feature_list[dmvr.IMAGE_KEY].feature
  ]
  table = frame_table.FrameTable(shard)
  read = frame_table.FrameTable._read
  in_flight = {"now": 0, "most": 0}
  lock = threading.Lock()

  def slow_read(self, offset, size, record):  # a store answering after 50 ms
    with lock:
      in_flight["now"] += 1
      in_flight["most"] = max(in_flight["most"], in_flight["now"])
    time.sleep(0.05)
    with lock:
      in_flight["now"] -= 1
    return read(self, offset, size, record)

  monkeypatch.setattr(frame_table.FrameTable, "_read", slow_read)
  monkeypatch.setattr(frame_table, "_read_seconds", [0.0])  # as in a fresh process
  wanted = np.array([11, 0, 5, 5, 3, 8, 1, 2, 9, 10, 4, 6, 7])  # any order, a repeat
  try:
    # The first reads go in sequence and find the store slow; then they go in parallel.
    assert table.frame_bytes(0, wanted) == [want[i] for i in wanted]
    assert (
      in_flight["most"] == 1 and frame_table._read_seconds[0] > frame_table.PARALLEL_ABOVE_SECONDS
    )
    start = time.perf_counter()
    assert table.frame_bytes(0, wanted) == [want[i] for i in wanted]
    # 13 x 50 ms in sequence; together in about 50 ms (threads start late on a busy machine).
    assert in_flight["most"] >= 6 and time.perf_counter() - start < 0.35
    # What the training stream asks before it adds threads to wait on reads.
    assert frame_table.is_slow_store(shard)
    monkeypatch.setattr(frame_table.FrameTable, "_read", read)
    assert not frame_table.is_slow_store(shard)
  finally:
    table.close()
