"""vidtx.evaluation: the evaluator's per-class and confusion files (one set per head, none for
multi-label), the aggregations of a video's views, and a training run writing the files with
the task's class names. The files' contents are tested in test_metrics.py."""

import functools
import os
import re

import jax
import numpy as np
import pytest
from ml_collections import config_flags  # noqa: F401  (registers the config file loader)
from shared import png_size, tiny_config
from test_metrics import CONFUSION_CSV, LABELS, NAMES, PER_CLASS_CSV, PREDICTIONS

from vidtx import data as vidtx_data
from vidtx import evaluation, progress, sharding, trainer
from vidtx.data import reader_config, synthetic


def make_evaluator(**dataset_fields) -> evaluation.MultiViewEvaluator:
  """An evaluator whose `_metrics` and writers can run on made-up scores (no model, no data)."""
  geometry = dict(num_frames=1, stride=1, min_resize=1, crop_size=1)
  return evaluation.MultiViewEvaluator(
    None,
    reader_config.DatasetConfig(
      base_dir="", tables={}, num_classes=len(NAMES), **geometry, **dataset_fields
    ),
    "validation",
    batch_size=jax.device_count(),
    mesh=sharding.make_mesh(None),
    class_names=list(NAMES),
  )


# ----------------------------------------------------------------------------- per-class files


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


def test_aggregations_match_their_definitions_over_the_unmasked_views():
  logits = np.random.RandomState(0).randn(3, 4, 5).astype(np.float32)  # (B, V, K)
  mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32)  # (B, V)
  softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  for b, views in enumerate((4, 2, 1)):

    def agg(name):
      return evaluation.aggregate(logits, mask, name)[b]  # noqa: B023 (used at once)

    np.testing.assert_allclose(agg("mean_logits"), logits[b, :views].mean(0), rtol=1e-6)
    np.testing.assert_allclose(agg("sum_logits"), logits[b, :views].sum(0), rtol=1e-6)
    np.testing.assert_allclose(agg("mean_softmax"), softmax[b, :views].mean(0), rtol=1e-5)
  # Class splits take a softmax per split; multi-label models a sigmoid.
  split = evaluation.aggregate(logits, mask, "mean_softmax", class_splits=(3, 2))
  np.testing.assert_allclose(split[:, :3].sum(-1), 1, rtol=1e-6)
  np.testing.assert_allclose(split[:, 3:].sum(-1), 1, rtol=1e-6)
  sigmoid = evaluation.aggregate(logits, mask, "mean_softmax", multi_label=True)
  np.testing.assert_allclose(sigmoid[0], (1 / (1 + np.exp(-logits[0]))).mean(0), rtol=1e-5)


def test_mean_of_softmax_can_disagree_with_mean_of_logits():
  # View 1 is confidently class 0, views 2-3 mildly prefer class 1.
  mask = np.ones((1, 3), np.float32)
  logits = np.array([[[10.0, 0.0], [0.0, 6.0], [0.0, 6.0]]])
  assert np.argmax(evaluation.aggregate(logits, mask, "mean_logits")[0]) == 1
  assert np.argmax(evaluation.aggregate(logits, mask, "mean_softmax")[0]) == 1
  logits = np.array([[[20.0, 0.0], [0.0, 6.0], [0.0, 6.0]]])
  assert np.argmax(evaluation.aggregate(logits, mask, "mean_logits")[0]) == 0
  assert np.argmax(evaluation.aggregate(logits, mask, "mean_softmax")[0]) == 1
