"""What a person reads of a run: the progress lines, the per-class and confusion files of an
evaluation, and the training curves of vidtx.tools.plot."""

import functools
import io
import json
import os
import re
import struct

import jax
import ml_collections
import numpy as np
import pytest
from shared import tiny_config

from vidtx import data as vidtx_data
from vidtx import evaluation, metrics, progress, sharding, trainer
from vidtx.data import shard_tables, sources, synthetic
from vidtx.tools import plot

# ----------------------------------------------------------------------------- a made-up set

NAMES = ["walk", "run", "jump", "sit, down", "wave"]  # a comma: the CSV must quote it
LABELS = [0] * 8 + [1] * 3 + [2] * 2 + [4]  # no video of class 3 ('sit, down')
PREDICTIONS = [0, 0, 1, 1, 1, 2, 4, 3] + [1, 1, 0] + [4, 4] + [4]
# walk: 2 right of 8; taken for run 3 times, then jump, 'sit, down' and wave once each (a tie:
# the lower indices win the last two places).

PER_CLASS_CSV = """\
index,name,support,correct,accuracy,confused_1,confused_2,confused_3
0,walk,8,2,0.2500,run (3),jump (1),"sit, down (1)"
1,run,3,2,0.6667,walk (1),,
2,jump,2,0,0.0000,wave (2),,
3,"sit, down",0,0,,,,
4,wave,1,1,1.0000,,,
"""

CONFUSION_CSV = """\
true \\ predicted,walk,run,jump,"sit, down",wave
walk,2,3,1,1,1
run,1,2,0,0,0
jump,0,0,0,0,2
"sit, down",0,0,0,0,0
wave,0,0,0,0,1
"""


def made_up_matrix() -> np.ndarray:
  return metrics.confusion_matrix(PREDICTIONS, LABELS, len(NAMES))


def png_size(path: str) -> tuple[int, int]:
  """(width, height) from a PNG's header, after checking its signature."""
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", head
  return struct.unpack(">II", head[16:24])


def make_evaluator(**dataset_fields) -> evaluation.MultiViewEvaluator:
  """An evaluator whose `_metrics` and writers can run on made-up scores (no model, no data)."""
  return evaluation.MultiViewEvaluator(
    None,
    ml_collections.ConfigDict(dataset_fields),
    "validation",
    batch_size=jax.device_count(),
    mesh=sharding.make_mesh(None),
    class_names=list(NAMES),
  )


# ----------------------------------------------------------------------------- per-class files


def test_per_class_and_confusion_csv_hand_computed():
  matrix = made_up_matrix()
  assert metrics.per_class_csv(matrix, NAMES) == PER_CLASS_CSV
  assert metrics.confusion_csv(matrix, NAMES) == CONFUSION_CSV
  # Without names the indices stand in.
  assert metrics.per_class_csv(matrix).splitlines()[1] == "0,0,8,2,0.2500,1 (3),2 (1),3 (1)"


def test_worst_classes_order_and_ties():
  rows = metrics.worst_classes(made_up_matrix(), NAMES, n=5)
  # Classes without a video are left out; only 4 classes have videos.
  assert [(r["name"], r["accuracy"], r["support"]) for r in rows] == [
    ("jump", 0.0, 2),
    ("walk", 0.25, 8),
    ("run", pytest.approx(2 / 3), 3),
    ("wave", 1.0, 1),
  ]
  # Equal accuracy: more videos first, then the lower index.
  tied = np.array([[0, 1, 0], [3, 0, 0], [0, 3, 0]])
  assert [r["index"] for r in metrics.worst_classes(tied, n=2)] == [1, 2]


def test_evaluator_writes_the_three_files_atomically(tmp_path, capsys):
  evaluator = make_evaluator()
  scores = np.eye(len(NAMES))[PREDICTIONS]  # (N, K) one-hot: the predictions above
  results = evaluator._metrics(scores, np.array(LABELS))
  assert results["top1"] == pytest.approx(5 / 14)
  paths = evaluator.write_class_reports(str(tmp_path))
  stem = str(tmp_path / "eval_validation")
  assert paths == [f"{stem}_per_class.csv", f"{stem}_confusion.csv", f"{stem}_confusion.png"]
  with open(paths[0], encoding="utf-8") as f:
    assert f.read() == PER_CLASS_CSV
  with open(paths[1], encoding="utf-8") as f:
    assert f.read() == CONFUSION_CSV
  assert png_size(paths[2]) == (1000, 900)
  assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths)  # no .tmp
  assert evaluator.worst_classes_summary(2) == (
    "Worst 2 classes of validation (top-1, videos): jump 0.0% of 2, walk 25.0% of 8"
  )


