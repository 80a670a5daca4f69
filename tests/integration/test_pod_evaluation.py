"""Evaluation on 2 processes x 2 CPU devices where a process has little or no data: a 1-video
split, a split with fewer files than processes, and a split whose second file holds no record.
Each evaluation ends (no process waits in a collective for another) with the metrics and
per-video results of 1 process x 4 devices on the same checkpoint; a bad record on one process
stops both. And the per-process counts the steps are agreed from."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import shared
import tensorflow as tf
from shared import REPO
from test_pod_training import _env, _free_port, exact_config

from vidtx import data as vidtx_data
from vidtx.data import pipeline

THIS = os.path.abspath(__file__)
TIMEOUT_S = 240
# The splits, as {file name: indices of the validation records it holds}.
SPLITS = {
  "one_video": {"one_video.tfrecord-00000-of-00001": [0]},
  # Fewer files than processes: both read the file, process 0 keeps records 0, 2, process 1 one.
  "few_files": {"few_files.tfrecord-00000-of-00001": [0, 1, 2]},
  # Process 1's file is empty: process 0 has 5 videos (2 local batches of 4), process 1 none.
  "empty_file": {
    "empty_file.tfrecord-00000-of-00002": [3, 4, 5, 6, 7],
    "empty_file.tfrecord-00001-of-00002": [],
  },
}
# Good videos for process 0; process 1's file (written in `run`) holds a record that is not a
# SequenceExample.
BAD_RECORD = {"bad_record.tfrecord-00000-of-00002": [0, 1]}
TABLES = {
  "train": "train.tfrecord@1",
  "validation": "one_video.tfrecord@1",  # train.py's final evaluation: the cheapest split.
  "one_video": "one_video.tfrecord@1",
  "few_files": "few_files.tfrecord@1",
  "empty_file": "empty_file.tfrecord@2",
  "bad_record": "bad_record.tfrecord@2",
}
# Depend on the wall clock, or on which process counted what.
UNEQUAL = {"eval_seconds"}


def config(data_dir: str):
  """exact_config of the pod tests on the DMVR files of `data_dir` with the splits above."""
  config = exact_config(data_dir, steps=1)
  config.dataset_name = "dmvr"
  config.dataset_configs.tables = dict(TABLES)
  config.dataset_configs.examples_per_subset = {"train": 32}
  return config


def _config_file(tmp_path, data_dir: str) -> str:
  path = tmp_path / "config.py"
  path.write_text(
    "import importlib.util, sys\n"
    # This module imports its neighbour test_pod_training.
    f"sys.path.insert(0, {os.path.dirname(THIS)!r})\n"
    f"spec = importlib.util.spec_from_file_location('pod_eval', {THIS!r})\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "def get_config(arg=None):\n"
    f"  return module.config({data_dir!r})\n"
  )
  return str(path)


def _run(command: list[str], devices: int) -> str:
  done = subprocess.run(
    command, capture_output=True, text=True, env=_env(devices), cwd=REPO, timeout=TIMEOUT_S
  )
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  return done.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A 1-step train.py run (1 process x 4 devices) on DMVR files holding the splits above, and
  the reference evaluation of each split by 1 process x 4 devices: (config file, workdir,
  {split: (results, per-video rows)})."""
  from vidtx import data as vidtx_data

  root = tmp_path_factory.mktemp("pod_eval")
  synthetic = str(root / "synthetic")
  vidtx_data.prepare_dataset(exact_config(synthetic, 1))
  data_dir = root / "data"
  data_dir.mkdir()
  train = "train.tfrecord-00000-of-00001"
  os.symlink(os.path.join(synthetic, train), data_dir / train)
  videos = list(
    tf.data.TFRecordDataset(
      os.path.join(synthetic, "validation.tfrecord-00000-of-00001")
    ).as_numpy_iterator()
  )
  for files in [*SPLITS.values(), BAD_RECORD]:
    for name, indices in files.items():
      with tf.io.TFRecordWriter(str(data_dir / name)) as writer:
        for i in indices:
          writer.write(videos[i])
  with tf.io.TFRecordWriter(str(data_dir / "bad_record.tfrecord-00001-of-00002")) as writer:
    writer.write(b"not a SequenceExample")
  config_file = _config_file(root, str(data_dir))
  workdir = str(root / "run")
  _run([sys.executable, "train.py", f"--config={config_file}", f"--workdir={workdir}"], 4)
  # The reference: eval.py itself, the command the 2 processes run, on 1 process x 4 devices.
  references = {}
  for split in SPLITS:
    _run(
      [
        sys.executable,
        "eval.py",
        f"--config={config_file}",
        f"--workdir={workdir}",
        f"--split={split}",
      ],
      4,
    )
    references[split] = _results(workdir, split, process_count=1)
  return config_file, workdir, references


def _assert_close(value, expected, what: str) -> None:
  """Numbers (and lists of them) to float precision, anything else (ids, names) exactly."""
  try:
    expected_numbers = np.asarray(expected, dtype=np.float64)
  except (TypeError, ValueError):
    assert value == expected, what
    return
  np.testing.assert_allclose(value, expected_numbers, rtol=1e-5, atol=1e-6, err_msg=what)


