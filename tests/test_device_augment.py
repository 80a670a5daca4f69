"""vidtx.device_augment against its reference, vidtx.data.augment's TensorFlow ops, on the same
pixels and the same drawn parameters; the reader's uint8 batches through the train step equal
the former host augmentation.

Tolerances (measured on CPU, jitted): colour jitter within 1e-3 of a level (HSV conversions in
another order; measured 3e-4); normalisation within 1e-6 (measured 5e-7); grey, flip, random
erasing and the RandAugment operations without products exact; Color, Contrast, Sharpness and
the geometric operations differ on under 1% of pixels (XLA fuses a * b + c into one
multiply-add: a blend that lands exactly on a whole level floors one level lower, a source
exactly half-way between two pixels takes the other one). The whole chain on a reader batch:
97% of values within 1e-3, 99% within one level.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
from shared import model_inputs, reader_configs

from vidtx import device_augment, models, sharding
from vidtx import train_state as state_lib
from vidtx.data import augment, dmvr, pipeline, reader_config, sampling

jax.config.update("jax_numpy_rank_promotion", "raise")

T, H, W = 3, 24, 32
BLENDS = ("Color", "Contrast", "Sharpness")
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def seed_of(i: int) -> tf.Tensor:
  return tf.constant([i, 7], tf.int64)


def clip_of(seed: int = 0) -> np.ndarray:
  """float32 whole numbers: noise in frame 0, smooth ramps (ties of the blends) in the others."""
  clip = np.random.default_rng(seed).integers(0, 256, (T, H, W, 3)).astype(np.float32)
  y, x = np.mgrid[:H, :W]
  clip[1:] = np.stack([y * 10 % 256, x * 8 % 256, (x + y) * 5 % 256], -1)
  return clip


def test_color_jitter_grey_flip_normalise_match_tensorflow():
  clip = clip_of()
  jitter = jax.jit(device_augment.color_jitter)
  for i in range(20):
    draws = augment.color_jitter_draws(probability=0.7, seed=seed_of(i))
    expected = augment.color_jitter(clip, probability=0.7, seed=seed_of(i)).numpy()
    np.testing.assert_allclose(jitter(clip, draws.numpy()), expected, atol=1e-3)
  grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(clip)).numpy()
  np.testing.assert_array_equal(device_augment.grayscale(clip, jnp.int32(1)), grey)
  np.testing.assert_array_equal(device_augment.grayscale(clip, jnp.int32(0)), clip)
  flipped, _ = augment.horizontal_flip(clip, probability=1.0, seed=seed_of(0))
  np.testing.assert_array_equal(device_augment.flip(clip, jnp.int32(1)), flipped)
  mean, std = reader_config.NORMALIZATIONS["imagenet"]
  np.testing.assert_allclose(
    jax.jit(lambda c: device_augment.normalise(c.astype(jnp.uint8), mean, std))(clip),
    sampling.normalise(clip, mean, std),
    atol=1e-6,
  )


@pytest.mark.parametrize("level", [9.0, 15.0, 20.0])
def test_every_rand_augment_op_matches_tensorflow(level):
  clip = clip_of()
  branches = device_augment.rand_augment_branches(level, (H, W))
  assert len(branches) == len(augment.RAND_AUGMENT_OPS) + 1
  assert device_augment.RAND_AUGMENT_OPS == tuple(augment.RAND_AUGMENT_OPS)
  for i in range(3):
    layer_seed = tf.random.experimental.stateless_split(seed_of(i), 1)[0]
    op_seed = tf.random.experimental.stateless_split(layer_seed, 2)[1]
    _, args = augment.rand_augment_draws(num_layers=1, height=H, width=W, seed=seed_of(i))
    for k, (name, op) in enumerate(augment.RAND_AUGMENT_OPS.items()):
      expected = op(tf.constant(clip), level, op_seed).numpy()
      got = np.asarray(jax.jit(branches[k])(clip, args.numpy()[0]))
      differ = got != expected
      if name in BLENDS:
        assert differ.mean() < 0.01 and np.abs(got - expected).max() <= 1, name
      elif name in GEOMETRIC:
        assert differ.mean() < 0.01, name
      else:
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_rand_augment_layers_and_random_erasing_match_tensorflow():
  clip = clip_of(1)
  rand_augment = jax.jit(device_augment.rand_augment, static_argnums=3)
  chosen = set()
  for i in range(30):
    ops, args = augment.rand_augment_draws(num_layers=2, height=H, width=W, seed=seed_of(i))
    chosen.update(ops.numpy().tolist())
    expected = augment.rand_augment(clip, num_layers=2, magnitude=15.0, seed=seed_of(i)).numpy()
    got = np.asarray(rand_augment(clip, ops.numpy(), args.numpy(), 15.0))
    assert (got != expected).mean() < 0.02, ops.numpy()
  assert len(chosen) > 12  # the draws reach most operations
  normalised = np.random.default_rng(0).normal(size=(T, H, W, 3)).astype(np.float32)
  erased = 0
  for i in range(12):
    box, noise = augment.random_erasing_draws(height=H, width=W, probability=0.7, seed=seed_of(i))
    expected = augment.random_erasing(normalised, probability=0.7, seed=seed_of(i)).numpy()
    got = device_augment.random_erasing(normalised, box.numpy(), noise.numpy())
    np.testing.assert_array_equal(got, expected)
    erased += int(box[2] * box[3] > 0)
  assert 0 < erased < 12


@pytest.mark.parametrize("crop", [16, 24])
def test_window_resize_matches_tensorflow(crop):
  """resize_windows of the [h, w] corner of an S x S buffer = tf.image.resize (bilinear, float32)
  of that window alone: windows smaller (upscaled) and larger (downscaled) than the crop, h != w,
  h or w equal to the crop, the whole buffer; whatever lies outside the window is not read."""
  side = 31
  windows = [(31, 31), (24, 24), (crop, crop), (crop, 29), (11, 20), (27, 13), (16, 9), (1, 2)]
  rng = np.random.default_rng(crop)
  clips = rng.integers(0, 256, (len(windows), 2, side, side, 3)).astype(np.float32)
  resize = jax.jit(device_augment.resize_windows, static_argnums=2)
  got = np.asarray(resize(clips.astype(np.uint8), np.array(windows, np.int32), crop))
  assert got.shape == (len(windows), 2, crop, crop, 3) and got.dtype == np.float32
  for i, (h, w) in enumerate(windows):
    expected = tf.image.resize(clips[i, :, :h, :w], [crop, crop], method="bilinear").numpy()
    # Measured: within 5e-5 of a level (the products' rounding); noise pixels 255 levels apart.
    np.testing.assert_allclose(got[i], expected, atol=1e-3, err_msg=f"window {h} x {w}")
  # A window of the crop's size is the window itself, exactly.
  np.testing.assert_array_equal(got[2], clips[2, :, :crop, :crop])


def test_the_resize_comes_first_and_the_window_field_goes():
  """augment_batch resizes the window buffers before the pixel operations (a flip of the
  resized window) and takes the window field off; a buffer of the wrong size is refused."""
  augmentation = device_augment.Augmentation(
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), flip=True, crop_size=8, window_size=12
  )
  assert augmentation.fields == (device_augment.WINDOW, device_augment.FLIP)
  rng = np.random.default_rng(1)
  batch = {
    "inputs": rng.integers(0, 256, (2, 3, 12, 12, 3), np.uint8),
    "label": np.arange(2),
    device_augment.WINDOW: np.array([[10, 7], [12, 12]], np.int32),
    device_augment.FLIP: np.array([1, 0], np.int32),
  }
  got = jax.jit(device_augment.augment_batch, static_argnums=1)(batch, augmentation)
  assert set(got) == {"inputs", "label"} and got["inputs"].shape == (2, 3, 8, 8, 3)
  for i, flipped in enumerate((1, 0)):
    h, w = batch[device_augment.WINDOW][i]
    window = tf.cast(batch["inputs"][i, :, :h, :w], tf.float32)
    resized = tf.image.resize(window, [8, 8], method="bilinear").numpy()
    resized = resized[:, :, ::-1] if flipped else resized
    np.testing.assert_allclose(got["inputs"][i], (resized / 255 - 0.5) / 0.5, atol=1e-5)
  with pytest.raises(ValueError, match="inputs of 8 x 8 pixels for a window buffer of 12"):
    device_augment.augment_batch({**batch, "inputs": batch["inputs"][:, :, :8, :8]}, augmentation)


# ---------------------------------------------------------------------------------------------
# The reader's uint8 batch through the device augmentation = the former host augmentation.
# ---------------------------------------------------------------------------------------------


def host_reference(dc, frames: np.ndarray, label_seed: tf.Tensor) -> np.ndarray:
  """The augmentation the reader did on the host before it moved to the accelerator, on the
  same uint8 crop and from the same seed streams (vidtx.data.pipeline's former _train_clip)."""
  dc = reader_config.as_dataset_config(dc)
  aug = dataclasses.asdict(dc.augmentation)
  seeds = tf.random.experimental.stateless_split(label_seed, 7)
  x = tf.cast(frames, tf.float32)
  x, _ = augment.horizontal_flip(x, probability=0.5, seed=seeds[2])
  x = augment.color_jitter(x, probability=float(aug["prob_color_augment"]), seed=seeds[3])
  grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x))
  drop = tf.random.stateless_uniform([], seeds[4]) < float(aug["prob_color_drop"])
  x = tf.where(drop, grey, x)
  x = augment.rand_augment(
    x,
    num_layers=int(aug["rand_augment_num_layers"]),
    magnitude=float(aug["rand_augment_magnitude"]),
    seed=seeds[5],
  )
  x = sampling.normalise(x, *dc.normalisation)
  x = augment.random_erasing(x, probability=float(aug["random_erasing_probability"]), seed=seeds[6])
  return x.numpy()


