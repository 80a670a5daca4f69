"""Pod-scale training: the sharding rule table, sharded and multi-process training equal to one
device, gradient accumulation, EMA, the best checkpoint, the NaN guard, preemption and exact
resume after kill -9."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import shared
from shared import REPO

from vidtx import distributed, models, ownership, run_checkpoints, sharding, trainer
from vidtx import train_state as state_lib

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
# The rule table and the mesh.
# ----------------------------------------------------------------------------------------

MESH_222 = types.SimpleNamespace(shape={"data": 2, "fsdp": 2, "model": 2})


@pytest.mark.parametrize(
  "name,shape,expected",
  [
    ("params/encoder/encoderblock_0/attention/query/kernel", (64, 4, 16), ("fsdp", "model", None)),
    ("params/encoder/encoderblock_0/attention/value/bias", (4, 16), ("model", None)),
    ("params/encoder/encoderblock_0/attention/out/kernel", (4, 16, 64), ("model", None, "fsdp")),
    ("params/encoder/encoderblock_0/mlp/Dense_0/kernel", (64, 256), ("fsdp", "model")),
    ("params/encoder/encoderblock_0/mlp/Dense_0/bias", (256,), ("model",)),
    ("params/encoder/encoderblock_0/mlp/Dense_1/kernel", (256, 64), ("model", "fsdp")),
    # Optimizer state follows its parameter.
    ("opt_state/1/trace/encoder/encoderblock_0/mlp/Dense_1/kernel", (256, 64), ("model", "fsdp")),
    # Scanned layers: the leading layer axis stays whole.
    (
      "params/encoder/encoderblocks/attention/query/kernel",
      (12, 64, 4, 16),
      (None, "fsdp", "model", None),
    ),
    # 3 heads do not split 2 ways: replicated along 'model', still FSDP.
    ("params/encoder/encoderblock_0/attention/key/kernel", (48, 3, 16), ("fsdp", None, None)),
    # Large other parameters: FSDP on their largest divisible axis; small ones replicated.
    ("params/pos_embedding", (197, 768), (None, "fsdp")),
    ("params/encoder/encoder_norm/scale", (768,), ()),
    ("step", (), ()),
  ],
)
def test_rule_table(name, shape, expected):
  spec = sharding.partition_spec(name, shape, MESH_222)
  assert tuple(spec) == expected


def test_no_fsdp_or_model_axis_means_replicated():
  mesh = types.SimpleNamespace(shape={"data": 8, "fsdp": 1, "model": 1})
  assert (
    tuple(
      sharding.partition_spec(
        "params/encoder/encoderblock_0/attention/query/kernel", (64, 4, 16), mesh
      )
    )
    == (None,) * 3
  )
  assert tuple(sharding.partition_spec("params/pos_embedding", (197, 768), mesh)) == ()


def test_mesh_shape_from_config():
  assert sharding.mesh_shape(None, 8) == (8, 1, 1)
  assert sharding.mesh_shape({"fsdp": 2, "model": 2}, 8) == (2, 2, 2)
  assert sharding.mesh_shape({"data": 2, "fsdp": -1, "model": 2}, 16) == (2, 4, 2)
  with pytest.raises(ValueError, match="config.mesh.*unknown axis"):
    sharding.mesh_shape({"tensor": 2}, 8)
  with pytest.raises(ValueError, match="not divisible"):
    sharding.mesh_shape({"model": 3}, 8)
  with pytest.raises(ValueError, match="there are 8 devices"):
    sharding.mesh_shape({"data": 2, "fsdp": 2, "model": 1}, 8)


def test_distributed_flags_go_together(monkeypatch):
  with pytest.raises(ValueError, match="go together"):
    distributed.initialize("127.0.0.1:1234", None, None)
  with pytest.raises(ValueError, match="process_id=2"):
    distributed.initialize("127.0.0.1:1234", 2, 2)
  for var in (
    "JAX_COORDINATOR_ADDRESS",
    "SLURM_NTASKS",
    "SLURM_STEP_NUM_TASKS",
    "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES",
    "MEGASCALE_COORDINATOR_ADDRESS",
  ):
    monkeypatch.delenv(var, raising=False)
  assert distributed._cluster_environment() is None
  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert distributed._cluster_environment() is None  # One task: a single process.
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert distributed._cluster_environment() == "SLURM"
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.1,10.0.0.2")
  assert distributed._cluster_environment() == "SLURM"  # The first match wins.


def test_a_url_workdir_other_than_gcs_is_refused_before_anything_is_written(tmp_path, monkeypatch):
  # os.makedirs("s3://b/run") would silently make a local ./s3:/b/run. gs:// is kept in the
  # bucket (tests/training/test_gcs_workdir.py).
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError, match=r"--workdir=s3://b/r: a URL.*gs://BUCKET"):
    run_checkpoints.checkpoint_manager("s3://b/r", read_only=True)
  assert list(tmp_path.iterdir()) == []
  run_checkpoints.check_workdir("gs://bucket/run")
  run_checkpoints.check_workdir(str(tmp_path / "run"))  # A path is fine.


def test_stop_request_catches_sigint_and_restores_the_handler():
  before = signal.getsignal(signal.SIGINT)
  stop = distributed.StopRequest()
  assert not stop.requested(1)
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(0.01)
  assert stop.requested(2) and stop.reason == "SIGINT"
  stop.restore()
  assert signal.getsignal(signal.SIGINT) is before


# ----------------------------------------------------------------------------------------
# The step: gradient accumulation and EMA (one device, in process).
# ----------------------------------------------------------------------------------------


def _tiny_state(ema: bool):
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  model = models.build(
    "vivit",
    dict(
      variant="Ti/8x2",
      hidden_size=32,
      num_heads=2,
      mlp_dim=64,
      num_layers=1,
      attention="spatio_temporal",
    ),
    3,
  )
  tx = optax.sgd(0.5, momentum=0.9)
  state, abstract = state_lib.create_train_state(
    model, tx, (8, 4, 16, 16, 3), mesh, jax.random.key(0), ema=ema
  )
  return model, tx, mesh, state, abstract


def test_gradient_accumulation_equals_the_whole_batch():
  batch = {
    "inputs": jax.random.normal(jax.random.key(1), (8, 4, 16, 16, 3)),
    "label": jnp.arange(8) % 3,
  }
  results = {}
  for k in (1, 2, 4):
    model, tx, mesh, state, abstract = _tiny_state(ema=False)
    step = state_lib.make_train_step(
      model,
      tx,
      optax.constant_schedule(0.5),
      abstract,
      mesh,
      num_classes=3,
      label_smoothing=0.1,
      grad_accum_steps=k,
    )
    for _ in range(2):
      state, step_metrics = step(state, batch)
    results[k] = jax.device_get((state.params, step_metrics))
  for k in (2, 4):
    np.testing.assert_allclose(results[k][1]["loss"], results[1][1]["loss"], rtol=1e-5)
    np.testing.assert_allclose(results[k][1]["grad_norm"], results[1][1]["grad_norm"], rtol=1e-4)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
      results[k][0],
      results[1][0],
    )
  with pytest.raises(ValueError, match="grad_accum_steps=0"):
    state_lib.make_train_step(
      model, tx, optax.constant_schedule(0.5), abstract, mesh, num_classes=3, grad_accum_steps=0
    )


@pytest.mark.tier2
def test_bfloat16_computes_in_bf16_and_keeps_state_and_loss_in_float32():
  batch = {
    "inputs": jax.random.normal(jax.random.key(1), (8, 4, 16, 16, 3)),
    "label": jnp.arange(8) % 3,
  }
  losses = {}
  for dtype in ("float32", "bfloat16"):
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    model = models.build(
      "vivit",
      dict(
        variant="Ti/8x2",
        hidden_size=32,
        num_heads=2,
        mlp_dim=64,
        num_layers=1,
        attention="spatio_temporal",
        dtype=dtype,
      ),
      3,
    )
    tx = optax.sgd(0.5, momentum=0.9)
    state, abstract = state_lib.create_train_state(
      model, tx, (8, 4, 16, 16, 3), mesh, jax.random.key(0)
    )
    step = state_lib.make_train_step(
      model, tx, optax.constant_schedule(0.5), abstract, mesh, num_classes=3
    )
    if dtype == "bfloat16":
      # The matmuls run in bf16: the compiled step's dot products take bf16 operands.
      hlo = step.lower(state, batch).as_text()
      assert "bf16" in hlo and "dot_general" in hlo
    state, metrics = step(state, batch)
    for leaf in jax.tree.leaves((state.params, state.opt_state)):
      if jnp.issubdtype(leaf.dtype, jnp.floating):
        assert leaf.dtype == jnp.float32, dtype
    assert metrics["loss"].dtype == jnp.float32
    losses[dtype] = float(metrics["loss"])
  # Same parameters, bf16 rounding only.
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=2e-2)


def test_ema_follows_the_formula_and_is_what_evaluation_uses():
  model, tx, mesh, state, abstract = _tiny_state(ema=True)
  initial = jax.device_get(state.params)
  step = state_lib.make_train_step(
    model, tx, optax.constant_schedule(0.5), abstract, mesh, num_classes=3, ema_decay=0.75
  )
  batch = {
    "inputs": jax.random.normal(jax.random.key(1), (8, 4, 16, 16, 3)),
    "label": jnp.arange(8) % 3,
  }
  state, _ = step(state, batch)
  params, ema = jax.device_get((state.params, state.ema_params))
  jax.tree.map(
    lambda e, p0, p1: np.testing.assert_allclose(e, 0.75 * p0 + 0.25 * p1, rtol=1e-5, atol=1e-7),
    ema,
    initial,
    params,
  )
  assert state_lib.eval_params(state) is state.ema_params
  assert not np.allclose(params["head"]["kernel"], ema["head"]["kernel"])


def test_checkpoints_keep_the_last_n_and_the_best(tmp_path):
  _, _, _, state, _ = _tiny_state(ema=False)
  manager = run_checkpoints.checkpoint_manager(str(tmp_path), max_to_keep=1, best_metric="top1")
  for step, top1 in [(1, 0.5), (2, 0.9), (3, 0.1), (4, None), (5, 0.2)]:
    run_checkpoints.save(
      manager,
      step,
      state,
      {"positions": [[0, step]], "process_count": 1},
      metrics=None if top1 is None else {"top1": top1},
    )
  manager.wait_until_finished()
  assert sorted(manager.all_steps()) == [2, 5]  # The best (0.9) and the newest.
  assert run_checkpoints.restore_data_state(manager, 2)["positions"] == [[0, 2]]
  manager.close()
  # A resumed run (a new manager) still knows step 2 is the best: its next saves keep it.
  resumed = run_checkpoints.checkpoint_manager(str(tmp_path), max_to_keep=1, best_metric="top1")
  for step in (6, 7):
    run_checkpoints.save(resumed, step, state, {"positions": [[0, step]], "process_count": 1})
  resumed.wait_until_finished()
  assert sorted(resumed.all_steps()) == [2, 7]
  resumed.close()


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
  assert data_state == {"positions": [[0, 12], [0, 12]], "process_count": 2}


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
