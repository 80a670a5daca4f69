"""A converted model as a TensorFlow SavedModel (python -m vidtx.export --format=savedmodel).

    OUT/saved_model.pb, OUT/variables/   the SavedModel: the parameters as tf.Variables and two
                                         inference signatures (below)
    OUT/vidtx_preprocessing.json         how a video becomes the model's input (PREPROCESSING_FILE)

Signatures (B: any batch size, or `batch_size` when given; T = num_frames, S = crop_size):
- serving_default(video: float32[B, T, S, S, 3]) -> {'logits': float32[B, num_classes]}: the
  model-ready clip, already normalised: (pixel / 255 - mean) / std per channel, as the reader
  and vidtx.predict make it.
- serving_frames(frames: uint8[B, T, S, S, 3]) -> {'logits': ...}: sampled, resized and cropped
  RGB frames; the normalisation runs in the graph (the same float32 arithmetic as the reader).
Sampling frames from a video, resizing the short side and cropping stay outside the graph: the
JSON file says how (num_frames, stride, min_resize, crop_size, views and their aggregation).
Both check their input's shape in the graph first: another frame count or size fails with one
InvalidArgumentError naming the expected shape (checked_shape), not in the compiled model.

How: `jax.experimental.jax2tf.convert`. In jax 0.10 jax2tf only has native serialization (the
non-native, TF-op-by-op mode is gone and the `native_serialization` argument is deprecated): the
model is exported with `jax.export` and embedded as StableHLO in one XlaCallModule op, lowered
for CPU, CUDA and TPU (PLATFORMS), with a symbolic batch dimension. Loading it needs TensorFlow
with XlaCallModule support (2.15 or newer; tested with 2.21), not JAX. The graph has no
gradient (inference only). The model's attention core is forced to XLA
(model.attention_implementation='xla'): no cuDNN kernel is baked into the graph, whatever
machine exports it. Its exact GELU is traced with erfc (vidtx.models.layers.gelu_with_erfc):
jax serializes erf as a composite op that TensorFlow 2.21 cannot deserialize.
"""

import json
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import numpy as np

from vidtx import models
from vidtx.checkpoints import store
from vidtx.errors import UserError
from vidtx.models import layers

PREPROCESSING_FILE = "vidtx_preprocessing.json"
# Where the exported graph runs: one StableHLO lowering per platform, chosen when called.
PLATFORMS = ("cpu", "cuda", "tpu")
SIGNATURES = ("serving_default", "serving_frames")


def inference_model(converted: store.Converted) -> nn.Module:
  """The converted model with its attention core on XLA (no cuDNN custom calls)."""
  config = dict(converted.model_config, attention_implementation="xla")
  return models.build(converted.model_name, config, converted.num_classes)


def shape_text(shape: list[int | None]) -> str:
  """'[B, 8, 224, 224, 3]': the signatures' input shape as the errors and the JSON file say it."""
  return "[" + ", ".join("B" if d is None else str(d) for d in shape) + "]"


def checked_shape(x: Any, shape: list[int | None], signature: str, name: str) -> Any:
  """`x`, after a check in the graph that its shape is `shape` (None: any batch size >= 1).

  A loaded signature does not enforce its input spec: a clip of another frame count or size
  would reach the embedded XLA module and fail there with a long compiler dump. The check fails
  first, with an InvalidArgumentError naming the expected shape. Two checks: the assertion
  (the readable message) is folded away by TensorFlow's optimiser when the spec is fully static
  (a fixed batch size); tf.ensure_shape then still refuses, naming the expected shape too.
  """
  import tensorflow as tf

  rank = len(shape)
  got = tf.shape(x)
  padded = tf.concat([got, tf.ones([rank], tf.int32)], 0)[:rank]  # Any rank compares safely.
  wanted = tf.constant([1 if d is None else d for d in shape], tf.int32)
  fixed = tf.constant([d is not None for d in shape])
  ok = tf.logical_and(
    tf.equal(tf.size(got), rank),
    tf.reduce_all(tf.logical_or(tf.equal(padded, wanted), tf.logical_not(fixed))),
  )
  if shape[0] is None:
    ok = tf.logical_and(ok, padded[0] >= 1)  # jax's shape polymorphism needs B >= 1.
  message = (
    f"vidtx SavedModel {signature}: {name} must have shape {shape_text(shape)}"
    + (" (B >= 1 clips" if shape[0] is None else " (clips")
    + f" of {shape[1]} frames of {shape[2]}x{shape[3]} RGB, as {PREPROCESSING_FILE} says);"
    " got shape"
  )
  with tf.control_dependencies([tf.debugging.Assert(ok, [message, got], summarize=rank + 1)]):
    x = tf.identity(x)
  return tf.ensure_shape(x, shape)