def test_reader_batches_augmented_on_the_device_equal_the_host_augmentation(tmp_path):
  rng = np.random.default_rng(0)
  examples = [
    dmvr.make_sequence_example(rng.integers(0, 256, (6, 20, 24, 3), np.uint8), i % 4)
    for i in range(8)
  ]
  dmvr.write_shards(examples, str(tmp_path / "train.tfrecord"), 1)
  dc = reader_configs(
    str(tmp_path),
    random_flip=True,
    normalization="imagenet",
    augmentation_params=dict(
      do_color_augment=True,
      prob_color_drop=0.3,
      do_rand_augment=True,
      random_erasing_probability=0.5,
    ),
  )
  augmentation = reader_config.device_augmentation(dc)
  # Everything but the window (no scale jitter: the host sends crops).
  assert augmentation.fields == device_augment.PARAM_FIELDS[1:]
  batch = next(pipeline.build_train_dataset(dc, batch_size=8, seed=3).as_numpy_iterator())
  assert batch["inputs"].dtype == np.uint8 and batch["inputs"].shape == (8, 4, 16, 16, 3)
  device = {k: batch[k] for k in ("inputs", "label", *augmentation.fields)}
  got = jax.jit(device_augment.augment_batch, static_argnums=1)(device, augmentation)
  assert set(got) == {"inputs", "label"} and got["inputs"].dtype == jnp.float32
  level = 1.0 / (255 * min(reader_config.NORMALIZATIONS["imagenet"][1]))  # one level, normalised
  for i in range(8):
    # The element's seed, as build_train_dataset folds it: (seed, process) -> epoch -> index.
    element_seed = tf.constant([3, 0], tf.int64)
    for value in (batch["epoch"][i], batch["index"][i]):
      element_seed = tf.random.experimental.stateless_fold_in(element_seed, value)
    expected = host_reference(dc, batch["inputs"][i], element_seed)
    difference = np.abs(np.asarray(got["inputs"][i]) - expected)
    # Colour jitter's 1e-4 move a pixel across a whole level, which RandAugment floors: one
    # level on a few pixels; more where a geometric or blend tie differs (module docstring).
    assert (difference > 1e-3).mean() < 0.03 and (difference > 1.01 * level).mean() < 0.01, i
  # Every augmentation took effect somewhere in the batch.
  for field in (device_augment.FLIP, device_augment.GRAY):
    assert 0 < batch[field].sum() < 8, field
  assert (batch[device_augment.ERASE_BOX][:, 2] > 0).any()


