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

Sources (--input is the annotation file):
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

Output in --output_dir: `{split}.tfrecord-0000i-of-0000N` (the table `{split}.tfrecord@N`), one
SequenceExample per video (video i in shard i % N); labels.txt (line i = class i: --label_map,
else an existing labels.txt, so later splits reuse the training split's map, else the dataset's
own list or the sorted class names of the input); `{split}_report.txt` (the videos left out and
why); `{split}_summary.json`; `{split}_shards/` (one JSON per shard: its counts and bad videos).

--output_dir must be new, empty, or a directory this tool wrote (its `.vidtx` marker, or from
before the marker a `{split}_summary.json` of this tool): anything else is refused before the
annotations are read, so a folder of other files is never written into (vidtx.ownership).

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

import argparse
import collections
import csv
import dataclasses
import glob
import itertools
import json
import multiprocessing
import os
import queue as queue_lib
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import av
import numpy as np
import tensorflow as tf
from av.video.reformatter import VideoReformatter

from vidtx import ownership
from vidtx.data import dmvr
from vidtx.progress import format_duration

SOURCES = ("kinetics", "ssv2", "epic", "csv")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
EPIC_NUM_NOUNS = 300
EPIC_NUM_VERBS = 97
DUPLICATE_MODES = ("skip", "keep", "error")
CONFLICT_MODES = ("error", "skip", "merge", "keep")
_OUTPUT_HINT = "Pass a new or empty --output_dir."


@dataclasses.dataclass(frozen=True)
class Item:
  """One video to convert.

  labels: class names (looked up in labels.txt) or class indices (used as they are); empty for
    an unlabelled video (stored as label -1).
  start / end: the segment of the file to keep, in seconds (None: from the first frame / to the
    last).
  clip_start / clip_end: where the clip sits in its source video, stored as
    clip/start/timestamp and clip/end/timestamp (None: start / end).
  path: "" when the source found no file for the video (reported as missing).
  """

  path: str
  labels: tuple[int | str, ...]
  video_id: str
  label_text: str | None = None
  start: float | None = None
  end: float | None = None
  clip_start: float | None = None
  clip_end: float | None = None


@dataclasses.dataclass
class Source:
  """The items of one annotation file and what the dataset says about its classes."""

  items: list[Item]
  split: str  # The default table name.
  class_names: list[str] | None = None  # The dataset's own label map (SSv2, EPIC), if it has one.
  class_splits: list[int] | None = None  # Label groups (EPIC: 300 nouns, 97 verbs).


class VideoError(ValueError):
  """Why one video cannot be converted; it is reported and the conversion goes on."""


# ---------------------------------------------------------------------------------------------
# Annotation files -> items.
# ---------------------------------------------------------------------------------------------


def _check_file(flag: str, path: str | None) -> str:
  if not path:
    raise ValueError(f"{flag} is required.")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{flag} {path}: no such file.")
  return path


def _check_dir(flag: str, path: str | None) -> str:
  if not path:
    raise ValueError(f"{flag} is required.")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{flag} {path}: no such directory.")
  return path


def split_from_name(path: str) -> str:
  """'EPIC_100_validation.csv' -> 'validation', 'kinetics_val.csv' -> 'validation', ... ; else
  the file's stem."""
  stem = os.path.splitext(os.path.basename(path))[0]
  tokens = re.split(r"[-_. ]+", stem.lower())
  for token, split in (
    ("train", "train"),
    ("validation", "validation"),
    ("val", "validation"),
    ("test", "test"),
  ):
    if token in tokens:
      return split
  return stem


def index_videos(video_dir: str) -> dict[str, str]:
  """Every video file under `video_dir` by its name without extension (extension matched in any
  case). One walk of the folder: a glob per video would list the folder once per video."""
  index = {}
  for root, dirs, files in os.walk(video_dir):
    dirs.sort()  # The first of two files with the same name wins, in a fixed order.
    for name in sorted(files):
      stem, extension = os.path.splitext(name)
      if extension.lower() in VIDEO_EXTENSIONS:
        index.setdefault(stem, os.path.join(root, name))
  return index


def _read_csv_rows(flag: str, path: str) -> list[dict[str, str]]:
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise ValueError(f"{flag} {path}: no rows.")
  return rows


def _require_columns(
  flag: str, path: str, rows: list[dict[str, str]], columns: Sequence[str]
) -> None:
  missing = [c for c in columns if c not in rows[0]]
  if missing:
    raise ValueError(f"{flag} {path}: no column(s) {missing}; found {list(rows[0])}.")