def _results(workdir: str, split: str, process_count: int) -> tuple[dict, list[dict]]:
  """(eval_<split>.json, the per-video rows of every process sorted by video id)."""
  with open(os.path.join(workdir, f"eval_{split}.json")) as f:
    results = json.load(f)
  stem = os.path.join(workdir, f"eval_{split}_videos")
  paths = (
    [f"{stem}.jsonl"]
    if process_count == 1
    else [f"{stem}.process{i}.jsonl" for i in range(process_count)]
  )
  rows = []
  for path in paths:
    with open(path) as f:
      rows += [json.loads(line) for line in f if line.strip()]
  return results, sorted(rows, key=lambda row: row["id"])


def _two_processes(config_file: str, workdir: str, split: str) -> list[tuple[int, str, str]]:
  """eval.py on 2 processes x 2 devices: (exit code, stdout, stderr) of each."""
  port = _free_port()
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "eval.py",
        f"--config={config_file}",
        f"--workdir={workdir}",
        f"--split={split}",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=_env(2),
      cwd=REPO,
    )
    for i in range(2)
  ]
  try:
    outs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
  finally:
    for p in procs:
      p.kill()
  return [(p.returncode, *out) for p, out in zip(procs, outs, strict=True)]


@pytest.mark.slow
@pytest.mark.tier2
@pytest.mark.parametrize("split", sorted(SPLITS))
def test_two_processes_evaluate_like_one_when_a_process_has_few_or_no_videos(run, split):
  config_file, workdir, references = run
  for code, stdout, stderr in _two_processes(config_file, workdir, split):
    assert code == 0, stdout[-2000:] + stderr[-3000:]
  results, rows = _results(workdir, split, process_count=2)
  expected_results, expected_rows = references[split]
  videos = sum(len(indices) for indices in SPLITS[split].values())
  assert results["num_videos"] == expected_results["num_videos"] == videos
  assert results.keys() == expected_results.keys()
  for key in expected_results.keys() - UNEQUAL:
    _assert_close(results[key], expected_results[key], key)
  assert [row["id"] for row in rows] == [row["id"] for row in expected_rows]
  for row, expected in zip(rows, expected_rows, strict=True):
    assert row.keys() == expected.keys()
    for key in expected:
      _assert_close(row[key], expected[key], f"{row['id']}: {key}")


@pytest.mark.slow
@pytest.mark.tier2
def test_a_bad_record_on_one_process_stops_both(run):
  """Process 1's only record is not a SequenceExample: it names the record, process 0 says
  another process failed, and both end (neither waits in the next step for the other)."""
  config_file, workdir, _ = run
  (code0, _, stderr0), (code1, _, stderr1) = _two_processes(config_file, workdir, "bad_record")
  assert code0 != 0 and code1 != 0
  assert "bad_record.tfrecord-00001-of-00002, record 0" in stderr1, stderr1[-3000:]
  assert "another process could not read its share" in stderr0, stderr0[-3000:]


@pytest.mark.parametrize("sampling,clips", [("stride", 2), ("whole_video", 1)])
def test_counted_elements_are_those_the_reader_yields(tmp_path, sampling, clips):
  """count_eval_elements (record headers; whole videos: their lengths) equals the unmasked
  elements of build_eval_dataset, for each process's share: 10 videos in one file, 2 processes;
  whole videos of 10 frames in clips spanning 8 are 2 elements of 1 clip each."""
  dc = vidtx_data.prepare_dataset(shared.tiny_config(str(tmp_path)))
  dc = dataclasses.replace(dc, eval_sampling=sampling, num_test_clips=clips)
  counts = []
  for process in range(2):
    shares = dict(process_index=process, process_count=2)
    ds = pipeline.build_eval_dataset(dc, "validation", batch_size=3, **shares)
    yielded = sum(int(batch["batch_mask"].sum()) for batch in ds.as_numpy_iterator())
    counted = pipeline.count_eval_elements(dc, "validation", **shares)
    assert counted == yielded
    counts.append(counted)
  assert counts == ([5, 5] if sampling == "stride" else [10, 10])


def test_counted_tfds_shares_are_those_tfds_reads(tmp_path):
  """5 validation videos over 3 processes (tfds.even_splits: 2, 2, 1), from metadata only."""
  from vidtx.data import reader_config, records, tfds_data

  builder = tfds_data.build_synthetic(
    str(tmp_path), "motion", train_examples=3, validation_examples=5, video_length=4, video_size=8
  )
  name = f"vidtx_synthetic/{builder.builder_config.name}"
  fields = dict(dataset_name=f"tfds:{name}", tfds_data_dir=str(tmp_path))
  geometry = dict(num_classes=4, num_frames=1, stride=1, min_resize=1, crop_size=1)
  dc = reader_config.DatasetConfig(base_dir="", tables={"val": "validation"}, **geometry, **fields)
  counts = []
  for process in range(3):
    shares = dict(process_index=process, process_count=3)
    read = tfds_data.records(name, fields, "validation", shuffle_seed=None, **shares)
    counts.append(records.count_share_records(dc, "val", **shares))
    assert counts[-1] == len(list(read.as_numpy_iterator()))
  assert counts == [2, 2, 1]
