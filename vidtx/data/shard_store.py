"""Shard files on a local disk or in a bucket (gs://): what version a shard is, byte ranges of
it, and the listing of a table, for the record indexes and frame tables (random access).

Local paths go through `os`, as they always did. URLs go through etils' epath: TensorFlow's GCS
file system by default, or fsspec's gcsfs with EPATH_USE_TF=0 (which, unlike TensorFlow's, can be
pointed at a GCS emulator with STORAGE_EMULATOR_HOST: the tests do). A range read is one ranged
GET (gcsfs cat_file) or a seek and read on a handle kept per thread (TensorFlow's GFile); reads
of many frames are put in flight together by frame_table.in_parallel.

A shard's version is what its store can tell: size and mtime (ns) on a disk; on GCS through
gcsfs size, generation (a new one each time the object is written) and mtime; through
TensorFlow size and mtime. Versions are compared on the fields both sides have (`changed`).
"""

import os
import threading
from typing import IO

from vidtx import paths


def is_remote(path: str) -> bool:
  return paths.is_url(path)


def _fsspec(path: str):
  """The fsspec file system epath reads the URL `path` with, or None when epath goes through
  TensorFlow's GCS file system."""
  from etils import epath
  from etils.epath import backend

  chosen = epath.Path(path)._backend  # noqa: SLF001 - the backend epath picked for this URL.
  return chosen.fs(path) if chosen is backend.fsspec_backend else None


def version(path: str) -> dict[str, int | str]:
  """The shard's size and version as recorded in a sidecar: shard_bytes, and shard_mtime_ns
  and/or shard_generation (module docstring). FileNotFoundError when it does not exist."""
  if not is_remote(path):
    stat = os.stat(path)
    return {"shard_bytes": stat.st_size, "shard_mtime_ns": stat.st_mtime_ns}
  fs = _fsspec(path)
  if fs is None:
    import tensorflow as tf  # noqa: PLC0415 - TensorFlow's GCS file system.

    try:
      stat = tf.io.gfile.stat(path)
    except tf.errors.NotFoundError:
      raise FileNotFoundError(path) from None
    return {"shard_bytes": int(stat.length), "shard_mtime_ns": int(stat.mtime_nsec)}
  fs.invalidate_cache(path)  # gcsfs caches listings: ask the store, not what it said before.
  info = fs.info(path)
  found: dict[str, int | str] = {"shard_bytes": int(info["size"])}
  if info.get("generation") is not None:
    found["shard_generation"] = str(info["generation"])
  if info.get("mtime") is not None:  # a datetime (GCS's `updated`)
    found["shard_mtime_ns"] = int(round(info["mtime"].timestamp() * 1e6)) * 1000
  return found


def size(path: str) -> int:
  """The file's (object's) bytes."""
  return os.path.getsize(path) if not is_remote(path) else int(version(path)["shard_bytes"])


def changed(recorded: dict, current: dict, made: str = "the table") -> str | None:
  """How the shard `current` (version) differs from what the sidecar of `made` (in words: "the
  index") recorded, in words, or None when it is the same: the same size, and the same
  generation or mtime (those both have)."""
  if recorded.get("shard_bytes") != current["shard_bytes"]:
    was = recorded.get("shard_bytes")
    return f"the shard has {current['shard_bytes']} bytes, {made} was made from {was}"
  keys = ("shard_generation", "shard_mtime_ns")
  both = [key for key in keys if key in recorded and key in current]
  if not both:
    return f"{made}'s sidecar does not record the shard's version (generation or mtime)"
  for key in both:
    if recorded[key] != current[key]:
      what = "generation" if key == "shard_generation" else "mtime"
      return f"the shard was modified after {made} was made (its {what} differs)"
  return None


_HANDLES = threading.local()  # TensorFlow's GFile handles of this thread, by path
# Handles kept open per thread: each holds TensorFlow's 512 KiB read buffer.
HANDLES_PER_THREAD = 8


def read_range(path: str, offset: int, length: int) -> bytes:
  """Bytes [offset, offset + length) of the file (object) `path`; fewer at its end."""
  if not is_remote(path):
    with open(path, "rb") as f:
      return os.pread(f.fileno(), length, offset)
  fs = _fsspec(path)
  if fs is not None:
    return fs.cat_file(path, start=offset, end=offset + length)  # one ranged GET
  return gfile_range(path, offset, length)


def gfile_range(path: str, offset: int, length: int) -> bytes:
  """read_range through TensorFlow's GFile, on a handle this thread keeps open (the last
  HANDLES_PER_THREAD files it read). A read outside the handle's buffer fetches at least the
  buffer's 512 KiB (TensorFlow's GFile has no smaller buffer): more bytes than a frame, in one
  request."""
  import tensorflow as tf  # noqa: PLC0415

  handles = _HANDLES.__dict__.setdefault("open", {})  # path -> GFile, oldest first
  handle = handles.pop(path, None)
  if handle is None:
    handle = tf.io.gfile.GFile(path, "rb")
    while len(handles) >= HANDLES_PER_THREAD:
      handles.pop(next(iter(handles))).close()
  handles[path] = handle  # the most recent last
  handle.seek(offset)
  return handle.read(length)


def open_binary(path: str) -> IO[bytes]:
  """The file (object) open for reading from its start (buffered: a walk through a bucket's
  object reads it in large blocks)."""
  if not is_remote(path):
    return open(path, "rb")  # noqa: SIM115 - the caller closes it.
  from etils import epath

  return epath.Path(path).open("rb")


def glob(pattern: str) -> list[str]:
  """The files matching `pattern` (one listing), sorted."""
  if not is_remote(pattern):
    import glob as glob_module

    return sorted(glob_module.glob(pattern))
  fs = _fsspec(pattern)
  if fs is None:
    import tensorflow as tf  # noqa: PLC0415

    return sorted(tf.io.gfile.glob(pattern))
  protocol = pattern.split("://", 1)[0] + "://"
  fs.invalidate_cache()  # a listing of now, not of the process's first look
  return sorted(protocol + name for name in fs.glob(pattern))


def read_bytes(path: str) -> bytes:
  return paths.read_bytes(path)


def write_atomically(path: str, data: bytes) -> None:
  """Writes `path` whole or not at all: locally a hidden temporary renamed into place, in a
  bucket one upload (an object appears whole when its upload ends)."""
  if is_remote(path):
    paths.write_bytes(path, data)
    return
  temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
  try:
    with open(temporary, "wb") as f:
      f.write(data)
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)
