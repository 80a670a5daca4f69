"""Annotation files -> items to convert: the Kinetics, Something-Something v2, Epic-Kitchens-100
and generic CSV parsers of python -m vidtx.data.make_shards (whose docstring gives the formats),
and a folder of class folders, split into train and validation (folders_source)."""

import csv
import dataclasses
import fractions
import json
import math
import os
import random
import re
from collections.abc import Sequence

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
EPIC_NUM_NOUNS = 300
EPIC_NUM_VERBS = 97


@dataclasses.dataclass(frozen=True)
class Item:
  """One video to convert.

  labels: class names (looked up in labels.txt) or class indices (used as they are); empty for
    an unlabelled video (stored as label -1).
  start / end: the segment of the file to keep, in seconds (None: from the first frame / to the
    last).
  clip_start / clip_end: where the clip sits in its source video, stored as
    clip/start/timestamp and clip/end/timestamp (None: start / end).
  path: "" when the source found no file for the video (reported as missing).
  """

  path: str
  labels: tuple[int | str, ...]
  video_id: str
  label_text: str | None = None
  start: float | None = None
  end: float | None = None
  clip_start: float | None = None
  clip_end: float | None = None


@dataclasses.dataclass
class Source:
  """The items of one annotation file and what the dataset says about its classes."""

  items: list[Item]
  split: str  # The default table name.
  class_names: list[str] | None = None  # The dataset's own label map (SSv2, EPIC), if it has one.
  class_splits: list[int] | None = None  # Label groups (EPIC: 300 nouns, 97 verbs).


def check_file(flag: str, path: str | None) -> str:
  """`path`, after a ValueError / FileNotFoundError naming `flag` when it is unset or no file."""
  if not path:
    raise ValueError(f"{flag} is required.")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{flag} {path}: no such file.")
  return path


def _check_dir(flag: str, path: str | None) -> str:
  if not path:
    raise ValueError(f"{flag} is required.")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{flag} {path}: no such directory.")
  return path


def split_from_name(path: str) -> str:
  """'EPIC_100_validation.csv' -> 'validation', 'kinetics_val.csv' -> 'validation', ... ; else
  the file's stem."""
  stem = os.path.splitext(os.path.basename(path))[0]
  tokens = re.split(r"[-_. ]+", stem.lower())
  for token, split in (
    ("train", "train"),
    ("validation", "validation"),
    ("val", "validation"),
    ("test", "test"),
  ):
    if token in tokens:
      return split
  return stem


def index_videos(video_dir: str) -> dict[str, str]:
  """Every video file under `video_dir` by its name without extension (extension matched in any
  case). One walk of the folder: a glob per video would list the folder once per video."""
  index = {}
  for root, dirs, files in os.walk(video_dir):
    dirs.sort()  # The first of two files with the same name wins, in a fixed order.
    for name in sorted(files):
      stem, extension = os.path.splitext(name)
      if extension.lower() in VIDEO_EXTENSIONS:
        index.setdefault(stem, os.path.join(root, name))
  return index


def _read_csv_rows(flag: str, path: str) -> list[dict[str, str]]:
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise ValueError(f"{flag} {path}: no rows.")
  return rows


def _require_columns(
  flag: str, path: str, rows: list[dict[str, str]], columns: Sequence[str]
) -> None:
  missing = [c for c in columns if c not in rows[0]]
  if missing:
    raise ValueError(f"{flag} {path}: no column(s) {missing}; found {list(rows[0])}.")


