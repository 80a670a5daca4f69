"""tf.data reader: records -> checks -> sample clip(s) -> decode -> crop -> batch (uint8).

Sources (`dataset_configs.dataset_name`, filled in by vidtx.data.prepare_dataset): DMVR TFRecords
('dmvr', 'synthetic') or a locally prepared TFDS dataset ('tfds:NAME'). Every source yields one
dict per video (encoded frames, label indices, id, frame rate, where it came from); the rest of
the reader does not know which source it reads.

Training batches: {'inputs': uint8 (B, T, H, W, 3) (H = W = crop_size, or with scale jitter
the window buffer's side DatasetConfig.window_size), 'label': int32 (B,) (or float32 (B, K)
multi-hot with `multi_label` or `class_splits`), the per-clip parameters of the augmentation
that runs on the accelerator (vidtx.device_augment's fields), and host fields (below)},
infinite, shuffled. Evaluation batches: {'inputs': uint8 (B, V, T, H, W, 3), 'view_mask':
float32 (B, V),
'label', 'video_index': int64 (B,), 'batch_mask': float32 (B,), host fields}, one pass; the last
batch is padded with batch_mask 0. V = num_test_clips * (3 if do_three_spatial_crops else 1),
clip-major (clip 0: crops 0, 1, 2, ...). With eval_sampling='whole_video' a long video arrives in
several elements (chunks of V views, the last one padded with view_mask 0) sharing its
video_index; the evaluator aggregates by video_index.

Host fields (strings and stream bookkeeping, which `bad_records.split_host_fields` takes off
before the batch goes to the devices): 'ok', 'error', 'source' (file and record index),
'video_id'; training adds 'epoch', 'index' (the element's position in its epoch: the stream
position a checkpoint saves) and 'skipped' (bad records dropped before this element, with
skip_bad_records).

Sampling (ViViT 2103.15691, TimeSformer 2102.05095 §4 and Table 8): `train_sampling` 'stride'
(scenic: frames at `stride` from a random offset, looping short videos), 'timesformer' (num_frames
frames spread over a window of num_frames * sampling_rate frames at target_fps, as PySlowFast
samples "at a rate of 1/32"), 'segment' (one random frame in each of num_frames equal segments,
TSN / SSv2); `eval_sampling` the same three with num_test_clips evenly spaced clips (one: the
middle), or 'whole_video' (as many consecutive non-overlapping clips as cover the video).

Augmentation (ViViT 2103.15691 Table 7; vidtx.data.augment) uses scenic's field names under
dataset_configs.augmentation_params; every random choice is made once per clip, so all frames
get the same transform. The host chooses the crop window (scale jitter and crop) and decodes
only it, and draws the parameters of the rest; the train step applies them on the accelerator
(vidtx.device_augment: the jittered window's resize to crop_size, flip, colour jitter and drop,
RandAugment, normalisation, random erasing). Pixels are
normalised per channel on the accelerator, input = (pixel / 255 - mean) / std
(`DatasetConfig.normalisation`: explicit mean/std, else a preset in NORMALIZATIONS, else
zero_centering), for evaluation in the evaluator's step.

Training is deterministic for a seed, even with parallel map: the file order and the shuffle
buffer are seeded per epoch, the order of elements is fixed (options.deterministic), and every
random choice for an element comes from stateless ops seeded by (seed, process, epoch, index).
A stream restarted at a saved (epoch, index) continues exactly where it stopped: the epochs before
it are not read at all, the records before it in its epoch are read but not decoded.
With dataset_configs.global_order (by default whenever every train shard has a current frame
table: global_order.resolve) the stream is the same for any number of processes
(vidtx.data.global_order): a seeded permutation of the whole split per epoch, each process reading
its rows of every global batch through the frame tables, every element seeded by (seed, epoch,
index) without the process; a restart at a global position continues it on any topology. There
skip_bad_records replaces a bad record by the next clean one of the epoch's order
(_replacing_map), so that no position is dropped.

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
`bad_records.reader_error` turns what `next(iterator)` raises into one clean ValueError (and
names the file and record of a truncated or corrupt shard, which TF's own message does not).

This module builds the two streams from vidtx.data.reader_config (DatasetConfig: the fields,
read and checked once),
vidtx.data.records (sources, labels, decoding), vidtx.data.sampling (clip indices, evaluation
views) and vidtx.data.bad_records (skipping, stream errors, host fields).
"""

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from vidtx import device_augment
from vidtx.data import augment, bad_records, dmvr, global_order, reader_config, records, sampling
from vidtx.data.reader_config import DatasetConfig
from vidtx.errors import UserError


