"""Which directories vidtx may write into: its own, never a user's.

The rule, used by every writer (synthetic generation, shard making, checkpoint conversion, the
trainer's workdir):
- vidtx writes only into a directory that does not exist yet, is empty, or holds vidtx's marker
  file (`.vidtx`, JSON) for the same kind of content;
- the marker records what vidtx wrote there (`written`: paths relative to the directory; a
  recorded directory covers what is under it), and vidtx replaces or removes only those;
- it replaces a directory (`--overwrite`) only when that directory is vidtx's output of that
  kind (or empty), holds nothing vidtx did not write (the user's own files there make it refuse,
  naming them: nothing of the user's is moved or deleted), and is neither the source it reads
  from nor a directory that contains that source.

Directories written by vidtx before the marker existed are recognised by their layout (each kind
passes its own test as `legacy`) and marked on first use; for them, and for markers written
before the inventory, the kind's known layout (`LAYOUT`) stands in for the inventory.

Local paths go through `os` (so that `python -m vidtx.convert` does not import TensorFlow);
URLs (gs://...) through vidtx.paths (etils' epath). On GCS the marker is an object
(gs://bucket/run/.vidtx), and a prefix holding objects but no marker is refused like a local
folder of someone's files.
"""

import datetime
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable

from vidtx import paths
from vidtx.errors import UserError

MARKER = ".vidtx"
LOCK = ".vidtx.lock"  # vidtx.locks: one writer per directory.

# The top-level names each kind writes, for directories whose marker has no inventory (written
# by vidtx before it recorded one). Anything else in such a directory is the user's.
LAYOUT = {
  "converted": ("vidtx_model.json", "params"),
  "exported": (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "saved_model.pb",
    "variables",
    "assets",
    "fingerprint.pb",
    "vidtx_preprocessing.json",
  ),
}

# What each kind of directory is, for error messages.
KINDS = {
  "synthetic": "a generated synthetic dataset",
  "shards": "DMVR shards written by python -m vidtx.data.make_shards",
  "converted": "a converted checkpoint written by python -m vidtx.convert",
  "run": "a train.py run (checkpoints, metrics, config.json)",
  "features": "video features written by python -m vidtx.predict --features",
  "exported": "a model exported by python -m vidtx.export (Hugging Face or SavedModel)",
  "index": "record indexes written by python -m vidtx.data.index_shards",
}


class NotOwnedError(UserError):
  """A directory vidtx was asked to write into holds something that is not vidtx's."""


class UnwritableError(UserError, OSError):
  """vidtx may write into a directory but the system refuses (permissions, a file in the way)."""


# ---------------------------------------------------------------------------------------------
# Files: os for local paths, vidtx.paths (epath) for URLs.
# ---------------------------------------------------------------------------------------------

_remote = paths.is_url
_exists = paths.exists
_isdir = paths.isdir


def entries(directory: str) -> list[str]:
  """The names in `directory`, sorted; [] when it is not a directory."""
  if not _isdir(directory):
    return []
  return sorted(name.rstrip("/") for name in paths.listdir(directory))


def read_json(path: str) -> dict | None:
  """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
  try:
    value = json.loads(paths.read_bytes(path).decode("utf-8"))
  except (OSError, ValueError):  # Missing (epath says FileNotFoundError too), not JSON or UTF-8.
    return None
  except Exception:  # noqa: BLE001 - a URL read by TensorFlow fails as tf.errors.OpError.
    if not _remote(path):
      raise
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
  into place; the marker lists every file `fill` wrote. An existing `out_dir` is checked again
  (`recheck()`: the work may have taken long; it must refuse a directory holding files vidtx did
  not write, as check_removable does) and moved aside first, so a failure never leaves a
  half-written or a missing directory."""
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{uuid.uuid4().hex[:8]}")
  try:
    os.makedirs(tmp)
    fill(tmp)
    write_marker(tmp, kind, written=_files_under(tmp))
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


def write_marker(directory: str, kind: str, *, written: Iterable[str] | None = None) -> None:
  """Marks `directory` as vidtx's output of `kind` (atomically: a reader sees all or nothing).

  `written`: the paths (relative to `directory`) vidtx wrote there; None keeps the inventory of
  an existing marker of the same kind, or records none (unknown: a directory of an older vidtx).
  """
  if kind not in KINDS:
    raise UserError(f"Unknown directory kind {kind!r}; expected one of {sorted(KINDS)}.")
  if written is None:
    previous = read_json(os.path.join(directory, MARKER)) or {}
    inventory = previous.get("written") if previous.get("kind") == kind else None
  else:
    inventory = list(written)
  record = {
    "kind": kind,
    "marked": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
  }
  if inventory is not None:
    record["written"] = sorted(set(inventory))
  _write_text(os.path.join(directory, MARKER), json.dumps(record) + "\n")