def kinetics_source(input_csv: str, video_dir: str) -> Source:
  """Items of a Kinetics annotation CSV (label, youtube_id, time_start, time_end, split)."""
  _check_file("--input", input_csv)
  _check_dir("--video_dir", video_dir)
  rows = _read_csv_rows("--input", input_csv)
  _require_columns("--input", input_csv, rows, ["youtube_id", "time_start", "time_end"])
  videos = index_videos(video_dir)
  items = []
  for row in rows:
    youtube_id = row["youtube_id"].strip()
    start, end = float(row["time_start"]), float(row["time_end"])
    label = (row.get("label") or "").strip()
    clip = f"{youtube_id}_{int(start):06d}_{int(end):06d}"
    common = dict(
      labels=(label,) if label else (),
      video_id=clip,
      label_text=label or None,
      clip_start=start,
      clip_end=end,
    )
    if clip in videos:  # Already cut to the segment: keep all of it.
      items.append(Item(path=videos[clip], **common))
    else:
      items.append(Item(path=videos.get(youtube_id, ""), start=start, end=end, **common))
  splits = {(row.get("split") or "").strip() for row in rows} - {""}
  split = splits.pop() if len(splits) == 1 else split_from_name(input_csv)
  return Source(items=items, split="validation" if split == "val" else split)


def ssv2_class_name(template: str) -> str:
  """'Holding [something] next to [something]' -> 'Holding something next to something', the
  key of something-something-v2-labels.json."""
  return template.replace("[", "").replace("]", "")


def ssv2_source(input_json: str, labels_json: str, video_dir: str) -> Source:
  """Items of a Something-Something v2 split JSON; classes from the labels JSON."""
  _check_file("--input", input_json)
  _check_file("--labels_json", labels_json)
  _check_dir("--video_dir", video_dir)
  with open(labels_json, encoding="utf-8") as f:
    index_of = {name: int(index) for name, index in json.load(f).items()}
  if sorted(index_of.values()) != list(range(len(index_of))):
    raise ValueError(f"--labels_json {labels_json}: the indices are not 0..{len(index_of) - 1}.")
  class_names = sorted(index_of, key=index_of.get)
  with open(input_json, encoding="utf-8") as f:
    entries = json.load(f)
  if not entries or "template" not in entries[0]:
    raise ValueError(
      f"--input {input_json}: the entries have no 'template' (found "
      f"{sorted(entries[0]) if entries else 'no entries'}); the SSv2 test split has "
      "no public labels, convert the train and validation JSONs."
    )
  items = []
  for entry in entries:
    name = ssv2_class_name(entry["template"])
    video_id = str(entry["id"])
    path = os.path.join(video_dir, f"{video_id}.webm")
    items.append(Item(path=path, labels=(name,), video_id=video_id, label_text=name))
  return Source(items=items, split=split_from_name(input_json), class_names=class_names)


def parse_timestamp(text: str) -> float:
  """'HH:MM:SS.ff' (Epic-Kitchens) -> seconds."""
  hours, minutes, seconds = text.strip().split(":")
  return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _class_csv(flag: str, path: str, count: int) -> dict[int, str]:
  rows = _read_csv_rows(flag, _check_file(flag, path))
  _require_columns(flag, path, rows, ["id", "key"])
  names = {int(row["id"]): row["key"].strip() for row in rows}
  if not all(0 <= i < count for i in names):
    raise ValueError(f"{flag} {path}: ids outside [0, {count}).")
  return names


def epic_source(
  input_csv: str, video_dir: str, noun_classes: str | None = None, verb_classes: str | None = None
) -> Source:
  """Items of an Epic-Kitchens-100 CSV: one per narration, labels [noun, 300 + verb]."""
  _check_file("--input", input_csv)
  _check_dir("--video_dir", video_dir)
  rows = _read_csv_rows("--input", input_csv)
  _require_columns(
    "--input",
    input_csv,
    rows,
    [
      "narration_id",
      "video_id",
      "start_timestamp",
      "stop_timestamp",
      "verb",
      "verb_class",
      "noun",
      "noun_class",
    ],
  )
  nouns = _class_csv("--epic_noun_classes", noun_classes, EPIC_NUM_NOUNS) if noun_classes else {}
  verbs = _class_csv("--epic_verb_classes", verb_classes, EPIC_NUM_VERBS) if verb_classes else {}
  # Without the class lists, a class is named by the word its first narration uses.
  for row in rows:
    nouns.setdefault(int(row["noun_class"]), row["noun"].strip())
    verbs.setdefault(int(row["verb_class"]), row["verb"].strip())
  videos = {stem.lower(): path for stem, path in index_videos(video_dir).items()}
  items = []
  for line, row in enumerate(rows, 2):
    noun, verb = int(row["noun_class"]), int(row["verb_class"])
    if not (0 <= noun < EPIC_NUM_NOUNS and 0 <= verb < EPIC_NUM_VERBS):
      raise ValueError(
        f"--input {input_csv} line {line}: noun_class={noun}, verb_class={verb}; "
        f"expected [0, {EPIC_NUM_NOUNS}) and [0, {EPIC_NUM_VERBS})."
      )
    start, end = parse_timestamp(row["start_timestamp"]), parse_timestamp(row["stop_timestamp"])
    items.append(
      Item(
        path=videos.get(row["video_id"].strip().lower(), ""),
        labels=(noun, EPIC_NUM_NOUNS + verb),
        video_id=row["narration_id"].strip(),
        label_text=f"{verbs[verb]} {nouns[noun]}",
        start=start,
        end=end,
      )
    )
  class_names = [nouns.get(i, f"noun_{i}") for i in range(EPIC_NUM_NOUNS)] + [
    verbs.get(i, f"verb_{i}") for i in range(EPIC_NUM_VERBS)
  ]
  return Source(
    items=items,
    split=split_from_name(input_csv),
    class_names=class_names,
    class_splits=[EPIC_NUM_NOUNS, EPIC_NUM_VERBS],
  )


