"""vidtx.data.make_shards on hostile class folders and output paths (issue 24): class names that
labels.txt cannot hold, symlink loops, one video in two classes, corrupt files and the
validation draw, the printed fine-tune command, overlapping paths and a second conversion."""

import json
import os
import shlex
import shutil

import pytest
from absl import flags
from ml_collections import config_flags
from shared import REPO, digests, read_table, within, write_lines, write_video

from vidtx import cli, locks, ownership
from vidtx.data import class_labels, make_shards, shard_tables, sources


def touch(root, *paths) -> None:
  """Empty files: enough for everything that happens before a video is decoded."""
  for path in paths:
    os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
    with open(os.path.join(root, path), "wb"):
      pass


def fails(capsys, argv: list[str]) -> str:
  """make_shards.main(argv)'s one-line error (exit 1)."""
  with pytest.raises(SystemExit) as exit_info:
    make_shards.main(argv)
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert err.startswith("vidtx.data.make_shards: error: ") and err.count("\n") == 1, err
  return err


def folders(root, out, *flags_) -> list[str]:
  return ["--source=folders", f"--input={root}", f"--output_dir={out}", "--num_workers=1", *flags_]


# ---------------------------------------------------------------------------------------------
# Item 6: class names must read back from labels.txt as written.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name, problem",
  [
    ("jump\nup", "holds a line break"),
    ("jump\rup", "holds a line break"),
    ("jump\u2028up", "holds a line break"),  # str.splitlines splits there too.
    (" jump", "starts or ends with white space"),
    ("jump\t", "starts or ends with white space"),
    (b"jump\xff", "is not valid UTF-8"),
  ],
)
def test_a_class_folder_name_labels_txt_cannot_hold_is_refused(tmp_path, capsys, name, problem):
  root = tmp_path / "videos"
  name = os.fsdecode(name)
  touch(root, "cat/c.mp4", os.path.join(name, "j.mp4"), "zebra/z.mp4")
  out = tmp_path / "out"
  before = digests(root)
  err = fails(capsys, folders(root, out))
  assert f"{os.path.join(str(root), name)!r}: the class folder name {problem}" in err
  assert "rename the folder" in err
  assert not out.exists() and digests(root) == before


def test_labels_from_an_annotation_file_that_cannot_round_trip_are_refused(tmp_path, capsys):
  videos = tmp_path / "videos"
  touch(videos, "a.mp4", "b.mp4")
  # A quoted CSV field may hold a line break: 'jump\nup' would make labels.txt 3 lines for 2.
  annotations = write_lines(tmp_path / "train.csv", ["a.mp4,cat", 'b.mp4,"jump', 'up"'])
  out = tmp_path / "out"
  args = ["--source=csv", f"--input={annotations}", f"--video_dir={videos}"]
  err = fails(capsys, [*args, f"--output_dir={out}"])
  assert "class 1 'jump\\nup' holds a line break: labels.txt" in err
  assert not out.exists()


def test_labels_txt_is_read_back_after_writing(tmp_path, monkeypatch):
  path = str(tmp_path / "labels.txt")
  class_labels.write_labels(path, ["cat", "dog walking", "ñandú"])
  assert class_labels.read_labels(path) == ["cat", "dog walking", "ñandú"]
  # The check after writing catches what the name check would miss: the file is removed.
  monkeypatch.setattr(sources, "class_name_problem", lambda name: None)
  other = str(tmp_path / "other.txt")
  with pytest.raises(ValueError, match=r"read back as 3 classes, not the 2 written"):
    class_labels.write_labels(other, ["cat", "jump\nup"])
  assert not os.path.exists(other)


# ---------------------------------------------------------------------------------------------
# Item 10: symlink loops are walked once, in bounded time, and reported.
# ---------------------------------------------------------------------------------------------


