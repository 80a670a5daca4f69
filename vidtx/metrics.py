"""Video-level evaluation metrics, computed on the host in numpy.

Every function takes per-video aggregated scores `scores` (N, K): logits or probabilities, higher
is better. Labels come in one of three forms:

- single-label: int `labels` (N,);
- multi-label: multi-hot {0, 1} `targets` (N, K);
- class splits (EPIC-Kitchens, as scenic's ViViT does it): the K outputs are the concatenation of
  several heads, e.g. `class_splits=(300, 97)` for EPIC-100 nouns then verbs, and a video has one
  label per split in the global index space (EPIC stores `[noun, 300 + verb]`), given as int
  (N, num_splits) or as multi-hot (N, K) with exactly one 1 per split.

Ties between scores always go to the lower class index, like np.argmax and jax.lax.top_k: an
untrained model with equal logits counts as predicting class 0, not as right about everything.
Scores may hold +-inf (masked classes) but not NaN: a NaN model has no ranking to report, and
train.py already stops on a non-finite loss.
"""

import csv
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from vidtx.errors import UserError

# action_top5 materialises the joint (noun, verb, ...) scores of a chunk of videos at a time; this
# bounds the chunk to about 32 MiB of float64 (EPIC-100: 29,100 pairs, so 144 videos a chunk).
_JOINT_CHUNK_ELEMENTS = 1 << 22


# ----------------------------------------------------------------------------- input checks


def _check_scores(scores: ArrayLike) -> np.ndarray:
  scores = np.asarray(scores)
  if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
    raise UserError(
      f"scores: expected a (num_videos, num_classes) array with at least one video "
      f"and one class, got shape {scores.shape}."
    )
  if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
    raise UserError(f"scores: expected a float or int array, got dtype {scores.dtype}.")
  scores = scores.astype(np.float64)
  num_nan = int(np.isnan(scores).sum())
  if num_nan:
    raise UserError(f"scores: expected no NaN, got {num_nan} NaN values.")
  return scores


def _check_labels(
  labels: ArrayLike, num_videos: int, num_classes: int, name: str = "labels"
) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (num_videos,):
    raise UserError(
      f"{name}: expected shape ({num_videos},), one class index per video, got "
      f"shape {labels.shape}."
    )
  if not np.issubdtype(labels.dtype, np.integer):
    raise UserError(f"{name}: expected integer class indices, got dtype {labels.dtype}.")
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    raise UserError(
      f"{name}: expected class indices in [0, {num_classes}), got "
      f"{labels[bad][0]} (at video {int(np.argmax(bad))})."
    )
  return labels.astype(np.int64)


def _check_multi_hot(
  targets: ArrayLike, shape: tuple[int, ...], name: str = "targets"
) -> np.ndarray:
  targets = np.asarray(targets)
  if targets.shape != shape:
    raise UserError(
      f"{name}: expected a multi-hot array of shape {shape} like scores, got shape {targets.shape}."
    )
  if not np.isin(targets, (0, 1)).all():
    raise UserError(
      f"{name}: expected multi-hot values in {{0, 1}}, got "
      f"{np.unique(targets[~np.isin(targets, (0, 1))])[:5].tolist()}."
    )
  return targets.astype(np.float64)


# ----------------------------------------------------------------------------- single-label


def _label_rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """(N,) position of each label when the classes are sorted best first, ties to the lower index.

  Counting beats a sort: O(N K) and no tie-breaking subtleties of argsort.
  """
  label_scores = scores[np.arange(len(labels)), labels][:, None]
  lower_index = np.arange(scores.shape[1])[None, :] < labels[:, None]
  ahead = (scores > label_scores) | ((scores == label_scores) & lower_index)
  return ahead.sum(axis=1)


def _topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
  """(N, k) best classes first; the stable sort puts tied classes in index order."""
  return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def topk_correct(scores: ArrayLike, labels: ArrayLike, k: int) -> np.ndarray:
  """bool (N,): whether each video's label is among its k best classes (k clipped to K)."""
  scores = _check_scores(scores)
  labels = _check_labels(labels, *scores.shape)
  if k < 1:
    raise UserError(f"k: expected k >= 1, got {k}.")
  return _label_rank(scores, labels) < k