def _check_split(dataset_configs: DatasetConfig, split: str, batch_size: int) -> None:
  if batch_size < 1:
    raise UserError(f"batch_size must be >= 1, got {batch_size}.")
  if split not in dataset_configs.tables:
    raise UserError(
      f"Split {split!r} is not in dataset_configs.tables (known: {sorted(dataset_configs.tables)})."
    )


# ---------------------------------------------------------------------------------------------
# Training stream.
# ---------------------------------------------------------------------------------------------


def _options(waiting_threads: int = 0) -> tf.data.Options:
  """As big_vision sets them for hosts: tf.data's own threads, one per core (plus
  `waiting_threads` that mostly wait on reads), and one thread per op: the parallel maps (one
  clip each) use the cores, an op does not spread over them as well. Deterministic order: exact
  resume depends on it."""
  options = tf.data.Options()
  options.deterministic = True
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  options.threading.private_threadpool_size = max(int(cores or 1), 1) + waiting_threads
  options.threading.max_intra_op_parallelism = 1
  return options


def _flip_table(dc: DatasetConfig) -> tf.Tensor | None:
  """(K,) class permutation of a horizontal flip (flip_label_pairs swapped), or None."""
  table = dc.flip_table
  return None if table is None else tf.constant(table, tf.int32)


