"""Bad records and stream errors: the training stream's skip counter (and its caps) and its stop
on an epoch without a record, the host fields of a batch (split_host_fields, which stops on a bad
record), reader_error, which turns what the reader raises into one clean ValueError, and
CleanBatches, the iterator of clean device batches the trainer and the evaluator read, which keeps
all of that bookkeeping (position, skipped records, bad rows) behind it."""

import re
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from typing import Any

import numpy as np
import tensorflow as tf

from vidtx.data import dmvr, reader_config, records
from vidtx.data.reader_config import DatasetConfig
from vidtx.errors import UserError

HOST_FIELDS = ("ok", "error", "source", "video_id", "epoch", "index", "skipped")


# In-graph errors carry their message between these marks, for `reader_error` to find it in
# TF's text (which adds the op, the function and a stack).
_MARK = "@vidtx@"


def empty_epoch_message(
  dc: DatasetConfig, split: str, process_index: int, process_count: int
) -> tuple[str, str]:
  """The message of an epoch without a record, in two parts around the epoch number."""
  if records.is_tfds(dc):
    where = (
      f"{dc.dataset_name} split {dc.tables[split]!r} (process {process_index} of "
      f"{process_count}'s share)"
    )
  else:
    files, shard_files = records.share_files(dc, split, process_index, process_count)
    where = (
      f"its {len(files)} file(s) ({records.share_text(process_index, process_count, shard_files)})"
      f": {records.files_text(files)} (base_dir={dc.base_dir!r})"
    )
  return (
    f"{_MARK}Split {split!r} yielded no record in epoch ",
    f": {where}. Check config.dataset_configs.tables.{split}; with several processes, "
    f"every process needs at least one record.{_MARK}",
  )


def in_graph_message(parts: list[Any]) -> tf.Tensor:
  """A message (strings and string tensors, joined) for an in-graph error of the reader, marked
  so that reader_error gives it back alone."""
  return tf.strings.join([_MARK, *parts, _MARK])


def fail_when_empty(ds: tf.data.Dataset, message: tf.Tensor) -> tf.data.Dataset:
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


def skip_counter(
  dc: DatasetConfig,
  split: str,
  process_index: int,
  process_count: int,
  start_position: tuple[int, int],
) -> tuple[Callable[..., Any], dict[str, tf.Tensor]]:
  """(scan function, initial state) that counts and reports the bad records the stream drops
  and stops it in-graph (InvalidArgumentError) when there are too many (vidtx.data.pipeline's
  docstring)."""
  fraction = dc.max_bad_fraction
  fraction = None if fraction is None or fraction >= 1.0 else fraction
  cap = dc.max_bad_records
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
        & (bad >= reader_config.MIN_BAD_RECORDS)
        & (tf.cast(bad, tf.float64) > fraction * tf.cast(read, tf.float64))
      )
    too_many = tf.constant(False) if cap is None else ~ok & (bad > cap)

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

    def message():
      return _stop_message(
        split,
        who,
        (fraction, cap),
        state,
        element,
        (read, bad),
        (barren, too_many_fraction),
      )

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

  return records.no_autograph(count_skipped), initial