def test_class_splits_get_one_set_of_files_per_head(tmp_path):
  evaluator = make_evaluator(class_splits=(3, 2), split_names=("noun", "verb"))
  # Nouns walk/run/jump, verbs 'sit, down'/wave; labels [noun, 3 + verb].
  labels = np.array([[0, 3], [0, 4], [1, 4], [2, 3]])
  scores = np.array(
    [
      [5, 1, 0, 0, 1],  # noun walk (right), verb wave (wrong)
      [1, 5, 0, 0, 1],  # noun run (wrong), verb wave (right)
      [0, 5, 1, 1, 0],  # noun run (right), verb 'sit, down' (wrong)
      [0, 5, 1, 2, 0],  # noun run (wrong), verb 'sit, down' (right)
    ],
    dtype=float,
  )
  evaluator._metrics(scores, labels)
  paths = evaluator.write_class_reports(str(tmp_path))
  assert [os.path.basename(p) for p in paths] == [
    f"eval_validation_{head}_{kind}"
    for head in ("noun", "verb")
    for kind in ("per_class.csv", "confusion.csv", "confusion.png")
  ]
  with open(paths[0], encoding="utf-8") as f:
    assert f.read().splitlines()[1:] == [
      "0,walk,2,1,0.5000,run (1),,",
      "1,run,1,1,1.0000,,,",
      "2,jump,1,0,0.0000,run (1),,",
    ]
  with open(paths[4], encoding="utf-8") as f:
    assert f.read() == 'true \\ predicted,"sit, down",wave\n"sit, down",1,1\nwave,1,1\n'
  assert evaluator.worst_classes_summary(1).splitlines() == [
    "Worst 1 classes (noun) of validation (top-1, videos): jump 0.0% of 1",
    # Equal accuracy and support: the lower index.
    "Worst 1 classes (verb) of validation (top-1, videos): sit, down 50.0% of 2",
  ]


def test_multi_label_skips_the_files_with_one_note(tmp_path, capsys):
  evaluator = make_evaluator(multi_label=True)
  targets = np.array([[1, 1, 0, 0, 0], [0, 0, 1, 0, 1]])
  evaluator._metrics(np.random.default_rng(0).random((2, 5)), targets)
  assert evaluator.write_class_reports(str(tmp_path)) == []
  assert evaluator.write_class_reports(str(tmp_path)) == []
  out = capsys.readouterr().out
  assert out.count("Note: no per-class or confusion files for multi-label") == 1
  assert os.listdir(tmp_path) == [] and evaluator.worst_classes_summary() == ""


# ----------------------------------------------------------------------------- confusion picture


def test_confusion_figure_small_is_labelled_with_counts():
  figure = metrics.confusion_matrix_figure(made_up_matrix(), NAMES)
  axes = figure.axes[0]
  assert [t.get_text() for t in axes.get_xticklabels()] == NAMES
  assert [t.get_text() for t in axes.get_yticklabels()] == NAMES
  assert sorted(t.get_text() for t in axes.texts) == sorted(
    str(c) for c in made_up_matrix().ravel() if c
  )
  assert "5 classes" in axes.get_title()


def test_confusion_figure_above_30_classes_shows_the_most_confused(tmp_path):
  num_classes = 40
  names = [f"class {i}" for i in range(num_classes)]
  matrix = np.diag(np.full(num_classes, 10))
  # A ring of confusions among classes 10..38 (29 classes, 2 errors each) and a heavy one.
  ring = list(range(10, 39))
  for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
    matrix[a, b] += 1
  matrix[20, 21] += 7
  # The 30th place goes to the lowest index of the classes without an error.
  expected = [0] + ring
  np.testing.assert_array_equal(metrics.most_confused_classes(matrix, 30), expected)
  figure = metrics.confusion_matrix_figure(matrix, names)
  axes = figure.axes[0]
  assert [t.get_text() for t in axes.get_xticklabels()] == [names[c] for c in expected]
  assert [t.get_text() for t in axes.get_yticklabels()] == [names[c] for c in expected]
  assert "30 most-confused of 40 classes" in axes.get_title()
  # Rows keep the fraction of all of the class's videos: class 20 sent 8 of 18 to class 21.
  image = axes.images[0].get_array()
  row, column = expected.index(20), expected.index(21)
  assert image[row, column] == pytest.approx(8 / 18)
  path = tmp_path / "confusion.png"
  with open(path, "wb") as f:
    figure.canvas.print_png(f)
  assert png_size(str(path)) == (1000, 900)


# ----------------------------------------------------------------------------- progress lines


class FakeClock:
  def __init__(self) -> None:
    self.now = 0.0

  def __call__(self) -> float:
    return self.now