def _augment_draws(dc: DatasetConfig, seeds: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """(flipped: bool scalar, the per-clip parameters of the augmentation that runs on the
  accelerator, vidtx.device_augment's fields), drawn from the clip's seed streams 2-6 as the
  former host ops (vidtx.data.augment) drew them."""
  aug = dataclasses.asdict(dc.augmentation)
  augmentation = reader_config.device_augmentation(dc)
  crop = int(dc.crop_size)
  flipped = tf.constant(False)
  if augmentation.flip:
    flipped = augment.flip_draw(probability=0.5, seed=seeds[2])
  params = {}
  if augmentation.flip:
    params[device_augment.FLIP] = tf.cast(flipped, tf.int32)
  if augmentation.color:
    params[device_augment.COLOR] = augment.color_jitter_draws(
      probability=float(aug["prob_color_augment"]), seed=seeds[3]
    )
  if augmentation.color_drop:
    # scenic's colour drop: the whole clip in grey with prob_color_drop.
    drop = tf.random.stateless_uniform([], seeds[4]) < float(aug["prob_color_drop"])
    params[device_augment.GRAY] = tf.cast(drop, tf.int32)
  if augmentation.rand_augment_layers:
    ops, args = augment.rand_augment_draws(
      num_layers=augmentation.rand_augment_layers, height=crop, width=crop, seed=seeds[5]
    )
    params[device_augment.RA_OP], params[device_augment.RA_ARG] = ops, args
  if augmentation.erasing:
    box, noise = augment.random_erasing_draws(
      height=crop,
      width=crop,
      probability=float(aug["random_erasing_probability"]),
      seed=seeds[6],
    )
    params[device_augment.ERASE_BOX], params[device_augment.ERASE_NOISE] = box, noise
  return flipped, params


def _no_augment_draws(dc: DatasetConfig) -> dict[str, tf.Tensor]:
  """The parameter fields of a clip that is not read (a bad record): zeros, nothing applied."""
  augmentation = reader_config.device_augmentation(dc)
  crop, layers = int(dc.crop_size), augmentation.rand_augment_layers
  shapes = {
    device_augment.WINDOW: ([2], tf.int32),
    device_augment.FLIP: ([], tf.int32),
    device_augment.COLOR: ([5], tf.float32),
    device_augment.GRAY: ([], tf.int32),
    device_augment.RA_OP: ([layers], tf.int32),
    device_augment.RA_ARG: ([layers, 3], tf.float32),
    device_augment.ERASE_BOX: ([4], tf.int32),
    device_augment.ERASE_NOISE: ([crop, crop, 3], tf.float32),
  }
  params = {field: tf.zeros(*shapes[field]) for field in augmentation.fields}
  if device_augment.RA_OP in params:
    params[device_augment.RA_OP] += device_augment.NO_OP
  if device_augment.WINDOW in params:
    params[device_augment.WINDOW] += crop  # the zeros' crop x crop corner, kept as it is
  return params


def _train_side(dc: DatasetConfig) -> int:
  """Side of a training clip's frames as the host sends them: the window buffer's S with scale
  jitter (the accelerator resizes the window to crop_size), else crop_size."""
  return dc.window_size or int(dc.crop_size)


def _train_clip(
  dc: DatasetConfig,
  raw: dict[str, tf.Tensor],
  video: dict[str, tf.Tensor],
  label: tf.Tensor,
  seeds: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]:
  """Samples, decodes and crops one training clip: uint8 (T, side, side, 3) (`_train_side`), its
  label (swapped for a flip of a direction-dependent class) and the parameters of the
  augmentation that the train step applies on the accelerator (`_augment_draws`; with scale
  jitter the window's [h, w] too: the window is not resized on the host)."""
  aug = dataclasses.asdict(dc.augmentation)
  num_frames, crop = int(dc.num_frames), int(dc.crop_size)
  indices = sampling.train_clip_indices(
    dc, tf.cast(video["num_frames"], tf.int32), video["frame_rate"], seeds[0]
  )
  # Only the sampled frames are read when the record has a frame table.
  jpegs, indices = records.clip_jpegs(raw, video, indices)
  video = {**video, "jpegs": jpegs}
  jitter = bool(aug["do_jitter_scale"])
  # scale_jitter_crop's window (the same draws), in the stored frames: only it is decoded.
  window = augment.scale_jitter_window(
    records.stored_frame_size(video["jpegs"], indices),
    min_resize=int(dc.min_resize),
    crop_size=crop,
    min_scale=float(aug["scale_min_factor"]) if jitter else 1.0,
    max_scale=float(aug["scale_max_factor"]) if jitter else 1.0,
    probability=float(aug["prob_scale_jitter"]) if jitter else 1.0,
    seed=seeds[1],
  )
  # The crop leaves the host as uint8: a quarter of float32's bytes; the rest of the
  # augmentation runs on the accelerator (vidtx.device_augment) with the parameters drawn here.
  flipped, params = _augment_draws(dc, seeds)
  side = _train_side(dc)
  if dc.window_size:
    # The jittered window goes unresized, in a fixed S x S buffer: the accelerator resizes it.
    frames, params[device_augment.WINDOW] = records.decode_window_in_buffer(
      video["jpegs"], indices, window, crop, side
    )
  else:
    frames = records.decode_window(video["jpegs"], indices, window, (crop, crop))
  table = _flip_table(dc)
  if table is not None:
    # Direction-dependent classes ("pushing left to right") swap with their mirror image.
    swapped = tf.gather(label, table) if label.shape.rank else tf.gather(table, label)
    label = tf.where(flipped, swapped, label)
  return tf.ensure_shape(frames, [num_frames, side, side, 3]), label, params


def _train_element(
  dc: DatasetConfig, base_seed: tf.Tensor, epoch: tf.Tensor, index: tf.Tensor, raw: dict
) -> dict[str, tf.Tensor]:
  """One training element of a record: its clip, label, augmentation parameters and host fields.
  Every random choice comes from stateless ops seeded by (base_seed, epoch, index)."""
  num_frames, side = int(dc.num_frames), _train_side(dc)
  video = records.parse_video(raw)
  label, error = records.parse_labels(dc, video["labels"])
  error = tf.where(
    video["num_frames"] == 0,
    f"video has no frames (empty feature list {dmvr.IMAGE_KEY!r})",
    error,
  )
  element_seed = tf.random.experimental.stateless_fold_in(
    tf.random.experimental.stateless_fold_in(base_seed, epoch), index
  )
  # Independent streams for the clip, crop, flip, colour, colour drop, RandAugment, erasing.
  seeds = tf.random.experimental.stateless_split(element_seed, 7)
  frames, label, params = tf.cond(
    error == "",
    lambda: _train_clip(dc, raw, video, label, seeds),
    lambda: (tf.zeros([num_frames, side, side, 3], tf.uint8), label, _no_augment_draws(dc)),
  )
  return {
    "inputs": frames,
    **params,
    "label": label,
    "epoch": epoch,
    "index": index,
    "ok": error == "",
    "error": error,
    "source": raw["source"],
    "video_id": video["video_id"],
  }


def _unreadable_train_element(
  dc: DatasetConfig, epoch: tf.Tensor, index: tf.Tensor, raw: dict
) -> dict[str, tf.Tensor]:
  """The element of a record that could not be read: zeros, flagged not ok."""
  label_spec = records.label_spec(dc)
  return {
    "inputs": tf.zeros([int(dc.num_frames), _train_side(dc), _train_side(dc), 3], tf.uint8),
    **_no_augment_draws(dc),
    "label": tf.zeros(label_spec.shape, label_spec.dtype),
    "epoch": epoch,
    "index": index,
    "ok": tf.constant(False),
    "error": tf.constant(records.UNREADABLE),
    "source": raw["source"],
    "video_id": tf.constant(""),
  }


def _process_records(
  dc: DatasetConfig,
  *,
  seed: int,
  process_index: int,
  process_count: int,
  start_position: tuple[int, int],
) -> tuple[tf.data.Dataset, tf.Tensor]:
  """(epoch, index, raw) of this process's share from start_position on, and the base seed of
  its elements (seed, process): the default stream (files per process, a shuffle buffer)."""
  start_epoch, start_index = start_position
  buffer_size = dc.shuffle_buffer_size
  base_seed = tf.constant([int(seed), process_index], tf.int64)

  shares = dict(process_index=process_index, process_count=process_count)
  # An empty share would make the infinite epoch loop below spin without end: name it now.
  records.check_split_has_records(dc, "train", **shares)
  tfds_share = (
    records.split_records(dc, "train", **shares, shuffle_seed=None) if records.is_tfds(dc) else None
  )
  # Shards with frame tables: a clip reads its record's context and its frames, nothing else.
  by_frames = records.frame_tables_missing(dc, "train", **shares) is None
  empty_epoch = bad_records.empty_epoch_message(dc, "train", process_index, process_count)

  def epoch_records(epoch):
    epoch_seed = tf.random.experimental.stateless_fold_in(base_seed, epoch)
    ds = tfds_share or records.split_records(
      dc, "train", **shares, shuffle_seed=epoch_seed, by_frames=by_frames
    )
    # Dataset.shuffle takes one int64: draw it from the whole (2,) seed (fold_in's first
    # element alone does not depend on the epoch).
    shuffle_seed = tf.random.stateless_uniform(
      [], epoch_seed, minval=None, maxval=None, dtype=tf.int64
    )
    ds = ds.shuffle(buffer_size, seed=shuffle_seed, reshuffle_each_iteration=False)
    # Before the resumed epoch's skip, which may leave nothing of an epoch that had records.
    ds = bad_records.fail_when_empty(
      ds, tf.strings.join([empty_epoch[0], tf.strings.as_string(epoch), empty_epoch[1]])
    )
    ds = ds.enumerate()
    # Before parsing: the records of a resumed epoch that were already used are never decoded.
    ds = ds.skip(tf.where(epoch == start_epoch, tf.constant(start_index, tf.int64), 0))
    return ds.map(lambda index, raw: (epoch, index, raw))

  return tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_records), base_seed


