r"""Classify video files (or a prepared clip) with a converted checkpoint or a train.py run.

  python -m vidtx.predict --checkpoint=DIR --video=FILE [--top_k=5] [--labels=FILE] \
      [--logits_out=OUT.npy] [--batch_size=8] [--rollout=OUT.png [--head_fusion=mean]]
  python -m vidtx.predict --checkpoint=DIR --input=CLIP.npy [--top_k=5] [--labels=FILE] \
      [--logits_out=OUT.npy] [--batch_size=8] [--rollout=OUT.png [--head_fusion=mean]]
  python -m vidtx.predict --checkpoint=DIR --video=FOLDER|GLOB|FILE | --list=FILE \
      [--out=RESULTS.jsonl|.csv [--per_view]] [--window=S [--hop=S] [--timeline_png=OUT.png]] \
      [--features=OUT_DIR [--token_features]] [--batch_size=8]
  python -m vidtx.predict --checkpoint=DIR --video=CLASS_FOLDERS [--labels_from_folders] \
      [--out=RESULTS.jsonl|.csv] [--per_class_csv=OUT.csv] [--confusion_png=OUT.png]
  (each form also takes --overwrite)

DIR is a converted-checkpoint directory (vidtx.checkpoints.store, written by vidtx.convert), or a
train.py run directory, converted in memory as vidtx.convert would: its best complete checkpoint
(the highest evaluation of the run's best_checkpoint_metric; the newest where it ranks none),
--which latest the newest, --step N that step; one line says which step and its evaluation.

Class folders (--labels_from_folders; on by itself, with a line saying so, when every video of
the --video folder lies in a subfolder named after a class of the checkpoint): each video's true
class is its top-level subfolder. After the predictions, top-1 and top-5 over the videos and the
worst classes are printed, and the per-class table (vidtx.metrics.per_class_csv, as evaluation's
eval_<split>_per_class.csv) and the labelled confusion matrix (metrics.confusion_matrix_figure, as
eval_<split>_confusion.png) are written to --per_class_csv and --confusion_png, by default next to
--out (RESULTS_per_class.csv, RESULTS_confusion.png); without either, only printed. Videos that
fail are left out of the counts (and counted).

--video: the frame count and rate are read from the container (or counted by a first streaming
pass), the checkpoint's evaluation clips are chosen with the reader's rule
(vidtx.data.sampling.eval_clip_indices_for, with the video's frame rate: the middle clip, or
evenly spaced clips; short videos loop), only those frames are kept while the video streams
through PyAV (as RGB; vidtx.video_io: memory does not grow with the video's length) and
turned into views by the reader's own code (sampling.eval_views:
short side to min_resize, centre crop or three crops, per-channel mean / std), so a video scores
as the evaluation scores the same frames. The views' logits are aggregated as the checkpoint says
(preprocessing.aggregation) and the top-k classes are printed with their probabilities.
--logits_out saves the per-view logits, float32 (V, num_classes).

--input: a float32 array (T, H, W, C) or (B, T, H, W, C) goes to the model as it is (no
preprocessing); T, H = W and C must be what the checkpoint was made for (num_frames, crop_size,
3: the positional and time embeddings fix them). Prints the top-k of every row; --logits_out
saves the raw logits (B, num_classes).

Many videos (a folder, searched recursively for video extensions, hidden files skipped; a glob;
--list, one path per line or a CSV whose first column is the path) share model calls of
--batch_size views. Each gets a line on stdout, or --out: .jsonl ({"id", "top_k": [{"label",
"prob"}], "view_logits" with --per_view}) or .csv (id, top1, top1_prob, top_k as
"label:prob;...", error). A video that cannot be decoded is reported on stderr and as
{"id", "error"}, and the others go on; the exit status is 1 only when none succeeded. A row is
formatted whole before it is written: one that cannot be written fails alone, and the summary
counts what the results hold. A file name that is not UTF-8 keeps its row, its odd bytes written
as \xNN. A --batch_size larger than the work pads the last call only to the next power of two.

--window S [--hop S]: every window [k * hop, k * hop + S) seconds of a video, on its frames'
presentation timestamps (variable frame rates included), is classified as a video of its own
(the same sampling), one result per window with "start" and "end" in seconds, in one streaming
pass (vidtx.timeline), with a progress line on stderr of the seconds of video done (a long video
streams for minutes); --timeline_png draws the top-1 class over time. Both flags must be finite,
at least 1 ms, and at least one frame interval of each video (else that video fails, naming the
flag).

Outputs (--out, --logits_out, --rollout, --timeline_png, --features) are checked before any work
(vidtx.outputs): one that is an input (a video, a folder's or --list's video, the --list, the
checkpoint, --labels, --input) or another output is refused, and so is an existing file unless
--overwrite. Files are written atomically (--out when the run ends): a failed run leaves the
previous file, or none.

--features OUT_DIR: per video (or window) the pre-logits embedding (D,), float32 .npy, the mean
over its views (the head is linear: the head of the mean embedding is the mean of the views'
logits, which 'mean_logits' aggregates), and OUT_DIR/index.jsonl ({"id", "file", "shape"}),
named by the input's position and its id ('000002_sub__a.mp4.npy': never two inputs on one name);
--token_features adds the last block's token grid (T', N, D), mean over views, for models that
return it ('encoded_tokens': TimeSformer). OUT_DIR is new, empty, or written by --features
before (vidtx.ownership).

Class names: --labels (one per line), else the checkpoint's labels, else "class <i>".

A NaN or inf in the --input array, in a video's views or in the logits is an error naming the
file (and the clips or views), not a top-k of NaN.

--rollout OUT.png shows what the model looked at: for every view (or clip), its sampled frames
and below them the attention rollout (vidtx.rollout; Abnar & Zuidema, as in TimeSformer's
supplementary Fig. 1) laid over them as a heat map, titled with the view's top-1. The logits are
those of the same model call. TimeSformer (every attention) and ViViT Models 1-3.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np
from absl import app, flags, logging

from vidtx import cli, locks, metrics, outputs, ownership, progress, results, timeline

# JAX, Flax, TensorFlow, orbax and PyAV (with the vidtx modules that import them) are imported
# inside the functions that use them, so that --help and flag errors answer at once.
if TYPE_CHECKING:
  import flax.linen as nn

  from vidtx import video_io
  from vidtx.checkpoints import store

# ---------------------------------------------------------------------------------------------
# Inputs.
# ---------------------------------------------------------------------------------------------


def decode_video(path: str) -> np.ndarray:
  """Every frame of the first video stream of `path`: uint8 (N, H, W, 3) RGB.

  PyAV converts any pixel format (grayscale, 10-bit, odd sizes, ...) to rgb24. Every frame is
  kept in memory: for short videos and as the reference of the bounded-memory path
  (`streamed_views`, vidtx.video_io), which predictions use. Raises ValueError naming the file
  when it cannot be decoded.
  """
  import av

  from vidtx import video_io

  video_io.check_regular_file(path)
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
  import av

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
  from vidtx.data import reader_config

  configs = ml_collections.ConfigDict(converted.dataset_overrides())
  if configs.crop_size > configs.min_resize:
    raise ValueError(
      f"The checkpoint's preprocessing has crop_size={configs.crop_size} > "
      f"min_resize={configs.min_resize}; expected crop_size <= min_resize."
    )
  reader_config.normalisation(configs)  # Raises ValueError on bad mean / std.
  return configs


def video_views(
  frames: np.ndarray, converted: store.Converted, frame_rate: float = 0.0
) -> np.ndarray:
  """uint8 frames (N, H, W, 3) of a whole video -> the evaluation views, float32
  (V, num_frames, crop, crop, 3), exactly as the TFRecord reader makes them. `frame_rate`: the
  video's (0: the checkpoint's), for the 'timesformer' sampling's window."""
  import tensorflow as tf

  from vidtx.data import sampling

  configs = dataset_configs(converted)
  indices = sampling.eval_clip_indices_for(configs, tf.constant(len(frames)), frame_rate)
  clips = frames[indices.numpy()]  # (N, H, W, 3) -> (clips, T, H, W, 3)
  return sampling.eval_views(clips, configs).numpy()