def _stop_message(
  split: str,
  who: str,
  limits: tuple[float | None, int | None],
  state: dict[str, tf.Tensor],
  element: dict[str, tf.Tensor],
  counts: tuple[tf.Tensor, tf.Tensor],
  why: tuple[tf.Tensor, tf.Tensor],
) -> tf.Tensor:
  """The message that stops the training stream (skip_counter): an epoch without a good record,
  or too many bad records (the fraction, or the cap); in-graph, between _MARKs."""
  fraction, cap = limits
  read, bad = counts
  barren, too_many_fraction = why
  last = [element["source"], " - ", element["error"]]
  so_far = [
    tf.strings.as_string(bad),
    " of the ",
    tf.strings.as_string(read),
    f" records read so far ({who}) were bad",
  ]
  fraction_text = tf.strings.join(
    [f"{_MARK}Split {split!r}: too many bad records with skip_bad_records=True: "]
    + so_far
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
    + so_far
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
      raise UserError(
        f"Bad record in {as_text(host['source'][i])}: {as_text(host['error'][i])}. Fix or remove "
        "it, or set config.dataset_configs.skip_bad_records=True to skip such records (they "
        "are counted and reported)."
      )
    if len(bad) and "batch_mask" in device:
      device["batch_mask"] = np.where(host["bad"], 0, device["batch_mask"]).astype(np.float32)
  return device, host


class CleanBatches:
  """The clean device batches of a numpy stream of either reader, with the bookkeeping behind
  them: the trainer and the evaluator read batches from this and never see the host fields.

  `next(batches)` is a device batch (the fields the step reads); a reader error comes out as
  reader_error's one clean ValueError (raised from TF's), a bad record as split_host_fields'
  (unless `skip_bad_records`: evaluation masks it). After each batch:
    position: the training stream's (epoch, index) after it (where a resumed stream starts);
      the `start_position` before the first batch.
    skipped: the bad records the training stream dropped since the start.
    host: its host fields (video ids, sources; `bad` marks bad records, `error` says why).
  `read()` and `clean(batch)` are the two halves of `next`, for a caller that decides between
  them (the evaluator: a masked batch when its share has ended, a check that none is left).
  """

  def __init__(
    self,
    batches: Iterator[dict[str, np.ndarray]],
    dataset_configs: DatasetConfig | Mapping[str, Any],
    split: str,
    *,
    skip_bad_records: bool = False,
    process_index: int = 0,
    process_count: int = 1,
    start_position: tuple[int, int] = (0, 0),
  ):
    self._batches = batches
    self._dataset_configs = reader_config.as_dataset_config(dataset_configs)
    self._split = split
    self._skip_bad_records = skip_bad_records
    self._process = dict(process_index=process_index, process_count=process_count)
    self.position = tuple(start_position)
    self.skipped = 0
    self.host: dict[str, np.ndarray] = {}

  def __iter__(self) -> "CleanBatches":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self.read()
    if batch is None:
      raise StopIteration
    return self.clean(batch)

  def read(self) -> dict[str, np.ndarray] | None:
    """The stream's next raw batch, None at its end; a reader error as one clean ValueError."""
    try:
      return next(self._batches, None)
    except tf.errors.OpError as error:  # Named: the file and record, the split, the counts.
      raise reader_error(error, self._dataset_configs, self._split, **self._process) from error

  def clean(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The device batch of a raw one; its host fields go to the bookkeeping."""
    device, self.host = split_host_fields(batch, skip_bad_records=self._skip_bad_records)
    if "epoch" in self.host and "index" in self.host:
      self.position = next_position(self.host)
    if "skipped" in self.host:
      self.skipped += int(self.host["skipped"].sum())
    return device


def reader_error(
  error: tf.errors.OpError,
  dataset_configs: DatasetConfig | Mapping[str, Any],
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
    return UserError(_unescape(marked.group(1)))
  tf_text = _tf_first_line(text)
  dataset_configs = reader_config.as_dataset_config(dataset_configs)
  if isinstance(error, tf.errors.DataLossError) and not records.is_tfds(dataset_configs):
    try:
      return UserError(
        _damage_report(dataset_configs, split, tf_text, process_index, process_count)
      )
    except Exception as walk_error:  # The reader's error matters more than the walk's.
      tf_text += f" (the files could not be checked: {walk_error})"
  return UserError(f"Reading split {split!r} failed: {tf_text} ({type(error).__name__}).")


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
  dc: DatasetConfig, split: str, tf_text: str, process_index: int, process_count: int
) -> str:
  """The message of a DataLossError: the damaged files of this process's share, found by
  walking their record headers (only now, after the error: a walk reads 12 bytes a record)."""
  files, shard_files = records.share_files(dc, split, process_index, process_count)
  share = f"{len(files)} file(s), {records.share_text(process_index, process_count, shard_files)}"
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
        candidates[0]
        if len(candidates) == 1
        else "one of " + records.files_text(candidates, limit=5)
      )
      return (
        f"Split {split!r}: the data of {which} (from byte {offset}) fails its "
        f"checksum: the shard is corrupt. {fix}"
      )
  return (
    f"Split {split!r}: {tf_text}, but no file of this process's share ({share}: "
    f"{records.files_text(files)}) is truncated or has a corrupt record header; a file may have "
    f"changed while it was read. Check the files of config.dataset_configs.tables.{split} "
    f"(base_dir={dc.base_dir!r})."
  )


def next_position(host: dict[str, np.ndarray]) -> tuple[int, int]:
  """The training stream's (epoch, index) after this batch: where a resumed stream starts."""
  return int(host["epoch"][-1]), int(host["index"][-1]) + 1


def as_text(value: Any) -> str:
  """A string field of a numpy batch (bytes) as text."""
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
