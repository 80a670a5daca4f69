"""vidtx.tools.rollout_demo: the object's coverage through the same views as the pixels, and the
demo command's picture and figures."""

import numpy as np
import pytest
import reference
from test_rollout import TINY

from vidtx import models


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory):
  """A tiny random TimeSformer with the synthetic configs' preprocessing (8 frames of 32)."""
  from vidtx.checkpoints import store

  config = dict(TINY, num_layers=1)
  model = models.build("timesformer", config, 4)
  params = reference.random_like(reference.init_shapes(model, (1, 8, 32, 32, 3)), seed=2)
  preprocessing = dict(
    num_frames=8,
    stride=2,
    min_resize=36,
    crop_size=32,
    mean=[0.5] * 3,
    std=[0.5] * 3,
    num_test_clips=2,
    do_three_spatial_crops=False,
    aggregation="mean_logits",
  )
  converted = store.Converted(
    "timesformer", config, 4, params, preprocessing, labels=["left", "right", "up", "down"]
  )
  return store.save(str(tmp_path_factory.mktemp("ckpt") / "synthetic"), converted)


def test_patch_coverage_follows_the_views(synthetic_checkpoint):
  from vidtx.checkpoints import store
  from vidtx.tools import rollout_demo

  converted = store.load(synthetic_checkpoint)
  coverage = np.zeros((20, 36, 36), np.float32)
  coverage[:, 2:10, 2:10] = 1.0  # Centre crop 32 of 36: pixels 2..9 are the first patch.
  coverage[7, 20:22, 30:34] = 1.0  # Frame 7: clip 1 (frames 0, 2, .., 14) has it as frame 3.
  cover = rollout_demo.patch_coverage(coverage, converted)
  assert cover.shape == (2, 8, 4, 4)
  np.testing.assert_allclose(cover[:, :, 0, 0], 1.0, atol=1e-2)
  # Clip 2 starts at frame floor(20 - 15) = 5: frames 5, 7, ..: frame 7 is its frame 1.
  np.testing.assert_allclose(cover[1, 1, 2, 3], 2 * 4 / 64, atol=1e-2)
  np.testing.assert_allclose(cover[0, 3, 2, 3], 0.0, atol=1e-2)  # Clip 1 never samples frame 7.
  assert abs(cover.sum() - (2 * 8 * 1.0 + 8 / 64)) < 0.05


def test_demo_command_writes_the_picture_and_the_figures(synthetic_checkpoint, tmp_path, capsys):
  from vidtx.tools import rollout_demo

  out = tmp_path / "rollout.png"
  figures = rollout_demo.run(
    synthetic_checkpoint, str(out), label="up", num_videos=2, video_out=str(tmp_path / "up.mp4")
  )
  printed = capsys.readouterr().out
  assert "heat on object:" in printed and "written to" in printed
  assert out.exists() and (tmp_path / "up.mp4").exists()
  assert figures["num_views"] == 4 and 0 < figures["area"] < 0.3
  assert 0 <= figures["share"] <= 1 and np.isclose(
    figures["lift"], figures["share"] / figures["area"]
  )
  with pytest.raises(ValueError, match="--label='sideways'"):
    rollout_demo.run(synthetic_checkpoint, str(out), label="sideways")
  # Its pictures and video are replaced only with --overwrite, and never the checkpoint.
  picture, video = out.read_bytes(), (tmp_path / "up.mp4").read_bytes()
  with pytest.raises(FileExistsError, match="--out=.* exists; pass --overwrite"):
    rollout_demo.run(synthetic_checkpoint, str(out), num_videos=1)
  with pytest.raises(FileExistsError, match="--video_out=.* exists; pass --overwrite"):
    rollout_demo.run(
      synthetic_checkpoint, str(tmp_path / "new.png"), video_out=str(tmp_path / "up.mp4")
    )
  with pytest.raises(ValueError, match="--out=.* is the input --checkpoint="):
    rollout_demo.run(synthetic_checkpoint, synthetic_checkpoint, overwrite=True)
  assert out.read_bytes() == picture and (tmp_path / "up.mp4").read_bytes() == video
