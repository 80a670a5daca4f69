"""A --video folder of class folders: each video's true class is its top-level subfolder. Whether
predict reports accuracy (decided before any work), and the report: top-1 / top-5, the worst
classes, the per-class table and the confusion matrix, as evaluation writes them."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from vidtx import metrics, outputs
from vidtx.errors import UserError
from vidtx.inference import classifier, preprocess


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
  from vidtx import run_files
  from vidtx.checkpoints import store

  try:
    if labels_file:
      return classifier.read_labels_file(labels_file)
    if store.is_converted_dir(checkpoint):
      labels = store.read_description(checkpoint).get("labels")  # Local or in a bucket.
      return [str(name) for name in labels] if isinstance(labels, list) else None
    if run_files.is_run_dir(checkpoint):
      return run_files.class_names(checkpoint)
  except (OSError, ValueError, AttributeError):
    return None
  return None


def report_paths(
  out: str | None, per_class_csv: str | None, confusion_png: str | None
) -> tuple[str | None, str | None]:
  """Where the per-class table and the confusion matrix go: the flags, else next to --out."""
  stem = os.path.splitext(out)[0] if out else None
  return (
    per_class_csv or (f"{stem}_per_class.csv" if stem else None),
    confusion_png or (f"{stem}_confusion.png" if stem else None),
  )


def class_folders_asked(
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
      raise UserError(f"{flag} reports the accuracy of whole videos; it does not take --window.")
    return None
  classes, why = folder_classes(video, list_file, inputs)
  if classes is None:
    if asked:
      raise UserError(f"{flag}: {why}.")
    return None
  names = checkpoint_labels(checkpoint, labels_file)
  folders = sorted(set(classes.values()))
  if not names:
    if asked:
      raise UserError(
        f"{flag}: --checkpoint {checkpoint} has no class names to match the folders of "
        f"{video} against; give --labels FILE (one name per line)."
      )
    return None
  unknown = [folder for folder in folders if folder not in set(names)]
  if unknown:
    if asked:
      raise UserError(
        f"{flag}: folder(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''} of {video} are "
        f"not classes of the checkpoint (it has {len(names)}: "
        f"{preprocess.short_list(names, 5)}); rename them, or give --labels FILE."
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