def test_reporter_log_file_writes_a_whole_line_every_interval():
  clock, stream = FakeClock(), io.StringIO()
  reporter = progress.Reporter(
    10,
    prefix="train: ",
    unit=" videos",
    counters={"bad": 0},
    rates=(("videos/s", 1.0, 1),),
    every_s=10,
    tty=False,
    stream=stream,
    clock=clock,
  )
  for i in range(1, 6):
    clock.now = 2.5 * i
    reporter.advance(bad=int(i == 3))
  clock.now = 20.0
  reporter.finish(10, bad=2)
  assert stream.getvalue() == (
    "train: 4/10 videos | 1 bad | 0.4 videos/s | ETA 0m15s\n"
    "train: 10/10 videos | 2 bad | 0.5 videos/s | ETA 0m00s\n"
  )


def test_reporter_terminal_redraws_in_place():
  clock, stream = FakeClock(), io.StringIO()
  reporter = progress.Reporter(
    20,
    prefix="validation: ",
    unit=" videos",
    rates=(("views/s", 1.0, 1),),
    tty=True,
    stream=stream,
    final_line=False,
    clock=clock,
  )
  clock.now = 0.1
  reporter.update(1, work=6)  # too soon after the start
  clock.now = 1.0
  reporter.update(10, work=1000)
  clock.now = 2.0
  reporter.update(20, work=1010)
  reporter.finish()
  first = "validation: 10/20 videos | 1000.0 views/s | ETA 0m01s"
  last = "validation: 20/20 videos | 505.0 views/s | ETA 0m00s"
  # The shorter line blanks out the end of the longer one; the last line ends the redraws.
  assert stream.getvalue() == f"\r{first}\r{last} \r{last}\n"


def test_reporter_quiet_cases():
  clock, stream = FakeClock(), io.StringIO()
  # final_line=False and nothing due: a short piece of work adds no line.
  short = progress.Reporter(5, tty=False, stream=stream, final_line=False, clock=clock)
  short.advance()
  short.finish(5)
  # Disabled (processes other than 0): nothing written, rates still measured.
  off = progress.Reporter(None, unit=" videos", every_s=0, stream=stream, enabled=False)
  off.advance(3)
  off.finish()
  assert stream.getvalue() == ""
  assert off.line().startswith("3 videos | ") and "ETA" not in off.line()  # total unknown
  # No progress yet: the ETA is unknown.
  assert progress.Reporter(5, unit=" videos", clock=clock).line() == (
    "0/5 videos | 0.0 videos/s | ETA ?"
  )


def test_training_line_keeps_its_format():
  clock, stream = FakeClock(), io.StringIO()
  line = progress.Progress(4, 0, 8, stream=stream, clock=clock)
  step_metrics = {"loss": 1.23456, "accuracy": 0.5, "learning_rate": 0.001}
  clock.now = 2.0
  assert line.update(2, step_metrics) == {"steps_per_sec": 1.0, "clips_per_sec": 8.0}
  clock.now = 3.0
  rates = line.update(4, step_metrics)  # since the previous line: 2 steps in 1 s
  assert rates == {"steps_per_sec": 2.0, "clips_per_sec": 16.0}
  assert stream.getvalue().splitlines() == [
    "step 2/4 | loss 1.2346 | acc 0.500 | lr 0.001 | 1.00 steps/s | 8.0 clips/s | ETA 0m02s",
    "step 4/4 | loss 1.2346 | acc 0.500 | lr 0.001 | 2.00 steps/s | 16.0 clips/s | ETA 0m00s",
  ]


def test_make_shards_reports_through_the_reporter(tmp_path, capsys):
  items = [sources.Item(path="", labels=("walk",), video_id=v) for v in ("a", "b", "c")]
  summary = shard_tables.write_split(items, str(tmp_path / "out"), "train", num_shards=1)
  assert summary["bad"] == 3
  last = capsys.readouterr().err.splitlines()[-1].split("\r")[-1]
  assert last.startswith("train: 3/3 videos | 3 bad | ") and last.endswith(" | ETA 0m00s")


# ----------------------------------------------------------------------------- plot tool


def write_jsonl(path, records, torn: str = "") -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
    f.write(torn)


@pytest.fixture
def two_runs(tmp_path):
  a, b = str(tmp_path / "runs" / "a"), str(tmp_path / "other" / "b")
  write_jsonl(
    os.path.join(a, "metrics.jsonl"),
    [
      {"step": 1, "loss": 2.0, "accuracy": 0.1, "learning_rate": 0.01, "steps_per_sec": 3.0},
      {"step": 2, "loss": 1.5, "accuracy": 0.3, "learning_rate": 0.02, "steps_per_sec": 3.0},
      {"step": 2, "val_top1": 0.4, "val_top5": 0.9, "val_num_videos": 10},
    ],
    torn='{"step": 3, "lo',  # killed mid-write
  )
  write_jsonl(
    os.path.join(b, "metrics.jsonl"),
    [
      {"step": 1, "loss": 3.0, "accuracy": 0.0, "learning_rate": 0.01},
      {"step": 3, "loss": 2.5, "accuracy": 0.2, "learning_rate": 0.005},
    ],
  )
  return a, b


