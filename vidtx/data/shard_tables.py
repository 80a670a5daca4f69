"""One table of DMVR shards, `{split}.tfrecord@{num_shards}`, written from a source's items: the
labels resolved and checked (class_labels), repeated rows handled, the shards written on worker
processes (shard_writer) and resumed where they exist, the report of bad videos and the summary.

Only into a directory this tool may write (vidtx.ownership: new, empty, or marked as its own),
one conversion at a time (vidtx.locks). The command is vidtx.data.make_shards.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vidtx import locks, ownership
from vidtx.data import sources
from vidtx.errors import UserError
from vidtx.progress import Reporter

# TensorFlow (dmvr, shard_writer, class_labels) is imported inside the functions that use it:
# the command's --help and argument errors answer before that import.
if TYPE_CHECKING:
  from vidtx.data import shard_writer

LOCK_HOLDER = "vidtx.data.make_shards"
OUTPUT_HINT = "Pass a new or empty --output_dir."


def is_legacy_shards_dir(directory: str) -> bool:
  """Shards written by this tool before the ownership marker: a `{split}_summary.json` of it, or
  (a conversion interrupted before its summary) a shard's stats `{split}_shards/*.json`."""
  escaped = glob.escape(directory)
  for pattern, fields in (
    ("*_summary.json", {"split", "table", "num_shards", "shards_written"}),
    ("*_shards/*.tfrecord-*.json", {"shard", "videos", "examples", "bad"}),
  ):
    for path in glob.glob(os.path.join(escaped, pattern)):
      found = ownership.read_json(path)
      if found and fields <= set(found):
        return True
  return False


def record_written(output_dir: str, names: Sequence[str]) -> None:
  """Adds `names` to the marker's inventory of what vidtx wrote in `output_dir`, when it keeps
  one (a directory claimed new or empty; an earlier vidtx's directory has none)."""
  if ownership.written_names(output_dir) is not None:
    ownership.record_written(output_dir, names)


def check_output_dir(output_dir: str) -> None:
  """Raises ownership.NotOwnedError unless the shards may go into `output_dir`; writes nothing."""
  ownership.check_claimable(output_dir, "shards", legacy=is_legacy_shards_dir, hint=OUTPUT_HINT)


def check_options(
  split: str, num_shards: int, num_workers: int, options: shard_writer.Options
) -> None:
  if not split or "/" in split or "@" in split:
    raise UserError(f"--split={split!r}: expected a plain name such as 'train'.")
  checks = [
    (num_shards >= 1, f"--num_shards={num_shards}: expected >= 1."),
    (num_workers >= 1, f"--num_workers={num_workers}: expected >= 1."),
    (options.fps >= 0, f"--fps={options.fps}: expected >= 0 (0 keeps the native rate)."),
    (options.short_side >= 0, f"--short_side={options.short_side}: expected >= 0."),
    (
      1 <= options.jpeg_quality <= 100,
      f"--jpeg_quality={options.jpeg_quality}: expected 1 to 100.",
    ),
    (options.min_frames >= 1, f"--min_frames={options.min_frames}: expected >= 1."),
    (
      not options.max_frames or options.max_frames >= options.min_frames,
      f"--max_frames={options.max_frames}: expected >= --min_frames={options.min_frames}.",
    ),
  ]
  for ok, message in checks:
    if not ok:
      raise UserError(message)


