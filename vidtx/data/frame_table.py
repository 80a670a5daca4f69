"""Where each frame of each record sits in a DMVR shard, so that a clip reads only its frames.

A DMVR record holds every frame of a video (250 JPEGs for 10 s at 25 fps, ~5 MB) and a clip uses
8 to 32 of them. Reading and parsing the whole record costs more CPU than decoding the clip's
frames (TimeSformer's 8-frame clips). The frame table lets the training reader read a record's
context (labels, id, frame rate: a few hundred bytes) and then only the selected JPEGs, each at its
byte offset, with no protobuf parse of the rest.

Per shard, beside its record index (vidtx.data.record_index) in the split's hidden stats folder:

  NAME.records.npy  int64 (R, 4): per record [context offset, context size, first frame, frames]
                    (offsets in the shard file). frames == -1: the record is not laid out as the
                    table expects (a field twice, a frame with several values, bytes that are not
                    a SequenceExample); the reader then reads and parses it whole, as before.
                    The context span is the record's field 1 (tag, length, Features): on its own
                    it is a valid SequenceExample with no frames.
  NAME.frames.npy   int64 (F, 2): per frame [offset, size] of its JPEG bytes; memory-mapped.
  NAME.frames.json  the shard's size and version (mtime; a bucket's object generation) when the
                    table was made.

The table is built when shards are written (make_shards), or by python -m vidtx.data.index_shards
for existing shards; building it reads every record and checks its CRC32C. Reads through the table
do not check the record's checksum (it covers the whole record); a shard changed since is caught
by its size and mtime (a bucket's object: its generation).

Shards in a bucket (gs://) are read the same way, each frame or context one ranged read through
vidtx.data.shard_store (epath: TensorFlow's GCS file system, or gcsfs); their tables may be in
the bucket too (the records and frames arrays are read whole when the table opens).

On a slow store (reads slower than PARALLEL_ABOVE_SECONDS: a network file system, a bucket) the
reads are issued in parallel in a pool of READ_THREADS threads (in_parallel), so that a store's
latency per read is paid once per clip, not once per frame.
"""

import concurrent.futures
import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from vidtx import paths
from vidtx.data import record_index, shard_store
from vidtx.errors import UserError

RECORDS_SUFFIX = ".records.npy"
FRAMES_SUFFIX = ".frames.npy"
SIDECAR_SUFFIX = ".frames.json"
IMAGE_KEY = b"image/encoded"  # dmvr.IMAGE_KEY, without importing TensorFlow here.
WHOLE = -1  # frames of a record to read and parse whole
# Reads through frame tables in flight at once per process: on a slow store a clip's frames and
# the contexts read ahead (vidtx.data.records) are each read in parallel, in threads of one pool.
# An object store or a network file system answers after milliseconds (tens for a bucket), which
# only many reads in flight hide: 64 keep ~3,000 reads/s flowing at 20 ms each. os.pread releases
# the GIL, so the threads wait without holding the interpreter.
READ_THREADS = 64
# Reads are issued in parallel once they take this long on average (a network store, a spinning
# disk); faster ones (the page cache, a local SSD: tens of us) are read in sequence, since handing
# a read to a thread costs about as much CPU as the read itself.
PARALLEL_ABOVE_SECONDS = 0.5e-3


def _path(shard: str, suffix: str, index_dir: str | None) -> str:
  return record_index.index_path(shard, index_dir).removesuffix(record_index.INDEX_SUFFIX) + suffix


class _Malformed(Exception):
  """The record is not laid out as the table expects: read it whole."""


def _varint(data: bytes, position: int) -> tuple[int, int]:
  value, shift = 0, 0
  while True:
    if position >= len(data) or shift > 63:
      raise _Malformed
    byte = data[position]
    position += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, position
    shift += 7


def _fields(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int, int]]:
  """(field number, wire type, key start, value start, value end) of each field in
  data[start:end]; a varint or fixed field's value is its bytes."""
  fields, position = [], start
  while position < end:
    key_start = position
    key, position = _varint(data, position)
    number, wire = key >> 3, key & 7
    if wire == 2:
      length, first = _varint(data, position)
      position = first + length
    elif wire == 0:
      first = position
      _, position = _varint(data, position)
    elif wire in (1, 5):
      first = position
      position += 8 if wire == 1 else 4
    else:  # Groups (3, 4) are not in tf.train messages.
      raise _Malformed
    if position > end:
      raise _Malformed
    fields.append((number, wire, key_start, first, position))
  return fields


def _only(fields: list[tuple[int, int, int, int, int]], number: int) -> tuple[int, ...] | None:
  """The (key start, value start, value end) of the one length-delimited field `number`, None
  when absent."""
  found = [field[2:] for field in fields if field[0] == number]
  if len(found) > 1 or any(field[1] != 2 for field in fields if field[0] == number):
    raise _Malformed  # Repeated: the parser would merge them; another wire type: not ours.
  return found[0] if found else None


