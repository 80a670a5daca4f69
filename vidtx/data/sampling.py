"""Which frames and pixels the reader takes of a video: the clip indices of every sampling mode
(training and evaluation) and the evaluation views (resize, crops, normalisation)."""

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from vidtx.data import augment, reader_config, records
from vidtx.data.reader_config import DatasetConfig

# ---------------------------------------------------------------------------------------------
# Which frames: clip indices.
# ---------------------------------------------------------------------------------------------


def _clip_span(num_frames: int, stride: int) -> int:
  return (num_frames - 1) * stride + 1


def random_clip_indices(
  video_length: tf.Tensor, num_frames: int, stride: int, seed: tf.Tensor
) -> tf.Tensor:
  """(num_frames,) int32 frame indices at `stride` from a random offset (stateless, seeded).

  The offset is uniform in [0, video_length - span]; a video shorter than the clip's span starts
  at 0 and is looped (indices wrap around).
  """
  video_length = tf.cast(video_length, tf.int32)
  max_offset = tf.maximum(video_length - _clip_span(num_frames, stride), 0)
  offset = tf.random.stateless_uniform([], seed, minval=0, maxval=max_offset + 1, dtype=tf.int32)
  return (offset + tf.range(num_frames) * stride) % video_length


def eval_clip_indices(
  video_length: tf.Tensor, num_frames: int, stride: int, num_clips: int
) -> tf.Tensor:
  """(num_clips, num_frames) int32 frame indices of the evaluation clips.

  One clip: the middle one, offset floor((video_length - span) / 2). Several: offsets
  floor(linspace(0, video_length - span, num_clips)), so the first clip starts at the first frame
  and the last ends at the last frame. Videos shorter than the span start at 0 and loop.
  """
  video_length = tf.cast(video_length, tf.int32)
  max_offset = tf.maximum(video_length - _clip_span(num_frames, stride), 0)
  offsets = _spaced_offsets(max_offset, num_clips)
  indices = offsets[:, None] + tf.range(num_frames)[None, :] * stride  # (clips, frames)
  return indices % video_length