def test_symlink_loops_in_a_class_folder_are_followed_once_and_reported(tmp_path, capsys):
  root = tmp_path / "videos"
  for num_frames, path in enumerate(("cat/c1.mp4", "cat/a/a1.mp4", "cat/b/b1.mp4"), 4):
    write_video(str(root / path), num_frames)
  write_video(str(root / "dog/d1.mp4"), 8)
  os.symlink(".", root / "cat/self")  # A self-link: 40 levels deep before the fix.
  os.symlink("../b", root / "cat/a/to_b")  # Two folders linking each other.
  os.symlink("../a", root / "cat/b/to_a")
  os.symlink("l2", root / "cat/l1")  # Two links naming each other (ELOOP): no folder.
  os.symlink("l1", root / "cat/l2")
  for i in range(12):  # Exponential in the links before the fix.
    os.symlink("..", root / "cat/a" / f"up{i}")
  with within(20):
    dataset = sources.folders_source(str(root), val_fraction=0)
  assert sorted(item.video_id for item in dataset.splits["train"]) == [
    "cat/a/a1.mp4",
    "cat/b/b1.mp4",
    "cat/c1.mp4",
    "dog/d1.mp4",
  ]
  cat = str(root / "cat")
  assert sorted(dataset.links_skipped) == sorted(
    [f"{cat}/self -> .", f"{cat}/a/to_b -> ../b", f"{cat}/b/to_a -> ../a"]
    + [f"{cat}/a/up{i} -> .." for i in range(12)]
  )

  out = tmp_path / "out"
  with within(60):
    summaries = make_shards.main(folders(root, out, "--val_fraction=0"))
  assert summaries["train"]["examples"] == 4 and summaries["train"]["bad"] == 0
  assert sorted(e["id"] for e in read_table(out, summaries["train"]["table"])) == [
    "cat/a/a1.mp4",
    "cat/b/b1.mp4",
    "cat/c1.mp4",
    "dog/d1.mp4",
  ]
  warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
  assert len(warnings) == 1  # One line for all 15.
  assert warnings[0].startswith(f"warning: --input {root}: 15 linked folder(s) lead to a folder")
  assert "(a loop, or a second path to it) and were not followed: " in warnings[0]


def test_a_class_folder_linking_to_the_root_is_bounded_and_one_video_in_two_classes(
  tmp_path, capsys
):
  root = tmp_path / "videos"
  touch(root, "cat/c.mp4", "dog/d.mp4")
  (root / "cat/c.mp4").write_bytes(b"c" * 64)
  (root / "dog/d.mp4").write_bytes(b"d" * 65)
  os.symlink("..", root / "cat/root")  # cat holds cat/root/dog/d.mp4: dog's video.
  with within(20):
    err = fails(capsys, folders(root, tmp_path / "out"))
  assert "1 video(s) are in more than one class folder" in err
  assert "'cat/root/dog/d.mp4' and 'dog/d.mp4' (the same file)" in err


# ---------------------------------------------------------------------------------------------
# Item 11: the same video in two class folders: a link or a copy.
# ---------------------------------------------------------------------------------------------


def test_same_videos_finds_links_and_copies_and_reads_only_equal_sizes(tmp_path, monkeypatch):
  root = tmp_path / "videos"
  files = {
    "cat/a.mp4": b"x" * 100,
    "cat/b.mp4": b"y" * 200,
    "cat/unique.mp4": b"u" * 300,
    "dog/copy_of_a.mp4": b"x" * 100,  # A copy: same bytes.
    "dog/same_size.mp4": b"z" * 200,  # Same size as cat/b.mp4, other bytes: not a copy.
    "dog/empty.mp4": b"",
    "eel/empty.mp4": b"",  # Empty files: the decoder reports them, not one video.
  }
  for path, data in files.items():
    os.makedirs(os.path.dirname(root / path), exist_ok=True)
    (root / path).write_bytes(data)
  os.link(root / "cat/unique.mp4", root / "eel/hard.mp4")  # A hard link to cat's.
  os.symlink("../cat/b.mp4", root / "eel/soft.mp4")  # A symbolic link to cat's.
  found = [(path.split("/")[0], path) for path in sorted([*files, "eel/hard.mp4", "eel/soft.mp4"])]
  hashed = []
  real_sha256 = sources._sha256
  monkeypatch.setattr(sources, "_sha256", lambda path: hashed.append(path) or real_sha256(path))
  groups = [
    ([found[i][1] for i in indices], how) for indices, how in sources.same_videos(str(root), found)
  ]
  assert sorted(groups) == [
    (["cat/a.mp4", "dog/copy_of_a.mp4"], "the same content"),
    (["cat/b.mp4", "eel/soft.mp4"], "the same file"),
    (["cat/unique.mp4", "eel/hard.mp4"], "the same file"),
  ]
  # Read: only the sizes two classes share (100: a and its copy; 200: b and dog's), not a
  # file whose size no other class has, nor one link's second name.
  assert sorted(os.path.relpath(p, root) for p in hashed) == [
    "cat/a.mp4",
    "cat/b.mp4",
    "dog/copy_of_a.mp4",
    "dog/same_size.mp4",
  ]


