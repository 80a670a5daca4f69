"""A command's output paths, checked before any work: never an input, never each other.

Every CLI that writes files (predict, export, convert, make_shards, plot) calls `check_paths`
with its inputs and outputs keyed by the flags the user typed, so that `--out` naming the
`--list` it reads, or `--logits_out` naming the video, is refused in one line instead of
replacing the user's file. Paths are compared resolved (symlinks followed) and by inode, so a
link or a hard link to an input is the input. `check_output_file` refuses an existing file
without `--overwrite`, a directory, or a parent that cannot hold the file; `atomic_writer`
writes a file whole or not at all (a local file or a gs:// object).
"""

import contextlib
import io
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import IO

from vidtx import paths
from vidtx.errors import UserError


class OverlapError(UserError):
  """An output path is an input of the same command, or another of its outputs."""


def _remote(path: str) -> bool:
  return "://" in path


def _resolved(path: str) -> str:
  return path.rstrip("/") if _remote(path) else os.path.realpath(path)


def _inode(path: str) -> tuple[int, int] | None:
  if _remote(path):
    return None
  try:
    st = os.stat(path)
  except OSError:
    return None
  return st.st_dev, st.st_ino


def _contains(directory: str, path: str) -> bool:
  sep = "/" if _remote(directory) else os.sep
  return path.startswith(directory.rstrip(sep) + sep)


def _flat(values: Mapping[str, str | Sequence[str] | None]) -> list[tuple[str, str]]:
  """(flag, path) pairs; a flag may carry several paths (every video of a folder)."""
  pairs = []
  for flag, value in values.items():
    if value is None or value == "":
      continue
    for path in [value] if isinstance(value, (str, os.PathLike)) else value:
      if path:
        pairs.append((flag, os.fspath(path)))
  return pairs


class _Resolved:
  """A path as the file system sees it: resolved (symlinks followed) and its inode if any."""

  def __init__(self, flag: str, path: str):
    self.flag, self.path = flag, path
    self.real = _resolved(path)
    self.inode = _inode(path)

  def relation(self, other: "_Resolved") -> str | None:
    """How this path overlaps `other` ('is', 'contains', 'is inside'), or None."""
    if self.real == other.real or (self.inode is not None and self.inode == other.inode):
      return "is"  # The same name, a link, or a hard link: one file.
    if _contains(self.real, other.real):
      return "contains"
    if _contains(other.real, self.real):
      return "is inside"
    return None


def _first_overlap(output: _Resolved, inputs: list[_Resolved], by_real: dict, by_inode: dict):
  """The input `output` is or contains, or None: a lookup for 'is', a scan for 'contains'."""
  same = by_real.get(output.real) or (by_inode.get(output.inode) if output.inode else None)
  if same is not None:
    return same, "is"
  if output.inode is None or os.path.isdir(output.path):  # Only a directory holds inputs.
    for candidate in inputs:
      if _contains(output.real, candidate.real):
        return candidate, "contains"
  return None


def check_paths(
  inputs: Mapping[str, str | Sequence[str] | None], outputs: Mapping[str, str | None]
) -> None:
  """Raises OverlapError (one line) when an output is or contains an input, or is, contains or
  lies inside another output. Keys are flags as the user typed them ('--out'); a value may be a
  list of paths (the files found in a folder); None is skipped. Writes nothing; each path is
  resolved once, so a folder of many thousand videos costs milliseconds per output."""
  resolved_inputs = [_Resolved(flag, path) for flag, path in _flat(inputs)]
  by_real = {entry.real: entry for entry in resolved_inputs}
  by_inode = {entry.inode: entry for entry in resolved_inputs if entry.inode is not None}
  resolved_outputs = [_Resolved(flag, path) for flag, path in _flat(outputs)]
  for output in resolved_outputs:
    # A new file inside an input folder (results beside the videos) replaces no input:
    # callers list a folder's members as inputs, so a member named as an output is caught.
    found = _first_overlap(output, resolved_inputs, by_real, by_inode)
    if found is not None:
      overlapped, relation = found
      raise OverlapError(
        f"{output.flag}={output.path} {relation} the input {overlapped.flag}={overlapped.path}: "
        f"an output must never replace or hold an input of the same command; choose another "
        f"{output.flag}."
      )
  for i, output in enumerate(resolved_outputs):
    for other in resolved_outputs[i + 1 :]:
      relation = output.relation(other)
      if relation is not None:
        raise OverlapError(
          f"{output.flag}={output.path} {relation} {other.flag}={other.path}: two outputs of one "
          f"command would write the same files; choose another {output.flag} or {other.flag}."
        )


def check_output_file(
  path: str, flag: str, *, overwrite: bool = False, suffixes: tuple[str, ...] = ()
) -> None:
  """Raises (one line) unless `path` can receive a new file: not a directory, the right suffix,
  a parent that is (or can be made) a writable directory, and no existing file unless
  `overwrite`. Writes nothing."""
  if suffixes and not path.lower().endswith(tuple(s.lower() for s in suffixes)):
    raise UserError(f"{flag}={path}: expected a file name ending in {' or '.join(suffixes)}.")
  if _remote(path):
    return
  if os.path.isdir(path):
    raise UserError(f"{flag}={path} is a directory; name a file (e.g. {path.rstrip('/')}/out).")
  if os.path.lexists(path):
    if not os.path.isfile(path):
      raise UserError(f"{flag}={path} exists and is not a regular file; name a new file.")
    if not overwrite:
      raise FileExistsError(
        f"{flag}={path} exists; pass --overwrite to replace it, or name a new file."
      )
    if not os.access(path, os.W_OK):
      raise PermissionError(f"{flag}={path}: cannot replace this file: permission denied.")
  parent = os.path.dirname(os.path.abspath(path))
  existing = parent
  while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise UserError(f"{flag}={path}: cannot create it: {existing} is a file, not a directory.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise PermissionError(f"{flag}={path}: cannot write in {existing}: permission denied.")


@contextlib.contextmanager
def atomic_writer(path: str, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
  """A file object over a temporary sibling of `path`, renamed onto `path` when the block ends
  without error; on error the temporary is removed and `path` is untouched. For a URL (gs://)
  the file is kept in memory and uploaded in one write when the block ends (an object appears
  whole or not at all); on error nothing is uploaded."""
  if "b" in mode:
    encoding = None
  if paths.is_url(path):
    buffer = io.BytesIO() if "b" in mode else io.StringIO()
    yield buffer
    data = buffer.getvalue()
    paths.write_bytes(path, data if isinstance(data, bytes) else data.encode(encoding or "utf-8"))
    return
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  temporary = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
  try:
    with open(temporary, mode, encoding=encoding) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)
