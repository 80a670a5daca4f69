"""Multi-view evaluation shared by train.py and eval.py.

Each validation video arrives as views (num_test_clips x 1 or 3 crops; with 'whole_video'
sampling, as many clips as cover it, over several elements). The model scores every view on the
devices; the host combines the views of each video (`AGGREGATIONS`) and computes the metrics of
the label kind (vidtx.metrics): top-1 / top-5 / mean per-class accuracy and a confusion matrix
for single-label data; per split and "action" accuracy for class splits (EPIC-Kitchens); mAP for
multi-label data. Per-video results are kept for the results file, and the confusion counts
for the per-class files (`write_class_reports`).

With several processes each reads its own share of the split; the number of steps is agreed once
per run from the shares' sizes (`_num_batches`), a process out of data feeds masked batches, and
the step's outputs are replicated, so every process combines the views of every video and none
can wait for another that stopped (docs/training.md, "Evaluation on many hosts").

Process 0 prints a progress line while it runs (`validation: done/total videos | views/s |
ETA`, vidtx.progress.Reporter): K400 at 4 x 3 views takes hours.
"""

import dataclasses
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from vidtx import data as vidtx_data
from vidtx import device_augment, metrics, outputs, sharding
from vidtx import paths as vidtx_paths
from vidtx.data import bad_records, reader_config
from vidtx.errors import UserError
from vidtx.progress import Reporter

# How the views of one video are combined (as each project's code does: ViViT mean of logits,
# TimeSformer and X-ViT sum of logits, MMAction2 mean of softmax): (per-view transform, average
# over the views?).
# The softmax is per class split (EPIC's noun and verb heads), a sigmoid for multi-label models.
AGGREGATIONS: dict[str, tuple[str, bool]] = {
  "mean_logits": ("logits", True),
  "sum_logits": ("logits", False),
  "mean_softmax": ("probabilities", True),
}


def view_scores(
  logits: np.ndarray,
  aggregation: str,
  *,
  class_splits: tuple[int, ...] = (),
  multi_label: bool = False,
) -> np.ndarray:
  """(..., K) per-view logits -> the per-view scores `aggregation` adds up."""
  logits = np.asarray(logits, np.float64)
  if AGGREGATIONS[aggregation][0] == "logits":
    return logits
  if multi_label:
    return 1.0 / (1.0 + np.exp(-logits))
  parts = []
  for start, size in zip(
    np.cumsum((0,) + tuple(class_splits[:-1])), class_splits or (logits.shape[-1],), strict=True
  ):
    part = logits[..., start : start + size]
    part = np.exp(part - part.max(axis=-1, keepdims=True))
    parts.append(part / part.sum(axis=-1, keepdims=True))
  return np.concatenate(parts, axis=-1)


def aggregate(
  logits: np.ndarray,
  view_mask: np.ndarray,
  aggregation: str,
  *,
  class_splits: tuple[int, ...] = (),
  multi_label: bool = False,
) -> np.ndarray:
  """(B, V, K) logits of V views, (B, V) mask -> (B, K) video scores."""
  scores = view_scores(logits, aggregation, class_splits=class_splits, multi_label=multi_label)
  total = np.einsum("bvk,bv->bk", scores, view_mask)
  if AGGREGATIONS[aggregation][1]:
    total = total / np.maximum(view_mask.sum(axis=1, keepdims=True), 1.0)
  return total


@dataclasses.dataclass
class _VideoViews:
  """What a run has gathered of one video."""

  scores: np.ndarray | float = 0.0  # (K,) the sum of its views' scores
  views: float = 0.0  # how many views were summed
  label: np.ndarray | None = None  # None until one of its views is scored
  video_id: str | None = None  # None: another process's video
  bad: str | None = None  # why a chunk of it could not be read: the video is left out