def _two_classes_sharing_videos(root) -> None:
  for num_frames, path in enumerate(("cat/c1.mp4", "cat/c2.mp4", "cat/c3.mp4", "dog/d1.mp4"), 4):
    write_video(str(root / path), num_frames)
  os.link(root / "cat/c1.mp4", root / "dog/hard.mp4")
  os.symlink("../cat/c2.mp4", root / "dog/soft.mp4")
  shutil.copyfile(root / "cat/c3.mp4", root / "dog/copy.mp4")


def test_one_video_in_two_class_folders_follows_conflicts(tmp_path, capsys):
  root = tmp_path / "videos"
  _two_classes_sharing_videos(root)
  before = digests(root)
  out = tmp_path / "out"
  # Default: refused before anything is written, naming the copies and how they are the same.
  err = fails(capsys, folders(root, out, "--val_fraction=0"))
  assert "3 video(s) are in more than one class folder of --input" in err
  assert "'cat/c1.mp4' and 'dog/hard.mp4' (the same file)" in err
  assert "'cat/c2.mp4' and 'dog/soft.mp4' (the same file)" in err
  assert "'cat/c3.mp4' and 'dog/copy.mp4' (the same content)" in err
  assert "--conflicts=skip" in err and "--conflicts=merge" in err and "--conflicts=keep" in err
  assert not out.exists() and digests(root) == before

  # skip: every copy left out, reported as bad, counted.
  summary = make_shards.main(folders(root, out / "skip", "--val_fraction=0", "--conflicts=skip"))
  printed = capsys.readouterr().out
  train = summary["train"]
  assert (train["videos"], train["examples"], train["bad"], train["conflicts"]) == (7, 1, 6, 3)
  assert [e["id"] for e in read_table(out / "skip", train["table"])] == ["dog/d1.mp4"]
  with open(out / "skip" / "train_report.txt") as f:
    reasons = {line.split("\t")[0]: line.split("\t")[2] for line in f}
  assert reasons["dog/copy.mp4"].startswith("in several class folders: 'cat/c3.mp4' and")
  assert "3 video(s) in several class folders left out (bad) (--conflicts=skip)" in printed

  # merge: one multi-label example per video, read multi-hot.
  summary = make_shards.main(folders(root, out / "merge", "--val_fraction=0", "--conflicts=merge"))
  printed = capsys.readouterr().out
  train = summary["train"]
  assert (train["examples"], train["conflicts"], train["merged"]) == (4, 3, 3)
  examples = {e["id"]: e for e in read_table(out / "merge", train["table"])}
  assert sorted(examples) == ["cat/c1.mp4", "cat/c2.mp4", "cat/c3.mp4", "dog/d1.mp4"]
  assert examples["cat/c1.mp4"]["labels"] == [0, 1] and examples["cat/c1.mp4"]["text"] == "cat+dog"
  assert examples["dog/d1.mp4"]["labels"] == [1]
  assert "config.dataset_configs.multi_label = True" in printed

  # keep: one example per class folder (the old behaviour), now counted and said.
  summary = make_shards.main(folders(root, out / "keep", "--val_fraction=0", "--conflicts=keep"))
  printed = capsys.readouterr().out
  assert (summary["train"]["examples"], summary["train"]["conflicts"]) == (7, 3)
  assert "3 video(s) in several class folders written once per label" in printed
  assert digests(root) == before
  # The policy is part of the recorded split: a rerun with another one is refused.
  err = fails(capsys, folders(root, out / "keep", "--val_fraction=0", "--conflicts=skip"))
  assert "--conflicts=keep" in err and "--conflicts=skip" in err