def per_class_accuracy(scores: ArrayLike, labels: ArrayLike) -> np.ndarray:
  """float (K,): top-1 recall of each class; NaN for classes with no video in `labels`."""
  scores = _check_scores(scores)
  num_classes = scores.shape[1]
  labels = _check_labels(labels, *scores.shape)
  correct = np.argmax(scores, axis=1) == labels
  counts = np.bincount(labels, minlength=num_classes)
  hits = np.bincount(labels, weights=correct, minlength=num_classes)
  accuracy = np.full(num_classes, np.nan)
  np.divide(hits, counts, out=accuracy, where=counts > 0)
  return accuracy


def mean_class_accuracy(scores: ArrayLike, labels: ArrayLike) -> float:
  """Mean over classes of per-class top-1 recall ("mean per-class accuracy", Diving-48/SSv2).

  Classes absent from `labels` are excluded from the mean rather than counted as 0 or 1, so on a
  subset of the validation set the number is the mean over the classes that subset holds.
  """
  return float(np.nanmean(per_class_accuracy(scores, labels)))


def confusion_matrix(predictions: ArrayLike, labels: ArrayLike, num_classes: int) -> np.ndarray:
  """int64 (K, K) video counts: rows are the true class, columns the predicted class."""
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise UserError(f"labels: expected a 1-D array of class indices, got shape {labels.shape}.")
  labels = _check_labels(labels, len(labels), num_classes)
  predictions = _check_labels(predictions, len(labels), num_classes, name="predictions")
  flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes).astype(np.int64)


def classification_metrics(
  scores: ArrayLike, labels: ArrayLike, *, topk: Sequence[int] = (1, 5)
) -> dict[str, float]:
  """{'top1', 'top5', ..., 'mean_class_accuracy', 'num_videos'} of single-label videos.

  Keys are named after the requested k even where k is clipped to K (top5 of 3 classes is 1.0).
  """
  scores = _check_scores(scores)
  labels = _check_labels(labels, *scores.shape)
  rank = _label_rank(scores, labels)
  result: dict[str, float] = {f"top{k}": float(np.mean(rank < k)) for k in topk}
  result["mean_class_accuracy"] = mean_class_accuracy(scores, labels)
  result["num_videos"] = len(labels)
  return result


# ----------------------------------------------------------------------------- multi-label


def average_precision(scores: ArrayLike, targets: ArrayLike) -> np.ndarray:
  """float (K,): average precision of each class over the videos; NaN for classes with no positive.

  Computed like sklearn's average_precision_score: step-wise sum over thresholds of
  (recall increase) x precision, no interpolation. Thresholds are the distinct scores, so tied
  videos enter together and a positive's precision is read after its whole tie group.
  """
  scores = _check_scores(scores)
  targets = _check_multi_hot(targets, scores.shape)
  num_videos = scores.shape[0]
  order = np.argsort(-scores, axis=0, kind="stable")
  sorted_scores = np.take_along_axis(scores, order, axis=0)
  sorted_targets = np.take_along_axis(targets, order, axis=0)
  true_positives = np.cumsum(sorted_targets, axis=0)

  position = np.arange(num_videos)[:, None]
  is_group_end = np.ones(scores.shape, dtype=bool)
  is_group_end[:-1] = sorted_scores[:-1] != sorted_scores[1:]
  # For every position, the last position of its tie group: the next group end at or below it.
  group_end = np.where(is_group_end, position, num_videos)
  group_end = np.minimum.accumulate(group_end[::-1], axis=0)[::-1]
  precision = np.take_along_axis(true_positives, group_end, axis=0) / (group_end + 1)

  num_positives = targets.sum(axis=0)
  ap = np.full(scores.shape[1], np.nan)
  np.divide(
    (sorted_targets * precision).sum(axis=0), num_positives, out=ap, where=num_positives > 0
  )
  return ap


def multilabel_metrics(scores: ArrayLike, targets: ArrayLike) -> dict[str, float]:
  """{'mAP', 'top1', 'top5', 'num_videos', 'num_classes_with_positives'} of multi-label videos.

  mAP: mean of `average_precision` over the classes with at least one positive (classes with none
  have no defined AP). top1 / top5: fraction of videos with one of its positives among its best
  1 / 5 classes; a video with no positive can never be hit and still counts in the denominator.
  """
  scores = _check_scores(scores)
  targets = _check_multi_hot(targets, scores.shape)
  ap = average_precision(scores, targets)
  evaluated = ~np.isnan(ap)
  best = np.argmax(scores, axis=1)
  hit = targets[np.arange(len(best)), best] > 0
  top5 = _topk_indices(scores, min(5, scores.shape[1]))  # (N, 5)
  hit5 = np.take_along_axis(targets, top5, axis=1).max(axis=1) > 0
  return {
    "mAP": float(np.mean(ap[evaluated])) if evaluated.any() else float("nan"),
    "top1": float(np.mean(hit)),
    "top5": float(np.mean(hit5)),
    "num_videos": scores.shape[0],
    "num_classes_with_positives": int(evaluated.sum()),
  }


