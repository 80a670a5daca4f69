"""A vidtx model -> a Hugging Face `save_pretrained` folder (the inverse of video.from_hf_*).

    write(converted, out_dir)   # out_dir exists and is empty

writes config.json, model.safetensors (names and layouts as the hub files of
TimesformerForVideoClassification / VivitForVideoClassification) and preprocessor_config.json.
numpy only: no PyTorch at write time.

Supported (where Hugging Face computes the same logits as vidtx):
- TimeSformer 'divided' (HF 'divided_space_time') and 'joint' ('joint_space_time'); 'space'
  ('space_only') only for 1-frame models: on several frames HF classifies every frame on its own
  while vidtx averages the frames' tokens first. model.positional_embedding 'space' / 'none'
  are written as zero time (and spatial) embeddings, which compute the same.
- ViViT Model 1 ('spatio_temporal').
Always with model.classifier='token'. Everything else raises ValueError.

The tensors come from inverting vidtx's own reader: the HF tensors of the model's shapes are
filled with their element indices and read with video.from_hf_timesformer / from_hf_vivit; each
vidtx parameter element then says which HF element it was read from, and the vidtx values are
put back there. So the layouts (transposes, head splits, the fused qkv) are the reader's, and a
name the reader does not read, or an element it reads twice or never, is an error here.

HF's stochastic depth (TimesformerConfig.drop_path_rate) is typed int in transformers 5.23 and
is left at its default 0; the dropout rates are written. HF's image processor has no field for
frame sampling (stride, clips, crops, aggregation): the whole vidtx preprocessing is written as
the extra entry `vidtx_preprocessing` of preprocessor_config.json, which transformers keeps as
an attribute of the processor it loads.

HF's processor resizes with antialiasing, vidtx without (bilinear, as tf.image.resize), so on
downscaled frames the two differ (docs/export.md gives the measured logits). `prepare_frames`
prepares frames exactly as vidtx evaluates them, in numpy: for PyTorch users. This module
imports only numpy at load time (jax and flax when a model is written), so that function needs
neither TensorFlow nor JAX.
"""

import json
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from vidtx.errors import UserError

if TYPE_CHECKING:
  from vidtx.checkpoints.store import Converted

# vidtx TimeSformer attention -> HF attention_type (the inverse of video.TIMESFORMER_ATTENTIONS,
# spelt out here so that this module imports no JAX; a test checks they agree).
HF_ATTENTION_TYPES = {
  "divided": "divided_space_time",
  "joint": "joint_space_time",
  "space": "space_only",
}
SUPPORTED = (
  "TimeSformer attention 'divided' or 'joint' ('space' on 1 frame) and ViViT Model 1 "
  "'spatio_temporal', with classifier 'token'"
)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
RESAMPLE_BILINEAR = 2  # PIL.Image.BILINEAR, HF's `resample` for these models.


def write(converted: "Converted", out_dir: str) -> None:
  """Writes `converted` as a Hugging Face folder into the existing, empty `out_dir`."""
  config, tensors = hf_config_and_tensors(converted)
  from safetensors.numpy import save_file

  save_file(tensors, os.path.join(out_dir, WEIGHTS_FILE), metadata={"format": "pt"})
  _write_json(os.path.join(out_dir, CONFIG_FILE), config)
  _write_json(os.path.join(out_dir, PREPROCESSOR_FILE), preprocessor_config(converted))


def hf_config_and_tensors(converted: "Converted") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """(config.json as a dict, {HF name: array}) of `converted`; ValueError where HF cannot."""
  import flax

  from vidtx import models
  from vidtx.checkpoints import scan, video

  name = converted.model_name
  if name not in ("timesformer", "vivit"):
    raise UserError(f"model {name!r}: Hugging Face has no equivalent; export supports {SUPPORTED}.")
  config = models.MODELS[name].make_config(converted.model_config)
  _check_supported(name, config, int(converted.preprocessing["num_frames"]))
  params = scan.unstack_layers(converted.params)  # model.scan_layers: per-layer names.
  params = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  params = {k: np.asarray(v, np.float32) for k, v in params.items()}
  if "head/kernel" not in params:
    raise UserError(f"{name}: no classification head (params/head); HF's classifier needs one.")
  num_classes = int(params["head/kernel"].shape[1])
  if num_classes != converted.num_classes:
    raise UserError(
      f"{name}: a head of {num_classes} classes but num_classes is {converted.num_classes}."
    )
  if name == "timesformer":
    hf_config, shapes, params = _timesformer(converted, config, params)
    read = video.from_hf_timesformer
  else:
    hf_config, shapes = _vivit(converted, config, params)
    read = video.from_hf_vivit
  hf_config.update(_common_config(converted, config, num_classes))
  return hf_config, _invert_reader(read, hf_config, shapes, params)