def kinetics_source(input_csv: str, video_dir: str) -> Source:
  """Items of a Kinetics annotation CSV (label, youtube_id, time_start, time_end, split)."""
  check_file("--input", input_csv)
  _check_dir("--video_dir", video_dir)
  rows = _read_csv_rows("--input", input_csv)
  _require_columns("--input", input_csv, rows, ["youtube_id", "time_start", "time_end"])
  videos = index_videos(video_dir)
  items = []
  for row in rows:
    youtube_id = row["youtube_id"].strip()
    start, end = float(row["time_start"]), float(row["time_end"])
    label = (row.get("label") or "").strip()
    clip = f"{youtube_id}_{int(start):06d}_{int(end):06d}"
    common = dict(
      labels=(label,) if label else (),
      video_id=clip,
      label_text=label or None,
      clip_start=start,
      clip_end=end,
    )
    if clip in videos:  # Already cut to the segment: keep all of it.
      items.append(Item(path=videos[clip], **common))
    else:
      items.append(Item(path=videos.get(youtube_id, ""), start=start, end=end, **common))
  splits = {(row.get("split") or "").strip() for row in rows} - {""}
  split = splits.pop() if len(splits) == 1 else split_from_name(input_csv)
  return Source(items=items, split="validation" if split == "val" else split)


def ssv2_class_name(template: str) -> str:
  """'Holding [something] next to [something]' -> 'Holding something next to something', the
  key of something-something-v2-labels.json."""
  return template.replace("[", "").replace("]", "")


def ssv2_source(input_json: str, labels_json: str, video_dir: str) -> Source:
  """Items of a Something-Something v2 split JSON; classes from the labels JSON."""
  check_file("--input", input_json)
  check_file("--labels_json", labels_json)
  _check_dir("--video_dir", video_dir)
  with open(labels_json, encoding="utf-8") as f:
    index_of = {name: int(index) for name, index in json.load(f).items()}
  if sorted(index_of.values()) != list(range(len(index_of))):
    raise ValueError(f"--labels_json {labels_json}: the indices are not 0..{len(index_of) - 1}.")
  class_names = sorted(index_of, key=index_of.get)
  with open(input_json, encoding="utf-8") as f:
    entries = json.load(f)
  if not entries or "template" not in entries[0]:
    raise ValueError(
      f"--input {input_json}: the entries have no 'template' (found "
      f"{sorted(entries[0]) if entries else 'no entries'}); the SSv2 test split has "
      "no public labels, convert the train and validation JSONs."
    )
  items = []
  for entry in entries:
    name = ssv2_class_name(entry["template"])
    video_id = str(entry["id"])
    path = os.path.join(video_dir, f"{video_id}.webm")
    items.append(Item(path=path, labels=(name,), video_id=video_id, label_text=name))
  return Source(items=items, split=split_from_name(input_json), class_names=class_names)


def parse_timestamp(text: str) -> float:
  """'HH:MM:SS.ff' (Epic-Kitchens) -> seconds."""
  hours, minutes, seconds = text.strip().split(":")
  return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _class_csv(flag: str, path: str, count: int) -> dict[int, str]:
  rows = _read_csv_rows(flag, check_file(flag, path))
  _require_columns(flag, path, rows, ["id", "key"])
  names = {int(row["id"]): row["key"].strip() for row in rows}
  if not all(0 <= i < count for i in names):
    raise ValueError(f"{flag} {path}: ids outside [0, {count}).")
  return names


