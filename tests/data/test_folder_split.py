"""What make_shards says about the split it draws: train.csv / validation.csv written before the
conversion, the warning for classes with few validation videos, and the classes whose name says
a direction (random flips off in the fine-tune it prints)."""

import csv
import json
import os

import pytest
from shared import digests, read_table, write_video

from vidtx import ownership
from vidtx.data import class_labels, folder_split, make_shards, shard_writer, sources


def touch(root, *paths) -> None:
  """Empty files: enough for everything that happens before a video is decoded."""
  for path in paths:
    os.makedirs(os.path.dirname(root / path), exist_ok=True)
    (root / path).write_bytes(b"")


def read_csv(path) -> list[list[str]]:
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.reader(f))


# ---------------------------------------------------------------------------------------------
# Direction classes.
# ---------------------------------------------------------------------------------------------

# Something-Something v2, Jester and Diving48-like names a horizontal flip turns into another
# class (or into a wrong example of their own).
DIRECTIONS = [
  "Pushing something from left to right",
  "Pushing something from right to left",
  "Turning the camera left while filming something",
  "Moving something and something away from each other leftwards",
  "Swiping Left",
  "Sliding Two Fingers Right",
  "Turning Hand Clockwise",
  "Turning Hand Counterclockwise",
  "turn_left",
  "turn-right",
  "SwipeLeft",
  "rotate_ccw",
  "spin anti-clockwise",  # Split at the hyphen: 'clockwise' is a word of it.
  "LEFT",
  "left",
  "left-handed batting",  # Mirrored, a left-handed stroke is a right-handed one.
]
# Kinetics / SSv2-like names that merely contain the letters, or name a direction a horizontal
# flip keeps.
NOT_DIRECTIONS = [
  "Putting something upright on the table",
  "Turning something upside down",
  "Moving something up",
  "Pulling something from behind of something",
  "brightening a photo",
  "copyright notice",
  "eating leftovers",
  "cleft chin",
  "Rolling Hand Forward",
  "clockwork toy",
  "playing cricket",
  "class_0",
]


def test_direction_classes_find_the_names_a_flip_swaps():
  names = NOT_DIRECTIONS[:6] + DIRECTIONS + NOT_DIRECTIONS[6:]
  assert class_labels.direction_classes(names) == DIRECTIONS
  assert class_labels.direction_classes(NOT_DIRECTIONS) == []
  assert class_labels.direction_classes([]) == []


def test_flip_note_names_the_classes_and_the_flag():
  assert make_shards.flip_note(["cat", "dog"]) == ""
  note = make_shards.flip_note(["cat", "left", "right"])
  assert note == (
    "  random flips will be off: classes 'left', 'right' name a direction a mirror image "
    "swaps (flip=1 turns them on)"
  )
  many = make_shards.flip_note([f"turn_left_{i}" for i in range(8)])
  assert "'turn_left_4' and 3 more name a direction" in many and "\n" not in many


# ---------------------------------------------------------------------------------------------
# The warning for small validation splits.
# ---------------------------------------------------------------------------------------------