def _global_records(
  dc: DatasetConfig,
  *,
  seed: int,
  global_batch: int,
  process_index: int,
  process_count: int,
  start_position: tuple[int, int],
) -> tuple[tf.data.Dataset, tf.Tensor, global_order.RecordTable]:
  """(epoch, index, raw) of this process's rows of the global stream (vidtx.data.global_order),
  the base seed of its elements (the seed alone, so that an element's randomness depends on
  (seed, epoch, index) and not on which process reads it) and the split's record table."""
  table = global_order.record_table(dc, "train")
  start_epoch, start_index = start_position
  ds = global_order.pointers(
    table,
    seed=seed,
    global_batch=global_batch,
    process_index=process_index,
    process_count=process_count,
    start=start_epoch * table.total + start_index,
  )
  return ds, tf.constant([int(seed), 0], tf.int64), table


# With skip_bad_records, a bad record at global position q is replaced by the next record of the
# epoch's order (q + 1, q + 2, ..., wrapping inside the epoch) that reads cleanly: at most this
# many records are tried before the stream stops.
REPLACEMENT_TRIES = 64


def _replacing_map(
  dc: DatasetConfig,
  ds: tf.data.Dataset,
  base_seed: tf.Tensor,
  table: global_order.RecordTable,
  seed: int,
) -> tf.data.Dataset:
  """The training elements of a global-order stream with skip_bad_records: position q gets the
  element of the first clean record among q, q + 1, ... (in epoch order, wrapping inside the
  epoch), its augmentation still keyed by q; the bad records tried before it come first, as
  elements that are not ok, for skip_counter to report, count and cap. Badness is a property of
  the record, so every topology picks the same replacement and the global batches stay equal.

  Position q's own record is read as without skipping (records.protected_map, in parallel);
  only a bad one takes the slow path that tries the next records one after the other."""
  total = table.total
  tries = min(total, REPLACEMENT_TRIES)
  at = global_order.record_at(table, seed=seed)

  def element(epoch, index, raw):
    return _train_element(dc, base_seed, epoch, index, raw)

  def unreadable(epoch, index, raw):
    return _unreadable_train_element(dc, epoch, index, raw)

  @records.no_autograph
  def replace(first):
    """[bad elements tried..., the first clean one] for a bad element `first` at position q."""
    epoch, index = first["epoch"], first["index"]

    def candidate(j):
      one = tf.data.Dataset.from_tensors((epoch, index, at(epoch, (index + j) % total)))
      return one.map(element).ignore_errors().concatenate(one.map(unreadable)).take(1)

    def remember_bad(state, el):
      # Emits each candidate with the bad ones before it (sources, errors, count).
      sources, errors, bad = state
      slot = tf.reshape(bad, [1, 1])
      after = (
        tf.tensor_scatter_nd_update(sources, slot, [el["source"]]),
        tf.tensor_scatter_nd_update(errors, slot, [el["error"]]),
        bad + 1,
      )
      new_state = tf.nest.map_structure(lambda a, b: tf.where(el["ok"], b, a), after, state)
      return new_state, (el, state)

    # Lazy: candidates 1, 2, ... are read one after the other until one is clean (or all
    # `tries`, candidate 0 included, are bad).
    candidates = tf.data.Dataset.from_tensors(first).concatenate(
      tf.data.Dataset.range(1, tries).flat_map(records.no_autograph(candidate))
    )
    empty = tf.constant([""] * tries)
    chosen = (
      candidates.scan((empty, empty, tf.constant(0, tf.int64)), records.no_autograph(remember_bad))
      .enumerate()
      .filter(lambda j, chosen: chosen[0]["ok"] | (j == tries - 1))
      .take(1)
    )

    def all_bad_stops(el):
      message = bad_records.in_graph_message(
        [
          f"Split 'train': all {tries} records tried for global position ",
          tf.strings.as_string(index),
          " of epoch ",
          tf.strings.as_string(epoch),
          " (that position and the next ones in the epoch's order) are bad, so "
          "skip_bad_records=True finds no record to replace them with. The last one: ",
          el["source"],
          " - ",
          el["error"],
          ". Fix or remove the bad records.",
        ]
      )
      check = tf.debugging.Assert(el["ok"], [message])
      with tf.control_dependencies([check]):
        return tf.nest.map_structure(tf.identity, el)

    @records.no_autograph
    def with_bad_before(j, chosen):
      del j
      el, (sources, errors, bad) = chosen
      reports = tf.data.Dataset.from_tensor_slices((sources[:bad], errors[:bad])).map(
        lambda source, error: {**first, "source": source, "error": error}
      )
      return reports.concatenate(tf.data.Dataset.from_tensors(el).map(all_bad_stops))

    return chosen.flat_map(with_bad_before)

  @records.no_autograph
  def group(el):
    # (n, ...) elements for position q: a clean one alone, else the slow path's bad ones and
    # their replacement (no dataset is made for a clean element: this costs next to nothing).
    return tf.cond(
      el["ok"],
      lambda: tf.nest.map_structure(lambda field: field[None], el),
      lambda: replace(el).batch(tries + 1).get_single_element(),
    )

  ds = records.protected_map(ds, element, unreadable)
  return ds.map(group, num_parallel_calls=records.AUTOTUNE, deterministic=True).unbatch()


