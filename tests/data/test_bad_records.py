"""Broken data never hangs the reader and never floods the log: empty splits are named, a stream
of bad records stops at a cap, a truncated shard is named with its record, and every config field
an error message suggests can be set from the command line."""

import ast
import os
import re
import threading

import ml_collections
import pytest
import tensorflow as tf
from absl import flags
from ml_collections import config_flags
from shared import REPO, reader_configs
from test_pipeline import indexed_video, run_evaluator

from vidtx import data
from vidtx.data import bad_records, dmvr, pipeline, reader_config

CONFIG_FILES = sorted(
  name
  for name in os.listdir(os.path.join(REPO, "configs"))
  if name.endswith(".py") and name not in ("__init__.py", "common.py")
)
NOT_A_RECORD = b"certainly not a SequenceExample"


def within(seconds: float, fn):
  """fn() in a daemon thread: its result or exception, or a test failure (not a hung suite)
  when it takes longer than `seconds`."""
  outcome = {}

  def run():
    try:
      outcome["value"] = fn()
    except BaseException as error:  # Handed to the test below.
      outcome["error"] = error

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(seconds)
  if thread.is_alive():
    pytest.fail(f"still running after {seconds} s: the reader hangs")
  if "error" in outcome:
    raise outcome["error"]
  return outcome.get("value")


def first_batch(dc, split="train", batches=1, **kwargs):
  """The first batch of the reader (reading `batches` of them), or the ValueError reader_error
  makes of its failure, as the trainer and the evaluator raise it."""
  if split == "train":
    ds = pipeline.build_train_dataset(dc, batch_size=4, seed=0, **kwargs)
  else:
    ds = pipeline.build_eval_dataset(dc, split, batch_size=4, **kwargs)
  iterator = ds.as_numpy_iterator()
  try:
    return [next(iterator) for _ in range(batches)][0]
  except tf.errors.OpError as error:
    raise bad_records.reader_error(error, dc, split, **kwargs) from error


def good(i: int) -> bytes:
  return dmvr.make_sequence_example(indexed_video(6, video=i % 8), i % 4, video_id=f"v{i}")


# ---------------------------------------------------------------------------------------------
# Empty splits.
# ---------------------------------------------------------------------------------------------


def test_a_split_of_zero_byte_shards_is_named_instead_of_spinning(tmp_path):
  dmvr.write_shards([], str(tmp_path / "train.tfrecord"), 2)  # Two 0-byte files.
  dmvr.write_shards([good(0)], str(tmp_path / "validation.tfrecord"), 1)
  dc = reader_configs(
    str(tmp_path), tables={"train": "train.tfrecord@2", "validation": "validation.tfrecord@1"}
  )
  message = (
    rf"Split 'train' holds no record: its 2 file\(s\) .* 0 bytes in all.*"
    rf"examples_per_subset.train says 12.*train.tfrecord-00000-of-00002, "
    rf".*train.tfrecord-00001-of-00002 \(base_dir='{re.escape(str(tmp_path))}'.*"
    r"config.dataset_configs.tables.train='train.tfrecord@2'"
  )
  with pytest.raises(ValueError, match=message):
    within(30, lambda: first_batch(dc))
  config = ml_collections.ConfigDict(dict(dataset_name="dmvr", dataset_configs=dc))
  with pytest.raises(ValueError, match=message):  # Before the model is even built.
    data.prepare_dataset(config)
  # One empty shard of two: the other one's records train.
  dmvr.write_shards([good(0), good(1)], str(tmp_path / "one.tfrecord"), 2)
  with open(tmp_path / "one.tfrecord-00001-of-00002", "wb"):
    pass
  dc.tables.train = "one.tfrecord@2"
  assert within(30, lambda: first_batch(dc))["label"].shape == (4,)


def test_an_empty_validation_split_is_named(tmp_path):
  dmvr.write_shards([], str(tmp_path / "validation.tfrecord"), 1)
  dc = reader_configs(str(tmp_path))
  # Before: zero batches, and the evaluator's "produced no video" named no file.
  with pytest.raises(
    ValueError,
    match=r"Split 'validation' holds no record: its 1 file.*"
    r"validation.tfrecord-00000-of-00001",
  ):
    within(30, lambda: first_batch(dc, "validation"))
  with pytest.raises(ValueError, match="Split 'validation' holds no record"):
    within(60, lambda: run_evaluator(dc))


