"""Which directories vidtx may write into: its own, never a user's.

The rule, used by every writer (synthetic generation, shard making, checkpoint conversion, the
trainer's workdir):
- vidtx writes only into a directory that does not exist yet, is empty, or holds vidtx's marker
  file (`.vidtx`, JSON) for the same kind of content;
- inside such a directory it replaces only files of its own layout;
- it removes a directory (`--overwrite`) only when that directory is vidtx's output of that kind
  (or empty), and never the source it reads from nor a directory that contains that source.

Directories written by vidtx before the marker existed are recognised by their layout (each kind
passes its own test as `legacy`) and marked on first use.

Local paths go through `os` (so that `python -m vidtx.convert` does not import TensorFlow);
URLs (gs://...) through tf.io.gfile.
"""

import datetime
import json
import os
import shutil
import uuid
from collections.abc import Callable

MARKER = ".vidtx"

# What each kind of directory is, for error messages.
KINDS = {
  "synthetic": "a generated synthetic dataset",
  "shards": "DMVR shards written by python -m vidtx.data.make_shards",
  "converted": "a converted checkpoint written by python -m vidtx.convert",
  "run": "a train.py run (checkpoints, metrics, config.json)",
  "features": "video features written by python -m vidtx.predict --features",
  "exported": "a model exported by python -m vidtx.export (Hugging Face or SavedModel)",
}


class NotOwnedError(ValueError):
  """A directory vidtx was asked to write into holds something that is not vidtx's."""


class UnwritableError(OSError):
  """vidtx may write into a directory but the system refuses (permissions, a file in the way)."""


# ---------------------------------------------------------------------------------------------
# Files: os for local paths, tf.io.gfile for URLs.
# ---------------------------------------------------------------------------------------------


def _remote(path: str) -> bool:
  return "://" in path


def _gfile():
  import tensorflow as tf  # Only for URLs: local paths must not pay TensorFlow's import.

  return tf.io.gfile


def _exists(path: str) -> bool:
  return _gfile().exists(path) if _remote(path) else os.path.exists(path)


def _isdir(path: str) -> bool:
  return _gfile().isdir(path) if _remote(path) else os.path.isdir(path)


def entries(directory: str) -> list[str]:
  """The names in `directory`, sorted; [] when it is not a directory."""
  if not _isdir(directory):
    return []
  names = _gfile().listdir(directory) if _remote(directory) else os.listdir(directory)
  return sorted(name.rstrip("/") for name in names)


def read_json(path: str) -> dict | None:
  """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
  if _remote(path):
    import tensorflow as tf

    try:
      with tf.io.gfile.GFile(path) as f:
        value = json.load(f)
    except (tf.errors.OpError, ValueError, UnicodeDecodeError):
      return None
  else:
    try:
      with open(path, encoding="utf-8") as f:
        value = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError):
      return None
  return value if isinstance(value, dict) else None


# ---------------------------------------------------------------------------------------------
# The marker.
# ---------------------------------------------------------------------------------------------


def marker_kind(directory: str) -> str | None:
  """The kind recorded in `directory`'s marker, or None when it has none (or an unreadable one)."""
  marker = read_json(os.path.join(directory, MARKER))
  kind = marker.get("kind") if marker else None
  return kind if isinstance(kind, str) else None


def write_directory(
  out_dir: str, kind: str, fill: Callable[[str], None], recheck: Callable[[], None]
) -> None:
  """Fills a temporary sibling of `out_dir` (`fill(tmp)`), marks it as `kind`'s and renames it
  into place. An existing `out_dir` is checked again (`recheck()`: the work may have taken long)
  and moved aside first, so a failure never leaves a half-written or a missing directory."""
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{uuid.uuid4().hex[:8]}")
  try:
    os.makedirs(tmp)
    fill(tmp)
    write_marker(tmp, kind)
    if not os.path.lexists(out_dir):
      os.rename(tmp, out_dir)
      return
    recheck()
    old = tmp + ".old"
    os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if os.path.islink(old):  # out_dir was a link: the link is replaced, not its target.
      os.remove(old)
    else:
      shutil.rmtree(old)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


