"""Random access to TFRecord shards: one index per shard, and reading one record at its offset.

The index is DALI's tfrecord index (the file its `tfrecord2idx` tool writes): text, one line per
record, `offset size`, where `offset` is the byte at which the record's 12-byte header starts and
`size` the whole record's bytes (8 of length, 4 of its CRC, the data, 4 of the data's CRC). DALI
and the `tfrecord` package read it as it is. It has no header, so what the index was made from
(the shard's size and modification time) is in a sidecar JSON beside it (`NAME.idx.json`).

Both live in the split's hidden stats folder, where neither a table `split.tfrecord@N` nor a glob
`split.*` can match them: OUT/train_shards/train.tfrecord-00003-of-00016.idx for the shard
OUT/train.tfrecord-00003-of-00016 (or under another `index_dir`, with the same layout).
"""

import json
import os
import struct
import time
from collections.abc import Iterator, Sequence

import google_crc32c
import numpy as np

from vidtx import paths
from vidtx.data import shard_store
from vidtx.errors import UserError

INDEX_SUFFIX = ".idx"
SIDECAR_SUFFIX = ".idx.json"
_HEADER_BYTES = 12  # uint64 length, uint32 masked CRC32C of the length.
_FOOTER_BYTES = 4  # uint32 masked CRC32C of the data.
_OVERHEAD_BYTES = _HEADER_BYTES + _FOOTER_BYTES


def index_path(shard: str, index_dir: str | None = None) -> str:
  """DIR/train_shards/train.tfrecord-00003-of-00016.idx for DIR/train.tfrecord-00003-of-00016;
  `index_dir` replaces DIR (shards in a folder vidtx may not write into)."""
  directory, name = os.path.split(shard)
  folder = name.split(".tfrecord-")[0] + "_shards"
  return os.path.join(directory if index_dir is None else index_dir, folder, name + INDEX_SUFFIX)


def sidecar_path(index: str) -> str:
  return index.removesuffix(INDEX_SUFFIX) + SIDECAR_SUFFIX


def rows_from_sizes(data_sizes: Sequence[int]) -> np.ndarray:
  """The (N, 2) int64 [offset, size] rows of a file whose records hold `data_sizes` bytes of data
  each, written back to back from byte 0 (as tf.io.TFRecordWriter writes, uncompressed)."""
  sizes = np.asarray(data_sizes, np.int64).reshape(-1) + _OVERHEAD_BYTES  # (N,)
  offsets = np.cumsum(sizes) - sizes  # (N,): each record starts where the previous ends.
  return np.stack([offsets, sizes], axis=1)  # (N, 2)


def scan_shard(shard: str) -> np.ndarray:
  """The (N, 2) int64 [offset, size] rows of the TFRecord file `shard`, from its record headers
  (12 bytes read per record, the data skipped); UserError naming a damaged record."""
  from vidtx.data import dmvr  # TensorFlow: only for shards made elsewhere.

  size = os.path.getsize(shard)
  rows = []
  for _, offset, length, problem in dmvr._headers(shard, size):
    if problem:
      raise UserError(
        f"{shard}: {problem}; cannot index it. Re-create the shard (or drop it from the table)."
      )
    rows.append((offset, length + _OVERHEAD_BYTES))
  return np.asarray(rows, np.int64).reshape(-1, 2)  # (N, 2), also when N == 0.


def write_atomically(path: str, content: str | bytes) -> None:
  """Writes `content` to `path` whole or not at all (a hidden temporary file renamed into place;
  in a bucket one upload): the indexes here, the frame tables of vidtx.data.frame_table."""
  data = content.encode("utf-8") if isinstance(content, str) else content
  shard_store.write_atomically(path, data)


def shard_version(shard_stat: "os.stat_result | dict") -> dict:
  """The sidecar's fields for the shard's version: from os.stat of a local shard, or
  shard_store.version (a shard in a bucket)."""
  if isinstance(shard_stat, dict):
    return dict(shard_stat)
  return {"shard_bytes": shard_stat.st_size, "shard_mtime_ns": shard_stat.st_mtime_ns}


