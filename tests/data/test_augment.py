"""vidtx.data.augment: temporal consistency, determinism, PIL / numpy references for every
RandAugment operation, the scale jitter's range and crop positions, graph mode in tf.data."""

import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from vidtx.data import augment

T, H, W = 4, 24, 32
SEED = tf.constant([3, 11], tf.int64)
# Operations whose statistics span the whole clip: no per-frame identity for them.
CLIP_WIDE_OPS = ("AutoContrast", "Equalize", "Contrast")


def seed_of(i: int) -> tf.Tensor:
  return tf.constant([i, 2024], tf.int64)


def random_clip(seed: int = 0, t: int = T, h: int = H, w: int = W) -> np.ndarray:
  """float32 whole numbers in [0, 255], distinct frames."""
  return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3)).astype(np.float32)


def still_clip(seed: int = 0, t: int = T) -> np.ndarray:
  """Identical frames."""
  return np.repeat(random_clip(seed, t=1), t, axis=0)


def assert_frames_identical(clip: np.ndarray) -> None:
  for frame in clip[1:]:
    np.testing.assert_array_equal(frame, clip[0])


def tall(clip: np.ndarray) -> Image.Image:
  """The clip as one (T*H, W) PIL image: PIL's histograms and means then span the whole clip."""
  return Image.fromarray(clip.reshape(-1, clip.shape[2], 3).astype(np.uint8))


def untall(image: Image.Image, shape) -> np.ndarray:
  return np.asarray(image).reshape(shape).astype(np.float32)


def per_frame_pil(clip: np.ndarray, fn) -> np.ndarray:
  return np.stack([np.asarray(fn(Image.fromarray(f.astype(np.uint8)))) for f in clip]).astype(
    np.float32
  )


def project_reference(frames: np.ndarray, transform) -> np.ndarray:
  """Inverse-map nearest neighbour: output (x, y) <- input (a0 x + a1 y + a2, b0 x + b1 y + b2),
  coordinates rounded half away from zero, outside -> 128. float32 arithmetic, as the kernel."""
  _, h, w, _ = frames.shape
  a = np.asarray(transform, np.float32)
  y, x = np.mgrid[:h, :w].astype(np.float32)
  source_x = a[0] * x + a[1] * y + a[2]
  source_y = a[3] * x + a[4] * y + a[5]
  column = (np.sign(source_x) * np.floor(np.abs(source_x) + 0.5)).astype(int)
  row = (np.sign(source_y) * np.floor(np.abs(source_y) + 0.5)).astype(int)
  inside = (column >= 0) & (column < w) & (row >= 0) & (row < h)
  out = np.full_like(frames, 128.0)
  out[:, inside] = frames[:, row[inside], column[inside]]
  return out


def rotation_reference(frames: np.ndarray, degrees: float) -> np.ndarray:
  _, h, w, _ = frames.shape
  c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
  cx, cy = (w - 1) / 2, (h - 1) / 2
  return project_reference(frames, [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy])


# ---------------------------------------------------------------------------------------------
# scale_jitter_crop
# ---------------------------------------------------------------------------------------------


def test_resize_short_side_is_one_bilinear_resize():
  clip = random_clip().astype(np.uint8)
  resized = augment.resize_short_side(tf.constant(clip), 16)
  # 24 x 32 -> short side 16: 16 x round(21.33) = 16 x 21.
  expected = tf.image.resize(clip.astype(np.float32), [16, 21], method="bilinear")
  assert resized.dtype == tf.float32
  np.testing.assert_array_equal(resized.numpy(), expected.numpy())
  tall_clip = np.transpose(clip, [0, 2, 1, 3])  # 32 x 24 -> 28 x 21 for short side 21
  np.testing.assert_array_equal(
    augment.resize_short_side(tall_clip, 21).numpy(),
    tf.image.resize(tall_clip.astype(np.float32), [28, 21], method="bilinear").numpy(),
  )
  # Already the right size: no resize, the pixels are only cast.
  np.testing.assert_array_equal(augment.resize_short_side(clip, 24).numpy(), clip)