def write_split(
  items: Sequence[sources.Item],
  output_dir: str,
  split: str,
  *,
  num_shards: int = 16,
  fps: float = 0,
  short_side: int = 0,
  jpeg_quality: int = 90,
  num_workers: int = 1,
  max_frames: int | None = None,
  min_frames: int = 1,
  label_map: str | None = None,
  class_names: Sequence[str] | None = None,
  class_splits: Sequence[int] | None = None,
  duplicates: str = "skip",
  conflicts: str = "error",
  folder_repeats: dict[str, int] | None = None,
  progress: bool = True,
  lock: bool = True,
) -> dict[str, Any]:
  """Writes `items` as the table `{split}.tfrecord@{num_shards}` in `output_dir`; see the
  module doc. Shards that exist are kept (resume). Returns the summary also written to
  `{split}_summary.json` (plus 'bad_videos': [index, video_id, path, reason] rows).
  `folder_repeats`: counts of videos in several class folders, added to the summary's
  ('conflicts', 'merged'); `lock`: False when the caller holds `output_dir`'s lock already.

  Raises ownership.NotOwnedError when `output_dir` is not this tool's (new, empty or marked),
  ValueError for repeated rows that `duplicates` / `conflicts` say stop and for class names
  labels.txt cannot hold, and locks.LockedError while another conversion writes into
  `output_dir`; all before anything is written.
  """
  from vidtx.data import class_labels, shard_writer

  options = shard_writer.Options(
    fps=fps,
    short_side=short_side,
    jpeg_quality=jpeg_quality,
    max_frames=max_frames or None,
    min_frames=min_frames,
  )
  check_options(split, num_shards, num_workers, options)
  started = time.time()
  check_output_dir(output_dir)
  names = class_labels.resolve_label_map(items, output_dir, label_map, class_names, write=False)
  class_labels.check_names(names)
  labels, errors, merged, repeat_counts = _resolve_labels(items, names, duplicates, conflicts)
  for key, value in (folder_repeats or {}).items():
    repeat_counts[key] = repeat_counts.get(key, 0) + value

  ownership.claim(output_dir, "shards", legacy=is_legacy_shards_dir, hint=OUTPUT_HINT)
  # One conversion at a time: a second one would remove this one's temporary shards below.
  with locks.hold(output_dir, LOCK_HOLDER) if lock else contextlib.nullcontext():
    shards = _prepare_output(output_dir, split, num_shards, names)
    entries = _shard_entries(items, names, labels, errors, merged, num_shards)
    done_stats, new_stats = _write_tables(
      split, shards, entries, options, num_workers, len(items) - len(merged), progress
    )
    stats = done_stats + new_stats
    bad_videos = sorted(row for s in stats for row in s["bad"])
    summary = {
      "split": split,
      "table": f"{split}.tfrecord@{num_shards}",
      "base_dir": os.path.abspath(output_dir),
      "videos": len(items),
      "examples": sum(s["examples"] for s in stats),
      "bad": len(bad_videos),
      "num_classes": len(names),
      "num_shards": num_shards,
      "shards_written": len(new_stats),
      "shards_skipped": len(done_stats),
      "fps": fps,
      "short_side": short_side,
      "jpeg_quality": jpeg_quality,
    }
    _write_report_and_summary(
      output_dir, summary, bad_videos, new_stats, started, repeat_counts, class_splits, items
    )
    return {**summary, "bad_videos": bad_videos}


def _resolve_labels(
  items: Sequence[sources.Item], names: Sequence[str], duplicates: str, conflicts: str
) -> tuple[list[Any], list[str | None], Any, dict[str, int]]:
  """Each item's label indices (None for an item the source left out) and error, the rows merged
  into an earlier one, and the counts of repeated rows (class_labels.apply_repeats). Raises
  ValueError for repeats that `duplicates` / `conflicts` say stop."""
  from vidtx.data import class_labels

  # A name may come twice (Epic-Kitchens has a noun and a verb 'filter'): as a label it is
  # ambiguous (None), as an index it is fine.
  counts = collections.Counter(names)
  index_of = {name: i if counts[name] == 1 else None for i, name in enumerate(names)}
  resolved = [class_labels.label_indices(item, index_of, len(names)) for item in items]
  # An item the source already left out (item.error) is reported, and not checked for repeats.
  labels = [
    None if item.error else indices for item, (indices, _) in zip(items, resolved, strict=True)
  ]
  errors = [item.error or error for item, (_, error) in zip(items, resolved, strict=True)]
  merged, repeat_counts = class_labels.apply_repeats(
    items, labels, errors, names, duplicates, conflicts
  )
  return labels, errors, merged, repeat_counts


def _prepare_output(
  output_dir: str, split: str, num_shards: int, names: Sequence[str]
) -> list[str]:
  """Under the lock: removes an interrupted run's temporary shards, records what this run will
  write, writes labels.txt where there is none; returns the shards' paths."""
  from vidtx.data import class_labels, dmvr

  for stale in glob.glob(
    os.path.join(glob.escape(output_dir), f".{glob.escape(split)}.tfrecord-*.tmp-*")
  ):
    os.remove(stale)  # Left by an interrupted run: shards are only ever renamed when complete.
  labels_path = os.path.join(output_dir, "labels.txt")
  write_labels = bool(names) and not os.path.exists(labels_path)
  shards = dmvr.shard_names(os.path.join(output_dir, f"{split}.tfrecord"), num_shards)
  # Recorded before they are written: what an interrupted run leaves is known as vidtx's too.
  record_written(
    output_dir,
    [os.path.basename(shard) for shard in shards]
    + [f"{split}_shards", f"{split}_report.txt", f"{split}_summary.json"]
    + (["labels.txt"] if write_labels else []),
  )
  if write_labels:
    class_labels.write_labels(labels_path, names)  # Read back: exactly `names`, or an error.
  return shards


