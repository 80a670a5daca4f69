"""Shards in a bucket (gs://) read through frame tables: against the local GCS server of
test_gcs_workdir's fixture (gcsfs through epath, EPATH_USE_TF=0). index_shards writes the indexes
and frame tables of shards uploaded to the bucket (into the bucket, or a local --index_dir), the
global-order training stream read from the bucket equals the same shards read from a local disk,
and a shard rewritten in the bucket after its table is named at start-up.

TensorFlow's GCS file system has no endpoint setting, so what goes through it (tf.data's
TFRecordDataset: the per-process stream of whole records) is not reached here; the global-order
stream reads every record through its frame table (vidtx.data.shard_store), which is."""

import importlib.util
import os

import numpy as np
import pytest

from vidtx import paths
from vidtx.data import (
  dmvr,
  frame_table,
  global_order,
  index_shards,
  pipeline,
  reader_config,
  record_index,
  records,
)
from vidtx.errors import UserError

HERE = os.path.dirname(os.path.abspath(__file__))


def _module(path: str):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


_workdir = _module(os.path.join(HERE, "test_gcs_workdir.py"))  # skips without the emulator
_order = _module(os.path.join(HERE, "..", "data", "test_global_order.py"))
gcs = _workdir.gcs  # the fixture: a local GCS server with bucket _workdir.BUCKET
SIZES = (2, 3, 1)  # records per shard: 6, uneven
SHARDS = "s*.tfrecord-00000-of-00001"


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory) -> str:
  """3 JPEG shards of 1 to 3 videos, with their frame tables (dmvr.write_shards writes them)."""
  base_dir = tmp_path_factory.mktemp("local")
  video_id = 0
  for shard, size in enumerate(SIZES):
    examples = []
    for _ in range(size):
      frames = _order.video(5 + video_id % 3, video_id)
      examples.append(dmvr.make_sequence_example(frames, video_id % 4, video_id=f"v{video_id}"))
      video_id += 1
    dmvr.write_shards(examples, str(base_dir / f"s{shard}.tfrecord"), 1)
  return str(base_dir)


def _configs(base_dir: str, index_dir: str = "", **overrides):
  fields = dict(tables={"train": SHARDS}, examples_per_subset={"train": sum(SIZES)})
  return _order.configs(base_dir, index_dir=index_dir, **{**fields, **overrides})


def _assert_same_batches(got: list[dict], want: list[dict]) -> None:
  for step, (a, b) in enumerate(zip(got, want, strict=True)):
    assert set(a) == set(b)
    for field in a:
      # The records' names (source) carry their base_dir; everything else is the same.
      if field != "source":
        np.testing.assert_array_equal(a[field], b[field], err_msg=f"{field}, step {step}")


@pytest.mark.slow
@pytest.mark.tier2
def test_bucket_shards_index_and_train_like_local_ones(gcs, local_shards, tmp_path):
  bucket = f"gs://{_workdir.BUCKET}"
  remote = f"{bucket}/user/shards"  # the user's prefix: no vidtx marker
  names = sorted(name for name in os.listdir(local_shards) if ".tfrecord-" in name)
  assert len(names) == len(SIZES)
  for name in names:  # The shards only: no index or table travels with them.
    with open(os.path.join(local_shards, name), "rb") as f:
      paths.write_bytes(f"{remote}/{name}", f.read())
  table = f"{remote}/{SHARDS}"
  with pytest.raises(UserError, match=r"user/shards is not a folder of shards written by"):
    index_shards.index_shards(index_shards._shard_files(table), progress=False)

  index_dir = f"{bucket}/user/tables"
  note = records.frame_tables_note(
    reader_config.DatasetConfig.from_config(_configs(remote, index_dir)), "train"
  )
  assert "3 of its 3 shards cannot be" in note and "it has no frame table" in note
  argv = [f"--shards={table}", f"--index_dir={index_dir}", "--quiet"]
  counts = index_shards.main(argv)
  assert (counts["written"], counts["tables"], counts["records"]) == (3, 3, sum(SIZES))
  assert paths.exists(f"{index_dir}/.vidtx")  # claimed: the prefix is vidtx's now
  for name in names:  # The bucket's tables are the local ones (the same offsets).
    here, there = os.path.join(local_shards, name), f"{remote}/{name}"
    want = frame_table.FrameTable(here)
    got = frame_table.FrameTable(there, index_dir)
    np.testing.assert_array_equal(got.records, want.records)
    np.testing.assert_array_equal(got.frames, want.frames)
    np.testing.assert_array_equal(
      record_index.load_index(there, index_dir), record_index.load_index(here)
    )
  assert index_shards.main(argv)["kept"] == 3  # A rerun: up to date, nothing written.
  # Bucket shards indexed into a local folder: the same tables.
  local_index = str(tmp_path / "tables")
  index_shards.main([f"--shards={table}", f"--index_dir={local_index}", "--quiet"])
  first = f"{remote}/{names[1]}"
  np.testing.assert_array_equal(
    frame_table.FrameTable(first, local_index).frames,
    frame_table.FrameTable(os.path.join(local_shards, names[1])).frames,
  )

  # The global-order stream from the bucket is the local one, on 1 process and on 2.
  want = _order.global_batches(_configs(local_shards), 1)
  ids = np.concatenate([batch["video_id"] for batch in want])
  assert sorted(ids[: sum(SIZES)].tolist()) == [f"v{i}".encode() for i in range(sum(SIZES))]
  _assert_same_batches(_order.global_batches(_configs(remote, index_dir), 1), want)
  _assert_same_batches(_order.global_batches(_configs(remote, index_dir), 2), want)
  # The per-process stream reads the bucket's shards through their tables too.
  per_process = [
    reader_config.DatasetConfig.from_config(_configs(base_dir, index, global_order=False))
    for base_dir, index in ((local_shards, ""), (remote, index_dir))
  ]
  assert records.frame_tables_missing(per_process[1], "train") is None
  got, want = (
    list(pipeline.build_train_dataset(dc, batch_size=4, seed=3).take(3).as_numpy_iterator())
    for dc in per_process
  )
  _assert_same_batches(got, want)

  # A shard written again (the same bytes: a new generation) is named at start-up.
  paths.write_bytes(first, paths.read_bytes(first))
  dc = reader_config.DatasetConfig.from_config(_configs(remote, index_dir))
  with pytest.raises(UserError, match=rf"{names[1]}: the shard changed .*generation differs"):
    global_order.record_table(dc, "train")
  again = index_shards.main(argv)
  assert (again["kept"], len(again["rewritten"])) == (2, 1)
  assert global_order.record_table(dc, "train").total == sum(SIZES)
