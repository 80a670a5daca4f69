"""Bounded-memory video decoding for vidtx.predict: only the frames the evaluation sampling needs.

The frame count and rate come from the container (PyAV); when the container does not report the
count, a first streaming pass counts the frames (nothing kept). The clip indices are the reader's
(vidtx.data.sampling.eval_clip_indices_for), so a video gives the same clips as decoding every
frame would. A single streaming pass then keeps only the needed frames, at their decoded size
(the reader's resize and crops run on them afterwards, unchanged), and drops each as soon as no
open clip needs it: memory grows with the number of sampled frames, never with the video length.
A single video whose sampled frames are far apart (SEEK_GAP_S) is read by seeking to them, when
the container has timestamps and a constant frame rate (the header's frame count is trusted
then). Otherwise, when the decoded count differs from the container's, the clips are planned
again with the true count and a second pass fetches them.

Windows of a long video (--window) are cut on the frames' presentation timestamps
(vidtx.inference.timeline): the timestamps come from the container's packets (no decoding), and
the streaming pass checks each decoded frame against them; where the decoder's frames differ
(dropped or extra frames), the decoded timestamps plan the windows not yet returned and a second
pass fetches them.

Inputs: a file, a folder (recursive, video extensions), a glob, or a list file (`list_videos`).
"""

import csv
import dataclasses
import glob
import os
import stat
from collections.abc import Iterator, Sequence

import av
import numpy as np
import tensorflow as tf

from vidtx.data import sampling
from vidtx.data.reader_config import DatasetConfig
from vidtx.errors import UserError
from vidtx.inference import timeline

VIDEO_EXTENSIONS = frozenset(
  "mp4 avi mkv webm mov m4v mpg mpeg flv wmv 3gp ogv".split()
)  # Compared lower-case.


@dataclasses.dataclass(frozen=True)
class StreamInfo:
  """What the container says of its first video stream; `frames` None when it does not say."""

  frames: int | None
  rate: float
  width: int
  height: int


@dataclasses.dataclass(frozen=True)
class Clips:
  """The sampled frames of a video, or of one window of it.

  `clips` uint8 (C, num_frames, H, W, 3); `start`, `end` the frames [start, end) it covers
  (presentation order); `length` the video's frame count; `rate` frames per second (0 when
  unknown). A window (vidtx.inference.timeline) also has its number `window` and its seconds
  [start_s, end_s), from its frames' timestamps.
  """

  clips: np.ndarray
  start: int
  end: int
  length: int
  rate: float
  window: int | None = None
  start_s: float | None = None
  end_s: float | None = None


_NOT_REGULAR = (
  (stat.S_ISDIR, "a directory"),
  (stat.S_ISFIFO, "a named pipe (FIFO)"),
  (stat.S_ISSOCK, "a socket"),
  (stat.S_ISCHR, "a character device"),
  (stat.S_ISBLK, "a block device"),
)


def check_regular_file(path: str, flag: str = "") -> None:
  """ValueError naming `path` (and `flag`) unless it is a regular file (symlinks followed).

  By stat, before any open: opening a named pipe would wait for a writer forever."""
  where = f"{flag} {path}" if flag else path
  try:
    mode = os.stat(path).st_mode
  except FileNotFoundError:
    raise UserError(f"{where}: no such file.") from None
  except OSError as e:
    raise UserError(f"{where}: cannot read it ({e.strerror or e}).") from e
  if not stat.S_ISREG(mode):
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a file")
    raise UserError(f"{where}: not a regular file (it is {kind}); expected a file.")


def _open(path: str):
  check_regular_file(path)
  try:
    container = av.open(path)
  except av.error.FFmpegError as e:
    raise UserError(f"{path}: cannot decode it as a video ({e}).") from e
  if not container.streams.video:
    container.close()
    raise UserError(f"{path}: the file has no video stream.")
  return container


def probe(path: str) -> StreamInfo:
  """The first video stream's frame count (None when unknown), rate and size, from the header."""
  with _open(path) as container:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or 0
    frames = int(stream.frames or 0)
    return StreamInfo(frames or None, float(rate), stream.width, stream.height)


def _frames(path: str) -> Iterator[av.VideoFrame]:
  """Every decoded frame of the first video stream, one at a time."""
  try:
    with _open(path) as container:
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"  # Frame and slice threads: several times faster.
      yield from container.decode(stream)
  except av.error.FFmpegError as e:
    raise UserError(f"{path}: cannot decode it as a video ({e}).") from e


def count_frames(path: str) -> int:
  """The number of decodable frames, by one streaming pass (no frame is kept)."""
  return sum(1 for _ in _frames(path))