def _check_supported(name: str, config: Any, num_frames: int) -> None:
  """Raises ValueError (one line) for what HF's TimeSformer / ViViT cannot compute."""
  if config.classifier != "token":
    raise UserError(
      f"{name} model.classifier={config.classifier!r}: Hugging Face classifies the class "
      f"token only; export supports {SUPPORTED}."
    )
  attention = config.attention
  if name == "vivit" and attention != "spatio_temporal":
    raise UserError(
      f"vivit model.attention={attention!r}: Hugging Face's ViViT is Model 1 "
      f"('spatio_temporal') only; export supports {SUPPORTED}."
    )
  if name == "timesformer" and attention not in HF_ATTENTION_TYPES:
    raise UserError(
      f"timesformer model.attention={attention!r}: Hugging Face's TimesformerConfig."
      f"attention_type has only {list(HF_ATTENTION_TYPES.values())}; export supports {SUPPORTED}."
    )
  if name == "timesformer" and attention == "space" and num_frames != 1:
    raise UserError(
      f"timesformer model.attention='space' on {num_frames} frames: Hugging Face's "
      "'space_only' classifies every frame on its own, vidtx averages the frames' tokens first; "
      f"export supports {SUPPORTED}."
    )


def preprocessor_config(converted: "Converted") -> dict[str, Any]:
  """preprocessor_config.json: HF's image processor for the model, with what of vidtx's
  evaluation it can express: the short side resized (bilinear) to the evaluation size
  (eval_min_resize, else min_resize), the centre crop, pixels / 255 and (x - mean) / std. Not
  expressible: resizing without antialiasing, the long side rounded (HF truncates it), three
  crops, clips; so the whole preprocessing goes along as `vidtx_preprocessing`."""
  p = converted.preprocessing
  out = {
    "image_processor_type": (
      "VivitImageProcessor" if converted.model_name == "vivit" else "VideoMAEImageProcessor"
    ),
    "do_resize": True,
    "size": {"shortest_edge": eval_short_side(p)},
    "resample": RESAMPLE_BILINEAR,
    "do_center_crop": True,
    "crop_size": {"height": int(p["crop_size"]), "width": int(p["crop_size"])},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [float(x) for x in p["mean"]],
    "image_std": [float(x) for x in p["std"]],
  }
  if converted.model_name == "vivit":
    out["offset"] = False  # VivitImageProcessor's default maps to [-1, 1] before normalising.
  out["vidtx_preprocessing"] = {key: _plain(value) for key, value in p.items()}
  return out


def _plain(value: Any) -> Any:
  """A JSON value of a preprocessing field (numpy scalars and tuples as Python's)."""
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value.item() if isinstance(value, np.generic) else value


# ----------------------------------------------------------------------------------------
# vidtx's evaluation preprocessing in numpy (vidtx.data.sampling.eval_views), for PyTorch.
# ----------------------------------------------------------------------------------------