def test_an_epoch_without_a_record_stops_the_stream(tmp_path):
  # One record for two processes: process 1's share of a non-empty file is empty, which no
  # file size shows; the stream itself must stop rather than loop over empty epochs.
  base_dir = tmp_path / "it's here"  # TF escapes quotes in its messages: they come back.
  dmvr.write_shards([good(0)], str(base_dir / "train.tfrecord"), 1)
  # The per-process stream (the global one gives every process rows of every global batch).
  dc = reader_configs(str(base_dir), global_order=False)
  with pytest.raises(ValueError) as raised:
    within(30, lambda: first_batch(dc, process_index=1, process_count=2))
  text = str(raised.value)
  assert text.startswith(
    "Split 'train' yielded no record in epoch 0: its 1 file(s) (every "
    "process reads them all and keeps one record in 2; this is process 1)"
  )
  assert f"(base_dir={str(base_dir)!r})" in text and "tables.train" in text
  assert "\n" not in text and "node" not in text and "@vidtx@" not in text
  assert first_batch(dc, process_index=0, process_count=1)["label"].shape == (4,)


# ---------------------------------------------------------------------------------------------
# Skipping bad records: a cap.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("global_order", [False, None])  # None: auto, global on these shards
def test_all_bad_records_stop_at_the_cap_without_a_flood(tmp_path, capfd, global_order):
  # Global order replaces a bad record by the next clean one of the order (a split of bad
  # records only stops at its first position: test_an_epoch_of_bad_records...): half are bad.
  examples = [NOT_A_RECORD] * 50 if global_order is False else [NOT_A_RECORD, good(0)] * 25
  dmvr.write_shards(examples, str(tmp_path / "train.tfrecord"), 1)
  dc = reader_configs(
    str(tmp_path), skip_bad_records=True, shuffle_buffer_size=1, global_order=global_order
  )
  with pytest.raises(ValueError) as raised:
    within(30, lambda: first_batch(dc, batches=10))
  text = str(raised.value)
  # The per-process stream reads the shard in order; the global one in the epoch's order.
  read, record = ("10", "9") if global_order is False else (r"\d+", r"\d+")
  assert re.fullmatch(
    rf"Split 'train': too many bad records with skip_bad_records=True: 10 of the {read} records "
    r"read so far \(process 0 of 1\) were bad, more than max_bad_fraction=0.1 of them. The "
    rf"last one: split=train, file=.*train.tfrecord-00000-of-00001, record {record} - could not "
    r"be read.*raise config.dataset_configs.max_bad_fraction \(1.0 turns this check off\).",
    text,
  )
  # The 10th is in the message; nothing is printed after it (before: 96,000 lines in 90 s).
  assert capfd.readouterr().err.count("skipping a bad record") == 9


def test_a_few_bad_records_are_skipped_and_the_stream_goes_on(tmp_path):
  # 2 bad of 40 (5%): over 6 epochs 12 are skipped, more than the 10 the fraction waits for.
  examples = [good(i) for i in range(40)]
  examples[7] = examples[30] = NOT_A_RECORD
  dmvr.write_shards(examples, str(tmp_path / "train.tfrecord"), 2)
  dc = reader_configs(str(tmp_path), tables={"train": "train.tfrecord@2"}, skip_bad_records=True)

  def read(dc, batches):
    stream = pipeline.build_train_dataset(dc, batch_size=19, seed=0).as_numpy_iterator()
    hosts = [
      bad_records.split_host_fields(next(stream), skip_bad_records=True)[1] for _ in range(batches)
    ]
    return sum(int(h["skipped"].sum()) for h in hosts), hosts[-1]["epoch"][-1]

  skipped, epoch = within(60, lambda: read(dc, 12))
  assert epoch == 5 and skipped >= 11  # The last bad record may wait for the next good one.
  # An absolute cap stops the same stream at the 4th bad record (epoch 1).
  dc.max_bad_records = 3
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    within(60, lambda: read(dc, 12))
  text = str(bad_records.reader_error(raised.value, dc, "train"))
  assert text.startswith(
    "Split 'train': more than max_bad_records=3 bad records with skip_bad_records=True: 4 of the "
  )
  assert "raise config.dataset_configs.max_bad_records (None: no limit)." in text