def find_crop(resized: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
  size = crop.shape[1]
  matches = [
    (top, left)
    for top in range(resized.shape[1] - size + 1)
    for left in range(resized.shape[2] - size + 1)
    if np.array_equal(resized[:, top : top + size, left : left + size], crop)
  ]
  assert len(matches) == 1, matches
  return matches[0]


def test_scale_jitter_crop_without_jitter_is_resize_then_crop_anywhere():
  clip = random_clip(1)
  resized = augment.resize_short_side(clip, 16).numpy()  # 16 x 21
  crop_fn = tf.function(
    lambda seed: augment.scale_jitter_crop(clip, min_resize=16, crop_size=12, seed=seed)
  )
  positions = set()
  for i in range(120):
    out = crop_fn(seed_of(i)).numpy()
    assert out.shape == (T, 12, 12, 3)
    positions.add(find_crop(resized, out))
  assert {top for top, _ in positions} == set(range(5))
  assert {left for _, left in positions} == set(range(10))


def test_jittered_short_side_range_and_coverage():
  draw = tf.function(
    lambda seed: augment.jittered_short_side(
      min_resize=256, crop_size=224, min_scale=0.9, max_scale=1.33, seed=seed
    )
  )
  sides = np.array([int(draw(seed_of(i))) for i in range(400)])
  assert sides.min() >= round(256 * 0.9) and sides.max() <= round(256 * 1.33)
  assert sides.min() <= 233 and sides.max() >= 337
  # Roughly uniform: each third of the range holds a fair share.
  counts = np.histogram(sides, bins=3, range=(230, 341))[0]
  assert counts.min() > 90, counts
  # Never below the crop; probability 0 -> always min_resize.
  big_crop = [
    int(
      augment.jittered_short_side(
        min_resize=256, crop_size=240, min_scale=0.9, max_scale=1.33, seed=seed_of(i)
      )
    )
    for i in range(40)
  ]
  assert min(big_crop) == 240
  never = {
    int(
      augment.jittered_short_side(
        min_resize=256,
        crop_size=224,
        min_scale=0.9,
        max_scale=1.33,
        probability=0.0,
        seed=seed_of(i),
      )
    )
    for i in range(20)
  }
  assert never == {256}


def test_scale_jitter_crop_uses_the_drawn_short_side():
  clip = random_clip(2)
  for i in range(6):
    seed = seed_of(i)
    out = augment.scale_jitter_crop(
      clip, min_resize=16, crop_size=12, min_scale=0.8, max_scale=1.5, seed=seed
    ).numpy()
    scale_seed = tf.random.experimental.stateless_split(seed, 3)[0]
    side = augment.jittered_short_side(
      min_resize=16, crop_size=12, min_scale=0.8, max_scale=1.5, seed=scale_seed
    )
    find_crop(augment.resize_short_side(clip, side).numpy(), out)


def test_scale_jitter_crop_is_temporally_consistent_and_deterministic():
  crop_fn = tf.function(
    lambda clip, seed: augment.scale_jitter_crop(
      clip, min_resize=16, crop_size=12, min_scale=0.9, max_scale=1.33, seed=seed
    )
  )
  still = still_clip()
  for i in range(10):
    assert_frames_identical(crop_fn(still, seed_of(i)).numpy())
  clip = random_clip(3)
  whole = crop_fn(clip, SEED).numpy()
  for t in range(T):
    np.testing.assert_array_equal(crop_fn(clip[t : t + 1], SEED).numpy()[0], whole[t])
  np.testing.assert_array_equal(crop_fn(clip, SEED).numpy(), whole)
  assert not np.array_equal(crop_fn(clip, seed_of(99)).numpy(), whole)


# ---------------------------------------------------------------------------------------------
# color_jitter
# ---------------------------------------------------------------------------------------------


def test_color_jitter_probability_and_determinism():
  clip = random_clip(4)
  for i in range(5):
    np.testing.assert_array_equal(
      augment.color_jitter(clip, probability=0.0, seed=seed_of(i)).numpy(), clip
    )
  out = augment.color_jitter(clip, probability=1.0, seed=SEED).numpy()
  assert out.min() >= 0.0 and out.max() <= 255.0 and not np.array_equal(out, clip)
  np.testing.assert_array_equal(augment.color_jitter(clip, probability=1.0, seed=SEED), out)
  assert not np.array_equal(augment.color_jitter(clip, probability=1.0, seed=seed_of(5)), out)
  applied = [
    not np.array_equal(augment.color_jitter(clip, seed=seed_of(i)), clip) for i in range(40)
  ]
  assert 0.6 <= np.mean(applied) < 1.0  # default probability 0.8


def test_color_jitter_is_temporally_consistent():
  jitter = tf.function(lambda clip, seed: augment.color_jitter(clip, probability=1.0, seed=seed))
  still = still_clip(6)
  for i in range(10):
    assert_frames_identical(jitter(still, seed_of(i)).numpy())
  # Contrast uses each frame's own mean, so the clip equals its frames jittered one by one.
  clip = random_clip(7)
  clip[1] = np.clip(clip[1] * 0.5 + 100, 0, 255)  # frames with different means
  whole = jitter(clip, SEED).numpy()
  for t in range(T):
    np.testing.assert_allclose(jitter(clip[t : t + 1], SEED).numpy()[0], whole[t], atol=1e-3)


def test_color_jitter_components_against_explicit_formulas():
  rng = np.random.default_rng(8)
  clip = rng.uniform(60, 190, (T, H, W, 3)).astype(np.float32)  # nothing clips
  clip[1] = clip[1] * 0.5 + 40  # a darker frame: per-frame and clip-wide means differ
  deltas = []
  for i in range(30):
    out = augment.color_jitter(
      clip, probability=1.0, contrast=None, saturation=None, hue=None, seed=seed_of(i)
    ).numpy()
    delta = out - clip
    np.testing.assert_allclose(delta, delta.flat[0], atol=1e-4)  # one shift for the clip
    deltas.append(delta.flat[0])
  assert max(np.abs(deltas)) <= 32.0 and min(deltas) < -16 and max(deltas) > 16
  for i in range(10):
    out = augment.color_jitter(
      clip, probability=1.0, brightness=None, saturation=None, hue=None, seed=seed_of(i)
    ).numpy()
    mean = clip.mean(axis=(1, 2), keepdims=True)  # per frame and channel
    factor = (out - mean).std() / (clip - mean).std()
    assert 0.6 <= factor <= 1.4
    np.testing.assert_allclose(out, (clip - mean) * factor + mean, atol=1e-2)


# ---------------------------------------------------------------------------------------------
# RandAugment operations against PIL / numpy.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip():
  frames = random_clip(9)
  frames[2] = np.floor(frames[2] / 3 + 40)  # a low-contrast frame: clip-wide statistics matter
  return frames


@pytest.mark.parametrize(
  "name, ours, reference",
  [
    ("autocontrast", augment.auto_contrast, ImageOps.autocontrast),
    ("equalize", augment.equalize, ImageOps.equalize),
    ("invert", augment.invert, ImageOps.invert),
  ],
)
def test_parameterless_ops_match_pil_over_the_whole_clip(clip, name, ours, reference):
  expected = untall(reference(tall(clip)), clip.shape)
  np.testing.assert_array_equal(ours(tf.constant(clip)).numpy(), expected, err_msg=name)
  frame = clip[:1]
  np.testing.assert_array_equal(
    ours(tf.constant(frame)).numpy(), untall(reference(tall(frame)), frame.shape)
  )


@pytest.mark.parametrize("bits", [1, 2, 4, 6, 8])
def test_posterize_matches_pil(clip, bits):
  expected = untall(ImageOps.posterize(tall(clip), bits), clip.shape)
  np.testing.assert_array_equal(augment.posterize(tf.constant(clip), bits).numpy(), expected)


@pytest.mark.parametrize("threshold", [0, 76, 128, 200, 256])
def test_solarize_matches_pil(clip, threshold):
  expected = untall(ImageOps.solarize(tall(clip), threshold), clip.shape)
  np.testing.assert_array_equal(augment.solarize(tf.constant(clip), threshold).numpy(), expected)


@pytest.mark.parametrize("addition", [0, 33, 110, 220])
def test_solarize_add_matches_numpy(clip, addition):
  expected = np.where(clip < 128, np.minimum(clip + addition, 255), clip)
  np.testing.assert_array_equal(augment.solarize_add(tf.constant(clip), addition).numpy(), expected)


@pytest.mark.parametrize("factor", [0.0, 0.1, 0.64, 1.0, 1.9, 2.8, 3.7])
@pytest.mark.parametrize(
  "name, ours, enhancer",
  [
    ("color", augment.color, ImageEnhance.Color),
    ("contrast", augment.contrast, ImageEnhance.Contrast),
    ("brightness", augment.brightness, ImageEnhance.Brightness),
  ],
)
def test_enhance_ops_match_pil(clip, factor, name, ours, enhancer):
  # Contrast's mean grey spans the clip: PIL on the clip as one tall image.
  expected = untall(enhancer(tall(clip)).enhance(factor), clip.shape)
  np.testing.assert_array_equal(ours(tf.constant(clip), factor).numpy(), expected, err_msg=name)


@pytest.mark.parametrize("factor", [0.1, 0.64, 1.0, 1.9, 3.7])
def test_sharpness_matches_pil_frame_by_frame(clip, factor):
  expected = per_frame_pil(clip, lambda image: ImageEnhance.Sharpness(image).enhance(factor))
  np.testing.assert_array_equal(augment.sharpness(tf.constant(clip), factor).numpy(), expected)


@pytest.mark.parametrize("degrees", [9.0, -30.0, 45.0, -60.0, 90.0, 17.3])
def test_rotate_matches_numpy_nearest(clip, degrees):
  out = augment.rotate(tf.constant(clip), degrees).numpy()
  # float32 sin/cos may differ in the last bit: pixels at exact half-way ties may go either way.
  different = (out != rotation_reference(clip, degrees)).any(axis=-1)
  assert different.mean() < 0.01


@pytest.mark.parametrize("amount", [0.09, -0.3, 0.45, -0.6])
def test_shear_matches_numpy_nearest(clip, amount):
  np.testing.assert_array_equal(
    augment.shear_x(tf.constant(clip), amount).numpy(),
    project_reference(clip, [1, amount, 0, 0, 1, 0]),
  )
  np.testing.assert_array_equal(
    augment.shear_y(tf.constant(clip), amount).numpy(),
    project_reference(clip, [1, 0, 0, amount, 1, 0]),
  )


@pytest.mark.parametrize("pixels", [3.0, -7.0, 20.0, -31.0])
def test_translate_matches_numpy_nearest(clip, pixels):
  np.testing.assert_array_equal(
    augment.translate_x(tf.constant(clip), pixels).numpy(),
    project_reference(clip, [1, 0, pixels, 0, 1, 0]),
  )
  np.testing.assert_array_equal(
    augment.translate_y(tf.constant(clip), pixels).numpy(),
    project_reference(clip, [1, 0, 0, 0, 1, pixels]),
  )
  # The content moves left (x) or up (y) by `pixels`, grey fills the rest.
  if pixels > 0:
    shift = int(pixels)
    moved = augment.translate_x(tf.constant(clip), pixels).numpy()
    np.testing.assert_array_equal(moved[:, :, : W - shift], clip[:, :, shift:])
    assert (moved[:, :, W - shift :] == 128).all()


def test_cutout_is_one_grey_square_in_every_frame(clip):
  for i in range(20):
    out = augment.cutout(tf.constant(clip), 5, seed_of(i)).numpy()
    changed = (out != clip).any(axis=(0, 3))
    covered = (out == 128).all(axis=(0, 3))
    rows, columns = np.nonzero(covered)
    if rows.size:
      # The grey area is a rectangle (a 10 x 10 square cut at the borders), same in all frames.
      assert covered[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1].all()
      assert rows.max() - rows.min() < 10 and columns.max() - columns.min() < 10
    assert not (changed & ~covered).any()


# ---------------------------------------------------------------------------------------------
# RAND_AUGMENT_OPS: levels -> parameters, temporal consistency.
# ---------------------------------------------------------------------------------------------


def test_rand_augment_ops_are_the_reference_sixteen():
  assert list(augment.RAND_AUGMENT_OPS) == [
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Cutout",
    "SolarizeAdd",
  ]


SIGNED = {
  "Rotate": (augment.rotate, lambda level: level / 10 * 30),
  "ShearX": (augment.shear_x, lambda level: level / 10 * 0.3),
  "ShearY": (augment.shear_y, lambda level: level / 10 * 0.3),
  "TranslateX": (augment.translate_x, lambda level: min(level / 10 * 100, W - 1)),
  "TranslateY": (augment.translate_y, lambda level: min(level / 10 * 100, H - 1)),
}


@pytest.mark.parametrize("name", sorted(SIGNED))
@pytest.mark.parametrize("level", [3.0, 15.0, 20.0])
def test_signed_ops_scale_with_level_and_take_both_signs(clip, name, level):
  op, parameter = SIGNED[name]
  x = tf.constant(clip)
  value = parameter(level)
  positive, negative = op(x, value).numpy(), op(x, -value).numpy()
  signs = set()
  for i in range(12):
    out = augment.RAND_AUGMENT_OPS[name](x, level, seed_of(i)).numpy()
    if np.array_equal(out, positive):
      signs.add(1)
    else:
      np.testing.assert_array_equal(out, negative)
      signs.add(-1)
  assert signs == {1, -1}


@pytest.mark.parametrize(
  "name, level, expected",
  [
    ("Posterize", 3.0, lambda x: augment.posterize(x, 1)),
    ("Posterize", 15.0, lambda x: augment.posterize(x, 6)),
    ("Posterize", 20.0, lambda x: x),  # 8 bits: the reference's posterize vanishes
    ("Posterize", 30.0, lambda x: x),  # clamped to 8 bits
    ("Solarize", 3.0, lambda x: augment.solarize(x, 76)),
    ("Solarize", 15.0, lambda x: x),  # threshold clamped to 256: nothing inverted
    ("SolarizeAdd", 15.0, lambda x: augment.solarize_add(x, 165)),
    ("Color", 5.0, lambda x: x),  # factor 1.0 at level 5
    ("Brightness", 5.0, lambda x: x),
    ("Contrast", 5.0, lambda x: x),
    ("Sharpness", 5.0, lambda x: x),
    ("Brightness", 0.0, lambda x: augment.brightness(x, 0.1)),
    ("Color", 15.0, lambda x: augment.color(x, 2.8)),
    ("Sharpness", 20.0, lambda x: augment.sharpness(x, 3.7)),
    ("Invert", 15.0, augment.invert),
  ],
)
def test_level_to_parameters(clip, name, level, expected):
  x = tf.constant(clip)
  np.testing.assert_array_equal(
    augment.RAND_AUGMENT_OPS[name](x, level, SEED).numpy(), np.asarray(expected(x))
  )


def test_cutout_size_follows_level(clip):
  for level, side in [(3.0, 2 * 12), (5.0, 2 * 20)]:
    big = random_clip(10, t=2, h=64, w=64)
    sides = []
    for i in range(10):
      out = augment.RAND_AUGMENT_OPS["Cutout"](tf.constant(big), level, seed_of(i)).numpy()
      rows, columns = np.nonzero((out != big).any(axis=(0, 3)))
      sides.append(max(rows.max() - rows.min(), columns.max() - columns.min()) + 1)
    assert max(sides) == side


@pytest.mark.parametrize("name", list(augment.RAND_AUGMENT_OPS))
def test_each_op_is_temporally_consistent(name):
  op = tf.function(lambda x, seed: augment.RAND_AUGMENT_OPS[name](x, 15.0, seed))
  still = still_clip(11)
  for i in range(4):
    assert_frames_identical(op(still, seed_of(i)).numpy())
  clip = random_clip(12)
  whole = op(clip, SEED).numpy()
  assert whole.min() >= 0 and whole.max() <= 255 and (whole == np.floor(whole)).all()
  if name not in CLIP_WIDE_OPS:
    for t in range(T):
      np.testing.assert_array_equal(op(clip[t : t + 1], SEED).numpy()[0], whole[t])


# ---------------------------------------------------------------------------------------------
# rand_augment
# ---------------------------------------------------------------------------------------------


def test_rand_augment_picks_every_op_and_nothing_uniformly():
  x = tf.constant(np.floor(random_clip(13) * 0.8 + 20))  # AutoContrast must change it
  level = 3.0
  candidates = {"Identity": [x.numpy()]}
  for name, op in augment.RAND_AUGMENT_OPS.items():
    if name in SIGNED:
      function, parameter = SIGNED[name]
      candidates[name] = [
        function(x, parameter(level)).numpy(),
        function(x, -parameter(level)).numpy(),
      ]
    elif name != "Cutout":
      candidates[name] = [op(x, level, SEED).numpy()]
  one_layer = tf.function(
    lambda seed: augment.rand_augment(x, num_layers=1, magnitude=level, seed=seed)
  )
  counts = dict.fromkeys([*candidates, "Cutout"], 0)
  for i in range(250):
    out = one_layer(seed_of(i)).numpy()
    names = [name for name, outs in candidates.items() if any(np.array_equal(out, o) for o in outs)]
    if not names:  # Cutout: only a grey patch changed
      changed = (out != x.numpy()).any(axis=(0, 3))
      assert (out[:, changed] == 128).all()
      names = ["Cutout"]
    assert len(names) == 1, names
    counts[names[0]] += 1
  assert min(counts.values()) >= 4, counts  # 250 / 17 = 14.7 expected each


def test_rand_augment_consistency_determinism_and_range():
  ra = tf.function(lambda x, seed: augment.rand_augment(x, num_layers=2, magnitude=15.0, seed=seed))
  still = still_clip(14)
  for i in range(30):
    out = ra(still, seed_of(i)).numpy()
    assert_frames_identical(out)
    assert out.min() >= 0 and out.max() <= 255 and (out == np.floor(out)).all()
  clip = random_clip(15) * 1.1 - 10  # outside [0, 255] and fractional: clipped and truncated
  out = ra(clip, SEED).numpy()
  np.testing.assert_array_equal(ra(clip, SEED).numpy(), out)
  assert any(not np.array_equal(ra(clip, seed_of(i)).numpy(), out) for i in range(3))
  np.testing.assert_array_equal(
    augment.rand_augment(clip, num_layers=0, magnitude=15.0, seed=SEED).numpy(),
    np.floor(np.clip(clip, 0, 255)),
  )
  assert (
    augment.rand_augment(clip.astype(np.uint8), num_layers=2, magnitude=20.0, seed=SEED).dtype
    == tf.float32
  )


# ---------------------------------------------------------------------------------------------
# random_erasing, horizontal_flip
# ---------------------------------------------------------------------------------------------


def erased_box(out: np.ndarray, clip: np.ndarray) -> tuple[int, int, int, int]:
  rows, columns = np.nonzero((out != clip).any(axis=(0, 3)))
  top, left = rows.min(), columns.min()
  height, width = rows.max() - top + 1, columns.max() - left + 1
  return int(top), int(left), int(height), int(width)


def test_random_erasing_one_rectangle_of_shared_noise():
  clip = np.random.default_rng(16).normal(size=(T, 40, 48, 3)).astype(np.float32)
  area = 40 * 48
  erase = tf.function(lambda seed: augment.random_erasing(clip, probability=1.0, seed=seed))
  fractions, aspects, noise = [], [], []
  for i in range(60):
    out = erase(seed_of(i)).numpy()
    top, left, height, width = erased_box(out, clip)
    patch = out[:, top : top + height, left : left + width]
    # Every pixel of the rectangle is noise (not the clip), the same in every frame.
    assert (patch != clip[:, top : top + height, left : left + width]).all()
    assert_frames_identical(patch)
    outside = np.ones((40, 48), bool)
    outside[top : top + height, left : left + width] = False
    np.testing.assert_array_equal(out[:, outside], clip[:, outside])
    # Sides are rounded: allow half a pixel on each.
    assert (height - 0.5) * (width - 0.5) <= area / 3 and (height + 0.5) * (width + 0.5) >= (
      0.02 * area
    )
    fractions.append(height * width / area)
    aspects.append(height / width)
    noise.append(patch[0].ravel())
  assert min(fractions) < 0.1 and max(fractions) > 0.2
  assert min(aspects) < 0.6 and max(aspects) > 1.6
  noise = np.concatenate(noise)  # standard normal
  assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1.0) < 0.05


