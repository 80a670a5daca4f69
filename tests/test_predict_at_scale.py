"""vidtx.predict at scale: JSONL / CSV results, bad files, features and the features directory's
ownership, the command on many videos, and the memory bound (slow). The bounded-memory decode
is tested in test_video_io.py, windows in tests/inference/test_timeline.py."""

import csv
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
from shared import REPO
from test_predict import checkpoint_dir, command, converted, moving_square  # noqa: F401

from vidtx import ownership, predict
from vidtx.inference import classifier, preprocess


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
