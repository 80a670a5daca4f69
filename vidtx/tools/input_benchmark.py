r"""Input pipeline throughput: frames per CPU-second and per second of a config's reader.

  python -m vidtx.tools.input_benchmark --config=configs/k400_vivit_fe.py
  python -m vidtx.tools.input_benchmark --config=configs/k400_timesformer.py \
      --config.dataset_configs.base_dir=/data/k400 --batches=50
  python -m vidtx.tools.input_benchmark --config=configs/k400_vivit_fe.py --stages \
      [--split=validation] [--peer --peer_videos=DIR] <dataset overrides>
  python -m vidtx.tools.input_benchmark --config=configs/k400_vivit_fe.py --read_latency_ms=20 \
      <dataset overrides>

The unit is frames per CPU-second: frames / (user + sys CPU seconds of this process, tf.data's
threads included; time.process_time). It is stable on a shared machine, where wall-clock frames/s
(also printed) depends on the neighbours. Frames are the frames the model receives: clips x
num_frames in training, videos x views x num_frames in evaluation.

With an empty base_dir it measures on a generated DMVR dataset shaped like a prepared Kinetics
one (--fake_videos videos of --fake_frames JPEG frames of --fake_height x --fake_width, written
once to a temporary directory). It reads the config's split with the config's sampling and
augmentation, discards --warmup batches (buffers filling, graph tracing), then times --batches
batches (and at least --min_cpu_seconds of CPU time), and does the same with every augmentation
switched off, so the cost of Table 7's augmentation is visible.

--stages reports cumulative stages instead, each a whole stream timed on its own:
  read + parse             whole records (TFRecordDataset) and their SequenceExample parse;
  + tf.io.decode_jpeg      + the decode of the clip's frames, nothing else: a plain tf.data
                           reader of whole records;
  decoder limit            tf.io.decode_jpeg alone, of clips' JPEGs held in memory: the ceiling
                           of any reader that decodes the frames it keeps (vidtx's reads only a
                           clip's frames when the shards have frame tables, so it can pass the
                           line above);
  crop (augmentation off)  vidtx's reader with every random transform off: sample, decode, resize
                           and crop, normalise, batch;
  + scale jitter, + flip, + colour jitter, + RandAugment, + random erasing: the config's own
                           settings switched back on one after another (those the config uses);
  the config as is         vidtx.data.build_train_dataset (or build_eval_dataset) unchanged.
The reader's stages are variants of the config, built through the public pipeline functions, so
they stay meaningful whatever the pipeline does inside. For an evaluation split: read + parse,
the decoder limit (every clip's frames decoded once; the spatial crops share them) and the
config's evaluation reader.

--read_latency_ms=L adds L ms to every read through a frame table (a sleep before the read: a
simulated object store). Each run prints the reads through frame tables and how many were in
flight, at most and on average (the reads' summed wall time over the run's), which shows whether
the reader issues them in parallel, as a slow store needs.

--peer runs the PyTorch world's reader on the mp4s in --peer_videos (vidtx.tools.torch_peer:
PyAV decoding in DataLoader workers, MMAction2's crops, flip and normalisation, the config's
clip geometry), counting the CPU time of its workers too, and prints the ratio.
"""

import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
from absl import flags, logging

from vidtx import cli
from vidtx import data as vidtx_data
from vidtx.data import bad_records, dmvr, frame_table, reader_config, records
from vidtx.data.reader_config import DatasetConfig
from vidtx.errors import UserError

_FLAGS = flags.FLAGS


def fake_dataset(
  directory: str,
  *,
  videos: int,
  frames: int,
  height: int,
  width: int,
  num_classes: int,
  num_shards: int = 4,
) -> str:
  """Writes `videos` smooth moving pictures as DMVR shards train/validation.tfrecord@num_shards.

  Smooth content with a moving edge compresses like real video (JPEG cost depends on content:
  flat frames would decode unrealistically fast). Returns `directory`.
  """
  rng = np.random.default_rng(0)
  y, x = np.mgrid[:height, :width].astype(np.float32)
  examples = []
  for video in range(videos):
    phase = rng.uniform(0, 2 * np.pi, 3)
    t = np.arange(frames, dtype=np.float32)[:, None, None, None]
    wave = np.sin(x[None, :, :, None] / 17 + phase + t / 5) * np.cos(y[None, :, :, None] / 23)
    clip = np.clip(128 + 100 * wave + rng.normal(0, 6, (frames, height, width, 3)), 0, 255)
    examples.append(dmvr.make_sequence_example(clip.astype(np.uint8), video % num_classes))
  for split in ("train", "validation"):
    dmvr.write_shards(examples, os.path.join(directory, f"{split}.tfrecord"), num_shards)
  return directory