# ---------------------------------------------------------------------------------------------
# Item 12: corrupt files are never drawn for validation; no command that cannot work.
# ---------------------------------------------------------------------------------------------


def _good_and_corrupt(root) -> None:
  """cat and dog: 2 videos that decode and 4 corrupt ones each ('bad*' sorts first)."""
  for c, name in enumerate(("cat", "dog")):
    for i in range(2):
      write_video(str(root / name / f"good{i}.mp4"), 4 + 2 * c + i)
    for i in range(4):
      path = root / name / f"bad{i}.mp4"
      path.write_bytes(f"not a video: {name} {i}\n".encode() * 40)


def test_corrupt_videos_are_not_drawn_for_validation(tmp_path, capsys):
  root = tmp_path / "videos"
  _good_and_corrupt(root)
  # Without the probe, seed 3 draws only corrupt files for validation: 0 examples.
  unprobed = sources.folders_source(str(root), 0.5, seed=3)
  assert all("/bad" in item.video_id for item in unprobed.splits["validation"])
  out = tmp_path / "out"
  summaries = make_shards.main(folders(root, out, "--val_fraction=0.5", "--seed=3"))
  captured = capsys.readouterr()
  validation, train = summaries["validation"], summaries["train"]
  # Of each class's 2 readable videos, round(0.5 * 2) = 1 is drawn; the 8 corrupt go to train.
  assert (validation["videos"], validation["examples"], validation["bad"]) == (2, 2, 0)
  assert (train["videos"], train["examples"], train["bad"]) == (10, 2, 8)
  assert sorted(e["id"] for e in read_table(out, validation["table"])) in (
    [f"cat/good{i}.mp4", f"dog/good{j}.mp4"] for i in range(2) for j in range(2)
  )
  assert "8 video(s) do not open or decode a first frame; none was drawn for validation" in (
    captured.err
  )
  assert "configs/finetune.py:model=timesformer" in captured.out


def test_no_fine_tune_command_when_a_split_has_no_good_video(tmp_path, capsys):
  root = tmp_path / "videos"
  write_video(str(root / "train/cat/c.mp4"), 4)
  write_video(str(root / "train/dog/d.mp4"), 5)
  (root / "val/cat").mkdir(parents=True)
  (root / "val/cat/broken.mp4").write_bytes(b"not a video" * 30)  # The user's own split.
  out = tmp_path / "out"
  summaries = make_shards.main(folders(root, out))
  printed = capsys.readouterr().out
  assert summaries["validation"]["examples"] == 0
  assert "No fine-tune command: the validation split holds no video that could be converted" in (
    printed
  )
  assert "python train.py" not in printed and "vidtx-train" not in printed


# ---------------------------------------------------------------------------------------------
# POOR: the printed fine-tune command works for any path (a comma, spaces).
# ---------------------------------------------------------------------------------------------


def parse_train_command(command: str, monkeypatch):
  """The config the printed command builds: its --config parsed as train.py parses it (absl and
  config_flags), in the folder it runs in; nothing trained. CHECKPOINT_DIR is left empty."""
  words = shlex.split(command.replace("init=CHECKPOINT_DIR", "init="))
  cwd = REPO
  if words[0] == "cd":
    cwd, words = words[1], words[3:]
    assert command.split(" && ")[0] == f"cd {shlex.quote(cwd)}"
  assert words[0] in ("python", "vidtx-train"), command
  argv = words[1:] if words[0] == "python" else ["vidtx-train", *words[1:]]
  monkeypatch.chdir(cwd)
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  flags.DEFINE_string("workdir", None, "", flag_values=values)
  values(cli._resolve_config_args(argv))
  return values.config, values.workdir