def streamed_views(path: str, converted: store.Converted) -> tuple[np.ndarray, video_io.Clips]:
  """The evaluation views (V, num_frames, crop, crop, 3) of the video file at `path`, decoding
  only the sampled frames (vidtx.video_io; the same views as `video_views` of every frame, with
  the container's frame rate), and its Clips."""
  from vidtx import video_io
  from vidtx.data import sampling

  configs = dataset_configs(converted)
  (clips,) = video_io.video_clips(path, configs)
  return sampling.eval_views(clips.clips, configs).numpy(), clips


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
  from vidtx import video_io

  if os.path.lexists(path):
    video_io.check_regular_file(path, "--input")  # A named pipe would block the open.
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
  import jax

  return jax.jit(lambda params, clips: model.apply({"params": params}, clips, train=False)[0])


def _in_batches(
  apply: Callable[[Any, np.ndarray], Any], params: Any, clips: np.ndarray, batch_size: int
) -> list[np.ndarray]:
  """apply(params, batch) over `clips` (B, ...) `batch_size` at a time; its outputs (one array or
  a tuple) concatenated along the batch axis, as a list of float32 arrays."""
  import jax

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
  from vidtx import rollout

  # rollout.rollout checks the model on the first batch, before any work.
  apply = functools.partial(rollout.rollout, converted.build_model(), head_fusion=head_fusion)
  logits, heat = _in_batches(apply, converted.params, clips, batch_size)
  return logits, heat


def _check_aggregation(aggregation: str) -> None:
  from vidtx import evaluator

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
  import jax

  from vidtx import evaluator

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
  """The video file at `path` -> (probabilities (K,), view logits (V, K)); see the module doc.
  Decodes only the sampled frames (`streamed_views`)."""
  aggregation = converted.preprocessing["aggregation"]
  _check_aggregation(aggregation)
  names = view_names(converted.preprocessing)
  views = check_finite(streamed_views(path, converted)[0], path, "views", names)
  view_logits = check_finite(model_logits(converted, views, batch_size), path, "logits", names)
  return aggregate(view_logits, aggregation), view_logits


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
  import jax

  from vidtx import rollout

  image_format = _image_format(path)
  probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
  titles = [
    f"{clip_name}: {names[int(np.argmax(p))]} {np.max(p):.0%}"
    for clip_name, p in zip(clip_names, probabilities, strict=True)
  ]
  image = rollout.rollout_image(display_frames(clips, preprocessing), heat, titles)
  with outputs.atomic_writer(path, "wb") as f:
    image.save(f, format=image_format)


def _image_format(path: str) -> str:
  """PIL's format for the --rollout file's extension; ValueError for one PIL does not know."""
  from PIL import Image

  extension = os.path.splitext(path)[1].lower()
  image_format = Image.registered_extensions().get(extension)
  if image_format is None:
    raise ValueError(
      f"--rollout {path}: unknown image extension {extension!r}; expected e.g. .png or .jpg."
    )
  return image_format


