"""vidtx.inference.preprocess: grey, odd-sized and short videos decode to RGB; files that are not
videos or arrays are named."""

import math

import numpy as np
import pytest
from test_predict import checkpoint_dir, converted, moving_square, write_video  # noqa: F401

from vidtx.inference import classifier, preprocess


def test_grey_odd_sized_and_short_videos_decode_to_rgb(converted, tmp_path):  # noqa: F811
  # 9 frames (shorter than the 7-frame span twice over: clips loop), 37 x 45, grey, lossless.
  grey = moving_square(9, 37, 45).mean(-1, keepdims=True).astype(np.uint8).repeat(3, -1)
  path = write_video(str(tmp_path / "grey.mkv"), grey, "ffv1", pix_fmt="gray")
  frames = preprocess.decode_video(path)
  assert frames.shape == (9, 37, 45, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(frames, grey)
  probabilities, view_logits = classifier.predict_frames(converted, frames)
  assert view_logits.shape == (6, 4) and np.isfinite(view_logits).all()
  assert math.isclose(float(probabilities.sum()), 1.0, rel_tol=1e-5)


def test_bad_video_files_raise_naming_the_file(tmp_path):
  garbage = tmp_path / "x.mp4"
  garbage.write_bytes(np.random.default_rng(0).bytes(5000))
  with pytest.raises(ValueError, match="x.mp4: cannot decode"):
    preprocess.decode_video(str(garbage))
  with pytest.raises(ValueError, match="nowhere.mp4: no such file"):
    preprocess.decode_video(str(tmp_path / "nowhere.mp4"))


def test_not_an_array_raises_naming_the_file(converted, tmp_path):  # noqa: F811
  path = tmp_path / "clip.npy"
  path.write_text("not an array")
  with pytest.raises(ValueError, match="clip.npy: not a .npy file"):
    preprocess.load_clip(str(path), converted)
  np.savez(tmp_path / "clips.npz", np.zeros((4, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match="clips.npz: not a .npy file"):
    preprocess.load_clip(str(tmp_path / "clips.npz"), converted)
  with pytest.raises(ValueError, match="nowhere.npy: cannot read it"):
    preprocess.load_clip(str(tmp_path / "nowhere.npy"), converted)
