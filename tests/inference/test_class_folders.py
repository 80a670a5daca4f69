"""vidtx.predict on class folders reports accuracy (issue 25): each video's true class is its
folder; top-1 / top-5, the worst classes, the per-class table and the confusion matrix, written
as evaluation writes them (vidtx.metrics) and checked like every output (vidtx.outputs).

The checkpoint's predictions are known: its head has a zero kernel and a bias, so every video
gets the same ranking, b > c > d > e > a > f.
"""

import csv
import os

import numpy as np
import pytest
import reference
from shared import digests
from test_predict import PREPROCESSING, moving_square, write_video

from vidtx import models, outputs, predict, run_files
from vidtx.checkpoints import store

NAMES = ["a", "b", "c", "d", "e", "f"]
BIAS = [1.0, 5.0, 4.0, 3.0, 2.0, 0.0]
# Videos per class folder; b/ also holds a file that does not decode (left out of the counts).
FOLDERS = {"a": 1, "b": 2, "c": 1, "f": 1}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
  model_config = dict(variant="Ti/16", hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64)
  model = models.build("timesformer", model_config, len(NAMES))
  params = reference.random_like(reference.init_shapes(model, (1, 4, 32, 32, 3)), seed=3)
  params["head"] = {
    "kernel": np.zeros(params["head"]["kernel"].shape, np.float32),
    "bias": np.asarray(BIAS, np.float32),
  }
  converted = store.Converted(
    model_name="timesformer",
    model_config=model_config,
    num_classes=len(NAMES),
    params=params,
    preprocessing=dict(PREPROCESSING),
    labels=NAMES,
  )
  return store.save(str(tmp_path_factory.mktemp("ckpt") / "known"), converted)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> str:
  root = tmp_path_factory.mktemp("class_folders")
  for name, count in FOLDERS.items():
    (root / name).mkdir()
    for i in range(count):
      write_video(str(root / name / f"{i}.mp4"), np.roll(moving_square(), i, axis=2), "libx264")
  (root / "b" / "broken.mp4").write_bytes(b"not a video")
  return str(root)


def _rows(path) -> dict[str, dict[str, str]]:
  with open(path, newline="") as f:
    return {row["name"]: row for row in csv.DictReader(f)}


def test_class_folders_report_the_accuracy_they_hold(checkpoint, folders, tmp_path, capsys):
  out = str(tmp_path / "results.jsonl")
  ok, bad = predict.run_many(checkpoint, video=folders, out=out)
  assert (ok, bad) == (5, 1)
  err = capsys.readouterr().err
  assert (
    f"--video {folders}: every subfolder is a class of the checkpoint (4 of 6): each video's "
    "folder is its true class" in err
  )
  # b is right twice; f is the only class outside the top 5.
  assert (
    "accuracy of 5 video(s) in 4 class folder(s): top-1 40.00%, top-5 80.00% (chance top-1 "
    "16.67%); 1 video(s) failed and are not counted" in err
  )
  assert (
    "worst 4 classes (top-1, videos): a 0.0% of 1, c 0.0% of 1, f 0.0% of 1, b 100.0% of 2" in err
  )
  rows = _rows(tmp_path / "results_per_class.csv")
  assert list(rows) == NAMES
  assert [rows[n]["support"] for n in NAMES] == ["1", "2", "1", "0", "0", "1"]
  assert [rows[n]["correct"] for n in NAMES] == ["0", "2", "0", "0", "0", "0"]
  assert [rows[n]["accuracy"] for n in NAMES] == ["0.0000", "1.0000", "0.0000", "", "", "0.0000"]
  assert rows["a"]["confused_1"] == "b (1)" and rows["f"]["confused_1"] == "b (1)"
  png = (tmp_path / "results_confusion.png").read_bytes()
  assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
  assert not [name for name in os.listdir(tmp_path) if "tmp" in name]


def test_flags_choose_the_paths_or_turn_it_off(checkpoint, folders, tmp_path, capsys):
  table = str(tmp_path / "tables" / "per_class.csv")
  predict.run_many(checkpoint, video=folders, labels_from_folders=True, per_class_csv=table)
  err = capsys.readouterr().err
  assert "every subfolder is a class" not in err  # Asked for: not announced.
  assert "top-1 40.00%" in err and f"per-class table in {table}\n" in err
  assert _rows(table)["b"]["accuracy"] == "1.0000"
  assert os.listdir(tmp_path) == ["tables"]  # No --out, no --confusion_png: no picture.

  predict.run_many(
    checkpoint, video=folders, labels_from_folders=False, out=str(tmp_path / "r.csv")
  )
  assert "accuracy" not in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == ["r.csv", "tables"]


def test_impossible_requests_are_refused_before_any_work(
  checkpoint, folders, tmp_path, monkeypatch
):
  monkeypatch.setattr(store, "load", lambda *a, **k: pytest.fail("the work started"))
  monkeypatch.setattr(run_files, "export_run", lambda *a, **k: pytest.fail("the work started"))
  flag = "--labels_from_folders"
  other = tmp_path / "other"
  (other / "zzz").mkdir(parents=True)
  (other / "a").mkdir()
  write_video(str(other / "zzz" / "0.mp4"), moving_square(4), "libx264")
  write_video(str(other / "a" / "0.mp4"), moving_square(4), "libx264")
  with pytest.raises(ValueError, match=rf"{flag}: folder\(s\) \['zzz'\] of .* are not classes of"):
    predict.run_many(checkpoint, video=str(other), labels_from_folders=True)
  with pytest.raises(ValueError, match=r"--per_class_csv needs class folders"):
    predict.run_many(checkpoint, video=str(other), per_class_csv=str(tmp_path / "t.csv"))
  write_video(str(other / "loose.mp4"), moving_square(4), "libx264")
  with pytest.raises(ValueError, match=rf"{flag}: .*loose.mp4 is not inside a class folder"):
    predict.run_many(checkpoint, video=str(other), labels_from_folders=True)
  with pytest.raises(ValueError, match=rf"{flag} reports the accuracy of whole videos; .*--window"):
    predict.run_many(checkpoint, video=folders, labels_from_folders=True, window=1.0)
  listed = tmp_path / "list.txt"
  listed.write_text(os.path.join(folders, "a", "0.mp4") + "\n")
  with pytest.raises(ValueError, match=rf"{flag}: it needs --video FOLDER"):
    predict.run_many(checkpoint, list_file=str(listed), labels_from_folders=True)

  # Outputs: an existing table is kept without --overwrite; a table onto a video is refused.
  out = tmp_path / "results.jsonl"
  (tmp_path / "results_per_class.csv").write_text("the user's table\n")
  before = digests(tmp_path)
  with pytest.raises(FileExistsError, match="--per_class_csv"):
    predict.run_many(checkpoint, video=folders, out=str(out))
  video = os.path.join(folders, "a", "0.mp4")
  with pytest.raises(outputs.OverlapError, match="--confusion_png"):
    predict.run_many(checkpoint, video=folders, confusion_png=video, overwrite=True)
  with pytest.raises(ValueError, match=r"--confusion_png=.*\.jpg: expected a file name ending in"):
    predict.run_many(checkpoint, video=folders, confusion_png=str(tmp_path / "c.jpg"))
  assert digests(tmp_path) == before
