"""python -m vidtx.predict: a video file's views against a hand-built reference (decode, clip
indices, resize, crops, mean / std), the .npy path and its checks, the command end to end and
the rollout of clips, on a tiny converted checkpoint. Its fixtures (the checkpoint, test videos)
serve the tests of vidtx.inference (tests/inference/)."""

import math
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import reference
import tensorflow as tf
from PIL import Image
from shared import REPO

from vidtx import models, predict
from vidtx.checkpoints import store
from vidtx.inference import classifier, preprocess

MEAN, STD = 0.45, 0.225
PREPROCESSING = dict(
  num_frames=4,
  stride=2,
  min_resize=40,
  crop_size=32,
  mean=[MEAN] * 3,
  std=[STD] * 3,
  num_test_clips=2,
  do_three_spatial_crops=True,
  aggregation="sum_logits",
)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> str:
  """A tiny TimeSformer (4 classes, 4 frames of 32 x 32), saved and loaded as vidtx.convert
  writes it. Every parameter is random (the zero-initialised head and time embedding too), so
  the logits depend on every pixel and on frame order."""
  model_config = dict(variant="Ti/16", hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64)
  model = models.build("timesformer", model_config, 4)
  params = reference.random_like(reference.init_shapes(model, (1, 4, 32, 32, 3)), seed=3)
  converted = store.Converted(
    model_name="timesformer",
    model_config=model_config,
    num_classes=4,
    params=params,
    preprocessing=dict(PREPROCESSING),
    labels=["a", "b", "c", "d"],
  )
  return store.save(str(tmp_path_factory.mktemp("ckpt") / "tiny"), converted)


@pytest.fixture(scope="module")
def converted(checkpoint_dir) -> store.Converted:
  return store.load(checkpoint_dir)


def moving_square(num_frames: int = 20, height: int = 48, width: int = 64) -> np.ndarray:
  """uint8 (T, H, W, 3): a smooth coloured background and a bright square moving right."""
  y, x = np.mgrid[:height, :width]
  background = np.stack([60 + 2 * x, 40 + 3 * y, 120 + 0 * x], -1)  # (H, W, 3)
  frames = np.repeat(background[None], num_frames, 0)
  for t in range(num_frames):
    frames[t, 16:32, 2 * t : 2 * t + 16] = (250, 230, 40)
  return frames.astype(np.uint8)


def write_video(path: str, frames: np.ndarray, codec: str, pix_fmt: str = "yuv420p") -> str:
  return preprocess.encode_video(path, frames, fps=10, codec=codec, pix_fmt=pix_fmt)


@pytest.fixture(scope="module", params=[("mp4", "libx264"), ("webm", "libvpx")])
def video_file(request, tmp_path_factory) -> str:
  extension, codec = request.param
  if codec not in av.codecs_available:
    pytest.skip(f"FFmpeg has no {codec} encoder here")
  path = str(tmp_path_factory.mktemp("videos") / f"square.{extension}")
  return write_video(path, moving_square(), codec)


def reference_views(path: str) -> np.ndarray:
  """The evaluation views of `path`, written out by hand: (V, T, 32, 32, 3) float32."""
  with av.open(path) as container:
    frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
  assert frames.shape == (20, 48, 64, 3)
  # Clip offsets floor(linspace(0, N - span, clips)), span (4 - 1) * 2 + 1 = 7: 0 and 13.
  span = (4 - 1) * 2 + 1
  offsets = np.floor(np.linspace(0, len(frames) - span, 2)).astype(int)
  assert offsets.tolist() == [0, 13]
  clips = frames[offsets[:, None] + 2 * np.arange(4)]  # (clips, T, H, W, 3)
  # Short side 48 -> 40: 40 x round(64 * 40 / 48) = 40 x 53, bilinear as the reader resizes.
  frames = clips.reshape(-1, 48, 64, 3)  # (clips, T, 48, 64, 3) -> (clips*T, 48, 64, 3)
  resized = tf.image.resize(frames, [40, 53], method="bilinear").numpy()
  resized = resized.reshape(2, 4, 40, 53, 3)  # (clips*T, 40, 53, 3) -> (clips, T, 40, 53, 3)
  # Three 32 x 32 crops along the long side (left, centre, right), vertically centred.
  views = [resized[c, :, 4:36, left : left + 32] for c in range(2) for left in (0, 10, 21)]
  return (np.stack(views) / np.float32(255) - np.float32(MEAN)) / np.float32(STD)


def test_video_views_and_logits_match_a_hand_built_reference(converted, video_file):
  probabilities, view_logits = classifier.predict_video(converted, video_file, batch_size=4)
  views = reference_views(video_file)
  np.testing.assert_allclose(
    preprocess.video_views(preprocess.decode_video(video_file), converted), views, atol=1e-5
  )
  model = converted.build_model()
  expected, _ = reference.jitted_apply(model)({"params": converted.params}, views)
  assert view_logits.shape == (6, 4) and view_logits.dtype == np.float32
  np.testing.assert_allclose(view_logits, expected, atol=1e-5)
  assert np.ptp(view_logits, axis=0).max() > 1e-3  # The views differ: the test sees the crops.
  # sum_logits: softmax of the sum over the views.
  summed = view_logits.sum(0)
  np.testing.assert_allclose(probabilities, np.exp(summed) / np.exp(summed).sum(), rtol=1e-5)
  assert math.isclose(float(probabilities.sum()), 1.0, rel_tol=1e-5)


