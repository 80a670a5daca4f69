"""vidtx.data.video_decode: the fps filter's frame choice, grey frames to RGB resized, mp4 and
webm read, resampled and resized."""

import av
import numpy as np
from shared import (
  H,
  W,
  frame_index,
  frames_of,
  write_video,
)

from vidtx.data import (
  video_decode,
)


def test_sample_frames_follows_the_fps_filter_rule():
  def sample(times, **kwargs):
    options = dict(start=None, end=None, fps=0, frame_duration=1 / 30, tolerance=1e-3)
    return list(
      video_decode.sample_frames([(t, i) for i, t in enumerate(times)], **{**options, **kwargs})
    )

  times = [k / 30 for k in range(24)]
  assert sample(times) == list(range(24))
  assert sample(times, fps=10) == list(range(0, 24, 3))
  assert sample(times, start=0.2, end=0.5) == list(range(6, 15))
  assert sample(times, start=0.2, end=0.5, fps=10) == [6, 9, 12]
  # Up-sampling repeats frames: 0..0.8 s at 60 fps shows each 30 fps frame twice.
  assert sample(times, fps=60) == [k // 2 for k in range(48)]
  # Millisecond timestamps (WebM) round 1/30 s up or down; the tolerance absorbs it.
  assert sample([round(t, 3) for t in times], fps=15) == list(range(0, 24, 2))
  # A start between frames takes the frame shown then (the one before it).
  assert sample(times, start=0.11, end=0.3, fps=10) == [3, 6]
  # Output times before the first frame show the first frame.
  assert sample([t + 0.05 for t in times], start=0.0, end=0.2, fps=20) == [0, 0, 1, 3]


def test_frame_to_rgb_converts_gray_and_resizes_to_the_first_frame_size():
  gray = av.VideoFrame.from_ndarray(np.full((20, 30), 128, np.uint8), format="gray")
  rgb = video_decode.frame_to_rgb(gray, 12, 8)
  assert rgb.shape == (8, 12, 3) and rgb.dtype == np.uint8
  np.testing.assert_allclose(rgb, 128, atol=2)
  larger = av.VideoFrame.from_ndarray(np.full((40, 60, 3), 90, np.uint8), format="rgb24")
  assert video_decode.frame_to_rgb(larger, 12, 8).shape == (8, 12, 3)


def test_read_frames_resamples_and_resizes_mp4_and_webm(tmp_path):
  for name in ("a.mp4", "a.webm"):
    path = write_video(str(tmp_path / name), 24, fps=30)
    frames, rate = video_decode.read_frames(path)
    assert frames.shape == (24, H, W, 3) and rate == 30
    # H.264 / VP9 loss: small on average, larger at the red corner's edges.
    np.testing.assert_allclose(frames, frames_of(24), atol=32)
    assert np.abs(frames.astype(float) - frames_of(24)).mean() < 3
    assert frames[0, 2, 2, 0] > 150 > frames[0, 2, 2, 1]  # RGB, not BGR.
    frames, rate = video_decode.read_frames(path, fps=10, short_side=16)
    assert frames.shape == (8, 16, 24, 3) and rate == 10  # A third of the frames, 32x48 -> 16x24.
    assert [frame_index(f) for f in frames] == list(range(0, 24, 3))
  portrait = write_video(str(tmp_path / "portrait.mp4"), 4, height=48, width=32)
  assert video_decode.read_frames(portrait, short_side=16)[0].shape == (4, 24, 16, 3)