def _shard_entries(
  items: Sequence[sources.Item],
  names: Sequence[str],
  labels: Sequence[Any],
  errors: Sequence[str | None],
  merged: Any,
  num_shards: int,
) -> list[list[tuple[int, sources.Item, Any, str | None]]]:
  """Per shard, its (index, item, label indices, error) rows: the items by input row, their
  label_text named after the labels they take."""
  entries = [[] for _ in range(num_shards)]
  for index, item in enumerate(items):
    if index in merged:
      continue  # Its labels are in an earlier row's example (--conflicts=merge).
    indices, error = labels[index], errors[index]
    if indices and len(indices) > 1 and not item.labels[1:]:
      # Merged single-label rows: the text names every label.
      item = dataclasses.replace(item, label_text="+".join(names[i] for i in indices))
    if item.label_text is None and indices and len(indices) == 1 and indices[0] >= 0:
      item = dataclasses.replace(item, label_text=names[indices[0]])
    # Shard by the input row, whatever is merged or left out: a rerun finds the same shards.
    entries[index % num_shards].append((index, item, indices, error))
  return entries


def _write_tables(
  split: str,
  shards: Sequence[str],
  entries: Sequence[Sequence[Any]],
  options: shard_writer.Options,
  num_workers: int,
  total: int,
  progress: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """Writes the shards that do not exist yet, on worker processes, with a meter on stderr;
  returns the stats of the shards found (kept: resume) and of those written."""
  from vidtx.data import shard_writer

  done_stats, tasks = [], []
  for shard, shard_entries in zip(shards, entries, strict=True):
    if os.path.exists(shard):
      done_stats.append(shard_writer.read_stats(shard, len(shard_entries), options))
      _index_kept_shard(shard)
    else:
      tasks.append((shard, shard_entries, options))
  if done_stats and progress:
    skipped = ", ".join(s["shard"] for s in done_stats[:3]) + (
      ", ..." if len(done_stats) > 3 else ""
    )
    print(
      f"{split}: skipping the {len(done_stats)} of {len(shards)} shards that exist ({skipped})",
      file=sys.stderr,
    )
  # `split: done/total videos | N bad | videos/s | ETA` on stderr (vidtx.progress.Reporter).
  meter = Reporter(
    total,
    prefix=f"{split}: ",
    unit=" videos",
    done=sum(s["videos"] for s in done_stats),
    counters={"bad": sum(len(s["bad"]) for s in done_stats)},
    rates=(("videos/s", 1.0, 1),),
    enabled=progress,
  )
  new_stats = shard_writer.write_shards(
    tasks, min(num_workers, len(tasks)), lambda bad: meter.advance(bad=int(bad))
  )
  meter.finish(total, bad=sum(len(s["bad"]) for s in done_stats + new_stats))
  return done_stats, new_stats


def _index_kept_shard(shard: str) -> None:
  """Indexes a shard kept from an earlier run (written before indexes were, or replaced since)."""
  from vidtx.data import frame_table, record_index

  index = record_index.index_path(shard)
  if not os.path.exists(index) or record_index.stale_reason(shard, index):
    record_index.write_index(index, record_index.scan_shard(shard), os.stat(shard))
  if frame_table.stale_reason(shard):
    frame_table.build_table(shard, record_index.load_index(shard))


def _write_report_and_summary(
  output_dir: str,
  summary: dict[str, Any],
  bad_videos: Sequence[Any],
  new_stats: Sequence[dict[str, Any]],
  started: float,
  repeat_counts: dict[str, int],
  class_splits: Sequence[int] | None,
  items: Sequence[sources.Item],
) -> None:
  """`{split}_report.txt` (one line per bad video) and `{split}_summary.json`; completes
  `summary` in place with the timing, repeats, class splits and whether items are unlabelled."""
  from vidtx.data import dmvr

  split = summary["split"]
  report = "".join(f"{video_id}\t{path}\t{reason}\n" for _, video_id, path, reason in bad_videos)
  dmvr.write_text_atomically(os.path.join(output_dir, f"{split}_report.txt"), report)
  seconds = time.time() - started
  converted = sum(s["videos"] for s in new_stats)
  summary["seconds"] = round(seconds, 2)
  summary["videos_per_second"] = round(converted / seconds, 2) if converted else None
  summary.update({key: value for key, value in repeat_counts.items() if value})
  if class_splits:
    summary["class_splits"] = list(class_splits)
  if any(not item.labels for item in items):
    summary["unlabelled"] = True
  dmvr.write_text_atomically(
    os.path.join(output_dir, f"{split}_summary.json"), json.dumps(summary, indent=1) + "\n"
  )