def clip_indices(
  video_length: int, preprocessing: Mapping[str, Any], frame_rate: float = 0.0
) -> np.ndarray:
  """(C, num_frames) int32: which frames of a video of `video_length` decoded frames each
  evaluation clip takes, as vidtx.data.sampling.eval_clip_indices_for computes them (numpy,
  the same float32 arithmetic). `frame_rate`: the video's frames per second (0: the
  preprocessing's frame_rate, else target_fps); only 'timesformer' sampling uses it. The rule
  is written out in docs/export.md ("Which frames")."""
  p = preprocessing
  sampling = p.get("eval_sampling", "stride")
  num_frames, num_clips = int(p["num_frames"]), int(p.get("num_test_clips", 1))
  length = int(video_length)
  if length < 1:
    raise UserError(f"video_length={video_length}: expected a video of at least 1 frame.")
  f32 = np.float32
  frame_number = np.arange(num_frames)
  if sampling == "stride":
    stride = int(p["stride"])
    max_offset = max(length - ((num_frames - 1) * stride + 1), 0)
    offsets = (
      np.array([max_offset // 2])
      if num_clips == 1
      else np.arange(num_clips) * max_offset // (num_clips - 1)
    )
    indices = (offsets[:, None] + frame_number[None, :] * stride) % length
    return indices.astype(np.int32)
  if sampling == "segment":
    # Frame floor((i + position) * L / num_frames) of segment i, position (k + 0.5) / C.
    positions = (np.arange(num_clips, dtype=f32)[:, None] + f32(0.5)) / f32(num_clips)
    segment = f32(length) / f32(num_frames)
    frames = np.floor((frame_number.astype(f32)[None, :] + positions) * segment)
    return np.clip(frames.astype(np.int32), 0, length - 1)
  if p.get("train_sampling", "stride") == "timesformer" or sampling == "timesformer":
    # A window of num_frames * sampling_rate frames at target_fps, in the video's frames.
    target_fps = float(p.get("target_fps", 30.0))
    rate = f32(frame_rate) if frame_rate > 0 else f32(float(p.get("frame_rate", target_fps)))
    window = f32(float(num_frames * float(p.get("sampling_rate", 32)))) * rate / f32(target_fps)
    if sampling == "timesformer":
      max_start = max(f32(length) - window, f32(0))
      starts = (
        np.array([max_start / f32(2)], f32)
        if num_clips == 1
        else np.arange(num_clips, dtype=f32) * max_start / f32(num_clips - 1)
      )
    else:  # whole_video: consecutive windows.
      count = max(np.ceil(f32(length) / window), f32(1))
      starts = np.arange(count, dtype=f32) * window
    # num_frames evenly over [start, start + window - 1] (tf.linspace: both ends exact).
    steps = frame_number.astype(f32) * (f32(1) / f32(max(num_frames - 1, 1)))
    steps[-1] = 1.0 if num_frames > 1 else 0.0
    steps = steps * max(window - f32(1), f32(0))
    positions = np.floor(starts[:, None] + steps[None, :])
    return np.clip(positions.astype(np.int32), 0, length - 1)
  if sampling != "whole_video":
    raise UserError(
      f"preprocessing eval_sampling={sampling!r}: expected 'stride', 'segment', 'timesformer' "
      "or 'whole_video'."
    )
  # whole_video with stride clips: consecutive clips of num_frames * stride frames.
  stride = int(p["stride"])
  span = num_frames * stride
  count = max(-(-length // span), 1)
  indices = np.arange(count)[:, None] * span + frame_number[None, :] * stride
  return np.minimum(indices, length - 1).astype(np.int32)


def eval_short_side(preprocessing: Mapping[str, Any]) -> int:
  """The short side frames are resized to for evaluation: eval_min_resize, else min_resize."""
  return int(preprocessing.get("eval_min_resize") or preprocessing["min_resize"])


def _bilinear_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(lower, upper, lerp) per output pixel, as TensorFlow's ResizeBilinear computes them with
  half-pixel centres, in float32: sample (i + 0.5) * in / out - 0.5, clamped to the image."""
  scale = np.float32(in_size) / np.float32(out_size)
  x = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
  floor = np.floor(x)
  lower = np.maximum(floor, 0).astype(np.int64)
  upper = np.minimum(np.ceil(x), in_size - 1).astype(np.int64)
  return lower, upper, (x - floor).astype(np.float32)


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
  """float32 (..., H', W', 3): the short side resized to `short_side`, bilinear without
  antialiasing, the long side round(long * short_side / short) (half to even, at least
  short_side): vidtx.data.augment.resize_short_side. Frames already that size are only cast."""
  height, width = frames.shape[-3], frames.shape[-2]
  short = min(height, width)
  frames = frames.astype(np.float32)
  if short == short_side:
    return frames
  scale = short_side / short  # float64, as vidtx computes the sizes.
  new_height = max(int(np.round(height * scale)), short_side)
  new_width = max(int(np.round(width * scale)), short_side)
  top, bottom, y_lerp = _bilinear_weights(height, new_height)
  left, right, x_lerp = _bilinear_weights(width, new_width)
  x_lerp = x_lerp[:, None]  # Over the channels.
  rows_top, rows_bottom = frames[..., top, :, :], frames[..., bottom, :, :]
  top_row = rows_top[..., left, :] + (rows_top[..., right, :] - rows_top[..., left, :]) * x_lerp
  bottom_row = (
    rows_bottom[..., left, :] + (rows_bottom[..., right, :] - rows_bottom[..., left, :]) * x_lerp
  )
  return top_row + (bottom_row - top_row) * y_lerp[:, None, None]


def prepare_frames(frames: Any, preprocessing: Mapping[str, Any]) -> np.ndarray:
  """The evaluation views of sampled frames, exactly as vidtx computes them (within float
  rounding of vidtx.data.sampling.eval_views): numpy only.

  frames: uint8 RGB, (T, H, W, 3) for one clip or (C, T, H, W, 3) for C clips, T =
    num_frames (a list of PIL images works too): the frames the checkpoint samples
    (docs/export.md, "Which frames").
  preprocessing: the checkpoint's preprocessing: `vidtx_preprocessing` of an exported
    preprocessor_config.json, `preprocessing` of vidtx_model.json, or a SavedModel's
    vidtx_preprocessing.json.

  Returns float32 (V, T, S, S, 3), S = crop_size, V = C * 3 with do_three_spatial_crops (start,
  centre and end of the long side; view 1 of a clip is the centre crop) else C, clip-major: the
  short side resized to eval_min_resize (else min_resize) by bilinear interpolation without
  antialiasing, then cropped, then (pixel / 255 - mean) / std. A Hugging Face model takes a view
  as pixel_values `views[v].transpose(0, 3, 1, 2)[None]`; the views' logits are then combined
  as `aggregation` says (sum_logits, mean_logits, ...).
  """
  frames = np.asarray(frames)
  num_frames, crop = int(preprocessing["num_frames"]), int(preprocessing["crop_size"])
  shape = frames.shape
  if frames.ndim == 4:
    frames = frames[None]
  if frames.ndim != 5 or frames.shape[1] != num_frames or frames.shape[-1] != 3:
    raise UserError(
      f"frames of shape {shape}: expected (T, H, W, 3) or (C, T, H, W, 3) RGB with T = "
      f"num_frames = {num_frames}."
    )
  if frames.dtype != np.uint8:
    raise UserError(f"frames of dtype {frames.dtype}: expected uint8 pixels in [0, 255].")
  short_side = eval_short_side(preprocessing)
  if short_side < crop:
    raise UserError(
      f"preprocessing: the evaluation short side {short_side} is below crop_size {crop}."
    )
  frames = resize_short_side(frames, short_side)
  height, width = frames.shape[-3], frames.shape[-2]
  centre_y, centre_x = (height - crop) // 2, (width - crop) // 2
  if preprocessing.get("do_three_spatial_crops"):
    long_side = max(height, width)
    starts = [0, (long_side - crop) // 2, long_side - crop]
    corners = [(s, centre_x) if height > width else (centre_y, s) for s in starts]
  else:
    corners = [(centre_y, centre_x)]
  views = np.stack([frames[..., y : y + crop, x : x + crop, :] for y, x in corners], axis=1)
  views = views.reshape(-1, num_frames, crop, crop, 3)  # (C, crops, T, ...) -> (V, T, ...)
  mean = np.asarray(preprocessing["mean"], np.float32)
  std = np.asarray(preprocessing["std"], np.float32)
  return (views / np.float32(255.0) - mean) / std


# ----------------------------------------------------------------------------------------
# Per model: HF config fields and the HF tensors' names and shapes.
# ----------------------------------------------------------------------------------------


def _hf_block_shapes(prefix: str, d: int, mlp: int, fused_qkv: bool) -> dict[str, tuple]:
  """The tensors of one HF ViT-style layer at `prefix` ('timesformer.encoder.layer.3.')."""
  shapes = {}
  for norm in ("layernorm_before", "layernorm_after"):
    shapes[f"{prefix}{norm}.weight"] = shapes[f"{prefix}{norm}.bias"] = (d,)
  shapes.update(_hf_attention_shapes(prefix + "attention.", d, fused_qkv))
  shapes[prefix + "intermediate.dense.weight"] = (mlp, d)
  shapes[prefix + "intermediate.dense.bias"] = (mlp,)
  shapes[prefix + "output.dense.weight"] = (d, mlp)
  shapes[prefix + "output.dense.bias"] = (d,)
  return shapes


def _hf_attention_shapes(prefix: str, d: int, fused_qkv: bool) -> dict[str, tuple]:
  if fused_qkv:
    shapes = {prefix + "attention.qkv.weight": (3 * d, d), prefix + "attention.qkv.bias": (3 * d,)}
  else:
    shapes = {}
    for role in ("query", "key", "value"):
      shapes[f"{prefix}attention.{role}.weight"] = (d, d)
      shapes[f"{prefix}attention.{role}.bias"] = (d,)
  shapes[prefix + "output.dense.weight"] = (d, d)
  shapes[prefix + "output.dense.bias"] = (d,)
  return shapes


def _embedding_and_head_shapes(prefix: str, d: int, num_classes: int) -> dict[str, tuple]:
  return {
    prefix + "embeddings.cls_token": (1, 1, d),
    prefix + "layernorm.weight": (d,),
    prefix + "layernorm.bias": (d,),
    "classifier.weight": (num_classes, d),
    "classifier.bias": (num_classes,),
  }


def _grid_side(num_patches: int, what: str) -> int:
  side = math.isqrt(num_patches)
  if side * side != num_patches:
    raise UserError(f"{what}: {num_patches} patch entries are not a square grid.")
  return side


def _timesformer(
  converted: "Converted", config: Any, params: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, tuple], dict[str, np.ndarray]]:
  attention = config.attention
  num_frames = int(converted.preprocessing["num_frames"])
  d, patch = config.hidden_size, config.patch_size
  params = dict(params)
  # model.positional_embedding 'space' / 'none': HF always adds both; zeros compute the same.
  if "pos_embedding/embedding" not in params:
    side = int(converted.preprocessing["crop_size"]) // patch
    params["pos_embedding/embedding"] = np.zeros((1 + side * side, d), np.float32)
  if attention != "space" and "time_embedding/embedding" not in params:
    params["time_embedding/embedding"] = np.zeros((num_frames, d), np.float32)
  if attention != "space":
    num_frames = params["time_embedding/embedding"].shape[0]
  side = _grid_side(params["pos_embedding/embedding"].shape[0] - 1, "timesformer pos_embedding")
  _check_crop(converted, side * patch, num_frames)
  channels = params["embedding/kernel"].shape[2]  # [P, P, C, D]
  num_classes = params["head/kernel"].shape[1]
  hf_config = dict(
    architectures=["TimesformerForVideoClassification"],
    model_type="timesformer",
    image_size=side * patch,
    patch_size=patch,
    num_channels=int(channels),
    num_frames=int(num_frames),
    attention_type=HF_ATTENTION_TYPES[attention],
  )
  p = "timesformer."
  shapes = _embedding_and_head_shapes(p, d, num_classes)
  shapes[p + "embeddings.patch_embeddings.projection.weight"] = (d, channels, patch, patch)
  shapes[p + "embeddings.patch_embeddings.projection.bias"] = (d,)
  shapes[p + "embeddings.position_embeddings"] = (1, 1 + side * side, d)
  if attention != "space":
    shapes[p + "embeddings.time_embeddings"] = (1, num_frames, d)
  for i in range(config.num_layers):
    layer = f"{p}encoder.layer.{i}."
    shapes.update(_hf_block_shapes(layer, d, config.mlp_dim, fused_qkv=True))
    if attention == "divided":
      shapes[layer + "temporal_layernorm.weight"] = shapes[layer + "temporal_layernorm.bias"] = (d,)
      shapes.update(_hf_attention_shapes(layer + "temporal_attention.", d, fused_qkv=True))
      shapes[layer + "temporal_dense.weight"] = (d, d)
      shapes[layer + "temporal_dense.bias"] = (d,)
  return hf_config, shapes, params


def _vivit(
  converted: "Converted", config: Any, params: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, tuple]]:
  d, patch, tubelet = config.hidden_size, config.patch_size, config.tubelet_size
  crop = int(converted.preprocessing["crop_size"])
  num_patches = (crop // patch) ** 2
  tokens = params["pos_embedding/embedding"].shape[0] - 1
  if crop % patch or tokens % num_patches:
    raise UserError(
      f"vivit: {tokens} positional entries are not a whole number of frames of the "
      f"{crop}x{crop} crop's {num_patches} patches of {patch}x{patch}."
    )
  num_frames = tokens // num_patches * tubelet
  _check_crop(converted, crop, num_frames)
  channels = params["embedding/kernel"].shape[3]  # [t, P, P, C, D]
  num_classes = params["head/kernel"].shape[1]
  hf_config = dict(
    architectures=["VivitForVideoClassification"],
    model_type="vivit",
    image_size=crop,
    num_frames=int(num_frames),
    tubelet_size=[int(tubelet), int(patch), int(patch)],
    num_channels=int(channels),
  )
  p = "vivit."
  shapes = _embedding_and_head_shapes(p, d, num_classes)
  shapes[p + "embeddings.patch_embeddings.projection.weight"] = (d, channels, tubelet, patch, patch)
  shapes[p + "embeddings.patch_embeddings.projection.bias"] = (d,)
  shapes[p + "embeddings.position_embeddings"] = (1, 1 + tokens, d)
  for i in range(config.num_layers):
    shapes.update(_hf_block_shapes(f"{p}encoder.layer.{i}.", d, config.mlp_dim, fused_qkv=False))
  return hf_config, shapes


def _check_crop(converted: "Converted", image_size: int, num_frames: int) -> None:
  """HF reads clips of config image_size and num_frames; vidtx's preprocessing must agree."""
  p = converted.preprocessing
  if int(p["crop_size"]) != image_size or int(p["num_frames"]) != num_frames:
    raise UserError(
      f"{converted.model_name}: the parameters are for {num_frames} frames of "
      f"{image_size}x{image_size} but the preprocessing says {p['num_frames']} of "
      f"{p['crop_size']}x{p['crop_size']}; Hugging Face takes one size."
    )


def _common_config(converted: "Converted", config: Any, num_classes: int) -> dict[str, Any]:
  labels = converted.labels
  if labels is None:
    labels = [f"LABEL_{i}" for i in range(num_classes)]
  if len(labels) != num_classes:
    raise UserError(f"{len(labels)} labels for the head's {num_classes} classes.")
  if len(set(labels)) != len(labels):
    raise UserError("the labels are not distinct; Hugging Face's label2id needs them so.")
  return dict(
    hidden_size=int(config.hidden_size),
    num_hidden_layers=int(config.num_layers),
    num_attention_heads=int(config.num_heads),
    intermediate_size=int(config.mlp_dim),
    # The tanh form: HF's gelu_fast (ViViT's default) is the same formula as jax's.
    hidden_act="gelu_fast" if config.gelu_approximate else "gelu",
    hidden_dropout_prob=float(config.dropout_rate),
    attention_probs_dropout_prob=float(config.attention_dropout_rate),
    initializer_range=0.02,
    layer_norm_eps=float(config.layer_norm_epsilon),
    qkv_bias=True,
    id2label={str(i): str(label) for i, label in enumerate(labels)},
    label2id={str(label): i for i, label in enumerate(labels)},
    dtype="float32",
  )


# ----------------------------------------------------------------------------------------
# The reader, inverted.
# ----------------------------------------------------------------------------------------


def _invert_reader(
  read: Any,
  hf_config: dict[str, Any],
  shapes: dict[str, tuple],
  params: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
  """{HF name: array} that `read` maps onto `params` (flat 'a/b' names), found by reading
  HF tensors that hold their elements' indices."""
  import flax

  from vidtx.checkpoints.readers import Source

  sizes = {name: math.prod(shape) for name, shape in shapes.items()}
  total = sum(sizes.values())
  index_dtype = np.int32 if total < 2**31 else np.int64
  probe, start = {}, 0
  for name, shape in shapes.items():
    # [size] -> the HF shape; values start .. start+size-1.
    probe[name] = np.arange(start, start + sizes[name], dtype=index_dtype).reshape(shape)
    start += sizes[name]
  read_back = read(Source("vidtx export", "hf", probe, hf_config))
  where = flax.traverse_util.flatten_dict(read_back.params, sep="/")
  problems = [f"missing: {k} {where[k].shape}" for k in sorted(set(where) - set(params))]
  problems += [f"unexpected: {k} {params[k].shape}" for k in sorted(set(params) - set(where))]
  problems += [
    f"shape of {k}: {params[k].shape}, Hugging Face's is {where[k].shape}"
    for k in sorted(set(params) & set(where))
    if params[k].shape != where[k].shape
  ]
  if problems:
    raise UserError(
      "the parameters do not fit the Hugging Face model of this config "
      f"({len(problems)} problem(s)):\n  " + "\n  ".join(problems)
    )
  flat = np.zeros(total, np.float32)
  seen = np.zeros(total, bool)
  for name, index in where.items():
    flat[np.ravel(index)] = np.ravel(params[name])
    seen[np.ravel(index)] = True
  # As many vidtx elements as HF ones and every HF element read: each is read exactly once.
  if sum(v.size for v in where.values()) != total or not seen.all():
    raise UserError(
      f"internal: vidtx's reader does not read each of the {total} Hugging Face elements "
      "exactly once; cannot invert it."
    )
  out, start = {}, 0
  for name, shape in shapes.items():
    # [size] -> the HF shape.
    out[name] = np.ascontiguousarray(flat[start : start + sizes[name]].reshape(shape))
    start += sizes[name]
  return out


def _write_json(path: str, value: dict[str, Any]) -> None:
  with open(path, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write("\n")
