"""Augmentation that keeps shapes, run on the accelerator inside the jitted train step.

The host reader (vidtx.data.pipeline) decodes each training clip's crop window and sends it as
uint8, a quarter of the float32 bytes, with the small per-example parameters of the rest of the
augmentation, drawn on the host from the same stateless seeds as before (vidtx.data.augment's
`*_draws`), so the stream stays deterministic per example and an exact resume still holds.
With scale jitter the window is not resized on the host: it arrives top-left in a fixed
(T, S, S, 3) buffer (S = DatasetConfig.window_size, zeros elsewhere) with its valid [h, w], and
the first step here resizes it to (T, crop, crop, 3) (`resize_windows`: TensorFlow's bilinear
resize as two matrix products per clip, float32, not rounded to whole levels as the host's
uint8 was). Without scale jitter the host sends (T, crop, crop, 3) crops. This module applies
the parameters, as pure jnp functions over the batch:

  window resize -> horizontal flip -> colour jitter (DMVR's brightness, saturation, contrast,
  hue) -> colour drop (grey) -> RandAugment -> normalisation (pixel / 255 - mean) / std ->
  random erasing

the order and the arithmetic of vidtx.data.augment's TensorFlow ops, which are the reference
(tests/test_device_augment.py compares every op with them). Evaluation batches are uint8
too, crop-sized, and are only normalised (`normalise`), in the evaluator's step.

The parameters are batch fields next to 'inputs' (PARAM_FIELDS; only those of the augmentations
the config turns on), each with the batch as its leading axis:

  augment_window    int32 (B, 2)        [h, w]: the valid top-left region of the (S, S) buffer,
                                        resized to crop x crop (only with scale jitter)
  augment_flip      int32 (B,)          1: mirror left-right
  augment_color     float32 (B, 5)      apply (0 / 1), brightness shift in levels, saturation
                                        factor, contrast factor, hue shift (fraction of a turn)
  augment_gray      int32 (B,)          1: the clip in grey (colour drop)
  augment_ra_op     int32 (B, L)        RandAugment's operation of each layer (RAND_AUGMENT_OPS
                                        order; 16: none)
  augment_ra_arg    float32 (B, L, 3)   its sign (+1 / -1) and Cutout's centre row and column
  augment_erase_box int32 (B, 4)        the erased rectangle: top, left, height, width (0 x 0:
                                        nothing erased)
  augment_erase_noise float32 (B, crop, crop, 3)  the noise that fills it (timm's 'pixel' mode)

RandAugment's geometric operations (Rotate, Shear, Translate) and Cutout run here too: its
layers apply in sequence, and AutoContrast, Equalize and Contrast take statistics of the whole
clip, grey borders included, so a geometric operation cannot move to the host without changing
what the layers after it compute. They are nearest-neighbour gathers, as cheap as the pixel ops.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

# Batch fields of the per-example parameters (module docstring).
WINDOW = "augment_window"
FLIP = "augment_flip"
COLOR = "augment_color"
GRAY = "augment_gray"
RA_OP = "augment_ra_op"
RA_ARG = "augment_ra_arg"
ERASE_BOX = "augment_erase_box"
ERASE_NOISE = "augment_erase_noise"
PARAM_FIELDS = (WINDOW, FLIP, COLOR, GRAY, RA_OP, RA_ARG, ERASE_BOX, ERASE_NOISE)

# vidtx.data.augment's constants (the Model Garden's RandAugment scale).
MAX_LEVEL = 10.0
GREY = 128.0
TRANSLATE_CONST = 100.0
CUTOUT_CONST = 40.0
RAND_AUGMENT_OPS = (
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
)
NO_OP = len(RAND_AUGMENT_OPS)  # the 17th choice: no operation


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """What the train step applies (static: it shapes the jitted step). Built from a config by
  vidtx.data.reader_config.device_augmentation."""

  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  flip: bool = False
  color: bool = False
  color_drop: bool = False
  rand_augment_layers: int = 0
  rand_augment_magnitude: float = 0.0
  erasing: bool = False
  crop_size: int = 0  # The side of the clips the model sees (the resize's output).
  window_size: int = 0  # S of the window buffer, resized to crop_size; 0: crops, no resize.

  @property
  def fields(self) -> tuple[str, ...]:
    """The parameter fields the reader sends for this augmentation."""
    on = {
      WINDOW: self.window_size > 0,
      FLIP: self.flip,
      COLOR: self.color,
      GRAY: self.color_drop,
      RA_OP: self.rand_augment_layers > 0,
      RA_ARG: self.rand_augment_layers > 0,
      ERASE_BOX: self.erasing,
      ERASE_NOISE: self.erasing,
    }
    return tuple(field for field in PARAM_FIELDS if on[field])


# ---------------------------------------------------------------------------------------------
# The scale-jittered window, resized to the crop.
# ---------------------------------------------------------------------------------------------


def bilinear_taps(output_size: int, buffer_size: int) -> tuple[np.ndarray, ...]:
  """tf.image.resize's bilinear taps (half-pixel centres, no antialiasing) from a window of v
  pixels to output_size pixels, for every v in 0..buffer_size: (lower int32, upper int32,
  fraction float32), each (buffer_size + 1, output_size) (v = 0, a bad record's zeros: as v = 1).

  TensorFlow's kernel: output pixel o samples x = (o + 0.5) * (v / output_size) - 0.5 in
  float32, each operation rounded, from pixels lower = max(floor(x), 0) and upper =
  min(ceil(x), v - 1) with weights 1 - f and f, f = x - floor(x) (the same pixel twice at the
  edges). A table computed here with numpy's float32, because the device would round x
  differently (a fused multiply-add, a division by a constant made a product by its
  reciprocal): 2e-5 of a pixel, up to 7e-3 of a level on noise (tests: 5e-5 with the table).
  """
  sizes = np.maximum(np.arange(buffer_size + 1), 1)[:, None]  # (S + 1, 1)
  scale = sizes.astype(np.float32) / np.float32(output_size)
  x = (np.arange(output_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
  floor = np.floor(x)
  lower = np.maximum(floor, 0).astype(np.int32)
  upper = np.minimum(np.ceil(x).astype(np.int32), sizes - 1).astype(np.int32)
  return lower, upper, (x - floor).astype(np.float32)


def bilinear_matrix(
  valid: jax.Array, taps: tuple[jax.Array, jax.Array, jax.Array], buffer_size: int
) -> jax.Array:
  """float32 (output_size, buffer_size): the bilinear weights (`bilinear_taps`) that resize the
  first `valid` (int32 scalar) of buffer_size pixels to output_size pixels; the pixels from
  `valid` on get weight 0."""
  lower, upper, fraction = (table[valid] for table in taps)  # (output_size,) each
  pixels = jnp.arange(buffer_size)[None, :]  # (1, buffer_size)
  return jnp.where(pixels == lower[:, None], 1.0 - fraction[:, None], 0.0) + jnp.where(
    pixels == upper[:, None], fraction[:, None], 0.0
  )


def resize_windows(clips: jax.Array, windows: jax.Array, crop_size: int) -> jax.Array:
  """float32 (B, T, crop, crop, 3): the top-left [h, w] = windows[b] region of each clip
  (B, T, S, S, 3) resized bilinearly to crop x crop, as tf.image.resize (float32) resizes that
  region alone: out = Wy @ frame @ Wx^T per frame and channel, two matrix products per clip
  (matmul units on TPU / GPU), at full float32 precision."""
  buffer_size = clips.shape[2]
  taps = tuple(jnp.asarray(table) for table in bilinear_taps(crop_size, buffer_size))
  matrix = jax.vmap(bilinear_matrix, in_axes=(0, None, None))
  windows = jnp.clip(windows, 0, buffer_size)
  rows = matrix(windows[:, 0], taps, buffer_size)  # (B, crop, S)
  columns = matrix(windows[:, 1], taps, buffer_size)  # (B, crop, S)
  highest = jax.lax.Precision.HIGHEST
  # (B, crop, S) x (B, T, S, S, 3) -> (B, T, crop, S, 3): the rows.
  clips = jnp.einsum("bys,btsxc->btyxc", rows, clips.astype(jnp.float32), precision=highest)
  # (B, crop, S) x (B, T, crop, S, 3) -> (B, T, crop, crop, 3): the columns.
  return jnp.einsum("bzx,btyxc->btyzc", columns, clips, precision=highest)


# ---------------------------------------------------------------------------------------------
# Normalisation, flip, colour.
# ---------------------------------------------------------------------------------------------


def normalise(pixels: jax.Array, mean, std) -> jax.Array:
  """float32 (pixel / 255 - mean) / std per channel, the arithmetic of sampling.normalise."""
  channels = (1,) * (pixels.ndim - 1) + (3,)  # (3,) -> (1, ..., 1, 3)
  mean = jnp.asarray(mean, jnp.float32).reshape(channels)
  std = jnp.asarray(std, jnp.float32).reshape(channels)
  return (pixels.astype(jnp.float32) / 255.0 - mean) / std


def flip(clip: jax.Array, flipped: jax.Array) -> jax.Array:
  """(T, H, W, 3) mirrored left-right where `flipped`."""
  return jnp.where(flipped > 0, clip[:, :, ::-1], clip)


def _rgb_to_hsv(rgb: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """TensorFlow's AdjustHue / AdjustSaturation kernels' conversion (any value scale)."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  value = jnp.maximum(r, jnp.maximum(g, b))
  spread = value - jnp.minimum(r, jnp.minimum(g, b))
  saturation = jnp.where(value > 0, spread / jnp.where(value > 0, value, 1.0), 0.0)
  norm = 1.0 / (6.0 * jnp.where(spread > 0, spread, 1.0))
  hue = jnp.where(
    r == value,
    norm * (g - b),
    jnp.where(g == value, norm * (b - r) + 2.0 / 6.0, norm * (r - g) + 4.0 / 6.0),
  )
  hue = jnp.where(spread > 0, hue, 0.0)
  hue = jnp.where(hue < 0, hue + 1.0, hue)
  return hue, saturation, value


def _hsv_to_rgb(hue: jax.Array, saturation: jax.Array, value: jax.Array) -> jax.Array:
  chroma = saturation * value
  low = value - chroma
  sector = hue * 6.0
  category = jnp.floor(sector)  # sector >= 0: the kernel's int cast
  x = chroma * (1.0 - jnp.abs(jnp.mod(sector, 2.0) - 1.0))
  zero = jnp.zeros_like(chroma)
  # (r, g, b) before adding `low`, per sector 0..5; anything else (hue 1.0) is black + low.
  table = [
    (chroma, x, zero),
    (x, chroma, zero),
    (zero, chroma, x),
    (zero, x, chroma),
    (x, zero, chroma),
    (chroma, zero, x),
  ]
  channels = []
  for c in range(3):
    out = zero
    for k, rgb in enumerate(table):
      out = jnp.where(category == k, rgb[c], out)
    channels.append(out + low)
  return jnp.stack(channels, axis=-1)


def adjust_saturation(clip: jax.Array, factor: jax.Array) -> jax.Array:
  hue, saturation, value = _rgb_to_hsv(clip)
  return _hsv_to_rgb(hue, jnp.clip(saturation * factor, 0.0, 1.0), value)


def adjust_hue(clip: jax.Array, delta: jax.Array) -> jax.Array:
  hue, saturation, value = _rgb_to_hsv(clip)
  hue = hue + delta
  hue = jnp.where(hue < 0, hue + 1.0, jnp.where(hue >= 1.0, hue - 1.0, hue))
  return _hsv_to_rgb(hue, saturation, value)


def adjust_contrast(clip: jax.Array, factor: jax.Array) -> jax.Array:
  """tf.image.adjust_contrast: around each frame's own per-channel mean."""
  mean = jnp.mean(clip, axis=(-3, -2), keepdims=True)
  return (clip - mean) * factor + mean


def color_jitter(clip: jax.Array, params: jax.Array) -> jax.Array:
  """augment.color_jitter with its drawn `params` (apply, brightness shift in levels,
  saturation, contrast, hue): float32 (T, H, W, 3) in [0, 255]."""
  apply, shift, saturation, contrast_factor, hue = (params[i] for i in range(5))
  jittered = jnp.clip(clip + shift, 0.0, 255.0)
  jittered = adjust_saturation(jittered, saturation)
  jittered = jnp.clip(adjust_contrast(jittered, contrast_factor), 0.0, 255.0)
  jittered = jnp.clip(adjust_hue(jittered, hue), 0.0, 255.0)
  return jnp.where(apply > 0, jittered, clip)


def grayscale(clip: jax.Array, grey: jax.Array) -> jax.Array:
  """tf.image.rgb_to_grayscale, kept as 3 channels, where `grey` (pipeline's colour drop)."""
  luma = clip[..., 0] * 0.2989 + clip[..., 1] * 0.5870 + clip[..., 2] * 0.1140
  return jnp.where(grey > 0, jnp.repeat(luma[..., None], 3, axis=-1), clip)


# ---------------------------------------------------------------------------------------------
# RandAugment: augment.rand_augment's operations over float32 clips of whole numbers in [0, 255].
# ---------------------------------------------------------------------------------------------


def _blend(degenerate: jax.Array, clip: jax.Array, factor: float) -> jax.Array:
  # XLA fuses this into one multiply-add, rounded once where TensorFlow rounds twice: a pixel
  # whose exact value is a whole number may floor one level lower (tests: under 1% of pixels).
  return jnp.floor(jnp.clip(degenerate + factor * (clip - degenerate), 0.0, 255.0))


def _luma(clip: jax.Array) -> jax.Array:
  """(..., 1) PIL's integer grey levels; whole-number sums, exact in float32."""
  weighted = clip[..., 0] * 19595.0 + clip[..., 1] * 38470.0 + clip[..., 2] * 7471.0
  return jnp.floor((weighted + 32768.0) / 65536.0)[..., None]


def auto_contrast(clip: jax.Array) -> jax.Array:
  low = jnp.min(clip, axis=(0, 1, 2), keepdims=True)
  high = jnp.max(clip, axis=(0, 1, 2), keepdims=True)
  stretch = high > low
  low = jnp.where(stretch, low, 0.0)
  levels = jnp.where(stretch, 255.0, 1.0)
  spread = jnp.where(stretch, high - low, 1.0)
  return jnp.floor((clip - low) * levels / spread)


def equalize(clip: jax.Array) -> jax.Array:
  """PIL's ImageOps.equalize per channel, one histogram over the whole clip."""
  # (T, H, W, 3) -> (N, 3); channel c counts into bins [256 c, 256 c + 256).
  bins = clip.astype(jnp.int32).reshape(-1, 3) + jnp.arange(3)[None, :] * 256
  histogram = jnp.bincount(bins.reshape(-1), length=768).reshape(3, 256)
  brightest = 255 - jnp.argmax(histogram[:, ::-1] > 0, axis=1)
  step = (bins.shape[0] - histogram[jnp.arange(3), brightest]) // 255
  safe_step = jnp.maximum(step, 1)[:, None]
  exclusive = jnp.cumsum(histogram, axis=1) - histogram
  lut = (exclusive + safe_step // 2) // safe_step
  lut = jnp.where(step[:, None] > 0, jnp.clip(lut, 0, 255), jnp.arange(256)[None, :])
  return lut.reshape(-1)[bins].reshape(clip.shape).astype(jnp.float32)


def contrast(clip: jax.Array, factor: float) -> jax.Array:
  """PIL's ImageEnhance.Contrast with the clip's mean grey level, rounded half up."""
  luma = _luma(clip).astype(jnp.int32)
  # Exact integer mean (float32 sums would round): floor(total / n + 1/2).
  total, count = jnp.sum(luma), luma.size
  mean = total // count + (2 * (total % count) >= count)
  return _blend(mean.astype(jnp.float32), clip, factor)


def sharpness(clip: jax.Array, factor: float) -> jax.Array:
  """PIL's SMOOTH filter (3x3, centre 5), borders kept, rounded; blended frame by frame."""
  height, width = clip.shape[1], clip.shape[2]
  window = sum(clip[:, i : i + height - 2, j : j + width - 2] for i in range(3) for j in range(3))
  sums = window + 4.0 * clip[:, 1:-1, 1:-1]
  smooth = jnp.floor(sums / 13.0 + 0.5)
  degenerate = clip.at[:, 1:-1, 1:-1].set(smooth)
  return _blend(degenerate, clip, factor)


def _round_half_away(x: jax.Array) -> jax.Array:
  return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)  # std::round, as TF's nearest neighbour


def _project(clip: jax.Array, transform: list) -> jax.Array:
  """ImageProjectiveTransformV3 with NEAREST and a CONSTANT grey fill, affine transforms only:
  output (x, y) takes input (a0 x + a1 y + a2, b0 x + b1 y + b2)."""
  a0, a1, a2, b0, b1, b2 = (jnp.asarray(t, jnp.float32) for t in transform)
  height, width = clip.shape[1], clip.shape[2]
  y = jnp.arange(height, dtype=jnp.float32)[:, None]
  x = jnp.arange(width, dtype=jnp.float32)[None, :]
  # XLA's fused multiply-adds may move a source exactly half-way between two pixels to the
  # other one: tests allow under 1% of pixels.
  source_x = _round_half_away(a0 * x + a1 * y + a2)
  source_y = _round_half_away(b0 * x + b1 * y + b2)
  inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
  rows = jnp.clip(source_y, 0, height - 1).astype(jnp.int32)
  columns = jnp.clip(source_x, 0, width - 1).astype(jnp.int32)
  gathered = clip[:, rows, columns]  # (T, H, W, 3)
  return jnp.where(inside[None, :, :, None], gathered, GREY)


def rotate(clip: jax.Array, degrees: jax.Array) -> jax.Array:
  radians = degrees * jnp.float32(math.pi / 180.0)
  cos, sin = jnp.cos(radians), jnp.sin(radians)
  centre_x = (clip.shape[2] - 1.0) / 2.0
  centre_y = (clip.shape[1] - 1.0) / 2.0
  return _project(
    clip,
    [
      cos,
      -sin,
      centre_x - cos * centre_x + sin * centre_y,
      sin,
      cos,
      centre_y - sin * centre_x - cos * centre_y,
    ],
  )


def cutout(clip: jax.Array, pad_size: int, centre_y: jax.Array, centre_x: jax.Array) -> jax.Array:
  height, width = clip.shape[1], clip.shape[2]
  rows = jnp.arange(height)
  columns = jnp.arange(width)
  rows = (rows >= centre_y - pad_size) & (rows < centre_y + pad_size)
  columns = (columns >= centre_x - pad_size) & (columns < centre_x + pad_size)
  return jnp.where(rows[None, :, None, None] & columns[None, None, :, None], GREY, clip)


def _enhance_factor(level: float) -> float:
  return level / MAX_LEVEL * 1.8 + 0.1


def rand_augment_branches(magnitude: float, size: tuple[int, int]) -> list:
  """fn(clip, arg) per operation, in RAND_AUGMENT_OPS order, then the no-op; `arg` is
  (sign, Cutout's centre row, column). augment.RAND_AUGMENT_OPS' parameters at `magnitude`."""
  level = float(magnitude)
  height, width = size
  fraction = level / MAX_LEVEL
  enhance = _enhance_factor(level)
  bits = min(int(fraction * 4), 8)
  step = 2.0 ** (8 - bits)
  threshold = float(min(int(fraction * 256), 256))
  addition = float(int(fraction * 110))
  pad = int(fraction * CUTOUT_CONST)

  def signed(value: float, arg: jax.Array) -> jax.Array:
    return jnp.float32(value) * arg[0]

  def translate(clip, arg, axis):
    limit = float((width if axis == 2 else height) - 1)
    pixels = jnp.clip(signed(fraction * TRANSLATE_CONST, arg), -limit, limit)
    return _project(clip, [1, 0, pixels, 0, 1, 0] if axis == 2 else [1, 0, 0, 0, 1, pixels])

  return [
    lambda clip, arg: auto_contrast(clip),
    lambda clip, arg: equalize(clip),
    lambda clip, arg: 255.0 - clip,
    lambda clip, arg: rotate(clip, signed(fraction * 30.0, arg)),
    lambda clip, arg: jnp.floor(clip / step) * step,
    lambda clip, arg: jnp.where(clip < threshold, clip, 255.0 - clip),
    lambda clip, arg: _blend(_luma(clip), clip, enhance),
    lambda clip, arg: contrast(clip, enhance),
    lambda clip, arg: _blend(jnp.zeros_like(clip), clip, enhance),
    lambda clip, arg: sharpness(clip, enhance),
    lambda clip, arg: _project(clip, [1, signed(fraction * 0.3, arg), 0, 0, 1, 0]),
    lambda clip, arg: _project(clip, [1, 0, 0, signed(fraction * 0.3, arg), 1, 0]),
    lambda clip, arg: translate(clip, arg, axis=2),
    lambda clip, arg: translate(clip, arg, axis=1),
    lambda clip, arg: cutout(clip, pad, arg[1], arg[2]),
    lambda clip, arg: jnp.where(clip < 128.0, jnp.clip(clip + addition, 0.0, 255.0), clip),
    lambda clip, arg: clip,
  ]


def rand_augment(clip: jax.Array, ops: jax.Array, args: jax.Array, magnitude: float) -> jax.Array:
  """augment.rand_augment with its drawn layers: ops int32 (L,), args float32 (L, 3)."""
  branches = rand_augment_branches(magnitude, clip.shape[1:3])
  clip = jnp.floor(jnp.clip(clip, 0.0, 255.0))
  for layer in range(ops.shape[0]):
    # One switch per layer: only the chosen operation runs (clip by clip, under lax.map).
    clip = jax.lax.switch(ops[layer], branches, clip, args[layer])
  return clip


# ---------------------------------------------------------------------------------------------
# Random erasing, and the whole batch.
# ---------------------------------------------------------------------------------------------


def random_erasing(clip: jax.Array, box: jax.Array, noise: jax.Array) -> jax.Array:
  """Normalised (T, H, W, 3) with the rectangle `box` (top, left, height, width) replaced by
  `noise` (H, W, 3) in every frame."""
  top, left, height, width = (box[i] for i in range(4))
  rows = jnp.arange(clip.shape[1])
  columns = jnp.arange(clip.shape[2])
  rows = (rows >= top) & (rows < top + height)
  columns = (columns >= left) & (columns < left + width)
  inside = rows[None, :, None, None] & columns[None, None, :, None]
  return jnp.where(inside, noise[None], clip)


def augment_batch(batch: dict[str, jax.Array], augmentation: Augmentation) -> dict[str, jax.Array]:
  """`batch` with uint8 'inputs' augmented with its parameter fields and normalised to float32
  (B, T, crop, crop, 3); the parameter fields are taken off. 'inputs' are (B, T, crop, crop, 3)
  crops, or with `augmentation.window_size` = S the (B, T, S, S, 3) window buffers, resized
  first (`resize_windows`)."""
  missing = [field for field in augmentation.fields if field not in batch]
  if missing:
    raise ValueError(f"augment_batch: the batch has no {missing} for {augmentation}.")
  params = {field: batch[field] for field in augmentation.fields}
  out = {k: v for k, v in batch.items() if k not in PARAM_FIELDS}
  a = augmentation
  clips = batch["inputs"].astype(jnp.float32)
  if a.window_size:
    side = clips.shape[2:4]
    if side != (a.window_size, a.window_size) or a.crop_size < 1:
      raise ValueError(
        f"augment_batch: inputs of {side[0]} x {side[1]} pixels for a window buffer of "
        f"{a.window_size} and a crop of {a.crop_size} ({augmentation})."
      )
    clips = resize_windows(clips, params[WINDOW], a.crop_size)

  def pixels(clip, p):  # float32 (T, crop, crop, 3) in [0, 255]
    if a.flip:
      clip = flip(clip, p[FLIP])
    if a.color:
      clip = color_jitter(clip, p[COLOR])
    if a.color_drop:
      clip = grayscale(clip, p[GRAY])
    return clip

  clips = jax.vmap(pixels)(clips, params)
  if a.rand_augment_layers:
    # lax.map, not vmap: a batched switch would run all 17 operations on every clip.
    clips = jax.lax.map(
      lambda xs: rand_augment(xs[0], xs[1], xs[2], a.rand_augment_magnitude),
      (clips, params[RA_OP], params[RA_ARG]),
    )
  clips = normalise(clips, a.mean, a.std)
  if a.erasing:
    clips = jax.vmap(random_erasing)(clips, params[ERASE_BOX], params[ERASE_NOISE])
  out["inputs"] = clips
  return out


def random_params(
  key: jax.Array, augmentation: Augmentation, batch_size: int, crop_size: int
) -> dict[str, jax.Array]:
  """Parameter fields for a batch of `batch_size` clips, every augmentation applied (windows of
  random sizes up to the buffer's, colour jitter, an erased quarter of the frame; flips, grey
  and RandAugment's operations at random): what the benchmark times, shaped and typed as the
  reader sends them."""
  keys = iter(jax.random.split(key, 16))
  b, s, layers = batch_size, crop_size, augmentation.rand_augment_layers
  buffer = augmentation.window_size

  def uniform(low: float, high: float) -> jax.Array:
    return jax.random.uniform(next(keys), (b,), jnp.float32, low, high)

  every = {
    # [h, w] between three quarters of the crop (scale jitter's upscaled windows) and S.
    WINDOW: lambda: jax.random.randint(next(keys), (b, 2), min(buffer, s * 3 // 4), buffer + 1),
    FLIP: lambda: jax.random.bernoulli(next(keys), 0.5, (b,)).astype(jnp.int32),
    COLOR: lambda: jnp.stack(
      [jnp.ones(b), uniform(-32, 32), uniform(0.6, 1.4), uniform(0.6, 1.4), uniform(-0.2, 0.2)],
      axis=1,
    ),
    GRAY: lambda: jax.random.bernoulli(next(keys), 0.5, (b,)).astype(jnp.int32),
    RA_OP: lambda: jax.random.randint(next(keys), (b, layers), 0, NO_OP + 1),
    RA_ARG: lambda: jnp.concatenate(
      [
        jnp.where(jax.random.bernoulli(next(keys), 0.5, (b, layers, 1)), 1.0, -1.0),
        jax.random.randint(next(keys), (b, layers, 2), 0, s).astype(jnp.float32),
      ],
      axis=2,
    ),
    ERASE_BOX: lambda: jnp.tile(jnp.array([s // 4, s // 4, s // 2, s // 2], jnp.int32), (b, 1)),
    ERASE_NOISE: lambda: jax.random.normal(next(keys), (b, s, s, 3)),
  }
  return {field: every[field]() for field in augmentation.fields}
