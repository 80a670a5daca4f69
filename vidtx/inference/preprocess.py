"""Video files and .npy clips to the checkpoint's evaluation views, as the TFRecord reader makes
them (vidtx.data.sampling), and the checks that name a bad input: shapes, NaN and inf."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vidtx.errors import UserError

# JAX, TensorFlow and PyAV (with the vidtx modules that import them) are imported inside the
# functions that use them, so that the command's --help and flag errors answer at once.
if TYPE_CHECKING:
  from vidtx import video_io
  from vidtx.checkpoints import store
  from vidtx.data.reader_config import DatasetConfig


def decode_video(path: str) -> np.ndarray:
  """Every frame of the first video stream of `path`: uint8 (N, H, W, 3) RGB.

  PyAV converts any pixel format (grayscale, 10-bit, odd sizes, ...) to rgb24. Every frame is
  kept in memory: for short videos and as the reference of the bounded-memory path
  (`streamed_views`, vidtx.video_io), which predictions use. Raises ValueError naming the file
  when it cannot be decoded.
  """
  import av

  from vidtx import video_io

  video_io.check_regular_file(path)
  frames = []
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise UserError(f"{path}: the file has no video stream.")
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"  # Frame and slice threads: several times faster on long videos.
      size = {}
      for frame in container.decode(stream):
        # A stream may change resolution midway; the first frame's size keeps the frames stackable.
        size = size or {"width": frame.width, "height": frame.height}
        frames.append(frame.to_ndarray(format="rgb24", **size))
  except av.error.FFmpegError as e:
    raise UserError(f"{path}: cannot decode it as a video ({e}).") from e
  if not frames:
    raise UserError(f"{path}: the video stream has no frames.")
  return np.stack(frames)  # N x (H, W, 3) -> (N, H, W, 3)


def encode_video(
  path: str, frames: np.ndarray, fps: int = 10, codec: str = "libx264", pix_fmt: str = "yuv420p"
) -> str:
  """Writes uint8 RGB frames (N, H, W, 3) as a video file: demos and tests make the files that
  `decode_video` reads. Returns `path`."""
  import av

  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise UserError(f"{path}: frames {frames.dtype} {frames.shape}; expected uint8 (N, H, W, 3).")
  with av.open(path, "w") as container:
    stream = container.add_stream(codec, rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = pix_fmt
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())  # Flush the encoder's buffered frames.
  return path


def dataset_configs(converted: store.Converted) -> DatasetConfig:
  """The checkpoint's preprocessing as the reader's typed dataset config (for
  sampling.eval_views), checked."""
  from vidtx.data import reader_config

  fields = converted.dataset_overrides()
  if fields["crop_size"] > fields["min_resize"]:
    raise UserError(
      f"The checkpoint's preprocessing has crop_size={fields['crop_size']} > "
      f"min_resize={fields['min_resize']}; expected crop_size <= min_resize."
    )
  # Raises UserError on bad mean / std.
  return reader_config.DatasetConfig.from_config(fields, views_only=True)


def video_views(
  frames: np.ndarray, converted: store.Converted, frame_rate: float = 0.0
) -> np.ndarray:
  """uint8 frames (N, H, W, 3) of a whole video -> the evaluation views, float32
  (V, num_frames, crop, crop, 3), exactly as the TFRecord reader makes them. `frame_rate`: the
  video's (0: the checkpoint's), for the 'timesformer' sampling's window."""
  import tensorflow as tf

  from vidtx.data import sampling

  configs = dataset_configs(converted)
  indices = sampling.eval_clip_indices_for(configs, tf.constant(len(frames)), frame_rate)
  clips = frames[indices.numpy()]  # (N, H, W, 3) -> (clips, T, H, W, 3)
  return sampling.eval_views(clips, configs).numpy()


def streamed_views(path: str, converted: store.Converted) -> tuple[np.ndarray, video_io.Clips]:
  """The evaluation views (V, num_frames, crop, crop, 3) of the video file at `path`, decoding
  only the sampled frames (vidtx.video_io; the same views as `video_views` of every frame, with
  the container's frame rate), and its Clips."""
  from vidtx import video_io
  from vidtx.data import sampling

  configs = dataset_configs(converted)
  (clips,) = video_io.video_clips(path, configs)
  return sampling.eval_views(clips.clips, configs).numpy(), clips


def expected_clip(preprocessing: dict[str, Any]) -> tuple[int, int, int, int]:
  crop = int(preprocessing["crop_size"])
  return int(preprocessing["num_frames"]), crop, crop, 3


