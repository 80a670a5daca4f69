"""The windows of `predict --window S [--hop S]`, on the frames' presentation timestamps.

Window k covers the seconds [k * hop, k * hop + window) of the video, measured from its first
frame's timestamp, and holds the frames whose timestamp falls inside. Timestamps, not frame index
/ average rate: on a variable-frame-rate video (a phone recording, a screen capture) a window at
2 s holds the frames shown at 2 s. A window that holds no frame (a gap in a variable-rate video)
is skipped. Windows are generated lazily, one at a time: a long video with a short hop never
holds every window's bounds in memory.

The flags are checked before any work (`check_flags`): finite, positive, at least MIN_SECONDS;
and per video before its first window (`check_fits`): --window and --hop at least one frame
interval (the video's duration / its frame count), so a video never has more windows than frames.

`save_timeline` draws the top-1 class of every window over time (--timeline_png).
"""

import bisect
import dataclasses
import math
import os
from collections.abc import Iterator, Sequence

from vidtx.errors import UserError

# No video is sampled faster than 1000 frames per second; below this a flag is a typo (a hop of
# 1e-6 s would ask for a million windows per second of video).
MIN_SECONDS = 0.001
# Timestamps are exact rationals (pts * time_base); window starts k * hop are floats. A frame
# within this of a boundary counts as on it (0.3 s is 3 * 0.1 s).
EPSILON_S = 1e-6


def check_flags(window: float | None, hop: float | None) -> tuple[float | None, float | None]:
  """(window, hop) with hop defaulting to window; ValueError naming the flag for a NaN, an inf,
  or a value below MIN_SECONDS. (None, None) without --window; --hop alone is an error."""
  if window is None:
    if hop is not None:
      raise UserError("--hop needs --window SECONDS.")
    return None, None
  for flag, value in (("--window", window), ("--hop", hop)):
    if value is None:
      continue
    if not math.isfinite(value):
      raise UserError(f"{flag}={value}: expected a finite number of seconds.")
    if value < MIN_SECONDS:
      raise UserError(
        f"{flag}={value:g}: expected seconds >= {MIN_SECONDS:g} (and at least one frame "
        "interval of each video)."
      )
  return window, window if hop is None else hop


@dataclasses.dataclass(frozen=True)
class Window:
  """Window `k`: seconds [start_s, end_s) (end_s cut at the video's end) and the frames
  [first, stop) (presentation order) whose timestamps fall inside."""

  k: int
  start_s: float
  end_s: float
  first: int
  stop: int


def duration(times: Sequence[float], rate: float) -> float:
  """Seconds from the first frame to the end of the last, shown for one frame interval of the
  average `rate` (or, without one, the mean interval of the others)."""
  if rate > 0:
    shown = 1.0 / rate
  else:
    shown = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
  return times[-1] + shown


def check_fits(path: str, times: Sequence[float], rate: float, window_s: float, hop_s: float):
  """ValueError naming the flag when --window or --hop is shorter than one frame interval of the
  video at `path` (frames at `times`, seconds, sorted): such a video would get more windows than
  it has frames, each of at most one frame."""
  interval = duration(times, rate) / len(times)
  if interval <= 0:
    return  # One frame and no rate: one window, whatever the flags.
  for flag, value in (("--window", window_s), ("--hop", hop_s)):
    if value < interval * (1 - 1e-6):
      raise UserError(
        f"{path}: {flag}={value:g} s is shorter than one frame interval of this video "
        f"({interval:.4g} s, {1 / interval:.4g} frames per second); expected {flag} >= "
        f"{interval:.4g}."
      )


def windows(
  times: Sequence[float], rate: float, window_s: float, hop_s: float, first_k: int = 0
) -> Iterator[Window]:
  """The windows of a video whose frames are shown at `times` (seconds from the first frame,
  sorted), from window `first_k` on, one at a time; windows without frames are skipped."""
  end_of_video = duration(times, rate)
  k = first_k
  while (start := k * hop_s) <= times[-1] + EPSILON_S:
    end = start + window_s
    first = bisect.bisect_left(times, start - EPSILON_S)
    stop = bisect.bisect_left(times, end - EPSILON_S)
    if stop > first:
      yield Window(k, round(start, 6), round(min(end, end_of_video), 6), first, stop)
    k += 1


def save_timeline(path: str, timeline: dict[str, list[tuple[float, float, str]]]) -> None:
  """A strip per video of its windows' top-1 class over time (matplotlib, no pyplot), written
  atomically in the format of the file's extension (`image_suffixes`)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.patches import Patch

  from vidtx import outputs

  labels = sorted({label for rows in timeline.values() for _, _, label in rows})
  colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}
  figure = Figure(figsize=(10, 0.6 * len(timeline) + 1.2))
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  for row, rows in enumerate(timeline.values()):
    # Overlapping windows: each is drawn from its start to the next one's start.
    for i, (start, end, label) in enumerate(rows):
      stop = rows[i + 1][0] if i + 1 < len(rows) else end
      axes.barh(row, stop - start, left=start, color=colours[label], height=0.8)
  axes.set_yticks(range(len(timeline)), list(timeline))
  axes.invert_yaxis()
  axes.set_xlabel("time (s)")
  axes.set_title("top-1 class per window")
  axes.legend(
    handles=[Patch(color=colours[label], label=label) for label in labels],
    loc="upper left",
    bbox_to_anchor=(1.0, 1.0),
    fontsize="small",
  )
  figure.tight_layout()
  image_format = os.path.splitext(path)[1][1:].lower()
  with outputs.atomic_writer(path, "wb") as f:
    figure.savefig(f, format=image_format)


def image_suffixes() -> tuple[str, ...]:
  """The --timeline_png extensions matplotlib writes ('.png', '.pdf', '.svg', ...)."""
  from matplotlib.backend_bases import FigureCanvasBase

  return tuple(sorted(f".{name}" for name in FigureCanvasBase.get_supported_filetypes()))
