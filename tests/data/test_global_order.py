"""vidtx.data.global_order: the seeded permutation of a split's records (every record once per
epoch, for uneven shards), and the global-order training stream, which gives the same global
batches (ids, pixels, augmentation parameters) for 1, 2 or 4 processes and resumes at a global
position."""

import dataclasses
import os

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from ml_collections import config_flags
from shared import REPO, reader_configs

from vidtx import device_augment, run_checkpoints, sharding, trainer
from vidtx.data import bad_records, dmvr, global_order, pipeline, reader_config
from vidtx.errors import UserError

SHARD_SIZES = (1, 3, 2, 1, 4, 1, 2)  # 7 shards, 14 records: uneven, not a multiple of 2 or 4


def test_every_record_once_per_epoch_and_epochs_differ():
  for total in (1, 2, 3, 5, 14, 45, 1000, 1025):
    orders = [global_order.permute_numpy(np.arange(total), total, seed=7, epoch=e) for e in (0, 1)]
    for order in orders:
      assert sorted(order.tolist()) == list(range(total)), total
    if total >= 5:
      assert orders[0].tolist() != orders[1].tolist(), total
  # Another seed, another order; TF's ops give numpy's numbers (inside tf.data too).
  total = 1025
  want = global_order.permute_numpy(np.arange(total), total, seed=7, epoch=3)
  assert want.tolist() != global_order.permute_numpy(np.arange(total), total, 8, 3).tolist()
  got = tf.data.Dataset.range(total).map(
    lambda i: global_order.permute(i, total, 7, tf.constant(3, tf.int64))
  )
  np.testing.assert_array_equal(np.fromiter(got.as_numpy_iterator(), np.int64), want)
  # Large epochs and seeds (the high 32 bits are keyed too) stay in range.
  big = global_order.permute_numpy(np.arange(50), 50, seed=2**40 + 1, epoch=2**33)
  assert sorted(big.tolist()) == list(range(50))


def video(length: int, video_id: int) -> np.ndarray:
  """Frames that say which video and frame they are (red: frame, green: video), with texture
  so that crops and jitter show."""
  rng = np.random.default_rng(video_id)
  frames = rng.integers(0, 60, (length, 20, 24, 3)).astype(np.uint8)
  frames[..., 0] += (8 * np.arange(length)).astype(np.uint8)[:, None, None]
  frames[..., 1] += np.uint8(10 * video_id)
  return frames


@pytest.fixture(scope="module")
def uneven(tmp_path_factory) -> str:
  """7 JPEG shards (dmvr.write_shards, which writes their frame tables) of 1 to 4 videos."""
  base_dir = tmp_path_factory.mktemp("uneven")
  video_id = 0
  for shard, size in enumerate(SHARD_SIZES):
    examples = []
    for _ in range(size):
      examples.append(
        dmvr.make_sequence_example(
          video(5 + video_id % 4, video_id), video_id % 4, video_id=f"v{video_id:02d}"
        )
      )
      video_id += 1
    dmvr.write_shards(examples, str(base_dir / f"s{shard}.tfrecord"), 1)
  return str(base_dir)


def configs(base_dir: str, **overrides):
  """ViViT-like augmentation (arXiv:2103.15691 Table 7, shrunk): scale jitter, flip, colour;
  RandAugment and random erasing too (their parameters are drawn per clip on the host)."""
  fields = dict(
    tables={"train": "s*.tfrecord-00000-of-00001"},
    examples_per_subset={"train": sum(SHARD_SIZES)},
    global_order=True,
    random_flip=True,
    min_resize=16,
    crop_size=12,
    augmentation_params=dict(
      do_jitter_scale=True,
      scale_min_factor=0.8,
      scale_max_factor=1.25,
      do_color_augment=True,
      prob_color_augment=0.8,
      do_rand_augment=True,
      random_erasing_probability=0.5,
    ),
  )
  return reader_configs(base_dir, **{**fields, **overrides})


GLOBAL_BATCH = 4
STEPS = 5  # 20 positions: more than an epoch of 14


def global_batches(dc, process_count: int, start_step: int = 0) -> list[dict[str, np.ndarray]]:
  """Global batches start_step.. of the stream read as `process_count` processes would: each
  process's batch of a step, concatenated in process order."""
  local = GLOBAL_BATCH // process_count
  streams = [
    pipeline.build_train_dataset(
      dc,
      batch_size=local,
      seed=11,
      process_index=p,
      process_count=process_count,
      start_position=(0, start_step * GLOBAL_BATCH),
    ).as_numpy_iterator()
    for p in range(process_count)
  ]
  batches = []
  for _ in range(start_step, STEPS):
    parts = [next(stream) for stream in streams]
    batches.append({k: np.concatenate([part[k] for part in parts]) for k in parts[0]})
  return batches


