r"""Input pipeline throughput: clips/s and frames/s of a config's training (or evaluation) reader.

  python -m vidtx.tools.input_benchmark --config=configs/k400_vivit_fe.py
  python -m vidtx.tools.input_benchmark --config=configs/k400_timesformer.py \
      --config.dataset_configs.base_dir=/data/k400 --batches=50

With an empty base_dir it measures on a generated DMVR dataset shaped like a prepared Kinetics
one (--fake_videos videos of --fake_frames JPEG frames of --fake_height x --fake_width, written
once to a temporary directory). It reads the config's split with the config's sampling and
augmentation, discards --warmup batches (buffers filling, graph tracing), then times --batches
batches, and does the same with every augmentation switched off, so the cost of Table 7's
augmentation is visible. Figures per core divide by the CPU cores tf.data may use.
"""

import dataclasses
import os
import tempfile
import time
from typing import Any

import numpy as np
from absl import app, flags, logging

from vidtx import cli
from vidtx import data as vidtx_data
from vidtx.data import bad_records, dmvr, reader_config

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


def without_augmentation(dataset: reader_config.DatasetConfig) -> reader_config.DatasetConfig:
  """A copy with every random transform off except the crop (the reader's minimum)."""
  return dataclasses.replace(dataset, random_flip=False, augmentation=reader_config.Augmentation())


def measure(
  dataset_configs: reader_config.DatasetConfig,
  split: str,
  *,
  batch_size: int,
  warmup: int,
  batches: int,
) -> dict[str, float]:
  """Times `batches` batches of the reader after `warmup`; clips and frames per second."""
  if split == "train":
    dataset = vidtx_data.build_train_dataset(dataset_configs, batch_size=batch_size, seed=0)
  else:  # One pass: repeated, so that any number of batches can be timed.
    dataset = vidtx_data.build_eval_dataset(dataset_configs, split, batch_size=batch_size).repeat()
  iterator = dataset.as_numpy_iterator()
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  clips = 0
  for _ in range(batches):
    device, _ = bad_records.split_host_fields(next(iterator))
    inputs = device["inputs"]
    # Evaluation elements hold V views of a video: count every view as a clip.
    clips += int(np.prod(inputs.shape[:-4]))
  seconds = time.perf_counter() - start
  frames = clips * dataset_configs.num_frames
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return dict(
    seconds=seconds,
    clips_per_sec=clips / seconds,
    frames_per_sec=frames / seconds,
    clips_per_sec_per_core=clips / seconds / cores,
    frames_per_sec_per_core=frames / seconds / cores,
    cores=cores,
  )


def _describe(dataset: reader_config.DatasetConfig) -> str:
  aug = dataclasses.asdict(dataset.augmentation)
  parts = [f"{dataset.num_frames} x {dataset.crop_size}^2 clips, {dataset.train_sampling} sampling"]
  if aug["do_jitter_scale"]:
    parts.append(f"scale jitter {aug['scale_min_factor']}-{aug['scale_max_factor']}")
  if dataset.random_flip:
    parts.append("flip")
  if aug["do_color_augment"]:
    parts.append(f"colour jitter p={aug['prob_color_augment']}")
  if aug["do_rand_augment"]:
    parts.append(f"RandAugment {aug['rand_augment_num_layers']}/{aug['rand_augment_magnitude']:g}")
  if aug["random_erasing_probability"]:
    parts.append(f"random erasing p={aug['random_erasing_probability']}")
  return ", ".join(parts)


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _FLAGS.config
  dc = config.dataset_configs
  with tempfile.TemporaryDirectory() as scratch:
    if not dc.base_dir and config.get("dataset_name") != "synthetic":
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
    dataset = vidtx_data.prepare_dataset(config)
    print(f"split={_FLAGS.split}: {_describe(dataset)}; batch {_FLAGS.batch_size}", flush=True)
    runs: list[tuple[str, Any]] = [("configured", dataset)]
    if _FLAGS.split == "train":
      runs.append(("augmentation off", without_augmentation(dataset)))
    for name, dc_run in runs:
      r = measure(
        dc_run,
        _FLAGS.split,
        batch_size=_FLAGS.batch_size,
        warmup=_FLAGS.warmup,
        batches=_FLAGS.batches,
      )
      print(
        f"{name:>16}: {r['clips_per_sec']:7.1f} clips/s  {r['frames_per_sec']:8.0f} "
        f"frames/s  ({r['clips_per_sec_per_core']:.2f} clips/s, "
        f"{r['frames_per_sec_per_core']:.0f} frames/s per core, {r['cores']} cores)",
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
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=cli.flags_parser(__doc__))
