"""python -m vidtx.predict against careless and hostile inputs (issue 24): outputs that are inputs
or each other, existing files, feature names that collide, non-UTF-8 file names, absurd or
non-finite --window / --hop, variable frame rates, a huge --batch_size, a --list with a
byte-order mark, and named pipes. Users' files are compared by sha256 before and after; hangs are
bounded (shared.within)."""

import csv
import fractions
import json
import os

import av
import numpy as np
import pytest
import reference
from shared import digests, within
from test_predict import checkpoint_dir, command, converted, moving_square, write_video  # noqa: F401

from vidtx import locks, outputs, predict, video_io
from vidtx.checkpoints import store
from vidtx.inference import classifier, many_videos, preprocess, timeline


def clip(path, num_frames: int = 20, shift: int = 0) -> str:
  """A 10 fps video of the moving square; `shift` moves it (videos that differ)."""
  os.makedirs(os.path.dirname(str(path)), exist_ok=True)
  return write_video(str(path), np.roll(moving_square(num_frames), shift, axis=2), "libx264")


@pytest.fixture
def no_work(monkeypatch):
  """Loading the checkpoint fails the test: what is checked must be checked before any work."""
  monkeypatch.setattr(store, "load", lambda *a, **k: pytest.fail("the work started"))
  return monkeypatch


# ---------------------------------------------------------------------------------------------
# Outputs against inputs, and against each other (item 1).
# ---------------------------------------------------------------------------------------------


def test_an_output_that_is_an_input_is_refused_before_any_work(checkpoint_dir, tmp_path, no_work):  # noqa: F811
  video = clip(tmp_path / "videos" / "clip.mp4")
  listing = tmp_path / "list.csv"
  listing.write_text(f"path\n{video}\n")
  os.symlink(listing, tmp_path / "link.csv")
  os.link(listing, tmp_path / "hard.csv")
  features = str(tmp_path / "features")
  before = digests(tmp_path)
  cases = [
    (dict(list_file=str(listing), out=str(listing)), r"--out=.*list.csv is the input --list="),
    (dict(list_file=str(listing), out=str(tmp_path / "link.csv")), "is the input --list="),
    (dict(list_file=str(listing), out=str(tmp_path / "hard.csv")), "is the input --list="),
    (dict(video=str(tmp_path / "videos"), out=video), r"--out=.*clip.mp4 is the input --video"),
    (dict(list_file=str(listing), out=video), "is the input --list entry="),
    (dict(video=video, features=str(tmp_path / "videos")), "--features=.* contains the input"),
    (dict(video=video, features=str(tmp_path)), "--features=.* contains the input"),
    (
      dict(video=video, features=features, out=os.path.join(features, "index.jsonl")),
      "two outputs of one command",
    ),
    (
      dict(
        video=video, window=1, out=str(tmp_path / "r.png"), timeline_png=str(tmp_path / "r.png")
      ),
      "two outputs of one command",
    ),
    (dict(video=video, out=str(tmp_path / "model.jsonl")), None),  # Control: accepted.
  ]
  for options, message in cases:
    if message is None:
      with pytest.raises(pytest.fail.Exception, match="the work started"):
        predict.run_many(checkpoint_dir, **options)
      continue
    with pytest.raises(outputs.OverlapError, match=message):
      predict.run_many(checkpoint_dir, **options)
  with pytest.raises(outputs.OverlapError, match=r"--logits_out=.*clip.mp4 is the input --video"):
    predict.run(checkpoint_dir, video=video, logits_out=video)
  with pytest.raises(outputs.OverlapError, match="--rollout=.* is the input --video"):
    predict.run(checkpoint_dir, video=video, rollout_out=video)
  assert digests(tmp_path) == before
  assert not os.path.exists(features)


