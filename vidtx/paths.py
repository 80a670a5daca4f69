"""A run's own files on a local disk or in a bucket (gs://): the one path layer.

Local paths go through `os`, exactly as they always did (writes atomic by a temporary sibling
and a rename). URLs go through etils' `epath`, the layer orbax writes its checkpoints with:
on GCS an object appears whole when its upload ends, so a single write is already atomic, and
nothing is renamed (a "directory" rename on GCS is a copy and a delete, neither atomic nor
cheap).

epath reaches gs:// through TensorFlow's GCS file system when TensorFlow is installed, or
through gcsfs with EPATH_USE_TF=0 (gcsfs, unlike TensorFlow, can be pointed at a local GCS
emulator with STORAGE_EMULATOR_HOST: the tests do). epath is imported only for a URL, so local
runs pay nothing for it.
"""

import os

from vidtx.errors import UserError


def is_url(path: str) -> bool:
  """Whether `path` names an object store location (gs://bucket/...), not a local path."""
  return "://" in os.fspath(path)


def _url(path: str):
  from etils import epath  # Only for URLs.

  return epath.Path(path)


def exists(path: str) -> bool:
  return _url(path).exists() if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  """A directory, or on GCS a prefix holding objects."""
  return _url(path).is_dir() if is_url(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
  return _url(path).is_file() if is_url(path) else os.path.isfile(path)


def listdir(path: str) -> list[str]:
  """The names in directory `path`, sorted."""
  if is_url(path):
    return sorted(child.name for child in _url(path).iterdir())
  return sorted(os.listdir(path))


def makedirs(path: str) -> None:
  """Creates directory `path` and its parents (a no-op on GCS, which has no directories)."""
  if is_url(path):
    _url(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
  """Removes the file (object) `path`."""
  if is_url(path):
    _url(path).unlink()
  else:
    os.remove(path)


def abspath(path: str) -> str:
  """`path` made absolute (os.path.abspath); a URL is absolute already and stays as written."""
  return path if is_url(path) else os.path.abspath(path)


def read_text(path: str, errors: str = "strict") -> str:
  """The file (object) `path` decoded as UTF-8; `errors` as for open()."""
  if is_url(path):
    return _url(path).read_bytes().decode("utf-8", errors=errors)
  with open(path, encoding="utf-8", errors=errors) as f:
    return f.read()


def read_bytes(path: str) -> bytes:
  if is_url(path):
    return _url(path).read_bytes()
  with open(path, "rb") as f:
    return f.read()


def write_bytes(path: str, data: bytes) -> None:
  """Writes an object in one upload (seen whole or not at all). URLs only: local files are
  written by outputs.atomic_writer."""
  if not is_url(path):
    raise UserError(f"{path}: paths.write_bytes is for URLs; use outputs.atomic_writer.")
  _url(path).write_bytes(data)


def walk(path: str):
  """(root, dirs, files) under `path`, top down, like os.walk (no links on GCS)."""
  if not is_url(path):
    yield from os.walk(path)
    return
  pending = [path.rstrip("/")]
  while pending:
    root = pending.pop(0)
    dirs, files = [], []
    for child in sorted(_url(root).iterdir(), key=lambda p: p.name):
      (dirs if child.is_dir() else files).append(child.name)
    yield root, dirs, files
    pending[:0] = [f"{root}/{name}" for name in dirs]


def move_tree(source: str, target: str) -> None:
  """Moves directory `source` to `target`. Locally one rename; on GCS every object is copied
  then the source's objects deleted (GCS has no rename), so an interruption leaves both whole
  or a partial copy beside a whole source, never a lost object."""
  if not is_url(source):
    os.rename(source, target)
    return
  copied = []
  for root, _, files in walk(source):
    relative = root[len(source.rstrip("/")) :].lstrip("/")
    for name in files:
      where = f"{relative}/{name}" if relative else name
      destination = _url(f"{target.rstrip('/')}/{where}")
      destination.write_bytes(_url(f"{root}/{name}").read_bytes())
      copied.append(f"{root}/{name}")
  for path in copied:
    _url(path).unlink()
