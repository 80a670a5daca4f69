"""Many videos (a folder, a glob, a --list), or the windows of long videos, in model calls of
--batch_size views shared across videos; their results, features and timeline (vidtx.predict's
module doc says what each holds)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vidtx import locks, ownership, progress
from vidtx.inference import classifier, preprocess, results, timeline

# JAX, Flax, TensorFlow and PyAV are imported inside the functions that use them (fast --help).
if TYPE_CHECKING:
  import flax.linen as nn

  from vidtx.checkpoints import store
  from vidtx.data.reader_config import DatasetConfig


@functools.cache
def _jitted_outputs(flax_model: nn.Module, tokens: bool):
  """(logits, pre_logits[, encoded tokens]) of a batch; cached per model, compiled per shape."""
  import jax

  def apply(params, clips):
    logits, aux = flax_model.apply({"params": params}, clips, train=False)
    outputs = (logits, aux["pre_logits"])
    return outputs + (aux["encoded_tokens"],) if tokens else outputs

  return jax.jit(apply)


def token_features_available(converted: store.Converted) -> bool:
  """Whether the model's aux outputs hold the final token grid ('encoded_tokens'): TimeSformer
  does; ViViT and X-ViT do not return it."""
  import jax

  clip = np.zeros((1,) + preprocess.expected_clip(converted.preprocessing), np.float32)
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
  """Predicts every (id, path) of `inputs` (see vidtx.predict's module doc); returns (videos
  whose results were all written, videos that failed), counted on what the results hold. A bad
  video is reported on stderr and in the output, never fatal. Output paths are the caller's to
  check (predict.run_many). `scores`, when given, receives input number -> its aggregated class
  probabilities (whole videos only, not --window's windows)."""
  aggregation = converted.preprocessing["aggregation"]
  classifier.check_aggregation(aggregation)
  configs = preprocess.dataset_configs(converted)
  view_rows = preprocess.view_names(converted.preprocessing)
  if features:
    ownership.claim(features, "features", hint="Choose a new --features directory.")
  tokens = bool(token_features and features) and _token_grid_or_note(converted)
  batcher = _Batcher(converted, batch_size, tokens)
  reporter = (
    progress.Reporter(len(inputs), prefix="predict: ", unit=" videos", counters={"bad": 0})
    if len(inputs) > 1
    else None
  )
  with contextlib.ExitStack() as stack:
    if features:
      stack.enter_context(locks.hold(features, "predict --features"))
    sink = results.Results(stack, out, features, window_s is not None)
    finish = functools.partial(
      _write_results,
      sink=sink,
      view_rows=view_rows,
      aggregation=aggregation,
      names=names,
      top_k=top_k,
      per_view=per_view,
      features=features,
      scores=scores,
    )
    try:
      for number, (video_id, path) in enumerate(inputs, 1):
        items = _video_items(number, video_id, path, configs, view_rows, window_s, hop_s)
        _feed_video(items, batcher, finish, number, video_id, path)
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


def _token_grid_or_note(converted: store.Converted) -> bool:
  """Whether --token_features can be written; when not, a note on stderr says so (the
  pre-logits embeddings are written all the same)."""
  if token_features_available(converted):
    return True
  print(
    f"note: --token_features: {converted.model_name} returns no token grid "
    "('encoded_tokens'); writing the pre-logits embeddings only.",
    file=sys.stderr,
  )
  return False


def _feed_video(
  items: Iterator[tuple[_Item, np.ndarray]],
  batcher: _Batcher,
  finish: Callable[[list[_Item]], None],
  number: int,
  video_id: str,
  path: str,
) -> None:
  """The views of one video (or of its windows) into the batcher, finishing the items that
  complete; a video that cannot be decoded becomes one failed item in its place."""
  while True:
    try:
      item_views = next(items, None)
    except ValueError as e:
      error = results.printable(str(e))
      print(f"error: {error}", file=sys.stderr, flush=True)
      failed = _Item(number, video_id, path, None, None, None, 0, error=error)
      finish(batcher.add_failed(failed))
      return
    if item_views is None:
      return
    finish(batcher.add(*item_views))


def _write_results(
  items: list[_Item],
  *,
  sink: results.Results,
  view_rows: Sequence[str],
  aggregation: str,
  names: Sequence[str],
  top_k: int,
  per_view: bool,
  features: str | None,
  scores: dict[int, np.ndarray] | None,
) -> None:
  """The records (and features) of completed items, in order: an error, or the top-k of the
  aggregated views; `scores` gets the probabilities of whole videos whose row was written."""
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
      preprocess.check_finite(logits, results.printable(item.path), "logits", view_rows)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sink.result(item.number, item.window, record | {"error": str(e)})
      continue
    probabilities = classifier.aggregate(logits, aggregation)
    record["top_k"] = _top_k(probabilities, names, top_k)
    if per_view:
      record["view_logits"] = np.round(logits, 6).tolist()
    # The views' embeddings averaged: the head is linear, so head(mean) = the mean logits.
    embedding = pre_logits.mean(0) if features else None  # (V, D) -> (D,)
    grid = token_grid[0].mean(0) if token_grid else None  # (V, T', N, D) -> (T', N, D)
    sink.result(item.number, item.window, record, embedding, grid)
    if scores is not None and item.window is None and sink.succeeded[item.number]:
      scores[item.number] = probabilities  # Counted only when its row was written too.


def _video_items(
  number: int,
  video_id: str,
  path: str,
  configs: DatasetConfig,
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
      preprocess.check_finite(views, path, "views", view_rows)
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