def epic_source(
  input_csv: str, video_dir: str, noun_classes: str | None = None, verb_classes: str | None = None
) -> Source:
  """Items of an Epic-Kitchens-100 CSV: one per narration, labels [noun, 300 + verb]."""
  check_file("--input", input_csv)
  _check_dir("--video_dir", video_dir)
  rows = _read_csv_rows("--input", input_csv)
  _require_columns(
    "--input",
    input_csv,
    rows,
    [
      "narration_id",
      "video_id",
      "start_timestamp",
      "stop_timestamp",
      "verb",
      "verb_class",
      "noun",
      "noun_class",
    ],
  )
  nouns = _class_csv("--epic_noun_classes", noun_classes, EPIC_NUM_NOUNS) if noun_classes else {}
  verbs = _class_csv("--epic_verb_classes", verb_classes, EPIC_NUM_VERBS) if verb_classes else {}
  # Without the class lists, a class is named by the word its first narration uses.
  for row in rows:
    nouns.setdefault(int(row["noun_class"]), row["noun"].strip())
    verbs.setdefault(int(row["verb_class"]), row["verb"].strip())
  videos = {stem.lower(): path for stem, path in index_videos(video_dir).items()}
  items = []
  for line, row in enumerate(rows, 2):
    noun, verb = int(row["noun_class"]), int(row["verb_class"])
    if not (0 <= noun < EPIC_NUM_NOUNS and 0 <= verb < EPIC_NUM_VERBS):
      raise ValueError(
        f"--input {input_csv} line {line}: noun_class={noun}, verb_class={verb}; "
        f"expected [0, {EPIC_NUM_NOUNS}) and [0, {EPIC_NUM_VERBS})."
      )
    start, end = parse_timestamp(row["start_timestamp"]), parse_timestamp(row["stop_timestamp"])
    items.append(
      Item(
        path=videos.get(row["video_id"].strip().lower(), ""),
        labels=(noun, EPIC_NUM_NOUNS + verb),
        video_id=row["narration_id"].strip(),
        label_text=f"{verbs[verb]} {nouns[noun]}",
        start=start,
        end=end,
      )
    )
  class_names = [nouns.get(i, f"noun_{i}") for i in range(EPIC_NUM_NOUNS)] + [
    verbs.get(i, f"verb_{i}") for i in range(EPIC_NUM_VERBS)
  ]
  return Source(
    items=items,
    split=split_from_name(input_csv),
    class_names=class_names,
    class_splits=[EPIC_NUM_NOUNS, EPIC_NUM_VERBS],
  )


_HEADER_NAMES = ("path", "video", "video_path", "file", "filename", "name")


def csv_source(input_csv: str, video_dir: str) -> Source:
  """Items of a generic CSV `path,label[,start,end]`; an integer label is a class index."""
  check_file("--input", input_csv)
  _check_dir("--video_dir", video_dir)
  with open(input_csv, newline="", encoding="utf-8") as f:
    rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
  if rows and rows[0][0].strip().lower() in _HEADER_NAMES:
    rows = rows[1:]
  if not rows:
    raise ValueError(f"--input {input_csv}: no rows.")
  items = []
  for line, row in enumerate(rows, 1):
    cells = [cell.strip() for cell in row] + ["", ""]
    if not cells[0] or not cells[1]:
      raise ValueError(f"--input {input_csv} row {line}: {row}; expected path,label[,start,end].")
    label: int | str = int(cells[1]) if re.fullmatch(r"\d+", cells[1]) else cells[1]
    start = float(cells[2]) if cells[2] else None
    end = float(cells[3]) if cells[3] else None
    items.append(
      Item(
        path=os.path.join(video_dir, cells[0]),
        labels=(label,),
        video_id=cells[0],
        label_text=label if isinstance(label, str) else None,
        start=start,
        end=end,
      )
    )
  return Source(items=items, split=split_from_name(input_csv))


# ---------------------------------------------------------------------------------------------
# A folder of class folders (torchvision / MMAction2): ROOT/<class>/<video>, or the user's own
# split ROOT/train/<class>/<video> + ROOT/val/<class>/<video>.
# ---------------------------------------------------------------------------------------------

# More than VIDEO_EXTENSIONS: every file of a class folder is a candidate here, whereas
# index_videos keeps its list so that the file a Kinetics / EPIC id resolves to stays the same.
FOLDER_VIDEO_EXTENSIONS = VIDEO_EXTENSIONS + (".flv", ".wmv", ".3gp", ".ogv")
DEFAULT_VAL_FRACTION = 0.1
_VAL_DIRS = ("val", "validation")


@dataclasses.dataclass
class FolderDataset:
  """The videos of a class-folder tree, split.

  splits: 'train' and (unless empty) 'validation' -> items; ids are paths relative to the root.
  layout: 'classes' (ROOT/<class>/...) or 'splits' (ROOT/train/<class>/..., with val/ or not).
  """

  splits: dict[str, list[Item]]
  class_names: list[str]
  layout: str
  val_fraction: float | None  # What the split was drawn with; None: the user's own split.


