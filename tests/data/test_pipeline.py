"""vidtx.data.pipeline, the reader's paper features: TimeSformer / segment / whole-video
sampling, the checkpointable stream position across epochs, bad records (errors and skipping),
flipped direction labels, class splits and multi-label targets, and the evaluator's per-video
aggregation over chunks."""

import io

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from shared import model_inputs, reader_configs

from vidtx import device_augment, evaluation, sharding
from vidtx.data import bad_records, dmvr, frame_table, pipeline, reader_config, records, sampling

jax.config.update("jax_numpy_rank_promotion", "raise")  # As other modules do in the workers.


def indexed_video(length: int, size: int = 16, video: int = 0) -> np.ndarray:
  """Red = 4 x frame index, green = 20 x video index + 10: each frame says which it is."""
  frames = np.zeros((length, size, size, 3), np.uint8)
  frames[..., 0] = (4 * np.arange(length))[:, None, None]
  frames[..., 1] = 20 * video + 10
  return frames


def write(base_dir, name: str, examples: list[bytes]) -> None:
  dmvr.write_shards(examples, str(base_dir / name), 1)


# ---------------------------------------------------------------------------------------------
# Sampling.
# ---------------------------------------------------------------------------------------------


def indices(dc, length: int, frame_rate: float = 0.0) -> np.ndarray:
  return sampling.eval_clip_indices_for(dc, tf.constant(length), frame_rate).numpy()


def test_timesformer_sampling_spreads_frames_over_the_window():
  # 4 frames "at a rate of 1/4" of 30 fps, stored at 15 fps: a window of 4 * 4 / 2 = 8 frames.
  dc = reader_configs(
    "",
    train_sampling="timesformer",
    eval_sampling="timesformer",
    sampling_rate=4,
    target_fps=30.0,
    frame_rate=15.0,
  )
  # The middle clip: start (40 - 8) / 2 = 16, frames floor(16 + linspace(0, 7, 4)).
  np.testing.assert_array_equal(indices(dc, 40), [[16, 18, 20, 23]])
  # The record's own frame rate wins: at 30 fps the window is 16 frames.
  np.testing.assert_array_equal(indices(dc, 40, frame_rate=30.0), [[12, 17, 22, 27]])
  # Evenly spaced clips from the first to the last window; a short video is clamped.
  two_clips = ml_collections.ConfigDict({**dc.to_dict(), "num_test_clips": 2})
  np.testing.assert_array_equal(indices(two_clips, 20), [[0, 2, 4, 7], [12, 14, 16, 19]])
  np.testing.assert_array_equal(indices(dc, 5), [[0, 2, 4, 4]])
  starts = set()
  for seed in range(200):
    clip = sampling.train_clip_indices(
      dc, tf.constant(40), tf.constant(0.0), tf.constant([seed, 1])
    ).numpy()
    start = clip[0]
    # floor(s + 7 i / 3) for a real s: steps of 2 or 3 frames, 6 or 7 in all.
    assert set(np.diff(clip)) <= {2, 3} and clip[-1] - start in (6, 7)
    assert 0 <= start <= 32
    starts.add(start)
  assert min(starts) <= 2 and max(starts) >= 30


def test_segment_sampling_takes_one_frame_per_segment():
  dc = reader_configs("", train_sampling="segment", eval_sampling="segment")
  np.testing.assert_array_equal(indices(dc, 20), [[2, 7, 12, 17]])
  dc.num_test_clips = 2  # Positions 1/4 and 3/4 of every segment.
  np.testing.assert_array_equal(indices(dc, 20), [[1, 6, 11, 16], [3, 8, 13, 18]])
  dc.num_test_clips = 1
  np.testing.assert_array_equal(indices(dc, 2), [[0, 0, 1, 1]])  # Shorter than the clip.
  seen = np.zeros((4, 5), bool)
  for seed in range(100):
    clip = sampling.train_clip_indices(
      dc, tf.constant(20), tf.constant(0.0), tf.constant([seed, 2])
    ).numpy()
    assert (clip // 5 == np.arange(4)).all()  # Frame i lies in segment i.
    seen[np.arange(4), clip % 5] = True
  assert seen.all()  # Every frame of every segment is drawn.


def test_whole_video_covers_the_video_with_consecutive_clips():
  dc = reader_configs("", eval_sampling="whole_video")  # 4 frames at stride 2: clips of 8 frames.
  np.testing.assert_array_equal(indices(dc, 20), [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18, 19, 19]])
  np.testing.assert_array_equal(indices(dc, 8), [[0, 2, 4, 6]])
  dc.update(train_sampling="timesformer", sampling_rate=4, target_fps=30.0, frame_rate=15.0)
  np.testing.assert_array_equal(indices(dc, 20), [[0, 2, 4, 7], [8, 10, 12, 15], [16, 18, 19, 19]])
  with pytest.raises(ValueError, match="whole_video.*segment"):
    reader_config.DatasetConfig.from_config(
      reader_configs("", eval_sampling="whole_video", train_sampling="segment")
    )