def test_jittered_windows_resized_on_the_device_equal_the_host_resize(tmp_path, monkeypatch):
  """Scale jitter, nothing else: the reader's window buffers resized on the device = the former
  reader's host-resized crops (decode_window(..., (crop, crop)), rounded to uint8) within half
  a level. Frames stored at min_resize give windows smaller and larger than the crop; frames
  stored twice as large give half-size decodes that fit the buffer, or windows too large for
  it, which the host resizes as before (the same bytes)."""
  rng = np.random.default_rng(0)
  sizes = [(20, 26)] * 6 + [(40, 52)] * 2  # min_resize 20; two stored twice as large
  examples = [
    dmvr.make_sequence_example(rng.integers(0, 256, (6, *size, 3), np.uint8), 0, video_id=f"v{i}")
    for i, size in enumerate(sizes)
  ]
  dmvr.write_shards(examples, str(tmp_path / "train.tfrecord"), 1)
  jitter = dict(do_jitter_scale=True, scale_min_factor=0.9, scale_max_factor=1.1)
  dc = reader_config.as_dataset_config(
    reader_configs(str(tmp_path), min_resize=20, crop_size=16, augmentation_params=jitter)
  )
  side = dc.window_size
  assert side == 19  # floor(16 * 20 / (18 - 0.5)) + 1
  new = next(pipeline.build_train_dataset(dc, batch_size=8, seed=5).as_numpy_iterator())
  assert new["inputs"].shape == (8, 4, side, side, 3)
  with monkeypatch.context() as patch:  # The former reader: no window buffer, host resize.
    patch.setattr(reader_config.DatasetConfig, "window_size", property(lambda self: 0))
    old = next(pipeline.build_train_dataset(dc, batch_size=8, seed=5).as_numpy_iterator())
    old_inputs = model_inputs(old, dc)
  assert old["inputs"].shape == (8, 4, 16, 16, 3)
  np.testing.assert_array_equal(new["video_id"], old["video_id"])
  new_inputs = model_inputs(new, dc)
  level = 1.0 / (255 * min(dc.std))  # one level, normalised
  np.testing.assert_allclose(new_inputs, old_inputs, atol=(0.5 + 1e-3) * level, rtol=0)
  windows = new[device_augment.WINDOW]
  large = np.array([int(v[1:]) >= 6 for v in new["video_id"].astype(str)])
  resized = (windows < 16).any(axis=1) | (windows > 16).any(axis=1)
  assert (windows[~large] < 16).any() and (windows[~large] > 16).any()  # up and down on device
  assert (windows <= side).all() and resized.sum() >= 5
  # A window too large for the buffer is resized on the host: the old bytes, [crop, crop].
  host = large & (windows == 16).all(axis=1)
  assert host.any() and (new["inputs"][host][:, :, 16:] == 0).all()
  np.testing.assert_array_equal(new["inputs"][host][:, :, :16, :16], old["inputs"][host])


