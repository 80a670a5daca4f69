"""vidtx.inference.classifier: the views' aggregations against their definitions, and the class
names a checkpoint gives."""

import dataclasses

import numpy as np
import pytest
from test_predict import checkpoint_dir, converted  # noqa: F401

from vidtx.inference import classifier


def test_aggregations_match_their_definitions():
  logits = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
  softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)

  def normalised(x):
    return np.exp(x) / np.exp(x).sum()

  np.testing.assert_allclose(
    classifier.aggregate(logits, "mean_logits"), normalised(logits.mean(0)), rtol=1e-5
  )
  np.testing.assert_allclose(
    classifier.aggregate(logits, "sum_logits"), normalised(logits.sum(0)), rtol=1e-5
  )
  np.testing.assert_allclose(
    classifier.aggregate(logits, "mean_softmax"), softmax.mean(0), rtol=1e-5
  )
  with pytest.raises(ValueError, match="aggregation='max'.*mean_softmax"):
    classifier.aggregate(logits, "max")


def test_class_names(converted, tmp_path):  # noqa: F811
  assert classifier.class_names(converted) == ["a", "b", "c", "d"]
  labels = tmp_path / "labels.txt"
  labels.write_text("w\nx\ny\nz\n")
  assert classifier.class_names(converted, str(labels)) == ["w", "x", "y", "z"]
  labels.write_text("w\nx\n")
  with pytest.raises(ValueError, match="labels.txt: 2 names, but the checkpoint has 4 classes"):
    classifier.class_names(converted, str(labels))
  labels.write_bytes(b"\x93\xff\n")
  with pytest.raises(ValueError, match="labels.txt: cannot read it as text"):
    classifier.class_names(converted, str(labels))
  unlabelled = dataclasses.replace(converted, labels=None)
  assert classifier.class_names(unlabelled) == ["class 0", "class 1", "class 2", "class 3"]
  text = classifier.format_top_k(np.array([0.1, 0.6, 0.05, 0.25]), ["a", "b", "c", "d"], 2)
  assert text.splitlines() == ["  1. b  0.6000", "  2. d  0.2500"]
