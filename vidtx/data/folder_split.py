"""--source=folders: class folders (ROOT/<class>/<video>, or the user's ROOT/{train,val}/<class>/)
written as a train and a validation table. The split is drawn once (sources.folders_source) from
the videos that can be read, recorded (FOLDERS_SPLIT_FILE, train.csv, validation.csv) before any
conversion, and a rerun into the same folder resumes only the same split. A warning names the
classes with too few validation videos and the --val_fraction that gives them enough.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from vidtx import locks, ownership
from vidtx.data import shard_tables, sources
from vidtx.errors import UserError
from vidtx.progress import Reporter

FOLDERS_SPLIT_FILE = "folders_split.json"
# The videos of each split a folders run drew (or found), written before the conversion.
SPLIT_FILES = {"train": "train.csv", "validation": "validation.csv"}
MIN_VAL_VIDEOS = 3  # Fewer per class: warned (1 video moves a class's accuracy by 100%).
SHOWN_CLASSES = 5
PROBE_METER = 256  # Named by a second conversion into the same folder.


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
  shard_tables.check_options("train", num_shards, num_workers, options)
  shard_tables.check_output_dir(output_dir)
  real_root, real_out = os.path.realpath(root), os.path.realpath(output_dir)
  if "://" not in output_dir and os.path.commonpath([real_root, real_out]) == real_root:
    raise UserError(
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
  _warn_skipped(dataset, root)
  record = _split_record(dataset, seed, conflicts)
  _check_folder_split(output_dir, record)
  split_files = {split: SPLIT_FILES[split] for split in dataset.splits}
  _check_split_files(output_dir, split_files.values())
  warning = small_validation_warning(dataset, root, output_dir)
  if warning:
    print(warning, file=sys.stderr)
  ownership.claim(
    output_dir, "shards", legacy=shard_tables.is_legacy_shards_dir, hint=shard_tables.OUTPUT_HINT
  )
  with locks.hold(output_dir, shard_tables.LOCK_HOLDER) if lock else contextlib.nullcontext():
    # Again under the lock: a run that ended meanwhile may have recorded another split.
    if not _check_folder_split(output_dir, record):
      shard_tables.record_written(output_dir, [FOLDERS_SPLIT_FILE])
      dmvr.write_text_atomically(
        os.path.join(output_dir, FOLDERS_SPLIT_FILE), json.dumps(record, indent=1) + "\n"
      )
    # The split as drawn, before any conversion: which videos validation holds is known now,
    # not after training. Recorded first: an interrupted write leaves only vidtx's files.
    _check_split_files(output_dir, split_files.values())
    shard_tables.record_written(output_dir, list(split_files.values()))
    for split, name in split_files.items():
      dmvr.write_text_atomically(os.path.join(output_dir, name), split_csv(dataset.splits[split]))
    return {
      split: shard_tables.write_split(
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


def _warn_skipped(dataset: sources.FolderDataset, root: str) -> None:
  """Warnings on stderr for the linked folders not followed and the videos that cannot be read
  (they go with train)."""
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


def _split_record(dataset: sources.FolderDataset, seed: int, conflicts: str) -> dict[str, Any]:
  """What decides the split, and the split itself (FOLDERS_SPLIT_FILE): a rerun must find the
  same one to resume."""
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
  return record


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
  raise UserError(
    f"{output_dir} holds shards of another split of the videos ({before}; this run: {now}), "
    f"recorded in {path}. Resuming would mix the two splits; pass the first run's options, or "
    "choose a new --output_dir."
  )


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
      raise UserError(
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