_HEADER_NAMES = ("path", "video", "video_path", "file", "filename", "name")


def csv_source(input_csv: str, video_dir: str) -> Source:
  """Items of a generic CSV `path,label[,start,end]`; an integer label is a class index."""
  _check_file("--input", input_csv)
  _check_dir("--video_dir", video_dir)
  with open(input_csv, newline="", encoding="utf-8") as f:
    rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
  if rows and rows[0][0].strip().lower() in _HEADER_NAMES:
    rows = rows[1:]
  if not rows:
    raise ValueError(f"--input {input_csv}: no rows.")
  items = []
  for line, row in enumerate(rows, 1):
    cells = [cell.strip() for cell in row] + ["", ""]
    if not cells[0] or not cells[1]:
      raise ValueError(f"--input {input_csv} row {line}: {row}; expected path,label[,start,end].")
    label: int | str = int(cells[1]) if re.fullmatch(r"\d+", cells[1]) else cells[1]
    start = float(cells[2]) if cells[2] else None
    end = float(cells[3]) if cells[3] else None
    items.append(
      Item(
        path=os.path.join(video_dir, cells[0]),
        labels=(label,),
        video_id=cells[0],
        label_text=label if isinstance(label, str) else None,
        start=start,
        end=end,
      )
    )
  return Source(items=items, split=split_from_name(input_csv))


# ---------------------------------------------------------------------------------------------
# Decoding.
# ---------------------------------------------------------------------------------------------


def sample_frames(
  timed_frames: Iterable[tuple[float, Any]],
  *,
  start: float | None,
  end: float | None,
  fps: float,
  frame_duration: float,
  tolerance: float,
) -> Iterator[Any]:
  """The frames to keep, from (time in seconds, frame) pairs in presentation order.

  fps == 0: every frame with start <= time < end. fps > 0: for each output time
  t = start + k / fps < end (start: the first frame's time when None; end: the last frame's
  end when None), the last frame with time <= t, as FFmpeg's fps filter duplicates and drops
  frames (a t before the first frame takes the first frame). The same frame object may come
  several times. Times within `tolerance` count as equal (containers round timestamps, e.g.
  WebM to milliseconds).
  """
  if not fps:
    for frame_time, frame in timed_frames:
      if end is not None and frame_time >= end - tolerance:
        return
      if start is None or frame_time >= start - tolerance:
        yield frame
    return
  step = 1.0 / fps
  k = 0
  first = start
  previous = None  # (time, frame) of the newest frame shown so far.
  reached_end = False
  for frame_time, frame in timed_frames:
    if first is None:
      first = frame_time
    if end is not None and frame_time >= end - tolerance:
      reached_end = True
      break
    # Every output time before this frame shows the frame before it.
    while first + k * step < frame_time - tolerance:
      yield previous[1] if previous else frame
      k += 1
    previous = (frame_time, frame)
  if previous is None:
    return
  stop = previous[0] + frame_duration
  if end is not None:
    stop = end if reached_end else min(stop, end)
  while first + k * step < stop - tolerance:
    yield previous[1]
    k += 1


def _output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
  if not short_side:
    return width, height
  scale = short_side / min(width, height)
  return max(1, round(width * scale)), max(1, round(height * scale))


def frame_to_rgb(
  frame: av.VideoFrame, width: int, height: int, reformatter: VideoReformatter | None = None
) -> np.ndarray:
  """uint8 (height, width, 3) RGB of a decoded frame of any pixel format and size.

  Pass one `reformatter` for all the frames of a video: it keeps its scaler, which
  frame.to_ndarray(width=..., height=...) sets up anew for every frame (3 to 4 times slower).
  """
  # Area averaging when shrinking keeps thin detail from aliasing; bilinear when enlarging.
  shrink = width * height < frame.width * frame.height
  return (
    (reformatter or VideoReformatter())
    .reformat(
      frame,
      width=width,
      height=height,
      format="rgb24",
      interpolation="AREA" if shrink else "BILINEAR",
    )
    .to_ndarray()
  )


def _timed(
  container: av.container.InputContainer,
  stream: av.video.stream.VideoStream,
  offset: float,
  frame_duration: float,
  seen: dict[str, float],
) -> Iterator[tuple[float, av.VideoFrame]]:
  """(time from the start of the file, frame) of every decoded frame; seen['last'] is the
  newest time."""
  for frame in container.decode(stream):
    if frame.time is not None:
      frame_time = frame.time - offset
    else:  # No timestamp: one frame after the previous one.
      frame_time = seen["last"] + frame_duration if "last" in seen else 0.0
    seen["last"] = frame_time
    yield frame_time, frame


