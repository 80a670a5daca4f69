"""tf.data reader for DMVR TFRecords: parse -> sample clip(s) -> decode -> augment -> batch.

Training batches: {'inputs': float32 (B, T, H, W, 3), 'label': int32 (B,)}, infinite, shuffled.
Evaluation batches: {'inputs': float32 (B, V, T, H, W, 3), 'label': int32 (B,),
'batch_mask': float32 (B,)}, exactly one pass; the last batch is padded with batch_mask 0.
V = num_test_clips * (3 if do_three_spatial_crops else 1), clip-major (clip 0: crops 0, 1, 2, ...).
`eval_views` builds one video's views from its decoded clips; `python -m vidtx.predict` uses it too,
so a video file is prepared exactly as the evaluation prepares the same frames.

Pixels are normalised per channel, input = (pixel / 255 - mean) / std: `normalisation` resolves
mean and std from dataset_configs (explicit mean/std, else a preset in `NORMALIZATIONS`, else the
legacy zero_centering).

Training is deterministic for a seed, even with parallel map: the file order and the shuffle
buffer are seeded, the order of elements is fixed (options.deterministic), and every random choice
for an element (clip offset, crop, flip) comes from stateless ops seeded by (seed, process, element
index).
"""

import math
from collections.abc import Sequence

import ml_collections
import tensorflow as tf

from vidtx.data import dmvr

AUTOTUNE = tf.data.AUTOTUNE

# dataset_configs.normalization presets: per-channel (mean, std) for pixels in [0, 1].
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1]: ViT / ViViT (zero_centering=True).
    "timesformer": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),  # TimeSformer, X-ViT.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # [0, 1] (zero_centering=False).
}


def _three_numbers(dataset_configs: ml_collections.ConfigDict, field: str,
                   positive: bool) -> tuple[float, float, float]:
  value = dataset_configs.get(field)
  expected = "3 positive numbers" if positive else "3 finite numbers"
  try:
    numbers = () if isinstance(value, str) else tuple(float(x) for x in value)
  except (TypeError, ValueError):
    numbers = ()
  if (len(numbers) != 3 or not all(math.isfinite(x) for x in numbers)
      or (positive and min(numbers) <= 0)):
    raise ValueError(f"dataset_configs.{field}={value!r}: expected {expected} (per channel, for "
                     "pixels in [0, 1]).")
  return numbers[0], numbers[1], numbers[2]