def write_marker(directory: str, kind: str) -> None:
  """Marks `directory` as vidtx's output of `kind` (atomically: a reader sees all or nothing)."""
  if kind not in KINDS:
    raise ValueError(f"Unknown directory kind {kind!r}; expected one of {sorted(KINDS)}.")
  path = os.path.join(directory, MARKER)
  text = (
    json.dumps(
      {"kind": kind, "marked": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    )
    + "\n"
  )
  temporary = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
  if _remote(directory):
    gfile = _gfile()
    with gfile.GFile(temporary, "w") as f:
      f.write(text)
    gfile.rename(temporary, path, overwrite=True)
    return
  try:
    with open(temporary, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


# ---------------------------------------------------------------------------------------------
# The rule.
# ---------------------------------------------------------------------------------------------


def _shown(names: list[str]) -> str:
  return ", ".join(names[:5]) + (f", ... ({len(names)} entries)" if len(names) > 5 else "")


def _check_writable(directory: str) -> None:
  """UnwritableError unless `directory` exists and is writable, or can be created (local paths;
  for a URL the writes themselves tell)."""
  if _remote(directory):
    return
  path = os.path.abspath(directory)
  while not os.path.lexists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)  # The nearest existing ancestor: where creation starts.
  if not os.path.isdir(path):
    raise UnwritableError(
      f"{directory}: cannot create this directory: {path} is a file, not a "
      "directory; choose another output directory."
    )
  if not os.access(path, os.W_OK | os.X_OK):
    where = "" if path == os.path.abspath(directory) else f" (in {path})"
    raise UnwritableError(
      f"{directory}: cannot write there{where}: permission denied; choose a "
      "directory you can write to."
    )


def check_claimable(
  directory: str, kind: str, *, legacy: Callable[[str], bool] | None = None, hint: str = ""
) -> None:
  """Raises NotOwnedError unless `claim` would accept `directory`; writes nothing.

  For a command that reads its inputs for a while before writing: it can refuse up front. A
  local directory the system would refuse (a file in the way, no write permission) raises
  UnwritableError (an OSError) here too.
  """
  if kind not in KINDS:
    raise ValueError(f"Unknown directory kind {kind!r}; expected one of {sorted(KINDS)}.")
  tail = f" {hint}" if hint else ""
  if _exists(directory) and not _isdir(directory):
    raise NotOwnedError(
      f"{directory} is a file, not a directory; vidtx needs a directory for {KINDS[kind]}.{tail}"
    )
  found = marker_kind(directory)
  if found == kind:
    _check_writable(directory)
    return
  if found is not None:
    raise NotOwnedError(
      f"{directory} holds {KINDS.get(found, found)} (its {MARKER} marker says {found!r}), not "
      f"{KINDS[kind]}; vidtx does not write one kind of output into another.{tail}"
    )
  # The marker itself (just renamed into place by a concurrent claimer, or unreadable) and a
  # half-written one are vidtx's, not someone else's files.
  names = [
    name for name in entries(directory) if name != MARKER and not name.startswith(f"{MARKER}.tmp-")
  ]
  if names and not (legacy is not None and legacy(directory)):
    raise NotOwnedError(
      f"{directory} is not empty ({_shown(names)}) and is not {KINDS[kind]}: vidtx writes "
      f"only into a new or empty directory, or one it marked as its own ({MARKER}), and never "
      f"touches files it did not write.{tail}"
    )
  _check_writable(directory)


def claim(
  directory: str, kind: str, *, legacy: Callable[[str], bool] | None = None, hint: str = ""
) -> str:
  """Makes `directory` vidtx's `kind` output, or raises NotOwnedError; returns it.

  Accepted: a directory that does not exist (created), an empty one, one marked `kind`, or one
  that `legacy(directory)` recognises as written by an earlier vidtx. The last three are marked.
  `hint` ends the error message: what the user probably meant. UnwritableError (an OSError)
  when the system refuses to create or mark it.
  """
  check_claimable(directory, kind, legacy=legacy, hint=hint)
  if marker_kind(directory) == kind:
    return directory
  if _remote(directory):
    import tensorflow as tf

    try:
      tf.io.gfile.makedirs(directory)
      write_marker(directory, kind)
    except tf.errors.OpError as e:
      raise UnwritableError(
        f"{directory}: cannot create or write this directory ({e.message}); "
        "choose one you can write to."
      ) from e
  else:
    try:
      os.makedirs(directory, exist_ok=True)
      write_marker(directory, kind)
    except OSError as e:
      raise UnwritableError(
        f"{directory}: cannot create or write this directory "
        f"({e.strerror or e}); choose one you can write to."
      ) from e
  return directory


def _normalised(path: str) -> str:
  return path.rstrip("/") if _remote(path) else os.path.realpath(path)


def check_removable(
  directory: str,
  kind: str,
  *,
  protected: tuple[str | None, ...] = (),
  legacy: Callable[[str], bool] | None = None,
) -> None:
  """Raises NotOwnedError unless `directory` may be removed to be replaced by new `kind` output.

  It must be vidtx's `kind` output (marked, or recognised by `legacy`) or an empty directory,
  and neither one of the `protected` paths (e.g. the source being converted; None is skipped)
  nor a directory that contains one.
  """
  if kind not in KINDS:
    raise ValueError(f"Unknown directory kind {kind!r}; expected one of {sorted(KINDS)}.")
  real = _normalised(directory)
  for path in protected:
    if not path:
      continue
    other = _normalised(path)
    sep = "/" if _remote(directory) else os.sep
    if real == other or other.startswith(real.rstrip(sep) + sep):
      raise NotOwnedError(
        f"Refusing to replace {directory}: it {'is' if real == other else 'contains'} the "
        f"source {path}. Choose an output directory outside the source."
      )
  if _exists(directory) and not _isdir(directory):
    raise NotOwnedError(
      f"Refusing to replace {directory}: it is a file, not {KINDS[kind]}. "
      "Choose a new output directory."
    )
  found = marker_kind(directory)
  if found == kind or not entries(directory):
    return
  if found is None and legacy is not None and legacy(directory):
    return
  what = (
    f"{KINDS.get(found, found)} (its {MARKER} marker says {found!r})"
    if found
    else f"not vidtx's output (it holds {_shown(entries(directory))})"
  )
  raise NotOwnedError(
    f"Refusing to replace {directory}: it is {what}, not {KINDS[kind]}; --overwrite only "
    "replaces a directory vidtx wrote for that purpose. Choose a new output directory."
  )
