"""vidtx.tools.input_benchmark's stage report and the PyTorch peer (vidtx.tools.torch_peer) on
tiny data: every stage is timed, frames are counted as batches x batch x views x frames, and the
rates are the counts over the times."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import shared

from vidtx.configs import k400_timesformer, k400_vivit_fe
from vidtx.data import reader_config
from vidtx.tools import input_benchmark, kinetics_like

AUGMENTED = dict(
  random_flip=True,
  min_resize=24,
  augmentation_params=dict(
    do_jitter_scale=True,
    scale_min_factor=0.9,
    scale_max_factor=1.2,
    do_color_augment=True,
    prob_color_augment=1.0,
  ),
)


def _tiny_dataset(directory: str, **overrides):
  input_benchmark.fake_dataset(directory, videos=4, frames=10, height=24, width=32, num_classes=4)
  return shared.reader_configs(
    directory,
    tables={"train": "train.tfrecord@4", "validation": "validation.tfrecord@4"},
    examples_per_subset={"train": 4, "validation": 4},
    **overrides,
  )


def _check_rates(row: dict, frames: int, clips: int) -> None:
  assert row["frames"] == frames, row["stage"]
  assert row["cpu_seconds"] > 0 and row["seconds"] > 0
  np.testing.assert_allclose(row["frames_per_cpu_sec"], frames / row["cpu_seconds"])
  np.testing.assert_allclose(row["frames_per_sec"], frames / row["seconds"])
  np.testing.assert_allclose(row["cpu_ms_per_clip"], 1000 * row["cpu_seconds"] / clips)


def test_train_stages_switch_the_configs_augmentations_on_one_by_one():
  dc = reader_config.DatasetConfig.from_config(shared.reader_configs("/nowhere", **AUGMENTED))
  stages = input_benchmark.train_stages(dc)
  names = [name for name, _ in stages]
  assert names == [
    "crop (augmentation off)",
    "+ scale jitter",
    "+ flip",
    "+ colour jitter",
    "the config as is",
  ]
  flips = [variant.random_flip for _, variant in stages]
  assert flips == [False, False, True, True, True]
  jitter = [v.augmentation.do_jitter_scale for _, v in stages]
  colour = [v.augmentation.do_color_augment for _, v in stages]
  assert jitter == [False, True, True, True, True]
  assert colour == [False, False, False, True, True]
  # The last cumulative variant is the config itself.
  assert stages[-2][1] == dc and stages[-1][1] is dc
  # A config without augmentation: the crop, then the config.
  plain = shared.reader_configs("/nowhere")
  assert [n for n, _ in input_benchmark.train_stages(plain)] == [
    "crop (augmentation off)",
    "the config as is",
  ]


def test_stage_report_times_every_stage_and_counts_its_frames(tmp_path):
  # The flip alone: which augmentations make the stages is test_train_stages_... 's job.
  dc = _tiny_dataset(str(tmp_path), random_flip=True)
  rows = input_benchmark.stage_report(dc, "train", batch_size=2, warmup=1, batches=3)
  assert [r["stage"] for r in rows] == [
    "read + parse (whole records)",
    "+ tf.io.decode_jpeg of the clip's frames",
    "decoder limit: tf.io.decode_jpeg alone (JPEGs in memory)",
    "crop (augmentation off)",
    "+ flip",
    "the config as is",
  ]
  for row in rows:
    assert row["batches"] == 3
    _check_rates(row, frames=3 * 2 * 4, clips=3 * 2)
  table = "\n".join([input_benchmark.TABLE_HEADER] + [input_benchmark.format_row(r) for r in rows])
  assert table.count("\n| ") == len(rows) + 1  # header, separator, one line per stage


def test_eval_stage_report_counts_every_view(tmp_path):
  # 2 clips x 3 crops = 6 views of 4 frames per video; 4 videos in batches of 3 (one padded).
  dc = _tiny_dataset(str(tmp_path), num_test_clips=2, do_three_spatial_crops=True)
  rows = input_benchmark.stage_report(dc, "validation", batch_size=3, warmup=1, batches=2)
  assert [r["stage"] for r in rows] == [
    "read + parse (whole records)",
    "+ tf.io.decode_jpeg of the clip's frames",
    "decoder limit: tf.io.decode_jpeg alone (JPEGs in memory)",
    "the config's evaluation reader",
  ]
  for row in rows:
    _check_rates(row, frames=2 * 3 * 6 * 4, clips=2 * 3 * 6)


def test_min_cpu_seconds_times_more_batches():
  def busy_batch() -> int:
    sum(range(20_000))  # about a millisecond of one thread's CPU
    return 5

  r = input_benchmark.time_stream(busy_batch, warmup=0, batches=1, min_cpu_seconds=0.1)
  assert r["cpu_seconds"] >= 0.1 and r["batches"] > 1 and r["frames"] == 5 * r["batches"]


def test_peer_recipe_follows_the_config():
  vivit = input_benchmark.peer_recipe(k400_vivit_fe.get_config().dataset_configs)
  assert vivit == [
    "--num_frames=32",
    "--frame_interval=2",
    "--crop=resized_crop",
    "--crop_size=224",
  ]
  timesformer = input_benchmark.peer_recipe(k400_timesformer.get_config().dataset_configs)
  assert timesformer == [
    "--num_frames=8",
    "--frame_interval=32",
    "--crop=rescale_crop",
    "--crop_size=224",
    "--short_side_range",
    "256",
    "320",
  ]


def test_peer_reads_tiny_mp4s(tmp_path):
  pytest.importorskip("torch")
  from vidtx.tools import torch_peer  # noqa: PLC0415 (needs torch)

  videos = str(tmp_path / "videos")
  paths = kinetics_like.make_videos(
    videos, videos=2, classes=2, seconds=1, fps=12, height=40, width=48
  )
  assert sorted(os.listdir(videos)) == sorted(
    [os.path.basename(p) for p in paths] + [".vidtx", "train.csv", "validate.csv"]
  )
  with open(os.path.join(videos, "train.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["label"] for r in rows] == ["pan_left", "pan_right"] and rows[0]["split"] == "train"

  rng = np.random.default_rng(0)
  frames = torch_peer.decode_clip(paths[0], rng, num_frames=4, frame_interval=2)
  assert frames.shape == (4, 40, 48, 3) and frames.dtype == np.uint8
  for crop in torch_peer.CROPS:
    clip = torch_peer.transform(
      frames, rng, crop=crop, crop_size=16, short_side_range=(40, 48), normalise=True
    )
    assert tuple(clip.shape) == (3, 4, 16, 16) and str(clip.dtype) == "torch.float32"

  # The CLI, as input_benchmark --peer runs it: in its own process, with a DataLoader worker.
  command = [sys.executable, "-m", "vidtx.tools.torch_peer", f"--videos={videos}", "--json"]
  command += ["--num_frames=4", "--crop_size=16", "--batch_size=2", "--batches=2", "--warmup=1"]
  command += ["--workers=1"]
  done = subprocess.run(
    command, capture_output=True, text=True, timeout=300, env=shared_env(), check=True
  )
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["frames"] == 2 * 2 * 4 and result["batches"] == 2
  assert result["cpu_seconds"] > 0
  np.testing.assert_allclose(result["frames_per_cpu_sec"], 16 / result["cpu_seconds"])


def shared_env() -> dict:
  return dict(
    os.environ, PYTHONPATH=os.pathsep.join([shared.REPO, os.environ.get("PYTHONPATH", "")])
  )


def test_a_slow_store_keeps_many_reads_in_flight(tmp_path, monkeypatch):
  from vidtx.data import frame_table  # noqa: PLC0415

  dc = reader_config.DatasetConfig.from_config(_tiny_dataset(str(tmp_path)))
  # install() wraps the read for the whole process: put the real one back after the test.
  monkeypatch.setattr(frame_table.FrameTable, "_read", frame_table.FrameTable._read)
  probe = input_benchmark.ReadProbe(latency_s=0.02)
  probe.install()
  monkeypatch.setattr(input_benchmark, "_PROBE", probe)
  row = input_benchmark.measure(dc, "train", batch_size=2, warmup=1, batches=3)
  # The timed 3 batches: 6 clips of num_frames reads each (and contexts, some read during the
  # warm-up, as are frames the prefetch reads ahead), 20 ms each.
  assert row["reads"] >= 3 * int(dc.num_frames)
  assert row["most_in_flight"] > int(dc.num_frames)  # several clips' frames at once
  assert row["mean_in_flight"] > 2