def read_frames(
  path: str,
  *,
  start: float | None = None,
  end: float | None = None,
  fps: float = 0,
  short_side: int = 0,
  max_frames: int | None = None,
) -> tuple[np.ndarray, float]:
  """The frames of `path` in [start, end) seconds, resampled to `fps` (0: native) with the
  shorter side resized to `short_side` (0: kept): (uint8 (N, H, W, 3) RGB, frame rate).

  Every frame is resized to the first frame's output size (streams may change resolution).
  Times are relative to the start of the file. Raises VideoError saying why the video cannot
  be read.
  """
  if not path or not os.path.isfile(path):
    raise VideoError(
      "missing: no such file" if path else "missing: no video file for it under --video_dir"
    )
  if os.path.getsize(path) == 0:
    raise VideoError("empty file")
  if start is not None and end is not None and end <= start:
    raise VideoError(f"empty segment [{start}, {end}) s")
  try:
    # A segment far into a long video (Epic-Kitchens) starts with a seek to the keyframe before
    # it; if the demuxer lands after the segment start, decode from the beginning instead.
    if start is not None and start >= 1.0:
      result = _read_frames(path, start, end, fps, short_side, max_frames, seek=True)
      if result is not None:
        return result
    return _read_frames(path, start, end, fps, short_side, max_frames, seek=False)
  except av.error.FFmpegError as e:
    raise VideoError(f"cannot decode: {e}") from e


def _read_frames(
  path: str,
  start: float | None,
  end: float | None,
  fps: float,
  short_side: int,
  max_frames: int | None,
  seek: bool,
) -> tuple[np.ndarray, float] | None:
  with av.open(path) as container:
    if not container.streams.video:
      raise VideoError("no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate
    native_fps = float(rate) if rate else 0.0
    frame_duration = 1.0 / native_fps if native_fps else 1.0 / 25  # FFmpeg's default rate.
    tolerance = 0.1 * frame_duration
    offset = container.start_time / 1e6 if container.start_time is not None else 0.0
    seen = {}
    if seek:
      container.seek(int((start + offset) / stream.time_base), stream=stream)
    timed = _timed(container, stream, offset, frame_duration, seen)
    if seek:
      first = next(timed, None)
      if first is None or first[0] > start + tolerance:
        return None
      timed = itertools.chain([first], timed)
    frames = []
    size = None
    reformatter = VideoReformatter()
    previous_frame, previous_rgb = None, None
    for frame in sample_frames(
      timed, start=start, end=end, fps=fps, frame_duration=frame_duration, tolerance=tolerance
    ):
      if max_frames and len(frames) >= max_frames:
        break
      if frame is not previous_frame:  # A duplicated frame is converted once.
        size = size or _output_size(frame.width, frame.height, short_side)
        previous_frame, previous_rgb = frame, frame_to_rgb(frame, *size, reformatter)
      frames.append(previous_rgb)
  if not frames:
    if "last" not in seen:
      raise VideoError("no frames")
    if start is not None and seen["last"] < start:
      raise VideoError(
        f"segment [{start}, {end}) s is outside the video (its last frame is at "
        f"{seen['last']:.3f} s)"
      )
    raise VideoError(f"no frames in the segment [{start}, {end}) s")
  return np.stack(frames), float(fps) if fps else (native_fps or 25.0)


# ---------------------------------------------------------------------------------------------
# Shards.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
  """How every video is converted."""

  fps: float = 0
  short_side: int = 0
  jpeg_quality: int = 90
  max_frames: int | None = None
  min_frames: int = 1


def convert_video(item: Item, labels: Sequence[int], options: Options) -> bytes:
  """One video as a serialised DMVR SequenceExample; raises VideoError when it cannot be."""
  frames, frame_rate = read_frames(
    item.path,
    start=item.start,
    end=item.end,
    fps=options.fps,
    short_side=options.short_side,
    max_frames=options.max_frames,
  )
  if len(frames) < options.min_frames:
    raise VideoError(
      f"too short: {len(frames)} frame(s), fewer than min_frames={options.min_frames}"
    )
  clip_start = item.clip_start if item.clip_start is not None else item.start
  clip_end = item.clip_end if item.clip_end is not None else item.end
  return dmvr.sequence_example_from_jpegs(
    dmvr.encode_jpegs(frames, options.jpeg_quality),
    labels,
    label_text=item.label_text,
    video_id=item.video_id,
    start_us=None if clip_start is None else round(clip_start * 1e6),
    end_us=None if clip_end is None else round(clip_end * 1e6),
    frame_rate=frame_rate,
  )


def _stats_path(shard: str) -> str:
  """OUT/train_shards/train.tfrecord-00003-of-00016.json for OUT/train.tfrecord-00003-of-00016."""
  directory, name = os.path.split(shard)
  return os.path.join(directory, name.split(".tfrecord-")[0] + "_shards", name + ".json")


def _temporary_name(path: str) -> str:
  # Hidden and suffixed: never matched by the table `split.tfrecord@N` nor a glob `split.*`.
  directory, name = os.path.split(path)
  return os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:12]}")


