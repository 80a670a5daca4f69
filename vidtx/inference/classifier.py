"""The checkpoint predict reads (converted, or a train.py run converted in memory), its class
names, the model calls in batches and the aggregation of the views' logits."""

from __future__ import annotations

import functools
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vidtx.errors import UserError
from vidtx.inference import preprocess

# JAX, Flax, orbax and TensorFlow are imported inside the functions that use them (fast --help).
if TYPE_CHECKING:
  import flax.linen as nn

  from vidtx.checkpoints import store


def _convert_command(checkpoint: str, step: int | None, which: str | None) -> str:
  """The vidtx.convert command that writes what predict reads from the run `checkpoint`."""
  from vidtx import paths

  # vidtx.convert writes a local folder: beside a local run, in the working directory for one
  # kept in a bucket.
  if paths.is_url(checkpoint):
    out = checkpoint.rstrip("/").rsplit("/", 1)[-1] + "_converted"
  else:
    out = os.path.normpath(checkpoint) + "_converted"
  choice = f" --step {step}" if step is not None else f" --which {which}" if which else ""
  return f"python -m vidtx.convert --src {shlex.quote(checkpoint)} --out {shlex.quote(out)}{choice}"


def load_checkpoint(
  checkpoint: str, step: int | None = None, which: str | None = None
) -> store.Converted:
  """--checkpoint: a converted checkpoint, or a train.py run converted in memory (its best
  complete checkpoint, `which='latest'` the newest, or `step`: vidtx.run_files), whose
  one line naming the step taken goes to stderr. Errors name the vidtx.convert command."""
  from vidtx import run_files
  from vidtx.checkpoints import store

  if store.is_converted_dir(checkpoint):
    for flag, value in (("--step", step), ("--which", which)):
      if value is not None:
        raise UserError(
          f"{flag}={value} picks a checkpoint of a train.py run; --checkpoint {checkpoint} is "
          "a converted checkpoint (one set of parameters)."
        )
    return store.load(checkpoint)
  if not run_files.looks_like_run(checkpoint):
    if os.path.isdir(checkpoint):
      raise FileNotFoundError(
        f"--checkpoint {checkpoint}: neither a converted checkpoint ({store.MODEL_FILE}) nor a "
        f"train.py run ({run_files.CONFIG_FILE} and {run_files.CHECKPOINTS_DIR}/); convert other "
        f"checkpoints first: {_convert_command(checkpoint, None, None)}."
      )
    return store.load(checkpoint)  # Its error: no such directory.
  try:
    converted = run_files.export_run(checkpoint, step=step, which=which)
  except (ValueError, OSError) as e:
    # The same as vidtx.convert would say: name that command, the usual way to a fixed copy.
    message = " ".join(str(e).split())
    raise UserError(
      f"--checkpoint {checkpoint} (a train.py run, read as "
      f"{_convert_command(checkpoint, step, which)} would): {message}"
    ) from e
  print(converted.source["checkpoint"], file=sys.stderr, flush=True)
  return converted


def read_labels_file(labels_file: str) -> list[str]:
  """--labels: one class name per line (blank lines skipped)."""
  from vidtx import video_io

  if os.path.lexists(labels_file):
    video_io.check_regular_file(labels_file, "--labels")  # A named pipe would block the open.
  try:
    with open(labels_file, encoding="utf-8-sig") as f:
      # Blank lines are skipped, as vidtx.data.read_label_names does for labels.txt.
      return [line.strip() for line in f.read().splitlines() if line.strip()]
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"--labels {labels_file}: cannot read it as text ({e}).") from e


def class_names(converted: store.Converted, labels_file: str | None = None) -> list[str]:
  """--labels (one name per line), else the checkpoint's labels, else 'class <i>'."""
  if labels_file:
    names = read_labels_file(labels_file)
    if len(names) != converted.num_classes:
      raise UserError(
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
    raise UserError(f"batch_size={batch_size}, {len(clips)} clips: expected >= 1 of each.")
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


def check_aggregation(aggregation: str) -> None:
  from vidtx import evaluation

  if aggregation not in evaluation.AGGREGATIONS:
    raise UserError(
      f"preprocessing.aggregation={aggregation!r}: expected one of "
      f"{sorted(evaluation.AGGREGATIONS)}."
    )


def aggregate(view_logits: np.ndarray, aggregation: str) -> np.ndarray:
  """Per-view logits (V, K) -> class probabilities (K,), as the evaluation aggregates views.

  'mean_logits' and 'sum_logits': softmax of the aggregated logits; 'mean_softmax': the mean of
  the views' probabilities.
  """
  import jax

  from vidtx import evaluation

  check_aggregation(aggregation)
  # (V, K) -> (1, V, K): the evaluator aggregates a batch of videos.
  view_logits = np.asarray(view_logits, np.float32)[None]
  scores = evaluation.aggregate(view_logits, np.ones(view_logits.shape[:2]), aggregation)[0]
  probabilities = scores if aggregation == "mean_softmax" else jax.nn.softmax(scores)
  return np.asarray(probabilities, np.float32)


def predict_frames(
  converted: store.Converted, frames: np.ndarray, batch_size: int = 8, source: str = "the video"
) -> tuple[np.ndarray, np.ndarray]:
  """Decoded frames (N, H, W, 3) uint8 -> (probabilities (K,), view logits (V, K)).

  Raises ValueError naming `source` and the views when the views or logits are not finite.
  """
  aggregation = converted.preprocessing["aggregation"]
  check_aggregation(aggregation)  # Before the work, not after it.
  names = preprocess.view_names(converted.preprocessing)
  views = preprocess.check_finite(preprocess.video_views(frames, converted), source, "views", names)
  view_logits = preprocess.check_finite(
    model_logits(converted, views, batch_size), source, "logits", names
  )
  return aggregate(view_logits, aggregation), view_logits


def predict_video(
  converted: store.Converted, path: str, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
  """The video file at `path` -> (probabilities (K,), view logits (V, K)); see the module doc.
  Decodes only the sampled frames (`preprocess.streamed_views`)."""
  aggregation = converted.preprocessing["aggregation"]
  check_aggregation(aggregation)
  names = preprocess.view_names(converted.preprocessing)
  views = preprocess.check_finite(
    preprocess.streamed_views(path, converted)[0], path, "views", names
  )
  view_logits = preprocess.check_finite(
    model_logits(converted, views, batch_size), path, "logits", names
  )
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
  clips = preprocess.check_clip(array, converted.preprocessing, source)
  return preprocess.check_finite(
    model_logits(converted, clips, batch_size), source, "logits", preprocess.clip_names(len(clips))
  )