def _single_bytes(data: bytes, start: int, end: int) -> tuple[int, int]:
  """(offset, size) of the one value of a Feature holding a BytesList of one value."""
  feature = _fields(data, start, end)  # Feature: 1 BytesList.
  if len(feature) != 1 or feature[0][:2] != (1, 2):
    raise _Malformed
  values = _fields(data, *feature[0][3:])  # BytesList: 1 value (repeated).
  if len(values) != 1 or values[0][:2] != (1, 2):
    raise _Malformed  # FixedLenSequenceFeature([], tf.string): one value per frame.
  return values[0][3], values[0][4] - values[0][3]


def scan_record(data: bytes) -> tuple[tuple[int, int], np.ndarray] | None:
  """The context span (offset, size) and the (F, 2) [offset, size] of each frame's JPEG bytes,
  offsets within `data` (a serialised SequenceExample); None when it is not laid out as
  tf.train.SequenceExample with one value per frame (the reader parses such a record whole)."""
  try:
    top = _fields(data, 0, len(data))  # SequenceExample: 1 context, 2 feature_lists.
    context = _only(top, 1)
    # The span keeps the field's key and length: on its own it parses as a SequenceExample.
    span = (0, 0) if context is None else (context[0], context[2] - context[0])
    lists = _only(top, 2)
    images = []
    for number, wire, _, first, last in _fields(data, *lists[1:]) if lists else []:
      if (number, wire) == (1, 2):  # FeatureLists: a map entry, key 1 and value 2 (FeatureList).
        entry = _fields(data, first, last)
        key = _only(entry, 1)
        if key is not None and data[key[1] : key[2]] == IMAGE_KEY:
          images.append(_only(entry, 2))
    if len(images) > 1:
      raise _Malformed
    frames = []
    if images and images[0] is not None:
      for number, wire, _, first, last in _fields(data, *images[0][1:]):  # FeatureList: 1.
        if (number, wire) != (1, 2):
          raise _Malformed
        frames.append(_single_bytes(data, first, last))
  except _Malformed:
    return None
  return span, np.asarray(frames, np.int64).reshape(-1, 2)


def table_rows(
  records: Iterable[tuple[int, int, tuple[tuple[int, int], np.ndarray] | None]],
) -> tuple[np.ndarray, np.ndarray]:
  """(records (R, 4), frames (F, 2)) of a shard (module docstring) from each record's (offset of
  its data in the shard, data size, scan_record of its data)."""
  rows, frames, count = [], [], 0
  for data_offset, data_size, scanned in records:
    if scanned is None:
      rows.append((data_offset, data_size, 0, WHOLE))
      continue
    (context_offset, context_size), spans = scanned
    rows.append((data_offset + context_offset, context_size, count, len(spans)))
    frames.append(spans + np.array([data_offset, 0], np.int64))
    count += len(spans)
  frames_array = np.concatenate(frames) if frames else np.zeros((0, 2), np.int64)
  return np.asarray(rows, np.int64).reshape(-1, 4), frames_array