def write_shard(
  shard: str,
  entries: Sequence[tuple[int, Item, list[int] | None, str | None]],
  options: Options,
  on_video: Callable[[bool], None] = lambda bad: None,
) -> dict[str, Any]:
  """Writes one shard from (global index, item, label indices, label error) entries, then its
  stats JSON, then renames the shard to its final name. Returns the stats."""
  started = time.time()
  temporary = _temporary_name(shard)
  examples, bad = 0, []
  writer = tf.io.TFRecordWriter(temporary)
  try:
    for index, item, labels, error in entries:
      try:
        if error:
          raise VideoError(error)
        example = convert_video(item, labels, options)
      except Exception as e:  # One bad file must not end the conversion of thousands.
        reason = str(e) if isinstance(e, VideoError) else f"{type(e).__name__}: {e}"
        bad.append([index, item.video_id, item.path, reason])
        on_video(True)
        continue
      writer.write(example)  # Outside the try: a full disk stops the conversion.
      examples += 1
      on_video(False)
    writer.close()
    stats = {
      "shard": os.path.basename(shard),
      "videos": len(entries),
      "examples": examples,
      "bad": bad,
      "seconds": round(time.time() - started, 3),
      "options": dataclasses.asdict(options),
    }
    stats_path = _stats_path(shard)
    os.makedirs(os.path.dirname(stats_path), exist_ok=True)
    dmvr.write_text_atomically(stats_path, json.dumps(stats, indent=1) + "\n")
    os.replace(temporary, shard)
  except BaseException:
    writer.close()
    if os.path.exists(temporary):
      os.remove(temporary)
    raise
  return stats


_progress_queue = None


def _init_worker(progress_queue: Any) -> None:
  global _progress_queue
  _progress_queue = progress_queue
  # The processes already share the cores: more TensorFlow threads per process only contend.
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)


def _write_shard_in_worker(task: tuple) -> dict[str, Any]:
  return write_shard(*task, on_video=_progress_queue.put)


def _read_stats(shard: str, num_videos: int, options: Options) -> dict[str, Any]:
  path = _stats_path(shard)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      stats = json.load(f)
    # A skipped shard is kept as it is: say so when it no longer matches the request.
    if stats["videos"] != num_videos:
      print(
        f"warning: {shard} was written from {stats['videos']} videos, the input now puts "
        f"{num_videos} in it; delete it to convert it again.",
        file=sys.stderr,
      )
    if stats.get("options", dataclasses.asdict(options)) != dataclasses.asdict(options):
      print(
        f"warning: {shard} was written with {stats['options']}, not "
        f"{dataclasses.asdict(options)}; delete it to convert it again.",
        file=sys.stderr,
      )
    return stats
  # A shard written by another tool: count its examples; its bad videos are unknown.
  examples = sum(1 for _ in tf.data.TFRecordDataset(shard))
  return {
    "shard": os.path.basename(shard),
    "videos": num_videos,
    "examples": examples,
    "bad": [],
    "seconds": 0.0,
    "no_stats": True,
  }


class _Progress:
  """`split: done/total videos | videos/s | ETA | bad` on stderr, a few times a second at
  most (every 10 s when stderr is not a terminal, e.g. a log file)."""

  def __init__(self, split: str, total: int, done: int, bad: int, enabled: bool = True):
    self.split, self.total, self.done, self.bad = split, total, done, bad
    self.enabled = enabled
    self._tty = sys.stderr.isatty()
    self._interval = 0.25 if self._tty else 10.0
    self._start_done = done
    self._start = self._shown = time.time()

  def add(self, bad: bool) -> None:
    self.done += 1
    self.bad += int(bad)
    if time.time() - self._shown >= self._interval:
      self._show()

  def _show(self, final: bool = False) -> None:
    if not self.enabled:
      return
    self._shown = time.time()
    rate = (self.done - self._start_done) / max(self._shown - self._start, 1e-9)
    eta = format_duration((self.total - self.done) / rate) if rate > 0 else "?"
    line = (
      f"{self.split}: {self.done}/{self.total} videos | {rate:.1f} videos/s | ETA {eta} | "
      f"{self.bad} bad"
    )
    end = "\n" if final or not self._tty else ""
    print(("\r" if self._tty else "") + line, end=end, file=sys.stderr, flush=True)

  def finish(self, done: int, bad: int) -> None:
    self.done, self.bad = done, bad
    self._show(final=True)


# ---------------------------------------------------------------------------------------------
# Labels.
# ---------------------------------------------------------------------------------------------


def read_labels(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f.read().splitlines() if line.strip()]


