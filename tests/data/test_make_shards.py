"""vidtx.data.make_shards: annotation files and video folders -> DMVR shards, read back."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from shared import (
  REPO,
  H,
  digests,
  read_table,
  write_lines,
  write_video,
)

from vidtx.data import (
  class_labels,
  dmvr,
  folder_split,
  make_shards,
  shard_tables,
  sources,
)
from vidtx.inference.preprocess import decode_video

# Frame k of every test video has brightness BASE + STEP * k (a red corner shows the channel
# order), so the frames read back tell which source frames were kept.


def by_id(examples: list[dict]) -> dict[str, dict]:
  return {e["id"]: e for e in examples}


def read_report(output_dir, split: str) -> dict[str, str]:
  with open(os.path.join(output_dir, f"{split}_report.txt")) as f:
    return {line.split("\t")[0]: line.rstrip("\n").split("\t")[2] for line in f}


# ---------------------------------------------------------------------------------------------
# Sources.
# ---------------------------------------------------------------------------------------------


def test_kinetics_round_trip(tmp_path):
  videos = tmp_path / "videos"
  # A full video cut to [1, 2) s, a pre-cut clip in its label's folder, a WebM full video.
  write_video(str(videos / "fullvid_001.mp4"), 30, fps=10)
  write_video(str(videos / "riding bike" / "clipvid_002_000005_000015.mp4"), 12, fps=10)
  write_video(str(videos / "webmvid_003.webm"), 30, fps=10)
  annotations = write_lines(
    tmp_path / "kinetics_train.csv",
    [
      "label,youtube_id,time_start,time_end,split",
      "abseiling,fullvid_001,1,2,train",
      "riding bike,clipvid_002,5,15,train",
      "abseiling,webmvid_003,2,3,train",
      "abseiling,gone_004,0,10,train",
    ],
  )
  source = sources.kinetics_source(annotations, str(videos))
  assert source.split == "train"
  out = tmp_path / "out"
  summary = shard_tables.write_split(
    source.items, str(out), source.split, num_shards=2, progress=False
  )
  assert summary["table"] == "train.tfrecord@2"
  assert (summary["examples"], summary["bad"], summary["num_classes"]) == (3, 1, 2)
  assert class_labels.read_labels(str(out / "labels.txt")) == ["abseiling", "riding bike"]
  examples = by_id(read_table(out, "train.tfrecord@2"))
  full = examples["fullvid_001_000001_000002"]
  assert full["indices"] == list(range(10, 20))
  assert (full["labels"], full["text"], full["fps"]) == ([0], "abseiling", 10)
  assert (full["start"], full["end"]) == (1_000_000, 2_000_000)
  # The stored JPEGs hold the decoded frames up to JPEG loss (which rings at the red corner).
  decoded = decode_video(str(videos / "fullvid_001.mp4"))[10:20].astype(float)
  assert np.abs(full["frames"] - decoded).mean() < 2
  np.testing.assert_allclose(full["frames"][:, H // 2 :], decoded[:, H // 2 :], atol=6)
  clip = examples["clipvid_002_000005_000015"]
  assert clip["indices"] == list(range(12))  # Pre-cut: every frame of the file.
  assert (clip["labels"], clip["text"], clip["start"], clip["end"]) == (
    [1],
    "riding bike",
    5_000_000,
    15_000_000,
  )
  assert examples["webmvid_003_000002_000003"]["indices"] == list(range(20, 30))
  assert read_report(out, "train")["gone_004_000000_000010"].startswith("missing")
  with open(out / "train_summary.json") as f:
    assert json.load(f)["examples"] == 3

  unlabelled = write_lines(
    tmp_path / "test.csv", ["youtube_id,time_start,time_end,split", "fullvid_001,0,1,test"]
  )
  source = sources.kinetics_source(unlabelled, str(videos))
  assert source.split == "test" and source.items[0].labels == ()
  shard_tables.write_split(source.items, str(out), "test", num_shards=1, progress=False)
  (example,) = read_table(out, "test.tfrecord@1")
  assert example["labels"] == [-1] and example["indices"] == list(range(10))


def test_ssv2_maps_templates_to_label_indices(tmp_path):
  videos = tmp_path / "videos"
  for video_id in ("101", "102"):
    write_video(str(videos / f"{video_id}.webm"), 6, fps=12)
  labels = tmp_path / "something-something-v2-labels.json"
  labels.write_text(
    json.dumps(
      {"Holding something next to something": "1", "Pushing something from left to right": "0"}
    )
  )
  split = tmp_path / "something-something-v2-validation.json"
  split.write_text(
    json.dumps(
      [
        {
          "id": "101",
          "label": "holding pen next to cup",
          "template": "Holding [something] next to [something]",
          "placeholders": ["pen", "cup"],
        },
        {
          "id": "102",
          "label": "pushing box from left to right",
          "template": "Pushing [something] from left to right",
          "placeholders": ["box"],
        },
      ]
    )
  )
  source = sources.ssv2_source(str(split), str(labels), str(videos))
  assert source.split == "validation"
  out = tmp_path / "out"
  shard_tables.write_split(
    source.items,
    str(out),
    source.split,
    num_shards=1,
    class_names=source.class_names,
    progress=False,
  )
  assert class_labels.read_labels(str(out / "labels.txt")) == [
    "Pushing something from left to right",
    "Holding something next to something",
  ]
  examples = by_id(read_table(out, "validation.tfrecord@1"))
  assert examples["101"]["labels"] == [1] and examples["102"]["labels"] == [0]
  assert examples["101"]["text"] == "Holding something next to something"
  assert examples["101"]["fps"] == 12 and len(examples["101"]["frames"]) == 6

  test_split = tmp_path / "something-something-v2-test.json"
  test_split.write_text(json.dumps([{"id": "103"}]))
  with pytest.raises(ValueError, match="no 'template'"):
    sources.ssv2_source(str(test_split), str(labels), str(videos))


def test_epic_labels_are_noun_then_300_plus_verb(tmp_path):
  videos = tmp_path / "EPIC-KITCHENS"
  write_video(str(videos / "P01" / "videos" / "P01_01.MP4"), 30, fps=10)
  annotations = write_lines(
    tmp_path / "EPIC_100_validation.csv",
    [
      "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,"
      "start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,"
      "all_noun_classes",
      "P01_01_0,P01,P01_01,00:00:00.50,00:00:00.50,00:00:01.20,25,60,open door,open,3,door,8,"
      "['door'],[8]",
      "P01_01_1,P01,P01_01,00:00:01.50,00:00:01.50,00:00:02.50,75,125,take cup,take,0,cup,13,"
      "['cup'],[13]",
      "P02_01_0,P02,P02_01,00:00:01.00,00:00:01.00,00:00:02.00,50,100,filter filter,filter,5,"
      "filter,20,['filter'],[20]",
    ],
  )
  nouns = write_lines(
    tmp_path / "EPIC_100_noun_classes.csv",
    ["id,key,instances,category", "8,door,\"['door']\",furniture"],
  )
  source = sources.epic_source(annotations, str(videos), noun_classes=nouns)
  assert source.split == "validation" and source.class_splits == [300, 97]
  out = tmp_path / "out"
  summary = shard_tables.write_split(
    source.items,
    str(out),
    source.split,
    num_shards=1,
    class_names=source.class_names,
    class_splits=source.class_splits,
    progress=False,
  )
  assert (summary["examples"], summary["bad"], summary["num_classes"]) == (2, 1, 397)
  names = class_labels.read_labels(str(out / "labels.txt"))
  assert len(names) == 397
  assert (names[8], names[13], names[0], names[300 + 3], names[300]) == (
    "door",
    "cup",
    "noun_0",
    "open",
    "take",
  )
  assert names[20] == names[305] == "filter"  # A noun and a verb may share a name.
  examples = by_id(read_table(out, "validation.tfrecord@1"))
  opening = examples["P01_01_0"]
  assert opening["labels"] == [8, 303] and opening["text"] == "open door"
  assert (opening["start"], opening["end"]) == (500_000, 1_200_000)
  assert opening["indices"] == list(range(5, 12))
  taking = examples["P01_01_1"]
  assert taking["labels"] == [13, 300] and taking["indices"] == list(range(15, 25))
  assert read_report(out, "validation")["P02_01_0"].startswith("missing")
  assert "class_splits = [300, 97]" in make_shards.config_snippet(str(out))


def test_bad_videos_are_reported_and_the_rest_converts(tmp_path):
  videos = tmp_path / "videos"
  good = write_video(str(videos / "good.mp4"), 24)
  write_video(str(videos / "short.mp4"), 3)
  with open(good, "rb") as f:
    data = f.read()
  (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])
  (videos / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
  (videos / "empty.mp4").write_bytes(b"")
  annotations = write_lines(
    tmp_path / "videos.csv",
    [
      "path,label",
      "good.mp4,jump",
      "short.mp4,jump",
      "truncated.mp4,jump",
      "garbage.mp4,jump",
      "empty.mp4,jump",
      "missing.mp4,jump",
      "good.mp4,fly",
      "good.mp4,1",
      "good.mp4,7",
      "good.mp4,jump,0.5,0.6",
      "good.mp4,jump,5,6",
    ],
  )
  label_map = write_lines(tmp_path / "classes.txt", ["jump", "swim"])
  source = sources.csv_source(annotations, str(videos))
  assert source.split == "videos"
  out = tmp_path / "out"
  # good.mp4 comes as 'jump' and as class 1: kept as two examples on purpose.
  summary = shard_tables.write_split(
    source.items,
    str(out),
    "train",
    num_shards=3,
    min_frames=4,
    label_map=label_map,
    conflicts="keep",
    progress=False,
  )
  assert (summary["examples"], summary["bad"]) == (2, 9)
  reasons = [row[3] for row in summary["bad_videos"]]
  assert [row[0] for row in summary["bad_videos"]] == [1, 2, 3, 4, 5, 6, 8, 9, 10]
  assert reasons[0].startswith("too short: 3 frame(s)")
  assert reasons[1].startswith("cannot decode") and reasons[2].startswith("cannot decode")
  assert reasons[3] == "empty file" and reasons[4].startswith("missing")
  assert reasons[5].startswith("unknown label 'fly'")
  assert reasons[6].startswith("label index 7 outside [0, 2)")
  assert reasons[7].startswith("too short: 3 frame(s)")  # 0.5..0.6 s at 30 fps.
  assert "outside the video" in reasons[8]
  with open(out / "train_report.txt") as f:
    lines = f.read().splitlines()
  assert len(lines) == 9 and lines[0] == f"short.mp4\t{videos / 'short.mp4'}\t{reasons[0]}"
  examples = read_table(out, "train.tfrecord@3")
  assert sorted((e["id"], e["labels"][0], e["text"]) for e in examples) == [
    ("good.mp4", 0, "jump"),
    ("good.mp4", 1, "swim"),
  ]  # An index gets its name as text.
  assert class_labels.read_labels(str(out / "labels.txt")) == ["jump", "swim"]


def test_resume_rewrites_only_the_missing_shard(tmp_path, capsys):
  videos = tmp_path / "videos"
  for i in range(6):
    write_video(str(videos / f"v{i}.mp4"), 4)
  annotations = write_lines(
    tmp_path / "train.csv", [f"v{i}.mp4,c{i % 2}" for i in range(5)] + ["missing.mp4,c0"]
  )
  items = sources.csv_source(annotations, str(videos)).items
  out = tmp_path / "out"
  shard_tables.write_split(items, str(out), "train", num_shards=3, progress=False)
  shards = dmvr.shard_names(str(out / "train.tfrecord"), 3)
  first = [open(shard, "rb").read() for shard in shards]
  os.utime(shards[0], (1, 1))
  os.utime(shards[2], (1, 1))
  os.remove(shards[1])
  stray = out / ".train.tfrecord-00001-of-00003.tmp-0123456789ab"
  stray.write_bytes(b"half a shard")
  summary = shard_tables.write_split(items, str(out), "train", num_shards=3)
  assert "skipping the 2 of 3 shards that exist" in capsys.readouterr().err
  assert (summary["shards_written"], summary["shards_skipped"]) == (1, 2)
  # The report and the counts still cover the skipped shards (from their stats files).
  assert (summary["examples"], summary["bad"]) == (5, 1)
  assert list(read_report(out, "train")) == ["missing.mp4"]
  assert os.path.getmtime(shards[0]) == os.path.getmtime(shards[2]) == 1
  assert [open(shard, "rb").read() for shard in shards] == first
  assert not stray.exists()
  assert sorted(os.listdir(out)) == sorted(
    [os.path.basename(s) for s in shards]
    + [".vidtx", "labels.txt", "train_report.txt", "train_summary.json", "train_shards"]
  )
  assert len(read_table(out, "train.tfrecord@3")) == 5
  # Other options leave the shards as they are, with a warning.
  shard_tables.write_split(items, str(out), "train", num_shards=3, fps=10)
  assert capsys.readouterr().err.count("delete it to convert it again") == 3
  assert [open(shard, "rb").read() for shard in shards] == first


def test_parallel_workers_write_the_same_shards(tmp_path, capsys):
  videos = tmp_path / "videos"
  for i in range(4):
    write_video(str(videos / f"v{i}.webm" if i % 2 else videos / f"v{i}.mp4"), 6 + i)
  names = [f"v{i}.webm" if i % 2 else f"v{i}.mp4" for i in range(4)]
  annotations = write_lines(
    tmp_path / "train.csv", [f"{n},c{i % 3}" for i, n in enumerate(names)] + ["broken.mp4,c0"]
  )
  items = sources.csv_source(annotations, str(videos)).items
  shards = {}
  for workers in (1, 2):
    out = tmp_path / f"out{workers}"
    summary = shard_tables.write_split(
      items, str(out), "train", num_shards=3, num_workers=workers, fps=15, short_side=16
    )
    assert (summary["examples"], summary["bad"]) == (4, 1)
    assert "train: 5/5 videos" in capsys.readouterr().err
    # Parsed, not bytes: protobuf writes the context map in an order that varies by process.
    shards[workers] = [
      [
        tf.train.SequenceExample.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(shard)
      ]
      for shard in dmvr.shard_names(str(out / "train.tfrecord"), 3)
    ]
  assert [len(examples) for examples in shards[2]] == [2, 1, 1]
  assert shards[1] == shards[2]


# ---------------------------------------------------------------------------------------------
# The command.
# ---------------------------------------------------------------------------------------------


def test_missing_inputs_name_the_flag(tmp_path, capsys):
  common = ["--video_dir", str(tmp_path), "--output_dir", str(tmp_path / "out")]
  with pytest.raises(SystemExit):
    make_shards.main(["--source", "kinetics", "--input", str(tmp_path / "nope.csv"), *common])
  assert f"--input {tmp_path / 'nope.csv'}: no such file" in capsys.readouterr().err
  annotations = write_lines(tmp_path / "a.csv", ["v.mp4,x"])
  with pytest.raises(SystemExit):
    make_shards.main(
      [
        "--source",
        "csv",
        "--input",
        annotations,
        "--video_dir",
        str(tmp_path / "nodir"),
        "--output_dir",
        str(tmp_path / "out"),
      ]
    )
  assert "--video_dir" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    make_shards.main(["--source", "ssv2", "--input", annotations, *common])
  assert "--labels_json is required" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    make_shards.main(["--source", "csv", "--input", annotations, "--num_shards", "0", *common])
  assert "--num_shards=0: expected >= 1" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()  # Nothing was started.


@pytest.mark.slow
def test_command_line(tmp_path):
  videos = tmp_path / "videos"
  write_video(str(videos / "a.mp4"), 9)
  write_video(str(videos / "b.mp4"), 9)
  annotations = write_lines(tmp_path / "diving_train.csv", ["path,label", "a.mp4,0", "b.mp4,1"])
  out = tmp_path / "out"
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "vidtx.data.make_shards",
      "--source=csv",
      f"--input={annotations}",
      f"--video_dir={videos}",
      f"--output_dir={out}",
      "--num_shards=2",
      "--num_workers=1",
      "--fps=10",
      "--short_side=16",
    ],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=REPO,
  )
  assert result.returncode == 0, result.stderr
  assert "train.tfrecord@2: 2 examples of 2 videos, 0 bad" in result.stdout
  assert "config.dataset_configs.tables = {'train': 'train.tfrecord@2'}" in result.stdout
  assert "--config.dataset_configs.num_classes=2" in result.stdout
  assert "train: 2/2 videos" in result.stderr
  examples = read_table(out, "train.tfrecord@2")
  assert [e["frames"].shape for e in examples] == [(3, 16, 24, 3)] * 2
  assert class_labels.read_labels(str(out / "labels.txt")) == ["class_0", "class_1"]


# ---------------------------------------------------------------------------------------------
# Class folders (--source=folders).
# ---------------------------------------------------------------------------------------------


def touch(root, *paths) -> None:
  """Empty files: enough for everything that happens before a video is decoded."""
  for path in paths:
    os.makedirs(os.path.dirname(root / path), exist_ok=True)
    (root / path).write_bytes(b"")


def ids_by_split(dataset: sources.FolderDataset) -> dict[str, list[str]]:
  return {split: [item.video_id for item in items] for split, items in dataset.splits.items()}


def test_folders_round_trip(tmp_path, capsys):
  root = tmp_path / "my videos"
  # Hidden files and folders, non-videos and READMEs are skipped; any case of extension, and
  # videos in subfolders of a class folder, are taken.
  for path in ("cat/c1.mp4", "cat/c2.MP4", "cat/indoor/c3.mp4", "dog/d1.webm", "dog/d2.avi"):
    write_video(str(root / path), 6)
  touch(root, "cat/.hidden.mp4", "cat/.thumbs/c9.mp4", "cat/notes.txt", "README.md")
  touch(root, ".DS_Store", ".cache/x/y.mp4")
  out = tmp_path / "my shards"
  args = [
    "--source=folders",
    f"--input={root}",
    f"--output_dir={out}",
    "--val_fraction=0.5",
    "--num_shards=2",
    "--num_workers=1",
  ]
  summaries = make_shards.main(args)
  printed = capsys.readouterr().out
  # cat: round(1.5) = 2 of 3 drawn for validation; dog: 1 of 2.
  assert {split: s["table"] for split, s in summaries.items()} == {
    "train": "train.tfrecord@2",
    "validation": "validation.tfrecord@2",
  }
  assert {split: (s["examples"], s["bad"]) for split, s in summaries.items()} == {
    "train": (2, 0),
    "validation": (3, 0),
  }
  assert class_labels.read_labels(str(out / "labels.txt")) == ["cat", "dog"]
  examples = {split: read_table(out, s["table"]) for split, s in summaries.items()}
  seen = []
  for table in examples.values():
    for example in table:
      name = example["id"].split("/")[0]
      assert example["labels"] == [["cat", "dog"].index(name)], example["id"]
      assert example["text"] == name and len(example["frames"]) == 6
      seen.append(example["id"])
  assert sorted(seen) == [
    "cat/c1.mp4",
    "cat/c2.MP4",
    "cat/indoor/c3.mp4",
    "dog/d1.webm",
    "dog/d2.avi",
  ]
  assert sorted(os.listdir(out)) == sorted(
    [".vidtx", "labels.txt", folder_split.FOLDERS_SPLIT_FILE, "train.csv", "validation.csv"]
    + [
      f"{split}{suffix}"
      for split in ("train", "validation")
      for suffix in (
        "_report.txt",
        "_summary.json",
        "_shards",
        ".tfrecord-00000-of-00002",
        ".tfrecord-00001-of-00002",
      )
    ]
  )
  assert "train.tfrecord@2: 2 examples of 2 videos, 0 bad" in printed
  assert "validation.tfrecord@2: 3 examples of 3 videos, 0 bad" in printed
  assert (
    "config.dataset_configs.tables = {'train': 'train.tfrecord@2', "
    "'validation': 'validation.tfrecord@2'}"
  ) in printed
  command = (
    "python train.py '--config=configs/finetune.py:model=timesformer,"
    f"data={out},init=CHECKPOINT_DIR' --workdir=runs/mine"
  )
  assert printed.rstrip().splitlines()[-1] == f"  {command}"  # Quoted: the path has a space.

  # A rerun resumes: every shard exists.
  make_shards.main(args)
  err = capsys.readouterr().err
  assert "train: skipping the 2 of 2 shards" in err and "validation: skipping the 2 of 2" in err
  # Another split of the same videos is refused before anything is written.
  before = digests(out)
  with pytest.raises(SystemExit):
    make_shards.main([*args, "--seed=1"])
  err = capsys.readouterr().err
  assert err.startswith(f"vidtx.data.make_shards: error: {out} holds shards of another split")
  assert "--val_fraction=0.5 --seed=0, 2 train / 3 validation videos" in err
  assert err.count("\n") == 1
  assert digests(out) == before


def test_folders_keep_the_users_train_and_val(tmp_path, capsys):
  root = tmp_path / "videos"
  touch(root, "train/run/r1.mp4", "train/run/r2.mp4", "train/walk/w1.mp4", "train/walk/w2.mp4")
  touch(root, "validation/run/r3.mp4")  # No walk/ in validation: fine.
  dataset = sources.folders_source(str(root))
  assert (dataset.layout, dataset.val_fraction, dataset.class_names) == (
    "splits",
    None,
    ["run", "walk"],
  )
  ids = ids_by_split(dataset)
  assert sorted(ids["train"]) == [
    "train/run/r1.mp4",
    "train/run/r2.mp4",
    "train/walk/w1.mp4",
    "train/walk/w2.mp4",
  ]
  assert ids["validation"] == ["validation/run/r3.mp4"]
  # Passing --val_fraction to a tree that has its own split is an error, not silently ignored.
  with pytest.raises(ValueError, match=r"--val_fraction=0.2: .* has its own split"):
    sources.folders_source(str(root), val_fraction=0.2)
  # train/ alone: a split is drawn from it.
  only_train = tmp_path / "only_train"
  touch(only_train, *ids["train"])
  dataset = sources.folders_source(str(only_train), val_fraction=0.5)
  assert (dataset.layout, dataset.val_fraction) == ("splits", 0.5)
  assert len(dataset.splits["validation"]) == 2
  # A class called 'train' beside other classes is a class.
  vehicles = tmp_path / "vehicles"
  touch(vehicles, "bus/b.mp4", "train/t.mp4")
  assert sources.folders_source(str(vehicles)).class_names == ["bus", "train"]

  # Written: the user's split as it is (val/ works as validation/ does).
  root = tmp_path / "small"
  # Other frame counts: equal bytes in two class folders would be one video in two classes.
  for num_frames, path in enumerate(("train/run/a.mp4", "train/walk/b.mp4", "val/walk/c.mp4"), 6):
    write_video(str(root / path), num_frames)
  out = tmp_path / "out"
  summaries = make_shards.main(
    ["--source=folders", f"--input={root}", f"--output_dir={out}", "--num_workers=1"]
  )
  # At most one shard per video: 16 would leave empty shards.
  assert [s["table"] for s in summaries.values()] == ["train.tfrecord@2", "validation.tfrecord@1"]
  assert sorted((e["id"], e["labels"]) for e in read_table(out, "train.tfrecord@2")) == [
    ("train/run/a.mp4", [0]),
    ("train/walk/b.mp4", [1]),
  ]
  assert [(e["id"], e["labels"]) for e in read_table(out, "validation.tfrecord@1")] == [
    ("val/walk/c.mp4", [1])
  ]
  assert class_labels.read_labels(str(out / "labels.txt")) == ["run", "walk"]


@pytest.mark.parametrize(
  "files, extra, message",
  [
    (["a/x.mp4", "empty/notes.txt"], [], "{root}/empty: a class folder without videos"),
    (["a/x.mp4", "stray.mkv"], [], "{root}/stray.mkv: a video directly in --input {root}"),
    (["train/a/x.mp4", "train/y.mp4", "val/a/z.mp4"], [], "{root}/train/y.mp4: a video directly"),
    (
      ["train/a/x.mp4", "val/a/y.mp4", "val/bird/z.mp4"],
      [],
      "{root}/val/bird: class 'bird' has no training folder {root}/train/bird",
    ),
    (["train/a/x.mp4", "val/a/y.mp4", "test/a/z.mp4"], [], "{root}/test: a folder beside train/"),
    (["val/a/y.mp4"], [], "{root}/val: a validation folder without {root}/train"),
    (["train/a/x.mp4", "val/a/y.mp4"], ["--val_fraction=0.1"], "--val_fraction=0.1: {root} has"),
    (["a/x.mp4"], ["--val_fraction=1"], "--val_fraction=1.0: expected 0 <= fraction < 1"),
    (["a/x.mp4"], ["--video_dir=."], "--video_dir is not used by --source=folders"),
    (["a/x.mp4"], ["--split=train"], "--split is not used by --source=folders"),
    (["README.md"], [], "--input {root}: no class folders; expected {root}/<class>/<video>"),
    ([], ["--output_dir={root}/shards"], "--output_dir {root}/shards is inside --input {root}"),
  ],
)
def test_folder_errors_are_one_line_naming_the_path(tmp_path, capsys, files, extra, message):
  root = tmp_path / "videos"
  root.mkdir()
  touch(root, *files)
  out = tmp_path / "out"
  extra = [flag.format(root=root) for flag in extra]
  if not any(flag.startswith("--output_dir") for flag in extra):
    extra.append(f"--output_dir={out}")
  with pytest.raises(SystemExit) as exit_info:
    make_shards.main(["--source=folders", f"--input={root}", *extra])
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert err.startswith("vidtx.data.make_shards: error: ") and err.count("\n") == 1
  assert message.format(root=root) in err
  assert not out.exists() and not (root / "shards").exists()  # Nothing was written.


def test_folder_flags_are_refused_by_other_sources(tmp_path, capsys):
  annotations = write_lines(tmp_path / "a.csv", ["v.mp4,x"])
  common = ["--source=csv", f"--input={annotations}", f"--video_dir={tmp_path}"]
  for flag in ("--val_fraction=0.2", "--seed=3"):
    with pytest.raises(SystemExit):
      make_shards.main([*common, f"--output_dir={tmp_path / 'out'}", flag])
    assert f"{flag.split('=')[0]} is not used by --source=csv" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    make_shards.main(["--source=csv", f"--input={annotations}", f"--output_dir={tmp_path / 'o'}"])
  assert "--video_dir is required" in capsys.readouterr().err


def test_folders_without_a_validation_split_say_why_no_fine_tune_command(tmp_path, capsys):
  root = tmp_path / "videos"
  for num_frames, path in enumerate(("cat/c1.mp4", "dog/d1.mp4"), 4):
    write_video(str(root / path), num_frames)
  args = ["--source=folders", f"--input={root}", f"--output_dir={tmp_path / 'out'}"]
  summaries = make_shards.main([*args, "--val_fraction=0", "--num_workers=1"])
  printed = capsys.readouterr().out
  assert list(summaries) == ["train"]
  assert "No validation split (--val_fraction=0): configs/finetune.py needs one" in printed
  assert "configs/finetune.py:model=" not in printed
