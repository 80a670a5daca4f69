"""Decoding only the crop (records.decode_window, augment.scale_jitter_window) against the
reference path it replaces: decode whole frames, resize them (augment.scale_jitter_crop), crop.

The same seed gives the same window; the pixels differ only by the rounding of the window to whole
stored pixels (a bilinear sample moves by at most half a stored pixel), measured below on
natural-looking JPEG frames; a window that needs no rounding gives identical pixels.
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from shared import reader_configs

from vidtx.data import augment, dmvr, pipeline, reader_config, records, sampling

# |fused - reference| in levels of 255, measured on natural_frames (20 seeds, ViViT's scale jitter
# 0.9-1.33): mean 1.0, 99th percentile 8, max 40 (at the sharp edges: half a stored pixel of a
# jump of ~80 levels). The bounds leave room for other content of the same kind.
MEAN_TOLERANCE, P99_TOLERANCE, MAX_TOLERANCE = 1.5, 12.0, 64.0


def natural_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  """uint8 (T, H, W, 3): smooth shading, a few sharp-edged moving objects and sensor noise, so
  that the JPEGs and the resampling errors look like a camera's, not like flat or random pixels."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:height, :width].astype(np.float32)
  frames = []
  for t in range(num_frames):
    shade = 110 + 60 * np.sin(x / 23 + t / 4)[..., None] * np.cos(y[..., None] / 31 + np.arange(3))
    for k in range(3):  # Discs moving across the frame.
      cy, cx = (0.3 + 0.2 * k) * height, (0.2 + 0.25 * k) * width + 3 * t
      inside = (y - cy) ** 2 + (x - cx) ** 2 < (0.12 * height) ** 2
      shade[inside] = (40 + 70 * k, 200 - 60 * k, 90)
    frames.append(shade + rng.normal(0, 4, shade.shape))
  return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def reference(encoded, indices, seed, **jitter) -> np.ndarray:
  """The path decode_window replaces: whole frames decoded, resized, cropped; rounded."""
  frames = augment.scale_jitter_crop(records.decode_frames(encoded, indices), seed=seed, **jitter)
  return np.round(frames.numpy())


def fused(encoded, indices, seed, **jitter) -> np.ndarray:
  size = records.stored_frame_size(encoded, indices)
  window = augment.scale_jitter_window(size, seed=seed, **jitter)
  crop = jitter["crop_size"]
  clip = records.decode_window(encoded, indices, window, (crop, crop))
  assert clip.dtype == tf.uint8 and clip.shape == tuple(indices.shape) + (crop, crop, 3)
  return clip.numpy().astype(np.float64)


def seed_of(i: int) -> tf.Tensor:
  return tf.constant([i, 28], tf.int64)


VIVIT = dict(min_resize=64, crop_size=56, min_scale=0.9, max_scale=1.33)


@pytest.fixture(scope="module")
def jpegs():
  return tf.constant(dmvr.encode_jpegs(natural_frames(6, 72, 96)))