@pytest.mark.parametrize("name", ["random_erasing", "horizontal_flip"])
def test_erasing_and_flip_treat_every_frame_alike(name):
  if name == "random_erasing":
    op = tf.function(lambda x, seed: augment.random_erasing(x, probability=0.7, seed=seed))
  else:
    op = tf.function(lambda x, seed: augment.horizontal_flip(x, seed=seed)[0])
  still = still_clip(19)
  clip = random_clip(19)
  for i in range(6):
    assert_frames_identical(op(still, seed_of(i)).numpy())
    whole = op(clip, seed_of(i)).numpy()
    for t in range(T):
      np.testing.assert_array_equal(op(clip[t : t + 1], seed_of(i)).numpy()[0], whole[t])


def test_random_erasing_probability_dtype_and_no_fit():
  clip = np.random.default_rng(17).normal(size=(T, H, W, 3)).astype(np.float32)
  for i in range(5):
    np.testing.assert_array_equal(
      augment.random_erasing(clip, probability=0.0, seed=seed_of(i)).numpy(), clip
    )
    # The whole frame's area never fits strictly inside it: no-op after max_attempts.
    np.testing.assert_array_equal(
      augment.random_erasing(
        clip, probability=1.0, min_area=1.0, max_area=1.0, seed=seed_of(i)
      ).numpy(),
      clip,
    )
  applied = [
    not np.array_equal(augment.random_erasing(clip, seed=seed_of(i)).numpy(), clip)
    for i in range(60)
  ]
  assert 0.1 <= np.mean(applied) <= 0.45  # default probability 0.25
  half = augment.random_erasing(tf.constant(clip, tf.bfloat16), probability=1.0, seed=SEED)
  assert half.dtype == tf.bfloat16 and half.shape == clip.shape
  out = augment.random_erasing(clip, probability=1.0, seed=SEED).numpy()
  np.testing.assert_array_equal(augment.random_erasing(clip, probability=1.0, seed=SEED), out)
  assert not np.array_equal(augment.random_erasing(clip, probability=1.0, seed=seed_of(1)), out)
  with pytest.raises(ValueError, match="normalised float"):
    augment.random_erasing(clip.astype(np.uint8), seed=SEED)