def test_the_printed_command_builds_the_config_for_any_shards_path(tmp_path, capsys, monkeypatch):
  root = tmp_path / "videos"
  for num_frames, path in enumerate(("cat/c1.mp4", "cat/c2.mp4", "dog/d1.mp4", "dog/d2.mp4"), 4):
    write_video(str(root / path), num_frames)
  out = tmp_path / "my shards, v2"  # A comma and a space: data= cannot carry it.
  make_shards.main(folders(root, out, "--val_fraction=0.5"))
  printed = capsys.readouterr().out
  command = printed.rstrip().splitlines()[-1].strip()
  assert command.startswith(f"cd {shlex.quote(str(out))} && vidtx-train ")
  assert "give CHECKPOINT_DIR as an absolute path" in printed
  config, workdir = parse_train_command(command, monkeypatch)
  dc = config.dataset_configs
  assert os.path.realpath(dc.base_dir) == os.path.realpath(out)
  assert dict(dc.tables) == {"train": "train.tfrecord@2", "validation": "validation.tfrecord@2"}
  assert dict(dc.examples_per_subset) == {"train": 2, "validation": 2}
  assert dc.num_classes == 2 and list(dc.class_names) == ["cat", "dog"]
  assert workdir == os.path.join(REPO, "runs/mine")  # Absolute: the command runs elsewhere.

  # The same shards under other names: spaces at the end, a quote; and a plain path.
  for name in ("shards ", "it's, odd", "plain shards"):
    moved = tmp_path / name
    os.rename(out, moved)
    out = moved
    command = make_shards.finetune_command(str(moved))
    assert command.startswith("python train.py") == (name == "plain shards"), command
    config, _ = parse_train_command(command, monkeypatch)
    assert config.dataset_configs.base_dir == str(moved)
    assert dict(config.dataset_configs.examples_per_subset) == {"train": 2, "validation": 2}


# ---------------------------------------------------------------------------------------------
# The output folder: never an input, one conversion at a time.
# ---------------------------------------------------------------------------------------------


def test_an_output_dir_holding_or_being_an_input_is_refused(tmp_path, capsys):
  videos = tmp_path / "videos"
  touch(videos, "cat/c.mp4", "dog/d.mp4")
  holder = tmp_path / "holder"
  holder.mkdir()
  annotations = write_lines(holder / "list.csv", ["cat/c.mp4,cat"])
  before = digests(tmp_path)
  csv_args = ["--source=csv", f"--input={annotations}", f"--video_dir={videos}"]
  err = fails(capsys, [*csv_args, f"--output_dir={holder}"])
  assert f"--output_dir={holder} contains the input --input={annotations}" in err
  err = fails(capsys, [*csv_args, f"--output_dir={tmp_path}"])
  assert f"--output_dir={tmp_path} contains the input" in err
  err = fails(capsys, folders(videos, videos))
  assert f"--output_dir={videos} is the input --input={videos}" in err
  os.symlink(videos, tmp_path / "link")
  err = fails(capsys, folders(videos, tmp_path / "link"))  # Resolved: the link is the input.
  assert "is the input --input=" in err
  os.remove(tmp_path / "link")
  assert digests(tmp_path) == before


def test_a_second_conversion_into_the_same_folder_refuses_naming_the_holder(
  tmp_path, capsys, monkeypatch
):
  root = tmp_path / "videos"
  write_video(str(root / "cat/c.mp4"), 4)
  write_video(str(root / "dog/d.mp4"), 5)
  out = tmp_path / "out"
  args = folders(root, out, "--val_fraction=0")
  make_shards.main(args)
  capsys.readouterr()
  before = digests(out)
  # Another conversion holds the folder (flock: a second open file in this process conflicts).
  # Refused before the videos are even listed.
  monkeypatch.setattr(sources, "folders_source", lambda *a, **k: pytest.fail("inputs read"))
  with locks.hold(str(out), shard_tables.LOCK_HOLDER):
    err = fails(capsys, args)
  monkeypatch.undo()
  assert f"{out} is in use by vidtx.data.make_shards (pid {os.getpid()} on host" in err
  assert digests(out) == before
  assert not os.path.exists(out / locks.LOCK)
  # Everything the conversion wrote is in the marker's inventory: nothing there is foreign.
  assert ownership.foreign_entries(str(out), "shards") == []
  with open(out / "train_summary.json") as f:
    assert json.load(f)["examples"] == 2
