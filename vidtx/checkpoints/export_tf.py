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

How: `jax.experimental.jax2tf.convert`. In jax 0.10 jax2tf only has native serialization (the
non-native, TF-op-by-op mode is gone and the `native_serialization` argument is deprecated): the
model is exported with `jax.export` and embedded as StableHLO in one XlaCallModule op, lowered
for CPU, CUDA and TPU (PLATFORMS), with a symbolic batch dimension. Loading it needs TensorFlow
with XlaCallModule support (2.15 or newer; tested with 2.21), not JAX. The graph has no
gradient (inference only). The model's attention core is forced to XLA
(model.attention_implementation='xla'): no cuDNN kernel is baked into the graph, whatever
machine exports it. Its exact GELU is traced with erfc (vidtx.models.common.gelu_with_erfc):
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
from vidtx.models import common

PREPROCESSING_FILE = "vidtx_preprocessing.json"
# Where the exported graph runs: one StableHLO lowering per platform, chosen when called.
PLATFORMS = ("cpu", "cuda", "tpu")
SIGNATURES = ("serving_default", "serving_frames")


def inference_model(converted: store.Converted) -> nn.Module:
  """The converted model with its attention core on XLA (no cuDNN custom calls)."""
  config = dict(converted.model_config, attention_implementation="xla")
  return models.build(converted.model_name, config, converted.num_classes)


def write(converted: store.Converted, out_dir: str, *, batch_size: int | None = None) -> None:
  """Writes `converted` as a SavedModel and its preprocessing into `out_dir` (existing, empty).

  batch_size: None for any batch size (a symbolic dimension), else that fixed size.
  """
  import tensorflow as tf  # Only here: the rest of vidtx.export must not pay for it.
  from jax.experimental import jax2tf

  if os.listdir(out_dir):
    raise ValueError(f"{out_dir}: expected an empty directory for the SavedModel.")
  if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
    raise ValueError(f"batch_size={batch_size!r}: expected a positive integer or None.")
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
    return {"logits": logits_tf(module.params, video)}

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8, name="frames")], autograph=False)
  def serving_frames(frames: tf.Tensor) -> dict[str, tf.Tensor]:
    video = (tf.cast(frames, tf.float32) / 255.0 - mean) / std  # As vidtx.data.sampling.
    return {"logits": logits_tf(module.params, video)}

  module.serving_default = serving_default
  module.serving_frames = serving_frames
  # The signatures trace the model here: with erfc in its GELU, which TensorFlow can read.
  with common.gelu_with_erfc():
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
      "serving_default": f"video: float32 [{batch_size or 'B'}, {num_frames}, {crop}, {crop}, 3]"
      " normalised as (pixel / 255 - mean) / std -> logits",
      "serving_frames": f"frames: uint8 [{batch_size or 'B'}, {num_frames}, {crop}, {crop}, 3]"
      " RGB, resized and cropped -> logits",
    },
    batch_size=batch_size,
    platforms=list(PLATFORMS),
    source=dict(converted.source),
  )
  with open(os.path.join(out_dir, PREPROCESSING_FILE), "w") as f:
    json.dump(info, f, indent=2, default=str)
