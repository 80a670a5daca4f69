"""Writes the record index (vidtx.data.record_index) and the frame table
(vidtx.data.frame_table) of shards that have none:

  python -m vidtx.data.index_shards --shards=DIR/train.tfrecord@16 [--index_dir=DIR2]

--shards: a table `name@N`, a glob, or comma-separated files. Shards written by
python -m vidtx.data.make_shards (a folder with its `.vidtx` marker) get their index beside them,
in the hidden DIR/train_shards/. Shards anywhere else are the user's: vidtx writes nothing in
their folder, and the indexes go to --index_dir (a new or empty directory, or one this command
wrote before), with the same layout: DIR2/train_shards/train.tfrecord-00003-of-00016.idx.

A rerun keeps the indexes that still describe their shard (size and mtime, recorded in the
sidecar JSON), writes the missing ones and writes again, naming them, those whose shard changed.
The frame table reads every record (its checksum checked): at disk speed, plus ~1 ms of CPU per
250-frame record. With it, training reads only the frames each clip uses; the reader is told
where the tables are with dataset_configs.index_dir=DIR2 when they are not beside the shards.

Shards in a bucket (gs://BUCKET/DIR/train.tfrecord@16) are indexed the same way, each read in one
download (its records' checksums checked); the index and table record the object's size and
generation. --index_dir may be local or in the bucket (a new or empty prefix, or one this command
wrote: its `.vidtx` marker), and a bucket folder of shards written by make_shards (its marker)
gets them beside the shards.
"""

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from vidtx import locks, ownership, paths
from vidtx.errors import UserError
from vidtx.progress import Reporter

LOCK_HOLDER = "vidtx.data.index_shards"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m vidtx.data.index_shards",
    description="Writes DALI-format record indexes of TFRecord shards (random access).",
  )
  parser.add_argument(
    "--shards", required=True, help="A table name@N, a glob, or comma-separated files."
  )
  parser.add_argument(
    "--index_dir",
    default=None,
    help="Where the indexes go when the shards' folder is not vidtx's (new, empty, or written "
    "by this command before).",
  )
  parser.add_argument("--quiet", action="store_true", help="No progress line on stderr.")
  return parser.parse_args(argv)


def _shard_files(table: str) -> list[str]:
  from vidtx.data import dmvr  # The file listing (gs:// too).

  entries = [entry for entry in table.split(",") if entry]
  return dmvr.expand_table("", entries if len(entries) > 1 else table)


def _check_destinations(files: Sequence[str], index_dir: str | None) -> list[str]:
  """The directories to lock and mark: the shards' own (each must be vidtx's shards folder) or
  --index_dir (claimed). Refuses, naming the folder and --index_dir, before anything is written."""
  from vidtx.data import shard_tables

  if index_dir is not None:
    if ownership.marker_kind(index_dir) != "shards":  # Indexes may join vidtx's own shards.
      ownership.claim(index_dir, "index", hint="Pass a new or empty --index_dir.")
    return [index_dir]
  folders = sorted({os.path.dirname(paths.abspath(file)) for file in files})
  for folder in folders:
    if ownership.marker_kind(folder) != "shards" and not shard_tables.is_legacy_shards_dir(folder):
      raise UserError(
        f"{folder} is not a folder of shards written by python -m vidtx.data.make_shards (no "
        f"{ownership.MARKER} marker): vidtx writes nothing into it. Pass --index_dir=DIR (a new "
        "or empty directory) to put the indexes there."
      )
  return folders


def index_shards(
  files: Sequence[str], index_dir: str | None = None, *, progress: bool = True
) -> dict[str, Any]:
  """Indexes `files` (into `index_dir`, or beside each shard); returns the counts: shards,
  records, written, kept (up to date), rewritten (their shard changed: named on stderr), tables
  (frame tables written: vidtx.data.frame_table)."""
  from vidtx.data import frame_table, record_index, shard_store

  folders = _check_destinations(files, index_dir)
  counts = {"shards": len(files), "records": 0, "written": 0, "kept": 0, "rewritten": []}
  counts["tables"] = 0
  meter = Reporter(
    sum(sizes := [shard_store.size(file) for file in files]),
    prefix="indexing: ",
    unit=" bytes",
    rates=(("MB/s", 1e-6, 1),),
    enabled=progress,
  )
  with contextlib.ExitStack() as held:
    for folder in folders:  # One writer per directory: make_shards, another indexer.
      held.enter_context(locks.hold(folder, LOCK_HOLDER))
    for folder in folders:
      # The hidden `{split}_shards` folders the indexes go in: recorded as vidtx's before writing.
      names = {
        os.path.basename(os.path.dirname(record_index.index_path(file, folder)))
        for file in files
        if index_dir is not None or os.path.dirname(paths.abspath(file)) == folder
      }
      if ownership.written_names(folder) is not None:
        ownership.record_written(folder, sorted(names))
    for file, size in zip(files, sizes, strict=True):
      index = record_index.index_path(file, index_dir)
      reason = record_index.stale_reason(file, index) if paths.exists(index) else "missing"
      if reason is None:
        counts["kept"] += 1
        rows = record_index.read_index(index)
        counts["records"] += len(rows)
        if frame_table.stale_reason(file, index_dir):  # Indexed before frame tables existed.
          if shard_store.is_remote(file):
            frame_table.index_remote_shard(file, index_dir)
          else:
            frame_table.build_table(file, rows, index_dir)
          counts["tables"] += 1
      else:
        if shard_store.is_remote(file):  # One download: the index and the table from it.
          rows = frame_table.index_remote_shard(file, index_dir)
        else:
          rows = record_index.scan_shard(file)
          record_index.write_index(index, rows, os.stat(file))
          frame_table.build_table(file, rows, index_dir)
        counts["tables"] += 1
        counts["records"] += len(rows)
        if reason == "missing":
          counts["written"] += 1
        else:
          counts["rewritten"].append(index)
          print(f"{index} disagreed with {file} ({reason}): indexed again.", file=sys.stderr)
      meter.advance(size)
  meter.finish()
  return counts


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    files = _shard_files(args.shards)
    counts = index_shards(files, args.index_dir, progress=not args.quiet)
  except (UserError, OSError) as e:
    print(f"vidtx.data.index_shards: error: {e}", file=sys.stderr)
    sys.exit(1)
  where = args.index_dir or "beside the shards"
  print(
    f"{counts['shards']} shards, {counts['records']} records: {counts['written']} indexes "
    f"written, {counts['kept']} up to date, {len(counts['rewritten'])} written again; "
    f"{counts['tables']} frame tables written ({where})."
  )
  return counts


if __name__ == "__main__":
  main()
