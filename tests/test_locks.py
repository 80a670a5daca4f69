"""vidtx.locks: one writer per directory (a second is refused naming the holder until it ends),
the lock released after an error."""

import json
import os
import subprocess
import sys
import time

import pytest

from vidtx import locks, ownership

_HOLD = """
import sys, time
from vidtx import locks
with locks.hold(sys.argv[1], "train.py"):
  print("held", flush=True)
  time.sleep(float(sys.argv[2]))
"""


def test_a_second_writer_is_refused_naming_the_holder_until_it_ends(tmp_path):
  holder = subprocess.Popen(
    [sys.executable, "-c", _HOLD, str(tmp_path), "60"], stdout=subprocess.PIPE, text=True
  )
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(locks.LockedError) as raised:
      with locks.hold(str(tmp_path), "eval.py"):
        pass
    message = str(raised.value)
    assert f"pid {holder.pid}" in message and "train.py" in message and "\n" not in message
    # The lock names its holder for people too.
    assert json.loads((tmp_path / locks.LOCK).read_text())["pid"] == holder.pid
  finally:
    holder.kill()  # kill -9: no clean-up runs; the kernel drops the lock.
    holder.wait(timeout=30)
  assert (tmp_path / locks.LOCK).exists()  # Left behind by the killed owner ...
  with locks.hold(str(tmp_path), "eval.py"):  # ... and taken over at once.
    assert json.loads((tmp_path / locks.LOCK).read_text())["pid"] == os.getpid()
  assert not (tmp_path / locks.LOCK).exists()


def test_a_lock_is_released_after_an_error_and_ignored_by_the_ownership_checks(tmp_path):
  run = tmp_path / "run"
  ownership.claim(str(run), "run")
  with pytest.raises(ZeroDivisionError):
    with locks.hold(str(run), "train.py"):
      ownership.check_claimable(str(run), "run")  # The lock file is vidtx's, not a user's.
      raise ZeroDivisionError("a failure inside the locked block")
  assert sorted(os.listdir(run)) == [ownership.MARKER]
  empty = tmp_path / "empty"
  empty.mkdir()
  with locks.hold(str(empty), "make_shards"):
    ownership.check_claimable(str(empty), "shards")  # Still "empty".
  start = time.monotonic()
  for _ in range(20):  # Taking and releasing is cheap and leaves nothing.
    with locks.hold(str(empty), "x"):
      pass
  assert time.monotonic() - start < 30 and os.listdir(empty) == []