def test_an_epoch_of_bad_records_stops_even_without_a_fraction_cap(tmp_path):
  dmvr.write_shards([NOT_A_RECORD] * 3, str(tmp_path / "train.tfrecord"), 1)
  dc = reader_configs(
    str(tmp_path), skip_bad_records=True, max_bad_fraction=1.0, global_order=False
  )
  with pytest.raises(
    ValueError,
    match=r"Split 'train': epoch 0 held no good record: all 3 "
    r"records of this process's share \(process 0 of 1\) were bad",
  ):
    within(30, lambda: first_batch(dc))
  # The global stream (the default on these shards) finds no record to replace the first with.
  dc.global_order = None
  with pytest.raises(
    ValueError,
    match=r"Split 'train': all 3 records tried for global position 0 of epoch 0 .* are bad, so "
    r"skip_bad_records=True finds no record to replace them with. The last one: split=train, "
    r"file=.*train.tfrecord-00000-of-00001, record \d - could not be read",
  ):
    within(30, lambda: first_batch(dc))


@pytest.mark.parametrize(
  "field, value",
  [
    ("max_bad_fraction", 1.5),
    ("max_bad_fraction", -0.1),
    ("max_bad_records", -1),
    ("max_bad_records", 2.5),
  ],
)
def test_caps_are_checked(field, value):
  with pytest.raises(ValueError, match=f"dataset_configs.{field}={value}"):
    reader_config.DatasetConfig.from_config(reader_configs("", **{field: value}))


# ---------------------------------------------------------------------------------------------
# Damaged shards.
# ---------------------------------------------------------------------------------------------


def record_file(path, sizes) -> bytes:
  with tf.io.TFRecordWriter(str(path)) as writer:
    for size in sizes:
      writer.write(b"x" * size)
  return path.read_bytes()


def test_the_walker_finds_where_a_tfrecord_file_is_damaged(tmp_path):
  path = tmp_path / "f.tfrecord"
  whole = record_file(path, [100, 0, 50])  # Records at bytes 0, 116 and 132; 198 bytes.
  assert dmvr.check_tfrecord(str(path)) == (str(path), 198, 3, True, "", None, None)
  for content, expected in [
    (b"", (0, 0, True, None, None, "")),
    (whole[:140], (140, 2, False, 2, 132, "truncated in the header of record 2 at byte 132")),
    (
      whole[:190],
      (
        190,
        2,
        False,
        2,
        132,
        "truncated in the data of record 2 at byte 132: "
        "the record needs 66 bytes, the file has 58 left",
      ),
    ),
    (
      whole[:116] + b"\xff" + whole[117:],
      (198, 1, False, 1, 116, "the header of record 1 at byte 116 is corrupt"),
    ),
    (b"not a TFRecord file at all", (26, 0, False, 0, 0, "the header of record 0 at byte 0")),
  ]:
    path.write_bytes(content)
    check = dmvr.check_tfrecord(str(path))
    assert (check.size, check.records, check.ok, check.record_index, check.offset) == expected[:5]
    assert check.problem.startswith(expected[5])
  path.write_bytes(whole)
  assert [dmvr.record_with_data_at(str(path), n) for n in (12, 128, 144, 132, 5)] == [
    0,
    1,
    2,
    None,
    None,
  ]


def test_a_truncated_shard_is_named_with_its_record(tmp_path):
  shards = dmvr.write_shards([good(i) for i in range(8)], str(tmp_path / "train.tfrecord"), 2)
  size = os.path.getsize(shards[1])
  check = dmvr.check_tfrecord(shards[1])
  assert check.ok and check.records == 4
  with open(shards[1], "r+b") as f:
    f.truncate(size - 100)  # Into the data of its last record, record 3.
  dc = reader_configs(
    str(tmp_path), tables={"train": "train.tfrecord@2", "validation": "train.tfrecord@2"}
  )
  for split in ("train", "validation"):
    with pytest.raises(ValueError) as raised:
      within(30, lambda split=split: first_batch(dc, split, batches=2))
    assert str(raised.value).startswith(
      f"Split {split!r} has 1 damaged TFRecord file(s) among 2 file(s), one process reads them "
      f"all: {shards[1]}: truncated in the data of record 3 at byte "
    )
    assert "(3 complete record(s) before it). Re-create the shard" in str(raised.value)
    assert f"config.dataset_configs.tables.{split} (TF said: truncated record at" in str(
      raised.value
    )


