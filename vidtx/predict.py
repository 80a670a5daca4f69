r"""Classify a video file (or a prepared clip) with a converted checkpoint.

  python -m vidtx.predict --checkpoint=DIR --video=FILE [--top_k=5] [--labels=FILE] \
      [--logits_out=OUT.npy] [--batch_size=8] [--rollout=OUT.png [--head_fusion=mean]]
  python -m vidtx.predict --checkpoint=DIR --input=CLIP.npy [--top_k=5] [--labels=FILE] \
      [--logits_out=OUT.npy] [--batch_size=8] [--rollout=OUT.png [--head_fusion=mean]]

DIR is a converted-checkpoint directory (vidtx.checkpoints.store, written by vidtx.convert).

--video: every frame is decoded with PyAV (as RGB), the checkpoint's evaluation clips are chosen
with the reader's rule (vidtx.data.sampling.eval_clip_indices: the middle clip, or evenly spaced
clips; short videos loop) and turned into views by the reader's own code (sampling.eval_views:
short side to min_resize, centre crop or three crops, per-channel mean / std), so a video scores
as the evaluation scores the same frames. The views' logits are aggregated as the checkpoint says
(preprocessing.aggregation) and the top-k classes are printed with their probabilities.
--logits_out saves the per-view logits, float32 (V, num_classes).

--input: a float32 array (T, H, W, C) or (B, T, H, W, C) goes to the model as it is (no
preprocessing); T, H = W and C must be what the checkpoint was made for (num_frames, crop_size,
3: the positional and time embeddings fix them). Prints the top-k of every row; --logits_out
saves the raw logits (B, num_classes).

Class names: --labels (one per line), else the checkpoint's labels, else "class <i>".

A NaN or inf in the --input array, in a video's views or in the logits is an error naming the
file (and the clips or views), not a top-k of NaN.

--rollout OUT.png shows what the model looked at: for every view (or clip), its sampled frames
and below them the attention rollout (vidtx.rollout; Abnar & Zuidema, as in TimeSformer's
supplementary Fig. 1) laid over them as a heat map, titled with the view's top-1. The logits are
those of the same model call. TimeSformer (every attention) and ViViT Models 1-3.
"""

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import av
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from PIL import Image

from vidtx import evaluator, rollout
from vidtx.checkpoints import store
from vidtx.data import reader_config, sampling

# ---------------------------------------------------------------------------------------------
# Inputs.
# ---------------------------------------------------------------------------------------------


def decode_video(path: str) -> np.ndarray:
  """Every frame of the first video stream of `path`: uint8 (N, H, W, 3) RGB.

  PyAV converts any pixel format (grayscale, 10-bit, odd sizes, ...) to rgb24. Frames are kept
  in memory (the clip indices depend on the frame count, which containers do not report
  reliably before decoding). Raises ValueError naming the file when it cannot be decoded.
  """
  if not os.path.isfile(path):
    raise ValueError(f"{path}: no such file.")
  frames = []
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise ValueError(f"{path}: the file has no video stream.")
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"  # Frame and slice threads: several times faster on long videos.
      size = {}
      for frame in container.decode(stream):
        # A stream may change resolution midway; the first frame's size keeps the frames stackable.
        size = size or {"width": frame.width, "height": frame.height}
        frames.append(frame.to_ndarray(format="rgb24", **size))
  except av.error.FFmpegError as e:
    raise ValueError(f"{path}: cannot decode it as a video ({e}).") from e
  if not frames:
    raise ValueError(f"{path}: the video stream has no frames.")
  return np.stack(frames)  # N x (H, W, 3) -> (N, H, W, 3)


