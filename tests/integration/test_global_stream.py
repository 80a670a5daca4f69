"""dataset_configs.global_order, whole runs: 1 process x 4 devices, 2 processes x 2 devices and
4 processes x 1 device train on the same stream (scale jitter, crops, colour jitter, mixup) with
the same losses and evaluate alike (metrics and per-video predictions), and a run killed with
kill -9 resumes on another topology with the uninterrupted run's losses. The global stream is
the default (global_order=None, auto) on the synthetic dataset's shards, which have frame
tables."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import shared
from shared import REPO

THIS = os.path.abspath(__file__)
STEPS = 6
# Fields that depend on wall-clock time; everything else in metrics.jsonl must reproduce.
TIMING = {"steps_per_sec", "clips_per_sec", "val_eval_seconds"}


def global_config(data_dir: str, steps: int = STEPS):
  """The tiny synthetic run (2 training shards of 24 videos) in global order (the default), with
  the augmentation on: scale jitter and random crops of 16 from 20, colour jitter, mixup (a flip
  would swap the synthetic task's classes)."""
  config = shared.tiny_config(data_dir, steps=steps)
  ds = config.dataset_configs
  assert ds.global_order is None  # auto: global on shards with frame tables
  ds.augmentation_params = dict(
    do_jitter_scale=True, scale_min_factor=0.9, scale_max_factor=1.1, do_color_augment=True
  )
  config.mixup.alpha = 0.3
  config.batch_size = 8
  config.checkpoint_every_steps = 2
  config.eval_every_steps = steps
  return config


def _config_file(tmp_path, data_dir: str) -> str:
  path = tmp_path / "global_config.py"
  path.write_text(
    "import importlib.util\n"
    f"spec = importlib.util.spec_from_file_location('global_stream', {THIS!r})\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "def get_config(arg=None):\n"
    f"  return module.global_config({data_dir!r})\n"
  )
  return str(path)


def _env(devices: int) -> dict[str, str]:
  return dict(
    os.environ, JAX_NUM_CPU_DEVICES=str(devices), PYTHONPATH=os.pathsep.join([REPO, shared.TESTS])
  )


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(config_file: str, workdir, processes: int, devices: int) -> list[subprocess.Popen]:
  """train.py as `processes` processes of `devices` CPU devices each."""
  command = [sys.executable, "train.py", f"--config={config_file}", f"--workdir={workdir}"]
  if processes > 1:
    port = _free_port()
    command += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}"]
  return [
    subprocess.Popen(
      command + ([f"--process_id={i}"] if processes > 1 else []),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=_env(devices),
      cwd=REPO,
    )
    for i in range(processes)
  ]


def _finish(procs: list[subprocess.Popen]) -> None:
  try:
    outs = [p.communicate(timeout=400) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, stderr) in zip(procs, outs, strict=True):
    assert p.returncode == 0, stderr[-3000:]


def _metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f if line.strip()]
  return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


def _videos(workdir, processes: int) -> list[dict]:
  """The final evaluation's per-video rows of every process, sorted by video id."""
  names = (
    ["eval_validation_videos.jsonl"]
    if processes == 1
    else [f"eval_validation_videos.process{i}.jsonl" for i in range(processes)]
  )
  rows = []
  for name in names:
    with open(os.path.join(workdir, name)) as f:
      rows += [json.loads(line) for line in f if line.strip()]
  return sorted(rows, key=lambda row: row["id"])


def _assert_same_videos(got: list[dict], want: list[dict]) -> None:
  assert [row["id"] for row in got] == [row["id"] for row in want]
  for a, b in zip(got, want, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      try:  # Scores and probabilities to float precision; ids and class names exactly.
        expected = np.asarray(b[key], dtype=np.float64)
      except (TypeError, ValueError):
        assert a[key] == b[key], key
        continue
      np.testing.assert_allclose(a[key], expected, rtol=1e-5, atol=1e-6, err_msg=key)


def _assert_same_run(got: list[dict], want: list[dict]) -> None:
  assert [line["step"] for line in got] == [line["step"] for line in want]
  for a, b in zip(got, want, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-7, err_msg=key)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The tiny config's synthetic data, generated once before any subprocess reads it."""
  from vidtx import data as vidtx_data

  directory = str(tmp_path_factory.mktemp("data"))
  vidtx_data.prepare_dataset(global_config(directory))
  return directory


@pytest.mark.slow
@pytest.mark.tier2
def test_one_two_four_processes_train_alike_and_resume_on_each_other(data_dir, tmp_path):
  config_file = _config_file(tmp_path, data_dir)
  _finish(_launch(config_file, tmp_path / "one", processes=1, devices=4))
  _finish(_launch(config_file, tmp_path / "two", processes=2, devices=2))
  _finish(_launch(config_file, tmp_path / "four", processes=4, devices=1))
  one = _metrics(tmp_path / "one")
  # 6 steps and the evaluation (its metrics are in the last line: compared too).
  assert [line["step"] for line in one] == [1, 2, 3, 4, 5, 6, 6]
  assert "val_top1" in one[-1]
  videos = _videos(tmp_path / "one", 1)
  assert len(videos) == 10
  for name, processes in (("two", 2), ("four", 4)):
    _assert_same_run(_metrics(tmp_path / name), one)
    _assert_same_videos(_videos(tmp_path / name, processes), videos)
    with open(tmp_path / name / "checkpoints" / "6" / "data" / "metadata") as f:
      assert json.load(f) == {
        "stream": "global",
        "global_position": STEPS * 8,
        "process_count": processes,
      }

  # kill -9 a run once checkpoint 2 is complete and resume it on the other topology: 2 x 2
  # devices -> 1 x 4, and the reverse.
  for killed, resumed in (((2, 2), (1, 4)), ((1, 4), (2, 2))):
    workdir = tmp_path / f"moved{killed[0]}to{resumed[0]}"
    procs = _launch(config_file, workdir, *killed)
    deadline = time.time() + 300
    while not (workdir / "checkpoints" / "2").is_dir():
      assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
      assert time.time() < deadline, "timed out waiting for checkpoint 2"
      time.sleep(0.01)
    for p in procs:
      p.send_signal(signal.SIGKILL)
      p.wait()
    _finish(_launch(config_file, workdir, *resumed))
    # The killed run may have logged steps after 2 before it died: the resumed run logs from 3.
    _assert_same_run([line for line in _metrics(workdir) if line["step"] > 2], one[2:])