def test_existing_files_and_bad_output_paths_are_one_line_errors(checkpoint_dir, tmp_path, no_work):  # noqa: F811
  video = clip(tmp_path / "clip.mp4")
  mine = tmp_path / "results.csv"
  mine.write_text("my own results\n")
  (tmp_path / "picture.png").write_bytes(b"my picture")
  (tmp_path / "logits.npy").write_bytes(b"my array")
  (tmp_path / "folder.csv").mkdir()
  (tmp_path / "file").write_text("a file")
  before = digests(tmp_path)
  cases = [
    (dict(out=str(mine)), FileExistsError, "--out=.*results.csv exists; pass --overwrite"),
    (
      dict(window=1, timeline_png=str(tmp_path / "picture.png")),
      FileExistsError,
      "--timeline_png=.*picture.png exists; pass --overwrite",
    ),
    (dict(out=str(tmp_path / "folder.csv")), ValueError, "folder.csv is a directory; name a file"),
    (dict(out=str(tmp_path / "file" / "r.csv")), ValueError, "is a file, not a directory"),
    (dict(out=str(tmp_path / "r.txt")), ValueError, r"--out=.*r.txt: expected .* \.jsonl or \.csv"),
    (
      dict(window=1, timeline_png=str(tmp_path / "t.bmpx")),
      ValueError,
      r"--timeline_png=.*t.bmpx: expected a file name ending in .*\.png",
    ),
  ]
  for options, error, message in cases:
    with pytest.raises(error, match=message):
      predict.run_many(checkpoint_dir, video=video, **options)
  with pytest.raises(FileExistsError, match="--logits_out=.*logits.npy exists"):
    predict.run(checkpoint_dir, video=video, logits_out=str(tmp_path / "logits.npy"))
  with pytest.raises(FileExistsError, match="--rollout=.*picture.png exists"):
    predict.run(checkpoint_dir, video=video, rollout_out=str(tmp_path / "picture.png"))
  with pytest.raises(ValueError, match="unknown image extension '.bmpx'"):
    predict.run(checkpoint_dir, video=video, rollout_out=str(tmp_path / "x.bmpx"))
  assert digests(tmp_path) == before


def test_overwrite_replaces_the_results_whole_or_not_at_all(checkpoint_dir, tmp_path, monkeypatch):  # noqa: F811
  videos = [clip(tmp_path / "videos" / f"{name}.mp4") for name in "ab"]
  out = tmp_path / "results.jsonl"
  out.write_text("my own results\n")
  calls = []
  aggregate = classifier.aggregate

  def fail_on_the_second(*args):
    calls.append(1)
    if len(calls) == 2:
      raise RuntimeError("the machine went away")
    return aggregate(*args)

  monkeypatch.setattr(classifier, "aggregate", fail_on_the_second)
  with pytest.raises(RuntimeError, match="went away"):
    predict.run_many(checkpoint_dir, video=str(tmp_path / "videos"), out=str(out), overwrite=True)
  assert out.read_text() == "my own results\n"  # The failed run left the file as it was,
  assert sorted(os.listdir(tmp_path)) == ["results.jsonl", "videos"]  # and no temporary.
  monkeypatch.undo()
  assert predict.run_many(checkpoint_dir, video=videos[0], out=str(out), overwrite=True) == (1, 0)
  (record,) = map(json.loads, open(out))
  assert record["id"] == videos[0] and len(record["top_k"]) == 4


# ---------------------------------------------------------------------------------------------
# Feature file names (item 5).
# ---------------------------------------------------------------------------------------------


def test_features_of_colliding_names_are_all_kept(checkpoint_dir, converted, tmp_path):  # noqa: F811
  root = tmp_path / "videos"
  names = ["a/b.mp4", "a__b.mp4", "vidéo 名前.mp4", "z" * 200 + ".mp4"]
  for shift, name in enumerate(names):
    clip(root / name, shift=8 * shift)  # Each video differs: so do their embeddings.
  features = str(tmp_path / "features")
  assert predict.run_many(checkpoint_dir, video=str(root), features=features) == (4, 0)
  entries = [json.loads(line) for line in open(os.path.join(features, "index.jsonl"))]
  assert sorted(e["id"] for e in entries) == sorted(names)
  assert len({e["file"] for e in entries}) == 4
  apply = reference.jitted_apply(converted.build_model())
  for entry in entries:
    views, _ = preprocess.streamed_views(str(root / entry["id"]), converted)
    _, aux = apply({"params": converted.params}, views)
    embedding = np.load(os.path.join(features, entry["file"]))
    np.testing.assert_allclose(embedding, np.mean(aux["pre_logits"], 0), atol=1e-5)
  written = {e["file"] for e in entries} | {"index.jsonl"}
  assert set(os.listdir(features)) == written | {".vidtx"}


