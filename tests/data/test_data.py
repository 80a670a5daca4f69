"""vidtx.data: the tf.data reader (determinism, one-pass evaluation, normalisation, disjoint
shares per process, errors) and the synthetic dataset written once to the cache. DMVR itself,
clip sampling and the synthetic generator are tested beside this file (test_dmvr.py,
test_sampling.py, test_synthetic.py)."""

import dataclasses
import glob
import hashlib
import os

import ml_collections
import numpy as np
import pytest
import shared

from vidtx import data
from vidtx.data import bad_records, dmvr, reader_config, records, synthetic


def reader_configs(base_dir: str, **overrides) -> ml_collections.ConfigDict:
  """shared.reader_configs over 2 training shards and 11 validation videos."""
  tables = {"train": "train.tfrecord@2", "validation": "validation.tfrecord@1"}
  examples = {"train": 12, "validation": 11}
  return shared.reader_configs(
    base_dir, **{"tables": tables, "examples_per_subset": examples, **overrides}
  )


def synthetic_configs(base_dir: str, task: str = "appearance", **overrides):
  configs = reader_configs(
    base_dir,
    task=task,
    video_length=10,
    video_size=20,
    seed=0,
    min_resize=20,
    num_classes=len(synthetic.TASKS[task].class_names),
    examples_per_subset={"train": 12, "validation": 6},
  )
  configs.update(overrides)
  return configs