def resolve_label_map(
  items: Sequence[Item],
  output_dir: str,
  label_map: str | None = None,
  class_names: Sequence[str] | None = None,
  *,
  write: bool = True,
) -> list[str]:
  """The class names, line i = class i, and OUT/labels.txt written when it is new (and `write`).

  --label_map, else an existing OUT/labels.txt (the training split's, for later splits), else
  the dataset's own `class_names`, else the sorted class names of `items` (`class_<i>` names
  when the items give indices only).
  """
  path = os.path.join(output_dir, "labels.txt")
  existing = read_labels(path) if os.path.exists(path) else None
  if label_map:
    names = read_labels(_check_file("--label_map", label_map))
    if existing is not None and existing != names:
      raise ValueError(
        f"--label_map {label_map} differs from {path}, which shards in "
        f"{output_dir} were written with; remove one of them."
      )
  elif existing is not None:
    return existing
  elif class_names is not None:
    names = list(class_names)
  else:
    labels = {label for item in items for label in item.labels}
    names_given = sorted(label for label in labels if isinstance(label, str))
    indices = [label for label in labels if not isinstance(label, str)]
    if names_given and indices:
      raise ValueError(
        "The labels mix class names and class indices; pass --label_map with "
        "one class name per line (line i = class i)."
      )
    names = names_given or [f"class_{i}" for i in range(max(indices, default=-1) + 1)]
  if names and existing is None and write:
    dmvr.write_text_atomically(path, "".join(f"{name}\n" for name in names))
  return names


def _label_indices(
  item: Item, index_of: dict[str, int | None], num_classes: int
) -> tuple[list[int] | None, str | None]:
  if not item.labels:
    return [-1], None  # Unlabelled (a test split): readers that check labels reject it.
  indices = []
  for label in item.labels:
    if isinstance(label, str):
      if label not in index_of:
        return None, f"unknown label {label!r} (not in labels.txt)"
      if index_of[label] is None:
        return None, f"label {label!r} names several classes in labels.txt"
      indices.append(index_of[label])
    elif not 0 <= label < num_classes:
      return None, f"label index {label} outside [0, {num_classes}) of labels.txt"
    else:
      indices.append(int(label))
  return indices, None


@dataclasses.dataclass
class Repeats:
  """Rows for the same video and segment (input row = index + 1).

  duplicates: row index -> the earlier row whose video, segment and labels it repeats.
  conflicts: one list per video and segment that comes with different labels: every row of it,
    in input order (duplicates included).
  """

  duplicates: dict[int, int]
  conflicts: list[list[int]]


def find_repeats(items: Sequence[Item], labels: Sequence[Sequence[int] | None]) -> Repeats:
  """The repeated rows of `items` with their label indices (None: a label error, not checked)."""
  first_of: dict[tuple, dict[tuple[int, ...], int]] = {}
  rows: dict[tuple, list[int]] = {}
  duplicates = {}
  for index, (item, indices) in enumerate(zip(items, labels, strict=True)):
    if indices is None:
      continue  # Reported as a bad label already.
    key = (item.video_id, item.path, item.start, item.end)
    seen = first_of.setdefault(key, {})
    rows.setdefault(key, []).append(index)
    if tuple(indices) in seen:
      duplicates[index] = seen[tuple(indices)]
    else:
      seen[tuple(indices)] = index
  conflicts = [rows[key] for key, seen in first_of.items() if len(seen) > 1]
  return Repeats(duplicates=duplicates, conflicts=conflicts)


def _label_names(indices: Sequence[int], names: Sequence[str]) -> str:
  return repr("+".join(names[i] if 0 <= i < len(names) else "unlabelled" for i in indices))


def _conflict_text(
  rows: list[int],
  items: Sequence[Item],
  labels: Sequence[Sequence[int] | None],
  names: Sequence[str],
) -> str:
  shown, seen = [], set()
  for row in rows:
    if tuple(labels[row]) not in seen:
      seen.add(tuple(labels[row]))
      shown.append(f"{_label_names(labels[row], names)} (row {row + 1})")
  item = items[rows[0]]
  segment = (
    ""
    if item.start is None and item.end is None
    else f" [{item.start if item.start is not None else ''}, "
    f"{item.end if item.end is not None else ''}) s"
  )
  return f"{item.video_id!r}{segment} as " + " and ".join(shown)


