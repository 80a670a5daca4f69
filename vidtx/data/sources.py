"""Annotation files -> items to convert: the Kinetics, Something-Something v2, Epic-Kitchens-100
and generic CSV parsers of python -m vidtx.data.make_shards (whose docstring gives the formats),
and a folder of class folders, split into train and validation (folders_source)."""

import collections
import csv
import dataclasses
import fractions
import hashlib
import json
import math
import os
import random
import re
from collections.abc import Callable, Sequence

from vidtx.errors import UserError

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
  error: why the video is left out, known before decoding (reported as bad, never converted).
  """

  path: str
  labels: tuple[int | str, ...]
  video_id: str
  label_text: str | None = None
  start: float | None = None
  end: float | None = None
  clip_start: float | None = None
  clip_end: float | None = None
  error: str | None = None


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
    raise UserError(f"{flag} is required.")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{flag} {path}: no such file.")
  return path


def _check_dir(flag: str, path: str | None) -> str:
  if not path:
    raise UserError(f"{flag} is required.")
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
    raise UserError(f"{flag} {path}: no rows.")
  return rows


def _require_columns(
  flag: str, path: str, rows: list[dict[str, str]], columns: Sequence[str]
) -> None:
  missing = [c for c in columns if c not in rows[0]]
  if missing:
    raise UserError(f"{flag} {path}: no column(s) {missing}; found {list(rows[0])}.")


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
    raise UserError(f"--labels_json {labels_json}: the indices are not 0..{len(index_of) - 1}.")
  class_names = sorted(index_of, key=index_of.get)
  with open(input_json, encoding="utf-8") as f:
    entries = json.load(f)
  if not entries or "template" not in entries[0]:
    raise UserError(
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
    raise UserError(f"{flag} {path}: ids outside [0, {count}).")
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
      raise UserError(
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
    raise UserError(f"--input {input_csv}: no rows.")
  items = []
  for line, row in enumerate(rows, 1):
    cells = [cell.strip() for cell in row] + ["", ""]
    if not cells[0] or not cells[1]:
      raise UserError(f"--input {input_csv} row {line}: {row}; expected path,label[,start,end].")
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
# What --conflicts does with a video listed under several labels (class_labels) or found in
# several class folders (folders_source).
CONFLICT_MODES = ("error", "skip", "merge", "keep")


def class_name_problem(name: str) -> str | None:
  """Why `name` cannot be a line of labels.txt that reads back as itself, or None.

  labels.txt holds one class per line; its readers split it at line breaks (str.splitlines:
  also \r, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029) and strip the spaces around a line.
  """
  if not name.strip():
    return "is empty or only white space"
  if "\0" in name:
    return "holds a NUL character"
  if name.splitlines() != [name]:
    return "holds a line break"
  if name != name.strip():
    return "starts or ends with white space"
  try:
    name.encode("utf-8")
  except UnicodeEncodeError:  # A file name of undecodable bytes (surrogate escapes).
    return "is not valid UTF-8"
  return None


@dataclasses.dataclass
class FolderDataset:
  """The videos of a class-folder tree, split.

  splits: 'train' and (unless empty) 'validation' -> items; ids are paths relative to the root.
  layout: 'classes' (ROOT/<class>/...) or 'splits' (ROOT/train/<class>/..., with val/ or not).
  links_skipped: 'LINK -> TARGET' of every linked folder not followed because its folder was
    walked already (a loop, or a second path to a folder).
  same_videos: the videos found in several class folders (groups of copies and links).
  repeat_counts: split -> {'conflicts': those videos with an example, or a left-out copy, in
    the split; 'merged': copies folded into another copy's example (--conflicts=merge)}.
  unreadable: videos the probe could not read: never drawn for validation, converted (and
    reported as bad) with the training split.
  """

  splits: dict[str, list[Item]]
  class_names: list[str]
  layout: str
  val_fraction: float | None  # What the split was drawn with; None: the user's own split.
  links_skipped: list[str] = dataclasses.field(default_factory=list)
  same_videos: int = 0
  repeat_counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
  unreadable: int = 0


def _is_video(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in FOLDER_VIDEO_EXTENSIONS


def _is_dir(entry: os.DirEntry) -> bool:
  """A folder, or a link to one; False for a broken or looping link (ELOOP)."""
  try:
    return entry.is_dir()
  except OSError:
    return False


def _entries(directory: str) -> list[os.DirEntry]:
  """The visible entries of `directory`, sorted by name; ValueError naming it if unreadable."""
  try:
    with os.scandir(directory) as found:
      entries = [entry for entry in found if not entry.name.startswith(".")]
  except OSError as e:
    raise UserError(
      f"{directory!r}: cannot list this folder ({e.strerror}); make it readable or move it out "
      "of --input."
    ) from e
  return sorted(entries, key=lambda entry: entry.name)


def _visible(directory: str) -> tuple[list[str], list[str]]:
  """(folders, files) in `directory` that are not hidden, sorted (links followed)."""
  folders, files = [], []
  for entry in _entries(directory):
    (folders if _is_dir(entry) else files).append(entry.name)
  return folders, files


def _class_videos(class_dir: str, links_skipped: list[str]) -> list[str]:
  """The videos anywhere under `class_dir` (as torchvision's folder datasets walk it, links
  followed), hidden files and folders skipped, as sorted paths relative to `class_dir`.

  Every real folder (device, inode) is walked once, and every real folder of the tree before
  any linked one: a link to a folder walked already (a loop such as `self -> .`, or a second
  path to a folder) is not followed and is added to `links_skipped` as 'LINK -> TARGET'. The
  walk is linear in the folders, whatever the links.
  """
  videos = []
  start = os.stat(class_dir)
  seen = {(start.st_dev, start.st_ino)}
  real, linked = [os.curdir], []  # Folders still to walk, relative to class_dir.
  while real or linked:
    relative = real.pop() if real else linked.pop()
    directory = os.path.join(class_dir, relative)
    if os.path.islink(directory):  # Followed only now, once every real folder is seen.
      try:
        status = os.stat(directory)
      except OSError:
        continue  # Gone since it was listed.
      if (status.st_dev, status.st_ino) in seen:
        links_skipped.append(f"{os.path.normpath(directory)} -> {os.readlink(directory)}")
        continue
      seen.add((status.st_dev, status.st_ino))
    for entry in reversed(_entries(directory)):  # Popped in name order.
      path = os.path.normpath(os.path.join(relative, entry.name))
      if entry.is_symlink() and _is_dir(entry):
        linked.append(path)
      elif _is_dir(entry):
        status = entry.stat(follow_symlinks=False)
        if (status.st_dev, status.st_ino) not in seen:  # Else a bind mount seen already.
          seen.add((status.st_dev, status.st_ino))
          real.append(path)
      elif _is_video(entry.name):
        videos.append(path)
  return sorted(videos)


def _check_no_stray_video(directory: str, files: list[str], where: str) -> None:
  stray = [name for name in files if _is_video(name)]
  if stray:
    raise UserError(
      f"{os.path.join(directory, stray[0])}: a video directly in {where}, not in a class "
      f"folder; expected {os.path.join(directory, '<class>', stray[0])}."
    )


def _scan_classes(directory: str, where: str, links_skipped: list[str]) -> dict[str, list[str]]:
  """class name -> its videos (sorted paths relative to `directory`) of `directory`/<class>/...;
  `where` names the folder in errors ('--input ROOT', 'ROOT/train')."""
  folders, files = _visible(directory)
  _check_no_stray_video(directory, files, where)
  if not folders:
    raise UserError(
      f"{where}: no class folders; expected {os.path.join(directory, '<class>', '<video>')}."
    )
  classes = {}
  for name in folders:
    class_dir = os.path.join(directory, name)
    problem = class_name_problem(name)
    if problem:
      # labels.txt would read back other classes (a line break makes two): refused, not escaped,
      # so that every reader of labels.txt sees the folder names as they are.
      raise UserError(
        f"{class_dir!r}: the class folder name {problem}, which labels.txt (one class per line, "
        "spaces around it stripped) cannot hold; rename the folder."
      )
    videos = _class_videos(class_dir, links_skipped)
    if not videos:
      raise UserError(
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


def _sha256(path: str) -> str | None:
  digest = hashlib.sha256()
  try:
    with open(path, "rb") as f:
      while chunk := f.read(1 << 20):
        digest.update(chunk)
  except OSError:
    return None  # Unreadable: the decoder reports it.
  return digest.hexdigest()


def same_videos(root: str, found: Sequence[tuple[str, str]]) -> list[tuple[list[int], str]]:
  """The videos of `found` ((class, path relative to `root`) pairs) that are in several classes:
  groups of indices into `found`, each with 'the same file' (one device and inode: hard or
  symbolic links) or 'the same content' (copies: the same size and sha256). Cheap: one stat per
  file, and only files whose size equals that of a file in another class are read. Empty and
  unreadable files are left to the decoder, which reports them."""
  by_inode = collections.defaultdict(list)
  size_of = {}
  for i, (_, path) in enumerate(found):
    try:
      status = os.stat(os.path.join(root, path))
    except OSError:
      continue
    if status.st_size:
      key = (status.st_dev, status.st_ino)
      by_inode[key].append(i)
      size_of[key] = status.st_size
  by_size = collections.defaultdict(list)
  for key, size in size_of.items():
    by_size[size].append(key)

  def classes(indices: list[int]) -> int:
    return len({found[i][0] for i in indices})

  groups = []
  for keys in by_size.values():
    if classes([i for key in keys for i in by_inode[key]]) < 2:
      continue
    by_hash = collections.defaultdict(list)
    for key in keys:
      digest = _sha256(os.path.join(root, found[by_inode[key][0]][1])) if len(keys) > 1 else ""
      if digest is not None:
        by_hash[digest].append(key)
    for same in by_hash.values():
      indices = sorted(i for key in same for i in by_inode[key])
      if classes(indices) > 1:
        groups.append((indices, "the same file" if len(same) == 1 else "the same content"))
  return sorted(groups)


def _group_text(found: Sequence[tuple[str, str]], indices: list[int], how: str) -> str:
  shown = [repr(found[i][1].replace(os.sep, "/")) for i in indices]
  return f"{', '.join(shown[:-1])} and {shown[-1]} ({how})"


def _items(
  root: str, classes: dict[str, list[str]], labels: dict[str, tuple[str, ...]] | None = None
) -> list[Item]:
  items = []
  for name in sorted(classes):
    for video in classes[name]:
      names = (labels or {}).get(video, (name,))
      items.append(
        Item(
          path=os.path.join(root, video),
          labels=names,
          video_id=video.replace(os.sep, "/"),
          label_text="+".join(names),
        )
      )
  return items


def _user_split_tree(
  root: str,
  folders: list[str],
  split_dirs: list[str],
  val_dirs: list[str],
  val_fraction: float | None,
  links_skipped: list[str],
) -> dict[str, dict[str, list[str]]]:
  """{split: {class: videos relative to root}} of the user's split: ROOT/train/<class>/<video>
  and, when there, ROOT/val/<class>/<video> (or validation/)."""
  others = [name for name in folders if name not in split_dirs]
  if others:
    raise UserError(
      f"{os.path.join(root, others[0])}: a folder beside train/ and {val_dirs[0]}/; expected "
      f"only ROOT/train/<class>/<video> and ROOT/{val_dirs[0]}/<class>/<video>."
    )
  if "train" not in split_dirs:
    raise UserError(
      f"{os.path.join(root, val_dirs[0])}: a validation folder without "
      f"{os.path.join(root, 'train')}; expected ROOT/train/<class>/<video> beside it."
    )
  train_dir = os.path.join(root, "train")
  train = _scan_classes(train_dir, train_dir, links_skipped)
  tree = {"train": {name: [os.path.join("train", v) for v in vs] for name, vs in train.items()}}
  if val_dirs:
    if val_fraction is not None:
      raise UserError(
        f"--val_fraction={val_fraction}: {root} has its own split (train/ and "
        f"{val_dirs[0]}/), which is kept; drop --val_fraction."
      )
    val_dir = os.path.join(root, val_dirs[0])
    validation = _scan_classes(val_dir, val_dir, links_skipped)
    unknown = sorted(set(validation) - set(train))
    if unknown:
      raise UserError(
        f"{os.path.join(val_dir, unknown[0])}: class {unknown[0]!r} has no training folder "
        f"{os.path.join(train_dir, unknown[0])}; every validation class must be a training "
        "class."
      )
    tree["validation"] = {
      name: [os.path.join(val_dirs[0], v) for v in vs] for name, vs in validation.items()
    }
  return tree


def _apply_conflicts(
  root: str,
  tree: dict[str, dict[str, list[str]]],
  found: list[tuple[str, str]],
  split_found: list[str],
  groups: list[tuple[list[int], str]],
  conflicts: str,
) -> tuple[dict[str, list[tuple[str, str, str]]], dict[str, tuple[str, ...]], set[int]]:
  """--conflicts for the videos in several class folders (`groups` of indices into `found`, the
  (class, video) pairs; `split_found`: their splits): an error, or the copies taken out of
  `tree`. Returns (the left-out copies per split as (class, video, why), the merged videos'
  labels, the indices removed)."""
  if groups and conflicts == "error":
    shown = "; ".join(_group_text(found, indices, how) for indices, how in groups[:3])
    raise UserError(
      f"{len(groups)} video(s) are in more than one class folder of --input {root}: {shown}"
      f"{'; ...' if len(groups) > 3 else ''}. Remove the copies or links, or pass "
      "--conflicts=skip to leave them out, --conflicts=merge for one multi-label example per "
      "video, or --conflicts=keep for one example per class folder."
    )
  left_out = {split: [] for split in tree}  # (class, video, why) of the skipped copies.
  merged_labels, removed = {}, set()
  for indices, how in groups:
    if conflicts == "skip":
      why = f"in several class folders: {_group_text(found, indices, how)} (--conflicts=skip)"
      for i in indices:
        left_out[split_found[i]].append((*found[i], why))
      removed.update(indices)
    elif conflicts == "merge":
      merged_labels[found[indices[0]][1]] = tuple(dict.fromkeys(found[i][0] for i in indices))
      removed.update(indices[1:])
  removed_videos = {found[i][1] for i in removed}
  for classes in tree.values():
    for name in classes:
      classes[name] = [video for video in classes[name] if video not in removed_videos]
  return left_out, merged_labels, removed


def folders_source(
  root: str,
  val_fraction: float | None = None,
  seed: int = 0,
  *,
  conflicts: str = "error",
  probe: Callable[[Sequence[str]], Sequence[str | None]] | None = None,
) -> FolderDataset:
  """The videos of ROOT/<class>/<video> split by `val_fraction` (None: DEFAULT_VAL_FRACTION),
  or of ROOT/train/<class>/... and ROOT/val/<class>/... (or validation/) as split by the user,
  where passing `val_fraction` is an error. Class names: the sorted class folders.

  A video in several class folders (a hard or symbolic link to one file, or a copy with the
  same bytes; same_videos) is handled as --conflicts handles a video listed under several
  labels: 'error' (ValueError naming them), 'skip' (every copy left out: reported as bad, with
  the training split or the user's split it is in), 'merge' (one multi-label example where its
  first copy is; the other copies are dropped), 'keep' (one example per copy, in whatever split
  each lands).

  `probe(paths)`: why each video cannot be read, or None. With it, a split drawn here draws from
  the readable videos only and the others join the training split (reported bad there): corrupt
  files never fill the validation split.
  """
  _check_dir("--input", root)
  if val_fraction is not None and not 0 <= val_fraction < 1:
    raise UserError(f"--val_fraction={val_fraction}: expected 0 <= fraction < 1.")
  if conflicts not in CONFLICT_MODES:
    raise UserError(f"--conflicts={conflicts!r}: expected one of {list(CONFLICT_MODES)}.")
  links_skipped = []
  folders, files = _visible(root)
  _check_no_stray_video(root, files, f"--input {root}")
  split_dirs = [name for name in folders if name == "train" or name in _VAL_DIRS]
  val_dirs = [name for name in split_dirs if name in _VAL_DIRS]
  if len(val_dirs) > 1:
    raise UserError(
      f"--input {root}: holds both {val_dirs[0]}/ and {val_dirs[1]}/; expected one validation "
      "folder."
    )
  # The user's split: train/ with val/, or train/ alone. train/ beside other folders is a class
  # (ROOT/{bus,car,train}); val/ beside train/ and other folders is a mistake.
  drawn_with = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
  if split_dirs and (split_dirs == folders or (val_dirs and "train" in split_dirs)):
    tree = _user_split_tree(root, folders, split_dirs, val_dirs, val_fraction, links_skipped)
    if val_dirs:
      drawn_with = None
    layout = "splits"
  else:
    tree = {"train": _scan_classes(root, f"--input {root}", links_skipped)}
    layout = "classes"

  # One video in several class folders, over the whole tree (both of the user's splits).
  found = [
    (name, video) for classes in tree.values() for name in classes for video in classes[name]
  ]
  split_found = [
    split for split, classes in tree.items() for name in classes for _ in classes[name]
  ]
  groups = same_videos(root, found)
  left_out, merged_labels, removed = _apply_conflicts(
    root, tree, found, split_found, groups, conflicts
  )

  unreadable = {}
  if drawn_with is not None:
    pool = tree["train"]
    if probe:
      videos = [video for name in pool for video in pool[name]]
      reasons = probe([os.path.join(root, video) for video in videos])
      bad = {video for video, reason in zip(videos, reasons, strict=True) if reason}
      unreadable = {name: [v for v in vs if v in bad] for name, vs in pool.items()}
      pool = {name: [v for v in vs if v not in bad] for name, vs in pool.items()}
    tree["train"], tree["validation"] = stratified_split(pool, drawn_with, seed)

  splits = {split: _items(root, classes, merged_labels) for split, classes in tree.items()}
  splits["train"] += _items(root, unreadable, merged_labels)
  for split, rows in left_out.items():
    for name, video, why in rows:
      splits[split].append(
        Item(
          path=os.path.join(root, video),
          labels=(name,),
          video_id=video.replace(os.sep, "/"),
          label_text=name,
          error=why,
        )
      )
  # Video i goes to shard i % N: in class order, every shard would list the classes one after
  # the other, in step, and a reader's shuffle buffer would see one class at a time.
  random.Random(f"{seed}/order").shuffle(splits["train"])

  split_of = {item.video_id: split for split, items in splits.items() for item in items}
  repeat_counts = {split: collections.Counter() for split in splits}
  for indices, _ in groups:
    where = {split_of[found[i][1].replace(os.sep, "/")] for i in indices if i not in removed}
    where |= {split_found[i] for i in indices if conflicts == "skip"}
    for split in where:
      repeat_counts[split]["conflicts"] += 1
      if conflicts == "merge":
        repeat_counts[split]["merged"] += len(indices) - 1
  return FolderDataset(
    splits={split: items for split, items in splits.items() if items},
    class_names=sorted(tree["train"]),
    layout=layout,
    val_fraction=drawn_with,
    links_skipped=links_skipped,
    same_videos=len(groups),
    repeat_counts={split: dict(counts) for split, counts in repeat_counts.items() if counts},
    unreadable=sum(len(vs) for vs in unreadable.values()),
  )
