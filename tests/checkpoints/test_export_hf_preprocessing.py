"""The exported Hugging Face folder's preprocessing: export_hf.prepare_frames (numpy) equals
vidtx's own evaluation views, the image processor takes the evaluation size and carries the
whole vidtx preprocessing, and what HF's antialiased resize changes (docs/export.md)."""

import importlib.util
import json
import sys

import ml_collections
import numpy as np
import pytest

from vidtx.checkpoints import export_hf, video
from vidtx.checkpoints.store import Converted
from vidtx.data import sampling


def _preprocessing(**changes):
  p = video.timesformer_preprocessing(4, 32)  # min_resize 32, three crops.
  p.update(min_resize=36, mean=[0.4, 0.45, 0.5], std=[0.2, 0.25, 0.3])
  p.update(changes)
  return p


def _vidtx_views(frames, preprocessing):
  """vidtx's own evaluation views (the reader's and vidtx.predict's code)."""
  converted = Converted("timesformer", {}, 5, {}, preprocessing)
  configs = ml_collections.ConfigDict(converted.dataset_overrides())
  if frames.ndim == 4:
    frames = frames[None]
  return sampling.eval_views(frames, configs).numpy()


def _frames(shape, seed=0):
  """Random pixels: the hardest case for a resize (every pixel differs from its neighbours)."""
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


@pytest.mark.parametrize(
  "shape, changes",
  [
    ((4, 90, 120, 3), {}),  # Downscaled: short side 90 -> 36, long 120 -> 48.
    ((4, 20, 26, 3), {}),  # Upscaled: 20 -> 36, long 46.8 -> 47.
    ((4, 20, 25, 3), {}),  # 45 exactly.
    ((4, 24, 30, 3), {}),  # 45 exactly, 36 / 24 * 30 = 45.0: no rounding at all.
    ((4, 8, 13, 3), {}),  # 58.5 -> 58: half to even, as tf.round.
    ((4, 121, 67, 3), {}),  # Portrait: the crops run down the long side.
    ((2, 4, 50, 50, 3), {}),  # Two clips of square frames.
    ((4, 36, 70, 3), {}),  # Already the short side: only cropped.
    ((4, 90, 120, 3), dict(do_three_spatial_crops=False)),  # One centre crop.
    ((4, 90, 120, 3), dict(eval_min_resize=40)),  # The evaluation size wins over min_resize.
  ],
)
def test_prepare_frames_equals_vidtx(shape, changes):
  preprocessing = _preprocessing(**changes)
  frames = _frames(shape)
  ours = export_hf.prepare_frames(frames, preprocessing)
  expected = _vidtx_views(frames, preprocessing)
  assert ours.shape == expected.shape and ours.dtype == np.float32
  np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


def test_prepare_frames_refuses_what_vidtx_would_not_read():
  preprocessing = _preprocessing()
  with pytest.raises(ValueError, match=r"frames of shape \(3, 40, 40, 3\): .* T = num_frames = 4"):
    export_hf.prepare_frames(_frames((3, 40, 40, 3)), preprocessing)
  with pytest.raises(ValueError, match="frames of dtype float32: expected uint8"):
    export_hf.prepare_frames(np.zeros((4, 40, 40, 3), np.float32), preprocessing)
  with pytest.raises(ValueError, match="short side 30 is below crop_size 32"):
    export_hf.prepare_frames(_frames((4, 40, 40, 3)), _preprocessing(eval_min_resize=30))


def test_export_hf_imports_without_jax_tensorflow_or_torch(monkeypatch):
  """prepare_frames for a PyTorch user: the module loads and runs with none of them."""
  for name in ("jax", "flax", "tensorflow", "torch", "transformers"):
    monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError.
  spec = importlib.util.spec_from_file_location("export_hf_alone", export_hf.__file__)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  frames = _frames((4, 90, 120, 3))
  views = module.prepare_frames(frames, _preprocessing())
  np.testing.assert_array_equal(views, export_hf.prepare_frames(frames, _preprocessing()))
  np.testing.assert_array_equal(
    module.clip_indices(100, _preprocessing()), export_hf.clip_indices(100, _preprocessing())
  )


def test_attention_types_are_the_readers():
  assert export_hf.HF_ATTENTION_TYPES == {
    vidtx: hf for hf, vidtx in video.TIMESFORMER_ATTENTIONS.items()
  }


