"""vidtx.data.sources: the validation count rounded half up within 1 and n - 1, and the
stratified split exact per class and deterministic."""

import collections
import os

from test_make_shards import ids_by_split, touch

from vidtx.data import (
  sources,
)


def test_val_count_rounds_half_up_within_1_and_n_minus_1():
  cases = {
    (1, 0.1): 0,  # A class of one video keeps it for training.
    (2, 0.1): 1,  # At least one...
    (10, 0.1): 1,
    (15, 0.1): 2,  # 1.5 -> 2 (half up, not to even).
    (25, 0.1): 3,  # 2.5 -> 3.
    (5, 0.7): 4,  # 3.5 -> 4, although 0.7 * 5 is 3.4999... in floating point.
    (2, 0.9): 1,  # ...at most n - 1: every class keeps a training video.
    (10, 0.0): 0,
  }
  assert {case: sources.val_count(*case) for case in cases} == cases


def test_stratified_split_is_exact_per_class_and_deterministic(tmp_path, monkeypatch):
  sizes = {"archery": 1, "bowling": 2, "curling": 10, "diving": 15}
  root = tmp_path / "videos"
  touch(root, *[f"{name}/v{i:02d}.mp4" for name, n in sizes.items() for i in range(n)])
  dataset = sources.folders_source(str(root), seed=0)
  assert (dataset.layout, dataset.val_fraction) == ("classes", 0.1)
  assert dataset.class_names == sorted(sizes)
  ids = ids_by_split(dataset)
  val_counts = collections.Counter(video_id.split("/")[0] for video_id in ids["validation"])
  assert dict(val_counts) == {"bowling": 1, "curling": 1, "diving": 2}
  assert sorted(ids["train"] + ids["validation"]) == sorted(
    f"{name}/v{i:02d}.mp4" for name, n in sizes.items() for i in range(n)
  )
  for split, items in dataset.splits.items():
    assert all(item.labels == (item.video_id.split("/")[0],) for item in items), split
    assert all(item.path == str(root / item.video_id) for item in items), split

  # The same seed: the same split and order, also from another root and whatever order the
  # file system lists the entries in.
  assert ids_by_split(sources.folders_source(str(root), seed=0)) == ids
  copy = tmp_path / "copy"
  touch(copy, *ids["train"], *ids["validation"])
  real_scandir = os.scandir

  class ReversedScandir:
    """os.scandir listing its entries in reverse (os.walk lists through it too)."""

    def __init__(self, path):
      with real_scandir(path) as found:
        self.entries = iter(list(found)[::-1])

    def __enter__(self):
      return self

    def __exit__(self, *exc_info):
      return False

    def __iter__(self):
      return self

    def __next__(self):
      return next(self.entries)

    def close(self):
      pass

  def scandir_listings():
    with os.scandir(copy) as found:
      return [[entry.name for entry in found]] + [files for _, _, files in os.walk(copy / "diving")]

  before = scandir_listings()
  monkeypatch.setattr(os, "scandir", ReversedScandir)
  assert scandir_listings() == [names[::-1] for names in before]
  assert ids_by_split(sources.folders_source(str(copy), seed=0)) == ids
  monkeypatch.undo()
  # Another seed draws another split (with the same counts).
  other = ids_by_split(sources.folders_source(str(root), seed=1))
  assert other["validation"] != ids["validation"]
  assert len(other["validation"]) == len(ids["validation"])
  # --val_fraction=0: train only.
  assert list(sources.folders_source(str(root), val_fraction=0.0).splits) == ["train"]
