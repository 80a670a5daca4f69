"""Temporally consistent video augmentation for the tf.data reader (ViViT Table 7 / appendix A).

Every function takes a clip `frames` (T, H, W, 3), works in graph mode inside `tf.data` maps
(spatial sizes and T may be dynamic) and draws its randomness only from the stateless `seed`
(int32 or int64, shape [2]). Each random choice (scale, crop window, colour factors, RandAugment
operations and their parameters, erased rectangle, flip) is drawn once per clip and applied to
every frame, as ViViT does: "the same transformation is applied on each frame of the video".
Pixels are float32 in [0, 255] except for `random_erasing`, which runs on normalised frames.

- `scale_jitter_crop`: scale jitter (ViViT 0.9-1.33; TimeSformer's short side in [256, 320])
  and a random crop, one bilinear resize from the decoded size; `scale_jitter_window`: the same
  crop as a window of the stored frame, which the reader decodes alone (records.decode_window).
- `color_jitter`: DMVR's colour augmentation (brightness, saturation, contrast, hue).
- `rand_augment`: RandAugment (Cubuk et al. 2020) with the operations and magnitude scale of the
  TensorFlow Model Garden implementation; each operation alone is in `RAND_AUGMENT_OPS`.
- `random_erasing`: Random Erasing (Zhong et al. 2020), timm's per-pixel noise fill.
- `horizontal_flip`: returns whether it flipped, for labels that depend on the direction.

Clip-wide statistics: RandAugment's AutoContrast, Equalize and Contrast compute their minima,
maxima, histograms and mean over the whole clip, so every frame goes through the same pixel
mapping (a frame-wise histogram would change the mapping as objects enter or leave the view; it
is also what scenic's ViViT RandAugment does, which treats the clip as one tall image).
`color_jitter`'s contrast keeps tf.image.adjust_contrast's per-frame mean, as DMVR does.
"""

import functools
import math
from collections.abc import Callable

import tensorflow as tf

from vidtx.errors import UserError

# The Model Garden's magnitude scale: level 10 is the "full" strength of each operation.
MAX_LEVEL = 10.0
# Pixels uncovered by a geometric operation, and Cutout's square, are grey (the reference's 128).
GREY = 128.0
# Model Garden RandAugment defaults, in pixels (for 224 x 224 crops) at level 10.
TRANSLATE_CONST = 100.0
CUTOUT_CONST = 40.0