def test_horizontal_flip():
  clip = random_clip(18)
  for i in range(5):
    out, flipped = augment.horizontal_flip(clip, probability=0.0, seed=seed_of(i))
    assert not bool(flipped)
    np.testing.assert_array_equal(out.numpy(), clip)
    out, flipped = augment.horizontal_flip(clip, probability=1.0, seed=seed_of(i))
    assert bool(flipped)
    np.testing.assert_array_equal(out.numpy(), clip[:, :, ::-1])
  flags = set()
  for i in range(20):
    out, flipped = augment.horizontal_flip(clip, seed=seed_of(i))
    np.testing.assert_array_equal(out.numpy(), clip[:, :, ::-1] if flipped else clip)
    flags.add(bool(flipped))
  assert flags == {True, False}


def test_invalid_arguments_raise():
  clip = random_clip()
  with pytest.raises(ValueError, match="min_scale"):
    augment.scale_jitter_crop(
      clip, min_resize=16, crop_size=12, min_scale=1.2, max_scale=1.0, seed=SEED
    )
  with pytest.raises(ValueError, match="probability"):
    augment.color_jitter(clip, probability=1.5, seed=SEED)
  with pytest.raises(ValueError, match="magnitude"):
    augment.rand_augment(clip, num_layers=2, magnitude=-1.0, seed=SEED)
  with pytest.raises(ValueError, match="min_area"):
    augment.random_erasing(clip, min_area=0.5, max_area=0.2, seed=SEED)


