"""DMVR / MediaSequence video format: vidtx's own writer and reader.

One video is one `tf.train.SequenceExample`:
  feature list `image/encoded`   one JPEG string per frame
  context `clip/label/index`     int64 label index (or several, multi-label)
  context `clip/label/text`      optional class name
  context `video/filename`       optional video id
Shards are named `name.tfrecord-00000-of-00016`; a table `name.tfrecord@16` refers to all of them.
This is the format scenic's ViViT reads, so datasets written here and by DMVR converters are
interchangeable.
"""

import functools
import glob
import os
import re
import struct
import uuid
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from vidtx.data import frame_table, shard_store
from vidtx.errors import UserError

IMAGE_KEY = "image/encoded"
LABEL_INDEX_KEY = "clip/label/index"
LABEL_TEXT_KEY = "clip/label/text"
VIDEO_ID_KEY = "video/filename"
START_KEY = "clip/start/timestamp"  # microseconds, as DMVR writes them
END_KEY = "clip/end/timestamp"
# Not in DMVR's schema (other readers ignore it): the rate the frames were stored at, which
# TimeSformer's sampling needs to turn "1 frame in 32 at 30 fps" into frame indices.
FRAME_RATE_KEY = "video/frame_rate"

_SHARDED_TABLE = re.compile(r"^(?P<name>.+)@(?P<num_shards>\d+)$")


# ---------------------------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------------------------


@functools.cache
def _jpeg_encoder(quality: int):
  """A compiled batch JPEG encoder; one graph call is much cheaper than one eager op per frame."""

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], autograph=False)
  def encode(frames):
    return tf.map_fn(
      lambda frame: tf.io.encode_jpeg(frame, quality=quality),
      frames,
      fn_output_signature=tf.string,
      parallel_iterations=16,
    )

  return encode


def encode_jpegs(frames: np.ndarray, quality: int = 90) -> list[bytes]:
  """Encodes uint8 frames (N, H, W, 3) as a list of N JPEG strings."""
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise UserError(
      f"frames must be uint8 with shape (N, H, W, 3), got {frames.dtype} {frames.shape}."
    )
  if not 1 <= quality <= 100:
    raise UserError(f"jpeg_quality must be in [1, 100], got {quality}.")
  if frames.shape[0] == 0:
    return []
  return list(_jpeg_encoder(int(quality))(frames).numpy())


def sequence_example_from_jpegs(
  jpegs: Sequence[bytes],
  labels: int | Sequence[int],
  *,
  label_text: str | None = None,
  video_id: str | None = None,
  start_us: int | None = None,
  end_us: int | None = None,
  frame_rate: float | None = None,
) -> bytes:
  """Serialises already encoded frames and labels as a DMVR SequenceExample.

  `start_us` / `end_us`: where the clip sits in its source video (microseconds); `frame_rate`:
  frames per second of the stored frames.
  """
  if len(jpegs) == 0:
    raise UserError("A video needs at least one frame, got none.")
  labels = [int(labels)] if np.ndim(labels) == 0 else [int(x) for x in labels]
  if not labels:
    raise UserError("labels must hold at least one label index, got an empty sequence.")
  example = tf.train.SequenceExample()
  context = example.context.feature
  context[LABEL_INDEX_KEY].int64_list.value.extend(labels)
  if label_text is not None:
    context[LABEL_TEXT_KEY].bytes_list.value.append(label_text.encode("utf-8"))
  if video_id is not None:
    context[VIDEO_ID_KEY].bytes_list.value.append(video_id.encode("utf-8"))
  if start_us is not None:
    context[START_KEY].int64_list.value.append(int(start_us))
  if end_us is not None:
    context[END_KEY].int64_list.value.append(int(end_us))
  if frame_rate is not None:
    if not frame_rate > 0:
      raise UserError(f"frame_rate must be > 0, got {frame_rate}.")
    context[FRAME_RATE_KEY].float_list.value.append(float(frame_rate))
  frame_list = example.feature_lists.feature_list[IMAGE_KEY]
  for jpeg in jpegs:
    frame_list.feature.add().bytes_list.value.append(jpeg)
  # deterministic: the same video serialises to the same bytes in every process (reproducible
  # shards from parallel converters).
  return example.SerializeToString(deterministic=True)


def make_sequence_example(
  frames: np.ndarray,
  labels: int | Sequence[int],
  *,
  label_text: str | None = None,
  video_id: str | None = None,
  jpeg_quality: int = 90,
  **context,
) -> bytes:
  """Encodes uint8 frames (T, H, W, 3) as JPEGs and serialises one DMVR SequenceExample.

  `context`: start_us, end_us, frame_rate, as `sequence_example_from_jpegs` takes them.
  """
  return sequence_example_from_jpegs(
    encode_jpegs(frames, jpeg_quality), labels, label_text=label_text, video_id=video_id, **context
  )