def _split(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
  return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def _uniform(seed: tf.Tensor, minval: float = 0.0, maxval: float = 1.0) -> tf.Tensor:
  return tf.random.stateless_uniform([], seed, minval, maxval)


def _randint(seed: tf.Tensor, low, high) -> tf.Tensor:
  """Uniform int32 in [low, high] (both included)."""
  return tf.random.stateless_uniform([], seed, low, high + 1, dtype=tf.int32)


def _coin(seed: tf.Tensor, probability: float) -> tf.Tensor:
  # u in [0, 1): probability 0 never applies, probability 1 always does.
  return _uniform(seed) < probability


def _check_probability(name: str, probability: float) -> None:
  if not 0.0 <= probability <= 1.0:
    raise UserError(f"{name}={probability}: expected a probability in [0, 1].")


# ---------------------------------------------------------------------------------------------
# Scale jitter and random crop.
# ---------------------------------------------------------------------------------------------


def resized_size(height, width, short_side) -> tf.Tensor:
  """(2,) int32: the (height, width) that `resize_short_side` gives a height x width frame.

  The aspect ratio is kept; the long side is rounded (float64, so that it does not depend on
  float32 error) and never below `short_side`. Arguments: Python ints or int32 scalar tensors.
  """
  height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
  target = tf.cast(short_side, tf.int32)
  scale = tf.cast(target, tf.float64) / tf.cast(tf.minimum(height, width), tf.float64)
  new_height = tf.maximum(tf.cast(tf.round(tf.cast(height, tf.float64) * scale), tf.int32), target)
  new_width = tf.maximum(tf.cast(tf.round(tf.cast(width, tf.float64) * scale), tf.int32), target)
  return tf.stack([new_height, new_width])


def resize_short_side(frames: tf.Tensor, short_side) -> tf.Tensor:
  """float32 (T, H', W', 3): one bilinear resize so that the short side becomes `short_side`.

  (H', W') = resized_size(H, W, short_side); antialiasing is off (tf.image.resize's default). A
  clip whose short side is already `short_side` is only cast. `short_side` is a Python int or an
  int32 scalar tensor.
  """
  height, width = tf.shape(frames)[1], tf.shape(frames)[2]
  target = tf.cast(short_side, tf.int32)
  return tf.cond(
    tf.minimum(height, width) == target,
    lambda: tf.cast(frames, tf.float32),
    lambda: tf.image.resize(frames, resized_size(height, width, target), method="bilinear"),
  )


def stored_window(top, left, crop_height, crop_width, resized, stored) -> tf.Tensor:
  """float64 (4,) [top, left, height, width] in a stored frame's pixels (fractional) of the
  window [top, top + crop_height) x [left, left + crop_width) of that frame resized to `resized`
  ((2,) int32 height, width); `stored` is the stored frame's (2,) size."""
  scale = tf.cast(stored, tf.float64) / tf.cast(resized, tf.float64)  # (2,) stored px / resized px
  corner = tf.cast(tf.stack([top, left]), tf.float64) * scale
  extent = tf.cast(tf.stack([crop_height, crop_width]), tf.float64) * scale
  return tf.concat([corner, extent], 0)


def jittered_short_side(
  *,
  min_resize: int,
  crop_size: int,
  min_scale: float = 1.0,
  max_scale: float = 1.0,
  probability: float = 1.0,
  seed: tf.Tensor,
) -> tf.Tensor:
  """int32 scalar: round(min_resize * s), at least crop_size; s ~ U[min_scale, max_scale].

  With probability 1 - `probability` the jitter is skipped (s = 1).
  """
  if not 0.0 < min_scale <= max_scale:
    raise UserError(
      f"min_scale={min_scale}, max_scale={max_scale}: expected 0 < min_scale <= max_scale."
    )
  _check_probability("probability", probability)
  draws = tf.cast(tf.random.stateless_uniform([2], seed), tf.float64)
  scale = min_scale + (max_scale - min_scale) * draws[1]
  scale = tf.where(draws[0] < probability, scale, tf.constant(1.0, tf.float64))
  short_side = tf.cast(tf.round(min_resize * scale), tf.int32)
  return tf.maximum(short_side, crop_size)


def _jitter_crop_draws(
  height, width, *, min_resize, crop_size, min_scale, max_scale, probability, seed
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """scale_jitter_crop's random choices for a height x width frame: (short side, (2,) resized
  size, top, left of the crop in the resized frame). Seed streams: stateless_split(seed, 3)
  gives the scale's seed (jittered_short_side), then the seeds of the top and of the left."""
  if crop_size < 1 or min_resize < 1:
    raise UserError(f"min_resize={min_resize}, crop_size={crop_size}: expected both >= 1.")
  scale_seed, top_seed, left_seed = _split(seed, 3)
  short_side = jittered_short_side(
    min_resize=min_resize,
    crop_size=crop_size,
    min_scale=min_scale,
    max_scale=max_scale,
    probability=probability,
    seed=scale_seed,
  )
  resized = resized_size(height, width, short_side)
  top = _randint(top_seed, 0, resized[0] - crop_size)
  left = _randint(left_seed, 0, resized[1] - crop_size)
  return short_side, resized, top, left


def scale_jitter_crop(
  frames: tf.Tensor,
  *,
  min_resize: int,
  crop_size: int,
  min_scale: float = 1.0,
  max_scale: float = 1.0,
  probability: float = 1.0,
  seed: tf.Tensor,
) -> tf.Tensor:
  """float32 (T, crop_size, crop_size, 3): scale jitter, then one random crop for all frames.

  The short side becomes `jittered_short_side(...)` (min_resize times a scale drawn from
  U[min_scale, max_scale] with `probability`, else min_resize) in one bilinear resize from the
  decoded size (`resize_short_side`); then a crop_size window at a uniformly drawn position is
  cut from every frame. With min_scale = max_scale = 1 this is the reader's resize and crop.
  ViViT: min_resize 256, scales (0.9, 1.33). TimeSformer's short side in [256, 320]:
  min_resize 256, scales (1, 1.25). `frames` may be uint8 or float.

  The reader does not call this (it decodes only the window: `scale_jitter_window` and
  records.decode_window); it is the reference that path is tested against, with the same draws.
  """
  short_side, _, top, left = _jitter_crop_draws(
    tf.shape(frames)[1],
    tf.shape(frames)[2],
    min_resize=min_resize,
    crop_size=crop_size,
    min_scale=min_scale,
    max_scale=max_scale,
    probability=probability,
    seed=seed,
  )
  frames = resize_short_side(frames, short_side)
  frames = frames[:, top : top + crop_size, left : left + crop_size, :]
  return tf.ensure_shape(frames, [None, crop_size, crop_size, 3])


def scale_jitter_window(
  stored_size: tf.Tensor,
  *,
  min_resize: int,
  crop_size: int,
  min_scale: float = 1.0,
  max_scale: float = 1.0,
  probability: float = 1.0,
  seed: tf.Tensor,
) -> tf.Tensor:
  """float64 (4,) [top, left, height, width]: the window of a stored frame ((2,) int32 size)
  that `scale_jitter_crop` with the same arguments and seed would crop, in stored pixels
  (fractional). The same random draws, so the same scale and offsets for a given seed;
  decoding only this window and resizing it to crop_size (records.decode_window) gives the
  same clip up to the rounding of the window to whole pixels (docs/data.md).
  """
  _, resized, top, left = _jitter_crop_draws(
    stored_size[0],
    stored_size[1],
    min_resize=min_resize,
    crop_size=crop_size,
    min_scale=min_scale,
    max_scale=max_scale,
    probability=probability,
    seed=seed,
  )
  return stored_window(top, left, crop_size, crop_size, resized, stored_size)


# ---------------------------------------------------------------------------------------------
# Colour jitter.
# ---------------------------------------------------------------------------------------------


def color_jitter_draws(
  *,
  probability: float = 0.8,
  brightness: float | None = 32.0 / 255.0,
  contrast: tuple[float, float] | None = (0.6, 1.4),
  saturation: tuple[float, float] | None = (0.6, 1.4),
  hue: float | None = 0.2,
  seed: tf.Tensor,
) -> tf.Tensor:
  """float32 (5,): what `color_jitter` draws from `seed` (apply 0 / 1, brightness shift in
  levels, saturation factor, contrast factor, hue shift); a component left out is a no-op value
  (shift 0, factor 1). vidtx.device_augment.color_jitter applies them on the accelerator."""
  _check_probability("probability", probability)
  for name, value in (("contrast", contrast), ("saturation", saturation)):
    if value is not None and not 0.0 <= value[0] <= value[1]:
      raise UserError(f"{name}={value}: expected (lower, upper) with 0 <= lower <= upper.")
  apply_seed, brightness_seed, saturation_seed, contrast_seed, hue_seed = _split(seed, 5)
  one, zero = tf.constant(1.0), tf.constant(0.0)
  return tf.stack(
    [
      tf.cast(_coin(apply_seed, probability), tf.float32),
      _uniform(brightness_seed, -brightness, brightness) * 255.0 if brightness else zero,
      _uniform(saturation_seed, *saturation) if saturation is not None else one,
      _uniform(contrast_seed, *contrast) if contrast is not None else one,
      _uniform(hue_seed, -hue, hue) if hue else zero,
    ]
  )


def color_jitter(
  frames: tf.Tensor,
  *,
  probability: float = 0.8,
  brightness: float | None = 32.0 / 255.0,
  contrast: tuple[float, float] | None = (0.6, 1.4),
  saturation: tuple[float, float] | None = (0.6, 1.4),
  hue: float | None = 0.2,
  seed: tf.Tensor,
) -> tf.Tensor:
  """float32 clip in [0, 255] with DMVR's colour augmentation, applied with `probability`.

  Defaults are DMVR's color_default_augm (ViViT's colour augmentation, probability 0.8): a
  brightness shift in [-32, 32] levels (brightness is the largest shift as a fraction of 255),
  saturation and contrast factors in [0.6, 1.4], a hue rotation in [-0.2, 0.2] of the colour
  circle. Each factor is drawn once per clip (`color_jitter_draws`); the order is fixed
  (brightness, saturation, contrast, hue), as in DMVR. None (or 0 for brightness and hue) leaves
  a component out. Contrast is tf.image.adjust_contrast's: around each frame's own per-channel
  mean (DMVR's). Pixels are clipped to [0, 255] after the steps that can leave the range, so the
  HSV conversions of saturation and hue never see values outside it. The reader runs
  vidtx.device_augment's port of this on the accelerator; this is its reference.
  """
  draws = color_jitter_draws(
    probability=probability,
    brightness=brightness,
    contrast=contrast,
    saturation=saturation,
    hue=hue,
    seed=seed,
  )
  frames = tf.cast(frames, tf.float32)

  def jitter():
    clip = frames
    if brightness:
      clip = tf.clip_by_value(clip + draws[1], 0.0, 255.0)
    if saturation is not None:
      # HSV scales with the value channel: [0, 255] pixels need no rescaling, and every pixel
      # stays within [0, its largest channel], so no clipping either.
      clip = tf.image.adjust_saturation(clip, draws[2])
    if contrast is not None:
      clip = tf.clip_by_value(tf.image.adjust_contrast(clip, draws[3]), 0.0, 255.0)
    if hue:
      clip = tf.clip_by_value(tf.image.adjust_hue(clip, draws[4]), 0.0, 255.0)
    return clip

  return tf.cond(draws[0] > 0, jitter, lambda: frames)


# ---------------------------------------------------------------------------------------------
# RandAugment operations. Inputs and outputs are float32 clips of whole numbers in [0, 255]
# (what rand_augment feeds them): the results round as the uint8 reference does.
# ---------------------------------------------------------------------------------------------


def _blend(degenerate: tf.Tensor, frames: tf.Tensor, factor) -> tf.Tensor:
  """PIL's Image.blend: degenerate + factor * (frames - degenerate), clipped and truncated."""
  return tf.floor(tf.clip_by_value(degenerate + factor * (frames - degenerate), 0.0, 255.0))


def _luma(frames: tf.Tensor) -> tf.Tensor:
  """(..., 1) grey levels as PIL's convert('L') computes them (ITU-R 601-2, integer rounding)."""
  # PIL's fixed-point weights; the weighted sums stay below 2**24, exact in float32.
  weights = tf.constant([[19595.0], [38470.0], [7471.0]])
  return tf.floor((tf.tensordot(frames, weights, axes=1) + 32768.0) / 65536.0)


def auto_contrast(frames: tf.Tensor) -> tf.Tensor:
  """PIL's ImageOps.autocontrast per channel, minimum and maximum over the whole clip."""
  low = tf.reduce_min(frames, axis=[0, 1, 2])
  high = tf.reduce_max(frames, axis=[0, 1, 2])
  # A flat channel maps x -> (x - 0) * 1 / 1: unchanged.
  stretch = high > low
  low = tf.where(stretch, low, 0.0)
  levels = tf.where(stretch, 255.0, 1.0)
  spread = tf.where(stretch, high - low, 1.0)
  # (x - low) * 255 is exact in float32, so one division truncates like PIL's lookup table.
  return tf.floor((frames - low) * levels / spread)


def equalize(frames: tf.Tensor) -> tf.Tensor:
  """PIL's ImageOps.equalize per channel, one histogram over the whole clip."""
  pixels = tf.reshape(tf.cast(frames, tf.int32), [-1, 3])
  bins = pixels + tf.range(3) * 256  # channel c counts into bins [256 c, 256 c + 256)
  histogram = tf.reshape(
    tf.math.bincount(tf.reshape(bins, [-1]), minlength=768, maxlength=768), [3, 256]
  )
  # PIL's step leaves out the count of the brightest level present.
  brightest = 255 - tf.argmax(tf.reverse(histogram, axis=[1]) > 0, axis=1, output_type=tf.int32)
  step = (tf.shape(pixels)[0] - tf.gather(histogram, brightest, batch_dims=1)) // 255
  safe_step = tf.maximum(step, 1)[:, None]
  lut = (tf.cumsum(histogram, axis=1, exclusive=True) + safe_step // 2) // safe_step
  lut = tf.where(step[:, None] > 0, tf.clip_by_value(lut, 0, 255), tf.range(256)[None, :])
  equalized = tf.gather(tf.reshape(lut, [-1]), bins)
  return tf.reshape(tf.cast(equalized, tf.float32), tf.shape(frames))


def invert(frames: tf.Tensor) -> tf.Tensor:
  return 255.0 - frames


def posterize(frames: tf.Tensor, bits: int) -> tf.Tensor:
  """Keeps the `bits` most significant bits (PIL's ImageOps.posterize); bits in [0, 8]."""
  step = 2.0 ** (8 - bits)
  return tf.floor(frames / step) * step


def solarize(frames: tf.Tensor, threshold) -> tf.Tensor:
  """PIL's ImageOps.solarize: levels >= threshold are inverted."""
  return tf.where(frames < threshold, frames, 255.0 - frames)


def solarize_add(frames: tf.Tensor, addition, threshold=128.0) -> tf.Tensor:
  """The Model Garden's SolarizeAdd: `addition` is added to levels below `threshold`."""
  return tf.where(frames < threshold, tf.clip_by_value(frames + addition, 0.0, 255.0), frames)


def color(frames: tf.Tensor, factor) -> tf.Tensor:
  """PIL's ImageEnhance.Color: blend with the grey version (0: grey, 1: unchanged)."""
  return _blend(_luma(frames), frames, factor)


def contrast(frames: tf.Tensor, factor) -> tf.Tensor:
  """PIL's ImageEnhance.Contrast with the mean grey level of the whole clip.

  The Model Garden's version divides the pixel count by 256 where it means the mean grey level
  (its target grey is 196 for every 224 x 224 image, whatever its content); this one takes PIL's
  mean, which that code sets out to reproduce.
  """
  mean = tf.floor(tf.reduce_mean(tf.cast(_luma(frames), tf.float64)) + 0.5)
  return _blend(tf.cast(mean, tf.float32), frames, factor)


def brightness(frames: tf.Tensor, factor) -> tf.Tensor:
  """PIL's ImageEnhance.Brightness: blend with black."""
  return _blend(tf.zeros_like(frames), frames, factor)


def sharpness(frames: tf.Tensor, factor) -> tf.Tensor:
  """PIL's ImageEnhance.Sharpness, frame by frame: blend with PIL's SMOOTH filter.

  The filtered image keeps the one-pixel border of each frame and rounds to the nearest level,
  as PIL does (the Model Garden truncates, a darkening of half a level on average).
  """
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32)
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  # Whole-number weights keep the sums exact, so the rounding is PIL's exactly.
  sums = tf.nn.depthwise_conv2d(frames, kernel, [1, 1, 1, 1], "VALID")
  smooth = tf.floor(sums / 13.0 + 0.5)
  paddings = [[0, 0], [1, 1], [1, 1], [0, 0]]
  interior = tf.pad(tf.ones_like(smooth, tf.bool), paddings)
  degenerate = tf.where(interior, tf.pad(smooth, paddings), frames)
  return _blend(degenerate, frames, factor)


def _project(frames: tf.Tensor, transform: list) -> tf.Tensor:
  """Nearest-neighbour projective transform of every frame; uncovered pixels are grey.

  `transform` [a0, a1, a2, b0, b1, b2, c0, c1] maps each output pixel (x, y) to the input
  pixel ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1.
  """
  matrix = tf.reshape(tf.cast(tf.stack(transform), tf.float32), [1, 8])
  projected = tf.raw_ops.ImageProjectiveTransformV3(
    images=frames,
    transforms=matrix,
    output_shape=tf.shape(frames)[1:3],
    fill_value=GREY,
    interpolation="NEAREST",
    fill_mode="CONSTANT",
  )
  projected.set_shape(frames.shape)
  return projected


def rotate(frames: tf.Tensor, degrees) -> tf.Tensor:
  """Rotation by `degrees` about the centre of the frame (the reference's transform)."""
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(radians), tf.sin(radians)
  centre_x = (tf.cast(tf.shape(frames)[2], tf.float32) - 1.0) / 2.0
  centre_y = (tf.cast(tf.shape(frames)[1], tf.float32) - 1.0) / 2.0
  return _project(
    frames,
    [
      cos,
      -sin,
      centre_x - cos * centre_x + sin * centre_y,
      sin,
      cos,
      centre_y - sin * centre_x - cos * centre_y,
      0.0,
      0.0,
    ],
  )


def shear_x(frames: tf.Tensor, shear) -> tf.Tensor:
  """Output (x, y) takes input (x + shear * y, y)."""
  return _project(frames, [1.0, shear, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(frames: tf.Tensor, shear) -> tf.Tensor:
  """Output (x, y) takes input (x, shear * x + y)."""
  return _project(frames, [1.0, 0.0, 0.0, shear, 1.0, 0.0, 0.0, 0.0])


def translate_x(frames: tf.Tensor, pixels) -> tf.Tensor:
  """Output (x, y) takes input (x + pixels, y): the content moves left by `pixels`."""
  return _project(frames, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(frames: tf.Tensor, pixels) -> tf.Tensor:
  """Output (x, y) takes input (x, y + pixels): the content moves up by `pixels`."""
  return _project(frames, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


def cutout(frames: tf.Tensor, pad_size: int, seed: tf.Tensor) -> tf.Tensor:
  """A grey square of side 2 * pad_size (cut at the borders), same place in every frame.

  Its centre is uniform over the frame, as in the reference.
  """
  row_seed, column_seed = _split(seed, 2)
  height, width = tf.shape(frames)[1], tf.shape(frames)[2]
  centre_y = _randint(row_seed, 0, height - 1)
  centre_x = _randint(column_seed, 0, width - 1)
  rows = (tf.range(height) >= centre_y - pad_size) & (tf.range(height) < centre_y + pad_size)
  columns = (tf.range(width) >= centre_x - pad_size) & (tf.range(width) < centre_x + pad_size)
  square = rows[None, :, None, None] & columns[None, None, :, None]
  return tf.where(square, GREY, frames)


# Level -> parameters, the Model Garden's (official/vision/ops/augment.py) scaled by
# level / MAX_LEVEL, so levels above 10 (ViViT uses 15 and 20) extend every range in proportion.
# Signed operations take a random sign. Clamps: Posterize keeps at most 8 bits and Solarize's
# threshold stops at 256 (both already no-ops there: the reference's Posterize weakens and its
# Solarize vanishes as the level grows); a translation stops one pixel short of the frame's size
# (further, the frame would be all grey).


def _signed(value: float, seed: tf.Tensor) -> tf.Tensor:
  return tf.where(_uniform(seed) < 0.5, value, -value)


def _enhance_factor(level: float) -> float:
  return level / MAX_LEVEL * 1.8 + 0.1  # 1.0 (unchanged) at level 5


def _translate(frames: tf.Tensor, level: float, seed: tf.Tensor, axis: int) -> tf.Tensor:
  limit = tf.cast(tf.shape(frames)[axis] - 1, tf.float32)
  pixels = tf.clip_by_value(_signed(level / MAX_LEVEL * TRANSLATE_CONST, seed), -limit, limit)
  return translate_x(frames, pixels) if axis == 2 else translate_y(frames, pixels)


RandAugmentOp = Callable[[tf.Tensor, float, tf.Tensor], tf.Tensor]

# name -> fn(frames, level, seed), in the reference's order.
RAND_AUGMENT_OPS: dict[str, RandAugmentOp] = {
  "AutoContrast": lambda frames, level, seed: auto_contrast(frames),
  "Equalize": lambda frames, level, seed: equalize(frames),
  "Invert": lambda frames, level, seed: invert(frames),
  "Rotate": lambda frames, level, seed: rotate(frames, _signed(level / MAX_LEVEL * 30.0, seed)),
  "Posterize": lambda frames, level, seed: posterize(frames, min(int(level / MAX_LEVEL * 4), 8)),
  "Solarize": lambda frames, level, seed: solarize(frames, min(int(level / MAX_LEVEL * 256), 256)),
  "Color": lambda frames, level, seed: color(frames, _enhance_factor(level)),
  "Contrast": lambda frames, level, seed: contrast(frames, _enhance_factor(level)),
  "Brightness": lambda frames, level, seed: brightness(frames, _enhance_factor(level)),
  "Sharpness": lambda frames, level, seed: sharpness(frames, _enhance_factor(level)),
  "ShearX": lambda frames, level, seed: shear_x(frames, _signed(level / MAX_LEVEL * 0.3, seed)),
  "ShearY": lambda frames, level, seed: shear_y(frames, _signed(level / MAX_LEVEL * 0.3, seed)),
  "TranslateX": lambda frames, level, seed: _translate(frames, level, seed, axis=2),
  "TranslateY": lambda frames, level, seed: _translate(frames, level, seed, axis=1),
  "Cutout": lambda frames, level, seed: cutout(frames, int(level / MAX_LEVEL * CUTOUT_CONST), seed),
  "SolarizeAdd": lambda frames, level, seed: solarize_add(frames, int(level / MAX_LEVEL * 110)),
}


def rand_augment(
  frames: tf.Tensor, *, num_layers: int, magnitude: float, seed: tf.Tensor
) -> tf.Tensor:
  """float32 clip after `num_layers` RandAugment operations at `magnitude` (0-10 scale, or more).

  As in the Model Garden's RandAugment: each layer picks one of the 16 operations of
  RAND_AUGMENT_OPS or nothing, uniformly (17 choices, with replacement across layers), and
  applies it at the shared magnitude; a signed operation's sign is drawn with it. Choices and
  parameters are drawn once per clip; every frame gets the same ones. Pixels are clipped to
  [0, 255] and truncated to whole numbers first (the reference's cast to uint8), so the output
  holds whole numbers in [0, 255].

  Seed streams: layer i uses stateless_split(seed, num_layers)[i], split in two: the choice's
  seed and the operation's seed.
  """
  if num_layers < 0 or magnitude < 0:
    raise UserError(f"num_layers={num_layers}, magnitude={magnitude}: expected both >= 0.")
  frames = tf.floor(tf.clip_by_value(tf.cast(frames, tf.float32), 0.0, 255.0))
  if num_layers == 0:
    return frames
  for layer_seed in _split(seed, num_layers):
    frames = _rand_augment_layer(frames, magnitude, layer_seed)
  return frames


def _rand_augment_layer(frames: tf.Tensor, magnitude: float, seed: tf.Tensor) -> tf.Tensor:
  choice_seed, op_seed = _split(seed, 2)
  branches = [functools.partial(op, frames, magnitude, op_seed) for op in RAND_AUGMENT_OPS.values()]
  branches.append(lambda: tf.identity(frames))  # the 17th choice: no operation
  choice = tf.random.stateless_uniform([], choice_seed, 0, len(branches), dtype=tf.int32)
  return tf.switch_case(choice, branches)


def rand_augment_draws(
  *, num_layers: int, height, width, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
  """What `rand_augment` draws from `seed` for (height, width) frames: (int32 (L,) operation of
  each layer, in RAND_AUGMENT_OPS order, 16 for none; float32 (L, 3) its sign, +1 or -1, as the
  signed operations draw it, and Cutout's centre row and column), for
  vidtx.device_augment.rand_augment. Every layer draws all three whatever its operation."""
  if num_layers < 0:
    raise UserError(f"num_layers={num_layers}: expected >= 0.")
  ops, args = [], []
  for layer_seed in _split(seed, num_layers) if num_layers else []:
    choice_seed, op_seed = _split(layer_seed, 2)
    ops.append(
      tf.random.stateless_uniform([], choice_seed, 0, len(RAND_AUGMENT_OPS) + 1, dtype=tf.int32)
    )
    row_seed, column_seed = _split(op_seed, 2)  # as cutout splits its seed
    sign = _signed(1.0, op_seed)
    centre_y = tf.cast(_randint(row_seed, 0, height - 1), tf.float32)
    centre_x = tf.cast(_randint(column_seed, 0, width - 1), tf.float32)
    args.append(tf.stack([sign, centre_y, centre_x]))
  if not ops:
    return tf.zeros([0], tf.int32), tf.zeros([0, 3], tf.float32)
  return tf.stack(ops), tf.stack(args)


# ---------------------------------------------------------------------------------------------
# Random erasing and flips.
# ---------------------------------------------------------------------------------------------


def random_erasing_draws(
  *,
  height,
  width,
  probability: float = 0.25,
  min_area: float = 0.02,
  max_area: float = 1 / 3,
  min_aspect: float = 0.3,
  max_attempts: int = 10,
  seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
  """What `random_erasing` draws from `seed` for (height, width) frames: (int32 (4,) the erased
  rectangle's top, left, height, width, 0 x 0 when nothing is erased; float32 (height, width, 3)
  the noise that fills it, zeros when nothing is erased), for
  vidtx.device_augment.random_erasing."""
  _check_probability("probability", probability)
  if not 0.0 < min_area <= max_area <= 1.0 or not 0.0 < min_aspect <= 1.0 or max_attempts < 1:
    raise UserError(
      f"min_area={min_area}, max_area={max_area}, min_aspect={min_aspect}, "
      f"max_attempts={max_attempts}: expected 0 < min_area <= max_area <= 1, "
      "0 < min_aspect <= 1 and max_attempts >= 1."
    )
  apply_seed, area_seed, aspect_seed, top_seed, left_seed, noise_seed = _split(seed, 6)
  height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)

  def erase():
    # All attempts at once; the first that fits wins.
    area = tf.cast(height * width, tf.float32)
    areas = tf.random.stateless_uniform([max_attempts], area_seed, min_area, max_area) * area
    log_aspect = math.log(min_aspect)
    aspects = tf.exp(
      tf.random.stateless_uniform([max_attempts], aspect_seed, log_aspect, -log_aspect)
    )
    heights = tf.cast(tf.round(tf.sqrt(areas * aspects)), tf.int32)
    widths = tf.cast(tf.round(tf.sqrt(areas / aspects)), tf.int32)
    fits = (heights < height) & (widths < width)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    found = tf.reduce_any(fits)
    erase_height = tf.where(found, heights[first], 0)
    erase_width = tf.where(found, widths[first], 0)
    top = _randint(top_seed, 0, height - erase_height)
    left = _randint(left_seed, 0, width - erase_width)
    noise = tf.random.stateless_normal(tf.stack([height, width, 3]), noise_seed)
    return tf.stack([top, left, erase_height, erase_width]), noise

  def keep():
    return tf.zeros([4], tf.int32), tf.zeros(tf.stack([height, width, 3]))

  return tf.cond(_coin(apply_seed, probability), erase, keep)


def random_erasing(
  frames: tf.Tensor,
  *,
  probability: float = 0.25,
  min_area: float = 0.02,
  max_area: float = 1 / 3,
  min_aspect: float = 0.3,
  max_attempts: int = 10,
  seed: tf.Tensor,
) -> tf.Tensor:
  """Random Erasing of normalised float frames: one rectangle of noise, same in every frame.

  With `probability`, draws up to `max_attempts` rectangles (area a fraction U[min_area,
  max_area] of the frame, aspect h / w log-uniform in [min_aspect, 1 / min_aspect], sides
  rounded) and erases the first one that fits inside the frame, at a uniform position; when none
  fits, the clip is unchanged (timm's RandomErasing). The rectangle is filled with standard
  normal noise per pixel and channel (timm's 'pixel' mode), the same noise in every frame: the
  erased patch is a still occluder, not flicker that would tell frames apart. The draws are
  `random_erasing_draws`'.
  """
  frames = tf.convert_to_tensor(frames)
  if not frames.dtype.is_floating:
    raise UserError(f"random_erasing takes normalised float frames, got {frames.dtype}.")
  height, width = tf.shape(frames)[1], tf.shape(frames)[2]
  box, noise = random_erasing_draws(
    height=height,
    width=width,
    probability=probability,
    min_area=min_area,
    max_area=max_area,
    min_aspect=min_aspect,
    max_attempts=max_attempts,
    seed=seed,
  )
  rows = (tf.range(height) >= box[0]) & (tf.range(height) < box[0] + box[2])
  columns = (tf.range(width) >= box[1]) & (tf.range(width) < box[1] + box[3])
  inside = rows[None, :, None, None] & columns[None, None, :, None]
  return tf.where(inside, tf.cast(noise, frames.dtype)[None], frames)


def flip_draw(*, probability: float = 0.5, seed: tf.Tensor) -> tf.Tensor:
  """bool scalar: whether `horizontal_flip` flips for `seed`."""
  _check_probability("probability", probability)
  return _coin(seed, probability)


def horizontal_flip(
  frames: tf.Tensor, *, probability: float = 0.5, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
  """(frames mirrored left-right with `probability`, flipped: bool scalar) for the whole clip.

  `flipped` lets the caller swap the labels of direction-dependent classes.
  """
  flipped = flip_draw(probability=probability, seed=seed)
  frames = tf.convert_to_tensor(frames)
  return tf.cond(flipped, lambda: tf.reverse(frames, axis=[2]), lambda: frames), flipped