class ReadProbe:
  """Counts the reads through frame tables (vidtx.data.frame_table.FrameTable's one read
  function), and adds `latency_s` to each before it starts: a simulated slow store (an object
  store answers each read after tens of ms). It shows how many reads the reader keeps in flight.
  install() wraps the function for the whole process."""

  def __init__(self, latency_s: float = 0.0):
    self.latency_s = latency_s
    self._lock = threading.Lock()
    self.reset()

  def reset(self) -> None:
    with self._lock:
      self.now = getattr(self, "now", 0)  # reads in flight now stay counted
      self.reads, self.most = 0, self.now
      self.busy_seconds = 0.0  # summed over reads: / wall seconds = mean reads in flight
      self.start = time.perf_counter()

  def install(self) -> None:
    read = frame_table.FrameTable._read

    def probed(table: frame_table.FrameTable, offset: int, size: int, record: int) -> bytes:
      with self._lock:
        self.now += 1
        self.most = max(self.most, self.now)
      begin = time.perf_counter()
      try:
        if self.latency_s:
          time.sleep(self.latency_s)
        return read(table, offset, size, record)
      finally:
        with self._lock:
          self.now -= 1
          self.reads += 1
          self.busy_seconds += time.perf_counter() - begin

    frame_table.FrameTable._read = probed

  def summary(self) -> dict[str, float]:
    """Reads since reset(), and the reads in flight: at most and on average (time-weighted)."""
    with self._lock:
      wall = time.perf_counter() - self.start
      mean = self.busy_seconds / wall
      return dict(reads=self.reads, most_in_flight=self.most, mean_in_flight=mean)


_PROBE = ReadProbe()


def without_augmentation(dataset: DatasetConfig) -> DatasetConfig:
  """A copy with every random transform off except the crop (the reader's minimum)."""
  return dataclasses.replace(dataset, random_flip=False, augmentation=reader_config.Augmentation())


def _cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def time_stream(
  next_batch: Callable[[], int],
  *,
  warmup: int,
  batches: int,
  min_cpu_seconds: float = 0.0,
) -> dict[str, float]:
  """Calls `next_batch` (which returns the frames in its batch) `warmup` times, then times at
  least `batches` calls and `min_cpu_seconds` of this process's CPU time (all its threads).
  Returns frames, clock and CPU seconds, frames per second and frames per CPU-second."""
  for _ in range(warmup):
    next_batch()
  _PROBE.reset()
  cpu_start, wall_start = time.process_time(), time.perf_counter()
  frames = count = 0
  while count < batches or time.process_time() - cpu_start < min_cpu_seconds:
    frames += next_batch()
    count += 1
  cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
  return dict(
    batches=count,
    frames=frames,
    seconds=wall,
    cpu_seconds=cpu,
    frames_per_sec=frames / wall,
    frames_per_cpu_sec=frames / cpu,
    **_PROBE.summary(),
  )


def measure(
  dataset_configs: DatasetConfig,
  split: str,
  *,
  batch_size: int,
  warmup: int,
  batches: int,
  min_cpu_seconds: float = 0.0,
) -> dict[str, float]:
  """Times the reader's batches after `warmup`: clips and frames per second and per CPU-second."""
  if split == "train":
    dataset = vidtx_data.build_train_dataset(dataset_configs, batch_size=batch_size, seed=0)
  else:  # One pass: repeated, so that any number of batches can be timed.
    dataset = vidtx_data.build_eval_dataset(dataset_configs, split, batch_size=batch_size).repeat()
  iterator = dataset.as_numpy_iterator()
  clips_per_batch = []

  def next_batch() -> int:
    device, _ = bad_records.split_host_fields(next(iterator))
    inputs = device["inputs"]  # (B, [V,] T, H, W, 3)
    # Evaluation elements hold V views of a video: count every view as a clip. Padded views and
    # padded videos (the last batch of a pass) are counted too: the reader made them.
    clips_per_batch.append(int(np.prod(inputs.shape[:-4])))
    return clips_per_batch[-1] * int(inputs.shape[-4])

  try:
    r = time_stream(next_batch, warmup=warmup, batches=batches, min_cpu_seconds=min_cpu_seconds)
  finally:
    iterator = None  # Frees it, which stops its threads: the next stream is timed alone.
    gc.collect()
  clips = sum(clips_per_batch[warmup:])
  cores = _cores()
  return dict(
    r,
    clips_per_sec=clips / r["seconds"],
    clips_per_sec_per_core=clips / r["seconds"] / cores,
    frames_per_sec_per_core=r["frames_per_sec"] / cores,
    cpu_ms_per_clip=1000 * r["cpu_seconds"] / clips,
    cores=cores,
  )


