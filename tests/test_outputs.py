"""vidtx.outputs, the check every command shares: outputs never an input however spelt, two
outputs never on one path, and atomic writes. One writer per directory is tested in
test_locks.py, the marker's inventory of what vidtx wrote in test_ownership.py."""

import hashlib
import os

import pytest

from vidtx import outputs


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