# ---------------------------------------------------------------------------------------------
# .npy input.
# ---------------------------------------------------------------------------------------------


def test_arrays_go_to_the_model_as_they_are(converted, tmp_path):
  clips = np.random.default_rng(1).normal(size=(3, 4, 32, 32, 3)).astype(np.float32)
  expected, _ = reference.jitted_apply(converted.build_model())({"params": converted.params}, clips)
  np.testing.assert_allclose(
    classifier.predict_array(converted, clips, batch_size=2), expected, atol=1e-5
  )
  np.save(tmp_path / "one.npy", clips[1])  # (T, H, W, C): one clip gets a batch axis.
  one = preprocess.load_clip(str(tmp_path / "one.npy"), converted)
  assert one.shape == (1, 4, 32, 32, 3)
  np.testing.assert_allclose(classifier.predict_array(converted, one), expected[1:2], atol=1e-5)


@pytest.mark.parametrize(
  "array, found",
  [
    (np.zeros((4, 32, 32, 3), np.float64), "dtype float64"),
    (np.zeros((2, 5, 32, 32, 3), np.float32), r"shape \(2, 5, 32, 32, 3\)"),
    (np.zeros((4, 28, 28, 3), np.float32), r"shape \(4, 28, 28, 3\)"),
    (np.zeros((4, 32, 32, 1), np.float32), r"shape \(4, 32, 32, 1\)"),
    (np.zeros((32, 32, 3), np.float32), r"shape \(32, 32, 3\)"),
  ],
)
def test_bad_arrays_raise_naming_the_file_and_the_expected_shape(
  checkpoint_dir, tmp_path, monkeypatch, array, found
):
  path = str(tmp_path / "clip.npy")
  np.save(path, array)
  # Checked before the model is touched.
  monkeypatch.setattr(store.Converted, "build_model", lambda self: pytest.fail("model built"))
  with pytest.raises(ValueError, match=rf"clip.npy: {found}.*\(4, 32, 32, 3\)"):
    predict.run(checkpoint_dir, input_path=path)


# ---------------------------------------------------------------------------------------------
# Class names and the command.
# ---------------------------------------------------------------------------------------------


def test_run_needs_exactly_one_input(checkpoint_dir):
  with pytest.raises(ValueError, match="exactly one of --video FILE or --input"):
    predict.run(checkpoint_dir)
  with pytest.raises(ValueError, match="exactly one of --video FILE or --input"):
    predict.run(checkpoint_dir, video="a.mp4", input_path="b.npy")


def command(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", "vidtx.predict", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow
def test_command_end_to_end(converted, checkpoint_dir, tmp_path):
  video = write_video(str(tmp_path / "clip.mp4"), moving_square(), "libx264")
  probabilities, _ = classifier.predict_video(converted, video)
  logits_out = str(tmp_path / "logits")  # No .npy suffix: written exactly here.
  picture = tmp_path / "pictures" / "rollout.png"  # The folder is made.
  result = command(
    f"--checkpoint={checkpoint_dir}",
    f"--video={video}",
    "--top_k=2",
    f"--logits_out={logits_out}",
    f"--rollout={picture}",
  )
  assert result.returncode == 0, result.stderr
  assert f"attention rollout (mean over heads) of 6 view(s) written to {picture}" in result.stdout
  assert Image.open(picture).format == "PNG"
  lines = result.stdout.splitlines()
  assert "20 frames decoded (64x48); 6 views = 2 clip(s) x 3 crops" in lines[0]
  assert "aggregation sum_logits" in lines[0]
  best = np.argsort(-probabilities, kind="stable")[:2]
  printed = [line.split()[1] for line in lines if line.startswith("  ")]
  assert printed == ["abcd"[i] for i in best]
  assert np.load(logits_out).shape == (6, 4) and np.load(logits_out).dtype == np.float32

  garbage = tmp_path / "x.mp4"
  garbage.write_bytes(np.random.default_rng(0).bytes(5000))
  result = command(f"--checkpoint={checkpoint_dir}", f"--video={garbage}")
  assert result.returncode != 0
  assert f"{garbage}: cannot decode" in result.stderr
  assert "Traceback" not in result.stderr


def test_rollout_of_clips_and_bad_requests(converted, checkpoint_dir, tmp_path):
  clips = np.random.default_rng(0).normal(size=(3, 4, 32, 32, 3)).astype(np.float32)
  np.save(tmp_path / "clips.npy", clips)
  path = tmp_path / "clips.jpg"
  logits = predict.run(
    checkpoint_dir, input_path=str(tmp_path / "clips.npy"), rollout_out=str(path), head_fusion="max"
  )
  np.testing.assert_allclose(logits, classifier.model_logits(converted, clips), atol=1e-5)
  assert Image.open(path).format == "JPEG" and Image.open(path).size[1] == 3 * 212 + 2 * 8
  with pytest.raises(ValueError, match="unknown image extension '.picture'"):
    predict.run(
      checkpoint_dir,
      input_path=str(tmp_path / "clips.npy"),
      rollout_out=str(tmp_path / "x.picture"),
    )
  with pytest.raises(ValueError, match="--head_fusion='sum'"):
    predict.run(
      checkpoint_dir,
      input_path=str(tmp_path / "clips.npy"),
      rollout_out=str(tmp_path / "x.png"),
      head_fusion="sum",
    )
