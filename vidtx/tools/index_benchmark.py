r"""The cost of reading records at their offsets (vidtx.data.record_index) against TFRecordDataset.

  python -m vidtx.tools.index_benchmark --shards=DATA/train.tfrecord@4 --index_dir=DIR \
      [--passes=5] [--parallel=8] [--latency_ms=20]

Prints, per record: CPU ms (user + sys of this process, tf.data's threads included) and wall ms,
for (a) tf.data.TFRecordDataset reading the shards in order, (b) read_record in a Python loop
over the index in order, (c) record_index.tf_read_record in a tf.data parallel map over the
records in a shuffled order, (d) the same with `latency_ms` of added latency per read (a sleep
inside the read function: a simulated object store), whose wall time shows whether reads
overlap: about records x latency / parallel when they do, and (e) TensorFlow's own byte-range
reader (FixedLengthRecordDataset at the record's offset, in a parallel interleave), which checks
no checksum. The shards must be indexed
(python -m vidtx.data.index_shards). Every pass reads every record; the page cache is warm after
the first, so this measures the CPU cost of reading, not the disk.
"""

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np


def _timed(name: str, records: int, run: Callable[[], int]) -> dict:
  cpu, wall = time.process_time(), time.perf_counter()
  read = run()
  cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
  assert read == records, f"{name}: read {read} records, expected {records}"
  return {"name": name, "records": records, "cpu_ms": 1e3 * cpu / records, "wall_s": wall}


def measure(
  files: Sequence[str],
  index_dir: str | None,
  *,
  passes: int = 5,
  parallel: int = 8,
  latency_ms: float = 20.0,
  seed: int = 0,
) -> list[dict]:
  """The five rows described in the module's docstring."""
  import tensorflow as tf

  from vidtx.data import record_index

  rows = [record_index.load_index(file, index_dir) for file in files]
  file_of = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)])  # (N,)
  positions = np.concatenate(rows)  # (N, 2) [offset, size]
  total = len(positions) * passes
  order = np.random.default_rng(seed).permutation(np.tile(np.arange(len(positions)), passes))
  names = np.asarray(files)[file_of[order]]  # (passes * N,) file of each read, shuffled

  def sequential_tf() -> int:
    return sum(1 for _ in tf.data.TFRecordDataset(list(files) * passes))

  def indexed_python() -> int:
    count = 0
    for _ in range(passes):
      for file, (offset, size) in zip(np.asarray(files)[file_of], positions, strict=True):
        record_index.read_record(file, int(offset), int(size))
        count += 1
    return count

  def tf_map(read: Callable) -> Callable[[], int]:
    def run() -> int:
      dataset = tf.data.Dataset.from_tensor_slices(
        (names, positions[order, 0], positions[order, 1])
      ).map(read, num_parallel_calls=parallel, deterministic=True)
      # tf.data's shared pool has one thread per core: waiting reads need one thread each.
      options = tf.data.Options()
      options.threading.private_threadpool_size = parallel
      return sum(1 for _ in dataset.prefetch(parallel).with_options(options))

    return run

  in_flight = {"now": 0, "most": 0}  # Reads waiting on the slow store at once.
  lock = threading.Lock()

  def slow_read(file, offset, size):
    def read(file_bytes: bytes, offset_value: np.int64, size_value: np.int64) -> bytes:
      with lock:
        in_flight["now"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["now"])
      time.sleep(latency_ms / 1e3)  # The store's latency: the thread waits, the CPU does not.
      with lock:
        in_flight["now"] -= 1
      return record_index.read_record(file_bytes.decode(), int(offset_value), int(size_value))

    return tf.ensure_shape(tf.numpy_function(read, [file, offset, size], tf.string), [])

  file_bytes = np.asarray([os.path.getsize(file) for file in files])[file_of[order]]
  after = file_bytes - positions[order].sum(axis=1)  # (passes * N,) bytes after each record

  def pure_tf(file, offset, size, footer):
    # TensorFlow's own reader of one byte range: no Python, but no checksum either.
    record = tf.data.FixedLengthRecordDataset(file, size, header_bytes=offset, footer_bytes=footer)
    return record.map(lambda raw: tf.strings.substr(raw, 12, tf.cast(size, tf.int32) - 16))

  def tf_interleave() -> int:
    dataset = tf.data.Dataset.from_tensor_slices(
      (names, positions[order, 0], positions[order, 1], after)
    ).interleave(pure_tf, cycle_length=parallel, num_parallel_calls=parallel, deterministic=True)
    return sum(1 for _ in dataset.prefetch(parallel))

  sequential_tf()  # Warms the page cache and TensorFlow.
  return [
    _timed("(a) TFRecordDataset, in order", total, sequential_tf),
    _timed("(b) read_record, Python loop, in order", total, indexed_python),
    _timed(
      f"(c) tf_read_record, map x{parallel}, shuffled", total, tf_map(record_index.tf_read_record)
    ),
    dict(
      _timed(f"(d) as (c), +{latency_ms:g} ms per read", total, tf_map(slow_read)),
      most_in_flight=in_flight["most"],
    ),
    _timed(f"(e) FixedLengthRecordDataset x{parallel}, no CRC", total, tf_interleave),
  ]


def main(argv: Sequence[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(prog="python -m vidtx.tools.index_benchmark")
  parser.add_argument("--shards", required=True, help="A table name@N, or a glob.")
  parser.add_argument("--index_dir", default=None, help="Where index_shards put the indexes.")
  parser.add_argument("--passes", type=int, default=5, help="Reads of every record per row.")
  parser.add_argument("--parallel", type=int, default=8, help="Parallel reads of (c) and (d).")
  parser.add_argument("--latency_ms", type=float, default=20.0, help="Added latency of (d).")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  from vidtx.data import dmvr

  files = dmvr.expand_table("", args.shards)
  results = measure(
    files, args.index_dir, passes=args.passes, parallel=args.parallel, latency_ms=args.latency_ms
  )
  mean_mb = sum(os.path.getsize(f) for f in files) / results[0]["records"] * args.passes / 1e6
  print(f"{results[0]['records']} record reads of {mean_mb:.2f} MB on average")
  print(f"{'':44} {'CPU ms/record':>14} {'wall s':>8}")
  for row in results:
    print(f"{row['name']:44} {row['cpu_ms']:14.2f} {row['wall_s']:8.2f}")
  ideal = results[-1]["records"] * args.latency_ms / 1e3 / args.parallel
  print(f"(d)'s wall time if the {args.parallel} reads overlap fully: {ideal:.2f} s")
  return results


if __name__ == "__main__":
  main()
