"""tf.data reader: records -> checks -> sample clip(s) -> decode -> augment -> batch.

Sources (`dataset_configs.dataset_name`, filled in by vidtx.data.prepare_dataset): DMVR TFRecords
('dmvr', 'synthetic') or a locally prepared TFDS dataset ('tfds:NAME'). Every source yields one
dict per video (encoded frames, label indices, id, frame rate, where it came from); the rest of
the reader does not know which source it reads.

Training batches: {'inputs': float32 (B, T, H, W, 3), 'label': int32 (B,) (or float32 (B, K)
multi-hot with `multi_label` or `class_splits`), and host fields (below)}, infinite, shuffled.
Evaluation batches: {'inputs': float32 (B, V, T, H, W, 3), 'view_mask': float32 (B, V),
'label', 'video_index': int64 (B,), 'batch_mask': float32 (B,), host fields}, one pass; the last
batch is padded with batch_mask 0. V = num_test_clips * (3 if do_three_spatial_crops else 1),
clip-major (clip 0: crops 0, 1, 2, ...). With eval_sampling='whole_video' a long video arrives in
several elements (chunks of V views, the last one padded with view_mask 0) sharing its
video_index; the evaluator aggregates by video_index.

Host fields (strings and stream bookkeeping, which `split_host_fields` takes off before the batch
goes to the devices): 'ok', 'error', 'source' (file and record index), 'video_id'; training adds
'epoch', 'index' (the element's position in its epoch: the stream position a checkpoint saves)
and 'skipped' (bad records dropped before this element, with skip_bad_records).

Sampling (ViViT 2103.15691, TimeSformer 2102.05095 §4 and Table 8): `train_sampling` 'stride'
(scenic: frames at `stride` from a random offset, looping short videos), 'timesformer' (num_frames
frames spread over a window of num_frames * sampling_rate frames at target_fps, as PySlowFast
samples "at a rate of 1/32"), 'segment' (one random frame in each of num_frames equal segments,
TSN / SSv2); `eval_sampling` the same three with num_test_clips evenly spaced clips (one: the
middle), or 'whole_video' (as many consecutive non-overlapping clips as cover the video).

Augmentation (ViViT 2103.15691 Table 7; vidtx.data.augment) uses scenic's field names under
dataset_configs.augmentation_params; every random choice is made once per clip, so all frames
get the same transform. Pixels are normalised per channel, input = (pixel / 255 - mean) / std
(`normalisation`: explicit mean/std, else a preset in `NORMALIZATIONS`, else zero_centering).

Training is deterministic for a seed, even with parallel map: the file order and the shuffle
buffer are seeded per epoch, the order of elements is fixed (options.deterministic), and every
random choice for an element comes from stateless ops seeded by (seed, process, epoch, index).
A stream restarted at a saved (epoch, index) continues exactly where it stopped: the epochs before
it are not read at all, the records before it in its epoch are read but not decoded.

Bad records (no frames, a corrupt JPEG, labels out of range, a string that is not a
SequenceExample) stop the reader with an error naming the file and the record index; with
dataset_configs.skip_bad_records they are dropped, counted and reported instead, up to a cap:
the training stream stops once more than max_bad_fraction (default 0.1) of the records it read
were bad, counted from MIN_BAD_RECORDS (10) bad records on (1.0 or None: no such check), or
more than max_bad_records (default None: no limit) in all, or when a whole epoch held no good
record. Grayscale, RGBA (PNG) and frames of different sizes within a video are converted (RGB,
the first frame's size).

Never a hang: a split whose files hold no record (a TFRecord without records is a 0-byte file)
is named before its stream is built, and a training epoch that yields no record at all stops
the stream instead of spinning over empty epochs. Such stream errors are raised inside tf.data;
`reader_error` turns what `next(iterator)` raises into one clean ValueError (and names the file
and record of a truncated or corrupt shard, which TF's own message does not).
"""

import math
import re
import sys
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf

from vidtx.data import augment, dmvr

AUTOTUNE = tf.data.AUTOTUNE
# The reader's functions branch on tensors with tf.cond, never with Python control flow, so they
# need no AutoGraph; its conversion of the nested closures below fails with a warning per function.
_no_autograph = tf.autograph.experimental.do_not_convert

SAMPLINGS = ("stride", "timesformer", "segment")
EVAL_SAMPLINGS = SAMPLINGS + ("whole_video",)
HOST_FIELDS = ("ok", "error", "source", "video_id", "epoch", "index", "skipped")

# With skip_bad_records, the fraction cap applies from this many bad records on, so that one
# bad record among the first few read does not stop a run.
MIN_BAD_RECORDS = 10
DEFAULT_MAX_BAD_FRACTION = 0.1

# dataset_configs.normalization presets: per-channel (mean, std) for pixels in [0, 1].
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
  "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1]: ViT / ViViT (zero_centering=True).
  "timesformer": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),  # TimeSformer, X-ViT.
  "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
  "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # [0, 1] (zero_centering=False).
}

# dataset_configs.augmentation_params: scenic's names, vidtx's defaults (all off but the crop).
AUGMENTATION_DEFAULTS = dict(
  do_jitter_scale=False,
  scale_min_factor=0.9,
  scale_max_factor=1.33,
  prob_scale_jitter=1.0,
  do_color_augment=False,
  prob_color_augment=0.8,
  prob_color_drop=0.0,
  do_rand_augment=False,
  rand_augment_num_layers=2,
  rand_augment_magnitude=15.0,
  random_erasing_probability=0.0,
)


def _three_numbers(
  dataset_configs: ml_collections.ConfigDict, field: str, positive: bool
) -> tuple[float, float, float]:
  value = dataset_configs.get(field)
  expected = "3 positive numbers" if positive else "3 finite numbers"
  try:
    numbers = () if isinstance(value, str) else tuple(float(x) for x in value)
  except (TypeError, ValueError):
    numbers = ()
  if (
    len(numbers) != 3
    or not all(math.isfinite(x) for x in numbers)
    or (positive and min(numbers) <= 0)
  ):
    raise ValueError(
      f"dataset_configs.{field}={value!r}: expected {expected} (per channel, for pixels in [0, 1])."
    )
  return numbers[0], numbers[1], numbers[2]