def _convert_command(checkpoint: str, step: int | None, which: str | None) -> str:
  """The vidtx.convert command that writes what predict reads from the run `checkpoint`."""
  out = os.path.normpath(checkpoint) + "_converted"
  choice = f" --step {step}" if step is not None else f" --which {which}" if which else ""
  return f"python -m vidtx.convert --src {shlex.quote(checkpoint)} --out {shlex.quote(out)}{choice}"


def load_checkpoint(
  checkpoint: str, step: int | None = None, which: str | None = None
) -> store.Converted:
  """--checkpoint: a converted checkpoint, or a train.py run converted in memory (its best
  complete checkpoint, `which='latest'` the newest, or `step`: vidtx.checkpoints.run), whose
  one line naming the step taken goes to stderr. Errors name the vidtx.convert command."""
  from vidtx.checkpoints import run as run_lib
  from vidtx.checkpoints import store

  if store.is_converted_dir(checkpoint):
    for flag, value in (("--step", step), ("--which", which)):
      if value is not None:
        raise ValueError(
          f"{flag}={value} picks a checkpoint of a train.py run; --checkpoint {checkpoint} is "
          "a converted checkpoint (one set of parameters)."
        )
    return store.load(checkpoint)
  if not run_lib.looks_like_run(checkpoint):
    if os.path.isdir(checkpoint):
      raise FileNotFoundError(
        f"--checkpoint {checkpoint}: neither a converted checkpoint ({store.MODEL_FILE}) nor a "
        f"train.py run ({run_lib.CONFIG_FILE} and {run_lib.CHECKPOINTS_DIR}/); convert other "
        f"checkpoints first: {_convert_command(checkpoint, None, None)}."
      )
    return store.load(checkpoint)  # Its error: no such directory.
  try:
    converted = run_lib.export_run(checkpoint, step=step, which=which)
  except (ValueError, OSError) as e:
    # The same as vidtx.convert would say: name that command, the usual way to a fixed copy.
    message = " ".join(str(e).split())
    raise ValueError(
      f"--checkpoint {checkpoint} (a train.py run, read as "
      f"{_convert_command(checkpoint, step, which)} would): {message}"
    ) from e
  print(converted.source["checkpoint"], file=sys.stderr, flush=True)
  return converted


def _read_labels_file(labels_file: str) -> list[str]:
  """--labels: one class name per line (blank lines skipped)."""
  from vidtx import video_io

  if os.path.lexists(labels_file):
    video_io.check_regular_file(labels_file, "--labels")  # A named pipe would block the open.
  try:
    with open(labels_file, encoding="utf-8-sig") as f:
      # Blank lines are skipped, as vidtx.data.read_label_names does for labels.txt.
      return [line.strip() for line in f.read().splitlines() if line.strip()]
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"--labels {labels_file}: cannot read it as text ({e}).") from e


def class_names(converted: store.Converted, labels_file: str | None = None) -> list[str]:
  """--labels (one name per line), else the checkpoint's labels, else 'class <i>'."""
  if labels_file:
    names = _read_labels_file(labels_file)
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


def describe_frames(preprocessing: dict[str, Any]) -> str:
  """Which frames an evaluation clip takes, in words, by its eval_sampling (vidtx.data.sampling):
  '8 frames at stride 2', '8 frames, one per segment', '8 frames over 256 frames at 30 fps'."""
  p = preprocessing
  frames, sampling = int(p["num_frames"]), p.get("eval_sampling", "stride")
  if sampling == "segment":
    return f"{frames} frames, one per segment"
  if sampling == "timesformer" or p.get("train_sampling", "stride") == "timesformer":
    window = frames * float(p.get("sampling_rate", 32))
    clip = f"{frames} frames over {window:g} frames at {float(p.get('target_fps', 30.0)):g} fps"
  else:
    clip = f"{frames} frames at stride {p['stride']}"
  return f"{clip}, one after another over the whole video" if sampling == "whole_video" else clip


def eval_short_side(preprocessing: dict[str, Any]) -> int:
  """The short side frames are resized to for evaluation: eval_min_resize, else min_resize."""
  return int(preprocessing.get("eval_min_resize") or preprocessing["min_resize"])