def write_text_atomically(path: str, text: str) -> None:
  """Writes `text` to `path` (local or gs://) through a temporary file renamed into place, so a
  reader never sees half of it (labels.txt, dataset summaries)."""
  temporary = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
  with tf.io.gfile.GFile(temporary, "w") as f:
    f.write(text)
  tf.io.gfile.rename(temporary, path, overwrite=True)


def shard_names(path: str, num_shards: int) -> list[str]:
  """`path-00000-of-0000N` for every shard, as DMVR names them."""
  return [f"{path}-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]


def write_shards(
  serialized_examples: Iterable[bytes], path: str, num_shards: int, *, overwrite: bool = False
) -> list[str]:
  """Writes examples round-robin into `num_shards` TFRecord files named `path-0000i-of-0000N`.

  Each shard is written under a temporary name in the same directory and renamed only once every
  shard is complete, so a crash never leaves a half-written file under a final name. An existing
  shard is replaced only with `overwrite` (a caller that owns the directory: vidtx.ownership);
  otherwise FileExistsError names it before anything is written.

  Returns:
    The shard file names.
  """
  if num_shards < 1:
    raise UserError(f"num_shards must be >= 1, got {num_shards}.")
  directory = os.path.dirname(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  final_names = shard_names(path, num_shards)
  existing = [name for name in final_names if tf.io.gfile.exists(name)]
  if existing and not overwrite:
    raise FileExistsError(
      f"{existing[0]} exists ({len(existing)} of the {num_shards} shards "
      "do); vidtx does not replace shards it was not asked to replace."
    )
  # A unique suffix keeps two concurrent writers of the same dataset from sharing temp files.
  suffix = f".tmp-{uuid.uuid4().hex[:12]}"
  temp_names = [name + suffix for name in final_names]
  writers = [tf.io.TFRecordWriter(name) for name in temp_names]
  # Per shard, each record's data size and scan: its record index and frame table.
  sizes, scans = [[] for _ in range(num_shards)], [[] for _ in range(num_shards)]
  local = "://" not in path
  try:
    for i, serialized in enumerate(serialized_examples):
      writers[i % num_shards].write(serialized)
      if local:
        sizes[i % num_shards].append(len(serialized))
        scans[i % num_shards].append(frame_table.scan_record(serialized))
    for writer in writers:
      writer.close()
    for shard, (temp, final) in enumerate(zip(temp_names, final_names, strict=True)):
      tf.io.gfile.rename(temp, final, overwrite=True)
      if local:  # The record index and frame table, for random access and frame reads.
        frame_table.write_new_shard_tables(final, sizes[shard], scans[shard], os.stat(final))
  except BaseException:
    for writer in writers:
      writer.close()
    for temp in temp_names:
      if tf.io.gfile.exists(temp):
        tf.io.gfile.remove(temp)
    raise
  return final_names


# ---------------------------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------------------------


def is_sharded_table(table: str) -> bool:
  """Whether `table` is written `name@num_shards`."""
  return _SHARDED_TABLE.match(table) is not None


def expand_table(base_dir: str, table: str | Sequence[str]) -> list[str]:
  """The files of a table: `name@N` -> its N shards; otherwise a glob; a list -> those files.

  Names are relative to `base_dir` (absolute names and gs:// paths are kept as they are). One
  listing per table (`tf.io.gfile.glob`), never a request per shard: 1024 shards on a bucket
  are one list call, not 1024 stats.
  """
  if not isinstance(table, str):
    files = []
    for entry in table:
      files.extend(expand_table(base_dir, entry))
    return files
  match = _SHARDED_TABLE.match(table)
  if match:
    num_shards = int(match.group("num_shards"))
    if num_shards < 1:
      raise UserError(f"Table {table!r} asks for {num_shards} shards; expected at least 1.")
    path = os.path.join(base_dir, match.group("name"))
    files = shard_names(path, num_shards)
    # The name escaped: a '[' or '*' in it is a character, not a pattern.
    listed = set(_glob(f"{glob.escape(path)}-*-of-{num_shards:05d}"))
    missing = [name for name in files if name not in listed]
    if missing:
      raise UserError(
        f"Shard {missing[0]} of table {table!r} does not exist ({len(missing)} of its "
        f"{num_shards} shards are missing; base_dir={base_dir!r})."
      )
    return files
  pattern = os.path.join(base_dir, table)
  files = sorted(_glob(pattern))
  if not files:
    raise UserError(
      f"Table {table!r} matches no file: {pattern} does not exist (base_dir={base_dir!r})."
    )
  return files


def _glob(pattern: str) -> list[str]:
  """tf.io.gfile.glob; a bucket's listing through epath (shard_store: gcsfs with
  EPATH_USE_TF=0, which, unlike TensorFlow's GCS file system, reaches a GCS emulator)."""
  return shard_store.glob(pattern) if "://" in pattern else tf.io.gfile.glob(pattern)


def parse_sequence_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  """Parses one serialised DMVR SequenceExample inside tf.data, without judging it.

  Returns {'jpegs': string (T,) encoded frames, 'labels': int64 (L,) label indices,
  'video_id': string (), 'frame_rate': float32 () (0 when the record does not say)}. A video
  without frames or labels parses to empty tensors; the reader decides what to do with it. A
  string that is not a SequenceExample fails (InvalidArgumentError).
  """
  context, sequence = tf.io.parse_single_sequence_example(
    serialized,
    context_features={
      LABEL_INDEX_KEY: tf.io.VarLenFeature(tf.int64),
      VIDEO_ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
      FRAME_RATE_KEY: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    },
    # allow_missing: a video without the feature list reaches the reader's clear check.
    sequence_features={IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)},
  )
  return {
    "jpegs": sequence[IMAGE_KEY],
    "labels": tf.sparse.to_dense(context[LABEL_INDEX_KEY]),
    "video_id": context[VIDEO_ID_KEY],
    "frame_rate": context[FRAME_RATE_KEY],
  }


# ---------------------------------------------------------------------------------------------
# Checking TFRecord files (after a read error: TF's messages name no file).
# ---------------------------------------------------------------------------------------------

# A TFRecord is a sequence of [length: uint64 LE][masked CRC32C of length: uint32 LE][data]
# [masked CRC32C of data: uint32 LE]; a file with a record has at least these 16 bytes.
RECORD_HEADER_BYTES = 12
MIN_RECORD_BYTES = RECORD_HEADER_BYTES + 4


@functools.cache
def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli, reflected.
    table.append(crc)
  return tuple(table)


def _masked_crc32c(data: bytes) -> int:
  """TFRecord's checksum: CRC32C, rotated and offset ("masked"). Pure Python: only ever run on
  the 8 bytes of a record's length."""
  table, crc = _crc32c_table(), 0xFFFFFFFF
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class TFRecordCheck(NamedTuple):
  """What `check_tfrecord` found in one file."""

  path: str
  size: int  # bytes
  records: int  # complete records before the damage (all of them when ok)
  ok: bool
  problem: str = ""  # what is wrong, when not ok
  record_index: int | None = None  # the damaged record (= records), when not ok
  offset: int | None = None  # the byte where the damaged record starts, when not ok


def _headers(path: str, size: int) -> Iterable[tuple[int, int, int | None, str]]:
  """(record index, offset, data length or None, problem) of each record header of the
  `size`-byte file, in order; a damaged one (problem set) ends the walk. Seeks past the data
  instead of reading it."""
  index = offset = 0
  with tf.io.gfile.GFile(path, "rb") as f:
    while offset < size:
      f.seek(offset)
      header = f.read(RECORD_HEADER_BYTES)
      if len(header) < RECORD_HEADER_BYTES:
        # TF's reader takes this for the end of the file: the rest is silently lost.
        yield (
          index,
          offset,
          None,
          (
            f"truncated in the header of record {index} at byte {offset}: the file ends "
            f"{size - offset} bytes into its {RECORD_HEADER_BYTES}-byte header"
          ),
        )
        return
      length, crc = struct.unpack("<QI", header)
      if _masked_crc32c(header[:8]) != crc:
        yield (
          index,
          offset,
          None,
          (
            f"the header of record {index} at byte {offset} is corrupt (its length checksum "
            "does not match: overwritten bytes, or not a TFRecord file)"
          ),
        )
        return
      end = offset + RECORD_HEADER_BYTES + length + 4
      if end > size:
        yield (
          index,
          offset,
          length,
          (
            f"truncated in the data of record {index} at byte {offset}: the record needs "
            f"{end - offset} bytes, the file has {size - offset} left"
          ),
        )
        return
      yield index, offset, length, ""
      index, offset = index + 1, end


def check_tfrecord(path: str) -> TFRecordCheck:
  """Walks the record headers of the TFRecord file `path` (local or gs://): whether it ends
  cleanly after its last record and, if not, which record is damaged, where and how (truncated
  in a header or in the data, or a corrupt header). Reads 12 bytes per record, not the data
  (whose checksums are therefore not checked: `record_with_data_at` finds the record of TF's
  "corrupted record at N")."""
  size = tf.io.gfile.stat(path).length
  records = 0
  for index, offset, _, problem in _headers(path, size):
    if problem:
      return TFRecordCheck(path, size, index, False, problem, index, offset)
    records = index + 1
  return TFRecordCheck(path, size, records, True)


def count_records(path: str) -> int:
  """The complete records of the TFRecord file `path`, from its record headers (12 bytes read per
  record, the data skipped): what TF's reader yields before any damage."""
  return check_tfrecord(path).records


def record_with_data_at(path: str, data_offset: int) -> int | None:
  """The index of the record of `path` whose data starts at byte `data_offset` (TF's
  "corrupted record at N" of a data checksum), or None when no record's data starts there."""
  for index, offset, _, problem in _headers(path, tf.io.gfile.stat(path).length):
    if problem or offset + RECORD_HEADER_BYTES > data_offset:
      return None
    if offset + RECORD_HEADER_BYTES == data_offset:
      return index
  return None