def test_train_step_augments_uint8_batches_on_the_device():
  """make_train_step(augmentation=...) on uint8 clips and their parameters = the plain step on
  the clips augment_batch makes of them."""
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  model = models.build(
    "vivit",
    dict(variant="Ti/8x2", hidden_size=16, num_heads=2, mlp_dim=32, num_layers=1),
    3,
  )
  tx = optax.sgd(0.5)
  augmentation = device_augment.Augmentation(
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), flip=True, color=True
  )
  rng = np.random.default_rng(0)
  batch = {
    "inputs": rng.integers(0, 256, (4, 4, 16, 16, 3), np.uint8),
    "label": np.arange(4) % 3,
    device_augment.FLIP: np.array([0, 1, 0, 1], np.int32),
    device_augment.COLOR: np.array([[1, 10, 1.2, 0.8, 0.1]] * 4, np.float32),
  }
  augmented = jax.jit(device_augment.augment_batch, static_argnums=1)(batch, augmentation)
  metrics = {}
  for name, aug, data in (("device", augmentation, batch), ("plain", None, augmented)):
    state, abstract = state_lib.create_train_state(
      model, tx, (4, 4, 16, 16, 3), mesh, jax.random.key(0)
    )
    step = state_lib.make_train_step(
      model,
      tx,
      optax.constant_schedule(0.5),
      abstract,
      mesh,
      num_classes=3,
      grad_accum_steps=2,
      augmentation=aug,
    )
    _, metrics[name] = step(state, data)
  state, _ = state_lib.create_train_state(model, tx, (4, 4, 16, 16, 3), mesh, jax.random.key(0))
  with pytest.raises(ValueError, match="uint8 inputs"):  # the plain step on the reader's pixels
    step(state, batch)
  np.testing.assert_allclose(metrics["device"]["loss"], metrics["plain"]["loss"], rtol=1e-6)
  np.testing.assert_allclose(
    metrics["device"]["grad_norm"], metrics["plain"]["grad_norm"], rtol=1e-5
  )