def packet_times(path: str) -> np.ndarray | None:
  """Presentation times (seconds from the first frame, sorted, float64) of the first video
  stream's packets, read without decoding; None when a packet has no timestamp."""
  pts = []
  try:
    with _open(path) as container:
      stream = container.streams.video[0]
      time_base = stream.time_base
      for packet in container.demux(stream):
        if packet.size == 0:
          continue  # The demuxer's end-of-stream packet.
        if packet.pts is None:
          return None
        pts.append(packet.pts)
  except av.error.FFmpegError:
    return None  # The decoding pass reports what is wrong with the file.
  if not pts or time_base is None:
    return None
  pts.sort()
  return np.array([float((p - pts[0]) * time_base) for p in pts])


def _frame_time(frame: av.VideoFrame, index: int, first_pts: int | None, rate: float) -> float:
  """A decoded frame's presentation time (seconds from the first frame), computed as
  `packet_times` does; index / rate for a stream without timestamps."""
  if frame.pts is None or first_pts is None or frame.time_base is None:
    if rate <= 0:
      raise UserError("the video has neither timestamps nor a frame rate; --window needs one.")
    return index / rate
  return float((frame.pts - first_pts) * frame.time_base)


def decoded_times(path: str, rate: float) -> np.ndarray:
  """Presentation times of every decoded frame (one pass, nothing kept): streams whose packets
  have no timestamps."""
  times, first_pts = [], None
  for index, frame in enumerate(_frames(path)):
    first_pts = frame.pts if index == 0 else first_pts
    try:
      times.append(_frame_time(frame, index, first_pts, rate))
    except ValueError as e:
      raise UserError(f"{path}: {e}") from None
  return np.array(times)


def plan(configs: DatasetConfig, bounds: list[tuple[int, int]], rate: float) -> list[np.ndarray]:
  """Absolute frame indices (C, num_frames) of each window [start, end): the reader's rule on a
  video of end - start frames, shifted by start."""
  return [
    start + sampling.eval_clip_indices_for(configs, tf.constant(end - start), rate).numpy()
    for start, end in bounds
  ]


def _stream(path: str, plans: list[np.ndarray]) -> Iterator[tuple[int, np.ndarray | int]]:
  """One pass: (i, clips uint8 (C, T, H, W, 3)) for each plan as soon as its frames are in (plan
  order), then (-1, the number of frames decoded). Keeps only frames some open plan needs."""
  last_use: dict[int, int] = {}  # frame -> the last plan that needs it
  for i, indices in enumerate(plans):
    for f in np.unique(indices):
      last_use[int(f)] = i
  ready = [int(indices.max()) for indices in plans]  # the frame after which a plan is complete
  kept: dict[int, np.ndarray] = {}
  size: dict[str, int] = {}
  next_plan = 0
  count = 0
  for index, frame in enumerate(_frames(path)):
    count = index + 1
    # A stream may change resolution midway; the first frame's size keeps the frames stackable.
    size = size or {"width": frame.width, "height": frame.height}
    if index in last_use:
      kept[index] = frame.to_ndarray(format="rgb24", **size)
    while next_plan < len(plans) and ready[next_plan] <= index:
      indices = plans[next_plan]
      # (C * T,) frames of (H, W, 3) -> (C, T, H, W, 3)
      clips = np.stack([kept[int(f)] for f in indices.reshape(-1)])
      yield next_plan, clips.reshape(indices.shape + clips.shape[1:])
      for f in np.unique(indices):
        if last_use[int(f)] == next_plan:
          del kept[int(f)]
      next_plan += 1
  yield -1, count


# Single videos whose sampled frames lie more than this far apart (or from the start) are read
# by seeking instead of decoding every frame in between.
SEEK_GAP_S = 10.0


def _seek_frames(path: str, wanted: np.ndarray, rate: float, gap: float) -> dict | None:
  """Frames `wanted` (sorted, unique) as {index: uint8 (H, W, 3)}, seeking over gaps of more
  than `gap` frames; an index is (pts - first pts) * time_base * rate. None (nothing is trusted)
  when the stream does not allow it: no timestamps, a variable frame rate before the first seek,
  a seek that lands after its target, or a stream that ends early."""
  wanted_set = {int(f) for f in wanted}
  kept: dict[int, np.ndarray] = {}
  try:
    with _open(path) as container:
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      time_base = float(stream.time_base)
      frames = container.decode(stream)
      first = next(frames, None)
      if first is None or first.pts is None:
        return None
      base, size = first.pts, {"width": first.width, "height": first.height}
      if 0 in wanted_set:
        kept[0] = first.to_ndarray(format="rgb24", **size)
      current, sequential = 0, True
      for target in wanted:
        target = int(target)
        if target in kept:
          continue
        after_seek = target - current > gap
        if after_seek:
          # Half a frame early: the key frame at or before the target, never after it.
          offset = base + int((target - 0.5) / rate / time_base)
          container.seek(offset, stream=stream, backward=True, any_frame=False)
          frames, sequential = container.decode(stream), False
        for frame in frames:
          if frame.pts is None:
            return None
          index = round((frame.pts - base) * time_base * rate)
          if (after_seek and index > target) or (sequential and index != current + 1):
            return None
          after_seek, current = False, index
          if index in wanted_set:
            kept[index] = frame.to_ndarray(format="rgb24", **size)
          if index >= target:
            break
        if target not in kept:
          return None
  except av.error.FFmpegError:
    return None  # The streaming pass reports what is wrong with the file.
  return kept


