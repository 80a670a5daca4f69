"""One training stream for any topology (dataset_configs.global_order): the stream is a function
of (seed, epoch, global position) only, not of the number of processes.

The split's records are numbered 0..N-1 in table order (its files in order, each file's records
in order: `record_table`). Epoch e visits them in a seeded order: `permute` is a bijection of
[0, N) keyed by (seed, e), a Feistel network on the next power of two with cycle walking, so
it needs O(1) memory: no array of N indices (a full int64 permutation of 10M records would be
80 MB per process and epoch). Global position q is record permute(q mod N) of epoch q // N.

Global batch s holds positions [s * B, (s + 1) * B); process p of P (local batch b = B / P)
reads positions [s * B + p * b, s * B + (p + 1) * b): the rows its devices hold
(`process_positions`). Each record is read through its shard's frame table (random access), and
every random choice for it is keyed by (seed, epoch, position in the epoch): the same clip, crop
and augmentation parameters on 1 process or 64.
"""

import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow as tf

from vidtx.data import frame_table, records
from vidtx.data.reader_config import DatasetConfig
from vidtx.errors import UserError

# Half-rounds of the Feistel network: each xors one half with a keyed hash of the other.
_HALF_ROUNDS = 8
_MASK32 = 0xFFFFFFFF
_HASH_MULTIPLIER = 0x45D9F3B  # < 2**27: a 32-bit value times it stays below 2**63 in int64