def normalisation(
  dataset_configs: ml_collections.ConfigDict,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
  """Per-channel (mean, std) of the reader: input = (pixel / 255 - mean) / std.

  Explicit dataset_configs.mean and std (both) win; else the preset dataset_configs.normalization
  (a key of NORMALIZATIONS); else the legacy zero_centering (default True: 'vit', [-1, 1]; False:
  'none', [0, 1]). Raises ValueError naming the field when a value is invalid.
  """
  dc = dataset_configs
  mean, std = dc.get("mean"), dc.get("std")
  if mean is not None or std is not None:
    if mean is None or std is None:
      given, missing = ("mean", "std") if std is None else ("std", "mean")
      raise ValueError(
        f"dataset_configs.{given} is set but dataset_configs.{missing} is not; "
        "set both (or neither, to use dataset_configs.normalization)."
      )
    return _three_numbers(dc, "mean", positive=False), _three_numbers(dc, "std", positive=True)
  name = dc.get("normalization")
  if name is not None:
    if name not in NORMALIZATIONS:
      raise ValueError(
        f"dataset_configs.normalization={name!r}: expected one of {sorted(NORMALIZATIONS)}."
      )
    return NORMALIZATIONS[name]
  return NORMALIZATIONS["vit" if bool(dc.get("zero_centering", True)) else "none"]


def augmentation_params(dataset_configs: ml_collections.ConfigDict) -> dict[str, Any]:
  """dataset_configs.augmentation_params over AUGMENTATION_DEFAULTS, checked."""
  given = dict(dataset_configs.get("augmentation_params") or {})
  unknown = sorted(set(given) - set(AUGMENTATION_DEFAULTS))
  if unknown:
    raise ValueError(
      f"dataset_configs.augmentation_params has unknown fields {unknown}; "
      f"expected some of {sorted(AUGMENTATION_DEFAULTS)}."
    )
  params = {**AUGMENTATION_DEFAULTS, **given}
  for field in (
    "prob_scale_jitter",
    "prob_color_augment",
    "prob_color_drop",
    "random_erasing_probability",
  ):
    if not 0.0 <= float(params[field]) <= 1.0:
      raise ValueError(
        f"dataset_configs.augmentation_params.{field}={params[field]}: expected "
        "a probability in [0, 1]."
      )
  if not 0 < float(params["scale_min_factor"]) <= float(params["scale_max_factor"]):
    raise ValueError(
      "dataset_configs.augmentation_params: expected 0 < scale_min_factor <= "
      f"scale_max_factor, got {params['scale_min_factor']} and {params['scale_max_factor']}."
    )
  if int(params["rand_augment_num_layers"]) < 0 or float(params["rand_augment_magnitude"]) < 0:
    raise ValueError(
      "dataset_configs.augmentation_params: rand_augment_num_layers and "
      "rand_augment_magnitude must be >= 0."
    )
  return params


def class_splits(dataset_configs: ml_collections.ConfigDict) -> tuple[int, ...]:
  """dataset_configs.class_splits (e.g. (300, 97): EPIC nouns then verbs), or () when unset."""
  splits = tuple(int(x) for x in (dataset_configs.get("class_splits") or ()))
  return splits


def validate_dataset_configs(dataset_configs: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field when a reader field is missing or inconsistent."""
  dc = dataset_configs
  for field in (
    "base_dir",
    "tables",
    "num_classes",
    "num_frames",
    "stride",
    "min_resize",
    "crop_size",
  ):
    if dc.get(field) is None:
      raise ValueError(f"dataset_configs.{field} must be set.")
  for field in ("num_classes", "num_frames", "stride", "min_resize", "crop_size"):
    if int(dc[field]) < 1:
      raise ValueError(f"dataset_configs.{field} must be >= 1, got {dc[field]}.")
  for field in ("min_resize", "eval_min_resize"):
    if dc.get(field) is not None and dc.crop_size > dc[field]:
      raise ValueError(
        f"dataset_configs.crop_size={dc.crop_size} is larger than the resized "
        f"short side {field}={dc[field]}; expected crop_size <= {field}."
      )
  if int(dc.get("num_test_clips", 1)) < 1:
    raise ValueError(f"dataset_configs.num_test_clips must be >= 1, got {dc.num_test_clips}.")
  train_sampling = dc.get("train_sampling", "stride")
  if train_sampling not in SAMPLINGS:
    raise ValueError(
      f"dataset_configs.train_sampling={train_sampling!r}: expected one of {list(SAMPLINGS)}."
    )
  eval_sampling = dc.get("eval_sampling", "stride")
  if eval_sampling not in EVAL_SAMPLINGS:
    raise ValueError(
      f"dataset_configs.eval_sampling={eval_sampling!r}: expected one of {list(EVAL_SAMPLINGS)}."
    )
  if eval_sampling == "whole_video" and train_sampling == "segment":
    raise ValueError(
      "dataset_configs.eval_sampling='whole_video' cuts videos into clips of the "
      "training geometry, which train_sampling='segment' does not have; use "
      "'stride' or 'timesformer'."
    )
  for field in ("sampling_rate", "target_fps", "frame_rate"):
    if dc.get(field) is not None and not float(dc[field]) > 0:
      raise ValueError(f"dataset_configs.{field} must be > 0, got {dc[field]}.")
  splits = class_splits(dc)
  if splits:
    if dc.get("multi_label", False):
      raise ValueError(
        "dataset_configs.class_splits and multi_label are exclusive: class splits "
        "hold one label per split (e.g. EPIC noun and verb)."
      )
    if min(splits) < 1 or sum(splits) != int(dc.num_classes):
      raise ValueError(
        f"dataset_configs.class_splits={list(splits)} must be positive and sum to "
        f"num_classes={dc.num_classes}."
      )
    names = dc.get("split_names")
    if names is not None and len(names) != len(splits):
      raise ValueError(
        f"dataset_configs.split_names={list(names)} needs one name per class split ({len(splits)})."
      )
  pairs = dc.get("flip_label_pairs") or ()
  for pair in pairs:
    if len(pair) != 2 or not all(0 <= int(c) < int(dc.num_classes) for c in pair):
      raise ValueError(
        f"dataset_configs.flip_label_pairs entry {pair!r}: expected a pair of "
        f"class indices in [0, {dc.num_classes})."
      )
  fraction = dc.get("max_bad_fraction", DEFAULT_MAX_BAD_FRACTION)
  if fraction is not None and not 0.0 <= float(fraction) <= 1.0:
    raise ValueError(
      f"dataset_configs.max_bad_fraction={fraction}: expected a fraction in "
      "[0, 1] (1.0 or None: no fraction cap)."
    )
  cap = dc.get("max_bad_records")
  if cap is not None and (isinstance(cap, bool) or not float(cap).is_integer() or cap < 0):
    raise ValueError(
      f"dataset_configs.max_bad_records={cap}: expected an integer >= 0 (None: no limit)."
    )
  augmentation_params(dc)
  normalisation(dc)


def split_names(dataset_configs: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The names of the class splits ('noun', 'verb' for EPIC), default split_0, split_1, ..."""
  splits = class_splits(dataset_configs)
  names = dataset_configs.get("split_names")
  return tuple(names) if names else tuple(f"split_{i}" for i in range(len(splits)))


def _check_split(dataset_configs: ml_collections.ConfigDict, split: str, batch_size: int) -> None:
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if split not in dataset_configs.tables:
    raise ValueError(
      f"Split {split!r} is not in dataset_configs.tables (known: {sorted(dataset_configs.tables)})."
    )


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


def _window(dc: ml_collections.ConfigDict, frame_rate: tf.Tensor) -> tf.Tensor:
  """TimeSformer's clip window in stored frames: num_frames * sampling_rate frames at target_fps,
  scaled by the stored frame rate (the record's own, else dataset_configs.frame_rate)."""
  target_fps = float(dc.get("target_fps", 30.0))
  default_rate = float(dc.get("frame_rate", target_fps))
  rate = tf.where(frame_rate > 0, tf.cast(frame_rate, tf.float32), default_rate)
  return float(int(dc.num_frames) * float(dc.get("sampling_rate", 32))) * rate / target_fps


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
  dc: ml_collections.ConfigDict, video_length: tf.Tensor, frame_rate: tf.Tensor, seed: tf.Tensor
) -> tf.Tensor:
  """(num_frames,) int32 frame indices of a random training clip (train_sampling)."""
  sampling = dc.get("train_sampling", "stride")
  num_frames = int(dc.num_frames)
  if sampling == "stride":
    return random_clip_indices(video_length, num_frames, int(dc.stride), seed)
  if sampling == "timesformer":
    window = _window(dc, frame_rate)
    max_start = tf.maximum(tf.cast(video_length, tf.float32) - window, 0.0)
    start = tf.random.stateless_uniform([1], seed) * max_start
    return _window_indices(start, window, num_frames, video_length)[0]
  positions = tf.random.stateless_uniform([1, num_frames], seed)  # 'segment'
  return _segment_indices(positions, num_frames, video_length)[0]


def eval_clip_indices_for(
  dc: ml_collections.ConfigDict, video_length: tf.Tensor, frame_rate: tf.Tensor | float = 0.0
) -> tf.Tensor:
  """(C, num_frames) int32 frame indices of a video's evaluation clips (eval_sampling).

  'stride' / 'timesformer' / 'segment': C = num_test_clips, the middle clip or evenly spaced
  ones (segments: the middle of each segment, or positions (k + 0.5) / C within them).
  'whole_video': C = ceil(length / clip span) consecutive clips of the training geometry, the
  last one clamped to the final frame.
  """
  sampling = dc.get("eval_sampling", "stride")
  num_frames, num_clips = int(dc.num_frames), int(dc.get("num_test_clips", 1))
  video_length = tf.cast(video_length, tf.int32)
  frame_rate = tf.cast(frame_rate, tf.float32)
  if sampling == "stride":
    return eval_clip_indices(video_length, num_frames, int(dc.stride), num_clips)
  if sampling == "segment":
    positions = (tf.range(num_clips, dtype=tf.float32)[:, None] + 0.5) / num_clips  # (C, 1)
    return _segment_indices(tf.tile(positions, [1, num_frames]), num_frames, video_length)
  length = tf.cast(video_length, tf.float32)
  if dc.get("train_sampling", "stride") == "timesformer" or sampling == "timesformer":
    window = _window(dc, frame_rate)
    if sampling == "timesformer":
      starts = _spaced_offsets(tf.maximum(length - window, 0.0), num_clips)
    else:
      count = tf.maximum(tf.math.ceil(length / window), 1.0)
      starts = tf.range(count) * window
    return _window_indices(starts, window, num_frames, video_length)
  # 'whole_video' with stride clips: consecutive clips of num_frames * stride frames.
  span = num_frames * int(dc.stride)
  count = tf.maximum((video_length + span - 1) // span, 1)
  indices = tf.range(count)[:, None] * span + tf.range(num_frames)[None, :] * int(dc.stride)
  return tf.minimum(indices, video_length - 1)


# ---------------------------------------------------------------------------------------------
# Records, checks and decoding.
# ---------------------------------------------------------------------------------------------


def _frame_shape(encoded: tf.Tensor) -> tf.Tensor:
  """(2,) int32 height and width of one encoded frame (JPEG header only; other formats decode)."""
  return tf.cond(
    tf.io.is_jpeg(encoded),
    lambda: tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int32),
    lambda: tf.shape(tf.io.decode_image(encoded, channels=3, expand_animations=False))[:2],
  )


def decode_frames(encoded: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
  """Decodes only the selected frames (each distinct one once): uint8 indices.shape + (H, W, 3).

  JPEG or PNG; grayscale and RGBA become RGB. A frame whose size differs from the first selected
  frame's (a resolution change mid-video) is resized to it, so a clip is always one array.
  """
  flat = tf.reshape(indices, [-1])
  unique, position = tf.unique(flat)
  selected = tf.gather(encoded, unique)
  size = _frame_shape(selected[0])

  def decode(frame):
    image = tf.io.decode_image(frame, channels=3, expand_animations=False)
    return tf.cond(
      tf.reduce_all(tf.shape(image)[:2] == size),
      lambda: image,
      lambda: tf.cast(tf.round(tf.clip_by_value(tf.image.resize(image, size), 0, 255)), tf.uint8),
    )

  decoded = tf.map_fn(
    decode, selected, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8)
  )
  frames = tf.gather(decoded, position)  # (N, H, W, 3) with N = indices.size
  return tf.reshape(frames, tf.concat([tf.shape(indices), tf.shape(frames)[1:]], axis=0))


def _normalise(frames: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """float32 (..., 3) pixels in [0, 255] -> (pixel / 255 - mean) / std per channel.

  With mean = std = 0.5 this is bit-identical to the former pixel / 255 * 2 - 1 (subtracting 0.5
  and dividing by 0.5 round exactly as doubling and subtracting 1 do), and with mean 0, std 1 to
  pixel / 255.
  """
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)
  return (frames / 255.0 - mean) / std


def _label_spec(dc: ml_collections.ConfigDict) -> tf.TensorSpec:
  if class_splits(dc) or dc.get("multi_label", False):
    return tf.TensorSpec([int(dc.num_classes)], tf.float32)
  return tf.TensorSpec([], tf.int32)


def _labels(dc: ml_collections.ConfigDict, raw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """The training/eval label of a video and an error message ('' when the labels are valid).

  Single-label: exactly one index, int32. class_splits: one index per split, in the split's
  range of the global index space (EPIC: [noun, num_nouns + verb]), multi-hot float32 (K,).
  multi_label: at least one index, multi-hot. Indices are taken after subtracting label_offset.
  """
  num_classes = int(dc.num_classes)
  offset = int(dc.get("label_offset", 0) or 0)
  labels = tf.cast(raw, tf.int32) - offset
  shown = tf.strings.format("{}", labels, summarize=8)
  splits = class_splits(dc)
  multi_hot = bool(splits) or bool(dc.get("multi_label", False))
  checks = [
    (tf.size(labels) == 0, tf.constant(f"no label (context {dmvr.LABEL_INDEX_KEY!r})")),
    (
      tf.reduce_any((labels < 0) | (labels >= num_classes)),
      tf.strings.join(
        [
          f"label index out of range: expected values in [0, {num_classes})"
          f" after subtracting label_offset={offset}, got ",
          shown,
        ]
      ),
    ),
  ]
  if splits:
    lows = np.cumsum((0,) + splits[:-1])
    highs = np.cumsum(splits)
    count_ok = tf.size(labels) == len(splits)
    padded = tf.pad(labels, [[0, tf.maximum(len(splits) - tf.size(labels), 0)]])[: len(splits)]
    in_split = tf.reduce_all((padded >= lows) & (padded < highs))
    ranges = ", ".join(f"[{lo}, {hi})" for lo, hi in zip(lows, highs, strict=True))
    checks.append(
      (
        ~(count_ok & in_split),
        tf.strings.join(
          [
            f"expected one label per class split, in {ranges} (class_splits={list(splits)}), got ",
            shown,
          ]
        ),
      )
    )
  elif not multi_hot:
    checks.append(
      (
        tf.size(labels) != 1,
        tf.strings.join(
          [
            "expected exactly one label index (single-label classification; set multi_label or "
            "class_splits for several), got ",
            shown,
          ]
        ),
      )
    )
  error = tf.constant("")
  for bad, message in reversed(checks):  # The first failing check names the problem.
    error = tf.where(bad, message, error)
  if multi_hot:
    valid = tf.boolean_mask(labels, (labels >= 0) & (labels < num_classes))
    value = tf.minimum(tf.reduce_sum(tf.one_hot(valid, num_classes), axis=0), 1.0)  # (K,)
  else:
    value = tf.cond(tf.size(labels) > 0, lambda: labels[0], lambda: 0)
  return value, error


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(
      f"process_index={process_index} must be in [0, process_count={process_count})."
    )


def _share_files(
  dc: ml_collections.ConfigDict, split: str, process_index: int, process_count: int
) -> tuple[list[str], bool]:
  """(the files this process reads, whether processes read different files) of a DMVR split."""
  files = dmvr.expand_table(dc.base_dir, dc.tables[split])
  shard_files = len(files) >= process_count
  return (files[process_index::process_count] if shard_files else files), shard_files


def _share_text(process_index: int, process_count: int, shard_files: bool) -> str:
  if process_count == 1:
    return "one process reads them all"
  if shard_files:
    return f"process {process_index} of {process_count}'s share of the split's files"
  return (
    f"every process reads them all and keeps one record in {process_count}; this is "
    f"process {process_index}"
  )


def _files_text(files: Sequence[str], limit: int = 3) -> str:
  shown = ", ".join(files[:limit])
  return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def check_split_has_records(
  dataset_configs: ml_collections.ConfigDict,
  split: str,
  *,
  process_index: int = 0,
  process_count: int = 1,
  whole_split: bool = False,
) -> None:
  """Raises ValueError naming the split, base_dir and files when this process's share of a DMVR
  split's files (with `whole_split`, all of them) holds no record: every file is shorter than
  one record (a TFRecord without records is a 0-byte file). Stats files only up to the first
  one that can hold a record, so a healthy split costs one stat. TFDS splits are checked by
  their reader (tfds_data.records) from the split sizes.
  """
  dc = dataset_configs
  _check_process(process_index, process_count)
  if _is_tfds(dc):
    return
  if whole_split:
    files = dmvr.expand_table(dc.base_dir, dc.tables[split])
    share = "the whole split"
  else:
    files, shard_files = _share_files(dc, split, process_index, process_count)
    share = _share_text(process_index, process_count, shard_files)
  sizes = []
  for name in files:
    size = tf.io.gfile.stat(name).length
    if size >= dmvr.MIN_RECORD_BYTES:
      return
    sizes.append(size)
  expected = (dc.get("examples_per_subset") or {}).get(split)
  said = f"; examples_per_subset.{split} says {expected}" if expected is not None else ""
  raise ValueError(
    f"Split {split!r} holds no record: its {len(files)} file(s) ({share}) have "
    f"{sum(sizes)} bytes in all, and a TFRecord file with a record has at least "
    f"{dmvr.MIN_RECORD_BYTES}{said}: "
    f"{_files_text(files)} (base_dir={dc.base_dir!r}, "
    f"config.dataset_configs.tables.{split}={dc.tables[split]!r}). Write the split again (e.g. "
    f"python -m vidtx.data.make_shards) or point config.dataset_configs.tables.{split} at files "
    "that hold its records."
  )


def _dmvr_records(
  dc: ml_collections.ConfigDict,
  split: str,
  *,
  process_index: int,
  process_count: int,
  shuffle_seed: tf.Tensor | None,
) -> tf.data.Dataset:
  """{'serialized', 'source'} of this process's share of a DMVR split.

  Files are split across processes when there are at least as many files as processes;
  otherwise every process reads all files in the same order and keeps every
  `process_count`-th record. `shuffle_seed` ((2,) int64) permutes the file order.
  """
  files, shard_files = _share_files(dc, split, process_index, process_count)
  files = tf.constant(files)
  if shuffle_seed is not None:
    files = tf.random.experimental.stateless_shuffle(files, seed=shuffle_seed)

  def read(file):
    records = tf.data.TFRecordDataset(file).enumerate()
    return records.map(
      lambda i, record: {
        "serialized": record,
        "source": tf.strings.join(
          [f"split={split}, file=", file, ", record ", tf.strings.as_string(i)]
        ),
      }
    )

  ds = tf.data.Dataset.from_tensor_slices(files).interleave(
    read,
    cycle_length=min(int(files.shape[0]), 16),
    block_length=1,
    num_parallel_calls=AUTOTUNE,
    deterministic=True,
  )
  if not shard_files:
    # The same order on every process -> disjoint shares.
    ds = ds.shard(process_count, process_index)
  return ds


def _is_tfds(dc: ml_collections.ConfigDict) -> bool:
  return (dc.get("dataset_name") or "").startswith("tfds:")


def _records(
  dc: ml_collections.ConfigDict,
  split: str,
  *,
  process_index: int,
  process_count: int,
  shuffle_seed: tf.Tensor | None,
) -> tf.data.Dataset:
  """This process's share of `split`, one dict per video, from the configured source."""
  _check_process(process_index, process_count)
  if _is_tfds(dc):
    from vidtx.data import tfds_data  # TFDS only when asked for: its import is slow.

    # TFDS reads in its own order (the shuffle buffer shuffles): it takes no tensor seed.
    return tfds_data.records(
      dc.dataset_name[len("tfds:") :],
      dc,
      dc.tables[split],
      process_index=process_index,
      process_count=process_count,
      shuffle_seed=None,
    )
  return _dmvr_records(
    dc, split, process_index=process_index, process_count=process_count, shuffle_seed=shuffle_seed
  )


def _video(raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """A source's element as {'jpegs', 'labels', 'video_id', 'frame_rate'} (DMVR parsed here)."""
  if "serialized" in raw:
    return dmvr.parse_sequence_example(raw["serialized"])
  return {k: raw[k] for k in ("jpegs", "labels", "video_id", "frame_rate")}


def _protected_map(
  ds: tf.data.Dataset, fn: Callable[..., Any], fallback: Callable[..., Any]
) -> tf.data.Dataset:
  """ds.map(fn), except that an element whose fn fails (a corrupt JPEG, a string that is not a
  SequenceExample) becomes fallback(element) instead of ending the stream.

  Each element runs in a one-element dataset that drops its own error; parallel interleave keeps
  the decoding as parallel as a map, and the order deterministic.
  """
  fn, fallback = _no_autograph(fn), _no_autograph(fallback)

  @_no_autograph
  def attempt(*element):
    tried = tf.data.Dataset.from_tensors(element).map(fn).ignore_errors()
    return tried.concatenate(tf.data.Dataset.from_tensors(fallback(*element))).take(1)

  return ds.interleave(attempt, block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)


_UNREADABLE = (
  "could not be read: the record is not a SequenceExample, or a frame is not a "
  "decodable image (corrupt JPEG)"
)


# ---------------------------------------------------------------------------------------------
# Training stream.
# ---------------------------------------------------------------------------------------------


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


def _flip_table(dc: ml_collections.ConfigDict) -> tf.Tensor | None:
  """(K,) class permutation of a horizontal flip (flip_label_pairs swapped), or None."""
  pairs = dc.get("flip_label_pairs") or ()
  if not pairs:
    return None
  table = np.arange(int(dc.num_classes))
  for a, b in pairs:
    table[int(a)], table[int(b)] = int(b), int(a)
  return tf.constant(table, tf.int32)


def _grayscale(frames: tf.Tensor, probability: float, seed: tf.Tensor) -> tf.Tensor:
  """With `probability`, the whole clip in grey (scenic's colour drop), kept as 3 channels."""
  grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(frames))
  return tf.where(tf.random.stateless_uniform([], seed) < probability, grey, frames)


def _train_clip(
  dc: ml_collections.ConfigDict, video: dict[str, tf.Tensor], label: tf.Tensor, seeds: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
  """Samples, decodes and augments one training clip: float32 (T, crop, crop, 3), its label."""
  aug = augmentation_params(dc)
  num_frames, crop = int(dc.num_frames), int(dc.crop_size)
  indices = train_clip_indices(dc, tf.shape(video["jpegs"])[0], video["frame_rate"], seeds[0])
  frames = decode_frames(video["jpegs"], indices)  # uint8 (T, H, W, 3)
  jitter = bool(aug["do_jitter_scale"])
  frames = augment.scale_jitter_crop(
    frames,
    min_resize=int(dc.min_resize),
    crop_size=crop,
    min_scale=float(aug["scale_min_factor"]) if jitter else 1.0,
    max_scale=float(aug["scale_max_factor"]) if jitter else 1.0,
    probability=float(aug["prob_scale_jitter"]) if jitter else 1.0,
    seed=seeds[1],
  )
  if dc.get("random_flip", False):
    frames, flipped = augment.horizontal_flip(frames, probability=0.5, seed=seeds[2])
    table = _flip_table(dc)
    if table is not None:
      # Direction-dependent classes ("pushing left to right") swap with their mirror image.
      swapped = tf.gather(label, table) if label.shape.rank else tf.gather(table, label)
      label = tf.where(flipped, swapped, label)
  if aug["do_color_augment"]:
    frames = augment.color_jitter(
      frames, probability=float(aug["prob_color_augment"]), seed=seeds[3]
    )
    if float(aug["prob_color_drop"]) > 0:
      frames = _grayscale(frames, float(aug["prob_color_drop"]), seeds[4])
  if aug["do_rand_augment"]:
    frames = augment.rand_augment(
      frames,
      num_layers=int(aug["rand_augment_num_layers"]),
      magnitude=float(aug["rand_augment_magnitude"]),
      seed=seeds[5],
    )
  frames = _normalise(frames, *normalisation(dc))
  if float(aug["random_erasing_probability"]) > 0:
    frames = augment.random_erasing(
      frames, probability=float(aug["random_erasing_probability"]), seed=seeds[6]
    )
  return tf.ensure_shape(frames, [num_frames, crop, crop, 3]), label


def build_train_dataset(
  dataset_configs: ml_collections.ConfigDict,
  *,
  batch_size: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  start_position: tuple[int, int] = (0, 0),
) -> tf.data.Dataset:
  """Infinite, shuffled training batches of this process, deterministic for `seed`.

  Epoch e reads this process's share in an order drawn from (seed, process, e): files permuted,
  then a shuffle buffer of dataset_configs.shuffle_buffer_size records. `start_position`
  (epoch, index), as `next_position` reports it after a batch, starts the stream there: a resumed
  run continues the stream without repeating or skipping an example.
  """
  dc = dataset_configs
  validate_dataset_configs(dc)
  _check_split(dc, "train", batch_size)
  num_frames, crop = int(dc.num_frames), int(dc.crop_size)
  start_epoch, start_index = (int(x) for x in start_position)
  if start_epoch < 0 or start_index < 0:
    raise ValueError(f"start_position={start_position} must be >= (0, 0).")
  buffer_size = int(dc.get("shuffle_buffer_size", 256))
  skip_bad = bool(dc.get("skip_bad_records", False))
  base_seed = tf.constant([int(seed), process_index], tf.int64)
  label_spec = _label_spec(dc)

  shares = dict(process_index=process_index, process_count=process_count)
  # An empty share would make the infinite epoch loop below spin without end: name it now.
  check_split_has_records(dc, "train", **shares)
  tfds_share = _records(dc, "train", **shares, shuffle_seed=None) if _is_tfds(dc) else None
  empty_epoch = _empty_epoch_message(dc, "train", process_index, process_count)

  def epoch_records(epoch):
    epoch_seed = tf.random.experimental.stateless_fold_in(base_seed, epoch)
    ds = tfds_share or _records(dc, "train", **shares, shuffle_seed=epoch_seed)
    # Dataset.shuffle takes one int64: draw it from the whole (2,) seed (fold_in's first
    # element alone does not depend on the epoch).
    shuffle_seed = tf.random.stateless_uniform(
      [], epoch_seed, minval=None, maxval=None, dtype=tf.int64
    )
    ds = ds.shuffle(buffer_size, seed=shuffle_seed, reshuffle_each_iteration=False)
    # Before the resumed epoch's skip, which may leave nothing of an epoch that had records.
    ds = _fail_when_empty(
      ds, tf.strings.join([empty_epoch[0], tf.strings.as_string(epoch), empty_epoch[1]])
    )
    ds = ds.enumerate()
    # Before parsing: the records of a resumed epoch that were already used are never decoded.
    ds = ds.skip(tf.where(epoch == start_epoch, tf.constant(start_index, tf.int64), 0))
    return ds.map(lambda index, raw: (epoch, index, raw))

  def process(epoch, index, raw):
    video = _video(raw)
    label, error = _labels(dc, video["labels"])
    error = tf.where(
      tf.size(video["jpegs"]) == 0,
      f"video has no frames (empty feature list {dmvr.IMAGE_KEY!r})",
      error,
    )
    element_seed = tf.random.experimental.stateless_fold_in(
      tf.random.experimental.stateless_fold_in(base_seed, epoch), index
    )
    # Independent streams for the clip, crop, flip, colour, colour drop, RandAugment, erasing.
    seeds = tf.random.experimental.stateless_split(element_seed, 7)
    frames, label = tf.cond(
      error == "",
      lambda: _train_clip(dc, video, label, seeds),
      lambda: (tf.zeros([num_frames, crop, crop, 3]), label),
    )
    return {
      "inputs": frames,
      "label": label,
      "epoch": epoch,
      "index": index,
      "ok": error == "",
      "error": error,
      "source": raw["source"],
      "video_id": video["video_id"],
    }

  def unreadable(epoch, index, raw):
    return {
      "inputs": tf.zeros([num_frames, crop, crop, 3]),
      "label": tf.zeros(label_spec.shape, label_spec.dtype),
      "epoch": epoch,
      "index": index,
      "ok": tf.constant(False),
      "error": tf.constant(_UNREADABLE),
      "source": raw["source"],
      "video_id": tf.constant(""),
    }

  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_records)
  ds = _protected_map(ds, process, unreadable)
  if skip_bad:
    count_skipped, initial = _skip_counter(
      dc, "train", process_index, process_count, start_position=(start_epoch, start_index)
    )
    ds = ds.scan(initial, count_skipped).filter(lambda el: el["ok"])
  else:
    # Bad records reach the host, which stops with their file and record index.
    ds = ds.map(lambda el: {**el, "skipped": tf.constant(0, tf.int64)})
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.prefetch(AUTOTUNE).with_options(_options())


# In-graph errors carry their message between these marks, for `reader_error` to find it in
# TF's text (which adds the op, the function and a stack).
_MARK = "@vidtx@"


def _empty_epoch_message(
  dc: ml_collections.ConfigDict, split: str, process_index: int, process_count: int
) -> tuple[str, str]:
  """The message of an epoch without a record, in two parts around the epoch number."""
  if _is_tfds(dc):
    where = (
      f"{dc.dataset_name} split {dc.tables[split]!r} (process {process_index} of "
      f"{process_count}'s share)"
    )
  else:
    files, shard_files = _share_files(dc, split, process_index, process_count)
    where = (
      f"its {len(files)} file(s) ({_share_text(process_index, process_count, shard_files)})"
      f": {_files_text(files)} (base_dir={dc.base_dir!r})"
    )
  return (
    f"{_MARK}Split {split!r} yielded no record in epoch ",
    f": {where}. Check config.dataset_configs.tables.{split}; with several processes, "
    f"every process needs at least one record.{_MARK}",
  )


def _fail_when_empty(ds: tf.data.Dataset, message: tf.Tensor) -> tf.data.Dataset:
  """`ds`, failing in-graph (InvalidArgumentError with `message`) when it ends without an
  element: an end marker follows the last element, and the marker at position 0 means none."""
  end = tf.nest.map_structure(
    lambda spec: tf.zeros([0 if d is None else d for d in spec.shape], spec.dtype), ds.element_spec
  )
  marked = ds.map(lambda raw: (raw, tf.constant(False))).concatenate(
    tf.data.Dataset.from_tensors((end, tf.constant(True)))
  )

  def keep(position, element):
    check = tf.debugging.Assert(~(element[1] & (position == 0)), [message])
    with tf.control_dependencies([check]):
      return tf.logical_not(element[1])

  return marked.enumerate().filter(keep).map(lambda position, element: element[0])


def _skip_counter(
  dc: ml_collections.ConfigDict,
  split: str,
  process_index: int,
  process_count: int,
  start_position: tuple[int, int],
) -> tuple[Callable[..., Any], dict[str, tf.Tensor]]:
  """(scan function, initial state) that counts and reports the bad records the stream drops
  and stops it in-graph (InvalidArgumentError) when there are too many (the module docstring)."""
  fraction = dc.get("max_bad_fraction", DEFAULT_MAX_BAD_FRACTION)
  fraction = None if fraction is None or float(fraction) >= 1.0 else float(fraction)
  cap = dc.get("max_bad_records")
  cap = None if cap is None else int(cap)
  start_epoch, start_index = start_position
  who = f"process {process_index} of {process_count}"
  zero = tf.constant(0, tf.int64)
  initial = {
    "since_good": zero,
    "read": zero,
    "bad": zero,
    "epoch": tf.constant(-1, tf.int64),
    "epoch_read": zero,
    "epoch_good": zero,
    "source": tf.constant(""),
    "error": tf.constant(""),
  }

  def count_skipped(state, element):
    ok = element["ok"]
    new_epoch = element["epoch"] != state["epoch"]
    # The epoch that just ended was read from its start (a resumed one may not have been) and
    # gave no good record: skipping can never produce a batch from this data.
    barren = (
      new_epoch
      & (state["epoch"] >= 0)
      & (state["epoch_good"] == 0)
      & ((state["epoch"] != start_epoch) | (start_index == 0))
    )
    read, bad = state["read"] + 1, state["bad"] + tf.cast(~ok, tf.int64)
    too_many_fraction = tf.constant(False)
    if fraction is not None:
      too_many_fraction = (
        ~ok
        & (bad >= MIN_BAD_RECORDS)
        & (tf.cast(bad, tf.float64) > fraction * tf.cast(read, tf.float64))
      )
    too_many = tf.constant(False) if cap is None else ~ok & (bad > cap)

    def message():
      last = [element["source"], " - ", element["error"]]
      counts = [
        tf.strings.as_string(bad),
        " of the ",
        tf.strings.as_string(read),
        f" records read so far ({who}) were bad",
      ]
      fraction_text = tf.strings.join(
        [f"{_MARK}Split {split!r}: too many bad records with skip_bad_records=True: "]
        + counts
        + [f", more than max_bad_fraction={fraction} of them. The last one: "]
        + last
        + [
          ". Fix or remove the bad records, or raise config.dataset_configs.max_bad_fraction "
          f"(1.0 turns this check off).{_MARK}"
        ]
      )
      cap_text = tf.strings.join(
        [
          f"{_MARK}Split {split!r}: more than max_bad_records={cap} bad records with "
          "skip_bad_records=True: "
        ]
        + counts
        + [". The last one: "]
        + last
        + [
          ". Fix or remove the bad records, or raise config.dataset_configs.max_bad_records "
          f"(None: no limit).{_MARK}"
        ]
      )
      barren_text = tf.strings.join(
        [
          f"{_MARK}Split {split!r}: epoch ",
          tf.strings.as_string(state["epoch"]),
          " held no good record: all ",
          tf.strings.as_string(state["epoch_read"]),
          f" records of this process's share ({who}) were bad, so skip_bad_records=True "
          "can never fill a batch. The last one: ",
          state["source"],
          " - ",
          state["error"],
          f". Fix or remove the bad records.{_MARK}",
        ]
      )
      return tf.where(barren, barren_text, tf.where(too_many_fraction, fraction_text, cap_text))

    def report():
      tf.print(
        "vidtx: skipping a bad record:",
        element["source"],
        "-",
        element["error"],
        output_stream=sys.stderr,
      )
      return state["since_good"] + 1

    failed = barren | too_many_fraction | too_many
    check = tf.debugging.Assert(~failed, [tf.cond(failed, message, lambda: tf.constant(""))])
    # After the check: the record that stops the stream is in its message, not printed; and
    # prefetching threads that try the next records after the error print nothing either.
    with tf.control_dependencies([check]):
      # Bad records dropped since the previous good one ride on the next good one to the host.
      since_good = tf.cond(ok, lambda: zero, report)
    good = tf.cast(ok, tf.int64)
    new_state = {
      "since_good": since_good,
      "read": read,
      "bad": bad,
      "epoch": element["epoch"],
      "epoch_read": tf.where(new_epoch, tf.constant(1, tf.int64), state["epoch_read"] + 1),
      "epoch_good": tf.where(new_epoch, good, state["epoch_good"] + good),
      "source": tf.where(ok, state["source"], element["source"]),
      "error": tf.where(ok, state["error"], element["error"]),
    }
    with tf.control_dependencies([check]):
      new_state = tf.nest.map_structure(tf.identity, new_state)
      return new_state, {**element, "skipped": tf.identity(tf.where(ok, state["since_good"], 0))}

  return _no_autograph(count_skipped), initial


def split_host_fields(
  batch: dict[str, np.ndarray], *, skip_bad_records: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(device batch, host fields) of a numpy batch of either reader.

  A bad record (ok False on a real, unpadded element) raises ValueError naming its file and
  record index, unless `skip_bad_records`: then its batch_mask is set to 0 (evaluation; the
  training stream drops bad records itself). host['bad'] marks them.
  """
  host = {k: batch[k] for k in HOST_FIELDS if k in batch}
  device = {k: v for k, v in batch.items() if k not in HOST_FIELDS}
  if "ok" in host:
    real = device["batch_mask"] > 0 if "batch_mask" in device else np.ones_like(host["ok"])
    host["bad"] = real & ~host["ok"]
    bad = np.flatnonzero(host["bad"])
    if len(bad) and not skip_bad_records:
      i = bad[0]
      raise ValueError(
        f"Bad record in {as_text(host['source'][i])}: {as_text(host['error'][i])}. Fix or remove "
        "it, or set config.dataset_configs.skip_bad_records=True to skip such records (they "
        "are counted and reported)."
      )
    if len(bad) and "batch_mask" in device:
      device["batch_mask"] = np.where(host["bad"], 0, device["batch_mask"]).astype(np.float32)
  return device, host


def reader_error(
  error: tf.errors.OpError,
  dataset_configs: ml_collections.ConfigDict,
  split: str,
  *,
  process_index: int = 0,
  process_count: int = 1,
) -> ValueError:
  """One clean ValueError for what `next(iterator)` of either reader raised.

  The reader's own in-graph errors (an epoch without a record, too many bad records skipped)
  come back as their message alone, without TF's op names and stack. A tf.errors.DataLossError
  (a truncated or corrupt TFRecord: TF names neither the file nor the record) makes it walk the
  record headers of this process's share of `split` (dmvr.check_tfrecord) and name the damaged
  file(s), record index and byte. Anything else becomes "Reading split ... failed:" and TF's
  first line. Raise the result `from error`, which keeps TF's full text in the chain.
  """
  text = str(getattr(error, "message", "") or error)
  marked = re.search(f"{_MARK}(.*?){_MARK}", text, re.S)
  if marked:
    return ValueError(_unescape(marked.group(1)))
  tf_text = _tf_first_line(text)
  if isinstance(error, tf.errors.DataLossError) and not _is_tfds(dataset_configs):
    try:
      return ValueError(
        _damage_report(dataset_configs, split, tf_text, process_index, process_count)
      )
    except Exception as walk_error:  # The reader's error matters more than the walk's.
      tf_text += f" (the files could not be checked: {walk_error})"
  return ValueError(f"Reading split {split!r} failed: {tf_text} ({type(error).__name__}).")


def _unescape(text: str) -> str:
  """A string of a failed tf.debugging.Assert as it was: TF C-escapes quotes, backslashes and
  control characters (and may write other bytes in octal or hex)."""
  out, position = bytearray(), 0
  for escape in re.finditer(r"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)", text, re.S):
    out += text[position : escape.start()].encode()
    code = escape.group(1)
    if code[0] == "x":
      out.append(int(code[1:], 16))
    elif code[0] in "01234567":
      out.append(int(code, 8) & 0xFF)
    else:
      out += {"n": b"\n", "t": b"\t", "r": b"\r"}.get(code, code.encode())
    position = escape.end()
  out += text[position:].encode()
  return out.decode("utf-8", "replace")


def _tf_first_line(text: str) -> str:
  """TF's message without its function name prefix, op suffix and stack."""
  line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", text.strip()).split("\n")[0]
  return re.sub(r"\s*\[Op:[^\]]*\].*$", "", line).strip()


def _damage_report(
  dc: ml_collections.ConfigDict, split: str, tf_text: str, process_index: int, process_count: int
) -> str:
  """The message of a DataLossError: the damaged files of this process's share, found by
  walking their record headers (only now, after the error: a walk reads 12 bytes a record)."""
  files, shard_files = _share_files(dc, split, process_index, process_count)
  share = f"{len(files)} file(s), {_share_text(process_index, process_count, shard_files)}"
  fix = (
    f"Re-create the shard (e.g. python -m vidtx.data.make_shards) or leave it out of "
    f"config.dataset_configs.tables.{split} (TF said: {tf_text})."
  )
  with futures.ThreadPoolExecutor(16) as pool:  # Remote files: one round trip per header.
    checks = list(pool.map(dmvr.check_tfrecord, files))
  damaged = [check for check in checks if not check.ok]
  if damaged:
    described = "; ".join(
      f"{c.path}: {c.problem} ({c.records} complete record(s) before it)" for c in damaged[:3]
    )
    more = f"; and {len(damaged) - 3} more" if len(damaged) > 3 else ""
    return (
      f"Split {split!r} has {len(damaged)} damaged TFRecord file(s) among {share}: "
      f"{described}{more}. {fix}"
    )
  corrupted = re.search(r"corrupted record at (\d+)", tf_text)
  if corrupted:  # A data checksum: find the files with a record's data at that byte.
    offset = int(corrupted.group(1))
    with futures.ThreadPoolExecutor(16) as pool:
      found = list(pool.map(lambda f: dmvr.record_with_data_at(f, offset), files))
    candidates = [f"record {i} of {f}" for f, i in zip(files, found, strict=True) if i is not None]
    if candidates:
      which = (
        candidates[0] if len(candidates) == 1 else "one of " + _files_text(candidates, limit=5)
      )
      return (
        f"Split {split!r}: the data of {which} (from byte {offset}) fails its "
        f"checksum: the shard is corrupt. {fix}"
      )
  return (
    f"Split {split!r}: {tf_text}, but no file of this process's share ({share}: "
    f"{_files_text(files)}) is truncated or has a corrupt record header; a file may have "
    f"changed while it was read. Check the files of config.dataset_configs.tables.{split} "
    f"(base_dir={dc.base_dir!r})."
  )


def next_position(host: dict[str, np.ndarray]) -> tuple[int, int]:
  """The training stream's (epoch, index) after this batch: where a resumed stream starts."""
  return int(host["epoch"][-1]), int(host["index"][-1]) + 1


def as_text(value: Any) -> str:
  """A string field of a numpy batch (bytes) as text."""
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------------------------
# Views.
# ---------------------------------------------------------------------------------------------


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


def eval_views(frames: tf.Tensor, dataset_configs: ml_collections.ConfigDict) -> tf.Tensor:
  """The evaluation views of one video: uint8 clips -> normalised float32 (V, T, crop, crop, 3).

  `frames`: the decoded clips (C, num_frames, H, W, 3), uint8, as selected by
  `eval_clip_indices_for` (C = num_test_clips, or any count for whole videos). Every frame's
  short side is resized to eval_min_resize (default min_resize; bilinear), then each clip is
  centre-cropped, or cropped three times (start, centre and end of the long side) when
  do_three_spatial_crops; V = C * (3 or 1),
  clip-major. Pixels are normalised with `normalisation(dataset_configs)`. The TFRecord reader
  and vidtx.predict both call this.
  """
  dc = dataset_configs
  num_frames, crop = int(dc["num_frames"]), int(dc["crop_size"])
  three_crops = bool(dc.get("do_three_spatial_crops", False))
  mean, std = normalisation(dc)
  frames = tf.ensure_shape(
    tf.convert_to_tensor(frames, tf.uint8), [None, num_frames, None, None, 3]
  )
  num_clips = frames.shape[0]  # Static when the caller's is; else inferred below.
  num_views = None if num_clips is None else num_clips * (3 if three_crops else 1)
  shape = tf.shape(frames)
  # (C, T, H, W, 3) -> (C*T, H, W, 3): resize every frame at once.
  # eval_min_resize: TimeSformer trains on short sides of 256-320 but evaluates at 224.
  short_side = int(dc.get("eval_min_resize") or dc["min_resize"])
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
  return _normalise(views, mean, std)


# ---------------------------------------------------------------------------------------------
# Evaluation: views of every video, one pass.
# ---------------------------------------------------------------------------------------------


def build_eval_dataset(
  dataset_configs: ml_collections.ConfigDict,
  split: str,
  *,
  batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
) -> tf.data.Dataset:
  """One pass over this process's share of `split`; the last batch is padded (batch_mask 0).

  Each element holds V views of one video; 'whole_video' sampling splits a long video into
  several elements with the same video_index (process_index + process_count * local index).
  """
  dc = dataset_configs
  validate_dataset_configs(dc)
  _check_split(dc, split, batch_size)
  num_frames, crop = int(dc.num_frames), int(dc.crop_size)
  clips_per_element = int(dc.get("num_test_clips", 1))
  crops = 3 if dc.get("do_three_spatial_crops", False) else 1
  num_views = clips_per_element * crops
  label_spec = _label_spec(dc)
  # The whole split: a process whose share is empty while others have videos is fine (the
  # evaluator feeds it masked batches), a split without a video is not.
  check_split_has_records(
    dc, split, process_index=process_index, process_count=process_count, whole_split=True
  )
  ds = _records(
    dc, split, process_index=process_index, process_count=process_count, shuffle_seed=None
  ).enumerate()

  def plan(local_index, raw):
    video = _video(raw)
    label, error = _labels(dc, video["labels"])
    length = tf.shape(video["jpegs"])[0]
    error = tf.where(
      length == 0, f"video has no frames (empty feature list {dmvr.IMAGE_KEY!r})", error
    )
    indices = tf.cond(
      error == "",
      lambda: eval_clip_indices_for(dc, length, video["frame_rate"]),
      lambda: tf.zeros([1, num_frames], tf.int32),
    )
    return {
      "jpegs": video["jpegs"],
      "indices": indices,
      "label": label,
      "error": error,
      "source": raw["source"],
      "video_id": video["video_id"],
      "video_index": process_index + process_count * local_index,
    }

  def unreadable_plan(local_index, raw):
    return {
      "jpegs": tf.constant([""]),
      "indices": tf.zeros([1, num_frames], tf.int32),
      "label": tf.zeros(label_spec.shape, label_spec.dtype),
      "error": tf.constant(_UNREADABLE),
      "source": raw["source"],
      "video_id": tf.constant(""),
      "video_index": process_index + process_count * local_index,
    }

  def chunk(video, k):
    num_clips = tf.shape(video["indices"])[0]
    # Clips [k * C, (k + 1) * C) of the video; the last chunk repeats its last clip, masked.
    wanted = tf.cast(k, tf.int32) * clips_per_element + tf.range(clips_per_element)
    clip_mask = tf.cast(wanted < num_clips, tf.float32)
    indices = tf.gather(video["indices"], tf.minimum(wanted, num_clips - 1))  # (C, T)
    views = tf.cond(
      video["error"] == "",
      lambda: eval_views(decode_frames(video["jpegs"], indices), dc),
      lambda: tf.zeros([num_views, num_frames, crop, crop, 3]),
    )
    return _eval_element(video, views, tf.repeat(clip_mask, crops), video["error"])

  def unreadable_chunk(video, k):
    del k
    return _eval_element(
      video,
      tf.zeros([num_views, num_frames, crop, crop, 3]),
      tf.zeros([num_views]),
      tf.constant(_UNREADABLE),
    )

  @_no_autograph
  def chunks(video):
    num_chunks = tf.maximum(
      (tf.shape(video["indices"])[0] + clips_per_element - 1) // clips_per_element, 1
    )
    ks = tf.data.Dataset.range(tf.cast(num_chunks, tf.int64)).map(
      _no_autograph(lambda k: (video, k))
    )
    return _protected_map(ks, chunk, unreadable_chunk)

  ds = _protected_map(ds, plan, unreadable_plan)
  ds = ds.interleave(chunks, block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size).map(lambda batch: _pad_batch(batch, batch_size))
  return ds.prefetch(AUTOTUNE).with_options(_options())


def _eval_element(
  video: dict[str, tf.Tensor], views: tf.Tensor, view_mask: tf.Tensor, error: tf.Tensor
) -> dict[str, tf.Tensor]:
  return {
    "inputs": views,
    "view_mask": view_mask,
    "label": video["label"],
    "video_index": video["video_index"],
    "batch_mask": tf.constant(1.0),
    "ok": error == "",
    "error": error,
    "source": video["source"],
    "video_id": video["video_id"],
  }


def _pad_batch(batch: dict[str, tf.Tensor], batch_size: int) -> dict[str, tf.Tensor]:
  """The last batch is short: every field padded with zeros / '' / False up to batch_size."""
  missing = batch_size - tf.shape(batch["batch_mask"])[0]
  padded = {}
  for key, value in batch.items():
    filler = tf.zeros(tf.concat([[missing], tf.shape(value)[1:]], 0), value.dtype)
    padded[key] = tf.ensure_shape(tf.concat([value, filler], 0), [batch_size] + value.shape[1:])
  return padded