def _spaced_offsets(max_offset: tf.Tensor, num_clips: int) -> tf.Tensor:
  """(num_clips,) offsets in [0, max_offset]: the middle for one clip, else evenly spaced with
  both ends included (for integers exactly floor(linspace(...)): i * max // (n - 1))."""
  if max_offset.dtype.is_floating:
    if num_clips == 1:
      return tf.reshape(max_offset / 2, [1])
    return tf.range(num_clips, dtype=max_offset.dtype) * max_offset / (num_clips - 1)
  if num_clips == 1:
    return tf.reshape(max_offset // 2, [1])
  return tf.range(num_clips, dtype=max_offset.dtype) * max_offset // (num_clips - 1)


def _window(dc: DatasetConfig, frame_rate: tf.Tensor) -> tf.Tensor:
  """TimeSformer's clip window in stored frames: num_frames * sampling_rate frames at target_fps,
  scaled by the stored frame rate (the record's own, else dataset_configs.frame_rate)."""
  target_fps = dc.target_fps
  default_rate = dc.frame_rate or target_fps
  rate = tf.where(frame_rate > 0, tf.cast(frame_rate, tf.float32), default_rate)
  return float(dc.num_frames * dc.sampling_rate) * rate / target_fps


def _window_indices(
  starts: tf.Tensor, window: tf.Tensor, num_frames: int, video_length: tf.Tensor
) -> tf.Tensor:
  """(C, num_frames) int32: num_frames frames evenly over [start, start + window - 1] of each
  start (C,), clamped to the video (PySlowFast's linspace, truncated to integers)."""
  steps = tf.linspace(0.0, 1.0, num_frames) * tf.maximum(window - 1.0, 0.0)  # (T,)
  positions = tf.floor(starts[:, None] + steps[None, :])  # (C, T)
  return tf.clip_by_value(tf.cast(positions, tf.int32), 0, tf.cast(video_length, tf.int32) - 1)


def _segment_indices(positions: tf.Tensor, num_frames: int, video_length: tf.Tensor) -> tf.Tensor:
  """(C, num_frames) int32: frame floor((i + positions[c, i]) * L / num_frames) of segment i;
  positions in [0, 1) say where in its segment each frame is taken."""
  length = tf.cast(video_length, tf.float32)
  segment = length / num_frames
  frames = tf.floor((tf.range(num_frames, dtype=tf.float32)[None, :] + positions) * segment)
  return tf.clip_by_value(tf.cast(frames, tf.int32), 0, tf.cast(video_length, tf.int32) - 1)


def train_clip_indices(
  dataset: DatasetConfig | Mapping[str, Any],
  video_length: tf.Tensor,
  frame_rate: tf.Tensor,
  seed: tf.Tensor,
) -> tf.Tensor:
  """(num_frames,) int32 frame indices of a random training clip (train_sampling)."""
  dc = reader_config.as_dataset_config(dataset, views_only=True)
  sampling = dc.train_sampling
  num_frames = dc.num_frames
  if sampling == "stride":
    return random_clip_indices(video_length, num_frames, dc.stride, seed)
  if sampling == "timesformer":
    window = _window(dc, frame_rate)
    max_start = tf.maximum(tf.cast(video_length, tf.float32) - window, 0.0)
    start = tf.random.stateless_uniform([1], seed) * max_start
    return _window_indices(start, window, num_frames, video_length)[0]
  positions = tf.random.stateless_uniform([1, num_frames], seed)  # 'segment'
  return _segment_indices(positions, num_frames, video_length)[0]


def eval_clip_indices_for(
  dataset: DatasetConfig | Mapping[str, Any],
  video_length: tf.Tensor,
  frame_rate: tf.Tensor | float = 0.0,
) -> tf.Tensor:
  """(C, num_frames) int32 frame indices of a video's evaluation clips (eval_sampling).

  'stride' / 'timesformer' / 'segment': C = num_test_clips, the middle clip or evenly spaced
  ones (segments: the middle of each segment, or positions (k + 0.5) / C within them).
  'whole_video': C = ceil(length / clip span) consecutive clips of the training geometry, the
  last one clamped to the final frame.
  """
  dc = reader_config.as_dataset_config(dataset, views_only=True)
  sampling = dc.eval_sampling
  num_frames, num_clips = dc.num_frames, dc.num_test_clips
  video_length = tf.cast(video_length, tf.int32)
  frame_rate = tf.cast(frame_rate, tf.float32)
  if sampling == "stride":
    return eval_clip_indices(video_length, num_frames, dc.stride, num_clips)
  if sampling == "segment":
    positions = (tf.range(num_clips, dtype=tf.float32)[:, None] + 0.5) / num_clips  # (C, 1)
    return _segment_indices(tf.tile(positions, [1, num_frames]), num_frames, video_length)
  length = tf.cast(video_length, tf.float32)
  if dc.train_sampling == "timesformer" or sampling == "timesformer":
    window = _window(dc, frame_rate)
    if sampling == "timesformer":
      starts = _spaced_offsets(tf.maximum(length - window, 0.0), num_clips)
    else:
      count = tf.maximum(tf.math.ceil(length / window), 1.0)
      starts = tf.range(count) * window
    return _window_indices(starts, window, num_frames, video_length)
  # 'whole_video' with stride clips: consecutive clips of num_frames * stride frames.
  span = num_frames * dc.stride
  count = tf.maximum((video_length + span - 1) // span, 1)
  indices = tf.range(count)[:, None] * span + tf.range(num_frames)[None, :] * dc.stride
  return tf.minimum(indices, video_length - 1)


# ---------------------------------------------------------------------------------------------
# Views.
# ---------------------------------------------------------------------------------------------


def normalise(frames: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """float32 (..., 3) pixels in [0, 255] -> (pixel / 255 - mean) / std per channel.

  With mean = std = 0.5 this is bit-identical to the former pixel / 255 * 2 - 1 (subtracting 0.5
  and dividing by 0.5 round exactly as doubling and subtracting 1 do), and with mean 0, std 1 to
  pixel / 255.
  """
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)
  return (frames / 255.0 - mean) / std


def _three_crops(frames: tf.Tensor, crop: int) -> tf.Tensor:
  """(..., H, W, 3) -> (3, ..., crop, crop, 3): start, centre and end of the long side."""
  height, width = tf.shape(frames)[-3], tf.shape(frames)[-2]
  long_side = tf.maximum(height, width)
  starts = [0, (long_side - crop) // 2, long_side - crop]
  centre_y, centre_x = (height - crop) // 2, (width - crop) // 2
  crops = []
  for start in starts:
    top = tf.where(height > width, start, centre_y)
    left = tf.where(height > width, centre_x, start)
    crops.append(frames[..., top : top + crop, left : left + crop, :])
  return tf.stack(crops)


def eval_views(
  frames: tf.Tensor, dataset: DatasetConfig | Mapping[str, Any], *, normalised: bool = True
) -> tf.Tensor:
  """The evaluation views of one video: uint8 clips -> normalised float32 (V, T, crop, crop, 3).

  `frames`: the decoded clips (C, num_frames, H, W, 3), uint8, as selected by
  `eval_clip_indices_for` (C = num_test_clips, or any count for whole videos). Every frame's
  short side is resized to eval_min_resize (default min_resize; bilinear), then each clip is
  centre-cropped, or cropped three times (start, centre and end of the long side) when
  do_three_spatial_crops; V = C * (3 or 1),
  clip-major. Pixels are normalised with `dataset.normalisation`. vidtx.predict calls this;
  the TFRecord reader decodes only the window that holds the crops (decode_eval_views: the same
  views up to the rounding of that window to whole pixels). With normalised=False the views are
  the resized pixels rounded to uint8 (normalised on the accelerator).
  """
  dc = reader_config.as_dataset_config(dataset, views_only=True)
  num_frames, crop = dc.num_frames, dc.crop_size
  three_crops = dc.do_three_spatial_crops
  mean, std = dc.normalisation
  frames = tf.ensure_shape(
    tf.convert_to_tensor(frames, tf.uint8), [None, num_frames, None, None, 3]
  )
  num_clips = frames.shape[0]  # Static when the caller's is; else inferred below.
  num_views = None if num_clips is None else num_clips * (3 if three_crops else 1)
  shape = tf.shape(frames)
  # (C, T, H, W, 3) -> (C*T, H, W, 3): resize every frame at once.
  # eval_min_resize: TimeSformer trains on short sides of 256-320 but evaluates at 224.
  short_side = dc.eval_short_side
  frames = augment.resize_short_side(tf.reshape(frames, [-1, shape[2], shape[3], 3]), short_side)
  # (C*T, H', W', 3) -> (C, T, H', W', 3)
  frames = tf.reshape(frames, tf.concat([[shape[0], num_frames], tf.shape(frames)[1:]], 0))
  if three_crops:
    views = _three_crops(frames, crop)  # (3, clips, T, crop, crop, 3)
    views = tf.transpose(views, [1, 0, 2, 3, 4, 5])  # -> (clips, 3, T, crop, crop, 3)
    views = tf.reshape(views, [-1, num_frames, crop, crop, 3])  # -> (V, T, ...)
  else:
    top = (tf.shape(frames)[2] - crop) // 2
    left = (tf.shape(frames)[3] - crop) // 2
    views = frames[:, :, top : top + crop, left : left + crop, :]  # (V, T, crop, crop, 3)
  views = tf.ensure_shape(views, [num_views, num_frames, crop, crop, 3])
  if not normalised:
    return tf.cast(tf.clip_by_value(tf.round(views), 0.0, 255.0), tf.uint8)
  return normalise(views, mean, std)


def _eval_crop_plan(
  resized: tf.Tensor, crop: int, three_crops: bool
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Where eval_views' crops lie in a frame resized to `resized` ((2,) int32): the window that
  holds them all ((2,) top-left, (2,) size, in resized pixels) and each crop's (top, left) in that
  window ((K, 2), K = 3 or 1). Three crops lie along the long side (start, centre, end), centred
  on the short side: together, the whole long side by `crop`; one crop: the centre."""
  height, width = resized[0], resized[1]
  centre = tf.stack([(height - crop) // 2, (width - crop) // 2])
  if not three_crops:
    return centre, tf.stack([crop, crop]), tf.zeros([1, 2], tf.int32)
  long_side = tf.maximum(height, width)
  starts = tf.stack([0, (long_side - crop) // 2, long_side - crop])  # along the long side
  tall = height > width
  corner = tf.where(tall, tf.stack([0, centre[1]]), tf.stack([centre[0], 0]))
  size = tf.where(tall, tf.stack([height, crop]), tf.stack([crop, width]))
  zeros = tf.zeros_like(starts)
  offsets = tf.where(tall, tf.stack([starts, zeros], 1), tf.stack([zeros, starts], 1))
  return corner, size, offsets


def decode_eval_views(
  encoded: tf.Tensor, indices: tf.Tensor, dataset: DatasetConfig | Mapping[str, Any]
) -> tf.Tensor:
  """eval_views' crops, decoding only the window that holds them: uint8 (V, T, crop, crop, 3).

  `encoded`: a video's encoded frames; `indices`: (C, T) frame indices of its clips. The window
  holding every crop of a frame resized as eval_views resizes it (three crops: the long side by
  `crop`; one: the centre crop) is decoded once per distinct frame (records.decode_window) and
  resized, then the crops are cut from it; V = C * (3 or 1), clip-major, as eval_views. The
  pixels equal eval_views' (before its normalisation) up to the rounding of the window to whole
  stored pixels (docs/data.md); exactly where the stored short side is eval_min_resize.
  """
  dc = reader_config.as_dataset_config(dataset, views_only=True)
  num_frames, crop = dc.num_frames, dc.crop_size
  three_crops = dc.do_three_spatial_crops
  short_side = dc.eval_short_side
  stored = records.stored_frame_size(encoded, indices)
  resized = augment.resized_size(stored[0], stored[1], short_side)
  corner, size, offsets = _eval_crop_plan(resized, crop, three_crops)
  window = augment.stored_window(corner[0], corner[1], size[0], size[1], resized, stored)
  frames = records.decode_window(encoded, indices, window, size)  # (C, T, h, w, 3)
  views = [
    frames[:, :, offset[0] : offset[0] + crop, offset[1] : offset[1] + crop, :]
    for offset in tf.unstack(offsets, num=3 if three_crops else 1)
  ]
  views = tf.stack(views, axis=1)  # (C, K, T, crop, crop, 3), clip-major
  return tf.reshape(views, [-1, num_frames, crop, crop, 3])  # -> (V, T, crop, crop, 3)
