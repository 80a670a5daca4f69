"""A split's records as videos: this process's share of a DMVR or TFDS split (and the check that
it holds a record), each record parsed, its labels checked, and its selected frames decoded."""

import atexit
import concurrent.futures
import gc
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from vidtx.data import dmvr, frame_table, shard_store
from vidtx.data.reader_config import DatasetConfig
from vidtx.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE
# The reader's functions branch on tensors with tf.cond, never with Python control flow, so they
# need no AutoGraph; its conversion of their nested closures fails with a warning per function.
no_autograph = tf.autograph.experimental.do_not_convert


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


# Clips of at most this many frames (static) decode frame by frame without a tf.map_fn loop.
_UNROLLED_FRAMES = 64
_JPEG_MAGIC = b"\xff\xd8\xff"  # What tf.io.is_jpeg checks: the first three bytes.


def stored_frame_size(encoded: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
  """(2,) int32 height and width of the first selected frame: the size a clip is decoded at
  (decode_frames resizes any frame of another size to it). JPEG: from the header alone."""
  return _frame_shape(encoded[tf.reshape(indices, [-1])[0]])


def _whole_pixels(start: tf.Tensor, extent: tf.Tensor, limit: tf.Tensor) -> tf.Tensor:
  """[start, end) of a fractional window rounded to whole pixels within [0, limit), at least one
  pixel: (2,) int32."""
  first = tf.clip_by_value(tf.cast(tf.round(start), tf.int32), 0, limit - 1)
  end = tf.clip_by_value(tf.cast(tf.round(start + extent), tf.int32), first + 1, limit)
  return tf.stack([first, end])


def _pixel_window(window: tf.Tensor, size: tf.Tensor, ratio: int) -> tf.Tensor:
  """[y, x, h, w] int32: `window` (stored pixels, fractional) in whole pixels of a frame of
  `size` decoded at 1 / ratio of its size (libjpeg's DCT scaling: ceil(size / ratio) pixels, pixel
  j covering stored pixels [ratio * j, ratio * (j + 1)))."""
  scaled = (size + ratio - 1) // ratio
  window = window / ratio
  rows = _whole_pixels(window[0], window[2], scaled[0])
  cols = _whole_pixels(window[1], window[3], scaled[1])
  return tf.stack([rows[0], cols[0], rows[1] - rows[0], cols[1] - cols[0]])


def _decode_window_crops(
  encoded: tf.Tensor,
  indices: tf.Tensor,
  window: tf.Tensor,
  output_size: tuple[int, int] | tf.Tensor,
  buffer_size: int = 0,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """decode_window's decoding: (crops, position, placed, size). crops: uint8 (U, h, w, 3), the
  window of each distinct selected frame, not resized; position: int32, where each of
  `indices` (flattened) is among them; size: (2,) int32 [h, w]. With buffer_size S > 0, a
  window that fits S x S is placed top-left in an S x S frame of zeros as each frame is decoded
  (one copy of the clip less than padding after): crops (U, S, S, 3) and `placed` True."""
  flat = tf.reshape(indices, [-1])
  count = flat.shape[0]
  if count is not None and count <= _UNROLLED_FRAMES:
    # A training clip: each frame decoded by its own op, no tf.map_fn loop (~50 us a frame);
    # a frame that repeats (a looped short video) is decoded twice.
    unique, position = flat, tf.range(count)
  else:
    unique, position = tf.unique(flat)
  selected = tf.gather(encoded, unique)
  size = _frame_shape(selected[0])
  window = tf.cast(window, tf.float64)
  out_h, out_w = output_size[0], output_size[1]

  def each_frame(fn, spec):
    """fn of every selected frame, stacked: unrolled for a clip of static size, else map_fn."""
    if unique.shape[0] is not None and unique.shape[0] <= _UNROLLED_FRAMES:
      return tf.stack([fn(selected[i]) for i in range(unique.shape[0])])
    return tf.map_fn(fn, selected, fn_output_signature=spec)

  def fitting(h, w):
    return tf.constant(buffer_size > 0) & (h <= buffer_size) & (w <= buffer_size)

  def place(crop, h, w):  # (..., h, w, 3) -> (..., S, S, 3): zeros below and right.
    rank = len(crop.shape)
    padding = [[0, 0]] * (rank - 3) + [[0, buffer_size - h], [0, buffer_size - w], [0, 0]]
    return tf.pad(crop, padding)

  def decode_cropped(ratio):
    y, x, h, w = tf.unstack(_pixel_window(window, size, ratio))
    # One more column each side where the frame has one: libjpeg's chroma upsampling then sees
    # the same neighbours as in a whole-frame decode, so the pixels are identical to it (at the
    # window's own edge columns they differ by up to ~10 levels without it).
    scaled_width = (size[1] + ratio - 1) // ratio
    first, end = tf.maximum(x - 1, 0), tf.minimum(x + w + 1, scaled_width)

    def frames(placed: bool):
      def one(frame):
        crop = tf.io.decode_and_crop_jpeg(
          frame, tf.stack([y, first, h, end - first]), 3, ratio=ratio
        )[:, x - first : x - first + w]
        return place(crop, h, w) if placed else crop

      side = buffer_size if placed else None
      signature = tf.TensorSpec([side, side, 3], tf.uint8)
      return each_frame(one, signature), tf.constant(placed)

    if buffer_size:
      crops, placed = tf.cond(fitting(h, w), lambda: frames(True), lambda: frames(False))
    else:
      crops, placed = frames(False)
    return crops, placed, tf.stack([h, w])

  def decode_whole():
    frames = decode_frames(selected, tf.range(tf.size(unique)))  # sizes made equal
    y, x, h, w = tf.unstack(_pixel_window(window, size, 1))
    crops = frames[:, y : y + h, x : x + w, :]
    fits = fitting(h, w)
    if buffer_size:
      crops = tf.cond(fits, lambda: place(crops, h, w), lambda: crops)
    return crops, fits, tf.stack([h, w])

  def same_size_jpegs():
    shapes = each_frame(
      lambda frame: tf.cast(tf.image.extract_jpeg_shape(frame)[:2], tf.int32),
      tf.TensorSpec([2], tf.int32),
    )
    return tf.reduce_all(shapes == size)

  all_jpeg = tf.reduce_all(tf.strings.substr(selected, 0, len(_JPEG_MAGIC)) == _JPEG_MAGIC)
  fast = tf.cond(all_jpeg, same_size_jpegs, lambda: tf.constant(False))
  twice = 2.0 * tf.cast(tf.stack([out_h, out_w]), tf.float64)
  half_size = (window[2] >= twice[0]) & (window[3] >= twice[1])
  crops, placed, crop_size = tf.cond(
    fast,
    lambda: tf.cond(half_size, lambda: decode_cropped(2), lambda: decode_cropped(1)),
    decode_whole,
  )
  return crops, position, placed, crop_size


def _resize_crops(crops: tf.Tensor, out_h, out_w) -> tf.Tensor:
  """uint8 (U, out_h, out_w, 3): `crops` resized (bilinear) and rounded; kept when already that
  size (a stored short side equal to the one asked for)."""

  def resize():
    # float32 first: TF's bilinear resize is about twice as fast from float32 as from uint8.
    resized = tf.image.resize(tf.cast(crops, tf.float32), [out_h, out_w], method="bilinear")
    # A bilinear resize of [0, 255] pixels stays in [0, 255]: rounding alone makes it uint8.
    return tf.cast(tf.round(resized), tf.uint8)

  same_size = (tf.shape(crops)[1] == out_h) & (tf.shape(crops)[2] == out_w)
  return tf.cond(same_size, lambda: crops, resize)


def decode_window(
  encoded: tf.Tensor,
  indices: tf.Tensor,
  window: tf.Tensor,
  output_size: tuple[int, int] | tf.Tensor,
) -> tf.Tensor:
  """Decodes only `window` of the selected frames, resized: uint8 indices.shape + (h, w, 3).

  `window`: float (4,) [top, left, height, width] in the stored frame's pixels (fractional, as
  augment.scale_jitter_window gives it); the frame's size is stored_frame_size(encoded,
  indices). `output_size`: (h, w), ints or int32 scalars. The window is rounded to whole pixels;
  each distinct selected frame is decoded once with tf.io.decode_and_crop_jpeg, at half size (DCT
  scaling, ratio=2) when the window is at least twice `output_size` on both sides; the windows
  are resized (bilinear, as augment.resize_short_side) to `output_size` and rounded. PNG and
  other formats, and videos whose selected frames differ in size, take decode_frames' path
  (whole frames) and are cropped after.
  Frames that are not selected are never decoded.
  """
  crops, position, _, _ = _decode_window_crops(encoded, indices, window, output_size)
  out_h, out_w = output_size[0], output_size[1]
  frames = tf.gather(_resize_crops(crops, out_h, out_w), position)  # (N, h, w, 3)
  return tf.reshape(frames, tf.concat([tf.shape(indices), tf.stack([out_h, out_w, 3])], axis=0))


def decode_window_in_buffer(
  encoded: tf.Tensor, indices: tf.Tensor, window: tf.Tensor, crop_size: int, buffer_size: int
) -> tuple[tf.Tensor, tf.Tensor]:
  """decode_window for the accelerator to resize: (uint8 indices.shape + (S, S, 3), int32 (2,)
  [h, w]). Each frame's window, decoded as decode_window decodes it for a crop_size output but
  not resized, lies top-left in an S x S buffer (S = buffer_size >= crop_size), zeros elsewhere;
  [h, w] is its size (vidtx.device_augment.resize_windows resizes it to crop_size). A window
  larger than S (frames stored larger than min_resize) is resized on the host to crop_size as
  decode_window does, and placed with [h, w] = [crop_size, crop_size].
  """
  crops, position, placed, size = _decode_window_crops(
    encoded, indices, window, (crop_size, crop_size), buffer_size
  )

  def resized():  # (U, h, w, 3) -> (U, crop, crop, 3) -> (U, S, S, 3)
    margin = buffer_size - crop_size
    crops_resized = _resize_crops(crops, crop_size, crop_size)
    return tf.pad(crops_resized, [[0, 0], [0, margin], [0, margin], [0, 0]]), tf.constant(
      [crop_size, crop_size], tf.int32
    )

  buffers, valid = tf.cond(placed, lambda: (crops, size), resized)
  # Every frame distinct (no loop in the clip): the buffers are already in the clip's order.
  distinct = tf.shape(buffers)[0] == tf.size(position)
  frames = tf.cond(distinct, lambda: buffers, lambda: tf.gather(buffers, position))
  shape = tf.concat([tf.shape(indices), [buffer_size, buffer_size, 3]], axis=0)
  return tf.reshape(frames, shape), valid


def label_spec(dc: DatasetConfig) -> tf.TensorSpec:
  """The spec of one video's label: int32 (), or float32 (K,) multi-hot."""
  if dc.multi_hot:
    return tf.TensorSpec([dc.num_classes], tf.float32)
  return tf.TensorSpec([], tf.int32)


def parse_labels(dc: DatasetConfig, raw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """The training/eval label of a video and an error message ('' when the labels are valid).

  Single-label: exactly one index, int32. class_splits: one index per split, in the split's
  range of the global index space (EPIC: [noun, num_nouns + verb]), multi-hot float32 (K,).
  multi_label: at least one index, multi-hot. Indices are taken after subtracting label_offset.
  """
  num_classes = dc.num_classes
  offset = dc.label_offset
  labels = tf.cast(raw, tf.int32) - offset
  shown = tf.strings.format("{}", labels, summarize=8)
  splits = dc.class_splits
  multi_hot = dc.multi_hot
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
    raise UserError(f"process_index={process_index} must be in [0, process_count={process_count}).")


# The files of each table, listed once per process (dmvr.expand_table: one listing per table)
# and reused for the run: the share, the checks and the error messages all ask for them.
# prepare_dataset lists afresh (refresh=True), so a run starts from what the directory holds.
_FILES: dict[tuple[str, str], list[str]] = {}


def split_files(dc: DatasetConfig, split: str, *, refresh: bool = False) -> list[str]:
  """All files of a DMVR split, listed once per process (see _FILES)."""
  table = dc.tables[split]
  key = (str(dc.base_dir), repr(table if isinstance(table, str) else list(table)))
  if refresh or key not in _FILES:
    _FILES[key] = dmvr.expand_table(dc.base_dir, table)
  return list(_FILES[key])


def share_files(
  dc: DatasetConfig, split: str, process_index: int, process_count: int
) -> tuple[list[str], bool]:
  """(the files this process reads, whether processes read different files) of a DMVR split."""
  files = split_files(dc, split)
  shard_files = len(files) >= process_count
  return (files[process_index::process_count] if shard_files else files), shard_files


def count_share_records(
  dc: DatasetConfig, split: str, *, process_index: int = 0, process_count: int = 1
) -> int:
  """How many records this process's share of `split` yields, without reading the videos.

  DMVR: the record headers of the share's files (dmvr.count_records: 12 bytes a record); with
  fewer files than processes, every process reads all files and keeps one record in
  process_count (_dmvr_records), so its count follows from the split's total. TFDS: the split's
  size from its metadata and tfds.even_splits' rule (the first N % P shares hold one more).
  """
  _check_process(process_index, process_count)
  if is_tfds(dc):
    from vidtx.data import tfds_data  # TFDS only when asked for: its import is slow.

    name = dc.dataset_name[len("tfds:") :]
    total = tfds_data.info(name, dc.tfds_options)["examples_per_subset"][dc.tables[split]]
    return total // process_count + int(process_index < total % process_count)
  files, shard_files = share_files(dc, split, process_index, process_count)
  if "://" in str(dc.base_dir):  # Remote files: one round trip per header, files in parallel.
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
      total = sum(pool.map(dmvr.count_records, files))
  else:
    total = sum(dmvr.count_records(name) for name in files)
  if shard_files:
    return total
  return len(range(process_index, total, process_count))


def share_text(process_index: int, process_count: int, shard_files: bool) -> str:
  """Which of a split's files this process reads, in words."""
  if process_count == 1:
    return "one process reads them all"
  if shard_files:
    return f"process {process_index} of {process_count}'s share of the split's files"
  return (
    f"every process reads them all and keeps one record in {process_count}; this is "
    f"process {process_index}"
  )


def files_text(files: Sequence[str], limit: int = 3) -> str:
  """The first `limit` files and how many more."""
  shown = ", ".join(files[:limit])
  return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def _size(name: str) -> int:
  """The file's bytes: a bucket's object through epath (shard_store: TensorFlow's GCS file
  system, or gcsfs, which reaches a GCS emulator)."""
  return shard_store.size(name) if "://" in name else tf.io.gfile.stat(name).length


def check_split_has_records(
  dataset_configs: DatasetConfig,
  split: str,
  *,
  process_index: int = 0,
  process_count: int = 1,
  whole_split: bool = False,
) -> None:
  """Raises ValueError naming the split, base_dir and files when this process's share of a DMVR
  split's files (with `whole_split`, all of them) holds no record: every file is shorter than
  one record (a TFRecord without records is a 0-byte file). Stats files only up to the first
  one that can hold a record, this process's own files first, so a healthy split costs one stat
  of a file the process reads anyway. TFDS splits are checked by their reader
  (tfds_data.records) from the split sizes.
  """
  dc = dataset_configs
  _check_process(process_index, process_count)
  if is_tfds(dc):
    return
  if whole_split:
    files = split_files(dc, split)
    share = "the whole split"
    # This process's own files first: a healthy split costs one stat of a file it reads.
    own = set(share_files(dc, split, process_index, process_count)[0])
    order = [name for name in files if name in own] + [name for name in files if name not in own]
  else:
    files, shard_files = share_files(dc, split, process_index, process_count)
    share = share_text(process_index, process_count, shard_files)
    order = files
  sizes = []
  for name in order:
    size = _size(name)
    if size >= dmvr.MIN_RECORD_BYTES:
      return
    sizes.append(size)
  expected = dc.examples_per_subset.get(split)
  said = f"; examples_per_subset.{split} says {expected}" if expected is not None else ""
  raise UserError(
    f"Split {split!r} holds no record: its {len(files)} file(s) ({share}) have "
    f"{sum(sizes)} bytes in all, and a TFRecord file with a record has at least "
    f"{dmvr.MIN_RECORD_BYTES}{said}: "
    f"{files_text(files)} (base_dir={dc.base_dir!r}, "
    f"config.dataset_configs.tables.{split}={dc.tables[split]!r}). Write the split again (e.g. "
    f"python -m vidtx.data.make_shards) or point config.dataset_configs.tables.{split} at files "
    "that hold its records."
  )


def empty_files_warning(dataset_configs: DatasetConfig, split: str) -> str | None:
  """A warning naming the files of a DMVR split that hold no record (0 bytes, or shorter than
  one record) while its other files do, or None. Such a split trains without complaint on the
  records of the others only: say so at start-up. (A split without any record is an error:
  check_split_has_records.) Stats every file, in parallel for a bucket: call it on one process."""
  dc = dataset_configs
  if is_tfds(dc):
    return None
  files = split_files(dc, split)
  if len(files) < 2:
    return None
  stat = _size
  if "://" in dc.base_dir:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
      sizes = list(pool.map(stat, files))
  else:
    sizes = [stat(name) for name in files]
  empty = [name for name, size in zip(files, sizes, strict=True) if size < dmvr.MIN_RECORD_BYTES]
  if not empty or len(empty) == len(files):
    return None
  expected = dc.examples_per_subset.get(split)
  said = f" (examples_per_subset.{split} says {expected})" if expected is not None else ""
  return (
    f"Warning: split {split!r}: {len(empty)} of its {len(files)} files hold no record "
    f"(0 bytes, or shorter than one record): {files_text(empty)}; only the other "
    f"{len(files) - len(empty)} file(s) are read{said}. Write the split again (e.g. python -m "
    f"vidtx.data.make_shards) if these files should hold videos "
    f"(config.dataset_configs.tables.{split}={dc.tables[split]!r})."
  )


def _dmvr_records(
  dc: DatasetConfig,
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
  files, shard_files = share_files(dc, split, process_index, process_count)
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


def frame_tables_missing(
  dc: DatasetConfig, split: str, *, process_index: int = 0, process_count: int = 1
) -> str | None:
  """Why this process's share of a DMVR split cannot be read through frame tables
  (vidtx.data.frame_table), in words, or None when every shard of it has a current table."""
  if is_tfds(dc):
    return "a TFDS split"
  files, _ = share_files(dc, split, process_index, process_count)
  reasons = frame_table.stale_reasons(files, dc.index_dir or None)  # a bucket's in parallel
  missing = [(f, r) for f, r in zip(files, reasons, strict=True) if r]
  if not missing:
    return None
  file, reason = missing[0]
  return f"{len(missing)} of its {len(files)} shards cannot be: {file}: {reason}"


def frame_tables_note(dc: DatasetConfig, split: str) -> str | None:
  """One line for a DMVR split read as whole records because a shard has no current frame table
  (the reader is right, just slower: it parses every frame of a record for the few a clip uses),
  with the command that writes the tables; None when the tables are there, or for TFDS."""
  if is_tfds(dc):
    return None
  reason = frame_tables_missing(dc, split, process_count=1)
  if reason is None:
    return None
  table = dc.tables[split]
  shards = os.path.join(dc.base_dir, table if isinstance(table, str) else table[0])
  index_dir = f" --index_dir={dc.index_dir}" if dc.index_dir else " [--index_dir=DIR]"
  return (
    f"Note: split {split!r} is read as whole records ({reason}); a clip reads only its frames "
    f"once the shards have frame tables: python -m vidtx.data.index_shards --shards={shards}"
    f"{index_dir} (then dataset_configs.index_dir=DIR if you gave one)."
  )


def _dmvr_pointers(
  dc: DatasetConfig,
  split: str,
  *,
  process_index: int,
  process_count: int,
  shuffle_seed: tf.Tensor | None,
) -> tf.data.Dataset:
  """{'file', 'record', 'source'} of this process's share of a DMVR split whose shards all have
  frame tables: _dmvr_records' stream in the same order, each record named, not read (parse_video
  reads its context, clip_jpegs its clip's frames)."""
  files, shard_files = share_files(dc, split, process_index, process_count)
  index_dir = dc.index_dir or None
  for file in files:
    read_through_tables(file, index_dir)
  counts = [len(table.records) for table in frame_table.open_tables(files, index_dir)]
  names = tf.constant(files)
  sizes = tf.constant(counts, tf.int64)
  order = tf.range(len(files), dtype=tf.int64)
  if shuffle_seed is not None:  # The permutation _dmvr_records draws for the names.
    order = tf.random.experimental.stateless_shuffle(order, seed=shuffle_seed)

  def records(position):
    file = names[position]
    return tf.data.Dataset.range(sizes[position]).map(
      lambda record: {
        "file": file,
        "record": record,
        "source": tf.strings.join(
          [f"split={split}, file=", file, ", record ", tf.strings.as_string(record)]
        ),
      }
    )

  ds = tf.data.Dataset.from_tensor_slices(order).interleave(
    records, cycle_length=min(len(files), 16), block_length=1
  )
  if not shard_files:
    ds = ds.shard(process_count, process_index)
  return ds


def _read_context(file: bytes, record: np.int64) -> tuple[bytes, np.int64]:
  table = frame_table.open_table(file.decode("utf-8"), _INDEX_DIRS.get(file.decode("utf-8")))
  head, count = table.context(int(record))
  return head, np.int64(count)


# Records whose contexts one call of read_contexts_ahead's map reads, all in flight at once.
CONTEXTS_AHEAD = 16
_NOT_READ = -2  # read_contexts_ahead's count of a context that failed: parse_video reads it again


def _read_contexts(files: np.ndarray, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(heads (K,) bytes, counts (K,) int64) of records `numbers` (K,) of `files` (K,), read in
  parallel; a record whose read fails gets count _NOT_READ (its error is raised again where
  parse_video reads it, inside protected_map, which turns it into an unreadable element)."""

  def read(pair):
    try:
      return _read_context(*pair)
    except Exception:  # noqa: BLE001 - raised again, for this record alone, by parse_video.
      return b"", np.int64(_NOT_READ)

  pairs = list(zip(files.tolist(), numbers.tolist(), strict=True))
  heads, counts = zip(*frame_table.in_parallel(read, pairs), strict=True) if pairs else ((), ())
  return np.array(heads, dtype=object).reshape(-1), np.array(counts, np.int64).reshape(-1)


# tf.data threads beyond one per core for a stream read through frame tables on a slow store:
# each clip's map waits for its frames (read in parallel: one round trip of the store), and with
# a thread per core only, the cores would idle meanwhile. A fast disk gets none: more threads than
# cores only add switches between them there.
READ_WAITING_THREADS = 6


def waiting_threads(ds: tf.data.Dataset, dc: DatasetConfig, split: str) -> int:
  """READ_WAITING_THREADS for a stream of (epoch, index, raw) of `split` read through frame
  tables from a slow store (frame_table.is_slow_store of its first shard), else 0."""
  if "record" not in ds.element_spec[2]:
    return 0
  slow = frame_table.is_slow_store(split_files(dc, split)[0], dc.index_dir or None)
  return READ_WAITING_THREADS if slow else 0


def read_contexts_ahead(ds: tf.data.Dataset) -> tf.data.Dataset:
  """`ds` of (epoch, index, raw) with each raw's record context read ahead ('head', 'count':
  what parse_video would read), CONTEXTS_AHEAD records at a time in parallel; `ds` itself when
  its records are not read through frame tables. tf.data's threads (one per core) each wait for
  their read: read one by one, a store with milliseconds of latency per read would keep about
  one read per core in flight."""
  if "record" not in ds.element_spec[2]:
    return ds

  @no_autograph
  def read(epoch, index, raw):  # (K,) each
    heads, counts = tf.numpy_function(
      _read_contexts, [raw["file"], raw["record"]], [tf.string, tf.int64], stateful=False
    )
    shape = raw["record"].shape  # (K,), K unknown: the last batch of a finite stream is short
    raw = {**raw, "head": tf.ensure_shape(heads, shape), "count": tf.ensure_shape(counts, shape)}
    return epoch, index, raw

  ds = ds.batch(CONTEXTS_AHEAD).map(read, num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.unbatch()


def _read_frames(file: bytes, record: np.int64, wanted: np.ndarray) -> np.ndarray:
  table = frame_table.open_table(file.decode("utf-8"), _INDEX_DIRS.get(file.decode("utf-8")))
  return np.array(table.frame_bytes(int(record), wanted), dtype=object)  # (N,) as `wanted`


def _release_iterators() -> None:
  """Frees every tf.data iterator's resource while the interpreter still runs (atexit).

  A stream that reads through frame tables calls Python (tf.numpy_function) from tf.data's
  threads. An iterator still alive at exit (a script's `it = iter(ds)`) is otherwise destroyed
  during interpreter finalization: its threads then wait forever for the GIL and the process
  hangs instead of exiting. Freed here, each iterator stops its threads normally; the Python
  objects go later without a resource to free."""
  from tensorflow.python.data.ops import iterator_ops  # noqa: PLC0415 - TF's own class.

  for obj in gc.get_objects():
    if isinstance(obj, iterator_ops.OwnedIterator):
      obj.__dict__.pop("_iterator_resource", None)
  gc.collect()


_AT_EXIT: list[bool] = []  # whether _release_iterators is registered


def _release_iterators_at_exit() -> None:
  if not _AT_EXIT:
    atexit.register(_release_iterators)
    _AT_EXIT.append(True)


# The index_dir of each shard read through its frame table (numpy_function takes tensors only).
_INDEX_DIRS: dict[str, str | None] = {}


def read_through_tables(file: str, index_dir: str | None) -> None:
  """Records that `file`'s frame table is under `index_dir` (None: beside it), for the reads of
  parse_video and clip_jpegs; every stream that names records of `file` calls it first."""
  _INDEX_DIRS[file] = index_dir


def is_tfds(dc: DatasetConfig) -> bool:
  return dc.is_tfds


def split_records(
  dc: DatasetConfig,
  split: str,
  *,
  process_index: int,
  process_count: int,
  shuffle_seed: tf.Tensor | None,
  by_frames: bool = False,
) -> tf.data.Dataset:
  """This process's share of `split`, one dict per video, from the configured source. With
  `by_frames` (every shard has a frame table: frame_tables_missing), records are named, not read:
  parse_video and clip_jpegs read what a clip uses."""
  _check_process(process_index, process_count)
  if is_tfds(dc):
    from vidtx.data import tfds_data  # TFDS only when asked for: its import is slow.

    # TFDS reads in its own order (the shuffle buffer shuffles): it takes no tensor seed.
    return tfds_data.records(
      dc.dataset_name[len("tfds:") :],
      dc.tfds_options,
      dc.tables[split],
      process_index=process_index,
      process_count=process_count,
      shuffle_seed=None,
    )
  read = _dmvr_pointers if by_frames else _dmvr_records
  return read(
    dc, split, process_index=process_index, process_count=process_count, shuffle_seed=shuffle_seed
  )


def parse_video(raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """A source's element as {'jpegs', 'labels', 'video_id', 'frame_rate', 'num_frames'} (DMVR
  parsed here). A record read through its frame table ('record' in raw) has its context parsed
  and 'jpegs' empty until clip_jpegs reads the frames a clip uses."""
  if "record" in raw:
    _release_iterators_at_exit()

    def read():
      head, count = tf.numpy_function(
        _read_context, [raw["file"], raw["record"]], [tf.string, tf.int64], stateful=False
      )
      return tf.ensure_shape(head, []), tf.ensure_shape(count, [])

    if "head" in raw:  # read ahead (read_contexts_ahead); again here only when that failed
      head, count = tf.cond(raw["count"] == _NOT_READ, read, lambda: (raw["head"], raw["count"]))
    else:
      head, count = read()
    video = dmvr.parse_sequence_example(tf.ensure_shape(head, []))
    whole = tf.ensure_shape(count, []) == frame_table.WHOLE  # parsed whole, frames and all
    video["num_frames"] = tf.where(whole, tf.size(video["jpegs"], tf.int64), count)
    video["whole"] = whole
    return video
  if "serialized" in raw:
    video = dmvr.parse_sequence_example(raw["serialized"])
  else:
    video = {k: raw[k] for k in ("jpegs", "labels", "video_id", "frame_rate")}
  video["num_frames"] = tf.size(video["jpegs"], tf.int64)
  return video


def clip_jpegs(
  raw: dict[str, tf.Tensor], video: dict[str, tf.Tensor], indices: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
  """(encoded frames, indices into them) of a clip whose frames are `indices` (any shape) of the
  video: the video's own frames and `indices` as they are, or, for a record read through its
  frame table, only the clip's frames (read now, in the order of `indices` flattened; a repeated
  frame is read twice) and positions into them, of `indices`' shape."""
  if "record" not in raw:
    return video["jpegs"], indices
  flat = tf.reshape(tf.cast(indices, tf.int64), [-1])

  def read():
    frames = tf.numpy_function(
      _read_frames, [raw["file"], raw["record"], flat], tf.string, stateful=False
    )
    return tf.ensure_shape(frames, flat.shape)

  jpegs = tf.cond(video["whole"], lambda: tf.gather(video["jpegs"], flat), read)
  return jpegs, tf.reshape(tf.range(tf.size(flat), dtype=indices.dtype), tf.shape(indices))


def protected_map(
  ds: tf.data.Dataset, fn: Callable[..., Any], fallback: Callable[..., Any]
) -> tf.data.Dataset:
  """ds.map(fn), except that an element whose fn fails (a corrupt JPEG, a string that is not a
  SequenceExample) becomes fallback(element) instead of ending the stream.

  Each element runs in a one-element dataset that drops its own error; parallel interleave keeps
  the decoding as parallel as a map, and the order deterministic. The fallback is a map of its
  own, run only for an element that failed (its zeros cost as much as a clip's copy).
  """
  fn, fallback = no_autograph(fn), no_autograph(fallback)

  @no_autograph
  def attempt(*element):
    one = tf.data.Dataset.from_tensors(element)
    return one.map(fn).ignore_errors().concatenate(one.map(fallback)).take(1)

  return ds.interleave(attempt, block_length=1, num_parallel_calls=AUTOTUNE, deterministic=True)


UNREADABLE = (
  "could not be read: the record is not a SequenceExample, or a frame is not a "
  "decodable image (corrupt JPEG)"
)
