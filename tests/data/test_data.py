"""vidtx.data: DMVR round trips, the tf.data reader (sampling, determinism, one-pass evaluation,
errors) and the synthetic generator (determinism, caching, the motion tasks' invariances)."""

import glob
import hashlib
import os

import ml_collections
import numpy as np
import pytest
import shared
import tensorflow as tf

from vidtx import data
from vidtx.data import bad_records, dmvr, reader_config, sampling, synthetic


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
# DMVR format.
# ---------------------------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  videos = [smooth_frames(rng, 3 + i, 12, 20) for i in range(7)]
  labels = [i % 4 for i in range(7)]
  examples = [
    dmvr.make_sequence_example(
      v,
      [label, 9],
      label_text=f"class{label}",
      video_id=f"vid{i}",
      start_us=1_000_000 * i,
      end_us=1_000_000 * i + 500_000,
      frame_rate=12.5,
    )
    for i, (v, label) in enumerate(zip(videos, labels, strict=True))
  ]
  files = dmvr.write_shards(examples, str(tmp_path / "train.tfrecord"), 3)

  assert [os.path.basename(f) for f in files] == [
    "train.tfrecord-00000-of-00003",
    "train.tfrecord-00001-of-00003",
    "train.tfrecord-00002-of-00003",
  ]
  assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(f) for f in files)  # No temps.
  assert dmvr.expand_table(str(tmp_path), "train.tfrecord@3") == files
  assert dmvr.expand_table(str(tmp_path), "train.tfrecord-*") == files

  for shard, file in enumerate(files):
    records = list(tf.data.TFRecordDataset(file).as_numpy_iterator())
    expected = list(range(shard, 7, 3))  # Round-robin.
    assert len(records) == len(expected)
    for i, record in zip(expected, records, strict=True):
      parsed = dmvr.parse_sequence_example(tf.constant(record))
      assert parsed["labels"].numpy().tolist() == [labels[i], 9]
      assert parsed["video_id"].numpy() == f"vid{i}".encode()
      assert parsed["frame_rate"].numpy() == 12.5
      decoded = np.stack([tf.io.decode_jpeg(j).numpy() for j in parsed["jpegs"].numpy()])
      assert decoded.shape == videos[i].shape
      error = np.abs(decoded.astype(float) - videos[i])
      assert error.mean() < 3 and error.max() < 40
      context, _ = tf.io.parse_single_sequence_example(
        record,
        context_features={
          dmvr.LABEL_TEXT_KEY: tf.io.FixedLenFeature([], tf.string),
          dmvr.START_KEY: tf.io.FixedLenFeature([], tf.int64),
          dmvr.END_KEY: tf.io.FixedLenFeature([], tf.int64),
        },
      )
      assert context[dmvr.LABEL_TEXT_KEY].numpy() == f"class{labels[i]}".encode()
      assert (context[dmvr.START_KEY].numpy(), context[dmvr.END_KEY].numpy()) == (
        1_000_000 * i,
        1_000_000 * i + 500_000,
      )


def test_interrupted_write_leaves_no_files(tmp_path):
  def examples():
    yield dmvr.make_sequence_example(np.zeros((2, 8, 8, 3), np.uint8), 0)
    raise RuntimeError("interrupted")

  with pytest.raises(RuntimeError, match="interrupted"):
    dmvr.write_shards(examples(), str(tmp_path / "train.tfrecord"), 2)
  assert os.listdir(tmp_path) == []


def test_missing_table_files_raise(tmp_path):
  write_split(str(tmp_path), "train.tfrecord", [coded_video(0, 2)], [0], 2)
  os.remove(tmp_path / "train.tfrecord-00001-of-00002")
  with pytest.raises(ValueError, match=r"train.tfrecord-00001-of-00002.*'train.tfrecord@2'"):
    dmvr.expand_table(str(tmp_path), "train.tfrecord@2")
  with pytest.raises(ValueError, match=r"'val\*'.*matches no file"):
    dmvr.expand_table(str(tmp_path), "val*")


def test_parse_leaves_empty_videos_to_the_reader():
  example = tf.train.SequenceExample()
  parsed = dmvr.parse_sequence_example(tf.constant(example.SerializeToString()))
  assert parsed["jpegs"].shape == (0,) and parsed["labels"].shape == (0,)
  assert parsed["video_id"].numpy() == b"" and parsed["frame_rate"].numpy() == 0
  with pytest.raises(tf.errors.InvalidArgumentError):
    dmvr.parse_sequence_example(tf.constant(b"not a proto"))


