"""Pod-scale training, whole runs: sharded and multi-process training equal to one device, the
NaN guard, the profiler, preemption and exact resume after kill -9. The pieces these runs are
made of are tested at their modules' paths (tests/test_sharding.py, test_train_state.py,
test_run_checkpoints.py, test_distributed.py)."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import shared
from shared import REPO

from vidtx import ownership, trainer

jax.config.update("jax_numpy_rank_promotion", "raise")

THIS = os.path.abspath(__file__)
# Fields that depend on wall-clock time; everything else in metrics.jsonl must reproduce.
TIMING = {"steps_per_sec", "clips_per_sec", "val_eval_seconds"}


def exact_config(data_dir: str, steps: int):
  """A tiny run whose global batches do not depend on how the data is split over processes:
  one shard per split (processes take every n-th record), no shuffling, clips covering whole
  videos, full-frame crops, no flips and no stochastic depth."""
  config = shared.tiny_config(data_dir, steps=steps)
  ds = config.dataset_configs
  ds.tables = {"train": "train.tfrecord@1", "validation": "validation.tfrecord@1"}
  ds.examples_per_subset = {"train": 32, "validation": 8}
  ds.video_length, ds.video_size = 9, 16  # A clip of 5 frames at stride 2 spans all 9.
  ds.num_frames, ds.stride, ds.min_resize, ds.crop_size = 5, 2, 16, 16
  ds.shuffle_buffer_size = 1
  # The per-process stream (global order is the default on these shards, and makes any split
  # over processes alike: tests/integration/test_global_stream.py).
  ds.global_order = False
  config.batch_size = config.eval_batch_size = 8
  return config


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _deterministic(lines):
  return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _config_file(tmp_path, data_dir: str) -> str:
  """A config file train.py can load: exact_config of this module, steps from the argument."""
  path = tmp_path / "exact_config.py"
  path.write_text(
    "import importlib.util\n"
    f"spec = importlib.util.spec_from_file_location('pod', {THIS!r})\n"
    "pod = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(pod)\n"
    "def get_config(arg=None):\n"
    f"  return pod.exact_config({data_dir!r}, steps=int(arg or 1))\n"
  )
  return str(path)


def _env(devices: int) -> dict[str, str]:
  return dict(
    os.environ, JAX_NUM_CPU_DEVICES=str(devices), PYTHONPATH=os.pathsep.join([REPO, shared.TESTS])
  )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The exact config's data, generated once before any subprocess reads it."""
  from vidtx import data as vidtx_data

  directory = str(tmp_path_factory.mktemp("data"))
  vidtx_data.prepare_dataset(exact_config(directory, 1))
  return directory


# ----------------------------------------------------------------------------------------
# Whole runs.
# ----------------------------------------------------------------------------------------


def test_nan_guard_names_the_step_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
  config = exact_config(data_dir, steps=4)
  config.lr_configs.base_learning_rate = 1e30
  config.lr_configs.warmup_steps = 0
  config.max_grad_norm = 0.0
  config.checkpoint_every_steps = 1
  config.log_every_steps = 4
  workdir = str(tmp_path / "run")
  with pytest.raises(FloatingPointError, match=r"at step 2: .*last good checkpoint is 1"):
    trainer.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1"]
  params = shared.restore_params(workdir, 1)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


def test_profile_steps_writes_a_trace_and_changes_no_metric(data_dir, tmp_path, capsys):
  lines = {}
  for profile_steps in (0, 2):
    config = exact_config(data_dir, steps=4)
    config.profile_steps = profile_steps
    config.checkpoint_every_steps = 4
    workdir = str(tmp_path / f"profile{profile_steps}")
    trainer.train_and_evaluate(config, workdir)
    lines[profile_steps] = _deterministic(_read_jsonl(os.path.join(workdir, "metrics.jsonl")))
  profile = str(tmp_path / "profile2" / "profile")
  assert glob.glob(os.path.join(profile, "**", "*.xplane.pb"), recursive=True)
  assert glob.glob(os.path.join(profile, "**", "perfetto_trace.json.gz"), recursive=True)
  assert f"Profile of steps 2-3 written to {profile}: " in capsys.readouterr().out
  assert not os.path.exists(tmp_path / "profile0" / "profile")  # Off by default.
  assert "profile" in ownership.written_names(str(tmp_path / "profile2"))  # vidtx's to remove.
  assert lines[2] == lines[0] and len(lines[0]) == 5  # 4 logged steps and the evaluation.