def test_one_two_four_processes_read_the_same_global_batches(uneven):
  dc = configs(uneven)
  want = global_batches(dc, 1)
  fields = set(want[0])
  # The augmentation's parameters are in the batch: the comparison covers them.
  augmented = {
    device_augment.FLIP,
    device_augment.COLOR,
    device_augment.WINDOW,
    device_augment.RA_OP,
    device_augment.ERASE_BOX,
  }
  assert {"inputs", "label", "video_id", "source", *augmented} <= fields, fields
  ids = np.concatenate([b["video_id"] for b in want])
  total = sum(SHARD_SIZES)
  assert sorted(ids[:total].tolist()) == [f"v{i:02d}".encode() for i in range(total)]
  assert ids[total:].tolist() != ids[: len(ids) - total].tolist()  # epoch 1: another order
  assert np.concatenate([b["epoch"] for b in want]).tolist() == [0] * 14 + [1] * 6
  flips = np.concatenate([b[device_augment.FLIP] for b in want])
  assert 0 < flips.sum() < len(flips)  # the augmentation varies between clips
  for process_count in (2, 4):
    got = global_batches(dc, process_count)
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
      assert set(a) == fields
      for field in fields:
        np.testing.assert_array_equal(a[field], b[field], err_msg=f"{field}, step {step}")
  # Resumed at a global position (step 3) on another topology: the same batches.
  resumed = global_batches(dc, 2, start_step=3)
  for a, b in zip(resumed, want[3:], strict=True):
    for field in fields:
      np.testing.assert_array_equal(a[field], b[field], err_msg=field)
  # What the trainer saves after a step: the global position, from any process's batch.
  position = bad_records.next_position(bad_records.split_host_fields(want[1])[1])
  assert global_order.global_position_after(position, total, GLOBAL_BATCH) == 2 * GLOBAL_BATCH


def test_global_order_names_what_it_cannot_read(uneven, tmp_path):
  dc = reader_config.DatasetConfig.from_config(configs(uneven))
  table = global_order.record_table(dc, "train")
  assert table.counts.tolist() == list(SHARD_SIZES) and table.total == sum(SHARD_SIZES)
  assert global_order.record_count(dc, "train") == table.total
  file, record = table.locate(np.array([0, 1, 3, 13]))
  assert file.tolist() == [0, 1, 1, 6] and record.tolist() == [0, 0, 2, 1]
  with pytest.raises(UserError, match="not a multiple of batch_size=4"):
    pipeline.build_train_dataset(dc, batch_size=2, seed=0, process_count=2, start_position=(0, 2))
  # A shard rewritten after its table: named, with the command that indexes the shards.
  dmvr.write_shards([dmvr.make_sequence_example(video(5, 0), 0)], str(tmp_path / "s0.tfrecord"), 1)
  shard = str(tmp_path / "s0.tfrecord-00000-of-00001")
  os.utime(shard, ns=(1, 1))
  stale = configs(str(tmp_path), tables={"train": "s0.tfrecord-00000-of-00001"})
  with pytest.raises(
    UserError, match=r"s0.tfrecord-00000-of-00001: the shard changed.*index_shards"
  ):
    pipeline.build_train_dataset(stale, batch_size=2, seed=0)


def no_frames(video_id: str) -> bytes:
  """A SequenceExample with a label and no frame."""
  example = tf.train.SequenceExample()
  example.context.feature[dmvr.LABEL_INDEX_KEY].int64_list.value.append(1)
  example.context.feature["video_id"].bytes_list.value.append(video_id.encode())
  return example.SerializeToString()


@pytest.fixture(scope="module")
def with_bad(tmp_path_factory) -> str:
  """5 shards of 18 records, 7 of them bad, of every kind the reader finds: a corrupt JPEG, a
  string that is not a SequenceExample, a label out of range, no frames."""
  base_dir = tmp_path_factory.mktemp("with_bad")
  good = [dmvr.make_sequence_example(video(5, i), i % 4, video_id=f"v{i:02d}") for i in range(11)]
  corrupt = dmvr.sequence_example_from_jpegs([b"not a jpeg"] * 5, 1, video_id="corrupt")
  bad = [corrupt, b"certainly not a SequenceExample", corrupt]
  bad += [dmvr.make_sequence_example(video(5, 20), 7, video_id="label 7"), no_frames("empty")]
  bad += [b"not one either", no_frames("empty too")]
  shards = [good[0:2] + bad[0:2], good[2:4] + bad[2:3], bad[3:5] + good[4:6], good[6:9], bad[5:]]
  shards[3] += good[9:]
  for shard, examples in enumerate(shards):
    dmvr.write_shards(examples, str(base_dir / f"s{shard}.tfrecord"), 1)
  return str(base_dir)