def test_processor_resizes_to_the_evaluation_size_and_carries_the_preprocessing(tmp_path):
  transformers = pytest.importorskip("transformers")
  preprocessing = _preprocessing(eval_min_resize=40, mean=(0.4, 0.45, 0.5))
  preprocessing["num_frames"] = np.int64(4)  # As a run's config may hold it.
  converted = Converted("timesformer", {}, 5, {}, preprocessing)
  config = export_hf.preprocessor_config(converted)
  assert config["size"] == {"shortest_edge": 40}  # eval_min_resize, not min_resize (36).
  (tmp_path / export_hf.PREPROCESSOR_FILE).write_text(json.dumps(config))
  processor = transformers.AutoImageProcessor.from_pretrained(str(tmp_path))
  carried = processor.vidtx_preprocessing
  assert carried == json.loads(json.dumps(_preprocessing(eval_min_resize=40)))
  # prepare_frames reads it as it comes out of the folder.
  frames = _frames((4, 24, 30, 3))
  np.testing.assert_array_equal(
    export_hf.prepare_frames(frames, carried), export_hf.prepare_frames(frames, preprocessing)
  )


def _smooth_frames(shape, seed=0):
  """Frames with a natural image's spectrum (power ~ 1 / f^2): what the antialiasing acts on."""
  rng = np.random.RandomState(seed)
  t, h, w, _ = shape
  fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
  amplitude = 1 / np.maximum(np.hypot(fy, fx), 1 / max(h, w))
  spectrum = amplitude[None, :, :, None] * np.exp(2j * np.pi * rng.rand(*shape))
  pixels = np.real(np.fft.ifft2(spectrum, axes=(1, 2)))
  pixels = (pixels - pixels.mean()) / pixels.std() * 50 + 128
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def test_what_hugging_faces_resize_changes(tmp_path):
  """Upscaled frames (no antialiasing to apply): HF's processor equals vidtx to one uint8 level
  (it rounds the resized pixels). Downscaled ones: HF antialiases and vidtx does not, and
  prepare_frames is the way to vidtx's pixels."""
  transformers = pytest.importorskip("transformers")
  preprocessing = _preprocessing(do_three_spatial_crops=False)
  converted = Converted("timesformer", {}, 5, {}, preprocessing)
  (tmp_path / export_hf.PREPROCESSOR_FILE).write_text(
    json.dumps(export_hf.preprocessor_config(converted))
  )
  processor = transformers.AutoImageProcessor.from_pretrained(str(tmp_path))
  level = 1 / 255 / min(preprocessing["std"])  # One uint8 step, normalised.
  differences = {}
  # 24 x 30 -> 36 x 45 and 96 x 120 -> 36 x 45: the long side is whole, HF's int() and vidtx's
  # round() agree.
  for name, shape in (("up", (4, 24, 30, 3)), ("down", (4, 96, 120, 3))):
    frames = _smooth_frames(shape)
    hf = processor(list(frames), return_tensors="np")["pixel_values"][0]  # (T, C, S, S)
    ours = export_hf.prepare_frames(frames, preprocessing)[0].transpose(0, 3, 1, 2)
    differences[name] = np.abs(hf - ours).max()
  assert differences["up"] <= level + 1e-5
  assert differences["down"] > 3 * level


SAMPLINGS = [
  dict(num_frames=8, stride=32, num_test_clips=1),  # TimeSformer's converted default.
  dict(num_frames=4, stride=2, num_test_clips=4),  # ViViT's.
  dict(num_frames=8, stride=2, num_test_clips=3, eval_sampling="segment"),
  dict(num_frames=8, stride=1, num_test_clips=2, eval_sampling="segment"),
  dict(
    num_frames=8,
    stride=1,
    num_test_clips=3,
    eval_sampling="timesformer",
    train_sampling="timesformer",
    sampling_rate=4,
    target_fps=30.0,
  ),
  dict(num_frames=1, stride=1, num_test_clips=2, eval_sampling="timesformer", sampling_rate=8),
  dict(num_frames=4, stride=3, eval_sampling="whole_video"),
  dict(num_frames=4, stride=1, eval_sampling="whole_video", train_sampling="timesformer"),
]


@pytest.mark.parametrize("changes", SAMPLINGS)
def test_clip_indices_equal_vidtx(changes):
  preprocessing = _preprocessing(**changes)
  configs = ml_collections.ConfigDict(
    Converted("timesformer", {}, 5, {}, preprocessing).dataset_overrides()
  )
  for length in (1, 2, 7, 8, 9, 31, 100, 257, 1000):
    for rate in (0.0, 29.97):
      expected = sampling.eval_clip_indices_for(configs, length, rate).numpy()
      ours = export_hf.clip_indices(length, preprocessing, rate)
      assert ours.dtype == np.int32
      np.testing.assert_array_equal(ours, expected, err_msg=f"{length} frames at {rate} fps")
