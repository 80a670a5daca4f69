"""vidtx.video_io: the bounded-memory decode against decoding every frame, seeking, and the
inputs (a folder, a glob, a list)."""

import os

import av
import numpy as np
import pytest
import tensorflow as tf
from test_predict import checkpoint_dir, converted, moving_square  # noqa: F401
from test_predict_at_scale import folder  # noqa: F401

from vidtx import video_io
from vidtx.data import sampling
from vidtx.inference import classifier, preprocess


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


def test_inputs_folder_glob_and_lists(folder, tmp_path):  # noqa: F811
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
