"""vidtx.inference.timeline: windows, one per hop."""

import json
import os

import numpy as np
from test_predict import checkpoint_dir, converted  # noqa: F401
from test_predict_at_scale import folder  # noqa: F401

from vidtx import predict
from vidtx.inference import classifier, preprocess, timeline


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
