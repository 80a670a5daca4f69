"""vidtx.predict at scale: the bounded-memory decode (vidtx.video_io) against decoding every frame,
many inputs (folder, glob, list), JSONL / CSV results, bad files, windows of long videos,
features, the features directory's ownership, and the memory bound (slow)."""

import csv
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import reference
import shared
import tensorflow as tf
from shared import REPO
from test_predict import checkpoint_dir, command, converted, moving_square  # noqa: F401

from vidtx import models, ownership, predict, video_io
from vidtx.checkpoints import store
from vidtx.data import sampling
from vidtx.inference import classifier, many_videos, preprocess, timeline


def write(path, num_frames: int = 20, codec: str = "libx264") -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return preprocess.encode_video(str(path), moving_square(num_frames), fps=10, codec=codec)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
  """a.mp4 (20 frames), sub/b.MKV (40 frames, no frame count in the header), a garbage c.mp4, a
  hidden video and a text file."""
  root = tmp_path_factory.mktemp("videos")
  write(root / "a.mp4")
  write(root / "sub" / "b.MKV", 40)
  (root / "c.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
  write(root / ".hidden.mp4")
  (root / "notes.txt").write_text("not a video")
  return str(root)


def test_streamed_decode_equals_decoding_every_frame(converted, folder, monkeypatch):  # noqa: F811
  configs = preprocess.dataset_configs(converted)
  for name in ("a.mp4", "sub/b.MKV"):
    path = os.path.join(folder, name)
    frames = preprocess.decode_video(path)  # Today's path: every frame.
    indices = sampling.eval_clip_indices_for(configs, tf.constant(len(frames))).numpy()
    (clips,) = video_io.video_clips(path, configs)
    assert clips.length == len(frames) and (clips.start, clips.end) == (0, len(frames))
    np.testing.assert_array_equal(clips.clips, frames[indices])  # (C, T, H, W, 3)
    _, old = classifier.predict_frames(converted, frames)
    _, new = classifier.predict_video(converted, path)
    np.testing.assert_array_equal(new, old)
  assert video_io.probe(os.path.join(folder, "sub/b.MKV")).frames is None  # Counted by a pass.
  # A header that overstates the count: the decoded count wins, by a second pass.
  path = os.path.join(folder, "a.mp4")
  monkeypatch.setattr(video_io, "probe", lambda p: video_io.StreamInfo(31, 10.0, 64, 48))
  (clips,) = video_io.video_clips(path, configs)
  assert clips.length == 20
  frames = preprocess.decode_video(path)
  indices = sampling.eval_clip_indices_for(configs, tf.constant(20)).numpy()
  np.testing.assert_array_equal(clips.clips, frames[indices])


@pytest.mark.parametrize("gop", [5, 250])
def test_seeking_gives_the_same_frames(converted, tmp_path, monkeypatch, gop):  # noqa: F811
  path = str(tmp_path / "long.mp4")
  frames = moving_square(20, 32, 48)[np.arange(200) % 20]  # (200, 32, 48, 3)
  frames[:, 0, 0] = np.arange(200)[:, None]  # Each frame differs.
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=10)
    stream.height, stream.width, stream.pix_fmt = 32, 48, "yuv420p"
    stream.codec_context.gop_size = gop  # Key frames every `gop` frames.
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
  configs = preprocess.dataset_configs(converted)
  seeks = []
  seek_frames = video_io._seek_frames
  monkeypatch.setattr(video_io, "SEEK_GAP_S", 1.0)  # 10 frames.
  monkeypatch.setattr(
    video_io, "_seek_frames", lambda *a: seeks.append(seek_frames(*a)) or seeks[-1]
  )
  (clips,) = video_io.video_clips(path, configs)
  assert len(seeks) == 1 and seeks[0] is not None  # Frames 0-6 and 193-199: one seek.
  indices = sampling.eval_clip_indices_for(configs, tf.constant(200)).numpy()
  np.testing.assert_array_equal(clips.clips, preprocess.decode_video(path)[indices])


