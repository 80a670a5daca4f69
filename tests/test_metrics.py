"""vidtx.metrics against brute-force loops, hand-computed cases and sklearn's documented values."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ml_collections import config_flags  # noqa: F401  (registers the config file loader)
from shared import png_size

from vidtx import metrics

SEEDS = range(5)


def random_case(seed: int, num_videos: int = 40, num_classes: int = 7, *, ties: bool = True):
  """Scores with many ties (few distinct values) and labels that leave some classes absent."""
  rng = np.random.default_rng(seed)
  if ties:
    scores = rng.integers(0, 3, size=(num_videos, num_classes)).astype(np.float32)
  else:
    scores = rng.normal(size=(num_videos, num_classes)).astype(np.float32)
  labels = rng.integers(0, num_classes - 2, size=num_videos)  # the last two classes never occur
  return scores, labels


# ----------------------------------------------------------------------------- brute force


def brute_rank(row, label: int) -> int:
  """Position of `label` in the classes sorted by (score descending, index ascending)."""
  order = sorted(range(len(row)), key=lambda c: (-float(row[c]), c))
  return order.index(label)


def brute_argmax(row) -> int:
  return min(range(len(row)), key=lambda c: (-float(row[c]), c))


def brute_per_class_accuracy(scores, labels, num_classes):
  hits, counts = [0] * num_classes, [0] * num_classes
  for row, label in zip(scores, labels, strict=True):
    counts[label] += 1
    hits[label] += brute_argmax(row) == label
  return [h / c if c else float("nan") for h, c in zip(hits, counts, strict=True)]


def brute_average_precision(column, positives) -> float:
  """Mean over positives of the precision among the videos scoring at least as high."""
  precisions = []
  for i in range(len(column)):
    if positives[i]:
      above = [j for j in range(len(column)) if column[j] >= column[i]]
      precisions.append(sum(positives[j] for j in above) / len(above))
  return sum(precisions) / len(precisions) if precisions else float("nan")


def brute_softmax(row):
  exps = [np.exp(float(x) - max(row)) for x in row]
  return [e / sum(exps) for e in exps]


def brute_action_topk(split_rows, true_tuple, k: int, logits: bool = True) -> bool:
  """Enumerates every (noun, verb, ...) tuple, scores it by the product of probabilities."""
  probs = [brute_softmax(r) if logits else [float(x) for x in r] for r in split_rows]
  tuples = list(itertools.product(*[range(len(p)) for p in probs]))  # lexicographic = row-major
  joint = {t: float(np.prod([probs[s][c] for s, c in enumerate(t)])) for t in tuples}
  ranked = sorted(tuples, key=lambda t: (-joint[t], tuples.index(t)))
  return tuple(true_tuple) in ranked[:k]


# ----------------------------------------------------------------------------- single-label


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 2, 5, 100])
def test_topk_correct_matches_loop(seed, k):
  scores, labels = random_case(seed)
  got = metrics.topk_correct(scores, labels, k)
  expected = [brute_rank(row, label) < k for row, label in zip(scores, labels, strict=True)]
  assert got.dtype == bool and got.shape == labels.shape
  np.testing.assert_array_equal(got, expected)


def test_topk_equal_scores_predict_class_zero():
  scores = np.zeros((4, 5))
  labels = np.array([0, 1, 2, 4])
  np.testing.assert_array_equal(metrics.topk_correct(scores, labels, 1), [1, 0, 0, 0])
  np.testing.assert_array_equal(metrics.topk_correct(scores, labels, 3), [1, 1, 1, 0])
  np.testing.assert_array_equal(metrics.topk_correct(scores, labels, 9), [1, 1, 1, 1])


def test_topk_correct_agrees_with_jax_top_k():
  jax = pytest.importorskip("jax")
  scores, labels = random_case(7, num_videos=60)
  for k in (1, 3, 5):
    _, top = jax.lax.top_k(scores, k)
    expected = np.any(np.asarray(top) == labels[:, None], axis=1)
    np.testing.assert_array_equal(metrics.topk_correct(scores, labels, k), expected)


def test_infinite_scores_are_ranked():
  scores = np.array([[-np.inf, 0.0, np.inf], [-np.inf, -np.inf, -np.inf]])
  np.testing.assert_array_equal(metrics.topk_correct(scores, [2, 0], 1), [True, True])
  np.testing.assert_array_equal(metrics.topk_correct(scores, [0, 1], 2), [False, True])


@pytest.mark.parametrize("seed", SEEDS)
def test_per_class_and_mean_class_accuracy_match_loop(seed):
  scores, labels = random_case(seed)
  expected = brute_per_class_accuracy(scores, labels, scores.shape[1])
  got = metrics.per_class_accuracy(scores, labels)
  np.testing.assert_allclose(got, expected)
  assert np.isnan(got[-2:]).all()  # absent classes
  present = [a for a in expected if not np.isnan(a)]
  assert metrics.mean_class_accuracy(scores, labels) == pytest.approx(np.mean(present))


def test_classification_metrics_hand_computed():
  # Video 0: class 0 right. Video 1: label 2, ranked 2nd. Video 2: label 1, ranked last.
  scores = np.array([[0.9, 0.05, 0.05, 0.0], [0.6, 0.1, 0.3, 0.0], [0.5, 0.1, 0.2, 0.2]])
  labels = np.array([0, 2, 1])
  result = metrics.classification_metrics(scores, labels, topk=(1, 2, 5))
  assert result == pytest.approx(
    {
      "top1": 1 / 3,
      "top2": 2 / 3,
      "top5": 1.0,
      "mean_class_accuracy": (1 + 0 + 0) / 3,
      "num_videos": 3,
    }
  )


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_metrics_match_loop(seed):
  scores, labels = random_case(seed, ties=seed % 2 == 0)
  result = metrics.classification_metrics(scores, labels)
  ranks = [brute_rank(row, label) for row, label in zip(scores, labels, strict=True)]
  assert result["top1"] == pytest.approx(np.mean([r < 1 for r in ranks]))
  assert result["top5"] == pytest.approx(np.mean([r < 5 for r in ranks]))
  assert result["num_videos"] == len(labels)


def test_confusion_matrix_known_example():
  labels = [0, 0, 1, 2, 2, 2]
  predictions = [0, 1, 1, 2, 0, 2]
  expected = [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
  got = metrics.confusion_matrix(predictions, labels, 4)
  assert got.dtype == np.int64
  np.testing.assert_array_equal(got[:3, :3], expected)
  assert got[3].sum() == 0 and got[:, 3].sum() == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matrix_sums(seed):
  scores, labels = random_case(seed)
  num_classes = scores.shape[1]
  predictions = np.argmax(scores, axis=1)
  matrix = metrics.confusion_matrix(predictions, labels, num_classes)
  assert matrix.sum() == len(labels)
  np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(labels, minlength=num_classes))
  np.testing.assert_array_equal(matrix.sum(axis=0), np.bincount(predictions, minlength=num_classes))
  with np.errstate(invalid="ignore"):
    recall = np.diag(matrix) / matrix.sum(axis=1)
  np.testing.assert_allclose(recall, metrics.per_class_accuracy(scores, labels))


# ----------------------------------------------------------------------------- multi-label


def test_average_precision_sklearn_documented_values():
  # sklearn's average_precision_score docstring: y_true [0, 0, 1, 1], scores [.1, .4, .35, .8].
  ap = metrics.average_precision(np.array([[0.1], [0.4], [0.35], [0.8]]), [[0], [0], [1], [1]])
  assert ap[0] == pytest.approx(0.8333333333)
  # A tie between a positive and a negative: one threshold, precision 1/2.
  ap = metrics.average_precision(np.array([[0.5], [0.5]]), [[1], [0]])
  assert ap[0] == pytest.approx(0.5)


@pytest.mark.parametrize("seed", SEEDS)
def test_average_precision_and_map_match_brute_force(seed):
  rng = np.random.default_rng(seed)
  scores = rng.integers(0, 4, size=(30, 6)).astype(np.float64)  # ties everywhere
  scores[:, 0] = rng.normal(size=30)  # and one class without
  targets = rng.random((30, 6)) < 0.3
  targets[:, 4] = False  # a class with no positive
  targets[:, 5] = True  # a class that is all positives: AP 1
  expected = [brute_average_precision(scores[:, c], targets[:, c]) for c in range(6)]
  ap = metrics.average_precision(scores, targets)
  np.testing.assert_allclose(ap, expected)
  assert np.isnan(ap[4]) and ap[5] == pytest.approx(1.0)

  result = metrics.multilabel_metrics(scores, targets.astype(np.float32))
  assert result["mAP"] == pytest.approx(np.nanmean(expected))
  assert result["num_classes_with_positives"] == 5
  hits = [targets[n, brute_argmax(scores[n])] for n in range(30)]
  assert result["top1"] == pytest.approx(np.mean(hits))
  assert result["num_videos"] == 30


def test_multilabel_metrics_hand_computed():
  scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
  targets = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]])
  # Class 0: ranking 0.9(+), 0.3(-), 0.2(+) -> (1 + 2/3) / 2. Class 1: 0.7(-), 0.3(+), 0.1 -> 1/2.
  # Video 2 ties classes 0 and 1 below class 2, so its top-1 (class 2) misses.
  result = metrics.multilabel_metrics(scores, targets)
  assert result["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2) / 2)
  assert result["top1"] == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------- class splits


def split_case(seed: int, class_splits, num_videos: int = 25):
  rng = np.random.default_rng(seed)
  num_classes = sum(class_splits)
  scores = rng.normal(size=(num_videos, num_classes))
  scores[: num_videos // 3] = np.round(scores[: num_videos // 3])  # some ties
  offsets = np.cumsum([0] + list(class_splits))
  local = np.stack([rng.integers(0, size, num_videos) for size in class_splits], axis=1)
  local[local[:, 0] == 1, 0] = 0  # local class 1 of the first split never occurs
  return scores, local, local + offsets[:-1]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("class_splits", [(6, 4), (3, 2, 4)])
def test_split_metrics_match_loop(seed, class_splits):
  scores, local, global_labels = split_case(seed, class_splits)
  names = ["noun", "verb", "extra"][: len(class_splits)]
  offsets = np.cumsum([0] + list(class_splits))
  result = metrics.split_metrics(scores, global_labels, class_splits, names)

  action_right = []
  for n in range(len(scores)):
    rows = [scores[n, offsets[s] : offsets[s + 1]] for s in range(len(class_splits))]
    action_right.append(all(brute_argmax(r) == local[n, s] for s, r in enumerate(rows)))
  assert result["action_top1"] == pytest.approx(np.mean(action_right))
  for s, name in enumerate(names):
    piece = scores[:, offsets[s] : offsets[s + 1]]
    ranks = [brute_rank(row, label) for row, label in zip(piece, local[:, s], strict=True)]
    assert result[f"{name}_top1"] == pytest.approx(np.mean([r < 1 for r in ranks]))
    assert result[f"{name}_top5"] == pytest.approx(np.mean([r < 5 for r in ranks]))
    per_class = brute_per_class_accuracy(piece, local[:, s], class_splits[s])
    assert result[f"{name}_mean_class_accuracy"] == pytest.approx(np.nanmean(per_class))
  assert result["num_videos"] == len(scores)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("class_splits", [(6, 4), (3, 2, 4)])
def test_action_top5_matches_enumeration_of_tuples(seed, class_splits, monkeypatch):
  monkeypatch.setattr(metrics, "_JOINT_CHUNK_ELEMENTS", 50)  # several chunks of videos
  scores, local, global_labels = split_case(seed, class_splits)
  offsets = np.cumsum([0] + list(class_splits))
  names = [f"s{s}" for s in range(len(class_splits))]
  expected = []
  for n in range(len(scores)):
    rows = [scores[n, offsets[s] : offsets[s + 1]] for s in range(len(class_splits))]
    expected.append(brute_action_topk(rows, local[n], 5))
  result = metrics.split_metrics(scores, global_labels, class_splits, names)
  assert result["action_top5"] == pytest.approx(np.mean(expected))


def test_action_top5_of_probabilities_skips_softmax():
  rng = np.random.default_rng(0)
  probs = np.concatenate([rng.dirichlet(np.ones(5), 20), rng.dirichlet(np.ones(3), 20)], axis=1)
  local = np.stack([rng.integers(0, 5, 20), rng.integers(0, 3, 20)], axis=1)
  expected = [
    brute_action_topk([probs[n, :5], probs[n, 5:]], local[n], 5, logits=False) for n in range(20)
  ]
  result = metrics.split_metrics(probs, local + [0, 5], (5, 3), ("noun", "verb"), logits=False)
  assert result["action_top5"] == pytest.approx(np.mean(expected))


def test_split_metrics_hand_computed_epic():
  # 3 nouns then 2 verbs. EPIC global labels [noun, 3 + verb].
  scores = np.array(
    [
      [5.0, 1.0, 0.0, 2.0, 0.0],  # noun 0 right, verb 0 right -> action right
      [0.0, 4.0, 1.0, 0.0, 3.0],  # noun 1 right, verb 0 wrong -> action wrong
      [0.0, 0.0, 0.0, 1.0, 1.0],
    ]
  )  # ties: predicts noun 0, verb 0
  labels = np.array([[0, 3], [1, 3], [0, 4]])
  result = metrics.split_metrics(scores, labels, (3, 2), ("noun", "verb"))
  assert result["noun_top1"] == pytest.approx(1.0)
  assert result["verb_top1"] == pytest.approx(1 / 3)
  assert result["verb_top5"] == pytest.approx(1.0)
  assert result["action_top1"] == pytest.approx(1 / 3)
  # Video 2: all 6 pairs tie; its pair (0, 1) is index 1 of the row-major order -> in the top 5.
  # Video 1: pair (1, 0) has the 2nd best noun and 2nd best verb -> rank 1 (behind (1, 1)).
  assert result["action_top5"] == pytest.approx(1.0)
  assert result["noun_mean_class_accuracy"] == pytest.approx(1.0)  # noun 2 absent: excluded
  assert result["verb_mean_class_accuracy"] == pytest.approx((1 / 2 + 0) / 2)


def test_split_metrics_multi_hot_labels_equal_index_labels():
  class_splits = (6, 4)
  scores, local, global_labels = split_case(3, class_splits)
  multi_hot = np.zeros(scores.shape, dtype=bool)
  for column in global_labels.T:
    multi_hot[np.arange(len(scores)), column] = True
  from_index = metrics.split_metrics(scores, global_labels, class_splits, ("noun", "verb"))
  from_multi_hot = metrics.split_metrics(scores, multi_hot, class_splits, ("noun", "verb"))
  assert from_index == from_multi_hot


def test_split_metrics_equal_logits_predict_first_classes():
  scores = np.zeros((2, 5))
  result = metrics.split_metrics(scores, [[0, 3], [1, 4]], (3, 2), ("noun", "verb"))
  assert result["action_top1"] == pytest.approx(0.5)
  assert result["noun_top1"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
  "call, message",
  [
    (lambda: metrics.topk_correct(np.zeros((3, 4)), [0, 1], 1), r"labels: expected shape \(3,\)"),
    (
      lambda: metrics.topk_correct(np.zeros((3, 4)), [0, 1, 4], 1),
      r"labels: expected class indices in \[0, 4\), got 4",
    ),
    (lambda: metrics.topk_correct(np.zeros((3, 4)), [0, -1, 2], 1), r"labels: .*got -1"),
    (lambda: metrics.topk_correct(np.zeros((3, 4)), [0.0, 1.0, 2.0], 1), "labels: expected int"),
    (lambda: metrics.topk_correct(np.zeros(4), [0], 1), r"scores: expected a \(num_videos"),
    (lambda: metrics.topk_correct(np.zeros((0, 4)), [], 1), "scores: expected .* at least one"),
    (lambda: metrics.topk_correct(np.full((1, 4), np.nan), [0], 1), "scores: expected no NaN"),
    (lambda: metrics.topk_correct(np.zeros((1, 4)), [0], 0), "k: expected k >= 1"),
    (lambda: metrics.mean_class_accuracy(np.zeros((2, 3)), [0, 3]), r"labels: .*\[0, 3\)"),
    (lambda: metrics.confusion_matrix([0, 5], [0, 1], 3), r"predictions: .*\[0, 3\), got 5"),
    (lambda: metrics.confusion_matrix([0, 1], [0, 1, 2], 3), r"predictions: expected shape"),
    (
      lambda: metrics.multilabel_metrics(np.zeros((2, 3)), np.zeros((2, 4))),
      r"targets: expected a multi-hot array of shape \(2, 3\)",
    ),
    (
      lambda: metrics.multilabel_metrics(np.zeros((2, 3)), np.full((2, 3), 0.5)),
      r"targets: expected multi-hot values",
    ),
    (
      lambda: metrics.split_metrics(np.zeros((2, 5)), [[0, 3], [0, 3]], (3, 3), ("n", "v")),
      r"class_splits: expected sizes summing to the 5",
    ),
    (
      lambda: metrics.split_metrics(np.zeros((2, 5)), [[0, 3], [0, 3]], (3, 2), ("n",)),
      "split_names: expected one name per split",
    ),
    (
      lambda: metrics.split_metrics(np.zeros((2, 5)), [[0, 1], [0, 3]], (3, 2), ("n", "v")),
      r"labels: expected column 1 in the global range \[3, 5\)",
    ),
    (
      lambda: metrics.split_metrics(np.zeros((2, 5)), [0, 3], (3, 2), ("n", "v")),
      r"labels: expected int \(2, 2\) global indices or multi-hot \(2, 5\)",
    ),
    (
      lambda: metrics.split_metrics(np.zeros((1, 5)), [[1, 1, 0, 1, 0]], (3, 2), ("n", "v")),
      "labels: expected exactly one 1 per split",
    ),
    (lambda: metrics.confusion_matrix_image(np.zeros((3, 4))), "matrix: expected a square"),
    (
      lambda: metrics.confusion_matrix_image(np.eye(3), ["a", "b"]),
      "class_names: expected 3 names",
    ),
    (lambda: metrics.per_video_rows(["a"], np.zeros((2, 3)), [0, 1]), "video_ids: expected 2"),
    (
      lambda: metrics.per_video_rows(["a", "b"], np.zeros((2, 3)), [0, 3]),
      r"labels_or_targets: expected class indices in \[0, 3\)",
    ),
  ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(call, message):
  with pytest.raises(ValueError, match=message):
    call()


# ----------------------------------------------------------------------------- reporting


def distinct_colours(image: np.ndarray) -> int:
  return len(np.unique(image.reshape(-1, 3), axis=0))


def test_confusion_matrix_image_small_with_class_names():
  matrix = np.array([[5, 1, 0], [0, 3, 3], [0, 0, 0]])  # last row: class with no video
  image = metrics.confusion_matrix_image(matrix, ["walk", "run", "jump"])
  assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
  assert 400 <= image.shape[0] <= 1200 and 400 <= image.shape[1] <= 1200
  assert distinct_colours(image) > 10
  other = metrics.confusion_matrix_image(np.eye(3, dtype=int), ["walk", "run", "jump"])
  assert other.shape == image.shape and not np.array_equal(other, image)
  assert image.flags["C_CONTIGUOUS"]
  index_ticks = metrics.confusion_matrix_image(matrix)  # ticks 0, 1, 2 instead of the names
  assert not np.array_equal(index_ticks, image)


def test_confusion_matrix_image_large_without_labels():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 400, 4000)
  predictions = np.where(rng.random(4000) < 0.7, labels, rng.integers(0, 400, 4000))
  image = metrics.confusion_matrix_image(metrics.confusion_matrix(predictions, labels, 400))
  assert image.dtype == np.uint8 and image.shape[2] == 3
  assert distinct_colours(image) > 10


@pytest.mark.slow
def test_confusion_matrix_image_needs_no_pyplot_or_backend():
  code = (
    "import sys, numpy as np; from vidtx import metrics; "
    "image = metrics.confusion_matrix_image(np.eye(4)); "
    "assert image.shape[2] == 3 and image.dtype == np.uint8; "
    "import io; png = io.BytesIO(); "
    "metrics.confusion_matrix_figure(np.eye(40), [str(i) for i in range(40)])"
    ".canvas.print_png(png); "
    "assert png.getvalue()[:4] == b'\\x89PNG'; "
    "assert 'matplotlib.pyplot' not in sys.modules"
  )
  for backend in ("Agg", None):
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    if backend:
      env["MPLBACKEND"] = backend
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_per_video_rows_single_label_json_ready():
  scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0]], dtype=np.float32)
  rows = metrics.per_video_rows(
    np.array([b"vid_a", b"vid_b"], dtype=object), scores, [1, 1], k=2, class_names=["a", "b", "c"]
  )
  assert rows == [
    {
      "id": "vid_a",
      "label": 1,
      "label_name": "b",
      "predicted": [1, 2],
      "predicted_scores": pytest.approx([0.7, 0.2]),
      "predicted_names": ["b", "c"],
      "top1_correct": True,
    },
    {
      "id": "vid_b",
      "label": 1,
      "label_name": "b",
      "predicted": [0, 1],
      "predicted_scores": pytest.approx([0.5, 0.5]),
      "predicted_names": ["a", "b"],
      "top1_correct": False,
    },  # the tie goes to class 0, as in topk_correct
  ]
  for row in rows:
    json.dumps(row)


def test_per_video_rows_multi_label_and_k_clipped():
  scores = np.array([[0.1, 0.7, 0.2], [0.9, 0.0, 0.3]])
  targets = np.array([[0, 1, 1], [0, 0, 1]])
  rows = metrics.per_video_rows([np.int64(3), np.int64(4)], scores, targets, k=10)
  assert [r["id"] for r in rows] == [3, 4]
  assert [r["labels"] for r in rows] == [[1, 2], [2]]
  assert [r["predicted"] for r in rows] == [[1, 2, 0], [0, 2, 1]]
  assert [r["top1_correct"] for r in rows] == [True, False]
  assert "label_names" not in rows[0]
  json.dumps(rows)


# ----------------------------------------------------------------------------- a made-up set

# walk: 2 right of 8; taken for run 3 times, then jump, 'sit, down' and wave once each (a tie:
# the lower indices win the last two places).
NAMES = ["walk", "run", "jump", "sit, down", "wave"]  # a comma: the CSV must quote it
LABELS = [0] * 8 + [1] * 3 + [2] * 2 + [4]  # no video of class 3 ('sit, down')
PREDICTIONS = [0, 0, 1, 1, 1, 2, 4, 3] + [1, 1, 0] + [4, 4] + [4]


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