def test_bad_records_are_replaced_alike_on_any_topology(with_bad):
  # max_bad_fraction off: 7 of 18 records are bad, more than the default cap allows.
  dc = configs(
    with_bad,
    examples_per_subset={"train": 18},
    skip_bad_records=True,
    max_bad_fraction=None,
    # Crop and flip (cheaper to build than the whole recipe, and keyed the same way).
    augmentation_params=dict(do_jitter_scale=True, scale_min_factor=0.8, scale_max_factor=1.25),
  )
  want = global_batches(dc, 1)
  ids = np.concatenate([b["video_id"] for b in want]).tolist()
  assert len(ids) == STEPS * GLOBAL_BATCH and all(i.startswith(b"v") for i in ids), ids
  skipped = np.concatenate([b["skipped"] for b in want])
  # A bad position's replacement is the next clean record of the epoch's order: read the order.
  table = global_order.record_table(reader_config.DatasetConfig.from_config(dc), "train")
  positions = np.arange(STEPS * GLOBAL_BATCH)
  epoch_of, index_of = positions // table.total, positions % table.total
  clean = {}
  for epoch in set(epoch_of.tolist()):
    order = global_order.permute_numpy(np.arange(table.total), table.total, 11, epoch)
    file, record = table.locate(order)
    names = [
      list(tf.data.TFRecordDataset(table.files[f]).skip(int(r)).take(1))[0].numpy()
      for f, r in zip(file, record, strict=True)
    ]
    ok = [n.startswith(b"\n") and b"v" in n and b"label 7" not in n for n in names]
    clean[epoch] = [
      ok[i] and b"not a jpeg" not in names[i] and b"empty" not in names[i]
      for i in range(table.total)
    ]
  for q, (epoch, index) in enumerate(zip(epoch_of, index_of, strict=True)):
    tries = next(j for j in range(table.total) if clean[epoch][(index + j) % table.total])
    assert skipped[q] == tries, q
  assert skipped.sum() > 0 and (skipped == 0).any()
  # The augmentation stays keyed by the position: the same as in the stream without bad records.
  for process_count in (2, 4):
    got = global_batches(dc, process_count)
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
      assert set(a) == set(b)
      for field in b:
        np.testing.assert_array_equal(a[field], b[field], err_msg=f"{field}, step {step}")


def test_a_run_of_bad_records_longer_than_the_tries_stops_the_stream(with_bad, monkeypatch):
  monkeypatch.setattr(pipeline, "REPLACEMENT_TRIES", 1)
  dc = configs(with_bad, examples_per_subset={"train": 18}, skip_bad_records=True)
  dc.max_bad_fraction = None
  ds = pipeline.build_train_dataset(dc, batch_size=GLOBAL_BATCH, seed=11).as_numpy_iterator()
  with pytest.raises(UserError, match=r"all 1 records tried for global position \d+ of epoch 0"):
    try:
      for _ in range(STEPS):
        next(ds)
    except tf.errors.OpError as error:
      raise bad_records.reader_error(error, dc, "train") from error


def test_auto_is_global_on_shards_with_tables_and_says_why_not_otherwise(uneven, tmp_path):
  dc = reader_config.DatasetConfig.from_config(configs(uneven, global_order=None))
  assert dc.global_order is None and global_order.resolve(dc).global_order is True
  # Shards of another tool: no frame tables, the per-process stream and one line saying so.
  with tf.io.TFRecordWriter(str(tmp_path / "t.tfrecord-00000-of-00001")) as writer:
    writer.write(dmvr.make_sequence_example(video(5, 0), 0))
  other = reader_config.DatasetConfig.from_config(
    configs(str(tmp_path), tables={"train": "t.tfrecord-00000-of-00001"}, global_order=None)
  )
  reason = global_order.why_not(other)
  assert "t.tfrecord-00000-of-00001 has no current frame table" in reason
  assert global_order.resolve(other).global_order is False
  note = global_order.per_process_note(other, reason)
  assert note.startswith("Note: the training stream is per process") and "\n" not in note
  assert f"python -m vidtx.data.index_shards --shards={tmp_path}/t.tfrecord" in note
  # True and False are kept; the per-process stream reads the shard.
  assert global_order.resolve(dataclasses.replace(other, global_order=True)).global_order
  assert global_order.resolve(dataclasses.replace(dc, global_order=False)).global_order is False
  batch = next(pipeline.build_train_dataset(other, batch_size=2, seed=0).as_numpy_iterator())
  assert batch["video_id"].shape == (2,)