def test_inputs_folder_glob_and_lists(folder, tmp_path):
  ids = [i for i, _ in video_io.list_videos(folder)]
  assert ids == ["a.mp4", "c.mp4", os.path.join("sub", "b.MKV")]  # No hidden file, no .txt.
  pattern = os.path.join(folder, "*.mp4")
  assert [p for p, _ in video_io.list_videos(pattern)] == [
    os.path.join(folder, "a.mp4"),
    os.path.join(folder, "c.mp4"),
  ]
  lines = tmp_path / "videos.txt"
  lines.write_text(f"{folder}/a.mp4\n\n{folder}/sub/b.MKV\n")
  assert [p for p, _ in video_io.list_videos(list_file=str(lines))] == [
    f"{folder}/a.mp4",
    f"{folder}/sub/b.MKV",
  ]
  table = tmp_path / "videos.csv"
  table.write_text(f"path,label\n{folder}/a.mp4,x\n")
  assert video_io.list_videos(list_file=str(table)) == [(f"{folder}/a.mp4",) * 2]
  with pytest.raises(ValueError, match=r"\*.webm: the pattern matches no video file"):
    video_io.list_videos(os.path.join(folder, "*.webm"))


def test_jsonl_csv_and_a_bad_file(checkpoint_dir, converted, folder, tmp_path, capsys):  # noqa: F811
  out = str(tmp_path / "results.jsonl")
  ok, bad = predict.run_many(
    checkpoint_dir, video=folder, out=out, top_k=2, per_view=True, batch_size=4
  )
  assert (ok, bad) == (2, 1)
  records = {r["id"]: r for r in map(json.loads, open(out))}
  assert list(records) == ["a.mp4", "c.mp4", os.path.join("sub", "b.MKV")]
  assert "c.mp4: cannot decode" in records["c.mp4"]["error"]
  assert "c.mp4: cannot decode" in capsys.readouterr().err
  probabilities, view_logits = classifier.predict_video(converted, os.path.join(folder, "a.mp4"))
  best = np.argsort(-probabilities, kind="stable")[:2]
  assert [t["label"] for t in records["a.mp4"]["top_k"]] == ["abcd"[i] for i in best]
  np.testing.assert_allclose(
    [t["prob"] for t in records["a.mp4"]["top_k"]], probabilities[best], atol=1e-6
  )
  # Views of two videos share model calls of 4: the same logits as one video at a time.
  np.testing.assert_allclose(records["a.mp4"]["view_logits"], view_logits, atol=1e-5)

  out = str(tmp_path / "results.csv")
  assert predict.run_many(checkpoint_dir, video=folder, out=out, top_k=3) == (2, 1)
  rows = list(csv.reader(open(out)))
  assert rows[0] == ["id", "top1", "top1_prob", "top_k", "error"]
  assert rows[1][0] == "a.mp4" and rows[1][1] == "abcd"[best[0]] and rows[1][4] == ""
  assert len(rows[1][3].split(";")) == 3 and rows[1][3].startswith(f"{rows[1][1]}:")
  assert rows[2][0] == "c.mp4" and rows[2][1] == "" and "cannot decode" in rows[2][4]

  # Nothing decodable: (0, n), the command exits 1.
  only_bad = tmp_path / "bad.txt"
  only_bad.write_text(f"{folder}/c.mp4\n{folder}/missing.mp4\n")
  assert predict.run_many(checkpoint_dir, list_file=str(only_bad)) == (0, 2)
  assert "missing.mp4: no such file" in capsys.readouterr().err