# ---------------------------------------------------------------------------------------------
# Graph mode: tf.data with clips of different sizes (dynamic T, H, W).
# ---------------------------------------------------------------------------------------------


def test_everything_runs_in_tf_data_with_dynamic_shapes():
  sizes = [(4, 24, 32), (3, 30, 20), (4, 17, 17)]

  def clips():
    for i, (t, h, w) in enumerate(sizes):
      yield random_clip(20 + i, t, h, w).astype(np.uint8)

  ds = tf.data.Dataset.from_generator(
    clips, output_signature=tf.TensorSpec([None, None, None, 3], tf.uint8)
  ).enumerate()

  def process(index, frames):
    seeds = tf.unstack(
      tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(SEED, index), 6
      )
    )
    frames = augment.scale_jitter_crop(
      frames, min_resize=18, crop_size=16, min_scale=0.9, max_scale=1.33, seed=seeds[0]
    )
    frames = augment.color_jitter(frames, probability=1.0, seed=seeds[1])
    frames = augment.rand_augment(frames, num_layers=3, magnitude=15.0, seed=seeds[2])
    ops = [op(frames, 20.0, seeds[3]) for op in augment.RAND_AUGMENT_OPS.values()]
    frames, flipped = augment.horizontal_flip(frames, seed=seeds[4])
    frames = augment.random_erasing(frames / 127.5 - 1.0, probability=1.0, seed=seeds[5])
    return frames, flipped, tf.stack(ops)

  results = list(ds.map(process, num_parallel_calls=2, deterministic=True))
  assert len(results) == 3
  for (t, _, _), (frames, flipped, ops) in zip(sizes, results, strict=True):
    assert frames.shape == (t, 16, 16, 3) and flipped.dtype == tf.bool
    assert ops.shape == (16, t, 16, 16, 3)
    assert np.isfinite(frames.numpy()).all()
  again = list(ds.map(process))
  for (a, _, _), (b, _, _) in zip(results, again, strict=True):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