@pytest.mark.slow
@pytest.mark.tier2
def test_sharded_meshes_and_accumulation_train_like_data_parallel(data_dir, tmp_path):
  """8 fake devices: data=8; data x fsdp x model = 2x2x2 (parameters split, heads split);
  data=2, fsdp=4 with 2 accumulation steps. Same parameters after 2 steps."""
  runs = {
    "dp": ({"data": 8}, 1),
    "3d": ({"data": 2, "fsdp": 2, "model": 2}, 1),
    "accum": ({"data": 2, "fsdp": 4}, 2),
  }
  script = f"""
import importlib.util, jax
spec = importlib.util.spec_from_file_location("pod", {THIS!r})
pod = importlib.util.module_from_spec(spec); spec.loader.exec_module(pod)
from vidtx import sharding, trainer, train_state as state_lib
assert jax.device_count() == 8
for name, (mesh_config, accum) in {runs!r}.items():
  config = pod.exact_config({data_dir!r}, steps=2)
  config.batch_size = 16
  config.mesh = mesh_config
  config.grad_accum_steps = accum
  trainer.train_and_evaluate(config, {str(tmp_path)!r} + "/" + name)
  mesh = sharding.make_mesh(mesh_config)
  _, abstract = state_lib.abstract_state_from_config(config, config.dataset_configs, mesh)
  kernel = abstract.params["encoderblock_0"]["attention_temporal"]["query"]["kernel"]
  print("SPEC", name, tuple(kernel.sharding.spec), flush=True)
"""
  out = subprocess.run(
    [sys.executable, "-c", script], capture_output=True, text=True, env=_env(8), cwd=REPO
  )
  assert out.returncode == 0, out.stderr[-4000:]
  assert "SPEC 3d ('fsdp', 'model', None)" in out.stdout
  assert "SPEC dp (None, None, None)" in out.stdout
  params = {name: shared.restore_params(str(tmp_path / name), 2) for name in runs}
  for name in ("3d", "accum"):
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
      params[name],
      params["dp"],
    )
  losses = {
    name: [
      line["loss"] for line in _read_jsonl(str(tmp_path / name / "metrics.jsonl")) if "loss" in line
    ]
    for name in runs
  }
  np.testing.assert_allclose(losses["3d"], losses["dp"], rtol=1e-5)
  np.testing.assert_allclose(losses["accum"], losses["dp"], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.tier2
def test_two_processes_train_like_one(data_dir, tmp_path):
  """train.py launched as 2 processes x 2 CPU devices (--coordinator_address ...) gives the
  losses, accuracies and evaluation of 1 process x 4 devices with the same global batch."""
  config_file = _config_file(tmp_path, data_dir)
  command = [sys.executable, "train.py", f"--config={config_file}:3"]
  single = subprocess.run(
    command + [f"--workdir={tmp_path / 'one'}"],
    capture_output=True,
    text=True,
    env=_env(4),
    cwd=REPO,
  )
  assert single.returncode == 0, single.stderr[-3000:]
  port = _free_port()
  procs = [
    subprocess.Popen(
      command
      + [
        f"--workdir={tmp_path / 'two'}",
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
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, stderr) in zip(procs, outs, strict=True):
    assert p.returncode == 0, stderr[-3000:]
  assert "Process 0 of 2: 2 local device(s), 4 in all." in outs[0][0]
  one = _deterministic(_read_jsonl(str(tmp_path / "one" / "metrics.jsonl")))
  two = _deterministic(_read_jsonl(str(tmp_path / "two" / "metrics.jsonl")))
  assert [line["step"] for line in two] == [line["step"] for line in one] == [1, 2, 3, 3]
  for a, b in zip(one, two, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-7, err_msg=key)
  with open(tmp_path / "two" / "checkpoints" / "3" / "data" / "metadata") as f:
    data_state = json.load(f)
  # Each process read every other record of the one shard: 12 each after 3 steps of 8 clips.
  assert data_state == {
    "stream": "per_process",
    "positions": [[0, 12], [0, 12]],
    "process_count": 2,
  }


def _wait_for(predicate, proc, what: str, timeout: float = 240.0) -> None:
  deadline = time.time() + timeout
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(
        f"train.py ended ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}"
      )
    if time.time() > deadline:
      proc.kill()
      raise AssertionError(f"Timed out waiting for {what}.")
    time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.tier2
def test_kill_9_and_sigterm_then_resume_reproduce_the_uninterrupted_run(data_dir, tmp_path):
  config_file = _config_file(tmp_path, data_dir)
  steps = 12
  reference = exact_config(data_dir, steps)
  reference.checkpoint_every_steps = 2
  reference.eval_every_steps = 6
  overrides = ["--config.checkpoint_every_steps=2", "--config.eval_every_steps=6"]
  trainer.train_and_evaluate(reference, str(tmp_path / "reference"))

  workdir = tmp_path / "interrupted"
  command = [
    sys.executable,
    "train.py",
    f"--config={config_file}:{steps}",
    f"--workdir={workdir}",
  ] + overrides
  checkpoints = workdir / "checkpoints"

  # 1. kill -9 as soon as checkpoint 2 is complete (orbax renames it into place when done).
  proc = subprocess.Popen(
    command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(1), cwd=REPO
  )
  _wait_for(lambda: (checkpoints / "2").is_dir(), proc, "checkpoint 2")
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL

  # 2. Resume; SIGTERM once it trains again: it saves where it is and exits cleanly.
  proc = subprocess.Popen(
    command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(1), cwd=REPO
  )
  lines = []
  while not lines or not lines[-1].startswith("step "):  # The first resumed progress line.
    line = proc.stdout.readline()
    assert line, f"train.py ended before training again: {proc.stderr.read()[-3000:]}"
    lines.append(line)
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=240)
  assert proc.returncode == 0, stderr[-3000:]
  stopped = [line for line in stdout.splitlines() if line.startswith("Stopped by SIGTERM")]
  assert stopped, stdout[-3000:]
  assert any("resuming at step" in line for line in lines)

  # 3. Resume to the end.
  final = subprocess.run(command, capture_output=True, text=True, env=_env(1), cwd=REPO)
  assert final.returncode == 0, final.stderr[-3000:]

  expected = _deterministic(_read_jsonl(str(tmp_path / "reference" / "metrics.jsonl")))
  got = _deterministic(_read_jsonl(str(workdir / "metrics.jsonl")))
  assert got == expected
  jax.tree.map(
    np.testing.assert_array_equal,
    shared.restore_params(str(workdir), steps),
    shared.restore_params(str(tmp_path / "reference"), steps),
  )
