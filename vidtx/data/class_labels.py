"""The class labels of the items to convert: labels.txt (resolve_label_map), each item's label
indices, and repeated rows (--duplicates, --conflicts of python -m vidtx.data.make_shards)."""

import dataclasses
import os
import re
from collections.abc import Sequence

import tensorflow as tf

from vidtx.data import dmvr, sources
from vidtx.errors import UserError

DUPLICATE_MODES = ("skip", "keep", "error")
CONFLICT_MODES = sources.CONFLICT_MODES


# Words naming a direction that a horizontal flip reverses: a mirrored "left" is a "right", a
# mirrored clockwise turn an anticlockwise one, a mirrored left-handed stroke a right-handed one.
# Not "up" / "down", "forward" / "backward": a horizontal flip keeps them.
DIRECTION_WORDS = frozenset(
  {
    "left",
    "right",
    "leftward",
    "leftwards",
    "rightward",
    "rightwards",
    "lefthanded",
    "righthanded",
    "clockwise",
    "anticlockwise",
    "counterclockwise",
    "cw",
    "ccw",
  }
)


def _words(name: str) -> list[str]:
  """'Pushing something from left_to-right' -> ['pushing', ..., 'left', 'to', 'right']; camel
  case is split too ('SwipeLeft' -> ['swipe', 'left'])."""
  spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
  return [word for word in re.split(r"[^a-z]+", spaced.lower()) if word]


def direction_classes(names: Sequence[str]) -> list[str]:
  """The class names, in order, that say a direction a horizontal flip would swap.

  A name matches when one of its words (split at anything but a letter: spaces, _, -, digits,
  and at camel case, case-insensitive) is in DIRECTION_WORDS: "Pushing something from left to
  right", "turn_left", "Turning Hand Counterclockwise", "anti-clockwise", "left-handed batting"
  (mirrored, a left-handed stroke looks right-handed). Whole words only: "upright", "bright",
  "leftovers", "copyright" and "cleft" do not match. A name is all it looks at: a class whose
  direction the name does not say ("Spinning something so it continues spinning") is not found.
  """
  return [name for name in names if DIRECTION_WORDS.intersection(_words(name))]


def read_labels(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f.read().splitlines() if line.strip()]


def check_names(names: Sequence[str]) -> None:
  """ValueError naming the first class name that labels.txt cannot hold as itself (a line
  break, spaces around it, empty: sources.class_name_problem)."""
  for i, name in enumerate(names):
    problem = sources.class_name_problem(name)
    if problem:
      raise UserError(
        f"class {i} {name!r} {problem}: labels.txt (one class per line, spaces around it "
        "stripped) cannot hold it, and every later class would read back as another; fix the "
        "name in the input."
      )


def write_labels(path: str, names: Sequence[str]) -> None:
  """Writes labels.txt (line i = class i) and reads it back: ValueError, and the file removed,
  unless it reads back as exactly `names` (never a label map that reads back otherwise)."""
  check_names(names)
  dmvr.write_text_atomically(path, "".join(f"{name}\n" for name in names))
  with tf.io.gfile.GFile(path, "r") as f:  # Local or gs://, as written.
    text = f.read()
  stripped = [line.strip() for line in text.splitlines() if line.strip()]  # As read_labels.
  lines = text.splitlines()
  if lines != list(names) or stripped != list(names):
    tf.io.gfile.remove(path)  # Written just now, by this call.
    raise UserError(
      f"{path} read back as {len(lines)} classes, not the {len(names)} written; the class "
      "names need fixing."
    )


def resolve_label_map(
  items: Sequence[sources.Item],
  output_dir: str,
  label_map: str | None = None,
  class_names: Sequence[str] | None = None,
  *,
  write: bool = True,
) -> list[str]:
  """The class names, line i = class i, and OUT/labels.txt written when it is new (and `write`).

  --label_map, else an existing OUT/labels.txt (the training split's, for later splits), else
  the dataset's own `class_names`, else the sorted class names of `items` (`class_<i>` names
  when the items give indices only).
  """
  path = os.path.join(output_dir, "labels.txt")
  existing = read_labels(path) if os.path.exists(path) else None
  if label_map:
    names = read_labels(sources.check_file("--label_map", label_map))
    if existing is not None and existing != names:
      raise UserError(
        f"--label_map {label_map} differs from {path}, which shards in "
        f"{output_dir} were written with; remove one of them."
      )
  elif existing is not None:
    return existing
  elif class_names is not None:
    names = list(class_names)
  else:
    labels = {label for item in items for label in item.labels}
    names_given = sorted(label for label in labels if isinstance(label, str))
    indices = [label for label in labels if not isinstance(label, str)]
    if names_given and indices:
      raise UserError(
        "The labels mix class names and class indices; pass --label_map with "
        "one class name per line (line i = class i)."
      )
    names = names_given or [f"class_{i}" for i in range(max(indices, default=-1) + 1)]
  if names and existing is None and write:
    write_labels(path, names)
  return names