def encode_video(
  path: str, frames: np.ndarray, fps: int = 10, codec: str = "libx264", pix_fmt: str = "yuv420p"
) -> str:
  """Writes uint8 RGB frames (N, H, W, 3) as a video file: demos and tests make the files that
  `decode_video` reads. Returns `path`."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"{path}: frames {frames.dtype} {frames.shape}; expected uint8 (N, H, W, 3).")
  with av.open(path, "w") as container:
    stream = container.add_stream(codec, rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = pix_fmt
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())  # Flush the encoder's buffered frames.
  return path


def dataset_configs(converted: store.Converted) -> ml_collections.ConfigDict:
  """The checkpoint's preprocessing as the reader's dataset_configs (for sampling.eval_views)."""
  configs = ml_collections.ConfigDict(converted.dataset_overrides())
  if configs.crop_size > configs.min_resize:
    raise ValueError(
      f"The checkpoint's preprocessing has crop_size={configs.crop_size} > "
      f"min_resize={configs.min_resize}; expected crop_size <= min_resize."
    )
  reader_config.normalisation(configs)  # Raises ValueError on bad mean / std.
  return configs


def video_views(frames: np.ndarray, converted: store.Converted) -> np.ndarray:
  """uint8 frames (N, H, W, 3) of a whole video -> the evaluation views, float32
  (V, num_frames, crop, crop, 3), exactly as the TFRecord reader makes them."""
  configs = dataset_configs(converted)
  indices = sampling.eval_clip_indices_for(configs, tf.constant(len(frames)))
  clips = frames[indices.numpy()]  # (N, H, W, 3) -> (clips, T, H, W, 3)
  return sampling.eval_views(clips, configs).numpy()


def _expected_clip(preprocessing: dict[str, Any]) -> tuple[int, int, int, int]:
  crop = int(preprocessing["crop_size"])
  return int(preprocessing["num_frames"]), crop, crop, 3


def check_clip(array: Any, preprocessing: dict[str, Any], source: str) -> np.ndarray:
  """`array` as float32 (B, T, H, W, C) after checking it fits the checkpoint's model.

  A single clip (T, H, W, C) gets a batch axis. Raises ValueError naming `source`, the shape
  found and the shape expected.
  """
  expected = _expected_clip(preprocessing)
  wanted = f"float32 (T, H, W, C) = {expected} or (B, {', '.join(map(str, expected))})"
  if not isinstance(array, np.ndarray):
    raise ValueError(f"{source}: expected one array, {wanted}; got a {type(array).__name__}.")
  if array.dtype != np.float32:
    raise ValueError(f"{source}: dtype {array.dtype}, shape {array.shape}; expected {wanted}.")
  if (
    array.ndim not in (4, 5)
    or array.shape[-4:] != expected
    or (array.ndim == 5 and array.shape[0] < 1)
  ):
    raise ValueError(
      f"{source}: shape {array.shape}; expected {wanted} (the checkpoint's "
      "num_frames and crop_size, RGB)."
    )
  clips = array[None] if array.ndim == 4 else array  # (T, H, W, C) -> (1, T, H, W, C)
  # A NaN would give NaN logits and a meaningless top-k with exit 0: refuse it here.
  finite = np.isfinite(clips)
  bad = ~finite.reshape(len(clips), -1).all(axis=1)
  if bad.any():
    count = int(finite.size - np.count_nonzero(finite))
    raise ValueError(
      f"{source}: {count} non-finite value(s) (NaN or inf) in clip(s) "
      f"{_some(np.flatnonzero(bad).tolist())}; expected finite pixel values."
    )
  return clips


def _some(items: Sequence[Any], limit: int = 8) -> str:
  """'0, 3, 5', or the first `limit` and 'and 4 more': short enough for a one-line message."""
  shown = ", ".join(str(x) for x in items[:limit])
  return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_finite(values: np.ndarray, source: str, what: str, names: Sequence[str]) -> np.ndarray:
  """`values` (N, ...), one row per view or clip named by `names`; ValueError naming `source`
  and the rows that hold a NaN or inf (`what`: 'logits', 'views')."""
  bad = ~np.isfinite(np.asarray(values)).reshape(len(values), -1).all(axis=1)
  if bad.any():
    rows = [f"'{names[i]}'" for i in np.flatnonzero(bad)]
    hint = (
      "check the checkpoint's preprocessing mean and std"
      if what == "views"
      else "the checkpoint's parameters hold a NaN or inf, or overflow on this input"
    )
    raise ValueError(
      f"{source}: non-finite {what} (NaN or inf) for {len(rows)} of "
      f"{len(values)}: {_some(rows)}; {hint}."
    )
  return values


def load_clip(path: str, converted: store.Converted) -> np.ndarray:
  """The .npy array at `path`, checked by `check_clip`: float32 (B, T, H, W, C)."""
  try:
    with open(path, "rb") as f:
      # np.load would take other files for pickles (allow_pickle=False then says so): check the
      # .npy magic string first, for a message that says what is wrong.
      if f.read(6) != b"\x93NUMPY":
        raise ValueError(f"{path}: not a .npy file (np.save writes them).")
      f.seek(0)
      array = np.load(f, allow_pickle=False)
  except OSError as e:
    raise ValueError(f"{path}: cannot read it ({e}).") from e
  return check_clip(array, converted.preprocessing, path)


# ---------------------------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------------------------


@functools.cache
def _jitted_apply(model: nn.Module):
  # Cached per model: a second call with the same model and batch shape does not recompile.
  return jax.jit(lambda params, clips: model.apply({"params": params}, clips, train=False)[0])


def _in_batches(
  apply: Callable[[Any, np.ndarray], Any], params: Any, clips: np.ndarray, batch_size: int
) -> list[np.ndarray]:
  """apply(params, batch) over `clips` (B, ...) `batch_size` at a time; its outputs (one array or
  a tuple) concatenated along the batch axis, as a list of float32 arrays."""
  if batch_size < 1 or len(clips) < 1:
    raise ValueError(f"batch_size={batch_size}, {len(clips)} clips: expected >= 1 of each.")
  params = jax.device_put(params)  # Once, not per batch.
  size = min(batch_size, len(clips))
  outputs = []
  for start in range(0, len(clips), size):
    batch = clips[start : start + size]
    real = len(batch)
    # The last batch is padded to the same size, so the model compiles for one shape only.
    batch = np.concatenate([batch, np.zeros((size - real,) + batch.shape[1:], batch.dtype)])
    out = apply(params, batch)
    outputs.append(
      [np.asarray(x, np.float32)[:real] for x in (out if isinstance(out, tuple) else (out,))]
    )
  return [np.concatenate(parts) for parts in zip(*outputs, strict=True)]


def model_logits(converted: store.Converted, clips: np.ndarray, batch_size: int = 8) -> np.ndarray:
  """float32 logits (B, num_classes) of clips (B, T, H, W, C), `batch_size` clips at a time."""
  apply = _jitted_apply(converted.build_model())
  return _in_batches(apply, converted.params, clips, batch_size)[0]


def model_rollout(
  converted: store.Converted, clips: np.ndarray, batch_size: int = 8, head_fusion: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
  """Logits (B, num_classes) and attention rollout heat (B, T', h, w) of clips (B, T, H, W, C)
  (vidtx.rollout), `batch_size` clips at a time."""
  # rollout.rollout checks the model on the first batch, before any work.
  apply = functools.partial(rollout.rollout, converted.build_model(), head_fusion=head_fusion)
  logits, heat = _in_batches(apply, converted.params, clips, batch_size)
  return logits, heat


def _check_aggregation(aggregation: str) -> None:
  if aggregation not in evaluator.AGGREGATIONS:
    raise ValueError(
      f"preprocessing.aggregation={aggregation!r}: expected one of "
      f"{sorted(evaluator.AGGREGATIONS)}."
    )


def aggregate(view_logits: np.ndarray, aggregation: str) -> np.ndarray:
  """Per-view logits (V, K) -> class probabilities (K,), as the evaluation aggregates views.

  'mean_logits' and 'sum_logits': softmax of the aggregated logits; 'mean_softmax': the mean of
  the views' probabilities.
  """
  _check_aggregation(aggregation)
  # (V, K) -> (1, V, K): the evaluator aggregates a batch of videos.
  view_logits = np.asarray(view_logits, np.float32)[None]
  scores = evaluator.aggregate(view_logits, np.ones(view_logits.shape[:2]), aggregation)[0]
  probabilities = scores if aggregation == "mean_softmax" else jax.nn.softmax(scores)
  return np.asarray(probabilities, np.float32)


def predict_frames(
  converted: store.Converted, frames: np.ndarray, batch_size: int = 8, source: str = "the video"
) -> tuple[np.ndarray, np.ndarray]:
  """Decoded frames (N, H, W, 3) uint8 -> (probabilities (K,), view logits (V, K)).

  Raises ValueError naming `source` and the views when the views or logits are not finite.
  """
  aggregation = converted.preprocessing["aggregation"]
  _check_aggregation(aggregation)  # Before the work, not after it.
  names = view_names(converted.preprocessing)
  views = check_finite(video_views(frames, converted), source, "views", names)
  view_logits = check_finite(model_logits(converted, views, batch_size), source, "logits", names)
  return aggregate(view_logits, aggregation), view_logits


def predict_video(
  converted: store.Converted, path: str, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
  """The video file at `path` -> (probabilities (K,), view logits (V, K)); see the module doc."""
  return predict_frames(converted, decode_video(path), batch_size, source=path)


def predict_array(
  converted: store.Converted,
  array: np.ndarray,
  batch_size: int = 8,
  source: str = "the input array",
) -> np.ndarray:
  """Logits (B, K) of a float32 clip (T, H, W, C) or clips (B, T, H, W, C), used as they are.

  Raises ValueError naming `source` (and the clips) on a NaN or inf in the input or logits.
  """
  clips = check_clip(array, converted.preprocessing, source)
  return check_finite(
    model_logits(converted, clips, batch_size), source, "logits", _clip_names(len(clips))
  )


def _clip_names(count: int) -> list[str]:
  # 0-based, as the command prints the rows of an --input array.
  return [f"clip {i}" for i in range(count)]


# ---------------------------------------------------------------------------------------------
# Output.
# ---------------------------------------------------------------------------------------------


def display_frames(clips: np.ndarray, preprocessing: dict[str, Any]) -> np.ndarray:
  """Normalised clips (..., 3) back to uint8 pixels with the checkpoint's mean / std."""
  mean = np.asarray(preprocessing["mean"], np.float32)
  std = np.asarray(preprocessing["std"], np.float32)
  return np.clip(np.round((clips * std + mean) * 255.0), 0, 255).astype(np.uint8)


def view_names(preprocessing: dict[str, Any]) -> list[str]:
  """The views' names in eval_views order (clip-major): 'clip 1, centre crop', ..."""
  crops = (
    ["start crop", "centre crop", "end crop"]
    if preprocessing["do_three_spatial_crops"]
    else ["centre crop"]
  )
  return [f"clip {c + 1}, {crop}" for c in range(preprocessing["num_test_clips"]) for crop in crops]


def save_rollout(
  path: str,
  clips: np.ndarray,
  heat: np.ndarray,
  logits: np.ndarray,
  names: Sequence[str],
  preprocessing: dict[str, Any],
  clip_names: Sequence[str],
) -> None:
  """The rollout picture (vidtx.rollout.rollout_image) of clips with their top-1, written
  atomically in the format of the file's extension (.png, .jpg, ...)."""
  extension = os.path.splitext(path)[1].lower()
  image_format = Image.registered_extensions().get(extension)
  if image_format is None:
    raise ValueError(
      f"--rollout {path}: unknown image extension {extension!r}; expected e.g. .png or .jpg."
    )
  probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
  titles = [
    f"{clip_name}: {names[int(np.argmax(p))]} {np.max(p):.0%}"
    for clip_name, p in zip(clip_names, probabilities, strict=True)
  ]
  image = rollout.rollout_image(display_frames(clips, preprocessing), heat, titles)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp")
  image.save(temporary, format=image_format)
  os.replace(temporary, path)


def class_names(converted: store.Converted, labels_file: str | None = None) -> list[str]:
  """--labels (one name per line), else the checkpoint's labels, else 'class <i>'."""
  if labels_file:
    try:
      with open(labels_file) as f:
        # Blank lines are skipped, as vidtx.data.read_label_names does for labels.txt.
        names = [line.strip() for line in f.read().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
      raise ValueError(f"--labels {labels_file}: cannot read it as text ({e}).") from e
    if len(names) != converted.num_classes:
      raise ValueError(
        f"--labels {labels_file}: {len(names)} names, but the checkpoint has "
        f"{converted.num_classes} classes."
      )
    return names
  if converted.labels:
    return list(converted.labels)
  return [f"class {i}" for i in range(converted.num_classes)]


def format_top_k(probabilities: np.ndarray, names: Sequence[str], k: int) -> str:
  """Lines '  1. name  0.8123' of the k most probable classes (ties: lower index first)."""
  k = min(k, len(probabilities))
  order = np.argsort(-probabilities, kind="stable")[:k]
  width = max(len(names[i]) for i in order)
  return "\n".join(
    f"  {rank}. {names[i]:<{width}}  {probabilities[i]:.4f}" for rank, i in enumerate(order, 1)
  )


def describe_preprocessing(preprocessing: dict[str, Any]) -> str:
  """One line: the views and how they are made, e.g. for the command's output."""
  p = preprocessing
  clips, three = p["num_test_clips"], p["do_three_spatial_crops"]
  crops = "3 crops (start, centre, end of the long side)" if three else "1 centre crop"
  return (
    f"{clips * (3 if three else 1)} views = {clips} clip(s) x {crops}; clips of "
    f"{p['num_frames']} frames at stride {p['stride']}, short side {p['min_resize']}, crop "
    f"{p['crop_size']}, mean {list(p['mean'])}, std {list(p['std'])}; aggregation "
    f"{p['aggregation']}"
  )


def _save(path: str, logits: np.ndarray) -> None:
  # Through a file object: np.save would add '.npy' to a name without it.
  with open(path, "wb") as f:
    np.save(f, logits.astype(np.float32))


def run(
  checkpoint: str,
  *,
  video: str | None = None,
  input_path: str | None = None,
  top_k: int = 5,
  labels: str | None = None,
  logits_out: str | None = None,
  batch_size: int = 8,
  rollout_out: str | None = None,
  head_fusion: str = "mean",
) -> np.ndarray:
  """The command: prints the predictions, returns the logits ((V, K) or (B, K)) it saves."""
  if (video is None) == (input_path is None):
    raise ValueError("Give exactly one of --video FILE or --input CLIP.npy.")
  if top_k < 1 or batch_size < 1:
    raise ValueError(f"--top_k={top_k}, --batch_size={batch_size}: expected both >= 1.")
  if rollout_out and head_fusion not in rollout.HEAD_FUSIONS:
    raise ValueError(
      f"--head_fusion={head_fusion!r}: expected one of {sorted(rollout.HEAD_FUSIONS)}."
    )
  converted = store.load(checkpoint)
  names = class_names(converted, labels)
  if rollout_out:
    # Before decoding or running anything: a model rollout cannot describe fails now.
    rollout.plans(converted.build_model(), (1,) + _expected_clip(converted.preprocessing))

  source = video if video is not None else input_path

  def logits_of(clips: np.ndarray) -> np.ndarray:
    rows = view_names(converted.preprocessing) if video is not None else _clip_names(len(clips))
    if not rollout_out:
      return check_finite(model_logits(converted, clips, batch_size), source, "logits", rows)
    logits, heat = model_rollout(converted, clips, batch_size, head_fusion)
    check_finite(logits, source, "logits", rows)  # Before a picture titled with NaN.
    clip_names = (
      view_names(converted.preprocessing)
      if video is not None
      else [f"clip {i + 1}" for i in range(len(clips))]
    )
    save_rollout(rollout_out, clips, heat, logits, names, converted.preprocessing, clip_names)
    return logits

  if video is not None:
    aggregation = converted.preprocessing["aggregation"]
    _check_aggregation(aggregation)  # Before the decoding.
    frames = decode_video(video)
    views = check_finite(
      video_views(frames, converted), video, "views", view_names(converted.preprocessing)
    )
    logits = logits_of(views)
    probabilities = aggregate(logits, aggregation)
    print(
      f"{video}: {len(frames)} frames decoded ({frames.shape[2]}x{frames.shape[1]}); "
      f"{describe_preprocessing(converted.preprocessing)}"
    )
    print(f"top-{min(top_k, len(names))}:\n" + format_top_k(probabilities, names, top_k))
  else:
    clips = load_clip(input_path, converted)  # Checked before the model is built.
    logits = logits_of(clips)
    print(
      f"{input_path}: {len(clips)} clip(s) {clips.shape[1:]}, used as they are (no preprocessing)"
    )
    probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
    for row, p in enumerate(probabilities):
      print(f"clip {row} top-{min(top_k, len(names))}:\n" + format_top_k(p, names, top_k))
  if rollout_out:
    print(
      f"attention rollout ({head_fusion} over heads) of {len(logits)} "
      f"{'view' if video is not None else 'clip'}(s) written to {rollout_out}"
    )
  if logits_out:
    _save(logits_out, logits)
    print(f"logits {logits.shape} written to {logits_out}")
  return logits


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  if (f.video is None) == (f.input is None):
    raise app.UsageError("Give exactly one of --video FILE or --input CLIP.npy.")
  try:
    run(
      f.checkpoint,
      video=f.video,
      input_path=f.input,
      top_k=f.top_k,
      labels=f.labels,
      logits_out=f.logits_out,
      batch_size=f.batch_size,
      rollout_out=f.rollout,
      head_fusion=f.head_fusion,
    )
  except (ValueError, FileNotFoundError) as e:
    # Bad inputs are the user's to fix: the message, not a traceback.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def run_cli() -> None:
  """The command line (vidtx-predict, python -m vidtx.predict); flags are defined here."""
  flags.DEFINE_string("checkpoint", None, "Converted-checkpoint directory (vidtx.convert).")
  flags.DEFINE_string("video", None, "A video file to classify (anything FFmpeg decodes).")
  flags.DEFINE_string(
    "input",
    None,
    "A .npy float32 clip (T, H, W, C) or clips (B, T, H, W, C), "
    "fed to the model without preprocessing.",
  )
  flags.DEFINE_integer("top_k", 5, "How many classes to print.", lower_bound=1)
  flags.DEFINE_string("labels", None, "Class names, one per line (default: the checkpoint's).")
  flags.DEFINE_string(
    "logits_out",
    None,
    "Write the logits here (.npy, float32): per view for "
    "--video (V, K), per clip for --input (B, K).",
  )
  flags.DEFINE_integer("batch_size", 8, "Clips per model call.", lower_bound=1)
  flags.DEFINE_string(
    "rollout",
    None,
    "Save the attention rollout over the sampled frames of "
    "every view (or clip) as one image here (.png, .jpg). It holds every "
    "layer's attention maps per clip: for joint attention at 224 (1569 "
    "tokens) use a small --batch_size.",
  )
  flags.DEFINE_enum(
    "head_fusion",
    "mean",
    ["mean", "max", "min"],
    "How --rollout fuses the attention heads (mean: Abnar & Zuidema).",
  )
  flags.mark_flags_as_required(["checkpoint"])
  app.run(main)


if __name__ == "__main__":
  run_cli()