def test_a_features_directory_in_use_is_refused(checkpoint_dir, tmp_path):  # noqa: F811
  video = clip(tmp_path / "clip.mp4")
  features = str(tmp_path / "features")
  assert predict.run_many(checkpoint_dir, video=video, features=features) == (1, 0)
  before = digests(features)
  with locks.hold(features, "another predict"):
    with pytest.raises(locks.LockedError, match="features is in use by another predict"):
      predict.run_many(checkpoint_dir, video=video, features=features)
  assert digests(features) == before


# ---------------------------------------------------------------------------------------------
# Non-UTF-8 file names; a row that cannot be written (item 7).
# ---------------------------------------------------------------------------------------------


def test_a_non_utf8_file_name_keeps_every_row(checkpoint_dir, tmp_path, capsys):  # noqa: F811
  root = tmp_path / "videos"
  for name in ("a.mp4", "c.mp4"):
    clip(root / name)
  clip(root / "b.mp4")
  os.rename(os.fsencode(root / "b.mp4"), os.fsencode(root) + b"/b\xff.mp4")  # Not UTF-8.
  for out in ("results.csv", "results.jsonl"):
    path = str(tmp_path / out)
    # Batches of 8 views: b's 6 share a call with a's and with c's.
    assert predict.run_many(checkpoint_dir, video=str(root), out=path) == (3, 0)
    assert "3 of 3 video(s) predicted" in capsys.readouterr().err
    raw = open(path, "rb").read()
    raw.decode("utf-8")  # The file is UTF-8: the odd byte is written as \xff.
    if out.endswith(".csv"):
      rows = list(csv.reader(open(path)))[1:]
      assert [r[0] for r in rows] == ["a.mp4", "b\\xff.mp4", "c.mp4"]
      assert all(r[1] and not r[4] for r in rows)
    else:
      records = [json.loads(line) for line in open(path)]
      assert [r["id"] for r in records] == ["a.mp4", "b\\xff.mp4", "c.mp4"]
      assert all("top_k" in r for r in records)


def test_a_row_that_cannot_be_written_fails_alone(checkpoint_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
  for name in "abc":
    clip(tmp_path / "videos" / f"{name}.mp4")
  aggregate, calls = classifier.aggregate, []

  def nan_for_b(logits, aggregation):
    calls.append(1)
    probabilities = aggregate(logits, aggregation)
    return probabilities * np.nan if len(calls) == 2 else probabilities

  monkeypatch.setattr(classifier, "aggregate", nan_for_b)
  out = str(tmp_path / "results.jsonl")
  assert predict.run_many(checkpoint_dir, video=str(tmp_path / "videos"), out=out) == (2, 1)
  records = [json.loads(line) for line in open(out)]
  assert [r["id"] for r in records] == ["a.mp4", "b.mp4", "c.mp4"]
  assert "top_k" in records[0] and "top_k" in records[2]
  assert "b.mp4: cannot write its result" in records[1]["error"]
  assert "2 of 3 video(s) predicted" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# --window / --hop (item 8) and variable frame rates (item 9).
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "window, hop, message",
  [
    (1, 0.000001, r"--hop=1e-06: expected seconds >= 0.001"),
    (float("nan"), None, "--window=nan: expected a finite number"),
    (1, float("inf"), "--hop=inf: expected a finite number"),
    (float("-inf"), 1, "--window=-inf: expected a finite number"),
    (0, None, "--window=0: expected seconds >= 0.001"),
    (1, -2, "--hop=-2: expected seconds >= 0.001"),
    (None, 1, "--hop needs --window"),
  ],
)
def test_window_flags_are_checked_before_any_work(tmp_path, no_work, window, hop, message):
  with within(10), pytest.raises(ValueError, match=message):
    predict.run_many(str(tmp_path), video=str(tmp_path / "x.mp4"), window=window, hop=hop)