def video_clips(
  path: str,
  configs: DatasetConfig,
  window_s: float | None = None,
  hop_s: float | None = None,
) -> Iterator[Clips]:
  """The evaluation clips of the video at `path` (one Clips), or of each window of it (one Clips
  per window, in order; vidtx.inference.timeline) with `window_s` / `hop_s` seconds (flags
  checked by timeline.check_flags). Raises ValueError naming the file."""
  if window_s is not None:
    yield from _window_clips(path, configs, window_s, hop_s or window_s)
    return
  info = probe(path)
  length = info.frames or count_frames(path)
  if length < 1:
    raise UserError(f"{path}: the video stream has no frames.")
  rate = info.rate
  plans = plan(configs, [(0, length)], rate)
  if info.frames and rate > 0:
    wanted = np.unique(plans[0])
    if np.diff(wanted, prepend=0).max() > SEEK_GAP_S * rate:
      kept = _seek_frames(path, wanted, rate, SEEK_GAP_S * rate)
      if kept is not None:
        # (C * T,) frames of (H, W, 3) -> (C, T, H, W, 3)
        clips = np.stack([kept[int(f)] for f in plans[0].reshape(-1)])
        yield Clips(clips.reshape(plans[0].shape + clips.shape[1:]), 0, length, length, rate)
        return
  for _ in range(2):
    held = None
    for i, result in _stream(path, plans):
      if i < 0:
        decoded = result
        break
      held = result
    if decoded == length and held is not None:
      yield Clips(held, 0, length, length, rate)
      return
    # The container's count was wrong: plan again with the decoded count.
    if decoded < 1:
      raise UserError(f"{path}: the video stream has no frames.")
    length = decoded
    plans = plan(configs, [(0, length)], rate)
  raise UserError(f"{path}: the frame count changes between two decodes of the file.")


def _window_clips(
  path: str, configs: DatasetConfig, window_s: float, hop_s: float
) -> Iterator[Clips]:
  """The clips of every window of the video at `path` (see the module doc)."""
  rate = probe(path).rate
  times = packet_times(path)
  if times is None:
    times = decoded_times(path, rate)  # No timestamps in the packets: the decoder's.
  next_window = 0
  for _ in range(2):
    if len(times) < 1:
      raise UserError(f"{path}: the video stream has no frames.")
    timeline.check_fits(path, times, rate, window_s, hop_s)
    state: dict = {}
    windows = timeline.windows(times, rate, window_s, hop_s, next_window)
    for clips in _stream_windows(path, configs, rate, times, windows, state):
      next_window = clips.window + 1
      yield clips
    if state["trusted"]:
      return
    times = state["times"]  # The decoder's frames, as decoded: plan what is left on them.
  raise UserError(f"{path}: the frames' timestamps change between two decodes of the file.")