def test_global_order_is_auto_by_default_and_set_from_the_command_line():
  for override, want in ((None, None), ("True", True), ("False", False)):
    argv = ["test", f"--config={REPO}/configs/synthetic_timesformer.py"]
    if override is not None:
      argv.append(f"--config.dataset_configs.global_order={override}")
    values = flags.FlagValues()
    # As train.py defines it; the overrides are found in argv when the flag is defined.
    config_flags.DEFINE_config_file(
      "config", None, "", flag_values=values, lock_config=True, sys_argv=argv
    )
    values(argv)
    dataset_configs = values.config.dataset_configs
    assert dataset_configs.global_order is want, override
    dataset_configs.base_dir = "/nowhere"
    assert reader_config.DatasetConfig.from_config(dataset_configs).global_order is want


def _data_setup(dc, *, mesh, local_batch_size):
  """A trainer._Setup with what the stream's choice reads: the dataset, the mesh, the batch."""
  return trainer._Setup(
    mesh=mesh,
    local_batch_size=local_batch_size,
    dataset=dc,
    class_names=None,
    total_steps=10,
    model=None,
    tx=None,
    schedule=None,
    ema_decay=0.0,
  )


def test_a_resumed_run_keeps_the_stream_its_checkpoint_was_written_with(
  uneven, monkeypatch, capsys
):
  dc = reader_config.DatasetConfig.from_config(configs(uneven, global_order=None))
  setup = _data_setup(dc, mesh=sharding.make_mesh(None), local_batch_size=GLOBAL_BATCH)
  config = ml_collections.ConfigDict({"batch_size": GLOBAL_BATCH})
  saved = {
    2: {"stream": "per_process", "positions": [[0, 8]], "process_count": 1},
    3: {"positions": [[0, 12]], "process_count": 1},  # before the data state named its stream
    4: {"stream": "global", "global_position": 16, "process_count": 1},
    5: None,  # an older vidtx: no input position at all
  }
  monkeypatch.setattr(run_checkpoints, "restore_data_state", lambda manager, step: saved[step])

  def chosen(step, requested=None):
    requested_setup = dataclasses.replace(
      setup, dataset=dataclasses.replace(dc, global_order=requested)
    )
    return trainer._choose_stream(config, requested_setup, None, step).dataset.global_order

  assert chosen(0) is True and capsys.readouterr().out == ""  # a new run: global
  assert chosen(4) is True and chosen(5) is True and capsys.readouterr().out == ""
  for step in (2, 3):
    assert chosen(step) is False
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and f"because checkpoint {step} was written with it" in lines[0]
    assert f"global_order=True (which starts the global stream at position {4 * step})" in lines[0]
  assert chosen(2, requested=True) is True and chosen(4, requested=False) is False


def test_a_mesh_that_does_not_order_devices_by_process_gets_the_per_process_stream(
  uneven, monkeypatch, capsys
):
  class Device:
    def __init__(self, process_index: int):
      self.process_index = process_index

  class Sharding:
    def __init__(self, rows: dict):
      self.rows = rows

    def devices_indices_map(self, shape):
      return self.rows

  first, second = Device(0), Device(1)
  layouts = {
    "by process": {first: (slice(0, 2),), second: (slice(2, 4),)},
    "reversed": {second: (slice(0, 2),), first: (slice(2, 4),)},
  }
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  layout = "by process"
  monkeypatch.setattr(sharding, "data_sharding", lambda mesh: Sharding(layouts[layout]))
  assert trainer._process_rows_problem(None, 4) is None
  layout = "reversed"
  problem = trainer._process_rows_problem(None, 4)
  assert problem.startswith("process 0's devices hold rows 2..3 of the global batch, not [0, 2)")
  dc = reader_config.DatasetConfig.from_config(configs(uneven, global_order=None))
  setup = _data_setup(dc, mesh=None, local_batch_size=2)
  config = ml_collections.ConfigDict({"batch_size": 4})
  assert trainer._choose_stream(config, setup, None, 0).dataset.global_order is False
  assert "a mesh whose devices are ordered by process" in capsys.readouterr().out
  required = dataclasses.replace(setup, dataset=dataclasses.replace(dc, global_order=True))
  with pytest.raises(UserError, match="global_order=True: process 0's devices hold rows 2..3"):
    trainer._choose_stream(config, required, None, 0)