def write_index(index: str, rows: np.ndarray, shard_stat: "os.stat_result | dict") -> None:
  """Writes `rows` as DALI's index at `index`, then its sidecar with the shard's version (size
  and mtime, or a bucket's generation: shard_version), both atomically: a reader sees a whole
  index or none."""
  paths.makedirs(os.path.dirname(index))
  write_atomically(index, "".join(f"{offset} {size}\n" for offset, size in rows.tolist()))
  sidecar = {
    "shard": os.path.basename(index).removesuffix(INDEX_SUFFIX),
    **shard_version(shard_stat),
    "records": len(rows),
    "format": "DALI tfrecord index: one 'offset size' line per record",
    "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }
  write_atomically(sidecar_path(index), json.dumps(sidecar, indent=1) + "\n")


def read_index(index: str) -> np.ndarray:
  """The (N, 2) int64 [offset, size] rows of DALI's index file `index`; UserError naming the line
  when one is not two whole numbers."""
  try:
    lines = paths.read_text(index).splitlines()
  except FileNotFoundError:
    raise UserError(
      f"{index}: no such record index; write it with python -m vidtx.data.index_shards."
    ) from None
  rows = np.zeros((len(lines), 2), np.int64)
  for number, line in enumerate(lines):
    fields = line.split()
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
      raise UserError(
        f"{index}, line {number + 1}: {line!r} is not 'offset size' (two whole numbers); "
        "write the index again with python -m vidtx.data.index_shards."
      )
    rows[number] = int(fields[0]), int(fields[1])
  return rows


def stale_reason(shard: str, index: str) -> str | None:
  """Why the index at `index` no longer describes `shard` (its size or version changed since, or
  it has no sidecar), or None when it still does. Reads two small files and one stat."""
  try:
    recorded = json.loads(paths.read_text(sidecar_path(index)))
  except (OSError, ValueError):
    return f"its sidecar {sidecar_path(index)} is missing or unreadable"
  return shard_store.changed(recorded, shard_store.version(shard), "the index")


def load_index(shard: str, index_dir: str | None = None) -> np.ndarray:
  """The rows of `shard`'s index, after checking that it still describes the shard; UserError
  naming both files otherwise."""
  index = index_path(shard, index_dir)
  rows = read_index(index)
  reason = stale_reason(shard, index)
  if reason is None and len(rows) and rows[-1].sum() != (size := shard_store.size(shard)):
    reason = f"its records end at byte {rows[-1].sum()}, the shard has {size}"
  if reason:
    raise UserError(
      f"{index} disagrees with {shard}: {reason}. Index it again: python -m "
      f"vidtx.data.index_shards --shards={shard}"
      + (f" --index_dir={index_dir}" if index_dir else "")
    )
  return rows


def masked_crc32c(data: bytes) -> int:
  """TFRecord's checksum: CRC32C rotated right by 15 bits plus a constant ("masked")."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_record(file: str, offset: int, size: int, *, record: int | None = None) -> bytes:
  """The data of the record whose `size` bytes start at byte `offset` of `file` (local or in a
  bucket: vidtx.data.shard_store), both checksums checked; UserError naming the file, the record
  (its number `record` when given) and what is wrong."""
  return _checked(file, shard_store.read_range(file, offset, size), offset, size, record)


def _checked(file: str, raw: bytes, offset: int, size: int, record: int | None) -> bytes:
  """The data of the record `raw` (read at `offset`, `size` bytes asked for), both checksums
  checked (read_record)."""
  which = f"the record at byte {offset}" if record is None else f"record {record} (byte {offset})"
  fix = "re-create the shard, or index it again if it was replaced"
  if len(raw) != size or size < _OVERHEAD_BYTES:
    raise UserError(
      f"{file}: {which} is truncated: the index says {size} bytes, the file has {len(raw)} "
      f"there; {fix}."
    )
  length, length_crc = struct.unpack("<QI", raw[:_HEADER_BYTES])
  if masked_crc32c(raw[:8]) != length_crc:
    raise UserError(
      f"{file}: {which} has a corrupt header (its length checksum does not match: overwritten "
      f"bytes, or the index does not point at a record); {fix}."
    )
  if length + _OVERHEAD_BYTES != size:
    raise UserError(
      f"{file}: {which} holds {length} bytes of data, the index says {size - _OVERHEAD_BYTES}: "
      f"the index does not match the shard; {fix}."
    )
  data = raw[_HEADER_BYTES:-_FOOTER_BYTES]
  (data_crc,) = struct.unpack("<I", raw[-_FOOTER_BYTES:])
  if masked_crc32c(data) != data_crc:
    raise UserError(
      f"{file}: {which} is corrupt (its data checksum does not match: overwritten bytes); {fix}."
    )
  return data


def stream_records(shard: str) -> Iterator[tuple[int, int, bytes]]:
  """(offset, size, data) of every record of the TFRecord file `shard`, read front to back in
  one stream (in a bucket one download, not a request per record), both checksums checked;
  UserError naming the damaged record."""
  total, offset, number = shard_store.size(shard), 0, 0
  with shard_store.open_binary(shard) as f:
    while offset < total:
      which = f"record {number} (byte {offset})"
      header = f.read(_HEADER_BYTES)
      problem = None
      if len(header) < _HEADER_BYTES:
        problem = f"{which} is truncated in its header ({len(header)} of {_HEADER_BYTES} bytes)"
      elif masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
        problem = f"{which} has a corrupt header (its length checksum does not match)"
      else:
        size = struct.unpack("<Q", header[:8])[0] + _OVERHEAD_BYTES
        if size > total - offset:
          problem = f"{which} is truncated: it needs {size} bytes, the file has {total - offset}"
      if problem:
        raise UserError(
          f"{shard}: {problem}; cannot index it. Re-create the shard (or drop it from the table)."
        )
      raw = header + f.read(size - _HEADER_BYTES)
      yield offset, size, _checked(shard, raw, offset, size, number)
      offset, number = offset + size, number + 1


def tf_read_record(file, offset, size):
  """read_record inside tf.data: (scalar string, int64, int64) tensors -> the record's data, a
  scalar string tensor. Runs Python (tf.numpy_function): parallel map calls overlap in their
  reads, which release the GIL. On a store with latency, give the dataset a private thread pool
  of at least num_parallel_calls threads (tf.data.Options().threading.private_threadpool_size):
  the shared one has a thread per core, and a waiting read holds its thread."""
  import tensorflow as tf  # noqa: PLC0415 - only the tf.data side needs it.

  def read(file_bytes: bytes, offset_value: np.int64, size_value: np.int64) -> bytes:
    return read_record(file_bytes.decode("utf-8"), int(offset_value), int(size_value))

  data = tf.numpy_function(read, [file, offset, size], tf.string, stateful=False)
  return tf.ensure_shape(data, [])
