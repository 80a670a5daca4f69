"""Which directories vidtx may write into: its own, never a user's.

The rule, used by every writer (synthetic generation, shard making, checkpoint conversion, the
trainer's workdir):
- vidtx writes only into a directory that does not exist yet, is empty, or holds vidtx's marker
  file (`.vidtx`, JSON) for the same kind of content;
- inside such a directory it replaces only files of its own layout;
- it removes a directory (`--overwrite`) only when that directory is vidtx's output of that kind,
  and never the source it reads from nor a directory that contains that source.

Directories written by vidtx before the marker existed are recognised by their layout (each kind
passes its own test as `legacy`) and marked on first use.
"""

import datetime
import json
import os
from collections.abc import Callable

import tensorflow as tf

MARKER = ".vidtx"

# What each kind of directory is, for error messages.
KINDS = {
    "synthetic": "a generated synthetic dataset",
    "shards": "DMVR shards written by python -m vidtx.data.convert",
    "converted": "a converted checkpoint written by python -m vidtx.convert",
    "run": "a train.py run (checkpoints, metrics, config.json)",
}


class NotOwnedError(ValueError):
  """A directory vidtx was asked to write into holds something that is not vidtx's."""


def marker_kind(directory: str) -> str | None:
  """The kind recorded in `directory`'s marker, or None when it has none (or an unreadable one)."""
  path = os.path.join(directory, MARKER)
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path) as f:
      return json.load(f).get("kind")
  except (ValueError, AttributeError, tf.errors.OpError):
    return None


def _entries(directory: str) -> list[str]:
  return sorted(tf.io.gfile.listdir(directory)) if tf.io.gfile.isdir(directory) else []


def write_marker(directory: str, kind: str) -> None:
  """Marks `directory` as vidtx's output of `kind` (atomically: a reader sees all or nothing)."""
  if kind not in KINDS:
    raise ValueError(f"Unknown directory kind {kind!r}; expected one of {sorted(KINDS)}.")
  path = os.path.join(directory, MARKER)
  text = json.dumps({"kind": kind, "marked": datetime.datetime.now(datetime.UTC).isoformat(
      timespec="seconds")}) + "\n"
  temporary = f"{path}.tmp-{os.getpid()}"
  with tf.io.gfile.GFile(temporary, "w") as f:
    f.write(text)
  tf.io.gfile.rename(temporary, path, overwrite=True)


def claim(directory: str, kind: str, *, legacy: Callable[[str], bool] | None = None,
          hint: str = "") -> str:
  """Makes `directory` vidtx's `kind` output, or raises NotOwnedError; returns it.

  Accepted: a directory that does not exist (created), an empty one, one marked `kind`, or one
  that `legacy(directory)` recognises as written by an earlier vidtx. The last three are marked.
  `hint` ends the error message: what the user probably meant.
  """
  if kind not in KINDS:
    raise ValueError(f"Unknown directory kind {kind!r}; expected one of {sorted(KINDS)}.")
  if tf.io.gfile.exists(directory) and not tf.io.gfile.isdir(directory):
    raise NotOwnedError(f"{directory} is a file, not a directory; vidtx needs a directory for "
                        f"{KINDS[kind]}." + (f" {hint}" if hint else ""))
  found = marker_kind(directory)
  if found == kind:
    return directory
  entries = _entries(directory)
  if found is not None:
    raise NotOwnedError(
        f"{directory} holds {KINDS.get(found, found)} (its {MARKER} marker says {found!r}), not "
        f"{KINDS[kind]}; vidtx does not write one kind of output into another."
        + (f" {hint}" if hint else ""))
  if entries and not (legacy is not None and legacy(directory)):
    shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5
                                      else "")
    raise NotOwnedError(
        f"{directory} is not empty ({shown}) and is not {KINDS[kind]}: vidtx writes only into a "
        f"new or empty directory, or one it marked as its own ({MARKER}), and never touches "
        "files it did not write." + (f" {hint}" if hint else ""))
  try:
    tf.io.gfile.makedirs(directory)
    write_marker(directory, kind)
  except (tf.errors.PermissionDeniedError, PermissionError) as e:
    raise PermissionError(f"{directory}: cannot write there (permission denied); choose a "
                          "directory you can write to.") from e
  return directory


def check_removable(directory: str, kind: str, *, protected: tuple[str, ...] = (),
                    legacy: Callable[[str], bool] | None = None) -> None:
  """Raises NotOwnedError unless `directory` may be removed to be replaced by new `kind` output.

  It must be vidtx's `kind` output (marked, or recognised by `legacy`), and neither one of the
  `protected` paths (e.g. the source being converted) nor a directory that contains one.
  """
  real = os.path.realpath(directory)
  for path in protected:
    other = os.path.realpath(path)
    if real == other or other.startswith(real.rstrip(os.sep) + os.sep):
      raise NotOwnedError(
          f"Refusing to replace {directory}: it {'is' if real == other else 'contains'} the "
          f"source {path}. Choose an output directory outside the source.")
  if marker_kind(directory) == kind or (legacy is not None and legacy(directory)):
    return
  found = marker_kind(directory)
  what = KINDS.get(found, found) if found else "not vidtx's output"
  raise NotOwnedError(
      f"Refusing to replace {directory}: it is {what}, not {KINDS[kind]}; --overwrite only "
      "replaces a directory vidtx wrote for that purpose. Choose a new output directory.")