def test_a_hop_shorter_than_a_frame_fails_that_video_quickly(checkpoint_dir, tmp_path, capsys):  # noqa: F811
  video = clip(tmp_path / "clip.mp4")  # 10 fps.
  out = str(tmp_path / "windows.jsonl")
  with within(60):
    assert predict.run_many(checkpoint_dir, video=video, window=1, hop=0.01, out=out) == (0, 1)
  (record,) = map(json.loads, open(out))
  assert "--hop=0.01 s is shorter than one frame interval of this video (0.1 s" in record["error"]
  assert "0 of 1 video(s) predicted" in capsys.readouterr().err
  # Windows are made one at a time: a million frames' windows cost nothing up front.
  many = timeline.windows(np.arange(10**6) / 30, 30.0, 1.0, 1 / 30)
  assert next(many).stop == 30 and next(many).first == 1


def variable_rate_video(path: str) -> str:
  """3 s at 30 fps of dark frames, then 4 s at 2.5 fps of bright ones: the change is at 3 s, and
  its frame index / average rate (90 / 14.3) would put it at 6.3 s."""
  times_ms = [round(1000 * i / 30) for i in range(90)] + [3000 + 400 * i for i in range(10)]
  with av.open(path, "w") as container:
    # Lossless (qp 0): every frame of one colour decodes to the same pixels.
    stream = container.add_stream("libx264", rate=30, options={"qp": "0"})
    stream.height = stream.width = 32
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = stream.time_base = fractions.Fraction(1, 1000)
    for ms in times_ms:
      frame = np.full((32, 32, 3), 40 if ms < 3000 else 210, np.uint8)
      frame[8:24, 8:24] = (200, 30, 30)
      frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
      frame.pts, frame.time_base = ms, fractions.Fraction(1, 1000)
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  return path


def test_windows_follow_the_frames_timestamps(checkpoint_dir, converted, tmp_path):  # noqa: F811
  video = variable_rate_video(str(tmp_path / "vfr.mp4"))
  out = str(tmp_path / "windows.jsonl")
  assert predict.run_many(checkpoint_dir, video=video, window=1, out=out, per_view=True) == (1, 0)
  records = [json.loads(line) for line in open(out)]
  assert [r["start"] for r in records] == [0, 1, 2, 3, 4, 5, 6]
  frames = preprocess.decode_video(video)
  # Every window is one colour: its logits are those of a video of that colour.
  _, dark = classifier.predict_frames(converted, frames[:10])
  _, bright = classifier.predict_frames(converted, frames[-4:])
  assert np.abs(dark - bright).max() > 1e-3
  for r in records:
    expected = dark if r["end"] <= 3 else bright
    np.testing.assert_allclose(r["view_logits"], expected, atol=1e-4, err_msg=str(r["start"]))


def test_windows_when_the_decoder_disagrees_with_the_packets(converted, tmp_path, monkeypatch):  # noqa: F811
  video = variable_rate_video(str(tmp_path / "vfr.mp4"))
  configs = preprocess.dataset_configs(converted)

  def summary(clips):
    return [(c.window, c.start, c.end, c.start_s, c.end_s, c.clips.sum()) for c in clips]

  truth = summary(video_io.video_clips(video, configs, 0.5, 0.25))
  # Frames 0-89 every 1/30 s, 90-99 every 0.4 s from 3 s.
  assert [c[:5] for c in truth[10:13]] == [
    (10, 75, 90, 2.5, 3.0),
    (11, 83, 91, 2.75, 3.25),
    (12, 90, 92, 3.0, 3.5),
  ]
  packet_times = video_io.packet_times
  for wrong in (
    lambda path: None,  # No timestamps in the packets: the decoder's.
    lambda path: np.delete(packet_times(path), 50),  # A frame the container does not list.
    lambda path: np.append(packet_times(path), 9.0),  # One the decoder drops.
  ):
    monkeypatch.setattr(video_io, "packet_times", wrong)
    assert summary(video_io.video_clips(video, configs, 0.5, 0.25)) == truth