def build_train_dataset(
  dataset_configs: DatasetConfig | Mapping[str, Any],
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
  (epoch, index), as `bad_records.next_position` reports it after a batch, starts the stream
  there: a resumed run continues the stream without repeating or skipping an example.

  With dataset_configs.global_order, epoch e is a seeded permutation of the whole split
  (vidtx.data.global_order) and this process reads rows [p * b, (p + 1) * b) of every global
  batch of process_count * batch_size: the global batches are the same for any process count.
  `start_position` (epoch, index) is then global position epoch * N + index (N records; (0, q)
  is position q), at a global batch boundary.
  """
  dc = reader_config.as_dataset_config(dataset_configs)
  _check_split(dc, "train", batch_size)
  start_epoch, start_index = (int(x) for x in start_position)
  if start_epoch < 0 or start_index < 0:
    raise UserError(f"start_position={start_position} must be >= (0, 0).")
  where = dict(seed=seed, process_index=process_index, process_count=process_count)
  dc = global_order.resolve(dc)
  if dc.global_order:
    global_batch = batch_size * process_count
    start = (start_epoch, start_index)
    ds, base_seed, table = _global_records(
      dc, global_batch=global_batch, start_position=start, **where
    )
  else:
    ds, base_seed = _process_records(dc, start_position=(start_epoch, start_index), **where)
  # Through frame tables: the records' contexts read ahead, many in flight, and on a slow store
  # threads beyond the cores' to wait on clips' frames.
  waiting_threads = records.waiting_threads(ds, dc, "train")
  ds = records.read_contexts_ahead(ds)
  if dc.global_order and dc.skip_bad_records:
    ds = _replacing_map(dc, ds, base_seed, table, seed)
  else:
    ds = records.protected_map(
      ds,
      lambda epoch, index, raw: _train_element(dc, base_seed, epoch, index, raw),
      lambda epoch, index, raw: _unreadable_train_element(dc, epoch, index, raw),
    )
  if dc.skip_bad_records:
    count_skipped, initial = bad_records.skip_counter(
      dc, "train", process_index, process_count, start_position=(start_epoch, start_index)
    )
    ds = ds.scan(initial, count_skipped).filter(lambda el: el["ok"])
  else:
    # Bad records reach the host, which stops with their file and record index.
    ds = ds.map(lambda el: {**el, "skipped": tf.constant(0, tf.int64)})
  ds = ds.batch(
    batch_size, drop_remainder=True, num_parallel_calls=records.AUTOTUNE, deterministic=True
  )
  return ds.prefetch(records.AUTOTUNE).with_options(_options(waiting_threads))


# ---------------------------------------------------------------------------------------------
# Evaluation: views of every video, one pass.
# ---------------------------------------------------------------------------------------------


def _eval_videos(
  dc: DatasetConfig, split: str, process_index: int, process_count: int
) -> tf.data.Dataset:
  """This process's videos of `split`, each parsed with the frame indices of its evaluation
  clips ('indices' (num_clips, T)), its label and error ('' when readable); nothing decoded."""
  num_frames = int(dc.num_frames)
  label_spec = records.label_spec(dc)
  ds = records.split_records(
    dc, split, process_index=process_index, process_count=process_count, shuffle_seed=None
  ).enumerate()

  def plan(local_index, raw):
    video = records.parse_video(raw)
    label, error = records.parse_labels(dc, video["labels"])
    length = tf.shape(video["jpegs"])[0]
    error = tf.where(
      length == 0, f"video has no frames (empty feature list {dmvr.IMAGE_KEY!r})", error
    )
    indices = tf.cond(
      error == "",
      lambda: sampling.eval_clip_indices_for(dc, length, video["frame_rate"]),
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
      "error": tf.constant(records.UNREADABLE),
      "source": raw["source"],
      "video_id": tf.constant(""),
      "video_index": process_index + process_count * local_index,
    }

  return records.protected_map(ds, plan, unreadable_plan)


def _num_chunks(video: dict[str, tf.Tensor], clips_per_element: int) -> tf.Tensor:
  """How many elements (chunks of clips_per_element clips) a video's clips fill; at least 1."""
  num_clips = tf.shape(video["indices"])[0]
  return tf.maximum((num_clips + clips_per_element - 1) // clips_per_element, 1)


def count_eval_elements(
  dataset_configs: DatasetConfig | Mapping[str, Any],
  split: str,
  *,
  process_index: int = 0,
  process_count: int = 1,
) -> int:
  """How many elements (before batching) build_eval_dataset yields for this process.

  One element per video, so the count of the share's records (records.count_share_records:
  record headers or TFDS metadata, no video read); with eval_sampling='whole_video' a video
  fills as many elements as its length needs, so this process's videos are parsed once (frames
  read, not decoded).
  """
  dc = reader_config.as_dataset_config(dataset_configs)
  shares = dict(process_index=process_index, process_count=process_count)
  if dc.eval_sampling != "whole_video":
    return records.count_share_records(dc, split, **shares)
  clips_per_element = dc.num_test_clips
  chunks = _eval_videos(dc, split, **shares).map(
    lambda video: tf.cast(_num_chunks(video, clips_per_element), tf.int64)
  )
  return int(chunks.reduce(tf.constant(0, tf.int64), lambda total, n: total + n))


def build_eval_dataset(
  dataset_configs: DatasetConfig | Mapping[str, Any],
  split: str,
  *,
  batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
) -> tf.data.Dataset:
  """One pass over this process's share of `split`; the last batch is padded (batch_mask 0).

  Each element holds V views of one video; 'whole_video' sampling splits a long video into
  several elements with the same video_index (process_index + process_count * local index).
  count_eval_elements says how many elements there are without reading the videos.
  """
  dc = reader_config.as_dataset_config(dataset_configs)
  _check_split(dc, split, batch_size)
  num_frames, crop = int(dc.num_frames), int(dc.crop_size)
  clips_per_element = dc.num_test_clips
  crops = 3 if dc.do_three_spatial_crops else 1
  num_views = clips_per_element * crops
  # The whole split: a process whose share is empty while others have videos is fine (the
  # evaluator feeds it masked batches), a split without a video is not.
  records.check_split_has_records(
    dc, split, process_index=process_index, process_count=process_count, whole_split=True
  )
  ds = _eval_videos(dc, split, process_index, process_count)

  def chunk(video, k):
    num_clips = tf.shape(video["indices"])[0]
    # Clips [k * C, (k + 1) * C) of the video; the last chunk repeats its last clip, masked.
    wanted = tf.cast(k, tf.int32) * clips_per_element + tf.range(clips_per_element)
    clip_mask = tf.cast(wanted < num_clips, tf.float32)
    indices = tf.gather(video["indices"], tf.minimum(wanted, num_clips - 1))  # (C, T)
    views = tf.cond(
      video["error"] == "",
      # sampling.eval_views' views (uint8, normalised in the evaluator's step); only the
      # window that holds the crops is decoded.
      lambda: sampling.decode_eval_views(video["jpegs"], indices, dc),
      lambda: tf.zeros([num_views, num_frames, crop, crop, 3], tf.uint8),
    )
    views = tf.ensure_shape(views, [num_views, num_frames, crop, crop, 3])
    return _eval_element(video, views, tf.repeat(clip_mask, crops), video["error"])

  def unreadable_chunk(video, k):
    del k
    return _eval_element(
      video,
      tf.zeros([num_views, num_frames, crop, crop, 3], tf.uint8),
      tf.zeros([num_views]),
      tf.constant(records.UNREADABLE),
    )

  @records.no_autograph
  def chunks(video):
    num_chunks = _num_chunks(video, clips_per_element)
    ks = tf.data.Dataset.range(tf.cast(num_chunks, tf.int64)).map(
      records.no_autograph(lambda k: (video, k))
    )
    return records.protected_map(ks, chunk, unreadable_chunk)

  if dc.eval_sampling == "whole_video":
    ds = ds.interleave(
      chunks, block_length=1, num_parallel_calls=records.AUTOTUNE, deterministic=True
    )
  else:  # One element per video: no dataset of its chunks built per video.
    first_chunk = ds.map(lambda video: (video, tf.constant(0, tf.int64)))
    ds = records.protected_map(first_chunk, chunk, unreadable_chunk)
  ds = ds.batch(batch_size, num_parallel_calls=records.AUTOTUNE, deterministic=True)
  ds = ds.map(lambda batch: _pad_batch(batch, batch_size))
  return ds.prefetch(records.AUTOTUNE).with_options(_options())


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