def label_indices(
  item: sources.Item, index_of: dict[str, int | None], num_classes: int
) -> tuple[list[int] | None, str | None]:
  """(the item's label indices, None) or (None, why its labels cannot be used)."""
  if not item.labels:
    return [-1], None  # Unlabelled (a test split): readers that check labels reject it.
  indices = []
  for label in item.labels:
    if isinstance(label, str):
      if label not in index_of:
        return None, f"unknown label {label!r} (not in labels.txt)"
      if index_of[label] is None:
        return None, f"label {label!r} names several classes in labels.txt"
      indices.append(index_of[label])
    elif not 0 <= label < num_classes:
      return None, f"label index {label} outside [0, {num_classes}) of labels.txt"
    else:
      indices.append(int(label))
  return indices, None


@dataclasses.dataclass
class Repeats:
  """Rows for the same video and segment (input row = index + 1).

  duplicates: row index -> the earlier row whose video, segment and labels it repeats.
  conflicts: one list per video and segment that comes with different labels: every row of it,
    in input order (duplicates included).
  """

  duplicates: dict[int, int]
  conflicts: list[list[int]]


def find_repeats(items: Sequence[sources.Item], labels: Sequence[Sequence[int] | None]) -> Repeats:
  """The repeated rows of `items` with their label indices (None: a label error, not checked)."""
  first_of: dict[tuple, dict[tuple[int, ...], int]] = {}
  rows: dict[tuple, list[int]] = {}
  duplicates = {}
  for index, (item, indices) in enumerate(zip(items, labels, strict=True)):
    if indices is None:
      continue  # Reported as a bad label already.
    key = (item.video_id, item.path, item.start, item.end)
    seen = first_of.setdefault(key, {})
    rows.setdefault(key, []).append(index)
    if tuple(indices) in seen:
      duplicates[index] = seen[tuple(indices)]
    else:
      seen[tuple(indices)] = index
  conflicts = [rows[key] for key, seen in first_of.items() if len(seen) > 1]
  return Repeats(duplicates=duplicates, conflicts=conflicts)


def _label_names(indices: Sequence[int], names: Sequence[str]) -> str:
  return repr("+".join(names[i] if 0 <= i < len(names) else "unlabelled" for i in indices))


def _conflict_text(
  rows: list[int],
  items: Sequence[sources.Item],
  labels: Sequence[Sequence[int] | None],
  names: Sequence[str],
) -> str:
  shown, seen = [], set()
  for row in rows:
    if tuple(labels[row]) not in seen:
      seen.add(tuple(labels[row]))
      shown.append(f"{_label_names(labels[row], names)} (row {row + 1})")
  item = items[rows[0]]
  segment = (
    ""
    if item.start is None and item.end is None
    else f" [{item.start if item.start is not None else ''}, "
    f"{item.end if item.end is not None else ''}) s"
  )
  return f"{item.video_id!r}{segment} as " + " and ".join(shown)


def apply_repeats(
  items: Sequence[sources.Item],
  labels: list[list[int] | None],
  errors: list[str | None],
  names: Sequence[str],
  duplicates: str = "skip",
  conflicts: str = "error",
) -> tuple[set[int], dict[str, int]]:
  """Applies --duplicates and --conflicts: sets `errors` of the rows left out and `labels` of
  merged rows in place. Returns the rows folded into another row's example (merge) and the
  counts for the summary. Raises ValueError, naming the first repeats, for 'error'."""
  if duplicates not in DUPLICATE_MODES:
    raise UserError(f"--duplicates={duplicates!r}: expected one of {list(DUPLICATE_MODES)}.")
  if conflicts not in CONFLICT_MODES:
    raise UserError(f"--conflicts={conflicts!r}: expected one of {list(CONFLICT_MODES)}.")
  repeats = find_repeats(items, labels)
  if repeats.duplicates and duplicates == "error":
    shown = "; ".join(
      f"row {row + 1} repeats row {first + 1} ({items[row].video_id!r})"
      for row, first in list(repeats.duplicates.items())[:3]
    )
    raise UserError(
      f"{len(repeats.duplicates)} input row(s) repeat an earlier row (the same "
      f"video, segment and labels): {shown}; pass --duplicates=skip to leave the "
      "repeats out or --duplicates=keep to write them again."
    )
  if repeats.conflicts and conflicts == "error":
    shown = "; ".join(_conflict_text(rows, items, labels, names) for rows in repeats.conflicts[:3])
    raise UserError(
      f"{len(repeats.conflicts)} video(s) are listed under different labels for the same "
      f"segment: {shown}{'; ...' if len(repeats.conflicts) > 3 else ''}. Fix the input, or "
      "pass --conflicts=skip to leave them out, --conflicts=merge for one multi-label example "
      "per video, or --conflicts=keep for one example per row."
    )
  if duplicates == "skip":
    for row, first in repeats.duplicates.items():
      errors[row] = (
        f"duplicate of input row {first + 1} (the same video, segment and labels; "
        "--duplicates=keep writes it again)"
      )
  merged = set()
  for rows in repeats.conflicts:
    if conflicts == "skip":
      text = _conflict_text(rows, items, labels, names)
      for row in rows:
        errors[row] = f"conflicting labels: {text} (--conflicts=skip)"
    elif conflicts == "merge":
      kept = [row for row in rows if errors[row] is None]
      union = list(dict.fromkeys(i for row in kept for i in labels[row]))
      labels[kept[0]] = union
      merged.update(kept[1:])
  counts = {"duplicates": len(repeats.duplicates), "conflicts": len(repeats.conflicts)}
  if merged:
    counts["merged"] = len(merged)
  return merged, counts