def _save_atomically(path: str, array: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.save(buffer, array, allow_pickle=False)
  record_index.write_atomically(path, buffer.getvalue())


def write_table(
  shard: str,
  rows: np.ndarray,
  frames: np.ndarray,
  shard_stat: os.stat_result | dict,
  index_dir: str | None = None,
) -> None:
  """Writes the shard's frame table (module docstring), each file atomically, the sidecar last:
  a table without a current sidecar is never used. `shard_stat`: os.stat of a local shard, or
  shard_store.version."""
  sidecar = _path(shard, SIDECAR_SUFFIX, index_dir)
  with _LOCK:  # An open table of the shard's previous version is not used again.
    _OPEN.pop((shard, index_dir), None)
  paths.makedirs(os.path.dirname(sidecar))
  if paths.exists(sidecar):
    paths.remove(sidecar)  # ours (the stats folder); the table is rewritten below.
  _save_atomically(_path(shard, RECORDS_SUFFIX, index_dir), rows)
  _save_atomically(_path(shard, FRAMES_SUFFIX, index_dir), frames)
  record_index.write_atomically(
    sidecar,
    json.dumps(
      {
        "shard": os.path.basename(shard),
        **record_index.shard_version(shard_stat),
        "records": len(rows),
        "frames": len(frames),
        "format": "records.npy: [context offset, context size, first frame, frames] per record; "
        "frames.npy: [offset, size] per frame",
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      },
      indent=1,
    )
    + "\n",
  )


def write_new_shard_tables(
  shard: str,
  data_sizes: Sequence[int],
  scans: Sequence[tuple[tuple[int, int], np.ndarray] | None],
  shard_stat: os.stat_result,
) -> None:
  """The record index and frame table of a shard a vidtx writer just wrote, from each record's
  data size and scan_record (its records back to back from byte 0), in its hidden stats folder."""
  rows = record_index.rows_from_sizes(data_sizes)
  record_index.write_index(record_index.index_path(shard), rows, shard_stat)
  data_offsets = (rows[:, 0] + record_index._HEADER_BYTES).tolist()
  layout = zip(data_offsets, data_sizes, scans, strict=True)
  write_table(shard, *table_rows(layout), shard_stat)


def build_table(shard: str, index_rows: np.ndarray, index_dir: str | None = None) -> None:
  """Reads every record of `shard` at its index row (checksums checked) and writes its table."""
  stat = shard_store.version(shard)

  def records():
    for number, (offset, size) in enumerate(index_rows.tolist()):
      data = record_index.read_record(shard, offset, size, record=number)
      yield offset + record_index._HEADER_BYTES, len(data), scan_record(data)

  rows, frames = table_rows(records())
  write_table(shard, rows, frames, stat, index_dir)


def index_remote_shard(shard: str, index_dir: str | None = None) -> np.ndarray:
  """Writes the record index and frame table of `shard` in a bucket from one pass through it
  (one download, checksums checked, not a request per record); returns the index's rows."""
  version = shard_store.version(shard)
  index_rows, layout = [], []
  for offset, size, data in record_index.stream_records(shard):
    index_rows.append((offset, size))
    layout.append((offset + record_index._HEADER_BYTES, len(data), scan_record(data)))
  if shard_store.version(shard) != version:
    raise UserError(
      f"{shard} was rewritten while it was being indexed (its generation changed); index it "
      "again once it is no longer being written."
    )
  rows = np.asarray(index_rows, np.int64).reshape(-1, 2)  # (N, 2)
  record_index.write_index(record_index.index_path(shard, index_dir), rows, version)
  write_table(shard, *table_rows(layout), version, index_dir)
  return rows


def stale_reason(shard: str, index_dir: str | None = None) -> str | None:
  """Why the shard's frame table cannot be used (missing, or made from another version of the
  shard), or None when it describes the shard."""
  sidecar = _path(shard, SIDECAR_SUFFIX, index_dir)
  try:
    recorded = json.loads(paths.read_text(sidecar))
  except FileNotFoundError:
    return "it has no frame table"
  except (OSError, ValueError):
    return f"its frame table's sidecar {sidecar} is unreadable"
  changed = shard_store.changed(recorded, shard_store.version(shard))
  if changed:
    return f"the shard changed after its frame table {sidecar} was made ({changed})"
  return None


# Shards in a bucket checked or opened at once at start-up (a request or two each).
START_UP_THREADS = 16


def _each(function: Callable, shards: Sequence[str]) -> list:
  """[function(shard) for shard in shards], in START_UP_THREADS threads for a bucket's shards
  (each a round trip), in sequence on a disk."""
  if not any(shard_store.is_remote(shard) for shard in shards):
    return [function(shard) for shard in shards]
  with concurrent.futures.ThreadPoolExecutor(START_UP_THREADS) as pool:
    return list(pool.map(function, shards))


def stale_reasons(shards: Sequence[str], index_dir: str | None = None) -> list[str | None]:
  """stale_reason of each shard (a bucket's in parallel)."""
  return _each(lambda shard: stale_reason(shard, index_dir), shards)


def open_tables(shards: Sequence[str], index_dir: str | None = None) -> list["FrameTable"]:
  """open_table of each shard (a bucket's in parallel)."""
  return _each(lambda shard: open_table(shard, index_dir), shards)


class FrameTable:
  """One shard's table, open for reads: the records in memory, the frames memory-mapped."""

  def __init__(self, shard: str, index_dir: str | None = None):
    self.shard = shard
    records = _path(shard, RECORDS_SUFFIX, index_dir)
    frames = _path(shard, FRAMES_SUFFIX, index_dir)
    self._descriptor = -1
    if shard_store.is_remote(shard):  # Reads: ranged reads of the object (shard_store).
      self.version = None  # checked at start-up (stale_reason), not at every open_table
    else:
      self._descriptor = os.open(shard, os.O_RDONLY)
      stat = os.fstat(self._descriptor)
      self.version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)  # of the file it reads
    self.records = _load(records)
    self.frames = _load(frames, mmap_mode="r")

  def close(self) -> None:
    if self._descriptor >= 0:
      os.close(self._descriptor)
      self._descriptor = -1

  def __del__(self) -> None:
    self.close()

  def _read(self, offset: int, size: int, record: int) -> bytes:
    if self._descriptor >= 0:
      data = os.pread(self._descriptor, size, offset)
    else:
      data = shard_store.read_range(self.shard, offset, size)
    if len(data) != size:
      raise UserError(
        f"{self.shard}: record {record} ends past the end of the file (the frame table says byte "
        f"{offset + size}); index the shard again: python -m vidtx.data.index_shards."
      )
    return data

  def context(self, record: int) -> tuple[bytes, int]:
    """(a SequenceExample holding the record's context, or the whole record when the table reads
    it whole; the number of frames, or WHOLE)."""
    offset, size, _, count = self.records[record].tolist()
    if count == WHOLE:
      row = offset - record_index._HEADER_BYTES, size + record_index._OVERHEAD_BYTES
      return record_index.read_record(self.shard, *row, record=record), WHOLE
    return self._read(offset, size, record), count

  def frame_bytes(self, record: int, indices: np.ndarray) -> list[bytes]:
    """The JPEG bytes of frames `indices` (each in [0, frames)) of `record`, read at their
    offsets in ascending order (in_parallel: together on a slow store), returned in the order
    asked."""
    _, _, first, count = self.records[record].tolist()
    if count == WHOLE or np.any((indices < 0) | (indices >= count)):
      raise ValueError(f"{self.shard}: record {record} has no frames {indices.tolist()}")
    rows = np.asarray(self.frames[first + np.asarray(indices, np.int64)]).tolist()  # (N, 2)
    order = np.argsort(indices, kind="stable").tolist()  # ascending offsets: issued in file order
    read = lambda position: self._read(*rows[position], record)  # noqa: E731
    data = [b""] * len(rows)
    for position, frame in zip(order, in_parallel(read, order), strict=True):
      data[position] = frame
    return data