def describe_preprocessing(preprocessing: dict[str, Any]) -> str:
  """One line: the views and how they are made, e.g. for the command's output."""
  p = preprocessing
  clips, three = p["num_test_clips"], p["do_three_spatial_crops"]
  crops = "3 crops (start, centre, end of the long side)" if three else "1 centre crop"
  return (
    f"{clips * (3 if three else 1)} views = {clips} clip(s) x {crops}; clips of "
    f"{describe_frames(p)}, short side {eval_short_side(p)}, crop "
    f"{p['crop_size']}, mean {list(p['mean'])}, std {list(p['std'])}; aggregation "
    f"{p['aggregation']}"
  )


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
  overwrite: bool = False,
  step: int | None = None,
  which: str | None = None,
) -> np.ndarray:
  """The command: prints the predictions, returns the logits ((V, K) or (B, K)) it saves.
  --logits_out and --rollout never replace an input, and replace an existing file only with
  `overwrite`."""
  import jax

  from vidtx import rollout

  if (video is None) == (input_path is None):
    raise ValueError("Give exactly one of --video FILE or --input CLIP.npy.")
  if top_k < 1 or batch_size < 1:
    raise ValueError(f"--top_k={top_k}, --batch_size={batch_size}: expected both >= 1.")
  if rollout_out and head_fusion not in rollout.HEAD_FUSIONS:
    raise ValueError(
      f"--head_fusion={head_fusion!r}: expected one of {sorted(rollout.HEAD_FUSIONS)}."
    )
  # Before any work: an output that is an input, or a file the user did not ask to replace.
  outputs.check_paths(
    {"--video": video, "--input": input_path, "--checkpoint": checkpoint, "--labels": labels},
    {"--logits_out": logits_out, "--rollout": rollout_out},
  )
  if rollout_out:
    _image_format(rollout_out)
  for flag, path in (("--logits_out", logits_out), ("--rollout", rollout_out)):
    if path:
      outputs.check_output_file(path, flag, overwrite=overwrite)
  converted = load_checkpoint(checkpoint, step, which)
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
    views, clips = streamed_views(video, converted)
    views = check_finite(views, video, "views", view_names(converted.preprocessing))
    logits = logits_of(views)
    probabilities = aggregate(logits, aggregation)
    height, width = clips.clips.shape[2:4]
    print(
      f"{video}: {clips.length} frames decoded ({width}x{height}); "
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
    results.save_array(logits_out, logits)
    print(f"logits {logits.shape} written to {logits_out}")
  return logits


# ---------------------------------------------------------------------------------------------
# Many videos, windows of long videos, features.
# ---------------------------------------------------------------------------------------------


@functools.cache
def _jitted_outputs(model: nn.Module, tokens: bool):
  """(logits, pre_logits[, encoded tokens]) of a batch; cached per model, compiled per shape."""
  import jax

  def apply(params, clips):
    logits, aux = model.apply({"params": params}, clips, train=False)
    outputs = (logits, aux["pre_logits"])
    return outputs + (aux["encoded_tokens"],) if tokens else outputs

  return jax.jit(apply)


def token_features_available(converted: store.Converted) -> bool:
  """Whether the model's aux outputs hold the final token grid ('encoded_tokens'): TimeSformer
  does; ViViT and X-ViT do not return it."""
  import jax

  clip = np.zeros((1,) + _expected_clip(converted.preprocessing), np.float32)
  shapes = jax.eval_shape(
    lambda params, x: converted.build_model().apply({"params": params}, x, train=False)[1],
    converted.params,
    clip,
  )
  return "encoded_tokens" in shapes


@dataclasses.dataclass
class _Item:
  """One video (or window) whose views wait for the model; `number` its input's position."""

  number: int
  id: str
  path: str
  window: int | None
  start_s: float | None
  end_s: float | None
  num_views: int
  outputs: list = dataclasses.field(default_factory=list)  # per batch: tuple of (n, ...) arrays
  error: str | None = None  # A video that failed: its record keeps its place in the output.


class _Batcher:
  """Views of several videos in model calls of `batch_size` views; the last call is padded to
  the next power of two of what is left (at most `batch_size`: few compiled shapes, and a huge
  --batch_size never pads a few views to its size). Completed items come back in the order they
  were added."""

  def __init__(self, converted: store.Converted, batch_size: int, tokens: bool):
    import jax

    self.apply = _jitted_outputs(converted.build_model(), tokens)
    self.params = jax.device_put(converted.params)
    self.batch_size = batch_size
    self.items: list[_Item] = []
    self.queue: list[tuple[_Item, np.ndarray]] = []  # (item, its views (n, T, H, W, 3))
    self.queued = 0

  def add(self, item: _Item, views: np.ndarray) -> list[_Item]:
    self.items.append(item)
    self.queue.append((item, views))
    self.queued += len(views)
    done = []
    while self.queued >= self.batch_size:
      done += self._call()
    return done

  def add_failed(self, item: _Item) -> list[_Item]:
    """A failed video: it comes back after the items added before it."""
    self.items.append(item)
    return self._ready()

  def flush(self) -> list[_Item]:
    done = []
    while self.queued:
      done += self._call()
    return done

  def _call(self) -> list[_Item]:
    parts, owners, room = [], [], self.batch_size
    while room and self.queue:
      item, views = self.queue[0]
      take = views[:room]
      parts.append(take)
      owners.append((item, len(take)))
      room -= len(take)
      if len(take) == len(views):
        self.queue.pop(0)
      else:
        self.queue[0] = (item, views[len(take) :])
    batch = np.concatenate(parts)  # pieces (n_i, T, H, W, 3) -> (real, T, H, W, 3)
    real = len(batch)
    self.queued -= real
    size = min(self.batch_size, 1 << (real - 1).bit_length())  # real <= size < 2 * real
    # (real, ...) -> (size, ...): padded with zeros, dropped below.
    batch = np.concatenate([batch, np.zeros((size - real,) + batch.shape[1:], np.float32)])
    outputs = [np.asarray(x, np.float32)[:real] for x in self.apply(self.params, batch)]
    offset = 0
    for item, n in owners:
      item.outputs.append(tuple(x[offset : offset + n] for x in outputs))
      offset += n
    return self._ready()

  def _ready(self) -> list[_Item]:
    done = []
    while self.items and sum(len(o[0]) for o in self.items[0].outputs) == self.items[0].num_views:
      done.append(self.items.pop(0))
    return done


def _top_k(probabilities: np.ndarray, names: Sequence[str], k: int) -> list[dict[str, Any]]:
  order = np.argsort(-probabilities, kind="stable")[: min(k, len(probabilities))]
  return [{"label": names[i], "prob": round(float(probabilities[i]), 6)} for i in order]


def predict_many(
  converted: store.Converted,
  inputs: Sequence[tuple[str, str]],
  *,
  names: Sequence[str],
  top_k: int = 5,
  batch_size: int = 8,
  out: str | None = None,
  per_view: bool = False,
  window_s: float | None = None,
  hop_s: float | None = None,
  timeline_png: str | None = None,
  features: str | None = None,
  token_features: bool = False,
  scores: dict[int, np.ndarray] | None = None,
) -> tuple[int, int]:
  """Predicts every (id, path) of `inputs` (see the module doc); returns (videos whose results
  were all written, videos that failed), counted on what the results hold. A bad video is
  reported on stderr and in the output, never fatal. Output paths are the caller's to check
  (run_many). `scores`, when given, receives input number -> its aggregated class
  probabilities (whole videos only, not --window's windows)."""
  aggregation = converted.preprocessing["aggregation"]
  _check_aggregation(aggregation)
  configs = dataset_configs(converted)
  view_rows = view_names(converted.preprocessing)
  if features:
    ownership.claim(features, "features", hint="Choose a new --features directory.")
  if token_features and features:
    if not token_features_available(converted):
      print(
        f"note: --token_features: {converted.model_name} returns no token grid "
        "('encoded_tokens'); writing the pre-logits embeddings only.",
        file=sys.stderr,
      )
      token_features = False
  tokens = bool(token_features and features)
  batcher = _Batcher(converted, batch_size, tokens)
  reporter = (
    progress.Reporter(len(inputs), prefix="predict: ", unit=" videos", counters={"bad": 0})
    if len(inputs) > 1
    else None
  )

  def finish(items: list[_Item]) -> None:
    for item in items:
      record: dict[str, Any] = {"id": item.id}
      if item.window is not None:
        record.update(start=item.start_s, end=item.end_s)
      if item.error is not None:
        sink.result(item.number, item.window, record | {"error": item.error})
        continue
      # Per batch (n_i, ...) pieces -> (V, ...) per output.
      logits, pre_logits, *token_grid = [np.concatenate(x) for x in zip(*item.outputs, strict=True)]
      try:
        check_finite(logits, results.printable(item.path), "logits", view_rows)
      except ValueError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sink.result(item.number, item.window, record | {"error": str(e)})
        continue
      probabilities = aggregate(logits, aggregation)
      record["top_k"] = _top_k(probabilities, names, top_k)
      if per_view:
        record["view_logits"] = np.round(logits, 6).tolist()
      # The views' embeddings averaged: the head is linear, so head(mean) = the mean logits.
      embedding = pre_logits.mean(0) if features else None  # (V, D) -> (D,)
      grid = token_grid[0].mean(0) if token_grid else None  # (V, T', N, D) -> (T', N, D)
      sink.result(item.number, item.window, record, embedding, grid)
      if scores is not None and item.window is None and sink.succeeded[item.number]:
        scores[item.number] = probabilities  # Counted only when its row was written too.

  with contextlib.ExitStack() as stack:
    if features:
      stack.enter_context(locks.hold(features, "predict --features"))
    sink = results.Results(stack, out, features, window_s is not None)
    try:
      for number, (video_id, path) in enumerate(inputs, 1):
        items = _video_items(number, video_id, path, configs, view_rows, window_s, hop_s)
        while True:
          try:
            item_views = next(items, None)
          except ValueError as e:
            error = results.printable(str(e))
            print(f"error: {error}", file=sys.stderr, flush=True)
            failed = _Item(number, video_id, path, None, None, None, 0, error=error)
            finish(batcher.add_failed(failed))
            break
          if item_views is None:
            break
          finish(batcher.add(*item_views))
        if reporter is not None:
          reporter.update(number, bad=sink.counts()[1])
      finish(batcher.flush())
    finally:
      if features and sink.written:
        ownership.record_written(features, sink.written)
      if reporter is not None:
        reporter.finish(len(inputs), bad=sink.counts()[1])
  if timeline_png and sink.timeline:
    timeline.save_timeline(timeline_png, sink.timeline)
  return sink.counts()


def _video_items(
  number: int,
  video_id: str,
  path: str,
  configs: ml_collections.ConfigDict,
  view_rows: Sequence[str],
  window_s: float | None,
  hop_s: float | None,
) -> Iterator[tuple[_Item, np.ndarray]]:
  """(item, its views) of the video at `path`, or of each of its windows; ValueError naming the
  file when it cannot be decoded. Windows: a progress line of the seconds of video done while
  it streams (a long video takes minutes)."""
  from vidtx import video_io
  from vidtx.data import sampling

  seconds = streaming_reporter(video_id, path) if window_s is not None else None
  try:
    for clips in video_io.video_clips(path, configs, window_s, hop_s):
      views = sampling.eval_views(clips.clips, configs).numpy()
      check_finite(views, path, "views", view_rows)
      if seconds is not None:
        seconds.update(int(clips.end_s))
      yield (
        _Item(number, video_id, path, clips.window, clips.start_s, clips.end_s, len(views)),
        views,
      )
  finally:
    if seconds is not None:
      seconds.finish()


def streaming_reporter(video_id: str, path: str) -> progress.Reporter:
  """The line `ID: 30/180 s of video | 2.5 video s/s | ETA 1m00s` of a video whose windows
  stream (stderr: redrawn on a terminal, every 10 s in a log). The duration is the header's
  frame count over its rate; without them, no total and no ETA."""
  from vidtx import video_io

  try:
    info = video_io.probe(path)
    duration = info.frames / info.rate if info.frames and info.rate > 0 else None
  except ValueError:
    duration = None  # video_clips names what is wrong with the file.
  return progress.Reporter(
    None if duration is None else math.ceil(duration),
    prefix=f"{results.printable(video_id)}: ",
    unit=" s of video",
    rates=(("video s/s", 1.0, 1),),
    final_line=False,
  )


def many_mode(video: str | None, list_file: str | None, **options: Any) -> bool:
  """Whether the command takes the many-videos path: a --list, a folder or glob, or any of its
  options (--out, --window, --features, --per_view); else one file prints as before."""
  if list_file is not None or any(v not in (None, False) for v in options.values()):
    return True
  return (
    video is not None
    and not os.path.isfile(video)
    and (os.path.isdir(video) or glob.has_magic(video))
  )


OUT_SUFFIXES = (".jsonl", ".csv")
# A folder's videos, for --video's help: sorted(video_io.VIDEO_EXTENSIONS), written out so that
# --help does not import video_io (TensorFlow; a test checks that they agree).
VIDEO_EXTENSIONS = "3gp avi flv m4v mkv mov mp4 mpeg mpg ogv webm wmv".split()


# ---------------------------------------------------------------------------------------------
# Class folders: accuracy, the per-class table and the confusion matrix.
# ---------------------------------------------------------------------------------------------


def folder_classes(
  video: str | None, list_file: str | None, inputs: Sequence[tuple[str, str]]
) -> tuple[dict[str, str] | None, str]:
  """(id -> the class folder its video lies in, '') when every video of the --video folder lies
  in a subfolder of it (ids are paths relative to it); else (None, why not)."""
  if list_file is not None or video is None or not os.path.isdir(video):
    return None, "it needs --video FOLDER, a folder of class folders"
  classes = {}
  for video_id, path in inputs:
    folder, separator, _ = video_id.partition(os.sep)
    if not separator:
      return None, f"{path} is not inside a class folder of {video}"
    classes[video_id] = folder
  return classes, ""


def checkpoint_labels(checkpoint: str, labels_file: str | None) -> list[str] | None:
  """The class names predict will use (--labels, else the checkpoint's), read without the
  parameters: to decide before any work whether the --video folder holds class folders. None
  when there are none, or they cannot be read here (loading the checkpoint then says why)."""
  from vidtx.checkpoints import run as run_lib
  from vidtx.checkpoints import store

  try:
    if labels_file:
      return _read_labels_file(labels_file)
    if store.is_converted_dir(checkpoint):
      with open(os.path.join(checkpoint, store.MODEL_FILE), encoding="utf-8") as f:
        labels = json.load(f).get("labels")
      return [str(name) for name in labels] if isinstance(labels, list) else None
    if run_lib.is_run_dir(checkpoint):
      return run_lib.class_names(checkpoint)
  except (OSError, ValueError, AttributeError):
    return None
  return None


def _report_paths(
  out: str | None, per_class_csv: str | None, confusion_png: str | None
) -> tuple[str | None, str | None]:
  """Where the per-class table and the confusion matrix go: the flags, else next to --out."""
  stem = os.path.splitext(out)[0] if out else None
  return (
    per_class_csv or (f"{stem}_per_class.csv" if stem else None),
    confusion_png or (f"{stem}_confusion.png" if stem else None),
  )


def _class_folders_asked(
  checkpoint: str,
  video: str | None,
  list_file: str | None,
  inputs: Sequence[tuple[str, str]],
  labels_file: str | None,
  asked: bool | None,
  window: float | None,
) -> dict[str, str] | None:
  """id -> its true class (its class folder) when predict reports accuracy: `asked`
  (--labels_from_folders), or not asked either way (None) and every video lies in a folder
  named after a class of the checkpoint (a line says so); else None. Raises, before any work,
  when asked for and impossible."""
  flag = "--labels_from_folders"
  if asked is False:
    return None
  if window is not None:
    if asked:
      raise ValueError(f"{flag} reports the accuracy of whole videos; it does not take --window.")
    return None
  classes, why = folder_classes(video, list_file, inputs)
  if classes is None:
    if asked:
      raise ValueError(f"{flag}: {why}.")
    return None
  names = checkpoint_labels(checkpoint, labels_file)
  folders = sorted(set(classes.values()))
  if not names:
    if asked:
      raise ValueError(
        f"{flag}: --checkpoint {checkpoint} has no class names to match the folders of "
        f"{video} against; give --labels FILE (one name per line)."
      )
    return None
  unknown = [folder for folder in folders if folder not in set(names)]
  if unknown:
    if asked:
      raise ValueError(
        f"{flag}: folder(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''} of {video} are "
        f"not classes of the checkpoint (it has {len(names)}: {_some(names, 5)}); rename "
        "them, or give --labels FILE."
      )
    return None
  if asked is None:
    print(
      f"--video {video}: every subfolder is a class of the checkpoint ({len(folders)} of "
      f"{len(names)}): each video's folder is its true class and the accuracy is reported "
      "(--nolabels_from_folders turns this off).",
      file=sys.stderr,
    )
  return classes


def accuracy_report(
  scores: dict[int, np.ndarray],
  inputs: Sequence[tuple[str, str]],
  classes: dict[str, str],
  names: Sequence[str],
  *,
  per_class_csv: str | None = None,
  confusion_png: str | None = None,
) -> dict[str, Any]:
  """Top-1 / top-5 over the videos predicted (`scores`: input number -> class probabilities; the
  true class of input i is names.index(classes[its id])), their confusion matrix, and its
  per-class table and figure written as evaluation writes them (metrics.per_class_csv,
  metrics.confusion_matrix_figure), atomically. Prints the accuracy and the worst classes;
  returns {'videos', 'failed', 'top1', 'top5', 'confusion'}."""
  numbers = sorted(scores)
  index = {name: i for i, name in enumerate(names)}
  labels = np.array([index[classes[inputs[n - 1][0]]] for n in numbers], np.int64)
  k = min(5, len(names))
  if numbers:
    stacked = np.stack([scores[n] for n in numbers])
    top1 = float(metrics.topk_correct(stacked, labels, 1).mean())
    top5 = float(metrics.topk_correct(stacked, labels, k).mean())
    predicted = np.argmax(stacked, axis=1)
  else:
    top1 = top5 = float("nan")
    predicted = np.zeros(0, np.int64)
  confusion = metrics.confusion_matrix(predicted, labels, len(names))
  failed = len(inputs) - len(numbers)
  folders = len(set(classes.values()))
  print(
    f"accuracy of {len(numbers)} video(s) in {folders} class folder(s): top-1 {top1:.2%}, "
    f"top-{k} {top5:.2%} (chance top-1 {1 / len(names):.2%})"
    + (f"; {failed} video(s) failed and are not counted" if failed else ""),
    file=sys.stderr,
  )
  worst = metrics.worst_classes(confusion, names, 5)
  if worst:
    print(
      f"worst {len(worst)} classes (top-1, videos): "
      + ", ".join(f"{row['name']} {row['accuracy']:.1%} of {row['support']}" for row in worst),
      file=sys.stderr,
    )
  if per_class_csv:
    with outputs.atomic_writer(per_class_csv) as f:
      f.write(metrics.per_class_csv(confusion, names))
  if confusion_png:
    with outputs.atomic_writer(confusion_png, "wb") as f:
      metrics.confusion_matrix_figure(confusion, names).canvas.print_png(f)
  written = [
    f"{what} in {path}"
    for what, path in (("per-class table", per_class_csv), ("confusion matrix", confusion_png))
    if path
  ]
  print(
    "; ".join(written)
    if written
    else "(--out, or --per_class_csv / --confusion_png, writes the per-class table and the "
    "confusion matrix)",
    file=sys.stderr,
  )
  return dict(videos=len(numbers), failed=failed, top1=top1, top5=top5, confusion=confusion)


def run_many(
  checkpoint: str,
  *,
  video: str | None = None,
  list_file: str | None = None,
  top_k: int = 5,
  labels: str | None = None,
  batch_size: int = 8,
  out: str | None = None,
  per_view: bool = False,
  window: float | None = None,
  hop: float | None = None,
  timeline_png: str | None = None,
  features: str | None = None,
  token_features: bool = False,
  overwrite: bool = False,
  step: int | None = None,
  which: str | None = None,
  labels_from_folders: bool | None = None,
  per_class_csv: str | None = None,
  confusion_png: str | None = None,
) -> tuple[int, int]:
  """The command for many videos (or windows, or features); returns (succeeded, failed).

  Every flag and output path is checked before any work: an output that is an input (a video,
  the --list, the checkpoint) or another output is refused, and so is an existing --out,
  --timeline_png, --per_class_csv or --confusion_png without `overwrite`. `labels_from_folders`
  None: on when every video lies in a folder named after a class (module doc)."""
  from vidtx import video_io

  if (video is None) == (list_file is None):
    raise ValueError("Give exactly one of --video FILE|FOLDER|GLOB or --list FILE.")
  if top_k < 1 or batch_size < 1:
    raise ValueError(f"--top_k={top_k}, --batch_size={batch_size}: expected both >= 1.")
  window, hop = timeline.check_flags(window, hop)
  if window is None and timeline_png:
    raise ValueError("--timeline_png needs --window SECONDS.")
  if token_features and not features:
    raise ValueError("--token_features needs --features OUT_DIR.")
  inputs = video_io.list_videos(video, list_file)
  paths = [path for _, path in inputs]
  classes = _class_folders_asked(
    checkpoint, video, list_file, inputs, labels, labels_from_folders, window
  )
  if classes is None and (per_class_csv or confusion_png):
    raise ValueError(
      f"--{'per_class_csv' if per_class_csv else 'confusion_png'} needs class folders: "
      "--video FOLDER whose subfolders are the checkpoint's classes (--labels_from_folders)."
    )
  if classes is not None:
    per_class_csv, confusion_png = _report_paths(out, per_class_csv, confusion_png)
  outputs.check_paths(
    {
      "--checkpoint": checkpoint,
      "--labels": labels,
      "--list": list_file,
      "--video": video if list_file is None else None,
      "--video file" if list_file is None else "--list entry": paths,
    },
    {
      "--out": out,
      "--timeline_png": timeline_png,
      "--features": features,
      "--per_class_csv": per_class_csv,
      "--confusion_png": confusion_png,
    },
  )
  if out:
    outputs.check_output_file(out, "--out", overwrite=overwrite, suffixes=OUT_SUFFIXES)
  if timeline_png:
    outputs.check_output_file(
      timeline_png, "--timeline_png", overwrite=overwrite, suffixes=timeline.image_suffixes()
    )
  for path, flag, suffix in (
    (per_class_csv, "--per_class_csv", ".csv"),
    (confusion_png, "--confusion_png", ".png"),
  ):
    if path:
      outputs.check_output_file(path, flag, overwrite=overwrite, suffixes=(suffix,))
  if features:
    # Before any decoding: a directory that is not ours is refused up front.
    ownership.check_claimable(features, "features", hint="Choose a new --features directory.")
  converted = load_checkpoint(checkpoint, step, which)
  names = class_names(converted, labels)
  unknown = sorted(set(classes.values()) - set(names)) if classes is not None else []
  if unknown:  # The names read up front were another checkpoint's (replaced since).
    raise ValueError(f"--video {video}: class folder(s) {unknown} are not classes of the model.")
  scores: dict[int, np.ndarray] | None = {} if classes is not None else None
  ok, bad = predict_many(
    converted,
    inputs,
    names=names,
    top_k=top_k,
    batch_size=batch_size,
    out=out,
    per_view=per_view,
    window_s=window,
    hop_s=hop,
    timeline_png=timeline_png,
    features=features,
    token_features=token_features,
    scores=scores,
  )
  if classes is not None:
    accuracy_report(
      scores, inputs, classes, names, per_class_csv=per_class_csv, confusion_png=confusion_png
    )
  written = [f"results in {out}"] if out else []
  written += [f"features in {features}"] if features else []
  written += [f"timeline in {timeline_png}"] if timeline_png and ok else []
  print(
    f"{ok} of {len(inputs)} video(s) predicted" + "".join(f"; {w}" for w in written),
    file=sys.stderr,
  )
  return ok, bad


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  options = dict(
    out=f.out,
    per_view=f.per_view,
    window=f.window,
    hop=f.hop,
    timeline_png=f.timeline_png,
    features=f.features,
    token_features=f.token_features,
    labels_from_folders=f.labels_from_folders,
    per_class_csv=f.per_class_csv,
    confusion_png=f.confusion_png,
  )
  if f.input is not None and (f.list or any(v not in (None, False) for v in options.values())):
    raise app.UsageError("--input CLIP.npy takes none of --list, --out, --window, --features.")
  many = f.input is None and many_mode(f.video, f.list, **options)
  if many and (f.rollout or f.logits_out):
    raise app.UsageError("--rollout and --logits_out take one --video FILE.")
  if not many and (f.video is None) == (f.input is None):
    raise app.UsageError("Give exactly one of --video FILE or --input CLIP.npy.")
  try:
    if many:
      ok, _ = run_many(
        f.checkpoint,
        video=f.video,
        list_file=f.list,
        top_k=f.top_k,
        labels=f.labels,
        batch_size=f.batch_size,
        overwrite=f.overwrite,
        step=f.step,
        which=f.which,
        **options,
      )
      sys.exit(0 if ok else 1)
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
      overwrite=f.overwrite,
      step=f.step,
      which=f.which,
    )
  except (ValueError, OSError, locks.LockedError) as e:
    # Bad inputs, paths and a busy --features directory are the user's to fix: the message,
    # not a traceback.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def run_cli() -> None:
  """The command line (vidtx-predict, python -m vidtx.predict); flags are defined here."""

  cli.quiet_start_up()
  flags.DEFINE_string(
    "checkpoint",
    None,
    "Converted-checkpoint directory (vidtx.convert), or a train.py run directory (converted "
    "in memory: its best checkpoint, see --which and --step).",
  )
  cli.define_run_checkpoint_flags()
  flags.DEFINE_boolean(
    "labels_from_folders",
    None,
    "Each video's true class is its subfolder of --video FOLDER: report top-1/top-5, the "
    "worst classes, a per-class table and a confusion matrix (default: on when every "
    "subfolder is a class of the checkpoint).",
  )
  flags.DEFINE_string(
    "per_class_csv",
    None,
    "Class folders: the per-class table (.csv; default: next to --out, RESULTS_per_class.csv).",
  )
  flags.DEFINE_string(
    "confusion_png",
    None,
    "Class folders: the confusion matrix (.png; default: next to --out, RESULTS_confusion.png).",
  )
  flags.DEFINE_string(
    "video",
    None,
    "A video file to classify (anything FFmpeg decodes), a folder (recursive: "
    + " ".join(VIDEO_EXTENSIONS)
    + "), or a glob (quoted).",
  )
  flags.DEFINE_string("list", None, "Videos to classify: one path per line, or a CSV (column 1).")
  flags.DEFINE_string("out", None, "Results: .jsonl (one JSON object per video or window) or .csv.")
  flags.DEFINE_boolean("per_view", False, "Add each view's logits to the --out JSON lines.")
  flags.DEFINE_boolean(
    "overwrite",
    False,
    "Replace an existing --out, --logits_out, --rollout, --timeline_png, --per_class_csv or "
    "--confusion_png file (never an input).",
  )
  flags.DEFINE_float(
    "window",
    None,
    "Long videos: classify every window [t, t + window) seconds (each as a whole video).",
  )
  flags.DEFINE_float("hop", None, "Seconds between window starts (default: --window).")
  flags.DEFINE_string(
    "timeline_png",
    None,
    "With --window: a strip of the top class over time (.png, or another matplotlib format).",
  )
  flags.DEFINE_string(
    "features",
    None,
    "Write each video's (window's) pre-logits embedding, the mean over its views, as float32 "
    ".npy here, with index.jsonl (a new or empty directory, or one this option wrote).",
  )
  flags.DEFINE_boolean(
    "token_features",
    False,
    "With --features: also the final token grid (T', N, D), mean over views (TimeSformer).",
  )
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
  app.run(main, flags_parser=cli.flags_parser(__doc__))


if __name__ == "__main__":
  run_cli()
