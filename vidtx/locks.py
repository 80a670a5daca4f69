"""One writer per directory: an exclusive lock held for a command's lifetime.

    with locks.hold(workdir, "train.py"):
      ...   # a second train.py (or eval.py) on this workdir refuses, naming this process

The lock is `DIR/.vidtx.lock`, held with flock(2) and holding who took it (pid, host, start,
command line) for the message a second command prints. The kernel releases it when its owner
exits, however it exits (kill -9 included), so a lock is never stale: a file left by a dead
owner is simply taken. The file is removed when the block ends. flock works on local disks and
on NFS (as a POSIX lock). URLs (gs://) get no lock: GCS can create an object exclusively
(an `ifGenerationMatch=0` precondition), but nothing removes it when its owner is killed (kill -9,
a lost VM), and such a stale lock would block every resume of a preempted run. Concurrent jobs on
one bucket location must be kept apart by the scheduler.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator

from vidtx.errors import UserError

LOCK = ".vidtx.lock"


class LockedError(UserError, RuntimeError):
  """Another live process holds the directory's lock."""


def _read(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (OSError, ValueError):
    return {}  # Gone, unreadable or still being written: owner unknown.
  return value if isinstance(value, dict) else {}


def describe(holder: dict) -> str:
  """'train.py (pid 123 on host h since 2026-12-07T02:00:00+00:00: python train.py ...)'."""
  if not holder.get("pid"):
    return "another process (its lock file says no more)"
  command = " ".join(holder.get("argv") or [])[:160]
  return (
    f"{holder.get('what', 'a vidtx command')} (pid {holder.get('pid')} on host "
    f"{holder.get('host')} since {holder.get('since')}" + (f": {command}" if command else "") + ")"
  )


def holder(directory: str) -> dict | None:
  """Who holds `directory`'s lock, read without taking it (taking it even for a moment could
  make a command starting then refuse): None when there is no lock file or its owner no longer
  runs on this host (killed before it removed the file); another host's owner counts as alive."""
  if "://" in directory:
    return None
  found = _read(os.path.join(directory, LOCK))
  pid = found.get("pid")
  if not isinstance(pid, int):
    return None
  if found.get("host") == socket.gethostname():
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return None
    except PermissionError:
      pass  # Alive, another user's.
  return found


def _acquire(directory: str, what: str) -> int:
  """The open, locked lock file's descriptor; LockedError when a live process holds it."""
  path = os.path.join(directory, LOCK)
  for _ in range(10):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise LockedError(
        f"{directory} is in use by {describe(_read(path))}; wait for it to end, or choose "
        "another directory."
      ) from None
    except BaseException:
      os.close(fd)
      raise
    # The holder we waited on may have removed the file before we locked it: a lock on a
    # removed file guards nothing, so lock whatever the name holds now.
    try:
      same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      same = False
    if not same:
      os.close(fd)
      continue
    record = {
      "what": what,
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      "argv": sys.argv,
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
    return fd
  raise LockedError(f"{directory}: could not take its lock {path}: other processes race for it.")


@contextlib.contextmanager
def hold(directory: str, what: str) -> Iterator[None]:
  """Holds `directory`'s lock (the directory must exist) while the block runs; LockedError
  (one line, naming the holder) when a live process holds it. A no-op for URLs."""
  if "://" in directory:
    yield
    return
  fd = _acquire(directory, what)
  try:
    yield
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(directory, LOCK))  # Still locked: nobody holds a removed name.
    os.close(fd)