def test_the_window_is_the_one_scale_jitter_crop_cuts():
  # Frames whose pixels are their own coordinates (row, column): a bilinear resize keeps them
  # linear, so the reference's output says where each of its samples lies in the stored frame.
  height, width = 72, 96
  rows, cols = np.mgrid[:height, :width].astype(np.float32)
  ramp = np.stack([rows, cols, np.zeros_like(rows)], -1)[None]  # (1, H, W, 3)
  crop = VIVIT["crop_size"]
  inner = np.arange(crop // 4, 3 * crop // 4)  # Away from the clamped borders.
  windows = set()
  for i in range(20):
    out = augment.scale_jitter_crop(ramp, seed=seed_of(i), **VIVIT).numpy()[0]
    window = augment.scale_jitter_window(
      tf.constant([height, width]), seed=seed_of(i), **VIVIT
    ).numpy()
    top, left, win_h, win_w = window
    # Sample k of a window [a, a + e) resized to `crop`: a + (k + 0.5) * e / crop - 0.5.
    np.testing.assert_allclose(
      out[inner, crop // 2, 0], top + (inner + 0.5) * win_h / crop - 0.5, atol=2e-3
    )
    np.testing.assert_allclose(
      out[crop // 2, inner, 1], left + (inner + 0.5) * win_w / crop - 0.5, atol=2e-3
    )
    windows.add(tuple(np.round(window, 3)))
  assert len(windows) == 20  # The scale and the offsets vary with the seed.


def test_pixels_match_resize_then_crop_within_the_tolerance(jpegs):
  indices = tf.constant([0, 2, 4, 2])  # A repeated frame (looped clip) decodes once, fits twice.
  differences = np.stack(
    [
      np.abs(
        fused(jpegs, indices, seed_of(i), **VIVIT) - reference(jpegs, indices, seed_of(i), **VIVIT)
      )
      for i in range(20)
    ]
  )
  print(
    f"mean {differences.mean():.3f}, p99 {np.percentile(differences, 99):.1f}, "
    f"max {differences.max():.0f}"
  )
  assert differences.mean() <= MEAN_TOLERANCE
  assert np.percentile(differences, 99) <= P99_TOLERANCE
  assert differences.max() <= MAX_TOLERANCE
  # No rounding needed (the stored short side is min_resize: no resize; whole-pixel offsets):
  # the same pixels exactly, also at the window's edge columns, where libjpeg's chroma
  # upsampling needs the neighbours decode_window decodes with the window.
  plain = dict(min_resize=72, crop_size=56)
  for i in range(5):
    np.testing.assert_array_equal(
      fused(jpegs, indices, seed_of(i), **plain), reference(jpegs, indices, seed_of(i), **plain)
    )


def test_large_frames_decode_at_half_size():
  # 144 x 192 frames read as 32 x 32 crops of a short side of 40: the window (about 115 stored
  # pixels) is over twice the crop, so libjpeg decodes at half size (DCT scaling). Its pixels
  # average 2 x 2 blocks where the reference's bilinear resize samples: a little smoother.
  encoded = tf.constant(dmvr.encode_jpegs(natural_frames(2, 144, 192)))
  indices = tf.constant([0, 1])
  jitter = dict(min_resize=40, crop_size=32)
  half = np.stack(
    [
      np.abs(
        fused(encoded, indices, seed_of(i), **jitter)
        - reference(encoded, indices, seed_of(i), **jitter)
      )
      for i in range(5)
    ]
  )
  # Measured: mean 1.9, max 71.
  print(f"ratio 2: mean {half.mean():.3f}, max {half.max():.0f}")
  assert half.mean() <= 2 * MEAN_TOLERANCE and half.max() <= 1.5 * MAX_TOLERANCE
  # decode_window's half-size window is the whole-frame half-size decode's, pixel for pixel.
  window = tf.constant([20.0, 30.0, 80.0, 100.0], tf.float64)  # y, x, h, w in stored pixels
  out = records.decode_window(encoded, tf.constant([1]), window, (40, 50)).numpy()[0]
  half_frame = tf.io.decode_jpeg(encoded[1], ratio=2).numpy()
  np.testing.assert_array_equal(out, half_frame[10:50, 15:65])


def test_the_window_buffer_holds_the_window_unresized(jpegs):
  """decode_window_in_buffer: the window decoded as decode_window decodes it, not resized, in
  the buffer's top-left corner, zeros elsewhere, with its [h, w]; a window larger than the
  buffer is resized on the host as decode_window does, with [h, w] = [crop, crop]."""
  for i in range(4):
    # A looped clip (a frame twice: decoded once, gathered) and one of distinct frames.
    indices = tf.constant([0, 2, 4, 2] if i % 2 else [1, 3, 5, 0])
    window = augment.scale_jitter_window(tf.constant([72, 96]), seed=seed_of(i), **VIVIT)
    buffer, valid = records.decode_window_in_buffer(jpegs, indices, window, 56, 64)
    h, w = valid.numpy()
    assert buffer.shape == (4, 64, 64, 3) and buffer.dtype == tf.uint8 and h <= 64 and w <= 64
    buffer = buffer.numpy()
    unresized = records.decode_window(jpegs, indices, window, (h, w)).numpy()
    np.testing.assert_array_equal(buffer[:, :h, :w], unresized)
    assert not buffer[:, h:].any() and not buffer[:, :, w:].any()
  # Frames stored larger than min_resize: windows of ~65-96 pixels, over the buffer's 60 (and
  # under twice the crop of 56, so no half-size decode): resized on the host.
  indices = tf.constant([0, 2, 4, 2])
  window = augment.scale_jitter_window(tf.constant([72, 96]), seed=seed_of(0), **VIVIT)
  frames = records.decode_window(jpegs, indices, window * 1.2, (56, 56)).numpy()
  buffer, valid = records.decode_window_in_buffer(jpegs, indices, window * 1.2, 56, 60)
  assert valid.numpy().tolist() == [56, 56]
  np.testing.assert_array_equal(buffer.numpy()[:, :56, :56], frames)
  assert not buffer.numpy()[:, 56:].any() and not buffer.numpy()[:, :, 56:].any()


@pytest.mark.parametrize(
  "geometry, side",
  [
    (dict(min_resize=256, crop_size=224, min_scale=0.9, max_scale=1.33), 250),  # ViViT
    (dict(min_resize=256, crop_size=224, min_scale=1.0, max_scale=1.25), 224),  # TimeSformer
    (dict(min_resize=256, crop_size=224, min_scale=1.1, max_scale=1.2, probability=0.5), 224),
    (dict(min_resize=20, crop_size=16, min_scale=0.9, max_scale=1.33), 19),
  ],
)
def test_every_jittered_window_fits_the_buffer(geometry, side):
  """DatasetConfig.window_size: every window scale_jitter_window cuts from frames stored at
  min_resize, rounded to whole pixels as decode_window rounds it, fits S x S, landscape or
  portrait, and the largest come within two pixels of S (S is not much larger than needed)."""
  jitter = dict(
    do_jitter_scale=True,
    scale_min_factor=geometry["min_scale"],
    scale_max_factor=geometry["max_scale"],
    prob_scale_jitter=geometry.get("probability", 1.0),
  )
  m, crop = geometry["min_resize"], geometry["crop_size"]
  dc = reader_configs("", min_resize=m, crop_size=crop, augmentation_params=jitter)
  assert reader_config.as_dataset_config(dc).window_size == side
  largest = 0
  for stored in ((m, m), (m, m + 1), (m, round(m * 4 / 3)), (round(m * 16 / 9), m)):
    size = tf.constant(stored, tf.int32)

    def pixels(i, size=size):
      seed = tf.stack([i, tf.constant(28, tf.int64)])
      window = augment.scale_jitter_window(size, seed=seed, **geometry)
      return records._pixel_window(window, size, 1)[2:]  # decode_window's [h, w]

    sizes = next(tf.data.Dataset.range(3000).map(pixels).batch(3000).as_numpy_iterator())
    assert sizes.max() <= side, (stored, sizes.max())
    largest = max(largest, sizes.max())
  print(f"largest window {largest}, S {side}")
  assert largest >= side - 2


def test_only_the_kept_frames_are_decoded(jpegs):
  frames = list(jpegs.numpy())
  corrupt = tf.constant(frames[:3] + [frames[3][:60]] + frames[4:])  # Frame 3: truncated.
  window = tf.constant([4.0, 8.0, 40.0, 40.0], tf.float64)
  kept = records.decode_window(corrupt, tf.constant([0, 2, 4]), window, (40, 40)).numpy()
  np.testing.assert_array_equal(
    kept, records.decode_frames(jpegs, tf.constant([0, 2, 4])).numpy()[:, 4:44, 8:48]
  )
  with pytest.raises(tf.errors.InvalidArgumentError):
    records.decode_window(corrupt, tf.constant([0, 3]), window, (40, 40))


def test_a_clip_of_static_size_decodes_as_the_loop_over_distinct_frames(jpegs):
  # Static size: each index decoded by its own op (repeats twice); unknown size: tf.map_fn over
  # the distinct frames. The same pixels either way.
  indices = tf.constant([[1, 3, 5, 1], [0, 2, 4, 0]])  # (2, 4), frames repeated
  window = tf.constant([6.5, 9.25, 50.0, 61.0], tf.float64)
  unrolled = records.decode_window(jpegs, indices, window, (28, 32))
  looped = tf.function(
    lambda i: records.decode_window(jpegs, i, window, (28, 32)),
    input_signature=[tf.TensorSpec([None, 4], tf.int32)],
  )(indices)
  assert unrolled.shape == (2, 4, 28, 32, 3)
  np.testing.assert_array_equal(unrolled.numpy(), looped.numpy())
  np.testing.assert_array_equal(unrolled[0, 0], unrolled[0, 3])


def png(frame: np.ndarray) -> bytes:
  out = io.BytesIO()
  Image.fromarray(frame).save(out, format="PNG")
  return out.getvalue()


def test_png_and_resolution_changes_take_the_whole_frame_path(tmp_path):
  frames = natural_frames(4, 72, 96)
  encoded = tf.constant([png(frame) for frame in frames])
  indices = tf.constant([0, 1, 3])
  for i in range(3):  # Lossless frames: the only difference is the window's rounding.
    difference = np.abs(
      fused(encoded, indices, seed_of(i), **VIVIT)
      - reference(encoded, indices, seed_of(i), **VIVIT)
    )
    assert difference.mean() <= MEAN_TOLERANCE and difference.max() <= MAX_TOLERANCE
  # A resolution change mid-video: frames 2 and 3 are smaller, resized to the first's size.
  changing = tf.constant(
    dmvr.encode_jpegs(frames[:2]) + dmvr.encode_jpegs(natural_frames(2, 60, 80, seed=1))
  )
  for i in range(3):
    difference = np.abs(
      fused(changing, indices, seed_of(i), **VIVIT)
      - reference(changing, indices, seed_of(i), **VIVIT)
    )
    assert difference.mean() <= MEAN_TOLERANCE and difference.max() <= MAX_TOLERANCE
  # A PNG shard through the training reader.
  examples = [dmvr.sequence_example_from_jpegs([png(f) for f in frames], k) for k in range(4)]
  dmvr.write_shards(examples, str(tmp_path / "train.tfrecord"), 1)
  dc = reader_configs(str(tmp_path), examples_per_subset={"train": 4}, num_frames=2, min_resize=20)
  batch = next(pipeline.build_train_dataset(dc, batch_size=4, seed=0).as_numpy_iterator())
  assert batch["ok"].all() and batch["inputs"].shape == (4, 2, 16, 16, 3)
  assert sorted(batch["label"].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("three_crops", [False, True])
def test_evaluation_views_decode_one_window_for_all_crops(three_crops):
  dc = reader_configs("", num_frames=2, min_resize=64, crop_size=56)
  dc.do_three_spatial_crops = three_crops
  indices = tf.constant([[0, 2], [3, 5]])  # (C, T): two clips
  for height, width in ((72, 96), (96, 72)):  # Landscape and portrait: crops along the long side.
    encoded = tf.constant(dmvr.encode_jpegs(natural_frames(6, height, width)))
    views = sampling.decode_eval_views(encoded, indices, dc)
    assert views.dtype == tf.uint8 and views.shape == (2 * (3 if three_crops else 1), 2, 56, 56, 3)
    # eval_views normalises with zero_centering=False: pixel / 255.
    expected = sampling.eval_views(records.decode_frames(encoded, indices), dc).numpy() * 255
    difference = np.abs(views.numpy() - np.round(expected))
    assert difference.mean() <= MEAN_TOLERANCE and difference.max() <= MAX_TOLERANCE
    # The short side already eval_min_resize: nothing to round, the same pixels.
    dc.eval_min_resize = min(height, width)
    np.testing.assert_array_equal(
      sampling.decode_eval_views(encoded, indices, dc).numpy(),
      np.round(sampling.eval_views(records.decode_frames(encoded, indices), dc).numpy() * 255),
    )
    dc.eval_min_resize = None