# ---------------------------------------------------------------------------------------------
# POOR: padding, a byte-order mark, named pipes.
# ---------------------------------------------------------------------------------------------


def test_a_huge_batch_size_pads_only_to_the_work_there_is(checkpoint_dir, tmp_path, monkeypatch):  # noqa: F811
  shapes = []
  jitted = many_videos._jitted_outputs

  def recording(model, tokens):
    apply = jitted(model, tokens)
    return lambda params, batch: shapes.append(batch.shape[0]) or apply(params, batch)

  monkeypatch.setattr(many_videos, "_jitted_outputs", recording)
  video = clip(tmp_path / "clip.mp4")  # 6 views.
  assert predict.run_many(checkpoint_dir, video=video, batch_size=65536) == (1, 0)
  assert shapes == [8]  # The next power of two: a few compiled shapes at most.


def test_a_list_with_a_byte_order_mark(tmp_path):
  table = tmp_path / "videos.csv"
  table.write_text("\ufeffpath,label\n/v/a.mp4,x\n", encoding="utf-8")
  assert video_io.list_videos(list_file=str(table)) == [("/v/a.mp4", "/v/a.mp4")]
  lines = tmp_path / "videos.txt"
  lines.write_text("\ufeff/v/a.mp4\n/v/b.mp4\n", encoding="utf-8")
  assert [p for p, _ in video_io.list_videos(list_file=str(lines))] == ["/v/a.mp4", "/v/b.mp4"]


def test_named_pipes_are_not_regular_files_and_never_block(checkpoint_dir, tmp_path, capsys):  # noqa: F811
  root = tmp_path / "videos"
  video = clip(root / "a.mp4")
  os.mkfifo(root / "pipe.mp4")
  os.mkfifo(tmp_path / "list.txt")
  with within(60):
    assert predict.run_many(checkpoint_dir, video=str(root)) == (1, 1)
    assert "pipe.mp4: not a regular file (it is a named pipe (FIFO))" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"--list .*list.txt: not a regular file \(it is a named"):
      predict.run_many(checkpoint_dir, list_file=str(tmp_path / "list.txt"))
    with pytest.raises(ValueError, match="pipe.mp4: not a regular file"):
      predict.run(checkpoint_dir, video=str(root / "pipe.mp4"))
    with pytest.raises(ValueError, match="--input .*list.txt: not a regular file"):
      predict.run(checkpoint_dir, input_path=str(tmp_path / "list.txt"))
    with pytest.raises(ValueError, match="--labels .*list.txt: not a regular file"):
      predict.run(checkpoint_dir, video=video, labels=str(tmp_path / "list.txt"))
    with pytest.raises(ValueError, match="nowhere.mp4: no such file"):
      predict.run(checkpoint_dir, video=str(root / "nowhere.mp4"))


# ---------------------------------------------------------------------------------------------
# The command, where the user meets it.
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_command_refuses_out_on_its_list_in_one_line(checkpoint_dir, tmp_path):  # noqa: F811
  video = clip(tmp_path / "clip.mp4")
  listing = tmp_path / "list.csv"
  listing.write_text(f"path\n{video}\n")
  before = digests(tmp_path)
  result = command(f"--checkpoint={checkpoint_dir}", f"--list={listing}", f"--out={listing}")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
    f"error: --out={listing} is the input --list={listing}: an output must never replace or "
    "hold an input of the same command; choose another --out."
  ]
  assert digests(tmp_path) == before