class _ViewAccumulator:
  """The views of every video of a run: `add` each batch, then `finish`."""

  def __init__(self) -> None:
    self._videos: dict[int, _VideoViews] = {}  # by video_index
    self._bad: list[int] = []  # the bad videos' indices, in the order they were found

  @property
  def num_videos(self) -> int:
    """Videos seen so far (a whole video split over several elements counts once)."""
    return len(self._videos)

  def _video(self, index: int) -> _VideoViews:
    return self._videos.setdefault(index, _VideoViews())

  def add(
    self,
    scores: np.ndarray,
    out: dict[str, np.ndarray],
    device_batch: dict[str, np.ndarray],
    host: dict[str, np.ndarray],
  ) -> None:
    """One batch: per-view `scores` (B, V, K) and the step's `out` of the global batch, the
    local `device_batch` and its `host` fields (ids and bad records of this process)."""
    per_element = np.einsum("bvk,bv->bk", scores, out["view_mask"])  # (B, V, K) -> (B, K)
    for row, index in enumerate(out["video_index"].tolist()):
      if out["view_mask"][row].sum() == 0:
        continue  # padding, or a bad record skipped
      video = self._video(index)
      video.scores = video.scores + per_element[row]
      video.views = video.views + float(out["view_mask"][row].sum())
      video.label = out["label"][row]
    local = device_batch["batch_mask"] > 0
    for row in np.flatnonzero(local):
      video = self._video(int(device_batch["video_index"][row]))
      video.video_id = bad_records.as_text(host["video_id"][row]) or bad_records.as_text(
        host["source"][row]
      )
    for row in np.flatnonzero(host["bad"]):
      index = int(device_batch["video_index"][row])
      video = self._video(index)
      if video.bad is None:
        self._bad.append(index)
      video.bad = (
        f"{bad_records.as_text(host['source'][row])}: {bad_records.as_text(host['error'][row])}"
      )

  def finish(self) -> tuple[list[_VideoViews], list[str]]:
    """(the videos with scored views and no bad chunk, by video_index; why each bad video is bad,
    in the order they were found). A video with one unreadable chunk is left out entirely."""
    good = [
      self._videos[i]
      for i in sorted(self._videos)
      if self._videos[i].label is not None and self._videos[i].bad is None
    ]
    return good, [self._videos[i].bad for i in self._bad]


class EvaluationStopped(Exception):
  """`run`'s should_stop() said to stop (a signal): the evaluation was left unfinished."""


