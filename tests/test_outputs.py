"""The checks every command shares: outputs never an input (vidtx.outputs), one writer per
directory (vidtx.locks), and the marker's inventory of what vidtx wrote (vidtx.ownership)."""

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from vidtx import locks, outputs, ownership


def _digest(path) -> str:
  return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Outputs against inputs.
# ---------------------------------------------------------------------------------------------


def test_an_output_that_is_an_input_is_refused_however_it_is_spelt(tmp_path):
  video = tmp_path / "clip.mp4"
  video.write_bytes(b"video")
  (tmp_path / "link.mp4").symlink_to(video)
  os.link(video, tmp_path / "hard.mp4")
  (tmp_path / "sub").mkdir()
  for spelling in [
    video,
    tmp_path / "link.mp4",
    tmp_path / "hard.mp4",
    tmp_path / "sub/../clip.mp4",
  ]:
    with pytest.raises(outputs.OverlapError, match="--logits_out=.* is the input --video="):
      outputs.check_paths({"--video": str(video)}, {"--logits_out": str(spelling)})
  # A folder input is given as its members: one of them named as an output is caught.
  with pytest.raises(outputs.OverlapError, match="is the input --input"):
    outputs.check_paths({"--input": [str(tmp_path / "a.mp4"), str(video)]}, {"--out": str(video)})
  # An output directory that holds an input.
  with pytest.raises(outputs.OverlapError, match="--features=.* contains the input --video"):
    outputs.check_paths({"--video": str(video)}, {"--features": str(tmp_path)})
  # A new file beside the inputs is fine, and None / empty flags are skipped.
  outputs.check_paths(
    {"--video": str(video), "--list": None}, {"--out": str(tmp_path / "results.jsonl"), "-x": ""}
  )
  assert _digest(video) == hashlib.sha256(b"video").hexdigest()


def test_two_outputs_on_one_path_are_refused(tmp_path):
  features = tmp_path / "features"
  with pytest.raises(outputs.OverlapError, match="--out=.* is inside --features=.*two outputs"):
    outputs.check_paths({}, {"--out": str(features / "index.jsonl"), "--features": str(features)})
  with pytest.raises(outputs.OverlapError, match="--out=.* is --timeline_png="):
    outputs.check_paths({}, {"--out": str(tmp_path / "a"), "--timeline_png": str(tmp_path / "a")})


def test_check_output_file_refuses_what_it_cannot_write_or_must_not_replace(tmp_path):
  existing = tmp_path / "results.csv"
  existing.write_text("user's\n")
  with pytest.raises(FileExistsError, match="--out=.* exists; pass --overwrite"):
    outputs.check_output_file(str(existing), "--out")
  outputs.check_output_file(str(existing), "--out", overwrite=True)
  with pytest.raises(ValueError, match="--out=.* is a directory; name a file"):
    outputs.check_output_file(str(tmp_path), "--out", overwrite=True)
  with pytest.raises(ValueError, match="is a file, not a directory"):
    outputs.check_output_file(str(existing / "x.csv"), "--out")
  with pytest.raises(ValueError, match=r"--timeline_png=.*: expected a file name ending in \.png"):
    outputs.check_output_file(str(tmp_path / "t.jpg"), "--timeline_png", suffixes=(".png",))
  outputs.check_output_file(str(tmp_path / "new" / "deeper" / "t.PNG"), "--x", suffixes=(".png",))
  assert existing.read_text() == "user's\n"


def test_atomic_writer_leaves_the_old_file_whole_on_error(tmp_path):
  path = tmp_path / "results.jsonl"
  path.write_text("old\n")
  with pytest.raises(RuntimeError):
    with outputs.atomic_writer(str(path)) as f:
      f.write("half")
      raise RuntimeError("crash")
  assert path.read_text() == "old\n"
  assert sorted(os.listdir(tmp_path)) == ["results.jsonl"]
  with outputs.atomic_writer(str(path)) as f:
    f.write("new\n")
  assert path.read_text() == "new\n"


# ---------------------------------------------------------------------------------------------
# Locks.
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# What vidtx wrote: the marker's inventory.
# ---------------------------------------------------------------------------------------------


def _fill(tmp):
  os.makedirs(os.path.join(tmp, "params", "d"))
  for name in ["vidtx_model.json", "params/a", "params/d/b"]:
    with open(os.path.join(tmp, name), "w") as f:
      f.write(name)


def test_a_replace_lists_what_it_wrote_and_refuses_the_users_files(tmp_path):
  out = str(tmp_path / "converted")
  ownership.write_directory(out, "converted", _fill, recheck=lambda: None)
  marker = json.loads(open(os.path.join(out, ownership.MARKER)).read())
  assert marker["written"] == ["params/a", "params/d/b", "vidtx_model.json"]
  assert ownership.foreign_entries(out, "converted") == []
  ownership.check_removable(out, "converted")
  # The user's notes beside vidtx's files, and a file slipped into vidtx's subfolder.
  notes, inner = tmp_path / "converted" / "NOTES.md", tmp_path / "converted" / "params" / "mine"
  notes.write_text("notes")
  inner.write_text("mine")
  (tmp_path / "converted" / "results").mkdir()
  (tmp_path / "converted" / "results" / "r.jsonl").write_text("{}")
  before = {p: _digest(p) for p in (notes, inner)}
  assert ownership.foreign_entries(out, "converted") == [
    "NOTES.md",
    "params/mine",
    "results/r.jsonl",
  ]
  with pytest.raises(ownership.NotOwnedError, match="files vidtx did not write .*NOTES.md"):
    ownership.check_removable(out, "converted")

  def recheck():
    ownership.check_removable(out, "converted")

  with pytest.raises(ownership.NotOwnedError, match="never deletes them"):
    ownership.write_directory(out, "converted", _fill, recheck=recheck)
  assert {p: _digest(p) for p in (notes, inner)} == before
  assert sorted(os.listdir(tmp_path)) == ["converted"]  # No temporary left behind.


def test_directories_without_an_inventory_fall_back_on_their_kinds_layout(tmp_path):
  old = tmp_path / "old"
  old.mkdir()
  (old / ownership.MARKER).write_text('{"kind": "converted"}')  # An earlier vidtx's marker.
  (old / "vidtx_model.json").write_text("{}")
  (old / "params").mkdir()
  assert ownership.written_names(str(old)) is None
  assert ownership.foreign_entries(str(old), "converted") == []
  (old / "DEPLOY.md").write_text("mine")
  assert ownership.foreign_entries(str(old), "converted") == ["DEPLOY.md"]
  # claim() of a new directory starts an empty inventory; record_written adds to it.
  run = tmp_path / "run"
  ownership.claim(str(run), "run")
  assert ownership.written_names(str(run)) == set()
  ownership.record_written(str(run), ["metrics.jsonl", "checkpoints"])
  ownership.claim(str(run), "run")  # Claiming again keeps the inventory.
  assert ownership.written_names(str(run)) == {"metrics.jsonl", "checkpoints"}
  with pytest.raises(ValueError, match="relative"):
    ownership.record_written(str(run), ["../escape"])