def test_small_validation_warning_names_the_classes_and_the_fix(tmp_path):
  sizes = {"archery": 1, "bowling": 3, "curling": 10, "diving": 12, "eating": 40}
  root = tmp_path / "videos"
  touch(root, *[f"{name}/v{i:02d}.mp4" for name, n in sizes.items() for i in range(n)])
  dataset = sources.folders_source(str(root))  # The default 10%.
  warning = folder_split.small_validation_warning(dataset, str(root), "OUT")
  assert warning == (
    "warning: 4 of 5 classes have fewer than 3 validation videos (archery: 0 of 1, "
    "bowling: 1 of 3, curling: 1 of 10, diving: 1 of 12), too few for their accuracy to tell "
    "runs apart; pass --val_fraction=0.25 (3 or more for every class of 10 videos or more), "
    "add videos to the 2 class(es) of 3 videos or fewer (each keeps one for training), or "
    "split the videos yourself as ROOT/train/<class>/ and ROOT/val/<class>/. The split drawn "
    "is written to OUT/validation.csv."
  )
  # The fraction it names does what it says.
  fixed = sources.folders_source(str(root), val_fraction=0.25)
  warning = folder_split.small_validation_warning(fixed, str(root), "OUT")
  assert "2 of 5 classes" in warning and "(archery: 0 of 1, bowling: 1 of 3)" in warning
  assert "--val_fraction" not in warning.split(";")[1]  # Only 'add videos' is left to do.
  # Enough everywhere (3 of 4 videos: every class keeps one): nothing to say.
  enough = tmp_path / "enough"
  touch(enough, *[f"{name}/v{i}.mp4" for name in ("a", "b") for i in range(4)])
  dataset = sources.folders_source(str(enough), val_fraction=0.75)
  assert folder_split.small_validation_warning(dataset, str(enough), "OUT") == ""
  # No validation split at all (--val_fraction=0): the final lines say so, no warning.
  dataset = sources.folders_source(str(enough), val_fraction=0.0)
  assert folder_split.small_validation_warning(dataset, str(enough), "OUT") == ""


def test_small_validation_warning_for_the_users_own_split(tmp_path):
  root = tmp_path / "videos"
  touch(root, *[f"train/{name}/t{i}.mp4" for name in ("run", "walk") for i in range(5)])
  touch(root, *[f"val/run/v{i}.mp4" for i in range(3)], "val/walk/v0.mp4")
  dataset = sources.folders_source(str(root))
  warning = folder_split.small_validation_warning(dataset, str(root), "OUT")
  assert warning == (
    "warning: 1 of 2 classes have fewer than 3 validation videos (walk: 1 of 6), too few for "
    f"their accuracy to tell runs apart; add videos to {root}/val/<class> (3 or more per "
    "class). The split is written to OUT/validation.csv."
  )


# ---------------------------------------------------------------------------------------------
# train.csv and validation.csv.
# ---------------------------------------------------------------------------------------------


def test_folders_write_the_split_and_name_direction_classes(tmp_path, capsys):
  root = tmp_path / "videos"
  names = {"swipe_left": 4, "swipe_right": 4, "wave": 3}
  paths = [f"{name}/v{i}.mp4" for name, n in names.items() for i in range(n)]
  paths[0] = "swipe_left/a, b.mp4"  # A comma: quoted in the CSV.
  paths[1] = "swipe_left/sub/v1.mp4"  # Deeper in the class folder: the path keeps it.
  for num_frames, path in enumerate(paths, 4):  # Other lengths: no two files alike.
    write_video(str(root / path), num_frames)
  out = tmp_path / "out"
  summaries = make_shards.main(
    ["--source=folders", f"--input={root}", f"--output_dir={out}", "--num_workers=1"]
  )
  captured = capsys.readouterr()
  # The lists hold exactly what each table holds.
  for split in ("train", "validation"):
    rows = read_csv(out / f"{split}.csv")
    assert rows[0] == ["path", "class"]
    table = read_table(out, summaries[split]["table"])
    labels = class_labels.read_labels(str(out / "labels.txt"))
    assert sorted(rows[1:]) == sorted([e["id"], labels[e["labels"][0]]] for e in table), split
    assert rows[1:] == sorted(rows[1:], key=lambda row: (row[1], row[0]))  # By class, path.
  assert ["swipe_left/a, b.mp4", "swipe_left"] in read_csv(out / "train.csv") + read_csv(
    out / "validation.csv"
  )
  inventory = ownership.written_names(str(out))
  assert {"train.csv", "validation.csv"} <= inventory
  # One warning line, before the conversion's progress; every class has < 3 validation videos.
  warning = [line for line in captured.err.splitlines() if "validation videos" in line]
  assert len(warning) == 1
  assert warning[0].startswith("warning: 3 of 3 classes have fewer than 3 validation videos")
  assert "swipe_left: 1 of 4" in warning[0] and "wave: 1 of 3" in warning[0]
  # The fine-tune command, and under it why flips will be off.
  lines = captured.out.rstrip().splitlines()
  assert lines[-2].startswith("  python train.py --config=configs/finetune.py:")
  assert lines[-1] == (
    "  random flips will be off: classes 'swipe_left', 'swipe_right' name a direction a mirror "
    "image swaps (flip=1 turns them on)"
  )
  # A rerun resumes and rewrites the same lists.
  before = {name: digests(out)[name] for name in ("train.csv", "validation.csv")}
  make_shards.main(["--source=folders", f"--input={root}", f"--output_dir={out}"])
  assert {name: digests(out)[name] for name in before} == before


