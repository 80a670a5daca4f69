"""vidtx.tools.plot: each run drawn in each panel, a new PNG that never overwrites by surprise."""

import json
import os

import pytest
from ml_collections import config_flags  # noqa: F401  (registers the config file loader)
from shared import png_size

from vidtx.tools import plot


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
