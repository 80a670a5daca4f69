"""Writing DMVR shards: one video as a SequenceExample, one shard under a temporary name with its
stats JSON, and the spawned worker processes that write several shards at once."""

import dataclasses
import json
import multiprocessing
import os
import queue as queue_lib
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from vidtx.data import dmvr, frame_table, sources, video_decode


@dataclasses.dataclass(frozen=True)
class Options:
  """How every video is converted."""

  fps: float = 0
  short_side: int = 0
  jpeg_quality: int = 90
  max_frames: int | None = None
  min_frames: int = 1


def convert_video(item: sources.Item, labels: Sequence[int], options: Options) -> bytes:
  """One video as a serialised DMVR SequenceExample; raises VideoError when it cannot be."""
  frames, frame_rate = video_decode.read_frames(
    item.path,
    start=item.start,
    end=item.end,
    fps=options.fps,
    short_side=options.short_side,
    max_frames=options.max_frames,
  )
  if len(frames) < options.min_frames:
    raise video_decode.VideoError(
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
  entries: Sequence[tuple[int, sources.Item, list[int] | None, str | None]],
  options: Options,
  on_video: Callable[[bool], None] = lambda bad: None,
) -> dict[str, Any]:
  """Writes one shard from (global index, item, label indices, label error) entries, then its
  stats JSON, its record index and frame table (vidtx.data.frame_table), then renames the shard
  to its final name. Returns the stats."""
  started = time.time()
  temporary = _temporary_name(shard)
  examples, bad = 0, []
  data_sizes = []  # Each record's data bytes: the index's offsets follow from them.
  scans = []  # Each record's layout: its frame table rows.
  writer = tf.io.TFRecordWriter(temporary)
  try:
    for index, item, labels, error in entries:
      try:
        if error:
          raise video_decode.VideoError(error)
        example = convert_video(item, labels, options)
      except Exception as e:  # One bad file must not end the conversion of thousands.
        reason = str(e) if isinstance(e, video_decode.VideoError) else f"{type(e).__name__}: {e}"
        bad.append([index, item.video_id, item.path, reason])
        on_video(True)
        continue
      writer.write(example)  # Outside the try: a full disk stops the conversion.
      data_sizes.append(len(example))
      scans.append(frame_table.scan_record(example))
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
    # The rename keeps the size and mtime that the index's sidecar records.
    frame_table.write_new_shard_tables(shard, data_sizes, scans, os.stat(temporary))
    os.replace(temporary, shard)
  except BaseException:
    writer.close()
    if os.path.exists(temporary):
      os.remove(temporary)
    raise
  return stats


# The spawned workers' side: at module level, where a worker finds them by name.
_progress_queue = None


def _init_worker(progress_queue: Any) -> None:
  global _progress_queue
  _progress_queue = progress_queue
  # The processes already share the cores: more TensorFlow threads per process only contend.
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)


def _write_shard_in_worker(task: tuple) -> dict[str, Any]:
  return write_shard(*task, on_video=_progress_queue.put)


def write_shards(
  tasks: list[tuple], num_workers: int, on_video: Callable[[bool], None]
) -> list[dict[str, Any]]:
  """The stats of every (shard, entries, options) task, written by `num_workers` spawned
  processes (in this one when 1); `on_video(bad)` is called after every video."""
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


def read_stats(shard: str, num_videos: int, options: Options) -> dict[str, Any]:
  """The stats of a shard that exists (a rerun keeps it), with a warning when they no longer
  match the request."""
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