def test_the_split_is_written_before_the_conversion(tmp_path, monkeypatch):
  root = tmp_path / "videos"
  touch(root, *[f"{name}/v{i}.mp4" for name in ("cat", "dog") for i in range(4)])
  # Every video reads (no decoding), and the conversion stops at once.
  monkeypatch.setattr(folder_split, "probe_videos", lambda paths, *a: [None] * len(paths))

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(shard_writer, "write_shards", interrupted)
  out = tmp_path / "out"
  with pytest.raises(KeyboardInterrupt):
    folder_split.write_folders(str(root), str(out), val_fraction=0.5, progress=False)
  with open(out / folder_split.FOLDERS_SPLIT_FILE) as f:
    record = json.load(f)
  assert record["videos"] == {"train": 4, "validation": 4}
  validation = read_csv(out / "validation.csv")[1:]
  train = read_csv(out / "train.csv")[1:]
  assert len(validation) == 4 and len(train) == 4
  assert sorted(train + validation) == sorted(
    [f"{name}/v{i}.mp4", name] for name in ("cat", "dog") for i in range(4)
  )
  assert [row[1] for row in validation] == ["cat", "cat", "dog", "dog"]


def test_a_users_split_file_is_never_replaced(tmp_path, capsys, monkeypatch):
  root = tmp_path / "videos"
  touch(root, *[f"{name}/v{i}.mp4" for name in ("cat", "dog") for i in range(4)])
  monkeypatch.setattr(folder_split, "probe_videos", lambda paths, *a: [None] * len(paths))
  out = tmp_path / "out"
  args = ["--source=folders", f"--input={root}", f"--output_dir={out}", "--num_workers=1"]
  make_shards.main([*args, "--val_fraction=0.5"])
  capsys.readouterr()
  # Shards of an earlier vidtx, which wrote no lists (its inventory has none), and the user's
  # own notes under one of the names: kept, and the rerun stops before it writes anything.
  inventory = ownership.written_names(str(out)) - {"train.csv", "validation.csv"}
  ownership.write_marker(str(out), "shards", written=inventory)
  (out / "train.csv").unlink()
  (out / "validation.csv").write_text("my own list\n")
  before = digests(out)
  with pytest.raises(SystemExit):
    make_shards.main([*args, "--val_fraction=0.5"])
  err = capsys.readouterr().err
  assert err == (
    f"vidtx.data.make_shards: error: {out}/validation.csv exists and was not written by this "
    "tool; it would be replaced by the list of the split's videos: move it away, or choose a "
    "new --output_dir.\n"
  )
  assert digests(out) == before


def test_split_csv_rows():
  items = [
    sources.Item(path="/r/b/x.mp4", labels=("b",), video_id="b/x.mp4"),
    sources.Item(path="/r/a/y.mp4", labels=("a", "b"), video_id="a/y.mp4"),  # Merged.
    sources.Item(path="/r/a/\udcff.mp4", labels=("a",), video_id="a/\udcff.mp4"),  # Not UTF-8.
    sources.Item(path="/r/a/z.mp4", labels=("a",), video_id="a/z.mp4", error="left out"),
  ]
  assert folder_split.split_csv(items) == (
    "path,class\na/y.mp4,a\na/\\xff.mp4,a\na/y.mp4,b\nb/x.mp4,b\n"
  )