# ----------------------------------------------------------------------------- class splits


def _split_local_labels(
  labels: ArrayLike, class_splits: Sequence[int], num_videos: int
) -> np.ndarray:
  """int (N, S): each split's label as an index into that split's slice of the scores."""
  labels = np.asarray(labels)
  num_splits = len(class_splits)
  num_classes = int(sum(class_splits))
  offsets = np.cumsum((0,) + tuple(class_splits))
  if labels.shape == (num_videos, num_splits):
    if not np.issubdtype(labels.dtype, np.integer):
      raise UserError(
        f"labels: expected integer global class indices of shape "
        f"({num_videos}, {num_splits}), got dtype {labels.dtype}."
      )
    local = labels.astype(np.int64) - offsets[:-1]
    for s, size in enumerate(class_splits):
      bad = (local[:, s] < 0) | (local[:, s] >= size)
      if bad.any():
        raise UserError(
          f"labels: expected column {s} in the global range [{offsets[s]}, {offsets[s + 1]}) "
          f"of split {s} (EPIC stores [noun, {offsets[1]} + verb]), got "
          f"{labels[bad, s][0]} (at video {int(np.argmax(bad))})."
        )
    return local
  if labels.shape == (num_videos, num_classes):
    targets = _check_multi_hot(labels, (num_videos, num_classes), name="labels")
    local = np.empty((num_videos, num_splits), dtype=np.int64)
    for s in range(num_splits):
      piece = targets[:, offsets[s] : offsets[s + 1]]
      ones = piece.sum(axis=1)
      if (ones != 1).any():
        video = int(np.argmax(ones != 1))
        raise UserError(
          f"labels: expected exactly one 1 per split in multi-hot labels, got "
          f"{int(ones[video])} in split {s} of video {video}."
        )
      local[:, s] = np.argmax(piece, axis=1)
    return local
  raise UserError(
    f"labels: expected int ({num_videos}, {num_splits}) global indices or "
    f"multi-hot ({num_videos}, {num_classes}), got shape {labels.shape}."
  )


def _softmax(logits: np.ndarray) -> np.ndarray:
  shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
  return shifted / shifted.sum(axis=1, keepdims=True)