def write(converted: store.Converted, out_dir: str, *, batch_size: int | None = None) -> None:
  """Writes `converted` as a SavedModel and its preprocessing into `out_dir` (existing, empty).

  batch_size: None for any batch size (a symbolic dimension), else that fixed size.
  """
  import tensorflow as tf  # Only here: the rest of vidtx.export must not pay for it.
  from jax.experimental import jax2tf

  if os.listdir(out_dir):
    raise UserError(f"{out_dir}: expected an empty directory for the SavedModel.")
  if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
    raise UserError(f"batch_size={batch_size!r}: expected a positive integer or None.")
  p = converted.preprocessing
  num_frames, crop = int(p["num_frames"]), int(p["crop_size"])
  model = inference_model(converted)
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), flax.core.unfreeze(converted.params))
  store.check_params(model, params, p, where=out_dir)

  def logits(params: Any, video: jax.Array) -> jax.Array:
    return model.apply({"params": params}, video, train=False)[0]

  polymorphic = None if batch_size is not None else [None, "(b, ...)"]
  logits_tf = jax2tf.convert(
    logits,
    polymorphic_shapes=polymorphic,
    with_gradient=False,
    native_serialization_platforms=PLATFORMS,
  )
  module = tf.Module()
  module.params = tf.nest.map_structure(lambda x: tf.Variable(x, trainable=False), params)
  shape = [batch_size, num_frames, crop, crop, 3]
  mean = tf.constant(p["mean"], tf.float32)
  std = tf.constant(p["std"], tf.float32)

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="video")], autograph=False)
  def serving_default(video: tf.Tensor) -> dict[str, tf.Tensor]:
    video = checked_shape(video, shape, "serving_default", "video")
    return {"logits": logits_tf(module.params, video)}

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8, name="frames")], autograph=False)
  def serving_frames(frames: tf.Tensor) -> dict[str, tf.Tensor]:
    frames = checked_shape(frames, shape, "serving_frames", "frames")
    video = (tf.cast(frames, tf.float32) / 255.0 - mean) / std  # As vidtx.data.sampling.
    return {"logits": logits_tf(module.params, video)}

  module.serving_default = serving_default
  module.serving_frames = serving_frames
  # The signatures trace the model here: with erfc in its GELU, which TensorFlow can read.
  with layers.gelu_with_erfc():
    tf.saved_model.save(
      module,
      out_dir,
      signatures={"serving_default": serving_default, "serving_frames": serving_frames},
    )
  info = dict(
    model_name=converted.model_name,
    num_classes=int(converted.num_classes),
    labels=list(converted.labels) if converted.labels is not None else None,
    preprocessing=dict(p),
    signatures={
      "serving_default": f"video: float32 {shape_text(shape)}"
      " normalised as (pixel / 255 - mean) / std -> logits",
      "serving_frames": f"frames: uint8 {shape_text(shape)} RGB, resized and cropped -> logits",
    },
    batch_size=batch_size,
    platforms=list(PLATFORMS),
    source=dict(converted.source),
  )
  with open(os.path.join(out_dir, PREPROCESSING_FILE), "w") as f:
    json.dump(info, f, indent=2, default=str)