# ---------------------------------------------------------------------------------------------
# Evaluation over chunks, aggregated per video.
# ---------------------------------------------------------------------------------------------


class ColourModel(nn.Module):
  """Logits = mean red and mean green of the clip (what the coded videos encode), then 0s."""

  num_classes: int

  @nn.compact
  def __call__(self, clips, train=False):
    bias = self.param("bias", nn.initializers.zeros, (self.num_classes,))
    red, green = clips[..., 0].mean(axis=(1, 2, 3)), clips[..., 1].mean(axis=(1, 2, 3))
    colours = jnp.stack([red, green], axis=-1)  # (B, 2)
    return jnp.pad(colours, ((0, 0), (0, self.num_classes - 2))) + bias[None, :], {}


def run_evaluator(dc, aggregation="mean_logits", batch_size=2):
  mesh = sharding.make_mesh()
  evaluator = evaluation.MultiViewEvaluator(
    ColourModel(dc.num_classes),
    dc,
    "validation",
    batch_size=batch_size,
    mesh=mesh,
    aggregation=aggregation,
  )
  params = {"bias": jnp.zeros(dc.num_classes)}
  return evaluator, evaluator.run(params)


def test_whole_video_eval_aggregates_every_clip_of_each_video(tmp_path):
  lengths = [6, 20, 33]
  write(
    tmp_path,
    "validation.tfrecord",
    [
      dmvr.make_sequence_example(indexed_video(n, video=i), i % 2, video_id=f"v{i}")
      for i, n in enumerate(lengths)
    ],
  )
  dc = reader_configs(
    str(tmp_path),
    num_classes=2,
    eval_sampling="whole_video",
    num_test_clips=2,
    examples_per_subset={"validation": 3},
  )
  batches = list(pipeline.build_eval_dataset(dc, "validation", batch_size=2).as_numpy_iterator())
  masks = np.concatenate([b["batch_mask"] for b in batches])
  index = np.concatenate([b["video_index"] for b in batches])[masks > 0]
  view_mask = np.concatenate([b["view_mask"] for b in batches])[masks > 0]
  # 1, 3 and 5 clips: 1, 2 and 3 elements of 2 views, the last ones half masked.
  assert sorted(index.tolist()) == [0, 1, 1, 2, 2, 2]
  assert view_mask.sum() == 1 + 3 + 5

  for aggregation in ("mean_logits", "sum_logits"):
    evaluator, results = run_evaluator(dc, aggregation)
    assert results["num_videos"] == 3
    rows = {row["id"]: row for row in evaluator.videos}
    for i, n in enumerate(lengths):
      clips = indices(dc, n)
      red = 4 * clips.mean(axis=1) / 255  # mean red of each clip, in [0, 1]
      expected = red.mean() if aggregation == "mean_logits" else red.sum()
      got = dict(zip(rows[f"v{i}"]["predicted"], rows[f"v{i}"]["predicted_scores"], strict=True))[0]
      # Within JPEG's error on the red ramp (about 1.5 of 255 levels per clip).
      tolerance = 3 / 255 * (1 if aggregation == "mean_logits" else len(clips))
      assert got == pytest.approx(expected, abs=tolerance), (aggregation, i)


# ---------------------------------------------------------------------------------------------
# The training stream: epochs and the checkpointable position.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
  base_dir = tmp_path_factory.mktemp("twelve")
  dmvr.write_shards(
    [
      dmvr.make_sequence_example(indexed_video(6, video=i), i % 4, video_id=f"v{i:02d}")
      for i in range(12)
    ],
    str(base_dir / "train.tfrecord"),
    3,
  )
  return str(base_dir)


JITTER = dict(do_jitter_scale=True, scale_min_factor=0.75, scale_max_factor=1.33)