def test_plot_figure_draws_each_run_in_each_panel(two_runs):
  a, b = two_runs
  names = plot.run_names([a, b])
  assert names == ["a", "b"]
  figure = plot.figure(
    {
      name: plot.read_series(os.path.join(run, "metrics.jsonl"))
      for name, run in zip(names, (a, b), strict=True)
    }
  )
  loss, accuracy, lr, top1 = figure.axes[:4]
  assert [ax.get_title() for ax in figure.axes[:4]] == [
    "loss",
    "training accuracy",
    "learning rate",
    "eval top-1",
  ]
  assert [list(line.get_ydata()) for line in loss.lines] == [[2.0, 1.5], [3.0, 2.5]]
  assert [list(line.get_xdata()) for line in loss.lines] == [[1, 2], [1, 3]]
  assert [list(line.get_ydata()) for line in accuracy.lines] == [[0.1, 0.3], [0.0, 0.2]]
  assert [list(line.get_ydata()) for line in lr.lines] == [[0.01, 0.02], [0.01, 0.005]]
  assert [list(line.get_ydata()) for line in top1.lines] == [[0.4]]  # b never evaluated
  assert [line.get_label() for line in loss.lines] == ["a", "b"]
  assert [t.get_text() for t in figure.legends[0].get_texts()] == ["a", "b"]


def test_plot_writes_a_new_png_and_never_overwrites_by_surprise(two_runs, tmp_path, capsys):
  a, b = two_runs
  out = str(tmp_path / "curves.png")
  assert plot.main([a, b, f"--out={out}"]) == 0
  assert png_size(out) == (1200, 800)
  # An existing file is kept unless --overwrite.
  with open(out, "wb") as f:
    f.write(b"the user's file")
  assert plot.main([a, f"--out={out}"]) == 2
  assert "exists; pass --overwrite" in capsys.readouterr().err
  with open(out, "rb") as f:
    assert f.read() == b"the user's file"
  assert plot.main([a, f"--out={out}", "--overwrite"]) == 0
  assert png_size(out) == (1200, 800)
  # A run without metrics.jsonl is named.
  missing = str(tmp_path / "not_a_run")
  assert plot.main([a, missing, f"--out={tmp_path / 'new.png'}"]) == 2
  assert f"Run {missing}: no metrics.jsonl" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "new.png")
  assert plot.main([a, f"--out={tmp_path / 'curves.jpg'}"]) == 2
  # Same folder names: the paths tell the runs apart.
  assert plot.run_names(["x/run", "y/run/", "z"]) == ["x/run", "y/run/", "z"]


# ----------------------------------------------------------------------------- end to end


def test_training_run_writes_the_files_with_the_task_class_names(tmp_path, capsys, monkeypatch):
  # A progress line at every evaluation batch (a real run waits 10 s between lines in a log).
  monkeypatch.setattr(
    evaluation, "Reporter", functools.partial(progress.Reporter, every_s=0, tty=False)
  )
  config = tiny_config(str(tmp_path / "data"), steps=2)
  workdir = str(tmp_path / "run")
  results = trainer.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert "step 2/2" in out and "ETA" in out
  assert "validation: 4/10 videos | " in out and "views/s | ETA" in out
  assert "validation: 10/10 videos | " in out
  assert re.search(r"Worst \d classes of validation \(top-1, videos\): ", out)

  names = list(synthetic.get_task(config.dataset_configs.get("task", "motion")).class_names)
  assert vidtx_data.class_names(vidtx_data.prepare_dataset(config)) == names
  stem = os.path.join(workdir, "eval_validation")
  with open(f"{stem}_per_class.csv", encoding="utf-8") as f:
    rows = [line.split(",") for line in f.read().splitlines()[1:]]
  assert [row[1] for row in rows] == names
  assert sum(int(row[2]) for row in rows) == results["num_videos"] == 10
  assert sum(int(row[3]) for row in rows) == round(results["top1"] * 10)
  with open(f"{stem}_confusion.csv", encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert lines[0].split(",")[1:] == names and [line.split(",")[0] for line in lines[1:]] == names
  assert png_size(f"{stem}_confusion.png") == (1000, 900)
  assert not [name for name in os.listdir(workdir) if name.endswith(".tmp")]
