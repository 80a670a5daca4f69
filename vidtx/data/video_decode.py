"""Reading a video file with PyAV: the frames of a segment as uint8 RGB, resampled to a frame rate
(as FFmpeg's fps filter does) and resized; VideoError says why a video cannot be read."""

import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from vidtx.errors import UserError


class VideoError(UserError):
  """Why one video cannot be converted; it is reported and the conversion goes on."""


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


def probe(path: str) -> str | None:
  """Why `path` cannot be converted, found cheaply (the file opens and its first frame decodes),
  or None. Only a first check: read_frames may still find the video too short or damaged later.
  Never opens what is not a regular file (a named pipe would block)."""
  if not path or not os.path.isfile(path):
    return "missing: no such file"
  if os.path.getsize(path) == 0:
    return "empty file"
  try:
    with av.open(path) as container:
      if not container.streams.video:
        return "no video stream"
      for _ in container.decode(container.streams.video[0]):
        return None
      return "no frames"
  except (av.error.FFmpegError, OSError, ValueError) as e:
    return f"cannot decode: {e}"