@pytest.mark.parametrize("jitter", [{}, JITTER])
def test_epochs_are_permutations_and_the_stream_resumes_at_any_position(twelve, jitter):
  dc = reader_configs(
    twelve,
    tables={"train": "train.tfrecord@3"},
    shuffle_buffer_size=4,
    augmentation_params=jitter,
  )
  stream = pipeline.build_train_dataset(dc, batch_size=5, seed=3).as_numpy_iterator()
  batches = [bad_records.split_host_fields(next(stream)) for _ in range(6)]  # 30 = 2.5 epochs
  epoch = np.concatenate([h["epoch"] for _, h in batches])
  index = np.concatenate([h["index"] for _, h in batches])
  ids = np.concatenate([h["video_id"] for _, h in batches])
  assert epoch.tolist() == [0] * 12 + [1] * 12 + [2] * 6
  assert index.tolist() == list(range(12)) * 2 + list(range(6))
  assert sorted(ids[:12]) == sorted(ids[12:24]) == [f"v{i:02d}".encode() for i in range(12)]
  assert ids[:12].tolist() != ids[12:24].tolist()  # Each epoch its own order.
  # Resuming after batch 2 (inside epoch 0) or batch 3 (inside epoch 1) continues the stream.
  for consumed in (2, 3):
    position = bad_records.next_position(batches[consumed - 1][1])
    resumed = pipeline.build_train_dataset(dc, batch_size=5, seed=3, start_position=position)
    for (device, host), batch in zip(
      batches[consumed:], resumed.take(2).as_numpy_iterator(), strict=False
    ):
      np.testing.assert_array_equal(device["inputs"], batch["inputs"])
      np.testing.assert_array_equal(host["video_id"], batch["video_id"])
      if jitter:  # The windows, which the device resizes, too.
        np.testing.assert_array_equal(device[device_augment.WINDOW], batch[device_augment.WINDOW])


# ---------------------------------------------------------------------------------------------
# Bad records.
# ---------------------------------------------------------------------------------------------


def png(frame: np.ndarray) -> bytes:
  out = io.BytesIO()
  Image.fromarray(frame).save(out, format="PNG")
  return out.getvalue()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
  """Records 0, 2, 5, 7 are readable (RGB, grey JPEG, RGBA PNG, sizes that change); the others
  are not (a corrupt JPEG, not a SequenceExample, no frames, a label out of range)."""
  base_dir = tmp_path_factory.mktemp("mixed")
  good = indexed_video(6)
  jpegs = dmvr.encode_jpegs(good)
  grey = [tf.io.encode_jpeg(f[..., :1]).numpy() for f in good]
  rgba = [png(np.concatenate([f, np.full_like(f[..., :1], 200)], -1)) for f in good]
  sizes = jpegs[:3] + dmvr.encode_jpegs(indexed_video(6, size=24))[3:]
  examples = [
    dmvr.sequence_example_from_jpegs(jpegs, 1),
    dmvr.sequence_example_from_jpegs(jpegs[:2] + [jpegs[2][:40]] + jpegs[3:], 1),
    dmvr.sequence_example_from_jpegs(grey, 2),
    b"certainly not a SequenceExample",
    tf.train.SequenceExample(
      context=tf.train.Features(
        feature={dmvr.LABEL_INDEX_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))}
      )
    ).SerializeToString(),
    dmvr.sequence_example_from_jpegs(rgba, 3),
    dmvr.sequence_example_from_jpegs(jpegs, 9),
    dmvr.sequence_example_from_jpegs(sizes, 0),
  ]
  dmvr.write_shards(examples, str(base_dir / "train.tfrecord"), 1)
  dmvr.write_shards(examples, str(base_dir / "validation.tfrecord"), 1)
  return str(base_dir)


