"""Pretrained starts and resumes on many hosts: train.py with init_from under FSDP and tensor
parallelism on 2 processes x 2 CPU devices equal to 1 process x 4 devices; eval.py, predict and
export of a run saved sharded by 2 processes; a damaged checkpoint decided once by process 0;
and the pod rehearsal of configs/k400_vivit_fe.py:shrink=1."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import shared
from shared import REPO

from vidtx import predict, run_checkpoints, run_files, trainer
from vidtx import train_state as state_lib

# The exact config, the ports, the environments and the JSON lines of the pod tests.
_spec = importlib.util.spec_from_file_location(
  "pod_training", os.path.join(os.path.dirname(__file__), "test_pod_training.py")
)
pod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pod)

TIMEOUT = 400  # Seconds for one train.py / eval.py launch on a loaded 2-core machine.


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  from vidtx import data as vidtx_data

  directory = str(tmp_path_factory.mktemp("data"))
  vidtx_data.prepare_dataset(pod.exact_config(directory, 1))
  return directory


@pytest.fixture(scope="module")
def source_run(data_dir, tmp_path_factory):
  """A 1-step run of the exact config: the pretrained checkpoint the runs below start from."""
  workdir = str(tmp_path_factory.mktemp("source") / "run")
  trainer.train_and_evaluate(pod.exact_config(data_dir, 1), workdir)
  return workdir


def _launch(script: str, args: list[str], processes: int, devices: int) -> list[tuple[str, str]]:
  """`script` (train.py, eval.py) as `processes` processes of `devices` CPU devices each;
  (stdout, stderr) of each; asserts that all ended well within TIMEOUT."""
  outs = _launch_raw(script, args, processes, devices)
  for rc, stdout, stderr in outs:
    assert rc == 0, stdout[-2000:] + stderr[-4000:]
  return [(stdout, stderr) for _, stdout, stderr in outs]


def _launch_raw(script: str, args: list[str], processes: int, devices: int):
  command = [sys.executable, script] + args
  if processes > 1:
    port = pod._free_port()
    command += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}"]
  procs = [
    subprocess.Popen(
      command + ([f"--process_id={i}"] if processes > 1 else []),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=pod._env(devices),
      cwd=REPO,
    )
    for i in range(processes)
  ]
  outs = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=TIMEOUT)
      outs.append((p.returncode, stdout, stderr))
  finally:
    for p in procs:  # A failed or hung launch leaves nothing behind.
      if p.poll() is None:
        p.kill()
        p.wait()
  return outs


def _losses(workdir) -> list[dict]:
  return pod._deterministic(pod._read_jsonl(os.path.join(workdir, "metrics.jsonl")))


def _assert_same_metrics(got, expected):
  assert [line["step"] for line in got] == [line["step"] for line in expected]
  for a, b in zip(expected, got, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-7, err_msg=key)


def _train_args(config_file: str, workdir, steps: int, mesh: dict, source: str) -> list[str]:
  return [
    f"--config={config_file}:{steps}",
    f"--workdir={workdir}",
    f"--config.init_from.checkpoint_path={source}",
  ] + [f"--config.mesh.{axis}={size}" for axis, size in mesh.items()]


FSDP = {"data": 1, "fsdp": 4}


@pytest.fixture(scope="module")
def one_host(data_dir, source_run, tmp_path_factory):
  """1 process x 4 devices, FSDP over all 4, started from the source run: the reference."""
  tmp = tmp_path_factory.mktemp("one")
  config_file = pod._config_file(tmp, data_dir)
  workdir = tmp / "one"
  ((stdout, _),) = _launch("train.py", _train_args(config_file, workdir, 3, FSDP, source_run), 1, 4)
  assert f"from init_from {source_run}" in stdout
  return str(workdir)


def test_host_copy_and_place_round_trip_a_sharded_tree():
  """What init_from moves: sharded arrays to numpy on the host and back into their shardings."""
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("fsdp",))
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
  tree = {"a": np.arange(6, dtype=np.float32), "b": {"c": np.ones((2, 3), np.int32)}}
  abstract = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=spec), tree)
  placed = state_lib.place(tree, abstract)
  assert placed["a"].sharding == spec and placed["b"]["c"].dtype == np.int32
  back = state_lib.host_copy(placed, mesh)
  jax.tree.map(np.testing.assert_array_equal, back, tree)
  assert isinstance(back["a"], np.ndarray)
  with pytest.raises(ValueError, match=r"place: a value of shape \(5,\) for an array of \(6,\)"):
    state_lib.place({"a": np.zeros(5), "b": tree["b"]}, abstract)


def test_no_command_fetches_a_global_array_with_device_get():
  """On several hosts jax.device_get of an array sharded over other hosts' devices raises
  ("spans non-addressable devices"): the product fetches with train_state.fetch_replicated and
  host_copy instead. Every call in vidtx/, train.py and eval.py (comments aside) is listed."""
  calls = []
  for root, _, names in os.walk(os.path.join(REPO, "vidtx")):
    calls += [os.path.join(root, name) for name in names if name.endswith(".py")]
  calls += [os.path.join(REPO, "train.py"), os.path.join(REPO, "eval.py")]
  found = []
  for path in calls:
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        if "device_get(" in line.split("#", 1)[0]:
          found.append(f"{os.path.relpath(path, REPO)}:{number}: {line.strip()}")
  assert found == []


@pytest.mark.slow
@pytest.mark.tier2
def test_fsdp_pretrained_start_on_two_hosts_trains_evaluates_predicts_and_exports(
  data_dir, source_run, one_host, tmp_path
):
  """2 processes x 2 devices, data=1 fsdp=4, init_from a run: the losses of 1 process x 4
  devices; eval.py on 2 processes gives the run's own final evaluation; predict and export, one
  process, read the checkpoint 2 processes saved sharded."""
  config_file = pod._config_file(tmp_path, data_dir)
  two = tmp_path / "two"
  outs = _launch("train.py", _train_args(config_file, two, 3, FSDP, source_run), 2, 2)
  assert f"from init_from {source_run}" in outs[0][0]
  assert "init_from" in outs[0][0] and "arrays loaded" in outs[0][0]
  _assert_same_metrics(_losses(two), _losses(one_host))

  # eval.py on 2 processes (the run's mesh from the config): the run's final evaluation.
  mesh_args = [f"--config.mesh.{axis}={size}" for axis, size in FSDP.items()]
  eval_args = [f"--config={config_file}:3", f"--workdir={two}"] + mesh_args
  _launch("eval.py", eval_args, 2, 2)
  with open(two / "eval_validation.json") as f:
    evaluated = json.load(f)
  final = _losses(two)[-1]
  np.testing.assert_allclose(evaluated["top1"], final["val_top1"], rtol=1e-6)

  # Export (vidtx-convert --src RUN) and predict (--checkpoint RUN): one process, one device.
  saved = shared.restore_params(str(two), 3)
  exported = run_files.export_run(str(two))
  assert exported.source["step"] == 3
  jax.tree.map(np.testing.assert_array_equal, exported.params, jax.tree.map(np.asarray, saved))
  clip = np.random.default_rng(0).uniform(0, 1, (5, 16, 16, 3)).astype(np.float32)
  np.save(tmp_path / "clip.npy", clip)
  logits = predict.run(str(two), input_path=str(tmp_path / "clip.npy"))
  model = exported.build_model()
  expected = model.apply({"params": saved}, clip[None], train=False)[0]  # (1, classes)
  np.testing.assert_allclose(logits, np.asarray(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.tier2
def test_tensor_parallel_pretrained_start_on_two_hosts_trains_like_one(
  data_dir, source_run, one_host, tmp_path
):
  """2 processes x 2 devices, fsdp=2 x model=2 (heads split over the hosts), init_from a run:
  the losses of 1 process x 4 devices."""
  config_file = pod._config_file(tmp_path, data_dir)
  mesh = {"data": 1, "fsdp": 2, "model": 2}
  _launch("train.py", _train_args(config_file, tmp_path / "tp", 3, mesh, source_run), 2, 2)
  _assert_same_metrics(_losses(tmp_path / "tp"), _losses(one_host))


# ----------------------------------------------------------------------------------------
# Resuming on many hosts: process 0 decides, once.
# ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.tier2
def test_a_damaged_checkpoint_is_decided_once_by_process_0(data_dir, tmp_path):
  """Checkpoint 4 of a 2-process FSDP run loses the shards process 1 wrote (only a process that
  read them itself would notice). Without --skip_damaged_checkpoints both processes refuse in
  the same line and nothing moves; with it both resume at step 2, as the first run trained
  steps 3 and 4, and checkpoint 4 is moved aside once."""
  config_file = pod._config_file(tmp_path, data_dir)
  workdir = tmp_path / "run"
  mesh = ["--config.mesh.data=2", "--config.mesh.fsdp=2"]
  _launch("train.py", [f"--config={config_file}:4", f"--workdir={workdir}"] + mesh, 2, 2)
  first = _losses(workdir)
  shards = workdir / "checkpoints" / "4" / "state" / "ocdbt.process_1" / "d"
  assert sorted(os.listdir(shards))
  for name in os.listdir(shards):
    os.remove(shards / name)

  resume = [f"--config={config_file}:4", f"--workdir={workdir}"] + mesh
  outs = _launch_raw("train.py", resume, 2, 2)
  for rc, _, stderr in outs:
    assert rc != 0
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: Checkpoint(s) 4 in "), stderr[-3000:]
    assert "The newest intact one is 2" in last and "--skip_damaged_checkpoints" in last
  assert outs[0][2].strip().splitlines()[-1] == outs[1][2].strip().splitlines()[-1]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  assert not (workdir / "damaged_checkpoints").exists()

  outs = _launch("train.py", resume + ["--skip_damaged_checkpoints"], 2, 2)
  assert "Checkpoint(s) 4 in" in outs[0][0] and "Resuming from checkpoint 2." in outs[0][0]
  assert "moved to" not in outs[1][0]  # Said (and done) by process 0 only.
  assert os.listdir(workdir / "damaged_checkpoints") == ["4"]
  assert not os.listdir(workdir / "damaged_checkpoints" / "4" / "state" / "ocdbt.process_1" / "d")
  # Steps 3 and 4 trained again as the first run trained them, on both processes: the same
  # metrics, and in checkpoint 4 the input positions the first run saved with its own.
  _assert_same_metrics(_losses(workdir), first)
  positions = [
    json.loads((workdir / where / "4" / "data" / "metadata").read_text())
    for where in ("checkpoints", "damaged_checkpoints")
  ]
  assert positions[0] == positions[1] and positions[0]["process_count"] == 2


def _copy_run(source_run: str, tmp_path) -> str:
  workdir = str(tmp_path / "run")
  shutil.copytree(source_run, workdir)
  return workdir


def test_process_0_decides_from_what_it_reads_itself(source_run, tmp_path, monkeypatch):
  """check_intact reads a checkpoint without restoring it: a removed metadata file, a removed
  or cut data file of the state, a removed input position are damage; a read that fails
  otherwise (an I/O error) is not, and nothing is moved for it (one process: the same rule)."""
  config = pod.exact_config("unused", 1)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
  _, abstract = state_lib.abstract_state_from_config(config, config.dataset_configs, mesh)
  workdir = _copy_run(source_run, tmp_path)
  manager = run_checkpoints.checkpoint_manager(workdir, read_only=True)
  run_checkpoints.check_intact(manager, abstract, 1)
  assert run_checkpoints._decide(manager, abstract, False) == {"step": 1, "damaged": []}

  state = os.path.join(workdir, "checkpoints", "1", "state")
  data_files = [os.path.join(root, name) for root, _, names in os.walk(state) for name in names]
  data_files = [path for path in data_files if os.path.basename(os.path.dirname(path)) == "d"]
  damages = {
    "metadata": lambda: os.remove(os.path.join(state, "_METADATA")),
    "data files": lambda: [os.remove(path) for path in data_files],
    "a cut data file": lambda: os.truncate(max(data_files, key=os.path.getsize), 10),
    "the input position": lambda: os.remove(os.path.join(state, "..", "data", "metadata")),
  }
  for what, damage in damages.items():
    shutil.rmtree(workdir)
    _copy_run(source_run, tmp_path)
    damage()
    with pytest.raises(Exception) as error:
      run_checkpoints.check_intact(manager, abstract, 1)
    assert run_checkpoints._is_damage(error.value), (what, error.value)
    decision = run_checkpoints._decide(manager, abstract, True)
    assert decision["kind"] == "damaged" and "No checkpoint in" in decision["error"], what

  shutil.rmtree(workdir)
  _copy_run(source_run, tmp_path)

  def failing_open(*args, **kwargs):
    raise OSError(5, "Input/output error")

  monkeypatch.setattr(run_checkpoints.ts.KvStore, "open", failing_open)
  decision = run_checkpoints._decide(manager, abstract, True)
  assert decision["kind"] == "unreadable", decision
  assert "Input/output error" in decision["error"] and "nothing was moved" in decision["error"]
  # One process decides the same way while restoring.
  monkeypatch.setattr(run_checkpoints, "restore_step", failing_open)
  with pytest.raises(
    run_checkpoints.DamagedCheckpointError, match="Input/output error.*nothing was"
  ):
    run_checkpoints.restore_newest_intact(manager, abstract, skip_damaged=True)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1"]


@pytest.mark.slow
@pytest.mark.tier2
def test_pod_rehearsal_of_the_k400_vivit_fe_recipe(tmp_path):
  """configs/k400_vivit_fe.py:shrink=1 as on a pod: 2 processes x 2 devices, data=2 x fsdp=2,
  started from a 1-process run of the same recipe, then resumed to 2 more steps."""
  recipe = "configs/k400_vivit_fe.py:shrink=1"
  source = tmp_path / "source"
  _launch("train.py", [f"--config={recipe}", f"--workdir={source}"], 1, 1)
  pod_args = [
    f"--config={recipe}",
    f"--workdir={tmp_path / 'pod'}",
    "--config.mesh.data=2",
    "--config.mesh.fsdp=2",
    f"--config.init_from.checkpoint_path={source}",
  ]
  ((stdout, _), _) = _launch("train.py", pod_args, 2, 2)
  assert f"from init_from {source}" in stdout and "4 device(s) of 2 process(es)" in stdout
  assert "'data': 2, 'fsdp': 2" in stdout
  ((stdout, _), _) = _launch("train.py", pod_args + ["--config.num_training_steps=4"], 2, 2)
  assert "resuming at step 2" in stdout
  assert json.loads(stdout.strip().splitlines()[-1]).keys() == {"top1", "top5"}
  steps = [line["step"] for line in _losses(tmp_path / "pod")]
  assert steps == [1, 2, 2, 3, 4, 4]  # Training lines and the evaluations at 2 and 4.


def test_eval_of_a_converted_checkpoint_places_it_on_the_mesh(data_dir, source_run, tmp_path):
  """eval.py --checkpoint: the converted parameters placed replicated by every process (place),
  giving the run's own final evaluation."""
  from vidtx import convert, evaluate

  converted = str(tmp_path / "converted")
  convert.convert(source_run, converted)
  results = evaluate.evaluate(pod.exact_config(data_dir, 1), None, checkpoint=converted)
  final = _losses(source_run)[-1]
  np.testing.assert_allclose(results["top1"], final["val_top1"], rtol=1e-6)