# ---------------------------------------------------------------------------------------------
# Clip sampling.
# ---------------------------------------------------------------------------------------------


def test_eval_clip_indices_are_evenly_spaced():
  def indices(length, frames, stride, clips):
    return sampling.eval_clip_indices(tf.constant(length), frames, stride, clips).numpy().tolist()

  # Span (4 - 1) * 2 + 1 = 7 frames of 20: offsets in [0, 13].
  assert indices(20, 4, 2, 1) == [[6, 8, 10, 12]]  # Middle: 13 // 2.
  assert indices(20, 4, 2, 3) == [[0, 2, 4, 6], [6, 8, 10, 12], [13, 15, 17, 19]]
  for length, frames, stride, clips in [(50, 8, 2, 4), (300, 32, 2, 7), (17, 3, 5, 2)]:
    offsets = np.floor(np.linspace(0, length - (frames - 1) * stride - 1, clips)).astype(int)
    expected = offsets[:, None] + np.arange(frames) * stride
    assert indices(length, frames, stride, clips) == expected.tolist()
  # A video shorter than the span loops.
  assert indices(5, 4, 2, 2) == [[0, 2, 4, 1], [0, 2, 4, 1]]


def test_random_clip_indices_cover_every_offset():
  offsets = set()
  for i in range(200):
    idx = sampling.random_clip_indices(tf.constant(12), 3, 2, tf.constant([7, i])).numpy()
    assert (np.diff(idx) == 2).all()
    offsets.add(int(idx[0]))
  assert offsets == set(range(12 - 5 + 1))
  short = sampling.random_clip_indices(tf.constant(3), 4, 1, tf.constant([0, 0])).numpy()
  assert short.tolist() == [0, 1, 2, 0]


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
    "validation.tfrecord-00000-of-00001",
  ]
  assert data.read_label_names(directory) == ["left", "right", "up", "down"]

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
  configs.num_test_clips = 1
  labels = []
  for split in ("train", "validation"):
    ds = data.build_eval_dataset(configs, split, batch_size=12)
    labels.append(next(ds.as_numpy_iterator())["label"][: configs.examples_per_subset[split]])
  assert np.bincount(labels[0]).tolist() == [3, 3, 3, 3]
  params = synthetic.dataset_parameters(configs)
  train = [f for f, _ in synthetic.generate_split(params, "train")]
  validation = [f for f, _ in synthetic.generate_split(params, "validation")]
  assert not any(np.array_equal(t, v) for t in train for v in validation)


def test_generators_are_deterministic_and_well_formed():
  for name, task in synthetic.TASKS.items():
    a, label_a = task.generate(np.random.default_rng(3), 12, 24, num_frames=6, stride=2)
    b, label_b = task.generate(np.random.default_rng(3), 12, 24, num_frames=6, stride=2)
    c, _ = task.generate(np.random.default_rng(4), 12, 24, num_frames=6, stride=2)
    assert a.shape == (12, 24, 24, 3) and a.dtype == np.uint8, name
    assert label_a == label_b and 0 <= label_a < len(task.class_names)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def render_without_background(
  monkeypatch, task: str, label: int, count: int, length: int, size: int, **clip
) -> np.ndarray:
  """float frames (count, T, S, S, 3) with the background at -1000, so objects can be located."""
  monkeypatch.setattr(
    synthetic, "_background", lambda rng, size, dark: np.full((size, size, 3), -1000.0, np.float32)
  )
  monkeypatch.setattr(synthetic, "_to_uint8", lambda frames: frames)
  generate = synthetic.TASKS[task].generate
  return np.stack(
    [
      generate(np.random.default_rng([label, i]), length, size, label=label, **clip)[0]
      for i in range(count)
    ]
  )


def circular_centroid(mask: np.ndarray) -> np.ndarray:
  """(..., S, S) coverage -> (..., 2) centroid (y, x) on the torus."""
  size = mask.shape[-1]
  angle = 2 * np.pi * np.arange(size) / size
  centre = []
  for axis in (-2, -1):
    weights = mask.sum(axis=-1 if axis == -2 else -2)  # (..., S) profile along `axis`.
    mean = np.arctan2(weights @ np.sin(angle), weights @ np.cos(angle))
    centre.append(mean % (2 * np.pi) * size / (2 * np.pi))
  return np.stack(centre, -1)