class MultiViewEvaluator:
  """Evaluates params on one split: `run(params) -> {'top1', 'top5', 'num_videos', ...}`.

  After a run, `videos` holds this process's per-video rows (vidtx.metrics.per_video_rows),
  `confusion` the confusion matrix (single-label data) and `class_reports` the confusion counts
  the per-class files are made of, for the caller to write.
  """

  def __init__(
    self,
    model: nn.Module,
    dataset_configs: reader_config.DatasetConfig | Mapping[str, Any],
    split: str,
    *,
    batch_size: int,
    mesh: Mesh,
    aggregation: str = "mean_logits",
    class_names: list[str] | None = None,
    progress: bool = True,
    rules: sharding.Rules | None = None,
  ):
    if aggregation not in AGGREGATIONS:
      raise UserError(
        f"config.eval_aggregation={aggregation!r}: expected one of {sorted(AGGREGATIONS)}."
      )
    self.model = model
    self.dataset = dataset = reader_config.as_dataset_config(dataset_configs)
    self.split = split
    self.batch_size = batch_size
    self.mesh = mesh
    self.aggregation = aggregation
    self.class_names = class_names
    self.class_splits = dataset.class_splits
    self._normalisation = dataset.normalisation
    self.multi_label = dataset.multi_label
    self.skip_bad_records = dataset.skip_bad_records
    self.expected_videos = dataset.examples_per_subset.get(split)
    self._local_batch_size = sharding.check_batch_size(batch_size, mesh, "eval_batch_size")
    # Traced under the mesh and config.mesh.rules (`rules`), as the training step: activations
    # pinned, a Pallas attention kernel in shard_map over the mesh.
    self._eval_step = jax.jit(
      sharding.under_rules(self._step, mesh, rules), out_shardings=sharding.replicated(mesh)
    )
    self.progress = progress
    self.videos: list[dict[str, Any]] = []
    self.confusion: np.ndarray | None = None
    # (file suffix, (K, K) counts, class names) of each head: one, or one per class split.
    self.class_reports: list[tuple[str, np.ndarray, list[str]]] = []
    self._noted_multi_label = False
    self._batches_per_run: int | None = None  # _num_batches, once counted

  def _step(self, params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    views = batch["inputs"]
    if views.dtype == jnp.uint8:  # The reader's pixels, normalised here on the accelerator.
      views = device_augment.normalise(views, *self._normalisation)
    b, v = views.shape[:2]
    # (B, V, T, H, W, C) -> (B*V, T, H, W, C): views are independent clips for the model.
    clips = views.reshape((b * v,) + views.shape[2:])
    logits, _ = self.model.apply({"params": params}, clips, train=False)
    logits = logits.astype(jnp.float32).reshape(b, v, -1)  # (B*V, K) -> (B, V, K)
    # Replicated out: every process gets the whole global batch and aggregates all videos; the
    # gather is part of this step, not an extra cross-host sync.
    return {
      "logits": logits,
      "label": batch["label"],
      "video_index": batch["video_index"],
      "view_mask": batch["view_mask"] * batch["batch_mask"][:, None],
      # Whether any process could not produce this batch: all of them stop after this step.
      "failed": jnp.max(batch["failed"]),
    }

  def _num_batches(self) -> int | None:
    """The steps of every evaluation of this split: the largest share's batches, agreed once
    per run (one all-gather of each process's count; the files do not change during a run).
    None with one process: it reads until its data ends, with nobody to agree with.

    Every process runs exactly this many steps (a process out of data feeds masked batches), so
    none can wait in the step's collective for another that has stopped.
    """
    if jax.process_count() == 1:
      return None
    if self._batches_per_run is not None:
      return self._batches_per_run
    error = None
    try:
      elements = vidtx_data.count_eval_elements(
        self.dataset,
        self.split,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
      )
      local = -(-elements // self._local_batch_size)  # ceil
    except Exception as e:  # Raised after the gather, on every process, instead of a hang.
      error, local = e, -1
    counts = multihost_utils.process_allgather(np.array(local, np.int64)).tolist()
    if error is not None:
      raise error
    if min(counts) < 0:
      raise UserError(
        f"Evaluation of split {self.split!r}: process {counts.index(-1)} could not count its "
        "share of the split's videos; its log says why."
      )
    self._batches_per_run = max(counts)
    return self._batches_per_run

  def _batches(
    self,
  ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray], Exception | None]]:
    """(device batch, host fields, this process's error or None) for each of the evaluation's
    steps (`_num_batches`; one process: until its data ends).

    A process that has run out of data feeds fully masked batches, made from the dataset's
    element spec (it may never have seen an element). A read error or bad record is not raised
    here, where the other processes would wait for this one in the next step: the batch goes
    out masked and flagged ('failed'), and every process stops after that step.
    """
    num_batches = self._num_batches()
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    dataset = vidtx_data.build_eval_dataset(
      self.dataset, self.split, batch_size=self._local_batch_size, **process
    )
    masked = _masked_batch(dataset.element_spec)
    batches = bad_records.CleanBatches(
      dataset.as_numpy_iterator(),
      self.dataset,
      self.split,
      skip_bad_records=self.skip_bad_records,
      **process,
    )
    step = 0
    while num_batches is None or step < num_batches:
      error = None
      try:  # A read error (named: the file and record, or the empty split) or a bad record.
        batch = batches.read()
        if num_batches is None:
          if batch is None:
            return
        elif step == num_batches - 1 and batch is not None and batches.read() is not None:
          raise UserError(
            f"Split {self.split!r}: process {jax.process_index()} has more than the "
            f"{num_batches} batches counted (vidtx.data.pipeline.count_eval_elements); its "
            "files changed during the run?"
          )
        device_batch = batches.clean(masked if batch is None else batch)
      except ValueError as e:
        error = e
      if error is not None:
        device_batch = batches.clean(masked)
      device_batch["failed"] = np.full_like(device_batch["batch_mask"], error is not None)
      yield device_batch, batches.host, error
      step += 1

  def run(self, params: Any, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """The evaluation of `params`; with `should_stop` (one process), EvaluationStopped as soon as
    it returns True between batches: a signal need not wait for hours of evaluation."""
    start = time.time()
    accumulator = _ViewAccumulator()
    # Every process sees the whole global batch, so process 0's counts are the run's.
    reporter = Reporter(
      self.expected_videos,
      prefix=f"{self.split}: ",
      unit=" videos",
      rates=(("views/s", 1.0, 1),),
      stream=sys.stdout,
      enabled=self.progress and jax.process_index() == 0,
      final_line=False,  # A short evaluation adds no line; a long one ends its own.
    )
    for device_batch, host, error in self._batches():
      if should_stop is not None and should_stop():
        reporter.finish()  # Ends a line redrawn in place before the stop is reported.
        raise EvaluationStopped()
      if error is not None and jax.process_count() == 1:
        raise error  # Nobody waits for this process: before a (long) compilation.
      out = _local_copy(self._eval_step(params, sharding.to_global(device_batch, self.mesh)))
      if error is not None:
        raise error
      if out["failed"]:
        raise UserError(
          f"Evaluation of split {self.split!r} stopped: another process could not read its "
          "share of the split (its log names the file and record)."
        )
      scores = view_scores(
        out["logits"],
        self.aggregation,
        class_splits=self.class_splits,
        multi_label=self.multi_label,
      )
      accumulator.add(scores, out, device_batch, host)
      reporter.update(accumulator.num_videos, work=reporter.work + float(out["view_mask"].sum()))
    reporter.finish()
    videos, bad = accumulator.finish()
    if not videos:
      raise UserError(f"Split {self.split!r} produced no video to evaluate.")
    scores = np.stack([video.scores for video in videos])  # N x (K,) -> (N, K)
    views = [video.views for video in videos]
    if AGGREGATIONS[self.aggregation][1]:
      scores = scores / np.array(views)[:, None]
    targets = np.stack([video.label for video in videos])  # (N,) or (N, K)
    results = self._metrics(scores, targets)
    results.update(
      num_videos=len(videos),
      views_per_video=float(np.mean(views)),
      bad_videos=len(bad),
      eval_seconds=time.time() - start,
    )
    if bad:
      print(
        f"Evaluation skipped {len(bad)} bad video(s) of split {self.split!r}, e.g. {bad[0]}",
        flush=True,
      )
    if self.expected_videos is not None and len(videos) + len(bad) != int(self.expected_videos):
      print(
        f"Note: split {self.split!r} has {len(videos) + len(bad)} videos, "
        f"examples_per_subset says {self.expected_videos}.",
        flush=True,
      )
    # This process's videos: the others' have no id here.
    mine = [row for row, video in enumerate(videos) if video.video_id is not None]
    self.videos = (
      metrics.per_video_rows(
        [videos[row].video_id for row in mine],
        scores[mine],
        targets[mine],
        k=5,
        class_names=self.class_names,
      )
      if mine
      else []  # A process whose share of the split is empty.
    )
    return results

  def write_videos(self, path: str) -> str:
    """Writes this process's per-video rows of the last run as JSON lines, atomically.

    With several processes each writes its own videos to PATH with '.process<i>' before the
    extension. Returns the path written.
    """
    if jax.process_count() > 1:
      root, ext = os.path.splitext(path)
      path = f"{root}.process{jax.process_index()}{ext}"
    with outputs.atomic_writer(path) as f:
      for row in self.videos:
        f.write(json.dumps(row) + "\n")
    return path

  def _metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    num_classes = scores.shape[1]
    all_names = (
      list(self.class_names)
      if self.class_names is not None and len(self.class_names) == num_classes
      else [str(c) for c in range(num_classes)]
    )
    if self.multi_label:
      results = metrics.multilabel_metrics(scores, targets)
      self.confusion = None
      self.class_reports = []  # A confusion matrix needs one label per video.
      return results
    if self.class_splits:
      names = self.dataset.split_names
      results = metrics.split_metrics(
        scores,
        targets,
        self.class_splits,
        names,
        logits=AGGREGATIONS[self.aggregation][0] == "logits",
      )
      # The headline numbers of a split model are its action accuracies (all splits right).
      results.update(top1=results["action_top1"], top5=results["action_top5"])
      self.confusion = None
      # One report per head (EPIC: nouns, verbs), each in its own classes.
      matrices = metrics.split_confusion_matrices(scores, targets, self.class_splits)
      offsets = np.cumsum((0,) + tuple(self.class_splits))
      self.class_reports = [
        (f"_{name}", matrix, all_names[offsets[s] : offsets[s + 1]])
        for s, (name, matrix) in enumerate(zip(names, matrices, strict=True))
      ]
      return results
    labels = targets.astype(np.int64)
    results = metrics.classification_metrics(scores, labels)
    self.confusion = metrics.confusion_matrix(np.argmax(scores, axis=1), labels, num_classes)
    self.class_reports = [("", self.confusion, all_names)]
    return results

  def write_class_reports(self, workdir: str) -> list[str]:
    """Writes the last run's per-class files into `workdir`, atomically; returns their paths.

    For each head (`_noun`, `_verb` after the split for class splits): eval_<split>_per_class.csv
    (metrics.per_class_csv), eval_<split>_confusion.csv (metrics.confusion_csv) and
    eval_<split>_confusion.png (metrics.confusion_matrix_figure). Multi-label data has none (a
    note says so once). Call on process 0 only.
    """
    if self.multi_label:
      if not self._noted_multi_label:
        print(
          f"Note: no per-class or confusion files for multi-label split {self.split!r} "
          "(a confusion matrix needs one label per video).",
          flush=True,
        )
        self._noted_multi_label = True
      return []
    vidtx_paths.makedirs(workdir)
    paths = []
    for suffix, matrix, names in self.class_reports:
      stem = os.path.join(workdir, f"eval_{self.split}{suffix}")
      png = io.BytesIO()
      metrics.confusion_matrix_figure(matrix, names).canvas.print_png(png)
      for path, data in (
        (f"{stem}_per_class.csv", metrics.per_class_csv(matrix, names).encode("utf-8")),
        (f"{stem}_confusion.csv", metrics.confusion_csv(matrix, names).encode("utf-8")),
        (f"{stem}_confusion.png", png.getvalue()),
      ):
        with outputs.atomic_writer(path, "wb") as f:  # Nothing left behind on a full disk.
          f.write(data)
        paths.append(path)
    return paths

  def worst_classes_summary(self, n: int = 5) -> str:
    """Lines naming the `n` worst classes of the last run (top-1 accuracy, videos), per head;
    '' for multi-label data."""
    lines = []
    for suffix, matrix, names in self.class_reports:
      rows = metrics.worst_classes(matrix, names, n)
      head = f" ({suffix[1:]})" if suffix else ""
      lines.append(
        f"Worst {len(rows)} classes{head} of {self.split} (top-1, videos): "
        + ", ".join(f"{row['name']} {row['accuracy']:.1%} of {row['support']}" for row in rows)
      )
    return "\n".join(lines)


def _masked_batch(element_spec: dict[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
  """A batch of the reader's shapes and dtypes with every element masked (batch_mask 0): zeros,
  False, and b'' for strings, as as_numpy_iterator yields them."""
  batch = {}
  for key, spec in element_spec.items():
    if not spec.shape.is_fully_defined():
      raise UserError(f"The evaluation batch's {key!r} has no fixed shape: {spec.shape}.")
    shape = tuple(spec.shape.as_list())
    if spec.dtype == tf.string:
      batch[key] = np.full(shape, b"", dtype=object)
    else:
      batch[key] = np.zeros(shape, spec.dtype.as_numpy_dtype)
  return batch


def _local_copy(tree: Any) -> Any:
  """The replicated outputs of a step as numpy, from this process's first device (never a
  transfer from another host's devices)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def summary(results: dict[str, Any]) -> str:
  """One line of the headline metrics of `results` (whichever label kind produced them)."""
  parts = [f"top-1 {results['top1']:.2%}", f"top-5 {results['top5']:.2%}"]
  if "mean_class_accuracy" in results:
    parts.append(f"mean class accuracy {results['mean_class_accuracy']:.2%}")
  if "mAP" in results:
    parts.append(f"mAP {results['mAP']:.2%}")
  parts += [
    f"{key[: -len('_top1')]} top-1 {value:.2%}"
    for key, value in results.items()
    if key.endswith("_top1") and key != "action_top1"
  ]
  return "  ".join(parts)