def smooth_frames(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
  """Smooth pictures (JPEG keeps them within a few levels)."""
  y, x = np.mgrid[:h, :w]
  phase = rng.uniform(0, 2 * np.pi, (t, 1, 1, 3))
  frames = 128 + 90 * np.sin(x[None, :, :, None] / 5 + phase) * np.cos(y[None, :, :, None] / 7)
  return frames.astype(np.uint8)


def coded_video(video: int, length: int, height: int = 16, width: int = 24) -> np.ndarray:
  """Frame t of video i: red 20 t + 10, green 20 i + 10, blue rising left to right."""
  frames = np.zeros((length, height, width, 3), np.uint8)
  frames[..., 0] = (20 * np.arange(length) + 10)[:, None, None]
  frames[..., 1] = 20 * video + 10
  frames[..., 2] = (np.arange(width) * 10)[None, None, :]
  return frames


def write_split(
  base_dir: str, name: str, videos: list[np.ndarray], labels: list[int], num_shards: int
) -> list[str]:
  examples = [dmvr.make_sequence_example(v, label) for v, label in zip(videos, labels, strict=True)]
  return dmvr.write_shards(examples, os.path.join(base_dir, name), num_shards)


# ---------------------------------------------------------------------------------------------
# Reader.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coded_dir(tmp_path_factory):
  """11 validation videos (video i has label i) and 12 training videos with coded pixels."""
  base_dir = str(tmp_path_factory.mktemp("coded"))
  write_split(
    base_dir, "validation.tfrecord", [coded_video(i, 10) for i in range(11)], list(range(11)), 1
  )
  write_split(
    base_dir,
    "train.tfrecord",
    [coded_video(i, 10) for i in range(12)],
    [i % 4 for i in range(12)],
    2,
  )
  return base_dir


def test_eval_returns_every_video_once_with_all_views(coded_dir):
  configs = reader_configs(coded_dir, num_classes=11, num_test_clips=2, do_three_spatial_crops=True)
  batches = list(data.build_eval_dataset(configs, "validation", batch_size=4).as_numpy_iterator())
  assert len(batches) == 3
  for batch in batches:
    assert batch["inputs"].shape == (4, 6, 4, 16, 16, 3)  # (B, V = 2 clips x 3 crops, T, H, W, C)
    assert batch["inputs"].dtype == np.uint8 and batch["label"].dtype == np.int32
  mask = np.concatenate([b["batch_mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  inputs = np.concatenate([shared.model_inputs(b, configs) for b in batches]) * 255
  assert mask.tolist() == [1.0] * 11 + [0.0]
  assert sorted(labels[:11].tolist()) == list(range(11))
  assert (inputs[11] == 0).all() and labels[11] == 0
  # Span 7 of 10 frames: clips at offsets 0 and 3; crops of 16 along the 24 px width at 0, 4, 8.
  expected_red = 20 * np.array([[0, 2, 4, 6], [3, 5, 7, 9]]) + 10
  for i in range(11):
    views = inputs[i].reshape(2, 3, 4, 16, 16, 3)  # (V, ...) -> (clips, crops, T, H, W, C)
    assert np.abs(views[..., 1] - (20 * labels[i] + 10)).max() < 4
    red = views[..., 0].mean(axis=(1, 3, 4))  # (clips, T)
    assert np.abs(red - expected_red).max() < 4
    blue = views[..., 2].mean(axis=(0, 2, 3, 4))  # (crops,)
    np.testing.assert_allclose(blue, [75, 115, 155], atol=4)


def test_eval_single_clip_centre_crop_and_zero_centering(coded_dir):
  configs = reader_configs(
    coded_dir, num_classes=11, zero_centering=True, crop_size=8, min_resize=8
  )
  batch = next(data.build_eval_dataset(configs, "validation", batch_size=11).as_numpy_iterator())
  assert batch["inputs"].shape == (11, 1, 4, 8, 8, 3)
  pixels = (shared.model_inputs(batch, configs) + 1) * 127.5
  # Middle clip (offset 3 // 2 = 1) of the 8 x 12 resized video: the centre 8 x 8 crop.
  np.testing.assert_allclose(
    pixels[..., 0].mean(axis=(0, 1, 3, 4)), 20 * np.array([1, 3, 5, 7]) + 10, atol=4
  )
  np.testing.assert_allclose(pixels[..., 2].mean(), 115, atol=5)


def test_normalisation_presets_and_explicit_mean_std(coded_dir):
  def views(**overrides):
    configs = reader_configs(
      coded_dir, num_classes=11, num_test_clips=2, do_three_spatial_crops=True, **overrides
    )
    ds = data.build_eval_dataset(configs, "validation", batch_size=11)
    return shared.model_inputs(next(ds.as_numpy_iterator()), configs)

  unit = views(zero_centering=False)  # [0, 1]
  # Legacy zero_centering=True is bit-identical to the former pixel / 255 * 2 - 1.
  np.testing.assert_array_equal(views(zero_centering=True), unit * np.float32(2) - np.float32(1))
  np.testing.assert_allclose(views(normalization="timesformer"), (unit - 0.45) / 0.225, atol=1e-5)
  # A preset wins over zero_centering; explicit mean / std win over both.
  np.testing.assert_array_equal(views(zero_centering=True, normalization="none"), unit)
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(
    views(zero_centering=True, normalization="vit", mean=list(mean), std=list(std)),
    (unit - mean) / std,
    atol=1e-5,
  )
  assert (
    reader_config.normalisation(ml_collections.ConfigDict()) == reader_config.NORMALIZATIONS["vit"]
  )
  assert reader_config.normalisation(ml_collections.ConfigDict({"normalization": "imagenet"})) == (
    (0.485, 0.456, 0.406),
    (0.229, 0.224, 0.225),
  )


@pytest.mark.parametrize(
  "overrides, message",
  [
    (
      dict(std=[0.2, 0.0, 0.2], mean=[0.5] * 3),
      r"dataset_configs.std=\[0.2, 0.0, 0.2\]: expected "
      "3 positive numbers",
    ),
    (dict(mean=[0.5, 0.5], std=[0.2] * 3), r"dataset_configs.mean=\[0.5, 0.5\]: expected 3"),
    (dict(mean="0.5", std=[0.2] * 3), "dataset_configs.mean='0.5': expected 3"),
    (dict(mean=[0.5] * 3), "dataset_configs.mean is set but dataset_configs.std is not"),
    (
      dict(normalization="kinetics"),
      "dataset_configs.normalization='kinetics': expected one of "
      r"\['imagenet', 'none', 'timesformer', 'vit'\]",
    ),
  ],
)
def test_bad_normalisation_raises_naming_the_field(coded_dir, overrides, message):
  configs = reader_configs(coded_dir, **overrides)
  with pytest.raises(ValueError, match=message):
    reader_config.normalisation(configs)
  with pytest.raises(ValueError, match=message):
    data.build_eval_dataset(configs, "validation", batch_size=1)


@pytest.mark.parametrize("num_files", [3, 1])
def test_processes_read_disjoint_shares(tmp_path, num_files):
  write_split(
    str(tmp_path),
    "validation.tfrecord",
    [coded_video(i, 4) for i in range(11)],
    list(range(11)),
    num_files,
  )
  configs = reader_configs(
    str(tmp_path), num_classes=11, tables={"validation": f"validation.tfrecord@{num_files}"}
  )
  seen = []
  for process in range(2):
    ds = data.build_eval_dataset(
      configs, "validation", batch_size=4, process_index=process, process_count=2
    )
    for batch in ds.as_numpy_iterator():
      seen += batch["label"][batch["batch_mask"] == 1].tolist()
  assert sorted(seen) == list(range(11))


def test_train_batches_are_deterministic_for_a_seed(tmp_path):
  configs = synthetic_configs(str(tmp_path), random_flip=True, crop_size=16)
  synthetic.ensure_dataset(configs)

  def batches(seed):
    ds = data.build_train_dataset(configs, batch_size=4, seed=seed)
    return [next(it) for it in [ds.as_numpy_iterator()] for _ in range(4)]

  first, again, other = batches(0), batches(0), batches(1)
  assert first[0]["inputs"].shape == (4, 4, 16, 16, 3) and first[0]["label"].dtype == np.int32
  inputs = shared.model_inputs(first[0], configs)  # uint8 clips, flipped on the accelerator
  assert 0 <= inputs.min() and inputs.max() <= 1
  for a, b in zip(first, again, strict=True):
    np.testing.assert_array_equal(shared.model_inputs(a, configs), shared.model_inputs(b, configs))
    np.testing.assert_array_equal(a["label"], b["label"])
  assert any(
    not np.array_equal(shared.model_inputs(a, configs), shared.model_inputs(b, configs))
    for a, b in zip(first, other, strict=True)
  )
  # 16 clips of an infinite stream over 12 videos: the stream repeats the data.
  assert sum(len(b["label"]) for b in first) == 16
  # Skipping batches continues the same stream (a resumed run).
  position = bad_records.next_position(first[1])
  resumed = data.build_train_dataset(configs, batch_size=4, seed=0, start_position=position)
  for a, b in zip(first[2:], resumed.take(2).as_numpy_iterator(), strict=True):
    np.testing.assert_array_equal(shared.model_inputs(a, configs), shared.model_inputs(b, configs))


def test_out_of_range_label_names_split_and_range(coded_dir, tmp_path):
  write_split(str(tmp_path), "validation.tfrecord", [coded_video(0, 4)], [5], 1)
  configs = reader_configs(str(tmp_path))
  batch = next(data.build_eval_dataset(configs, "validation", batch_size=1).as_numpy_iterator())
  with pytest.raises(
    ValueError,
    match=r"(?s)split=validation, file=.*-00000-of-00001, record 0: "
    r"label index out of range: expected values in \[0, 4\).*got \[5\]",
  ):
    bad_records.split_host_fields(batch)
  # label_offset shifts 1-indexed labels into range.
  configs = reader_configs(str(tmp_path), label_offset=2)
  batch = next(data.build_eval_dataset(configs, "validation", batch_size=1).as_numpy_iterator())
  assert batch["label"].tolist() == [3]


# ---------------------------------------------------------------------------------------------
# prepare_dataset.
# ---------------------------------------------------------------------------------------------


def test_prepare_dataset_errors(tmp_path, coded_dir):
  config = ml_collections.ConfigDict(
    dict(dataset_name="kinetics", dataset_configs=reader_configs(coded_dir))
  )
  with pytest.raises(ValueError, match="'synthetic', 'dmvr'"):
    data.prepare_dataset(config)
  config.dataset_name = "dmvr"
  assert data.prepare_dataset(config).base_dir == coded_dir
  write_split(str(tmp_path), "validation.tfrecord", [coded_video(0, 4)] * 4, [0] * 4, 4)
  for shard in (1, 2, 3):
    os.remove(tmp_path / f"validation.tfrecord-0000{shard}-of-00004")
  config.dataset_configs.base_dir = str(tmp_path)
  config.dataset_configs.tables = {"validation": "validation.tfrecord@4"}
  with pytest.raises(ValueError, match=r"validation.tfrecord-00001-of-00004.*@4.*3 of its 4"):
    data.prepare_dataset(config)
  config.dataset_configs.base_dir = str(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="not a directory"):
    data.prepare_dataset(config)

  config = ml_collections.ConfigDict(
    dict(dataset_name="synthetic", dataset_configs=synthetic_configs(str(tmp_path), task="motion"))
  )
  config.dataset_configs.num_classes = 3
  with pytest.raises(ValueError, match="num_classes=3.*4 classes"):
    data.prepare_dataset(config)
  config.dataset_configs.num_classes = 4
  config.dataset_configs.random_flip = True
  with pytest.raises(ValueError, match="random_flip"):
    data.prepare_dataset(config)


# ---------------------------------------------------------------------------------------------
# Synthetic dataset.
# ---------------------------------------------------------------------------------------------


def test_ensure_dataset_writes_once_and_is_deterministic(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("VIDTX_CACHE", str(tmp_path / "cache"))
  config = ml_collections.ConfigDict(
    dict(dataset_name="synthetic", dataset_configs=synthetic_configs("", task="motion"))
  )
  configs = data.prepare_dataset(config)
  directory = configs.base_dir
  assert directory.startswith(str(tmp_path / "cache" / "synthetic" / "motion-"))
  assert "12 train videos" in capsys.readouterr().out
  assert sorted(os.listdir(directory)) == [
    ".vidtx",
    "dataset_info.json",
    "labels.txt",
    "train.tfrecord-00000-of-00002",
    "train.tfrecord-00001-of-00002",
    "train_shards",  # record indexes and frame tables
    "validation.tfrecord-00000-of-00001",
    "validation_shards",
  ]
  assert data.read_label_names(directory) == ["left", "right", "up", "down"]
  # The train reader reads only each clip's frames: every shard has its frame table.
  assert records.frame_tables_missing(configs, "train") is None

  def digests(d):
    return {
      os.path.basename(f): hashlib.sha256(open(f, "rb").read()).hexdigest()
      for f in glob.glob(os.path.join(d, "*.tfrecord-*"))
    }

  before = {f: os.path.getmtime(os.path.join(directory, f)) for f in os.listdir(directory)}
  assert data.prepare_dataset(config).base_dir == directory  # Cached: nothing rewritten.
  assert before == {f: os.path.getmtime(os.path.join(directory, f)) for f in os.listdir(directory)}
  assert capsys.readouterr().out == ""

  # The same parameters elsewhere give the same bytes; another seed gives other videos.
  same = synthetic.ensure_dataset(synthetic_configs(str(tmp_path / "same"), task="motion"))
  assert digests(same) == digests(directory)
  other = synthetic.ensure_dataset(
    synthetic_configs(str(tmp_path / "other"), task="motion", seed=1)
  )
  assert digests(other) != digests(directory)
  # Balanced labels; train and validation are different videos.
  configs = dataclasses.replace(configs, num_test_clips=1)
  labels = []
  for split in ("train", "validation"):
    ds = data.build_eval_dataset(configs, split, batch_size=12)
    labels.append(next(ds.as_numpy_iterator())["label"][: configs.examples_per_subset[split]])
  assert np.bincount(labels[0]).tolist() == [3, 3, 3, 3]
  params = synthetic.dataset_parameters(config.dataset_configs)
  train = [f for f, _ in synthetic.generate_split(params, "train")]
  validation = [f for f, _ in synthetic.generate_split(params, "validation")]
  assert not any(np.array_equal(t, v) for t in train for v in validation)