@pytest.mark.parametrize("jitter", [False, True])
def test_bad_records_stop_the_reader_naming_file_and_record(mixed, jitter):
  # With scale jitter (0.75-1.33 of a short side of 16: windows of 12 to 16 pixels) the host
  # sends window buffers (here S = crop = 16) that the device resizes.
  # The per-process stream in file order (buffer 1, one file; the default, global order, would
  # read the records in a seeded order).
  dc = reader_configs(
    mixed,
    shuffle_buffer_size=1,
    augmentation_params=JITTER if jitter else {},
    global_order=False,
  )
  stream = pipeline.build_train_dataset(dc, batch_size=8, seed=0).as_numpy_iterator()
  batch = next(stream)
  # Record by record, in file order (buffer 1, one file): ok where readable, reasons otherwise.
  assert batch["ok"].tolist() == [True, False, True, False, False, True, False, True]
  if jitter:  # Bad records: zeros and a window of the crop's size; good ones: jittered windows.
    windows = batch[device_augment.WINDOW]
    assert (windows[~batch["ok"]] == 16).all() and not batch["inputs"][~batch["ok"]].any()
    assert (windows[batch["ok"]] < 16).any() and (windows <= 16).all()
  reasons = [e.decode() for e in batch["error"]]
  assert "corrupt JPEG" in reasons[1] and "not a SequenceExample" in reasons[3]
  assert "no frames" in reasons[4] and "out of range" in reasons[6] and "got [9]" in reasons[6]
  with pytest.raises(
    ValueError,
    match=r"Bad record in split=train, file=.*train.tfrecord-00000-"
    r"of-00001, record 1: could not be read.*skip_bad_records=True",
  ):
    bad_records.split_host_fields(batch)
  # The readable odd ones decode as RGB of the first frame's size.
  frames = model_inputs(batch, dc)[[0, 2, 5, 7]] * 255  # (4, T, 16, 16, 3)
  for video in frames:  # Red says the frame index (4 x index): close to a multiple of 4.
    red = video[..., 0].mean(axis=(1, 2)) / 4
    assert np.abs(red - np.round(red)).max() < 0.75
  np.testing.assert_allclose(frames[1, ..., 0], frames[1, ..., 1], atol=1)  # grey: R == G


def test_skip_bad_records_counts_them_in_training_and_evaluation(mixed):
  dc = reader_configs(
    mixed,
    shuffle_buffer_size=1,
    skip_bad_records=True,
    examples_per_subset={"validation": 8},
    global_order=False,  # The per-process stream, in file order (global: test_global_order.py).
  )
  stream = pipeline.build_train_dataset(dc, batch_size=4, seed=0).as_numpy_iterator()
  device, host = bad_records.split_host_fields(next(stream), skip_bad_records=True)
  assert host["index"].tolist() == [0, 2, 5, 7] and host["skipped"].tolist() == [0, 1, 2, 1]
  assert device["label"].tolist() == [1, 2, 3, 0]
  _, results = run_evaluator(dc)
  assert results["num_videos"] == 4 and results["bad_videos"] == 4
  with pytest.raises(ValueError, match="record 1: could not be read"):
    run_evaluator(reader_configs(mixed))


def test_clean_batches_keep_the_bookkeeping_behind_the_device_batches(mixed):
  # The per-process stream, in file order (global: test_global_order.py).
  dc = reader_configs(mixed, shuffle_buffer_size=1, skip_bad_records=True, global_order=False)
  stream = pipeline.build_train_dataset(dc, batch_size=4, seed=0).as_numpy_iterator()
  batches = bad_records.CleanBatches(stream, dc, "train", start_position=(0, 0))
  assert batches.position == (0, 0) and batches.skipped == 0
  device = next(batches)
  assert not set(bad_records.HOST_FIELDS) & set(device)
  assert device["label"].tolist() == [1, 2, 3, 0]
  assert batches.host["video_id"].shape == (4,)
  assert batches.position == (0, 8) and batches.skipped == 4  # Records 1, 3, 4 and 6 dropped.
  next(batches)  # Epoch 1: the same 4 good records, 4 more dropped.
  assert batches.position == (1, 8) and batches.skipped == 8
  strict_dc = reader_configs(mixed, shuffle_buffer_size=1, global_order=False)
  strict = pipeline.build_train_dataset(strict_dc, batch_size=8, seed=0)
  with pytest.raises(ValueError, match="record 1: could not be read"):
    next(bad_records.CleanBatches(strict.as_numpy_iterator(), dc, "train"))


# ---------------------------------------------------------------------------------------------
# Labels: flips, class splits, multi-label.
# ---------------------------------------------------------------------------------------------


def test_flip_swaps_direction_dependent_labels(tmp_path):
  video = indexed_video(6)
  video[:, :, :8, 2] = 250  # Blue on the left: a flip moves it right.
  write(tmp_path, "train.tfrecord", [dmvr.make_sequence_example(video, 0)])
  dc = reader_configs(str(tmp_path), random_flip=True, flip_label_pairs=[(0, 1)])
  batch = next(pipeline.build_train_dataset(dc, batch_size=32, seed=0).as_numpy_iterator())
  inputs = model_inputs(batch, dc)  # flipped on the accelerator
  flipped = inputs[:, 0, 8, 12, 2] > inputs[:, 0, 8, 3, 2]
  assert 0 < flipped.sum() < 32
  np.testing.assert_array_equal(batch["label"], flipped.astype(np.int32))
  with pytest.raises(ValueError, match="flip_label_pairs"):
    reader_config.DatasetConfig.from_config(reader_configs("x", flip_label_pairs=[(0, 7)]))