def _write_text(path: str, text: str) -> None:
  if _remote(path):
    paths.write_bytes(path, text.encode("utf-8"))  # One upload: atomic on GCS.
    return
  temporary = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
  try:
    with open(temporary, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def written_names(directory: str) -> set[str] | None:
  """The paths the marker says vidtx wrote (relative to `directory`), or None when the marker
  has no inventory (an older vidtx) or there is no marker."""
  marker = read_json(os.path.join(directory, MARKER))
  written = marker.get("written") if marker else None
  return set(written) if isinstance(written, list) else None


def record_written(directory: str, names: Iterable[str]) -> None:
  """Adds `names` (paths relative to `directory`; a directory covers what is under it) to the
  marker's inventory of what vidtx wrote. The directory must be marked (claim)."""
  marker = read_json(os.path.join(directory, MARKER))
  if not marker or not isinstance(marker.get("kind"), str):
    raise UserError(f"{directory} has no vidtx marker; claim it before recording writes.")
  names = {_relative(name) for name in names}
  known = written_names(directory)
  if known is not None and names <= known:
    return
  write_marker(directory, marker["kind"], written=(known or set()) | names)


def _relative(name: str) -> str:
  name = os.path.normpath(name)
  if os.path.isabs(name) or name.startswith(".." + os.sep) or name == "..":
    raise UserError(f"{name!r}: expected a path relative to the marked directory.")
  return name


def _is_bookkeeping(name: str) -> bool:
  """vidtx's own marker, lock, and their temporaries: never the user's."""
  return name in (MARKER, LOCK) or name.startswith((f"{MARKER}.tmp-", f"{LOCK}."))


def _files_under(directory: str) -> list[str]:
  """Every file, link and empty directory under `directory`, relative to it."""
  found = []
  for root, dirs, files in paths.walk(directory):
    relative_root = os.path.relpath(root, directory)
    for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
      found.append(os.path.normpath(os.path.join(relative_root, name)))
    if not dirs and not files and root != directory:
      found.append(os.path.normpath(relative_root))
  return [name for name in found if not _is_bookkeeping(name)]


def foreign_entries(directory: str, kind: str) -> list[str]:
  """What in `directory` vidtx did not write, as paths relative to it (sorted): everything the
  marker's inventory does not cover or, for a directory without one, outside `LAYOUT[kind]`.
  On GCS (no links) the objects under the prefix are walked alike."""
  if not _isdir(directory):
    return []
  inventory = written_names(directory)
  if inventory is None:
    allowed = set(LAYOUT.get(kind, ()))
    return sorted(
      name for name in entries(directory) if not _is_bookkeeping(name) and name not in allowed
    )
  foreign = []
  for root, dirs, files in paths.walk(directory):
    relative_root = os.path.relpath(root, directory)
    covered_dirs = []
    for name in sorted(dirs):
      path = os.path.normpath(os.path.join(relative_root, name))
      if path in inventory or _is_bookkeeping(path):
        continue
      if not _remote(root) and os.path.islink(os.path.join(root, name)):
        foreign.append(path)  # A link is vidtx's only if recorded; never walked into.
        continue
      covered_dirs.append(name)
    dirs[:] = covered_dirs
    for name in files:
      path = os.path.normpath(os.path.join(relative_root, name))
      if path not in inventory and not _is_bookkeeping(path):
        foreign.append(path)
  return sorted(foreign)


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
    raise UserError(f"Unknown directory kind {kind!r}; expected one of {sorted(KINDS)}.")
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
  names = [name for name in entries(directory) if not _is_bookkeeping(name)]
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
  that `legacy(directory)` recognises as written by an earlier vidtx. The last three are marked
  (with an empty inventory of what vidtx wrote, or none for an earlier vidtx's directory).
  `hint` ends the error message: what the user probably meant. UnwritableError (an OSError)
  when the system refuses to create or mark it.
  """
  check_claimable(directory, kind, legacy=legacy, hint=hint)
  if marker_kind(directory) == kind:
    return directory
  # New or empty: nothing written yet. An earlier vidtx's directory: what it wrote is unknown
  # (its kind's layout stands in).
  is_empty = not [name for name in entries(directory) if not _is_bookkeeping(name)]
  written = [] if is_empty else None
  if _remote(directory):
    try:
      paths.makedirs(directory)
      write_marker(directory, kind, written=written)
    except Exception as e:  # noqa: BLE001 - each backend (TF's GCS, gcsfs) has its own errors.
      raise UnwritableError(
        f"{directory}: cannot create or write this location ({str(e).splitlines()[0]}); "
        "choose one you can write to."
      ) from e
  else:
    try:
      os.makedirs(directory, exist_ok=True)
      write_marker(directory, kind, written=written)
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

  It must be vidtx's `kind` output (marked, or recognised by `legacy`) holding nothing vidtx did
  not write (foreign_entries), or an empty directory; and neither one of the `protected` paths
  (e.g. the source being converted; None is skipped) nor a directory that contains one.
  """
  if kind not in KINDS:
    raise UserError(f"Unknown directory kind {kind!r}; expected one of {sorted(KINDS)}.")
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
  names = [name for name in entries(directory) if not _is_bookkeeping(name)]
  is_ours = found == kind or (found is None and legacy is not None and legacy(directory))
  if is_ours or (not names and found is None):
    foreign = foreign_entries(directory, kind) if is_ours else []
    if foreign:
      raise NotOwnedError(
        f"Refusing to replace {directory}: it holds files vidtx did not write "
        f"({_shown(foreign)}); --overwrite never deletes them. Move them out of {directory}, "
        "or choose a new output directory."
      )
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