def _load(path: str, mmap_mode: str | None = None) -> np.ndarray:
  """A table's array: memory-mapped from a local file (mmap_mode), read whole from a bucket."""
  if paths.is_url(path):
    return np.load(io.BytesIO(paths.read_bytes(path)), allow_pickle=False)
  return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


_POOL: list[concurrent.futures.ThreadPoolExecutor] = []  # made at the first parallel read
_POOL_LOCK = threading.Lock()
# Seconds a read took, a moving average over the process's recent reads (a race between threads
# loses an update at worst); it starts at 0: the first reads go in sequence and measure the store.
_read_seconds = [0.0]


def in_parallel(read: Callable, items: Sequence) -> list:
  """[read(item) for item in items]: on a slow store (reads slower than PARALLEL_ABOVE_SECONDS on
  average) in flight together in the process's read pool (READ_THREADS threads), issued in the
  order of `items`, else one after another. The first exception raised is raised."""

  def timed(item):
    start = time.perf_counter()
    result = read(item)
    _read_seconds[0] += 0.05 * (time.perf_counter() - start - _read_seconds[0])
    return result

  if len(items) < 2 or _read_seconds[0] < PARALLEL_ABOVE_SECONDS:
    return [timed(item) for item in items]
  with _POOL_LOCK:
    if not _POOL:
      _POOL.append(concurrent.futures.ThreadPoolExecutor(READ_THREADS, "vidtx-read"))
  return list(_POOL[0].map(timed, items))


def is_slow_store(shard: str, index_dir: str | None = None, reads: int = 4) -> bool:
  """Whether reads of `shard` take longer than PARALLEL_ABOVE_SECONDS: the median of `reads`
  reads of its first records' contexts (a few hundred bytes each), which also start the
  process's estimate that in_parallel follows."""
  table = open_table(shard, index_dir)
  records = np.flatnonzero(table.records[:, 3] != WHOLE)[:reads].tolist()  # not whole records
  seconds = []
  for record in records:
    start = time.perf_counter()
    table.context(record)
    seconds.append(time.perf_counter() - start)
    _read_seconds[0] += 0.05 * (seconds[-1] - _read_seconds[0])
  return bool(seconds) and float(np.median(seconds)) > PARALLEL_ABOVE_SECONDS


_OPEN: dict[tuple[str, str | None], FrameTable] = {}
_LOCK = threading.Lock()


def open_table(shard: str, index_dir: str | None = None) -> FrameTable:
  """The shard's table, opened once per process and shared by the reader's threads; opened again
  when the file at `shard` is another one (rewritten since: a new run of make_shards in the same
  process). The replaced table closes when the last read through it is done."""
  key = (shard, index_dir)
  if shard_store.is_remote(shard):  # A stat is a request: the version is checked at start-up.
    with _LOCK:
      if key not in _OPEN:
        _OPEN[key] = FrameTable(shard, index_dir)
      return _OPEN[key]
  stat = os.stat(shard)
  with _LOCK:
    table = _OPEN.get(key)
    if table is None or table.version != (stat.st_ino, stat.st_size, stat.st_mtime_ns):
      table = _OPEN[key] = FrameTable(shard, index_dir)
    return table