def _views(dc: DatasetConfig, split: str) -> tuple[int, int]:
  """(clips decoded per video, views per video) of `split`: (1, 1) for training."""
  if split == "train":
    return 1, 1
  clips = dc.num_test_clips
  return clips, clips * (3 if dc.do_three_spatial_crops else 1)


def _clip_indices(n: tf.Tensor, clips: int, num_frames: int, stride: int) -> tf.Tensor:
  """(clips * T,) frame indices: clips of num_frames at `stride` from random offsets, looped."""
  offset = tf.random.uniform([clips, 1], 0, tf.maximum(n - (num_frames - 1) * stride, 1), tf.int32)
  indices = (offset + tf.range(num_frames)[None, :] * stride) % n  # (clips, T)
  return tf.reshape(indices, [-1])


def _decode_all(selected: tf.Tensor) -> tf.Tensor:
  """The number of frames after tf.io.decode_jpeg of each of `selected` (clips * T,)."""
  frames = tf.map_fn(
    lambda jpeg: tf.io.decode_jpeg(jpeg, channels=3),
    selected,
    fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
  )  # (clips * T, H, W, 3)
  return tf.shape(frames)[0]


def decode_only_dataset(dc: DatasetConfig, split: str, *, batch_size: int) -> tf.data.Dataset:
  """The decoder alone: the JPEGs of one clip from each of the split's first 16 records, held in
  memory, decoded by tf.io.decode_jpeg again and again. No reading, no parsing: the ceiling of
  any reader that decodes every frame it keeps."""
  num_frames, stride = int(dc.num_frames), dc.stride
  clips, _ = _views(dc, split)
  files = records.split_files(dc, split)
  held = []
  for serialized in tf.data.TFRecordDataset(files).take(16):
    jpegs = dmvr.parse_sequence_example(serialized)["jpegs"]
    held.append(tf.gather(jpegs, _clip_indices(tf.size(jpegs), clips, num_frames, stride)))
  ds = tf.data.Dataset.from_tensor_slices(tf.stack(held)).repeat()  # (clips * T,) each
  ds = ds.map(_decode_all, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def reference_dataset(
  dc: DatasetConfig, split: str, *, batch_size: int, decode: bool
) -> tf.data.Dataset:
  """The split's records, parsed (and with `decode`, the clips' frames decoded by
  tf.io.decode_jpeg and nothing else), batched: the lines the reader is measured against.

  Plain tf.data and the DMVR format only, so these lines do not move when the reader's inside
  changes. Frames: `clips` clips of num_frames at `stride` from a random offset, looped.
  """
  num_frames, stride = int(dc.num_frames), dc.stride
  clips, _ = _views(dc, split)
  files = tf.data.Dataset.from_tensor_slices(records.split_files(dc, split))
  ds = files.interleave(
    tf.data.TFRecordDataset, cycle_length=4, num_parallel_calls=tf.data.AUTOTUNE
  ).repeat()

  def parse(serialized: tf.Tensor) -> tf.Tensor:
    jpegs = dmvr.parse_sequence_example(serialized)["jpegs"]  # (N,) encoded frames
    if not decode:
      return tf.size(jpegs)
    selected = tf.gather(jpegs, _clip_indices(tf.size(jpegs), clips, num_frames, stride))
    return _decode_all(selected)

  ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def measure_reference(
  dc: DatasetConfig,
  split: str,
  *,
  decode: bool | str,
  batch_size: int,
  warmup: int,
  batches: int,
  min_cpu_seconds: float = 0.0,
) -> dict[str, float]:
  """time_stream of reference_dataset (decode="alone": decode_only_dataset); frames counted as
  the model would receive them."""
  _, views = _views(dc, split)
  if decode == "alone":
    dataset = decode_only_dataset(dc, split, batch_size=batch_size)
  else:
    dataset = reference_dataset(dc, split, batch_size=batch_size, decode=decode)
  iterator = iter(dataset)
  frames_per_batch = batch_size * views * int(dc.num_frames)

  def next_batch() -> int:
    next(iterator)
    return frames_per_batch

  try:
    r = time_stream(
      next_batch,
      warmup=warmup,
      batches=batches,
      min_cpu_seconds=min_cpu_seconds,
    )
  finally:
    iterator = None
    gc.collect()
  clips = r["frames"] / int(dc.num_frames)
  return dict(r, cpu_ms_per_clip=1000 * r["cpu_seconds"] / clips)


def train_stages(dc: DatasetConfig | ml_collections.ConfigDict) -> list[tuple[str, DatasetConfig]]:
  """Cumulative variants of `dc`: every augmentation off, then the config's own augmentations
  switched back on one by one (only those it uses), then `dc` itself."""
  dc = reader_config.as_dataset_config(dc)
  aug = dataclasses.asdict(dc.augmentation)
  groups = [
    (
      "+ scale jitter",
      aug["do_jitter_scale"],
      {},
      ("do_jitter_scale", "scale_min_factor", "scale_max_factor", "prob_scale_jitter"),
    ),
    ("+ flip", dc.random_flip, {"random_flip": True}, ()),
    (
      "+ colour jitter",
      aug["do_color_augment"],
      {},
      ("do_color_augment", "prob_color_augment", "prob_color_drop"),
    ),
    (
      "+ RandAugment",
      aug["do_rand_augment"],
      {},
      ("do_rand_augment", "rand_augment_num_layers", "rand_augment_magnitude"),
    ),
    (
      "+ random erasing",
      float(aug["random_erasing_probability"]) > 0,
      {},
      ("random_erasing_probability",),
    ),
  ]
  variant = without_augmentation(dc)
  stages = [("crop (augmentation off)", variant)]
  for name, used, fields, aug_fields in groups:
    if not used:
      continue
    switched_on = dataclasses.replace(variant.augmentation, **{k: aug[k] for k in aug_fields})
    variant = dataclasses.replace(variant, augmentation=switched_on, **fields)
    stages.append((name, variant))
  stages.append(("the config as is", dc))
  return stages


def stage_report(
  dc: DatasetConfig,
  split: str,
  *,
  batch_size: int,
  warmup: int,
  batches: int,
  min_cpu_seconds: float = 0.0,
  log: Callable[[str], None] = lambda line: None,
) -> list[dict[str, Any]]:
  """One row per stage (see the module docstring): its name and time_stream's figures."""
  dc = reader_config.as_dataset_config(dc)
  timing = dict(
    batch_size=batch_size, warmup=warmup, batches=batches, min_cpu_seconds=min_cpu_seconds
  )
  rows = []
  references = (
    ("read + parse (whole records)", False),
    ("+ tf.io.decode_jpeg of the clip's frames", True),
    ("decoder limit: tf.io.decode_jpeg alone (JPEGs in memory)", "alone"),
  )
  for name, decode in references:
    rows.append(dict(stage=name, **measure_reference(dc, split, decode=decode, **timing)))
    log(format_row(rows[-1]))
  stages = train_stages(dc) if split == "train" else [("the config's evaluation reader", dc)]
  for name, variant in stages:
    rows.append(dict(stage=name, **measure(variant, split, **timing)))
    log(format_row(rows[-1]))
  return rows


TABLE_HEADER = (
  "| stage | CPU ms per clip | frames / CPU-s | frames / s (wall) |\n| --- | --- | --- | --- |"
)


def format_row(row: dict[str, Any]) -> str:
  return (
    f"| {row['stage']} | {row['cpu_ms_per_clip']:.1f} | {row['frames_per_cpu_sec']:,.0f} | "
    f"{row['frames_per_sec']:,.0f} |"
  )


def _describe(dataset_configs: DatasetConfig) -> str:
  aug = dataclasses.asdict(dataset_configs.augmentation)
  parts = [
    f"{dataset_configs.num_frames} x {dataset_configs.crop_size}^2 clips, "
    f"{dataset_configs.train_sampling} sampling"
  ]
  if aug["do_jitter_scale"]:
    parts.append(f"scale jitter {aug['scale_min_factor']}-{aug['scale_max_factor']}")
  if dataset_configs.random_flip:
    parts.append("flip")
  if aug["do_color_augment"]:
    parts.append(f"colour jitter p={aug['prob_color_augment']}")
  if aug["do_rand_augment"]:
    parts.append(f"RandAugment {aug['rand_augment_num_layers']}/{aug['rand_augment_magnitude']:g}")
  if aug["random_erasing_probability"]:
    parts.append(f"random erasing p={aug['random_erasing_probability']}")
  return ", ".join(parts)


def peer_recipe(dc: DatasetConfig | ml_collections.ConfigDict) -> list[str]:
  """vidtx.tools.torch_peer's flags for the config's clip geometry: TimeSformer's sampling gets
  MMAction2's TimeSformer recipe (frame interval = sampling_rate, short side rescaled to the
  config's jitter range, random crop), every other one VideoMAE's (frame interval = stride,
  RandomResizedCrop)."""
  dc = reader_config.as_dataset_config(dc, views_only=True)
  num_frames, crop = int(dc.num_frames), int(dc.crop_size)
  if dc.train_sampling == "timesformer":
    aug = dataclasses.asdict(dc.augmentation)
    low, high = (1.0, 1.0)
    if aug["do_jitter_scale"]:
      low, high = float(aug["scale_min_factor"]), float(aug["scale_max_factor"])
    short = int(dc.min_resize)
    return [
      f"--num_frames={num_frames}",
      f"--frame_interval={int(dc.sampling_rate)}",
      "--crop=rescale_crop",
      f"--crop_size={crop}",
      "--short_side_range",
      f"{round(short * low)}",
      f"{round(short * high)}",
    ]
  return [
    f"--num_frames={num_frames}",
    f"--frame_interval={dc.stride}",
    "--crop=resized_crop",
    f"--crop_size={crop}",
  ]


def run_peer(dc: DatasetConfig, videos: str, **timing: int) -> dict[str, float]:
  """vidtx.tools.torch_peer in its own process (no TensorFlow in its workers' parent), with the
  config's geometry; its result dict."""
  dc = reader_config.as_dataset_config(dc, views_only=True)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
  command = [sys.executable, "-m", "vidtx.tools.torch_peer", f"--videos={videos}", "--json"]
  command += peer_recipe(dc) + [f"--{k}={v}" for k, v in timing.items()]
  done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
  if done.returncode != 0:
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise UserError(f"--peer: the PyTorch peer (vidtx.tools.torch_peer) failed: {last}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def _with_fake_data(config: ml_collections.ConfigDict, scratch: str) -> None:
  dc = config.dataset_configs
  print(
    f"Writing {_FLAGS.fake_videos} fake videos ({_FLAGS.fake_frames} frames of "
    f"{_FLAGS.fake_height} x {_FLAGS.fake_width}) to {scratch} ...",
    flush=True,
  )
  with config.unlocked():
    dc.base_dir = fake_dataset(
      scratch,
      videos=_FLAGS.fake_videos,
      frames=_FLAGS.fake_frames,
      height=_FLAGS.fake_height,
      width=_FLAGS.fake_width,
      num_classes=dc.num_classes,
    )
    dc.tables = {"train": "train.tfrecord@4", "validation": "validation.tfrecord@4"}
    dc.examples_per_subset = {"train": _FLAGS.fake_videos, "validation": _FLAGS.fake_videos}


def _print_runs(dataset_configs: DatasetConfig, timing: dict[str, Any]) -> None:
  """Without --stages: the config, then (training) the config with augmentation off."""
  runs: list[tuple[str, Any]] = [("configured", dataset_configs)]
  if _FLAGS.split == "train":
    runs.append(("augmentation off", without_augmentation(dataset_configs)))
  for name, dc_run in runs:
    r = measure(dc_run, _FLAGS.split, **timing)
    print(
      f"{name:>16}: {r['clips_per_sec']:7.1f} clips/s  {r['frames_per_sec']:8.0f} "
      f"frames/s  {r['frames_per_cpu_sec']:8.0f} frames/CPU-s  "
      f"({r['clips_per_sec_per_core']:.2f} clips/s, "
      f"{r['frames_per_sec_per_core']:.0f} frames/s per core, {r['cores']} cores)"
      + (
        f"; frame-table reads: {r['reads']}, in flight at most {r['most_in_flight']}, "
        f"{r['mean_in_flight']:.1f} on average"
        if r["reads"]
        else ""
      ),
      flush=True,
    )


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _FLAGS.config
  if _FLAGS.read_latency_ms < 0:
    raise UserError(f"--read_latency_ms={_FLAGS.read_latency_ms} must be >= 0.")
  _PROBE.latency_s = _FLAGS.read_latency_ms / 1000
  _PROBE.install()
  if _FLAGS.peer and not _FLAGS.peer_videos:
    raise UserError("--peer needs --peer_videos: a folder of the same videos as .mp4 files.")
  timing = dict(
    batch_size=_FLAGS.batch_size,
    warmup=_FLAGS.warmup,
    batches=_FLAGS.batches,
    min_cpu_seconds=_FLAGS.min_cpu_seconds,
  )
  with tempfile.TemporaryDirectory() as scratch:
    if not config.dataset_configs.get("base_dir") and config.get("dataset_name") != "synthetic":
      _with_fake_data(config, scratch)
    dataset_configs = vidtx_data.prepare_dataset(config)
    print(
      f"split={_FLAGS.split}: {_describe(dataset_configs)}; batch {_FLAGS.batch_size}; "
      f"{_cores()} cores",
      flush=True,
    )
    if not _FLAGS.stages:
      _print_runs(dataset_configs, timing)
      rows = []
    else:
      print(TABLE_HEADER, flush=True)
      rows = stage_report(
        dataset_configs, _FLAGS.split, **timing, log=lambda line: print(line, flush=True)
      )
  if _FLAGS.peer:
    peer = run_peer(
      dataset_configs,
      _FLAGS.peer_videos,
      batch_size=_FLAGS.batch_size,
      warmup=_FLAGS.warmup,
      batches=_FLAGS.batches,
      workers=_FLAGS.peer_workers,
    )
    peer_line = " ".join(peer_recipe(dataset_configs))
    print(format_row(dict(peer, stage=f"PyTorch peer (PyAV, {peer_line})")), flush=True)
    if _FLAGS.split != "train":
      return
    ours = rows[-1] if rows else measure(dataset_configs, "train", **timing)
    print(
      f"vidtx / peer, frames per CPU-second: {ours['frames_per_cpu_sec']:,.0f} / "
      f"{peer['frames_per_cpu_sec']:,.0f} = "
      f"{ours['frames_per_cpu_sec'] / peer['frames_per_cpu_sec']:.2f}x; wall frames/s: "
      f"{ours['frames_per_sec'] / peer['frames_per_sec']:.2f}x",
      flush=True,
    )


if __name__ == "__main__":
  cli.define_config_flag()
  flags.DEFINE_string("split", "train", "'train' (augmented clips) or an evaluation split.")
  flags.DEFINE_integer("batch_size", 8, "Clips (training) or videos (evaluation) per batch.")
  flags.DEFINE_integer("warmup", 3, "Batches read before timing.")
  flags.DEFINE_integer("batches", 20, "Batches timed.")
  flags.DEFINE_integer("fake_videos", 32, "Generated videos when base_dir is empty.")
  flags.DEFINE_integer("fake_frames", 80, "Frames per generated video.")
  flags.DEFINE_integer("fake_height", 256, "Generated frame height (a prepared short side).")
  flags.DEFINE_integer("fake_width", 340, "Generated frame width.")
  flags.DEFINE_float(
    "min_cpu_seconds", 0.0, "Time at least this much CPU per stream (more batches if needed)."
  )
  flags.DEFINE_float(
    "read_latency_ms",
    0.0,
    "Added to every read through a frame table (a simulated object store; 0: the disk as is).",
  )
  flags.DEFINE_bool("stages", False, "Report cumulative stages and the decoder limit (a table).")
  flags.DEFINE_bool("peer", False, "Also time the PyTorch peer (vidtx.tools.torch_peer).")
  flags.DEFINE_string("peer_videos", "", "--peer: a folder of the dataset's videos as .mp4.")
  flags.DEFINE_integer("peer_workers", 2, "--peer: DataLoader worker processes.")
  flags.mark_flags_as_required(["config"])
  cli.run(main, doc=__doc__)