def _joint_topk_correct(split_scores: list[np.ndarray], local: np.ndarray, k: int) -> np.ndarray:
  """bool (N,): whether the true tuple is among the k best of the outer product of the splits."""
  sizes = [s.shape[1] for s in split_scores]
  joint_size = int(np.prod(sizes))
  joint_labels = np.ravel_multi_index(tuple(local.T), sizes)
  chunk = max(1, _JOINT_CHUNK_ELEMENTS // joint_size)
  correct = np.empty(len(local), dtype=bool)
  for start in range(0, len(local), chunk):
    rows = slice(start, start + chunk)
    joint = split_scores[0][rows]
    for part in split_scores[1:]:
      # Row-major like ravel_multi_index, so ties go to the lower index of the first split first.
      joint = (joint[:, :, None] * part[rows][:, None, :]).reshape(joint.shape[0], -1)
    correct[rows] = _label_rank(joint, joint_labels[rows]) < k
  return correct


def split_metrics(
  scores: ArrayLike,
  labels: ArrayLike,
  class_splits: Sequence[int],
  split_names: Sequence[str],
  *,
  logits: bool = True,
) -> dict[str, float]:
  """Per-split and action accuracies of heads concatenated along the classes (EPIC-Kitchens).

  For each split `name`: `{name}_top1`, `{name}_top5`, `{name}_mean_class_accuracy` on that split's
  slice of the scores. `action_top1`: fraction of videos where every split's top-1 is right (verb
  and noun both right). `action_top5`: as the EPIC-Kitchens evaluation defines it, whether the
  true (noun, verb) pair is among the 5 best pairs scored by the product of the splits'
  probabilities; with `logits=True` each split's slice is softmaxed first, with `logits=False`
  the slices are taken as probabilities as given. More than two splits generalise to tuples.

  Args:
    scores: (N, K) with K = sum(class_splits).
    labels: int (N, num_splits) global indices (EPIC: [noun, 300 + verb]) or multi-hot (N, K)
      with exactly one 1 per split.
    class_splits: size of each split, in the order of the scores.
    split_names: one name per split, e.g. ('noun', 'verb').
    logits: whether the scores are logits (softmax per split before the joint product).
  """
  scores = _check_scores(scores)
  num_videos, num_classes = scores.shape
  if len(class_splits) == 0 or any(int(size) < 1 for size in class_splits):
    raise UserError(f"class_splits: expected one or more positive sizes, got {class_splits}.")
  if int(sum(class_splits)) != num_classes:
    raise UserError(
      f"class_splits: expected sizes summing to the {num_classes} classes of "
      f"scores, got {list(class_splits)} (sum {int(sum(class_splits))})."
    )
  if len(split_names) != len(class_splits):
    raise UserError(
      f"split_names: expected one name per split ({len(class_splits)}), got {list(split_names)}."
    )
  local = _split_local_labels(labels, class_splits, num_videos)
  offsets = np.cumsum((0,) + tuple(int(size) for size in class_splits))

  result: dict[str, float] = {}
  all_right = np.ones(num_videos, dtype=bool)
  split_scores = []
  for s, name in enumerate(split_names):
    piece = scores[:, offsets[s] : offsets[s + 1]]
    rank = _label_rank(piece, local[:, s])
    result[f"{name}_top1"] = float(np.mean(rank < 1))
    result[f"{name}_top5"] = float(np.mean(rank < 5))
    result[f"{name}_mean_class_accuracy"] = mean_class_accuracy(piece, local[:, s])
    all_right &= rank < 1
    split_scores.append(_softmax(piece) if logits else piece)
  result["action_top1"] = float(np.mean(all_right))
  result["action_top5"] = float(np.mean(_joint_topk_correct(split_scores, local, 5)))
  result["num_videos"] = num_videos
  return result


def split_confusion_matrices(
  scores: ArrayLike, labels: ArrayLike, class_splits: Sequence[int]
) -> list[np.ndarray]:
  """One int64 (K_s, K_s) confusion matrix per split head (EPIC: nouns, then verbs), in the
  split's own class indices; labels as for split_metrics."""
  scores = _check_scores(scores)
  local = _split_local_labels(labels, class_splits, scores.shape[0])
  offsets = np.cumsum((0,) + tuple(int(size) for size in class_splits))
  return [
    confusion_matrix(
      np.argmax(scores[:, offsets[s] : offsets[s + 1]], axis=1), local[:, s], int(size)
    )
    for s, size in enumerate(class_splits)
  ]


# ----------------------------------------------------------------------------- reporting


def _check_confusion(matrix: ArrayLike, class_names: Sequence[str] | None) -> np.ndarray:
  """float64 (K, K) counts, checked (square, finite, non-negative; one name per class)."""
  matrix = np.asarray(matrix, dtype=np.float64)
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
    raise UserError(f"matrix: expected a square (K, K) confusion matrix, got shape {matrix.shape}.")
  if not np.isfinite(matrix).all() or (matrix < 0).any():
    raise UserError("matrix: expected finite non-negative counts.")
  num_classes = matrix.shape[0]
  if class_names is not None and len(class_names) != num_classes:
    raise UserError(
      f"class_names: expected {num_classes} names, one per row of matrix, got {len(class_names)}."
    )
  return matrix


def _names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
  return [str(name) for name in (range(num_classes) if class_names is None else class_names)]


def confusion_matrix_image(
  matrix: ArrayLike, class_names: Sequence[str] | None = None, *, max_labelled_classes: int = 30
) -> np.ndarray:
  """uint8 (H, W, 3) picture of the row-normalised confusion matrix, for TensorBoard.

  Rows (true classes) are normalised to sum to 1, so each row shows where that class's videos
  went; rows of classes with no video stay 0. Class names (or indices) label the ticks when
  K <= max_labelled_classes; a bigger matrix (K400) is drawn as a bare heat map. For clu's
  writer.write_images add the batch axis: `image[None]`.
  """
  # Imported here so that metrics on their own do not pay for matplotlib. A Figure with its own
  # Agg canvas bypasses pyplot: no global figure list to leak into, no backend selection (works
  # with any MPLBACKEND), and safe to call from several threads.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  matrix = _check_confusion(matrix, class_names)
  num_classes = matrix.shape[0]
  row_sums = matrix.sum(axis=1, keepdims=True)
  normalised = np.zeros_like(matrix)
  np.divide(matrix, row_sums, out=normalised, where=row_sums > 0)

  figure = Figure(figsize=(9, 8), dpi=100, layout="compressed")
  canvas = FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  image = axes.imshow(normalised, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="auto")
  figure.colorbar(image, ax=axes, label="fraction of the true class")
  axes.set_xlabel("predicted")
  axes.set_ylabel("true")
  if num_classes <= max_labelled_classes:
    names = [str(name) for name in (range(num_classes) if class_names is None else class_names)]
    font_size = min(10, max(5, 240 // num_classes))
    axes.set_xticks(range(num_classes), names, rotation=90, fontsize=font_size)
    axes.set_yticks(range(num_classes), names, fontsize=font_size)
  else:
    axes.set_xticks([])
    axes.set_yticks([])
  canvas.draw()
  return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def per_class_rows(
  matrix: ArrayLike, class_names: Sequence[str] | None = None, *, top_confusions: int = 3
) -> list[dict[str, Any]]:
  """One dict per class of a confusion matrix (rows true, columns predicted).

  Keys: 'index', 'name' (the index as text without class_names), 'support' (videos of the
  class), 'correct', 'accuracy' (top-1 recall; None without videos) and 'confusions': up to
  `top_confusions` (name, count) of the classes its videos were taken for, most first (ties to
  the lower index), never the class itself or a count of 0.
  """
  counts = _check_confusion(matrix, class_names).astype(np.int64)
  names = _names(class_names, counts.shape[0])
  rows = []
  for c, name in enumerate(names):
    support, correct = int(counts[c].sum()), int(counts[c, c])
    others = counts[c].copy()
    others[c] = 0
    order = np.argsort(-others, kind="stable")[:top_confusions]  # stable: ties to lower index
    rows.append(
      {
        "index": c,
        "name": name,
        "support": support,
        "correct": correct,
        "accuracy": correct / support if support else None,
        "confusions": [(names[j], int(others[j])) for j in order if others[j] > 0],
      }
    )
  return rows


def per_class_csv(matrix: ArrayLike, class_names: Sequence[str] | None = None) -> str:
  """CSV text of per_class_rows: index, name, support, correct, accuracy (4 decimals, empty
  without videos), confused_1..3 as 'name (count)'."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(
    ["index", "name", "support", "correct", "accuracy", "confused_1", "confused_2", "confused_3"]
  )
  for row in per_class_rows(matrix, class_names, top_confusions=3):
    confusions = [f"{name} ({count})" for name, count in row["confusions"]]
    accuracy = "" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
    writer.writerow(
      [row["index"], row["name"], row["support"], row["correct"], accuracy]
      + confusions
      + [""] * (3 - len(confusions))
    )
  return out.getvalue()


def confusion_csv(matrix: ArrayLike, class_names: Sequence[str] | None = None) -> str:
  """CSV text of the counts: a header row and a first column of class names (rows true,
  columns predicted)."""
  counts = _check_confusion(matrix, class_names).astype(np.int64)
  names = _names(class_names, counts.shape[0])
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["true \\ predicted"] + names)
  for name, row in zip(names, counts.tolist(), strict=True):
    writer.writerow([name] + row)
  return out.getvalue()


def worst_classes(
  matrix: ArrayLike, class_names: Sequence[str] | None = None, n: int = 5
) -> list[dict[str, Any]]:
  """The `n` per_class_rows with videos and the lowest accuracy; ties: more videos first (the
  same accuracy costs more), then the lower index."""
  rows = [row for row in per_class_rows(matrix, class_names) if row["support"]]
  rows.sort(key=lambda row: (row["accuracy"], -row["support"], row["index"]))
  return rows[:n]


def most_confused_classes(matrix: ArrayLike, n: int) -> np.ndarray:
  """The `n` classes with the most off-diagonal videos, as the true class or as the predicted
  one (both ends of a frequent confusion are kept), ties to the lower index; sorted by index."""
  counts = _check_confusion(matrix, None)
  off = counts - np.diag(np.diag(counts))
  errors = off.sum(axis=0) + off.sum(axis=1)
  return np.sort(np.argsort(-errors, kind="stable")[:n])


def confusion_matrix_figure(
  matrix: ArrayLike, class_names: Sequence[str] | None = None, *, max_classes: int = 30
) -> Any:
  """A labelled matplotlib Figure (Agg canvas, no pyplot) of the row-normalised confusion matrix.

  Each cell shows the fraction of the true class's videos (colour) and their count (text). Above
  `max_classes` classes, the `max_classes` most-confused ones (most_confused_classes) are shown,
  named; their rows still count all the class's videos. Save it with
  `figure.canvas.print_png(file)`: 1000 x 900 pixels.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  counts = _check_confusion(matrix, class_names)
  num_classes = counts.shape[0]
  names = _names(class_names, num_classes)
  if num_classes > max_classes:
    shown = most_confused_classes(counts, max_classes)
    title = f"The {len(shown)} most-confused of {num_classes} classes"
  else:
    shown = np.arange(num_classes)
    title = f"Confusion matrix ({num_classes} classes)"
  row_sums = counts.sum(axis=1, keepdims=True)[shown]
  part = counts[np.ix_(shown, shown)]
  normalised = np.zeros_like(part)
  np.divide(part, row_sums, out=normalised, where=row_sums > 0)

  figure = Figure(figsize=(10, 9), dpi=100, layout="compressed")
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  image = axes.imshow(normalised, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
  figure.colorbar(image, ax=axes, label="fraction of the true class's videos")
  axes.set_title(title)
  axes.set_xlabel("predicted")
  axes.set_ylabel("true")
  # Long names (Kinetics has 40-character ones) would squeeze the matrix out of the figure.
  labels = [names[c] if len(names[c]) <= 28 else names[c][:27] + "\u2026" for c in shown]
  font_size = min(10, max(5, 240 // len(shown)))
  axes.set_xticks(range(len(shown)), labels, rotation=90, fontsize=font_size)
  axes.set_yticks(range(len(shown)), labels, fontsize=font_size)
  if len(shown) <= 40:  # Counts stay legible in cells of this size.
    for i, j in zip(*np.nonzero(part), strict=True):
      axes.text(
        j,
        i,
        str(int(part[i, j])),
        ha="center",
        va="center",
        fontsize=max(font_size - 2, 5),
        color="black" if normalised[i, j] > 0.6 else "white",
      )
  return figure


def _plain(value: Any) -> Any:
  """JSON-ready id: TF datasets hand out bytes and numpy scalars."""
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if isinstance(value, np.generic):
    return value.item()
  return value


def per_video_rows(
  video_ids: Sequence[Any],
  scores: ArrayLike,
  labels_or_targets: ArrayLike,
  *,
  k: int = 5,
  class_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
  """One JSON-ready dict per video for a results file (JSON lines).

  Keys: 'id'; 'label' (int labels (N,)) or 'labels' (multi-hot (N, K) -> positive indices);
  'predicted' (top-k class indices, best first) and 'predicted_scores'; 'top1_correct' (for
  multi-hot: the best class is one of the positives). With class_names also 'label_name' or
  'label_names' and 'predicted_names'.
  """
  scores = _check_scores(scores)
  num_videos, num_classes = scores.shape
  if len(video_ids) != num_videos:
    raise UserError(
      f"video_ids: expected {num_videos} ids, one per row of scores, got {len(video_ids)}."
    )
  if class_names is not None and len(class_names) != num_classes:
    raise UserError(
      f"class_names: expected {num_classes} names, one per class of scores, got {len(class_names)}."
    )
  if k < 1:
    raise UserError(f"k: expected k >= 1, got {k}.")
  multi_label = np.ndim(labels_or_targets) == 2
  if multi_label:
    targets = _check_multi_hot(labels_or_targets, scores.shape, name="labels_or_targets")
  else:
    labels = _check_labels(labels_or_targets, num_videos, num_classes, name="labels_or_targets")
  top = _topk_indices(scores, min(k, num_classes))

  rows = []
  for n in range(num_videos):
    predicted = [int(c) for c in top[n]]
    row: dict[str, Any] = {"id": _plain(video_ids[n])}
    if multi_label:
      positives = [int(c) for c in np.flatnonzero(targets[n])]
      row["labels"] = positives
      correct = predicted[0] in positives
      if class_names is not None:
        row["label_names"] = [class_names[c] for c in positives]
    else:
      row["label"] = int(labels[n])
      correct = predicted[0] == row["label"]
      if class_names is not None:
        row["label_name"] = class_names[row["label"]]
    row["predicted"] = predicted
    row["predicted_scores"] = [float(scores[n, c]) for c in predicted]
    if class_names is not None:
      row["predicted_names"] = [class_names[c] for c in predicted]
    row["top1_correct"] = bool(correct)
    rows.append(row)
  return rows