def apply_repeats(
  items: Sequence[Item],
  labels: list[list[int] | None],
  errors: list[str | None],
  names: Sequence[str],
  duplicates: str = "skip",
  conflicts: str = "error",
) -> tuple[set[int], dict[str, int]]:
  """Applies --duplicates and --conflicts: sets `errors` of the rows left out and `labels` of
  merged rows in place. Returns the rows folded into another row's example (merge) and the
  counts for the summary. Raises ValueError, naming the first repeats, for 'error'."""
  if duplicates not in DUPLICATE_MODES:
    raise ValueError(f"--duplicates={duplicates!r}: expected one of {list(DUPLICATE_MODES)}.")
  if conflicts not in CONFLICT_MODES:
    raise ValueError(f"--conflicts={conflicts!r}: expected one of {list(CONFLICT_MODES)}.")
  repeats = find_repeats(items, labels)
  if repeats.duplicates and duplicates == "error":
    shown = "; ".join(
      f"row {row + 1} repeats row {first + 1} ({items[row].video_id!r})"
      for row, first in list(repeats.duplicates.items())[:3]
    )
    raise ValueError(
      f"{len(repeats.duplicates)} input row(s) repeat an earlier row (the same "
      f"video, segment and labels): {shown}; pass --duplicates=skip to leave the "
      "repeats out or --duplicates=keep to write them again."
    )
  if repeats.conflicts and conflicts == "error":
    shown = "; ".join(_conflict_text(rows, items, labels, names) for rows in repeats.conflicts[:3])
    raise ValueError(
      f"{len(repeats.conflicts)} video(s) are listed under different labels for the same "
      f"segment: {shown}{'; ...' if len(repeats.conflicts) > 3 else ''}. Fix the input, or "
      "pass --conflicts=skip to leave them out, --conflicts=merge for one multi-label example "
      "per video, or --conflicts=keep for one example per row."
    )
  if duplicates == "skip":
    for row, first in repeats.duplicates.items():
      errors[row] = (
        f"duplicate of input row {first + 1} (the same video, segment and labels; "
        "--duplicates=keep writes it again)"
      )
  merged = set()
  for rows in repeats.conflicts:
    if conflicts == "skip":
      text = _conflict_text(rows, items, labels, names)
      for row in rows:
        errors[row] = f"conflicting labels: {text} (--conflicts=skip)"
    elif conflicts == "merge":
      kept = [row for row in rows if errors[row] is None]
      union = list(dict.fromkeys(i for row in kept for i in labels[row]))
      labels[kept[0]] = union
      merged.update(kept[1:])
  counts = {"duplicates": len(repeats.duplicates), "conflicts": len(repeats.conflicts)}
  if merged:
    counts["merged"] = len(merged)
  return merged, counts


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


def check_output_dir(output_dir: str) -> None:
  """Raises ownership.NotOwnedError unless the shards may go into `output_dir`; writes nothing."""
  ownership.check_claimable(output_dir, "shards", legacy=is_legacy_shards_dir, hint=_OUTPUT_HINT)


# ---------------------------------------------------------------------------------------------
# The conversion.
# ---------------------------------------------------------------------------------------------


def _check_options(split: str, num_shards: int, num_workers: int, options: Options) -> None:
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


def convert(
  items: Sequence[Item],
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
  progress: bool = True,
) -> dict[str, Any]:
  """Writes `items` as the table `{split}.tfrecord@{num_shards}` in `output_dir`; see the
  module doc. Shards that exist are kept (resume). Returns the summary also written to
  `{split}_summary.json` (plus 'bad_videos': [index, video_id, path, reason] rows).

  Raises ownership.NotOwnedError when `output_dir` is not this tool's (new, empty or marked),
  and ValueError for repeated rows that `duplicates` / `conflicts` say stop; both before
  anything is written.
  """
  options = Options(
    fps=fps,
    short_side=short_side,
    jpeg_quality=jpeg_quality,
    max_frames=max_frames or None,
    min_frames=min_frames,
  )
  _check_options(split, num_shards, num_workers, options)
  started = time.time()
  check_output_dir(output_dir)
  names = resolve_label_map(items, output_dir, label_map, class_names, write=False)
  # A name may come twice (Epic-Kitchens has a noun and a verb 'filter'): as a label it is
  # ambiguous (None), as an index it is fine.
  counts = collections.Counter(names)
  index_of = {name: i if counts[name] == 1 else None for i, name in enumerate(names)}
  resolved = [_label_indices(item, index_of, len(names)) for item in items]
  labels = [indices for indices, _ in resolved]
  errors = [error for _, error in resolved]
  merged, repeat_counts = apply_repeats(items, labels, errors, names, duplicates, conflicts)

  ownership.claim(output_dir, "shards", legacy=is_legacy_shards_dir, hint=_OUTPUT_HINT)
  for stale in glob.glob(
    os.path.join(glob.escape(output_dir), f".{glob.escape(split)}.tfrecord-*.tmp-*")
  ):
    os.remove(stale)  # Left by an interrupted run: shards are only ever renamed when complete.
  labels_path = os.path.join(output_dir, "labels.txt")
  if names and not os.path.exists(labels_path):
    dmvr.write_text_atomically(labels_path, "".join(f"{name}\n" for name in names))
  shards = dmvr.shard_names(os.path.join(output_dir, f"{split}.tfrecord"), num_shards)
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
      done_stats.append(_read_stats(shard, len(shard_entries), options))
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
  meter = _Progress(
    split,
    len(items) - len(merged),
    sum(s["videos"] for s in done_stats),
    sum(len(s["bad"]) for s in done_stats),
    enabled=progress,
  )
  new_stats = _run_tasks(tasks, min(num_workers, len(tasks)), meter.add)
  stats = done_stats + new_stats
  bad_videos = sorted(row for s in stats for row in s["bad"])
  examples = sum(s["examples"] for s in stats)
  meter.finish(len(items) - len(merged), len(bad_videos))

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