def _is_video(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in FOLDER_VIDEO_EXTENSIONS


def _visible(directory: str) -> tuple[list[str], list[str]]:
  """(folders, files) in `directory` that are not hidden, sorted (links followed)."""
  folders, files = [], []
  with os.scandir(directory) as found:
    for entry in found:
      if not entry.name.startswith("."):
        (folders if entry.is_dir() else files).append(entry.name)
  return sorted(folders), sorted(files)


def _class_videos(class_dir: str) -> list[str]:
  """The videos anywhere under `class_dir` (as torchvision's folder datasets walk it), hidden
  files and folders skipped, as sorted paths relative to `class_dir`."""
  videos = []
  for directory, folders, files in os.walk(class_dir, followlinks=True):
    folders[:] = [name for name in folders if not name.startswith(".")]
    relative = os.path.relpath(directory, class_dir)
    for name in files:
      if not name.startswith(".") and _is_video(name):
        videos.append(os.path.normpath(os.path.join(relative, name)))
  return sorted(videos)


def _check_no_stray_video(directory: str, files: list[str], where: str) -> None:
  stray = [name for name in files if _is_video(name)]
  if stray:
    raise ValueError(
      f"{os.path.join(directory, stray[0])}: a video directly in {where}, not in a class "
      f"folder; expected {os.path.join(directory, '<class>', stray[0])}."
    )


def _scan_classes(directory: str, where: str) -> dict[str, list[str]]:
  """class name -> its videos (sorted paths relative to `directory`) of `directory`/<class>/...;
  `where` names the folder in errors ('--input ROOT', 'ROOT/train')."""
  folders, files = _visible(directory)
  _check_no_stray_video(directory, files, where)
  if not folders:
    raise ValueError(
      f"{where}: no class folders; expected {os.path.join(directory, '<class>', '<video>')}."
    )
  classes = {}
  for name in folders:
    class_dir = os.path.join(directory, name)
    if name != name.strip():
      # labels.txt is read line by line with the spaces stripped: the name would not round-trip.
      raise ValueError(f"{class_dir}: a class folder name starts or ends with a space; rename it.")
    videos = _class_videos(class_dir)
    if not videos:
      raise ValueError(
        f"{class_dir}: a class folder without videos (files ending in "
        f"{', '.join(FOLDER_VIDEO_EXTENSIONS)}, in any case); add videos or remove it."
      )
    classes[name] = [os.path.join(name, video) for video in videos]
  return classes


def val_count(num_videos: int, val_fraction: float) -> int:
  """How many of a class's `num_videos` go to validation: val_fraction * num_videos rounded half
  up, at least 1 and at most num_videos - 1 (every class keeps a training video); 0 for 0."""
  if not val_fraction or num_videos < 2:
    return 0
  # Exact decimal arithmetic: 0.7 * 5 is 3.4999... in binary floating point.
  count = math.floor(fractions.Fraction(repr(val_fraction)) * num_videos + fractions.Fraction(1, 2))
  return min(max(count, 1), num_videos - 1)


def stratified_split(
  classes: dict[str, list[str]], val_fraction: float, seed: int
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
  """(train, validation) videos of each class: val_count of them drawn for validation.

  Deterministic for `seed`, whatever order the file system lists the files in (they are sorted
  first), and class by class: adding or removing one class does not move another's videos.
  """
  train, validation = {}, {}
  for name, videos in classes.items():
    videos = sorted(videos)
    # A string seed is hashed with SHA-512: the same draw in every process and Python version.
    drawn = set(
      random.Random(f"{seed}/{name}").sample(
        range(len(videos)), val_count(len(videos), val_fraction)
      )
    )
    train[name] = [video for i, video in enumerate(videos) if i not in drawn]
    validation[name] = [video for i, video in enumerate(videos) if i in drawn]
  return train, validation


def _items(root: str, classes: dict[str, list[str]]) -> list[Item]:
  return [
    Item(
      path=os.path.join(root, video),
      labels=(name,),
      video_id=video.replace(os.sep, "/"),
      label_text=name,
    )
    for name in sorted(classes)
    for video in classes[name]
  ]


def folders_source(root: str, val_fraction: float | None = None, seed: int = 0) -> FolderDataset:
  """The videos of ROOT/<class>/<video> split by `val_fraction` (None: DEFAULT_VAL_FRACTION),
  or of ROOT/train/<class>/... and ROOT/val/<class>/... (or validation/) as split by the user,
  where passing `val_fraction` is an error. Class names: the sorted class folders."""
  _check_dir("--input", root)
  if val_fraction is not None and not 0 <= val_fraction < 1:
    raise ValueError(f"--val_fraction={val_fraction}: expected 0 <= fraction < 1.")
  folders, files = _visible(root)
  _check_no_stray_video(root, files, f"--input {root}")
  split_dirs = [name for name in folders if name == "train" or name in _VAL_DIRS]
  val_dirs = [name for name in split_dirs if name in _VAL_DIRS]
  if len(val_dirs) > 1:
    raise ValueError(
      f"--input {root}: holds both {val_dirs[0]}/ and {val_dirs[1]}/; expected one validation "
      "folder."
    )
  # The user's split: train/ with val/, or train/ alone. train/ beside other folders is a class
  # (ROOT/{bus,car,train}); val/ beside train/ and other folders is a mistake.
  if split_dirs and (split_dirs == folders or (val_dirs and "train" in split_dirs)):
    others = [name for name in folders if name not in split_dirs]
    if others:
      raise ValueError(
        f"{os.path.join(root, others[0])}: a folder beside train/ and {val_dirs[0]}/; expected "
        f"only ROOT/train/<class>/<video> and ROOT/{val_dirs[0]}/<class>/<video>."
      )
    if "train" not in split_dirs:
      raise ValueError(
        f"{os.path.join(root, val_dirs[0])}: a validation folder without "
        f"{os.path.join(root, 'train')}; expected ROOT/train/<class>/<video> beside it."
      )
    train_dir = os.path.join(root, "train")
    train = _scan_classes(train_dir, train_dir)
    train = {
      name: [os.path.join("train", video) for video in videos] for name, videos in train.items()
    }
    drawn_with = None
    if not val_dirs:  # No split of the user's: draw one as for ROOT/<class>/.
      drawn_with = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
      train, validation = stratified_split(train, drawn_with, seed)
    else:
      if val_fraction is not None:
        raise ValueError(
          f"--val_fraction={val_fraction}: {root} has its own split (train/ and "
          f"{val_dirs[0]}/), which is kept; drop --val_fraction."
        )
      val_dir = os.path.join(root, val_dirs[0])
      validation = _scan_classes(val_dir, val_dir)
      validation = {
        name: [os.path.join(val_dirs[0], video) for video in videos]
        for name, videos in validation.items()
      }
      unknown = sorted(set(validation) - set(train))
      if unknown:
        raise ValueError(
          f"{os.path.join(val_dir, unknown[0])}: class {unknown[0]!r} has no training folder "
          f"{os.path.join(train_dir, unknown[0])}; every validation class must be a training "
          "class."
        )
    layout = "splits"
  else:
    drawn_with = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    train, validation = stratified_split(_scan_classes(root, f"--input {root}"), drawn_with, seed)
    layout = "classes"
  splits = {"train": _items(root, train), "validation": _items(root, validation)}
  # Video i goes to shard i % N: in class order, every shard would list the classes one after
  # the other, in step, and a reader's shuffle buffer would see one class at a time.
  random.Random(f"{seed}/order").shuffle(splits["train"])
  return FolderDataset(
    splits={split: items for split, items in splits.items() if items},
    class_names=sorted(train),
    layout=layout,
    val_fraction=drawn_with,
  )