def test_a_corrupt_record_is_named_from_the_offset_tf_gives(tmp_path):
  (shard,) = dmvr.write_shards([good(i) for i in range(4)], str(tmp_path / "train.tfrecord"), 1)
  content = bytearray(open(shard, "rb").read())
  second = 12 + int.from_bytes(content[:8], "little") + 4  # Where record 1 starts.
  content[second + 40] ^= 0xFF  # In its data: only the data checksum sees it.
  open(shard, "wb").write(bytes(content))
  dc = reader_configs(str(tmp_path), shuffle_buffer_size=1)
  with pytest.raises(
    ValueError,
    match=rf"Split 'train': the data of record 1 of "
    rf"{re.escape(shard)} \(from byte {second + 12}\) fails its checksum",
  ):
    within(30, lambda: first_batch(dc))


def test_other_reader_errors_become_one_line():
  error = tf.errors.NotFoundError(
    None,
    None,
    "{{function_node __wrapped__Get}} gs://b/x; No "
    "such object\n\t [[{{node Read}}]] [Op:IteratorGetNext] name: ",
  )
  assert str(bad_records.reader_error(error, reader_configs(""), "validation")) == (
    "Reading split 'validation' failed: gs://b/x; No such object (NotFoundError)."
  )


# ---------------------------------------------------------------------------------------------
# Every field an error message suggests can be set from the command line.
# ---------------------------------------------------------------------------------------------


def load_config(file: str, overrides: list[str]) -> ml_collections.ConfigDict:
  """The config as train.py loads it: a locked config file, then command-line overrides."""
  argv = ["train.py", f"--config={os.path.join(REPO, 'configs', file)}"] + overrides
  values = flags.FlagValues()
  # As train.py defines it; the overrides are found in argv when the flag is defined.
  config_flags.DEFINE_config_file(
    "config", None, "", flag_values=values, lock_config=True, sys_argv=argv
  )
  values(argv)
  return values.config


@pytest.mark.parametrize("file", CONFIG_FILES)
def test_the_bad_record_fields_can_be_set_from_the_command_line(file):
  config = load_config(
    file,
    [
      "--config.dataset_configs.skip_bad_records=True",
      "--config.dataset_configs.max_bad_fraction=0.25",
      "--config.dataset_configs.max_bad_records=7",
    ],
  )
  dc = config.dataset_configs
  assert (dc.skip_bad_records, dc.max_bad_fraction, dc.max_bad_records) == (True, 0.25, 7)
  reader_config.DatasetConfig.from_config(dc)


def suggested_fields() -> dict[str, set[str]]:
  """{field: files} of every config.dataset_configs.FIELD in the strings of vidtx/, except
  Python assignments ('... = ...', in generated config snippets)."""
  paths = []
  for root, _, names in os.walk(os.path.join(REPO, "vidtx")):
    paths += [os.path.join(root, name) for name in names if name.endswith(".py")]
  found: dict[str, set[str]] = {}
  for path in paths:
    with open(path) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.Constant) and isinstance(node.value, str):
        for match in re.finditer(r"config\.dataset_configs\.(\w+)(?!\w| = )", node.value):
          found.setdefault(match.group(1), set()).add(os.path.relpath(path, REPO))
  return found


def test_every_dataset_field_an_error_suggests_exists_in_every_config():
  fields = suggested_fields()
  assert {"skip_bad_records", "max_bad_fraction", "max_bad_records", "tables"} <= set(fields)
  for file in CONFIG_FILES:
    dc = load_config(file, []).dataset_configs
    missing = {field: sorted(where) for field, where in fields.items() if field not in dc}
    assert not missing, f"configs/{file} lacks dataset_configs fields suggested in {missing}"