def check_clip(array: Any, preprocessing: dict[str, Any], source: str) -> np.ndarray:
  """`array` as float32 (B, T, H, W, C) after checking it fits the checkpoint's model.

  A single clip (T, H, W, C) gets a batch axis. Raises ValueError naming `source`, the shape
  found and the shape expected.
  """
  expected = expected_clip(preprocessing)
  wanted = f"float32 (T, H, W, C) = {expected} or (B, {', '.join(map(str, expected))})"
  if not isinstance(array, np.ndarray):
    raise UserError(f"{source}: expected one array, {wanted}; got a {type(array).__name__}.")
  if array.dtype != np.float32:
    raise UserError(f"{source}: dtype {array.dtype}, shape {array.shape}; expected {wanted}.")
  if (
    array.ndim not in (4, 5)
    or array.shape[-4:] != expected
    or (array.ndim == 5 and array.shape[0] < 1)
  ):
    raise UserError(
      f"{source}: shape {array.shape}; expected {wanted} (the checkpoint's "
      "num_frames and crop_size, RGB)."
    )
  clips = array[None] if array.ndim == 4 else array  # (T, H, W, C) -> (1, T, H, W, C)
  # A NaN would give NaN logits and a meaningless top-k with exit 0: refuse it here.
  finite = np.isfinite(clips)
  bad = ~finite.reshape(len(clips), -1).all(axis=1)
  if bad.any():
    count = int(finite.size - np.count_nonzero(finite))
    raise UserError(
      f"{source}: {count} non-finite value(s) (NaN or inf) in clip(s) "
      f"{short_list(np.flatnonzero(bad).tolist())}; expected finite pixel values."
    )
  return clips


def short_list(items: Sequence[Any], limit: int = 8) -> str:
  """'0, 3, 5', or the first `limit` and 'and 4 more': short enough for a one-line message."""
  shown = ", ".join(str(x) for x in items[:limit])
  return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_finite(values: np.ndarray, source: str, what: str, names: Sequence[str]) -> np.ndarray:
  """`values` (N, ...), one row per view or clip named by `names`; ValueError naming `source`
  and the rows that hold a NaN or inf (`what`: 'logits', 'views')."""
  bad = ~np.isfinite(np.asarray(values)).reshape(len(values), -1).all(axis=1)
  if bad.any():
    rows = [f"'{names[i]}'" for i in np.flatnonzero(bad)]
    hint = (
      "check the checkpoint's preprocessing mean and std"
      if what == "views"
      else "the checkpoint's parameters hold a NaN or inf, or overflow on this input"
    )
    raise UserError(
      f"{source}: non-finite {what} (NaN or inf) for {len(rows)} of "
      f"{len(values)}: {short_list(rows)}; {hint}."
    )
  return values


def load_clip(path: str, converted: store.Converted) -> np.ndarray:
  """The .npy array at `path`, checked by `check_clip`: float32 (B, T, H, W, C)."""
  from vidtx import video_io

  if os.path.lexists(path):
    video_io.check_regular_file(path, "--input")  # A named pipe would block the open.
  try:
    with open(path, "rb") as f:
      # np.load would take other files for pickles (allow_pickle=False then says so): check the
      # .npy magic string first, for a message that says what is wrong.
      if f.read(6) != b"\x93NUMPY":
        raise UserError(f"{path}: not a .npy file (np.save writes them).")
      f.seek(0)
      array = np.load(f, allow_pickle=False)
  except OSError as e:
    raise UserError(f"{path}: cannot read it ({e}).") from e
  return check_clip(array, converted.preprocessing, path)


def clip_names(count: int) -> list[str]:
  # 0-based, as the command prints the rows of an --input array.
  return [f"clip {i}" for i in range(count)]


def view_names(preprocessing: dict[str, Any]) -> list[str]:
  """The views' names in eval_views order (clip-major): 'clip 1, centre crop', ..."""
  crops = (
    ["start crop", "centre crop", "end crop"]
    if preprocessing["do_three_spatial_crops"]
    else ["centre crop"]
  )
  return [f"clip {c + 1}, {crop}" for c in range(preprocessing["num_test_clips"]) for crop in crops]


def describe_frames(preprocessing: dict[str, Any]) -> str:
  """Which frames an evaluation clip takes, in words, by its eval_sampling (vidtx.data.sampling):
  '8 frames at stride 2', '8 frames, one per segment', '8 frames over 256 frames at 30 fps'."""
  p = preprocessing
  frames, sampling = int(p["num_frames"]), p.get("eval_sampling", "stride")
  if sampling == "segment":
    return f"{frames} frames, one per segment"
  if sampling == "timesformer" or p.get("train_sampling", "stride") == "timesformer":
    window = frames * float(p.get("sampling_rate", 32))
    clip = f"{frames} frames over {window:g} frames at {float(p.get('target_fps', 30.0)):g} fps"
  else:
    clip = f"{frames} frames at stride {p['stride']}"
  return f"{clip}, one after another over the whole video" if sampling == "whole_video" else clip


def eval_short_side(preprocessing: dict[str, Any]) -> int:
  """The short side frames are resized to for evaluation: eval_min_resize, else min_resize."""
  return int(preprocessing.get("eval_min_resize") or preprocessing["min_resize"])


def describe_preprocessing(preprocessing: dict[str, Any]) -> str:
  """One line: the views and how they are made, e.g. for the command's output."""
  p = preprocessing
  clips, three = p["num_test_clips"], p["do_three_spatial_crops"]
  crops = "3 crops (start, centre, end of the long side)" if three else "1 centre crop"
  return (
    f"{clips * (3 if three else 1)} views = {clips} clip(s) x {crops}; clips of "
    f"{describe_frames(p)}, short side {eval_short_side(p)}, crop "
    f"{p['crop_size']}, mean {list(p['mean'])}, std {list(p['std'])}; aggregation "
    f"{p['aggregation']}"
  )
