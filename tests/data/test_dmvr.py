"""vidtx.data.dmvr: write/read round trips, an interrupted write, missing tables, empty videos
left to the reader."""

import os

import numpy as np
import pytest
import tensorflow as tf
from test_data import coded_video, smooth_frames, write_split

from vidtx.data import dmvr


def test_write_read_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  videos = [smooth_frames(rng, 3 + i, 12, 20) for i in range(7)]
  labels = [i % 4 for i in range(7)]
  examples = [
    dmvr.make_sequence_example(
      v,
      [label, 9],
      label_text=f"class{label}",
      video_id=f"vid{i}",
      start_us=1_000_000 * i,
      end_us=1_000_000 * i + 500_000,
      frame_rate=12.5,
    )
    for i, (v, label) in enumerate(zip(videos, labels, strict=True))
  ]
  files = dmvr.write_shards(examples, str(tmp_path / "train.tfrecord"), 3)

  assert [os.path.basename(f) for f in files] == [
    "train.tfrecord-00000-of-00003",
    "train.tfrecord-00001-of-00003",
    "train.tfrecord-00002-of-00003",
  ]
  # No temps; each shard's record index and frame table in the hidden stats folder.
  names = [os.path.basename(f) for f in files]
  assert sorted(os.listdir(tmp_path)) == sorted([*names, "train_shards"])
  suffixes = (".idx", ".idx.json", ".records.npy", ".frames.npy", ".frames.json")
  assert sorted(os.listdir(tmp_path / "train_shards")) == sorted(
    name + suffix for name in names for suffix in suffixes
  )
  assert dmvr.expand_table(str(tmp_path), "train.tfrecord@3") == files
  assert dmvr.expand_table(str(tmp_path), "train.tfrecord-*") == files

  for shard, file in enumerate(files):
    records = list(tf.data.TFRecordDataset(file).as_numpy_iterator())
    expected = list(range(shard, 7, 3))  # Round-robin.
    assert len(records) == len(expected)
    for i, record in zip(expected, records, strict=True):
      parsed = dmvr.parse_sequence_example(tf.constant(record))
      assert parsed["labels"].numpy().tolist() == [labels[i], 9]
      assert parsed["video_id"].numpy() == f"vid{i}".encode()
      assert parsed["frame_rate"].numpy() == 12.5
      decoded = np.stack([tf.io.decode_jpeg(j).numpy() for j in parsed["jpegs"].numpy()])
      assert decoded.shape == videos[i].shape
      error = np.abs(decoded.astype(float) - videos[i])
      assert error.mean() < 3 and error.max() < 40
      context, _ = tf.io.parse_single_sequence_example(
        record,
        context_features={
          dmvr.LABEL_TEXT_KEY: tf.io.FixedLenFeature([], tf.string),
          dmvr.START_KEY: tf.io.FixedLenFeature([], tf.int64),
          dmvr.END_KEY: tf.io.FixedLenFeature([], tf.int64),
        },
      )
      assert context[dmvr.LABEL_TEXT_KEY].numpy() == f"class{labels[i]}".encode()
      assert (context[dmvr.START_KEY].numpy(), context[dmvr.END_KEY].numpy()) == (
        1_000_000 * i,
        1_000_000 * i + 500_000,
      )


def test_interrupted_write_leaves_no_files(tmp_path):
  def examples():
    yield dmvr.make_sequence_example(np.zeros((2, 8, 8, 3), np.uint8), 0)
    raise RuntimeError("interrupted")

  with pytest.raises(RuntimeError, match="interrupted"):
    dmvr.write_shards(examples(), str(tmp_path / "train.tfrecord"), 2)
  assert os.listdir(tmp_path) == []


def test_missing_table_files_raise(tmp_path):
  write_split(str(tmp_path), "train.tfrecord", [coded_video(0, 2)], [0], 2)
  os.remove(tmp_path / "train.tfrecord-00001-of-00002")
  with pytest.raises(ValueError, match=r"train.tfrecord-00001-of-00002.*'train.tfrecord@2'"):
    dmvr.expand_table(str(tmp_path), "train.tfrecord@2")
  with pytest.raises(ValueError, match=r"'val\*'.*matches no file"):
    dmvr.expand_table(str(tmp_path), "val*")


def test_parse_leaves_empty_videos_to_the_reader():
  example = tf.train.SequenceExample()
  parsed = dmvr.parse_sequence_example(tf.constant(example.SerializeToString()))
  assert parsed["jpegs"].shape == (0,) and parsed["labels"].shape == (0,)
  assert parsed["video_id"].numpy() == b"" and parsed["frame_rate"].numpy() == 0
  with pytest.raises(tf.errors.InvalidArgumentError):
    dmvr.parse_sequence_example(tf.constant(b"not a proto"))
