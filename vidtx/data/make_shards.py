r"""Converts downloaded video datasets into DMVR TFRecord shards (vidtx.data.dmvr).

  python -m vidtx.data.make_shards --source=kinetics --input=k400/train.csv --video_dir=k400/train \
      --output_dir=/data/k400 [--split=train] [--num_shards=16] [--fps=0] [--short_side=256] \
      [--jpeg_quality=90] [--num_workers=N] [--max_frames=0] [--min_frames=1] [--label_map=FILE] \
      [--duplicates=skip|keep|error] [--conflicts=error|skip|merge|keep]
  python -m vidtx.data.make_shards --source=ssv2 --input=something-something-v2-train.json \
      --labels_json=something-something-v2-labels.json --video_dir=20bn-something-something-v2 ...
  python -m vidtx.data.make_shards --source=epic --input=EPIC_100_train.csv \
      --video_dir=EPIC-KITCHENS \
      [--epic_noun_classes=EPIC_100_noun_classes.csv --epic_verb_classes=EPIC_100_verb_classes.csv]
  python -m vidtx.data.make_shards --source=csv --input=videos.csv --video_dir=videos ...
  python -m vidtx.data.make_shards --source=folders --input=ROOT --output_dir=OUT \
      [--val_fraction=0.1] [--seed=0] ...

Sources (--input is the annotation file; for folders, the root folder):
  kinetics  CSV `label,youtube_id,time_start,time_end,split` (no `label` in unlabelled test CSVs:
            those videos get label -1). A video is the pre-cut clip
            `{youtube_id}_{time_start:06d}_{time_end:06d}.{mp4,webm,mkv,...}` anywhere under
            --video_dir (e.g. in a `{label}/` folder), else the full video `{youtube_id}.{ext}`
            cut to [time_start, time_end) seconds.
  ssv2      Something-Something v2 split JSON; --labels_json maps each template (without its
            brackets) to the class index; videos `{id}.webm`.
  epic      Epic-Kitchens-100 CSV; one example per narration (its start..stop segment of
            `{video_id}.MP4` anywhere under --video_dir), labels [noun_class, 300 + verb_class],
            labels.txt = the 300 nouns then the 97 verbs.
  csv       `path,label[,start,end]` (optional header); label a class name or an integer index;
            paths relative to --video_dir; start / end in seconds.
  folders   no annotations, no --video_dir: ROOT/<class>/<video> (anywhere under the class
            folder) is split here into train and validation, class by class: round(val_fraction
            * n) of a class's n videos (half up; at least 1 when n >= 2, at most n - 1), drawn
            with --seed from the sorted file names; --val_fraction=0: train only. Or
            ROOT/train/<class>/... with ROOT/val/<class>/... (or validation/): that split is kept
            (--val_fraction is then an error). Classes: the sorted folder names (a class only in
            val/ is an error; a name labels.txt cannot hold as it is: a line break, spaces at
            its ends, empty, not UTF-8, is refused naming the folder); video id: the path
            relative to ROOT; hidden entries and files without a video extension are skipped.
            Linked folders are followed, each real folder once (device and inode): a loop or a
            second path to a folder is not followed, and one warning line lists them. A split
            drawn here draws from the videos that open and decode a first frame; the others go
            with train (reported bad there), so corrupt files never fill validation. A video
            in several class folders (a link to one file, or a copy with the same size and
            sha256) follows --conflicts (below: skip, merge and keep per class folder). One run
            writes both tables, each of --num_shards shards (at most one per video), records
            the split in folders_split.json (a rerun resumes only the same split), lists it in
            train.csv and validation.csv (`path,class`, path relative to ROOT; written before
            the conversion), warns (one line) when a class has fewer than 3 validation videos,
            naming them and the --val_fraction that fixes it, and prints the train.py command
            that fine-tunes on them: quoted for the shell, run in the shards folder (cd) when
            its path cannot go in --config's data= (a comma, spaces at its ends), with a line
            saying random flips will be off when class names say left / right / clockwise
            (class_labels.direction_classes), and not printed when a split holds no converted
            video or there are fewer than 2 classes (the final lines say why).

Output in --output_dir: `{split}.tfrecord-0000i-of-0000N` (the table `{split}.tfrecord@N`), one
SequenceExample per video (video i in shard i % N); labels.txt (line i = class i: --label_map,
else an existing labels.txt, so later splits reuse the training split's map, else the dataset's
own list or the sorted class names of the input); `{split}_report.txt` (the videos left out and
why); `{split}_summary.json`; `{split}_shards/` (one JSON per shard: its counts and bad videos).

--output_dir must be new, empty, or a directory this tool wrote (its `.vidtx` marker, or from
before the marker a `{split}_summary.json` of this tool): anything else is refused before the
annotations are read, so a folder of other files is never written into (vidtx.ownership). It
must not be, or hold, an input (--input, --video_dir, ...), nor lie inside a folders --input
(vidtx.outputs.check_paths). One conversion at a time writes into it: a second one refuses,
naming the first (its lock, vidtx.locks), before it writes anything.

A shard is written under a hidden temporary name and renamed when complete; a rerun skips the
shards that exist, so an interrupted conversion resumes where it stopped. A bad video (missing,
empty, corrupt, too short, a segment outside it, an unknown label) is listed in the report and
never stops the conversion.

Repeated rows: rows for the same video and segment (the same id, file, start and end; input rows
are numbered from 1, a header not counted) are checked before anything is written.
  --duplicates  rows that repeat an earlier row's labels too. skip (default): left out, listed in
                the report as "duplicate of input row N" and counted as bad; keep: written again;
                error: stop.
  --conflicts   rows that give a video and segment other labels than an earlier row. error
                (default): stop, naming the first of them (a single-label dataset should not have
                any); skip: leave all of that video's rows out (reported, counted as bad); merge:
                one example with all the labels, in the order of the rows (a multi-label dataset
                listed one label per row, read with dataset_configs.multi_label=True); keep: one
                example per row, each with its own label.
The summary counts them ('duplicates': repeated rows, 'conflicts': videos with conflicting
labels, 'merged': rows folded into an earlier row's example) and the final line says so.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import glob
import hashlib
import io
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vidtx import locks, outputs, ownership
from vidtx.data import sources
from vidtx.progress import Reporter

# TensorFlow (dmvr, shard_writer, class_labels) and PyAV (video_decode) are imported inside the
# functions that use them: --help and argument errors answer before those imports.
if TYPE_CHECKING:
  from vidtx.data import shard_writer

SOURCES = ("kinetics", "ssv2", "epic", "csv", "folders")
FOLDERS_SPLIT_FILE = "folders_split.json"
# The videos of each split a folders run drew (or found), written before the conversion.
SPLIT_FILES = {"train": "train.csv", "validation": "validation.csv"}
MIN_VAL_VIDEOS = 3  # Fewer per class: warned (1 video moves a class's accuracy by 100%).
SHOWN_CLASSES = 5
LOCK_HOLDER = "vidtx.data.make_shards"
PROBE_METER = 256  # Named by a second conversion into the same folder.
_OUTPUT_HINT = "Pass a new or empty --output_dir."
# --duplicates: class_labels.DUPLICATE_MODES, here without its TensorFlow import (a test checks
# that they agree).
DUPLICATE_MODES = ("skip", "keep", "error")

# ---------------------------------------------------------------------------------------------
# The conversion.
# ---------------------------------------------------------------------------------------------


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
  ownership.check_claimable(output_dir, "shards", legacy=is_legacy_shards_dir, hint=_OUTPUT_HINT)


def _check_options(
  split: str, num_shards: int, num_workers: int, options: shard_writer.Options
) -> None:
  if not split or "/" in split or "@" in split:
    raise ValueError(f"--split={split!r}: expected a plain name such as 'train'.")
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
      raise ValueError(message)


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
  from vidtx.data import class_labels, dmvr, shard_writer

  options = shard_writer.Options(
    fps=fps,
    short_side=short_side,
    jpeg_quality=jpeg_quality,
    max_frames=max_frames or None,
    min_frames=min_frames,
  )
  _check_options(split, num_shards, num_workers, options)
  started = time.time()
  check_output_dir(output_dir)
  names = class_labels.resolve_label_map(items, output_dir, label_map, class_names, write=False)
  class_labels.check_names(names)
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
  for key, value in (folder_repeats or {}).items():
    repeat_counts[key] = repeat_counts.get(key, 0) + value

  ownership.claim(output_dir, "shards", legacy=is_legacy_shards_dir, hint=_OUTPUT_HINT)
  # One conversion at a time: a second one would remove this one's temporary shards below.
  with locks.hold(output_dir, LOCK_HOLDER) if lock else contextlib.nullcontext():
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

    done_stats, tasks = [], []
    for shard, shard_entries in zip(shards, entries, strict=True):
      if os.path.exists(shard):
        done_stats.append(shard_writer.read_stats(shard, len(shard_entries), options))
      else:
        tasks.append((shard, shard_entries, options))
    if done_stats and progress:
      skipped = ", ".join(s["shard"] for s in done_stats[:3]) + (
        ", ..." if len(done_stats) > 3 else ""
      )
      print(
        f"{split}: skipping the {len(done_stats)} of {num_shards} shards that exist ({skipped})",
        file=sys.stderr,
      )
    # `split: done/total videos | N bad | videos/s | ETA` on stderr (vidtx.progress.Reporter).
    meter = Reporter(
      len(items) - len(merged),
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
    stats = done_stats + new_stats
    bad_videos = sorted(row for s in stats for row in s["bad"])
    examples = sum(s["examples"] for s in stats)
    meter.finish(len(items) - len(merged), bad=len(bad_videos))

    report = "".join(f"{video_id}\t{path}\t{reason}\n" for _, video_id, path, reason in bad_videos)
    dmvr.write_text_atomically(os.path.join(output_dir, f"{split}_report.txt"), report)
    seconds = time.time() - started
    converted = sum(s["videos"] for s in new_stats)
    summary = {
      "split": split,
      "table": f"{split}.tfrecord@{num_shards}",
      "base_dir": os.path.abspath(output_dir),
      "videos": len(items),
      "examples": examples,
      "bad": len(bad_videos),
      "num_classes": len(names),
      "num_shards": num_shards,
      "shards_written": len(new_stats),
      "shards_skipped": len(done_stats),
      "fps": fps,
      "short_side": short_side,
      "jpeg_quality": jpeg_quality,
      "seconds": round(seconds, 2),
      "videos_per_second": round(converted / seconds, 2) if converted else None,
    }
    summary.update({key: value for key, value in repeat_counts.items() if value})
    if class_splits:
      summary["class_splits"] = list(class_splits)
    if any(not item.labels for item in items):
      summary["unlabelled"] = True
    dmvr.write_text_atomically(
      os.path.join(output_dir, f"{split}_summary.json"), json.dumps(summary, indent=1) + "\n"
    )
    return {**summary, "bad_videos": bad_videos}


def _describe_split(record: dict[str, Any]) -> str:
  counts = " / ".join(f"{n} {split}" for split, n in record["videos"].items())
  # The seed also orders the training videos, and so decides which shard holds which.
  drawn = (
    "train/ and val/ as found"
    if record["val_fraction"] is None
    else f"--val_fraction={record['val_fraction']}"
  )
  # Recorded only where videos are in several class folders: it decides what was written.
  conflicts = f" --conflicts={record['conflicts']}" if record.get("conflicts") else ""
  return f"{drawn} --seed={record['seed']}{conflicts}, {counts} videos"


def _check_folder_split(output_dir: str, record: dict[str, Any]) -> bool:
  """Whether `output_dir` already records this split; ValueError when it records another."""
  path = os.path.join(output_dir, FOLDERS_SPLIT_FILE)
  found = ownership.read_json(path)
  if found is None or found == record:
    return found is not None
  before, now = _describe_split(found), _describe_split(record)
  if before == now:
    now += ", other video files"
  # The shards that exist would be kept: a video could then be in train and in validation.
  raise ValueError(
    f"{output_dir} holds shards of another split of the videos ({before}; this run: {now}), "
    f"recorded in {path}. Resuming would mix the two splits; pass the first run's options, or "
    "choose a new --output_dir."
  )


def write_folders(
  root: str,
  output_dir: str,
  *,
  val_fraction: float | None = None,
  seed: int = 0,
  num_shards: int = 16,
  fps: float = 0,
  short_side: int = 0,
  jpeg_quality: int = 90,
  num_workers: int = 1,
  max_frames: int | None = None,
  min_frames: int = 1,
  label_map: str | None = None,
  conflicts: str = "error",
  progress: bool = True,
  lock: bool = True,
) -> dict[str, dict[str, Any]]:
  """Writes the videos in the class folders under `root` (sources.folders_source: split there
  by `val_fraction` and `seed`, or the user's train/ and val/) as the tables `train.tfrecord@N`
  and `validation.tfrecord@M` in `output_dir`, N and M at most `num_shards` and at most one
  shard per video. Returns each split's summary (write_split's) by name.

  A split drawn here draws from the videos that open and decode a first frame
  (video_decode.probe, on `num_workers` threads): the others are converted with train, where
  the report says why each is bad. `conflicts` handles a video in several class folders (the
  same file or a copy; sources.folders_source). Links to folders walked already are not
  followed; one warning line lists them.

  Raises ValueError before anything is written for a bad folder tree, an `output_dir` inside
  `root`, an `output_dir` holding another split (FOLDERS_SPLIT_FILE), or videos in several
  class folders with conflicts='error'; resumes the same split. Holds `output_dir`'s lock
  while it writes (locks.LockedError while another conversion holds it; `lock`: False when the
  caller holds it already).
  """
  from vidtx.data import dmvr, shard_writer

  options = shard_writer.Options(
    fps=fps,
    short_side=short_side,
    jpeg_quality=jpeg_quality,
    max_frames=max_frames or None,
    min_frames=min_frames,
  )
  _check_options("train", num_shards, num_workers, options)
  check_output_dir(output_dir)
  real_root, real_out = os.path.realpath(root), os.path.realpath(output_dir)
  if "://" not in output_dir and os.path.commonpath([real_root, real_out]) == real_root:
    raise ValueError(
      f"--output_dir {output_dir} is inside --input {root}, where it would be read as a class "
      "folder; choose an output directory outside it."
    )
  dataset = sources.folders_source(
    root,
    val_fraction,
    seed,
    conflicts=conflicts,
    probe=lambda paths: probe_videos(paths, num_workers, progress),
  )
  if dataset.links_skipped:
    # repr for a name with a line break or other control character: the warning stays one line.
    shown = ", ".join(
      link if link.isprintable() else repr(link) for link in dataset.links_skipped[:5]
    )
    print(
      f"warning: --input {root}: {len(dataset.links_skipped)} linked folder(s) lead to a folder "
      f"walked already (a loop, or a second path to it) and were not followed: {shown}"
      + (", ..." if len(dataset.links_skipped) > 5 else ""),
      file=sys.stderr,
    )
  if dataset.unreadable:
    print(
      f"warning: --input {root}: {dataset.unreadable} video(s) do not open or decode a first "
      "frame; none was drawn for validation: they go with train, whose report says why each "
      "is bad.",
      file=sys.stderr,
    )
  # What decides the split, and the split itself: a rerun must find the same one to resume.
  ids = {split: [item.video_id for item in items] for split, items in dataset.splits.items()}
  record = {
    "layout": dataset.layout,
    "val_fraction": dataset.val_fraction,
    "seed": seed,
    "videos": {split: len(videos) for split, videos in ids.items()},
    "sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
  }
  if dataset.same_videos:
    record["conflicts"] = conflicts
  _check_folder_split(output_dir, record)
  split_files = {split: SPLIT_FILES[split] for split in dataset.splits}
  _check_split_files(output_dir, split_files.values())
  warning = small_validation_warning(dataset, root, output_dir)
  if warning:
    print(warning, file=sys.stderr)
  ownership.claim(output_dir, "shards", legacy=is_legacy_shards_dir, hint=_OUTPUT_HINT)
  with locks.hold(output_dir, LOCK_HOLDER) if lock else contextlib.nullcontext():
    # Again under the lock: a run that ended meanwhile may have recorded another split.
    if not _check_folder_split(output_dir, record):
      record_written(output_dir, [FOLDERS_SPLIT_FILE])
      dmvr.write_text_atomically(
        os.path.join(output_dir, FOLDERS_SPLIT_FILE), json.dumps(record, indent=1) + "\n"
      )
    # The split as drawn, before any conversion: which videos validation holds is known now,
    # not after training. Recorded first: an interrupted write leaves only vidtx's files.
    _check_split_files(output_dir, split_files.values())
    record_written(output_dir, list(split_files.values()))
    for split, name in split_files.items():
      dmvr.write_text_atomically(os.path.join(output_dir, name), split_csv(dataset.splits[split]))
    return {
      split: write_split(
        items,
        output_dir,
        split,
        num_shards=min(num_shards, len(items)),
        fps=fps,
        short_side=short_side,
        jpeg_quality=jpeg_quality,
        num_workers=num_workers,
        max_frames=max_frames,
        min_frames=min_frames,
        label_map=label_map,
        class_names=dataset.class_names,
        folder_repeats=dataset.repeat_counts.get(split),
        progress=progress,
        lock=False,
      )
      for split, items in dataset.splits.items()
    }


def split_csv(items: Sequence[sources.Item]) -> str:
  """train.csv / validation.csv: a `path,class` header, then one row per video and class (a
  video merged under several classes, --conflicts=merge, has a row for each), sorted by class
  and path; path relative to --input, with / separators. Videos left out before conversion
  (--conflicts=skip) are not listed. A file name that is not valid UTF-8 is written with its
  bytes as \\xNN, so that the file stays UTF-8."""
  rows = sorted(
    (str(label), item.video_id) for item in items if item.error is None for label in item.labels
  )
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(["path", "class"])
  writer.writerows((path, label) for label, path in rows)
  return text.getvalue().encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _check_split_files(output_dir: str, names: Sequence[str]) -> None:
  """ValueError naming a split file in `output_dir` that vidtx did not write (a user's file of
  that name is never replaced)."""
  written = ownership.written_names(output_dir) if os.path.isdir(output_dir) else None
  for name in names:
    path = os.path.join(output_dir, name)
    if os.path.lexists(path) and name not in (written or ()):
      raise ValueError(
        f"{path} exists and was not written by this tool; it would be replaced by the list of "
        "the split's videos: move it away, or choose a new --output_dir."
      )


def _shown_classes(counts: Sequence[tuple[str, int, int]]) -> str:
  shown = [
    f"{name if name.isprintable() else repr(name)}: {val} of {total}"
    for name, val, total in counts[:SHOWN_CLASSES]
  ]
  return ", ".join(shown) + (", ..." if len(counts) > SHOWN_CLASSES else "")


def small_validation_warning(dataset: sources.FolderDataset, root: str, output_dir: str) -> str:
  """One warning line when a class has fewer than MIN_VAL_VIDEOS validation videos (and the
  split has any), naming those classes and what to change; else ''."""
  validation = dataset.splits.get("validation")
  if not validation:
    return ""  # No validation split at all: the final lines say so.
  val = collections.Counter(
    label for item in validation if item.error is None for label in item.labels
  )
  total = collections.Counter(
    label
    for items in dataset.splits.values()
    for item in items
    if item.error is None
    for label in item.labels
  )
  few = [
    (name, val[name], total[name]) for name in dataset.class_names if val[name] < MIN_VAL_VIDEOS
  ]
  if not few:
    return ""
  where = f"written to {os.path.join(output_dir, SPLIT_FILES['validation'])}"
  head = (
    f"warning: {len(few)} of {len(dataset.class_names)} classes have fewer than "
    f"{MIN_VAL_VIDEOS} validation videos ({_shown_classes(few)}), too few for their accuracy "
    "to tell runs apart"
  )
  if dataset.val_fraction is None:  # The user's own ROOT/train + ROOT/val.
    val_dir = os.path.join(root, validation[0].video_id.split("/")[0], "<class>")
    return (
      f"{head}; add videos to {val_dir} ({MIN_VAL_VIDEOS} or more per class). The split is {where}."
    )
  # The smallest fraction that gives every class that can spare them MIN_VAL_VIDEOS (a class
  # keeps one training video, so it needs MIN_VAL_VIDEOS + 1).
  can = [n for _, _, n in few if n > MIN_VAL_VIDEOS]
  fix = []
  if can:
    fraction = math.ceil((MIN_VAL_VIDEOS - 0.5) / min(can) * 100) / 100
    while fraction < 1 and any(sources.val_count(n, fraction) < MIN_VAL_VIDEOS for n in can):
      fraction = round(fraction + 0.01, 2)
    if fraction < 1:
      fix.append(
        f"pass --val_fraction={fraction} ({MIN_VAL_VIDEOS} or more for every class of "
        f"{min(can)} videos or more)"
      )
  cannot = [name for name, _, n in few if n <= MIN_VAL_VIDEOS]
  if cannot:
    fix.append(
      f"add videos to the {len(cannot)} class(es) of {MIN_VAL_VIDEOS} videos or fewer (each "
      "keeps one for training)"
    )
  fix.append("or split the videos yourself as ROOT/train/<class>/ and ROOT/val/<class>/")
  return f"{head}; {', '.join(fix)}. The split drawn is {where}."


def probe_videos(
  paths: Sequence[str], num_workers: int = 1, progress: bool = True
) -> list[str | None]:
  """video_decode.probe of every path (why it cannot be read, or None), on `num_workers`
  threads (FFmpeg decodes without the GIL). A meter on stderr for PROBE_METER videos or more
  (fewer take a second or so)."""
  from vidtx.data import video_decode

  meter = Reporter(
    len(paths), prefix="probing: ", unit=" videos", enabled=progress and len(paths) >= PROBE_METER
  )
  reasons = []
  with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
    for reason in pool.map(video_decode.probe, paths):
      reasons.append(reason)
      meter.advance()
  meter.finish()
  return reasons


def config_arg_safe(path: str) -> bool:
  """Whether `path` survives as a value of a config file's argument (`file.py:key=value,...`):
  vidtx.configs.common.parse_arg splits the argument at commas and strips each value."""
  return bool(path) and "," not in path and path == path.strip()


def finetune_command(output_dir: str, workdir: str = "runs/mine") -> str:
  """The train.py command that fine-tunes a pretrained model on the shards in `output_dir`,
  quoted for a POSIX shell.

  data= goes in the --config argument, which configs/finetune.py splits at commas and strips;
  where the path would not survive that (config_arg_safe), the command runs in the shards
  folder itself (`cd PATH && vidtx-train ...`, the packaged recipe, data=.), with an absolute
  --workdir: data= is what sizes the classes, splits and schedule, so no --config.* flag after
  it could stand in for it.
  """
  data = os.path.abspath(output_dir)
  if config_arg_safe(data):
    config = f"--config=configs/finetune.py:model=timesformer,data={data},init=CHECKPOINT_DIR"
    return f"python train.py {shlex.quote(config)} {shlex.quote('--workdir=' + workdir)}"
  return (
    f"cd {shlex.quote(data)} && vidtx-train "
    "--config=finetune:model=timesformer,data=.,init=CHECKPOINT_DIR "
    f"{shlex.quote('--workdir=' + os.path.abspath(workdir))}"
  )


def config_snippet(output_dir: str) -> str:
  """The dataset config of every split converted into `output_dir` (its *_summary.json)."""
  summaries = []
  for path in sorted(glob.glob(os.path.join(glob.escape(output_dir), "*_summary.json"))):
    with open(path, encoding="utf-8") as f:
      summaries.append(json.load(f))
  if not summaries:
    return ""
  # train first, then validation, test, others.
  order = {"train": 0, "validation": 1, "test": 2}
  summaries.sort(key=lambda s: (order.get(s["split"], 3), s["split"]))
  base_dir = summaries[0]["base_dir"]
  tables = {s["split"]: s["table"] for s in summaries}
  examples = {s["split"]: s["examples"] for s in summaries}
  num_classes = max(s["num_classes"] for s in summaries)
  lines = [
    "config.dataset_name = 'dmvr'",
    f"config.dataset_configs.base_dir = {base_dir!r}",
    f"config.dataset_configs.tables = {tables!r}",
    f"config.dataset_configs.examples_per_subset = {examples!r}",
    f"config.dataset_configs.num_classes = {num_classes}",
  ]
  class_splits = next((s["class_splits"] for s in summaries if s.get("class_splits")), None)
  if class_splits:
    # One label per group (EPIC: a noun in [0, 300), a verb in [300, 397)), as scenic reads them.
    lines.append(f"config.dataset_configs.class_splits = {class_splits!r}")
  elif any(s.get("merged") for s in summaries):
    # --conflicts=merge wrote examples with several labels: the reader takes them multi-hot.
    lines.append("config.dataset_configs.multi_label = True")
  flags = ["--config.dataset_name=dmvr", f"--config.dataset_configs.base_dir={base_dir}"]
  flags += [f"--config.dataset_configs.tables.{k}={v}" for k, v in tables.items()]
  flags += [f"--config.dataset_configs.examples_per_subset.{k}={v}" for k, v in examples.items()]
  flags.append(f"--config.dataset_configs.num_classes={num_classes}")
  if not class_splits and any(s.get("merged") for s in summaries):
    flags.append("--config.dataset_configs.multi_label=True")
  return "\n".join(lines) + "\n\n# or as train.py / eval.py flags:\n" + " \\\n  ".join(flags)


# ---------------------------------------------------------------------------------------------
# The command.
# ---------------------------------------------------------------------------------------------


def describe_repeats(
  summary: dict[str, Any], duplicates: str, conflicts: str, *, folders: bool = False
) -> str:
  """'  repeated rows: ...' for the final lines, or '' when the input had none; `folders`: the
  conflicts are videos in several class folders."""
  parts = []
  if summary.get("duplicates"):
    done = "left out (bad)" if duplicates == "skip" else "written again"
    parts.append(f"{summary['duplicates']} duplicate row(s) {done} (--duplicates={duplicates})")
  if summary.get("conflicts"):
    done = {
      "skip": "left out (bad)",
      "merge": f"merged ({summary.get('merged', 0)} row(s) folded into multi-label examples)",
      "keep": "written once per label",
    }[conflicts]
    where = "in several class folders" if folders else "under conflicting labels"
    parts.append(f"{summary['conflicts']} video(s) {where} {done} (--conflicts={conflicts})")
  if not parts:
    return ""
  return ("  repeated videos: " if folders else "  repeated rows: ") + "; ".join(parts)


def load_source(
  source: str,
  input_path: str,
  video_dir: str,
  *,
  labels_json: str | None = None,
  epic_noun_classes: str | None = None,
  epic_verb_classes: str | None = None,
) -> sources.Source:
  """The items of `input_path` for a --source name."""
  if source == "kinetics":
    return sources.kinetics_source(input_path, video_dir)
  if source == "ssv2":
    return sources.ssv2_source(input_path, labels_json, video_dir)
  if source == "epic":
    return sources.epic_source(input_path, video_dir, epic_noun_classes, epic_verb_classes)
  if source == "csv":
    return sources.csv_source(input_path, video_dir)
  if source == "folders":
    raise ValueError("--source=folders writes two splits: see write_folders.")
  raise ValueError(f"--source={source!r}: expected one of {list(SOURCES)}.")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m vidtx.data.make_shards",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--source", required=True, choices=SOURCES, help="Annotation format.")
  parser.add_argument(
    "--input",
    required=True,
    help="The annotation file: Kinetics / Epic-Kitchens / generic CSV, or the SSv2 split JSON; "
    "folders: the root folder, ROOT/<class>/<video> or ROOT/{train,val}/<class>/<video>.",
  )
  parser.add_argument(
    "--video_dir",
    help="Where the videos are (searched recursively for kinetics and epic); not for folders.",
  )
  parser.add_argument("--output_dir", required=True, help="Where the shards go.")
  parser.add_argument("--labels_json", help="ssv2: something-something-v2-labels.json.")
  parser.add_argument(
    "--epic_noun_classes",
    help="epic: EPIC_100_noun_classes.csv (id,key,...) "
    "for the class names (default: the narrations' words).",
  )
  parser.add_argument("--epic_verb_classes", help="epic: EPIC_100_verb_classes.csv.")
  parser.add_argument(
    "--label_map",
    help="Class names, one per line (line i = class i); "
    "default: OUT/labels.txt if it exists, else built from the input.",
  )
  parser.add_argument("--split", help="Table name (default: from the input, e.g. train).")
  # None, not the default value, when not passed: for the user's own split passing it is an error.
  parser.add_argument(
    "--val_fraction",
    type=float,
    help="folders, ROOT/<class>/<video>: the share of each class's videos drawn for the "
    f"validation split (default {sources.DEFAULT_VAL_FRACTION}; 0: train only).",
  )
  parser.add_argument(
    "--seed",
    type=int,
    help="folders: the seed of the validation draw and of the training videos' order (default 0).",
  )
  parser.add_argument("--num_shards", type=int, default=16, help="Shards of the table.")
  parser.add_argument(
    "--fps", type=float, default=0.0, help="Frames per second to store (0: the native rate)."
  )
  parser.add_argument(
    "--short_side",
    type=int,
    default=0,
    help="Resize the shorter side to this many pixels (0: keep the size).",
  )
  parser.add_argument("--jpeg_quality", type=int, default=90, help="JPEG quality, 1-100.")
  # Half the CPUs: a worker's FFmpeg decoding runs on threads of its own.
  parser.add_argument(
    "--num_workers",
    type=int,
    default=max(1, (os.cpu_count() or 1) // 2),
    help="Processes; each writes whole shards (default: half the CPUs).",
  )
  parser.add_argument(
    "--max_frames", type=int, default=0, help="Keep at most this many frames per video (0: all)."
  )
  parser.add_argument(
    "--min_frames", type=int, default=1, help="Videos with fewer frames are left out as too short."
  )
  parser.add_argument(
    "--duplicates",
    choices=DUPLICATE_MODES,
    default="skip",
    help="Rows repeating an earlier row (same video, segment and labels): "
    "skip (default: left out and reported), keep, or error.",
  )
  parser.add_argument(
    "--conflicts",
    choices=sources.CONFLICT_MODES,
    default="error",
    help="Rows giving a video and segment other labels than an earlier row (folders: a video "
    "in several class folders, as a link or a copy with the same bytes): error (default), skip "
    "(leave them out, reported), merge (one multi-label example), or keep (one example per row "
    "or class folder).",
  )
  return parser.parse_args(argv)


def _check_source_flags(args: argparse.Namespace) -> None:
  """The flags that --source=folders takes and the others do not, and the reverse."""
  folders = args.source == "folders"
  for flag, given in (
    ("--video_dir", args.video_dir is not None and folders),
    ("--split", args.split is not None and folders),
    ("--val_fraction", args.val_fraction is not None and not folders),
    ("--seed", args.seed is not None and not folders),
  ):
    if given:
      raise ValueError(
        f"{flag} is not used by --source={args.source}"
        + (
          ": --input is the root folder, and one run writes train and validation."
          if folders
          else "; it only splits --source=folders."
        )
      )


def check_io_paths(args: argparse.Namespace) -> None:
  """OverlapError (one line) when --output_dir is, or holds, an input file or folder; for
  --source=folders also when it lies inside --input (it would be read as a class folder)."""
  inputs = {
    "--input": args.input,
    "--video_dir": args.video_dir,
    "--labels_json": args.labels_json,
    "--epic_noun_classes": args.epic_noun_classes,
    "--epic_verb_classes": args.epic_verb_classes,
  }
  # The labels.txt of the output folder is only read (never replaced once it exists).
  own_labels = os.path.join(args.output_dir, "labels.txt")
  if args.label_map and not (
    os.path.exists(own_labels)
    and os.path.exists(args.label_map)
    and os.path.samefile(args.label_map, own_labels)
  ):
    inputs["--label_map"] = args.label_map
  outputs.check_paths(inputs, {"--output_dir": args.output_dir})
  if args.source == "folders" and "://" not in args.output_dir:
    real_root, real_out = os.path.realpath(args.input), os.path.realpath(args.output_dir)
    if os.path.commonpath([real_root, real_out]) == real_root:
      raise outputs.OverlapError(
        f"--output_dir {args.output_dir} is inside --input {args.input}, where it would be "
        "read as a class folder; choose an output directory outside it."
      )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the command; returns the summary of the split written (write_split's), or for
  --source=folders the summary of each split by name."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  import tensorflow as tf

  from vidtx.data import class_labels, shard_writer

  options = shard_writer.Options(
    fps=args.fps,
    short_side=args.short_side,
    jpeg_quality=args.jpeg_quality,
    max_frames=args.max_frames or None,
    min_frames=args.min_frames,
  )
  common = dict(
    num_shards=args.num_shards,
    fps=args.fps,
    short_side=args.short_side,
    jpeg_quality=args.jpeg_quality,
    num_workers=args.num_workers,
    max_frames=args.max_frames,
    min_frames=args.min_frames,
    label_map=args.label_map,
  )
  try:
    _check_source_flags(args)
    # Before the annotations are read and the video folder is walked (minutes on a big one).
    _check_options(args.split or "train", args.num_shards, args.num_workers, options)
    check_io_paths(args)
    check_output_dir(args.output_dir)
    # An existing folder is locked before the inputs are read, so that a second conversion
    # refuses at once; a new one is locked where it is created (write_folders, write_split).
    early = "://" not in args.output_dir and os.path.isdir(args.output_dir)
    with locks.hold(args.output_dir, LOCK_HOLDER) if early else contextlib.nullcontext():
      if args.source == "folders":
        summaries = write_folders(
          args.input,
          args.output_dir,
          val_fraction=args.val_fraction,
          seed=args.seed or 0,
          conflicts=args.conflicts,
          lock=not early,
          **common,
        )
      else:
        source = load_source(
          args.source,
          args.input,
          args.video_dir,
          labels_json=args.labels_json,
          epic_noun_classes=args.epic_noun_classes,
          epic_verb_classes=args.epic_verb_classes,
        )
        split = args.split or source.split
        summaries = {
          split: write_split(
            source.items,
            args.output_dir,
            split,
            class_names=source.class_names,
            class_splits=source.class_splits,
            duplicates=args.duplicates,
            conflicts=args.conflicts,
            lock=not early,
            **common,
          )
        }
  except (ValueError, OSError, locks.LockedError) as e:
    # Bad inputs (and an output the system refuses) are the user's to fix: the message, not a
    # traceback.
    print(f"vidtx.data.make_shards: error: {e}", file=sys.stderr)
    sys.exit(1)
  except tf.errors.OpError as e:  # TensorFlow's file errors (a shard that cannot be written).
    print(f"vidtx.data.make_shards: error: {e.message}", file=sys.stderr)
    sys.exit(1)
  out = os.path.abspath(args.output_dir)
  for split, summary in summaries.items():
    print(
      f"{summary['table']}: {summary['examples']} examples of {summary['videos']} videos, "
      f"{summary['bad']} bad (listed in {os.path.join(out, split + '_report.txt')}), "
      f"{summary['num_classes']} classes, {summary['seconds']:.1f} s"
    )
    repeats = describe_repeats(
      summary, args.duplicates, args.conflicts, folders=args.source == "folders"
    )
    if repeats:
      print(repeats)
  print("\n" + config_snippet(args.output_dir))
  if args.source != "folders":
    return summary
  if "validation" not in summaries:
    # configs/finetune.py evaluates every epoch and keeps the best checkpoint: it needs one.
    if args.val_fraction == 0:
      print(
        "\nNo validation split (--val_fraction=0): configs/finetune.py needs one; run again "
        "into a new --output_dir with --val_fraction > 0 to fine-tune on these videos."
      )
    else:  # Every class kept its one readable video for training.
      print(
        "\nNo validation split: no class has 2 videos that can be read (a class keeps one for "
        "training), and configs/finetune.py needs one; add videos, then run again into a new "
        "--output_dir."
      )
    return summaries
  # Never a command that cannot work: configs/finetune.py needs a video in each split, 2 classes.
  problems = [
    f"the {split} split holds no video that could be converted "
    f"({os.path.join(out, split + '_report.txt')} says why)"
    for split in ("train", "validation")
    if summaries[split]["examples"] == 0
  ]
  if summaries["train"]["num_classes"] < 2:
    problems.append(f"{summaries['train']['num_classes']} class(es); a classifier needs 2")
  if problems:
    print(
      "\nNo fine-tune command: " + "; ".join(problems) + ". configs/finetune.py cannot train on "
      "these shards: fix or add videos, then run again into a new --output_dir."
    )
    return summaries
  command = finetune_command(args.output_dir)
  where = (
    ""
    if command.startswith("python train.py")
    else "; the path of the shards cannot go in --config (a comma, or spaces at its ends), so "
    "the command runs in their folder: give CHECKPOINT_DIR as an absolute path"
  )
  print(
    f"\nNext, fine-tune a pretrained model on them (model: timesformer, vivit_fe or xvit; "
    "CHECKPOINT_DIR: a checkpoint converted with python -m vidtx.convert, or a train.py run "
    f"directory; the model follows its size; see docs/checkpoints.md{where}):\n  {command}"
  )
  note = flip_note(class_labels.read_labels(os.path.join(args.output_dir, "labels.txt")))
  if note:
    print(note)
  return summaries


def flip_note(names: Sequence[str]) -> str:
  """The line under the fine-tune command when classes name a direction a horizontal flip
  swaps (class_labels.direction_classes): configs/finetune.py then trains without flips."""
  from vidtx.data import class_labels

  found = class_labels.direction_classes(names)
  if not found:
    return ""
  shown = ", ".join(repr(name) for name in found[:SHOWN_CLASSES])
  more = f" and {len(found) - SHOWN_CLASSES} more" if len(found) > SHOWN_CLASSES else ""
  return (
    f"  random flips will be off: classes {shown}{more} name a direction a mirror image swaps "
    "(flip=1 turns them on)"
  )


def run_cli() -> None:
  """The command line (vidtx-make-shards, python -m vidtx.data.make_shards)."""
  # Through the package module, so that spawned workers unpickle the same classes.
  from vidtx import cli
  from vidtx.data import make_shards

  cli.quiet_start_up()
  make_shards.main()


if __name__ == "__main__":
  run_cli()