@dataclasses.dataclass(frozen=True)
class RecordTable:
  """A split's records in table order: record j is record j - starts[f] of files[f], for the f
  with starts[f] <= j < starts[f + 1]."""

  files: tuple[str, ...]
  counts: np.ndarray  # int64 (F,): records per file
  starts: np.ndarray  # int64 (F + 1,): cumulative counts, starts[0] = 0, starts[F] = N

  @property
  def total(self) -> int:
    return int(self.starts[-1])

  def locate(self, record_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(file index, record in that file) of each of the split's record ids (int64, any shape)."""
    file = np.searchsorted(self.starts, record_ids, side="right") - 1
    return file, record_ids - self.starts[file]


def _index_command(dc: DatasetConfig, split: str) -> str:
  table = dc.tables[split]
  shards = os.path.join(dc.base_dir, table if isinstance(table, str) else table[0])
  index_dir = f" --index_dir={dc.index_dir}" if dc.index_dir else ""
  return f"python -m vidtx.data.index_shards --shards={shards}{index_dir}"


def record_table(dc: DatasetConfig, split: str) -> RecordTable:
  """The split's record table from its shards' frame tables (vidtx.data.frame_table), which give
  the random access a global order needs. A shard without a current table (missing, or made
  before the shard changed) is a UserError naming it and the command that indexes the shards."""
  where = f"config.dataset_configs.tables.{split}={dc.tables[split]!r}"
  if records.is_tfds(dc):
    raise UserError(
      f"dataset_configs.global_order=True reads DMVR shards at random; {dc.dataset_name} is a "
      "TFDS split, which has no random access in vidtx. Write it as DMVR shards "
      "(python -m vidtx.data.make_shards) or set dataset_configs.global_order=False."
    )
  # A split without a record: named as the per-process stream names it (sizes, the config).
  records.check_split_has_records(dc, split, whole_split=True)
  files = records.split_files(dc, split)
  index_dir = dc.index_dir or None
  reasons = frame_table.stale_reasons(files, index_dir)  # a bucket's shards in parallel
  for file, reason in zip(files, reasons, strict=True):
    if reason is not None:
      raise UserError(
        f"dataset_configs.global_order=True needs a current frame table for every shard of "
        f"split {split!r} (random access to its records), but {file}: {reason} ({where}). "
        f"Index the shards: {_index_command(dc, split)}"
      )
    # parse_video and clip_jpegs find the shard's table through this (tensors carry no dir).
    records.read_through_tables(file, index_dir)
  tables = frame_table.open_tables(files, index_dir)
  counts = np.asarray([len(table.records) for table in tables], np.int64)
  starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  if starts[-1] == 0:
    raise UserError(
      f"Split {split!r} holds no record: its {len(files)} file(s) ({records.files_text(files)}) "
      f"have frame tables of 0 records ({where}). Write the split again (e.g. python -m "
      "vidtx.data.make_shards)."
    )
  return RecordTable(tuple(files), counts, starts)


def why_not(dc: DatasetConfig, split: str = "train") -> str | None:
  """Why the split cannot be read in global order, in words, or None when it can: DMVR shards (on a
  disk or in a bucket), each with a current frame table (what make_shards and the synthetic dataset
  write)."""
  if split not in dc.tables:
    return f"there is no {split!r} split"
  if records.is_tfds(dc):
    return f"{dc.dataset_name} is a TFDS split, which vidtx cannot read at random"
  files = records.split_files(dc, split)
  reasons = frame_table.stale_reasons(files, dc.index_dir or None)  # a bucket's in parallel
  for file, reason in zip(files, reasons, strict=True):
    if reason is not None:
      return f"{file} has no current frame table ({reason})"
  return None


def resolve(dc: DatasetConfig) -> DatasetConfig:
  """dc with global_order a bool: None (auto, the default) becomes True when the train split can
  be read in global order (`why_not`), else False; True and False stay."""
  if dc.global_order is not None:
    return dc
  return dataclasses.replace(dc, global_order=why_not(dc, "train") is None)


def per_process_note(dc: DatasetConfig, reason: str, fix: str | None = None) -> str:
  """The one line a run prints when global_order=None (auto) falls back to the per-process
  stream: why, and what gives the one stream (`fix`, else what the data needs: with the frame
  tables, clips also read only their frames instead of whole records)."""
  if fix is None and records.is_tfds(dc):
    fix = "write the split as DMVR shards (python -m vidtx.data.make_shards)"
  elif fix is None:
    fix = f"index the shards ({_index_command(dc, 'train')})"
  return (
    f"Note: the training stream is per process (its batches depend on the number of processes) "
    f"because {reason}; for one stream on any topology (dataset_configs.global_order): {fix}."
  )


def record_count(dc: DatasetConfig, split: str) -> int:
  """N, the split's records, from the frame tables this process has open (record_table checked
  them at start-up): one stat per shard, for a checkpoint's global position."""
  index_dir = dc.index_dir or None
  return sum(
    len(frame_table.open_table(f, index_dir).records) for f in records.split_files(dc, split)
  )


# ---------------------------------------------------------------------------------------------
# The epoch's order: a keyed bijection of [0, N), the same in numpy and in TF int64 ops.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Ops:
  """The integer ops the permutation needs, for numpy arrays or int64 tensors."""

  bit_and: Any
  bit_xor: Any
  shift_right: Any
  constant: Any


_NUMPY = _Ops(np.bitwise_and, np.bitwise_xor, np.right_shift, lambda x: np.int64(x))
_TF = _Ops(
  tf.bitwise.bitwise_and,
  tf.bitwise.bitwise_xor,
  tf.bitwise.right_shift,
  lambda x: tf.constant(x, tf.int64),
)


def _hash32(ops: _Ops, x):
  """A 32-bit integer hash (xor-shift-multiply) of x's low 32 bits; every product < 2**63."""
  mask, multiplier = ops.constant(_MASK32), ops.constant(_HASH_MULTIPLIER)
  sixteen = ops.constant(16)
  x = ops.bit_and(x, mask)
  x = ops.bit_and(ops.bit_xor(x, ops.shift_right(x, sixteen)) * multiplier, mask)
  x = ops.bit_and(ops.bit_xor(x, ops.shift_right(x, sixteen)) * multiplier, mask)
  return ops.bit_xor(x, ops.shift_right(x, sixteen))


def _bits(total: int) -> tuple[int, int]:
  """(high, low) bits of the Feistel halves: the smallest 2**(high + low) >= total, both >= 1."""
  width = max(int(total - 1).bit_length(), 2)
  return (width + 1) // 2, width // 2


def _round_keys(ops: _Ops, seed: int, epoch) -> list:
  """The half-rounds' 32-bit keys, from the seed (64 bits) and the epoch (int64)."""
  seed = int(seed) & 0xFFFFFFFFFFFFFFFF
  seed_low, seed_high = ops.constant(seed & _MASK32), ops.constant(seed >> 32)
  epoch_low = ops.bit_and(epoch, ops.constant(_MASK32))
  epoch_high = ops.shift_right(epoch, ops.constant(32))
  keys = []
  for i in range(_HALF_ROUNDS):
    key = _hash32(ops, _hash32(ops, ops.constant(i)) + seed_low)
    key = _hash32(ops, _hash32(ops, key + seed_high) + epoch_low)
    keys.append(_hash32(ops, key + epoch_high))
  return keys


def _feistel(ops: _Ops, x, keys: list, high_bits: int, low_bits: int):
  """One pass of the network over [0, 2**(high + low)): each half-round xors one half with the
  keyed hash of the other (each step is its own inverse given the other half: a bijection)."""
  low_mask, high_mask = ops.constant((1 << low_bits) - 1), ops.constant((1 << high_bits) - 1)
  high, low = ops.shift_right(x, ops.constant(low_bits)), ops.bit_and(x, low_mask)
  for i, key in enumerate(keys):
    if i % 2 == 0:
      high = ops.bit_xor(high, ops.bit_and(_hash32(ops, low + key), high_mask))
    else:
      low = ops.bit_xor(low, ops.bit_and(_hash32(ops, high + key), low_mask))
  return high * ops.constant(1 << low_bits) + low


def permute_numpy(indices: np.ndarray, total: int, seed: int, epoch: int) -> np.ndarray:
  """int64: epoch `epoch`'s permutation of [0, total) applied to `indices` (each in [0, total));
  `permute`'s numbers, in numpy (tests, tools)."""
  high_bits, low_bits = _bits(total)
  keys = _round_keys(_NUMPY, seed, np.int64(epoch))
  x = _feistel(_NUMPY, np.asarray(indices, np.int64), keys, high_bits, low_bits)
  outside = x >= total
  # Cycle walking: the domain is < 2 * total, so under 2 passes per index on average.
  while np.any(outside):
    x[outside] = _feistel(_NUMPY, x[outside], keys, high_bits, low_bits)
    outside = x >= total
  return x


def permute(index: tf.Tensor, total: int, seed: int, epoch: tf.Tensor) -> tf.Tensor:
  """int64 scalar: where position `index` (in [0, total)) of epoch `epoch` (int64 scalar) goes,
  in TF ops (runs inside tf.data); permute_numpy gives the same numbers."""
  high_bits, low_bits = _bits(total)
  keys = _round_keys(_TF, seed, tf.cast(epoch, tf.int64))

  def step(x):
    return _feistel(_TF, x, keys, high_bits, low_bits)

  (walked,) = tf.while_loop(lambda x: x >= total, lambda x: (step(x),), (step(index),))
  return walked


# ---------------------------------------------------------------------------------------------
# This process's elements of the global stream.
# ---------------------------------------------------------------------------------------------


def process_positions(
  step: int, global_batch: int, process_index: int, process_count: int
) -> tuple[int, int]:
  """[first, end) of the global positions that process p reads for global batch `step`."""
  local = global_batch // process_count
  first = step * global_batch + process_index * local
  return first, first + local


def global_position_after(position: tuple[int, int], total: int, global_batch: int) -> int:
  """The global position after the global batch that ends with this process's batch:
  `position` is bad_records.next_position of it ((epoch, index after its last element))."""
  epoch, index = position
  after = int(epoch) * total + int(index)  # after this process's last element
  return -(-after // global_batch) * global_batch  # the end of the global batch that holds it


def pointers(
  table: RecordTable,
  *,
  seed: int,
  global_batch: int,
  process_index: int,
  process_count: int,
  start: int,
  split: str = "train",
) -> tf.data.Dataset:
  """(epoch, index in the epoch, {'file', 'record', 'source'}) of this process's positions of
  the global stream from global position `start` (a multiple of global_batch) on, infinite."""
  if global_batch % process_count:
    raise UserError(
      f"batch_size={global_batch} does not split over {process_count} processes; with "
      "dataset_configs.global_order each process reads an equal share of every global batch."
    )
  if start % global_batch:
    raise UserError(
      f"A global-order stream starts at a global batch boundary: position {start} is not a "
      f"multiple of batch_size={global_batch}."
    )
  local = global_batch // process_count
  first_local = (start // global_batch) * local  # this process's elements before `start`
  at = record_at(table, seed=seed, split=split)

  def element(local_position):
    # The k-th element of this process is row k % b of global batch k // b.
    step, row = local_position // local, local_position % local
    position = step * global_batch + process_index * local + row
    epoch, index = position // table.total, position % table.total
    return epoch, index, at(epoch, index)

  # Positions stay below 2**62: no int64 overflow for any process count.
  return tf.data.Dataset.range(first_local, 2**62 // process_count).map(element)


def record_at(table: RecordTable, *, seed: int, split: str = "train"):
  """A TF function (epoch, index in the epoch) -> {'file', 'record', 'source'} of the record at
  that position of the seeded order (int64 scalars in, runs inside tf.data)."""
  total = table.total
  names = tf.constant(table.files)
  starts = tf.constant(table.starts, tf.int64)

  def at(epoch: tf.Tensor, index: tf.Tensor) -> dict[str, tf.Tensor]:
    record_id = permute(index, total, seed, epoch)
    file = tf.searchsorted(starts, tf.reshape(record_id, [1]), side="right")[0] - 1
    record = record_id - starts[file]
    return {
      "file": names[file],
      "record": record,
      "source": tf.strings.join(
        [f"split={split}, file=", names[file], ", record ", tf.strings.as_string(record)]
      ),
    }

  return at