def _stream_windows(
  path: str,
  configs: DatasetConfig,
  rate: float,
  expected: Sequence[float],
  windows: Iterator[timeline.Window],
  state: dict,
) -> Iterator[Clips]:
  """One decoding pass: the Clips of each of `windows` (planned on the frame times `expected`)
  once the frames after its end confirm them. Keeps only frames an open window samples. Sets
  state["times"] (the decoded frames' times) and state["trusted"] (they are `expected`); after
  the first frame that differs, nothing more is returned."""
  upcoming = next(windows, None)
  open_windows: list[tuple[timeline.Window, np.ndarray]] = []  # (window, its frame indices)
  users: dict[int, int] = {}  # frame -> how many open windows sample it
  kept: dict[int, np.ndarray] = {}
  times: list[float] = []
  trusted, first_pts, size = True, None, {}

  def complete() -> Clips:
    window, indices = open_windows.pop(0)
    # (C * T,) frames of (H, W, 3) -> (C, T, H, W, 3)
    clips = np.stack([kept[int(f)] for f in indices.reshape(-1)])
    for f in np.unique(indices):
      users[int(f)] -= 1
      if not users[int(f)]:
        del users[int(f)], kept[int(f)]
    return Clips(
      clips.reshape(indices.shape + clips.shape[1:]),
      window.first,
      window.stop,
      len(expected),
      rate,
      window.k,
      window.start_s,
      window.end_s,
    )

  for index, frame in enumerate(_frames(path)):
    first_pts = frame.pts if index == 0 else first_pts
    try:
      times.append(_frame_time(frame, index, first_pts, rate))
    except ValueError as e:
      raise UserError(f"{path}: {e}") from None
    if not trusted:
      continue
    if index >= len(expected) or times[-1] != expected[index]:
      trusted = False
      open_windows, users, kept = [], {}, {}
      continue
    # Frame `index` is where `expected` says: the windows that end before it are what they are.
    while open_windows and open_windows[0][0].stop <= index:
      yield complete()
    while upcoming is not None and upcoming.first <= index:
      (indices,) = plan(configs, [(upcoming.first, upcoming.stop)], rate)
      open_windows.append((upcoming, indices))
      for f in np.unique(indices):
        users[int(f)] = users.get(int(f), 0) + 1
      upcoming = next(windows, None)
    # A stream may change resolution midway; the first frame's size keeps the frames stackable.
    size = size or {"width": frame.width, "height": frame.height}
    if index in users:
      kept[index] = frame.to_ndarray(format="rgb24", **size)
  trusted = trusted and len(times) == len(expected)
  while trusted and open_windows:
    yield complete()
  state.update(times=np.array(times), trusted=trusted)


def decode_all(path: str) -> np.ndarray:
  """Every frame of the first video stream, uint8 (N, H, W, 3) RGB (short videos, tests)."""
  size: dict[str, int] = {}
  frames = []
  for frame in _frames(path):
    size = size or {"width": frame.width, "height": frame.height}
    frames.append(frame.to_ndarray(format="rgb24", **size))
  if not frames:
    raise UserError(f"{path}: the video stream has no frames.")
  return np.stack(frames)  # N x (H, W, 3) -> (N, H, W, 3)


# ---------------------------------------------------------------------------------------------
# Many inputs.
# ---------------------------------------------------------------------------------------------


def is_video_name(name: str) -> bool:
  return os.path.splitext(name)[1][1:].lower() in VIDEO_EXTENSIONS and not name.startswith(".")


def _folder(folder: str) -> list[tuple[str, str]]:
  found = []
  for root, dirs, files in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(files):
      if is_video_name(name):
        path = os.path.join(root, name)
        found.append((os.path.relpath(path, folder), path))
  return found


def list_videos(video: str | None = None, list_file: str | None = None) -> list[tuple[str, str]]:
  """(id, path) of every input: `video` a file, a folder (recursive; ids relative to it), or a
  glob; `list_file` one path per line, or a CSV whose first column is the path (a header row
  whose first cell is not a file is skipped). Raises ValueError when nothing matches."""
  if list_file is not None:
    check_regular_file(list_file, "--list")  # A named pipe would block the open.
    try:
      # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first path.
      with open(list_file, newline="", encoding="utf-8-sig") as f:
        if list_file.lower().endswith(".csv"):
          paths = [row[0].strip() for row in csv.reader(f) if row and row[0].strip()]
          if paths and paths[0].lower() in ("path", "video", "file", "filename"):
            paths = paths[1:]  # The header row.
        else:
          paths = [line.strip() for line in f.read().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
      raise UserError(f"--list {list_file}: cannot read it as text ({e}).") from e
    if not paths:
      raise UserError(f"--list {list_file}: no paths; expected one per line, or a CSV.")
    return [(p, p) for p in paths]
  if video is None:
    raise UserError("Give --video FILE|FOLDER|GLOB or --list FILE.")
  if os.path.isdir(video):
    found = _folder(video)
    if not found:
      raise UserError(
        f"--video {video}: no video files in this folder (extensions "
        f"{' '.join(sorted(VIDEO_EXTENSIONS))})."
      )
    return found
  if os.path.exists(video) or not glob.has_magic(video):
    return [(video, video)]
  matches = sorted(
    p
    for p in glob.glob(video, recursive=True)
    # Not only regular files: a named pipe called .mp4 is reported as one, not skipped.
    if not os.path.isdir(p) and is_video_name(os.path.basename(p))
  )
  if not matches:
    raise UserError(f"--video {video}: the pattern matches no video file.")
  return [(p, p) for p in matches]