def test_class_splits_and_multi_label_targets(tmp_path):
  video = indexed_video(4)
  write(
    tmp_path,
    "validation.tfrecord",
    [dmvr.make_sequence_example(video, labels) for labels in ([2, 3 + 1], [0, 3], [1], [0, 1])],
  )
  dc = reader_configs(
    str(tmp_path), num_classes=5, class_splits=[3, 2], split_names=["noun", "verb"]
  )
  batch = next(pipeline.build_eval_dataset(dc, "validation", batch_size=4).as_numpy_iterator())
  np.testing.assert_array_equal(batch["label"][:2], [[0, 0, 1, 0, 1], [1, 0, 0, 1, 0]])
  assert not batch["ok"][2:].any()
  assert "one label per class split, in [0, 3), [3, 5)" in batch["error"][2].decode()
  dc = reader_configs(str(tmp_path), num_classes=5, multi_label=True)
  batch = next(pipeline.build_eval_dataset(dc, "validation", batch_size=4).as_numpy_iterator())
  assert batch["ok"].all()
  np.testing.assert_array_equal(
    batch["label"], [[0, 0, 1, 0, 1], [1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 1, 0, 0, 0]]
  )
  with pytest.raises(ValueError, match="sum to num_classes=5"):
    reader_config.DatasetConfig.from_config(reader_configs("x", num_classes=5, class_splits=[3, 3]))


# ---------------------------------------------------------------------------------------------
# Frame tables: a clip reads only its frames, and the stream is the one of whole records.
# ---------------------------------------------------------------------------------------------


def assert_batches_equal(got: list[dict], want: list[dict]) -> None:
  assert len(got) == len(want)
  for a, b in zip(got, want, strict=True):
    assert sorted(a) == sorted(b)
    for field in a:
      np.testing.assert_array_equal(a[field], b[field], err_msg=field)


@pytest.mark.parametrize("fixture", ["twelve", "mixed"])
def test_frame_tables_give_the_stream_of_whole_records(fixture, request, monkeypatch):
  base_dir = request.getfixturevalue(fixture)
  dc = reader_config.DatasetConfig.from_config(
    reader_configs(
      base_dir,
      tables={"train": "train.tfrecord@3" if fixture == "twelve" else "train.tfrecord@1"},
      shuffle_buffer_size=4,
      skip_bad_records=True,
      random_flip=True,
      stride=3,  # 4 frames at stride 3 from 6: looped, frames read twice
      augmentation_params={"do_jitter_scale": True, "scale_min_factor": 0.8},
      global_order=False,  # The stream that can be read either way: per process.
    )
  )
  assert records.frame_tables_missing(dc, "train") is None  # dmvr.write_shards wrote them.

  def stream():
    ds = pipeline.build_train_dataset(dc, batch_size=3, seed=5)
    return [b for _, b in zip(range(5), ds.as_numpy_iterator(), strict=False)]

  by_frames = stream()
  # Reads in parallel, as on a slow store: the same bytes in the same places.
  monkeypatch.setattr(frame_table, "PARALLEL_ABOVE_SECONDS", 0.0)
  assert_batches_equal(stream(), by_frames)
  monkeypatch.setattr(records, "frame_tables_missing", lambda *args, **kwargs: "switched off")
  assert_batches_equal(by_frames, stream())
  assert by_frames[0]["inputs"].dtype == np.uint8


def test_a_context_that_fails_read_ahead_is_read_again_in_the_element(twelve):
  shard = dmvr.shard_names(f"{twelve}/train.tfrecord", 3)[0]
  table = frame_table.open_table(shard)
  files = np.array([shard.encode()] * 3, dtype=object)
  heads, counts = records._read_contexts(files, np.array([1, 99, 0]))  # no record 99
  assert counts.tolist() == [table.context(1)[1], records._NOT_READ, table.context(0)[1]]
  assert heads[0] == table.context(1)[0] and heads[2] == table.context(0)[0]

  def parsed(record):  # as in the stream: a tf.data map
    raw = {"file": shard, "record": np.int64(record), "source": "s", "head": b""}
    raw["count"] = np.int64(records._NOT_READ)
    return next(tf.data.Dataset.from_tensors(raw).map(records.parse_video).as_numpy_iterator())

  assert parsed(0)["video_id"] == b"v00"  # read again in the element
  with pytest.raises(tf.errors.OpError):  # inside protected_map: an unreadable element
    parsed(99)