def test_motion_frames_have_the_same_distribution_in_every_class(monkeypatch):
  length, size, count = 8, 24, 150
  coverage = {}  # class -> (count, T, S, S) object coverage
  colour = {}  # class -> mean colour of the object's pixels
  for label, name in enumerate(synthetic.TASKS["motion"].class_names):
    frames = render_without_background(monkeypatch, "motion", label, count, length, size)
    coverage[name] = (frames[..., 0] > -500).astype(np.float64)
    colour[name] = frames[coverage[name] > 0].mean(0)
  everything = np.mean(list(coverage.values()))
  # Shape, size and colour do not depend on the class (object area: shape and size).
  for name, cover in coverage.items():
    assert abs(cover.mean() / everything - 1) < 0.05, name
    assert np.abs(colour[name] - np.mean(list(colour.values()), axis=0)).max() < 15, name
  for name, cover in coverage.items():
    for t in (0, length - 1):  # Every position is equally likely in any frame of any class.
      rows = cover[:, t].mean(axis=(0, 2))
      columns = cover[:, t].mean(axis=(0, 1))
      assert np.abs(rows - everything).max() < 0.05, (name, t)
      assert np.abs(columns - everything).max() < 0.05, (name, t)
    # The object really moves in the class's direction: displacement per frame of its centroid.
    centres = circular_centroid(cover)  # (count, T, 2)
    step = (np.diff(centres, axis=1) + size / 2) % size - size / 2
    velocity = step.mean(axis=1)  # (count, 2) as (dy, dx)
    direction = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[name]
    along = velocity @ np.array(direction)
    assert (along > 0.5).all() and (along < 2.5).all(), name
    assert np.abs(velocity @ np.array(direction[::-1])).max() < 0.3, name
  # Time reversal: 'right' is 'left' played backwards (same coverage statistics, mirrored speed).
  left_reversed = coverage["left"][:, ::-1]
  for statistic in (lambda c: c.mean(axis=(0, 1, 2)), lambda c: c.mean(axis=(0, 1, 3))):
    np.testing.assert_allclose(statistic(left_reversed), statistic(coverage["right"]), atol=0.05)


def test_rotation_classes_turn_their_way(monkeypatch):
  for label, sign in ((0, 1), (1, -1)):  # Clockwise on screen (y points down) is positive.
    frames = render_without_background(monkeypatch, "rotation", label, 20, 16, 40)
    centres = circular_centroid((frames[..., 0] > -500).astype(np.float64))  # (count, T, 2)
    # The L's centroid circles the fixed centre: the sign of the area its path sweeps (relative
    # to the path's mean) is the direction of rotation.
    path = (centres - centres[:, :1] + 20) % 40 - 20  # Unwrapped around the first frame.
    path = path - path.mean(axis=1, keepdims=True)
    y, x = path[..., 0], path[..., 1]
    swept = (x[:, :-1] * y[:, 1:] - y[:, :-1] * x[:, 1:]).sum(axis=1)
    assert (np.sign(swept) == sign).all()


def test_order_flashes_fall_inside_every_clip(monkeypatch):
  length, num_frames, stride, size = 20, 8, 2, 64
  first, last = synthetic.event_window(length, num_frames, stride)
  assert (first, last) == (5, 14)
  for label in (0, 1):
    videos = render_without_background(
      monkeypatch, "order", label, 15, length, size, num_frames=num_frames, stride=stride
    )
    for video in videos:
      changed = np.abs(video - np.median(video, axis=0)).sum(-1) > 30  # (T, S, S)
      times = np.flatnonzero(changed.any(axis=(1, 2)))
      assert first <= times.min() and times.max() <= last
      # Two flashes of exactly `stride` frames each (possibly back to back: a new flash starts
      # where the changed region changes); the disc is the rounder one.
      starts = [
        t for t in times if t - 1 not in times or not np.array_equal(changed[t], changed[t - 1])
      ]
      assert len(starts) == 2 and len(times) == 2 * stride
      shapes = []
      for start in starts:
        # Centre the flashing object (it may wrap around the frame edges) before measuring it.
        centre = circular_centroid(changed[start].astype(np.float64)).round().astype(int)
        centred = np.roll(changed[start], tuple(size // 2 - centre), axis=(0, 1))
        ys, xs = np.nonzero(centred)
        spread = np.hypot(ys - ys.mean(), xs - xs.mean()).max() / np.sqrt(len(ys))
        shapes.append("disc" if spread < 0.635 else "square")
      assert shapes == (["disc", "square"] if label == 0 else ["square", "disc"])
      # Whatever offset the reader draws, each flash is in exactly one sampled frame.
      for offset in range(length - (num_frames - 1) * stride):
        sampled = offset + stride * np.arange(num_frames)
        assert np.isin(sampled, times).sum() == 2
  with pytest.raises(ValueError, match="video_length"):
    synthetic.event_window(30, 8, 2)