def _run_tasks(
  tasks: list[tuple], num_workers: int, on_video: Callable[[bool], None]
) -> list[dict[str, Any]]:
  if num_workers <= 1:
    return [write_shard(*task, on_video=on_video) for task in tasks]
  # spawn, not fork: the parent has TensorFlow loaded, whose threads do not survive a fork.
  context = multiprocessing.get_context("spawn")
  progress_queue = context.Queue()
  # The workers start with the parent's environment: quiet their TensorFlow start-up logs.
  log_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
  os.environ["TF_CPP_MIN_LOG_LEVEL"] = log_level or "2"
  try:
    pool = context.Pool(num_workers, initializer=_init_worker, initargs=(progress_queue,))
  finally:
    if log_level is None:
      del os.environ["TF_CPP_MIN_LOG_LEVEL"]
  with pool:
    pending = pool.map_async(_write_shard_in_worker, tasks, chunksize=1)
    while not pending.ready():
      try:
        on_video(progress_queue.get(timeout=0.2))
      except queue_lib.Empty:
        pass
    return pending.get()


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


def describe_repeats(summary: dict[str, Any], duplicates: str, conflicts: str) -> str:
  """'  repeated rows: ...' for the final lines, or '' when the input had none."""
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
    parts.append(
      f"{summary['conflicts']} video(s) under conflicting labels {done} (--conflicts={conflicts})"
    )
  return "  repeated rows: " + "; ".join(parts) if parts else ""


def load_source(
  source: str,
  input_path: str,
  video_dir: str,
  *,
  labels_json: str | None = None,
  epic_noun_classes: str | None = None,
  epic_verb_classes: str | None = None,
) -> Source:
  """The items of `input_path` for a --source name."""
  if source == "kinetics":
    return kinetics_source(input_path, video_dir)
  if source == "ssv2":
    return ssv2_source(input_path, labels_json, video_dir)
  if source == "epic":
    return epic_source(input_path, video_dir, epic_noun_classes, epic_verb_classes)
  if source == "csv":
    return csv_source(input_path, video_dir)
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
    help="The annotation file: Kinetics / Epic-Kitchens / generic CSV, or the SSv2 split JSON.",
  )
  parser.add_argument(
    "--video_dir",
    required=True,
    help="Where the videos are (searched recursively for kinetics and epic).",
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
    choices=CONFLICT_MODES,
    default="error",
    help="Rows giving a video and segment other labels than an earlier row: "
    "error (default), skip (leave them out, reported), merge (one multi-label "
    "example), or keep (one example per row).",
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  options = Options(
    fps=args.fps,
    short_side=args.short_side,
    jpeg_quality=args.jpeg_quality,
    max_frames=args.max_frames or None,
    min_frames=args.min_frames,
  )
  try:
    # Before the annotations are read and the video folder is walked (minutes on a big one).
    _check_options(args.split or "train", args.num_shards, args.num_workers, options)
    check_output_dir(args.output_dir)
    source = load_source(
      args.source,
      args.input,
      args.video_dir,
      labels_json=args.labels_json,
      epic_noun_classes=args.epic_noun_classes,
      epic_verb_classes=args.epic_verb_classes,
    )
    split = args.split or source.split
    summary = convert(
      source.items,
      args.output_dir,
      split,
      num_shards=args.num_shards,
      fps=args.fps,
      short_side=args.short_side,
      jpeg_quality=args.jpeg_quality,
      num_workers=args.num_workers,
      max_frames=args.max_frames,
      min_frames=args.min_frames,
      label_map=args.label_map,
      class_names=source.class_names,
      class_splits=source.class_splits,
      duplicates=args.duplicates,
      conflicts=args.conflicts,
    )
  except (ValueError, OSError) as e:
    # Bad inputs (and an output the system refuses) are the user's to fix: the message, not a
    # traceback.
    print(f"vidtx.data.make_shards: error: {e}", file=sys.stderr)
    sys.exit(1)
  except tf.errors.OpError as e:  # TensorFlow's file errors (a shard that cannot be written).
    print(f"vidtx.data.make_shards: error: {e.message}", file=sys.stderr)
    sys.exit(1)
  out = os.path.abspath(args.output_dir)
  print(
    f"{summary['table']}: {summary['examples']} examples of {summary['videos']} videos, "
    f"{summary['bad']} bad (listed in {os.path.join(out, split + '_report.txt')}), "
    f"{summary['num_classes']} classes, {summary['seconds']:.1f} s"
  )
  repeats = describe_repeats(summary, args.duplicates, args.conflicts)
  if repeats:
    print(repeats)
  print("\n" + config_snippet(args.output_dir))
  return summary


def run_cli() -> None:
  """The command line (vidtx-make-shards, python -m vidtx.data.make_shards)."""
  # Through the package module, so that spawned workers unpickle the same classes.
  from vidtx.data import make_shards

  make_shards.main()


if __name__ == "__main__":
  run_cli()