def test_windows_one_per_hop(checkpoint_dir, converted, folder, tmp_path):  # noqa: F811
  path = os.path.join(folder, "sub", "b.MKV")  # 40 frames at 10 fps: 4 s.
  out = str(tmp_path / "windows.jsonl")
  picture = str(tmp_path / "timeline.png")
  assert predict.run_many(
    checkpoint_dir, video=path, window=2, hop=1, out=out, timeline_png=picture, per_view=True
  ) == (1, 0)
  records = [json.loads(line) for line in open(out)]
  assert [(r["start"], r["end"]) for r in records] == [(0, 2), (1, 3), (2, 4), (3, 4)]
  assert all(r["id"] == path for r in records)
  # Each window is classified as the video of its frames would be.
  frames = preprocess.decode_video(path)
  for r in records:
    window = frames[int(r["start"] * 10) : int(r["end"] * 10)]
    _, expected = classifier.predict_frames(converted, window)
    np.testing.assert_allclose(r["view_logits"], expected, atol=1e-5)
  assert open(picture, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  # Windows shorter than the hop leave gaps; frames on a window's edge (0.3 s = 3 * 0.1 s)
  # belong to the window that starts there.
  times = np.arange(40) / 10
  found = [(w.first, w.stop) for w in timeline.windows(times, 10.0, 1.5, 2.0)]
  assert found == [(0, 15), (20, 35)]
  assert [w.first for w in timeline.windows(times, 10.0, 0.1, 0.1)] == list(range(40))


def test_features_and_their_directory(checkpoint_dir, converted, folder, tmp_path):  # noqa: F811
  features = str(tmp_path / "features")
  ok, _ = predict.run_many(
    checkpoint_dir, video=os.path.join(folder, "a.mp4"), features=features, token_features=True
  )
  assert ok == 1
  (entry,) = [json.loads(line) for line in open(os.path.join(features, "index.jsonl"))]
  embedding = np.load(os.path.join(features, entry["file"]))
  tokens = np.load(os.path.join(features, entry["tokens_file"]))
  assert embedding.dtype == np.float32 and embedding.shape == (32,) == tuple(entry["shape"])
  assert tokens.shape == (4, 4, 32) == tuple(entry["tokens_shape"])  # (T, h * w, D)
  views, _ = preprocess.streamed_views(os.path.join(folder, "a.mp4"), converted)
  model = converted.build_model()
  _, aux = model.apply({"params": converted.params}, views, train=False)
  np.testing.assert_allclose(embedding, np.mean(aux["pre_logits"], 0), atol=1e-5)
  np.testing.assert_allclose(tokens, np.mean(aux["encoded_tokens"], 0), atol=1e-5)
  assert ownership.marker_kind(features) == "features"
  # Its own directory is reused; a user's is refused before any work.
  assert predict.run_many(checkpoint_dir, video=folder, features=features)[0] == 2
  user = tmp_path / "mine"
  user.mkdir()
  (user / "notes.txt").write_text("keep")
  with pytest.raises(ownership.NotOwnedError, match="mine is not empty"):
    predict.run_many(checkpoint_dir, video=folder, features=str(user))
  assert os.listdir(user) == ["notes.txt"]


def test_token_features_only_where_the_model_returns_them(converted):  # noqa: F811
  assert many_videos.token_features_available(converted)  # TimeSformer: 'encoded_tokens'.
  model_config = shared.tiny_model_config("vivit", "spatio_temporal")
  model = models.build("vivit", model_config, 4)
  vivit = store.Converted(
    model_name="vivit",
    model_config=model_config,
    num_classes=4,
    params=reference.init_shapes(model, (1, 4, 16, 16, 3)),  # Shapes are enough.
    preprocessing=dict(converted.preprocessing, crop_size=16),
  )
  assert not many_videos.token_features_available(vivit)


# ---------------------------------------------------------------------------------------------
# Subprocesses.
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_command_many_videos(checkpoint_dir, folder, tmp_path):  # noqa: F811
  result = command(f"--checkpoint={checkpoint_dir}", f"--video={folder}", "--batch_size=4")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert [line.split(":")[0] for line in lines] == ["a.mp4", "c.mp4", os.path.join("sub", "b.MKV")]
  assert "error: " in lines[1] and "predict: 3/3 videos | 1 bad" in result.stderr


def _long_video(path: str, seconds: int, fps: int = 30, height: int = 240, width: int = 320) -> str:
  """A moving gradient, encoded frame by frame (never all in memory)."""
  y, x = np.mgrid[:height, :width]
  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
    stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
    for t in range(seconds * fps):
      frame = np.stack([(x + 3 * t) % 256, (y + t) % 256, (x + y) % 256], -1).astype(np.uint8)
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
  return path


PEAK_RSS = """
import resource, sys
from vidtx.inference import classifier
from vidtx.checkpoints import store
converted = store.load(sys.argv[1])
for video in sys.argv[2:]:
  classifier.predict_video(converted, video)
  print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_video(checkpoint_dir, tmp_path):  # noqa: F811
  short = _long_video(str(tmp_path / "short.mp4"), 1, fps=20)
  long = _long_video(str(tmp_path / "long.mp4"), 120, fps=15)  # 1800 frames: 415 MB if all kept.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  # One process, the short video first: the peak after each (ru_maxrss, KiB on Linux).
  result = subprocess.run(
    [sys.executable, "-c", PEAK_RSS, checkpoint_dir, short, long],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  small, large = (int(kib) / 1024 for kib in result.stdout.split()[-2:])
  assert large < 1.25 * small + 100, (small, large)