def normalisation(dataset_configs: ml_collections.ConfigDict
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
      raise ValueError(f"dataset_configs.{given} is set but dataset_configs.{missing} is not; "
                       "set both (or neither, to use dataset_configs.normalization).")
    return _three_numbers(dc, "mean", positive=False), _three_numbers(dc, "std", positive=True)
  name = dc.get("normalization")
  if name is not None:
    if name not in NORMALIZATIONS:
      raise ValueError(f"dataset_configs.normalization={name!r}: expected one of "
                       f"{sorted(NORMALIZATIONS)}.")
    return NORMALIZATIONS[name]
  return NORMALIZATIONS["vit" if bool(dc.get("zero_centering", True)) else "none"]


def validate_dataset_configs(dataset_configs: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field when a reader field is missing or inconsistent."""
  dc = dataset_configs
  for field in ("base_dir", "tables", "num_classes", "num_frames", "stride", "min_resize",
                "crop_size"):
    if dc.get(field) is None:
      raise ValueError(f"dataset_configs.{field} must be set.")
  for field in ("num_classes", "num_frames", "stride", "min_resize", "crop_size"):
    if int(dc[field]) < 1:
      raise ValueError(f"dataset_configs.{field} must be >= 1, got {dc[field]}.")
  if dc.crop_size > dc.min_resize:
    raise ValueError(f"dataset_configs.crop_size={dc.crop_size} is larger than the resized short "
                     f"side min_resize={dc.min_resize}; expected crop_size <= min_resize.")
  if int(dc.get("num_test_clips", 1)) < 1:
    raise ValueError(f"dataset_configs.num_test_clips must be >= 1, got {dc.num_test_clips}.")
  normalisation(dc)


# ---------------------------------------------------------------------------------------------
# Which frames: clip indices.
# ---------------------------------------------------------------------------------------------


def _clip_span(num_frames: int, stride: int) -> int:
  return (num_frames - 1) * stride + 1


def random_clip_indices(video_length: tf.Tensor, num_frames: int, stride: int,
                        seed: tf.Tensor) -> tf.Tensor:
  """(num_frames,) int32 frame indices at `stride` from a random offset (stateless, seeded).

  The offset is uniform in [0, video_length - span]; a video shorter than the clip's span starts
  at 0 and is looped (indices wrap around).
  """
  video_length = tf.cast(video_length, tf.int32)
  max_offset = tf.maximum(video_length - _clip_span(num_frames, stride), 0)
  offset = tf.random.stateless_uniform([], seed, minval=0, maxval=max_offset + 1, dtype=tf.int32)
  return (offset + tf.range(num_frames) * stride) % video_length


def eval_clip_indices(video_length: tf.Tensor, num_frames: int, stride: int,
                      num_clips: int) -> tf.Tensor:
  """(num_clips, num_frames) int32 frame indices of the evaluation clips.

  One clip: the middle one, offset floor((video_length - span) / 2). Several: offsets
  floor(linspace(0, video_length - span, num_clips)), so the first clip starts at the first frame
  and the last ends at the last frame. Videos shorter than the span start at 0 and loop.
  """
  video_length = tf.cast(video_length, tf.int32)
  max_offset = tf.maximum(video_length - _clip_span(num_frames, stride), 0)
  if num_clips == 1:
    offsets = tf.reshape(max_offset // 2, [1])
  else:
    # Integer arithmetic (exact): i * max_offset // (num_clips - 1) == floor(linspace(...)[i]).
    offsets = tf.range(num_clips) * max_offset // (num_clips - 1)
  indices = offsets[:, None] + tf.range(num_frames)[None, :] * stride  # (clips, frames)
  return indices % video_length


def _decode_frames(jpegs: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
  """Decodes only the selected frames (each distinct one once): uint8 indices.shape + (H, W, 3)."""
  flat = tf.reshape(indices, [-1])
  unique, position = tf.unique(flat)
  decoded = tf.map_fn(
      lambda jpeg: tf.io.decode_jpeg(jpeg, channels=3),
      tf.gather(jpegs, unique),
      fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  frames = tf.gather(decoded, position)  # (N, H, W, 3) with N = indices.size
  return tf.reshape(frames, tf.concat([tf.shape(indices), tf.shape(frames)[1:]], axis=0))


def _resize_short_side(frames: tf.Tensor, min_resize: int) -> tf.Tensor:
  """float32 (N, H, W, 3) with the short side resized to `min_resize` (bilinear)."""
  height, width = tf.shape(frames)[1], tf.shape(frames)[2]
  short = tf.minimum(height, width)

  def resize():
    scale = min_resize / tf.cast(short, tf.float64)
    new_height = tf.maximum(tf.cast(tf.round(tf.cast(height, tf.float64) * scale), tf.int32),
                            min_resize)
    new_width = tf.maximum(tf.cast(tf.round(tf.cast(width, tf.float64) * scale), tf.int32),
                           min_resize)
    return tf.image.resize(frames, tf.stack([new_height, new_width]), method="bilinear")

  return tf.cond(short == min_resize, lambda: tf.cast(frames, tf.float32), resize)


def _normalise(frames: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """float32 (..., 3) pixels in [0, 255] -> (pixel / 255 - mean) / std per channel.

  With mean = std = 0.5 this is bit-identical to the former pixel / 255 * 2 - 1 (subtracting 0.5
  and dividing by 0.5 round exactly as doubling and subtracting 1 do), and with mean 0, std 1 to
  pixel / 255.
  """
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)
  return (frames / 255.0 - mean) / std


def _check_split(dataset_configs: ml_collections.ConfigDict, split: str, batch_size: int) -> None:
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if split not in dataset_configs.tables:
    raise ValueError(f"Split {split!r} is not in dataset_configs.tables "
                     f"(known: {sorted(dataset_configs.tables)}).")


def _records(dataset_configs: ml_collections.ConfigDict, split: str, *, process_index: int,
             process_count: int, seed: int | None) -> tf.data.Dataset:
  """(file name, serialised example) pairs of this process's share of the split.

  Files are split across processes when there are at least as many files as processes;
  otherwise every process reads all files in the same order and keeps every
  `process_count`-th record. `seed` shuffles the file order each epoch (training).
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, process_count="
                     f"{process_count}).")
  files = dmvr.expand_table(dataset_configs.base_dir, dataset_configs.tables[split])
  shard_files = len(files) >= process_count
  if shard_files:
    files = files[process_index::process_count]
  ds = tf.data.Dataset.from_tensor_slices(files)
  if seed is not None:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  ds = ds.interleave(
      lambda f: tf.data.TFRecordDataset(f).map(lambda record: (f, record)),
      cycle_length=min(len(files), 16), block_length=1, num_parallel_calls=AUTOTUNE,
      deterministic=True)
  if not shard_files:
    # Same seed on every process -> the same record order -> disjoint shares.
    ds = ds.shard(process_count, process_index)
  return ds


def _parse(dataset_configs: ml_collections.ConfigDict, split: str, file: tf.Tensor,
           serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """JPEG strings (T,) and the scalar int32 label, checked against [0, num_classes)."""
  parsed = dmvr.parse_example(
      serialized, num_classes=int(dataset_configs.num_classes),
      label_offset=int(dataset_configs.get("label_offset", 0) or 0),
      source=tf.strings.join([f"split={split}, file=", file]))
  label = parsed["label"]
  check = tf.debugging.Assert(
      tf.size(label) == 1,
      [f"split={split}: this reader takes exactly one label index per video (single-label "
       "classification); got", label, "in file=", file])
  with tf.control_dependencies([check]):
    return parsed["frames"], tf.identity(label[0])


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


def build_train_dataset(dataset_configs: ml_collections.ConfigDict, *, batch_size: int, seed: int,
                        process_index: int = 0, process_count: int = 1,
                        skip_batches: int = 0) -> tf.data.Dataset:
  """Infinite, shuffled training batches of this process, deterministic for `seed`.

  `skip_batches` starts the stream that many batches in (a resumed run continues the same
  stream). Skipped records are read and shuffled but not decoded; the cost is reading
  skip_batches * batch_size records.
  """
  dc = dataset_configs
  validate_dataset_configs(dc)
  _check_split(dc, "train", batch_size)
  num_frames, stride, crop = int(dc.num_frames), int(dc.stride), int(dc.crop_size)
  mean, std = normalisation(dc)
  seed = int(seed)
  ds = _records(dc, "train", process_index=process_index, process_count=process_count, seed=seed)
  ds = ds.repeat()
  ds = ds.shuffle(int(dc.get("shuffle_buffer_size", 256)), seed=seed)
  ds = ds.enumerate()
  # Before the map: skipped elements are never decoded. Seeds follow the element index, so the
  # rest of the stream is unchanged.
  ds = ds.skip(int(skip_batches) * batch_size)
  base_seed = tf.constant([seed, process_index], tf.int64)

  def process(index, record):
    jpegs, label = _parse(dc, "train", *record)
    # Independent streams for the clip offset, the crop and the flip of this element.
    element_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    seeds = tf.random.experimental.stateless_split(element_seed, 4)
    indices = random_clip_indices(tf.shape(jpegs)[0], num_frames, stride, seeds[0])
    frames = _resize_short_side(_decode_frames(jpegs, indices), int(dc.min_resize))
    height, width = tf.shape(frames)[1], tf.shape(frames)[2]
    # One crop window for all frames of the clip.
    top = tf.random.stateless_uniform([], seeds[1], 0, height - crop + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[2], 0, width - crop + 1, dtype=tf.int32)
    frames = frames[:, top:top + crop, left:left + crop, :]
    if dc.get("random_flip", False):
      flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
      frames = tf.cond(flip, lambda: tf.reverse(frames, axis=[2]), lambda: frames)
    frames = tf.ensure_shape(frames, [num_frames, crop, crop, 3])
    return {"inputs": _normalise(frames, mean, std), "label": label}

  ds = ds.map(process, num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.prefetch(AUTOTUNE).with_options(_options())


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
    crops.append(frames[..., top:top + crop, left:left + crop, :])
  return tf.stack(crops)


def eval_views(frames: tf.Tensor, dataset_configs: ml_collections.ConfigDict) -> tf.Tensor:
  """The evaluation views of one video: uint8 clips -> normalised float32 (V, T, crop, crop, 3).

  `frames`: the decoded clips (num_test_clips, num_frames, H, W, 3), uint8, as selected by
  `eval_clip_indices`. Every frame's short side is resized to min_resize (bilinear), then each clip
  is centre-cropped, or cropped three times (start, centre and end of the long side) when
  do_three_spatial_crops; V = num_test_clips * (3 or 1), clip-major. Pixels are normalised with
  `normalisation(dataset_configs)`. The TFRecord reader and vidtx.predict both call this.
  """
  dc = dataset_configs
  num_frames, crop = int(dc["num_frames"]), int(dc["crop_size"])
  num_clips = int(dc.get("num_test_clips", 1))
  three_crops = bool(dc.get("do_three_spatial_crops", False))
  num_views = num_clips * (3 if three_crops else 1)
  mean, std = normalisation(dc)
  frames = tf.ensure_shape(tf.convert_to_tensor(frames, tf.uint8),
                           [num_clips, num_frames, None, None, 3])
  shape = tf.shape(frames)
  # (clips, T, H, W, 3) -> (clips*T, H, W, 3): resize every frame at once.
  frames = _resize_short_side(tf.reshape(frames, [-1, shape[2], shape[3], 3]),
                              int(dc["min_resize"]))
  # (clips*T, H', W', 3) -> (clips, T, H', W', 3)
  frames = tf.reshape(frames, tf.concat([[num_clips, num_frames], tf.shape(frames)[1:]], 0))
  if three_crops:
    views = _three_crops(frames, crop)  # (3, clips, T, crop, crop, 3)
    views = tf.transpose(views, [1, 0, 2, 3, 4, 5])  # -> (clips, 3, T, crop, crop, 3)
    views = tf.reshape(views, [num_views, num_frames, crop, crop, 3])  # -> (V, T, ...)
  else:
    top = (tf.shape(frames)[2] - crop) // 2
    left = (tf.shape(frames)[3] - crop) // 2
    views = frames[:, :, top:top + crop, left:left + crop, :]  # (V, T, crop, crop, 3)
  views = tf.ensure_shape(views, [num_views, num_frames, crop, crop, 3])
  return _normalise(views, mean, std)


def build_eval_dataset(dataset_configs: ml_collections.ConfigDict, split: str, *, batch_size: int,
                       process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """One pass over this process's share of `split`; the last batch is padded (batch_mask 0)."""
  dc = dataset_configs
  validate_dataset_configs(dc)
  _check_split(dc, split, batch_size)
  num_frames, stride = int(dc.num_frames), int(dc.stride)
  num_clips = int(dc.get("num_test_clips", 1))
  ds = _records(dc, split, process_index=process_index, process_count=process_count, seed=None)

  def process(file, serialized):
    jpegs, label = _parse(dc, split, file, serialized)
    indices = eval_clip_indices(tf.shape(jpegs)[0], num_frames, stride, num_clips)
    views = eval_views(_decode_frames(jpegs, indices), dc)  # (clips, T, H, W, 3) -> (V, ...)
    return {"inputs": views, "label": label, "batch_mask": tf.constant(1.0, tf.float32)}

  def pad_batch(batch):
    # The last batch is short: pad every field with zeros (batch_mask 0) up to batch_size.
    missing = batch_size - tf.shape(batch["label"])[0]
    padded = {}
    for key, value in batch.items():
      paddings = [[0, missing]] + [[0, 0]] * (len(value.shape) - 1)
      padded[key] = tf.ensure_shape(tf.pad(value, paddings), [batch_size] + value.shape[1:])
    return padded

  ds = ds.map(process, num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size).map(pad_batch)
  return ds.prefetch(AUTOTUNE).with_options(_options())
