"""Bad input and faults met through train.py and eval.py: the run's files stay intact, the
process never hangs, and the error is one line that names the file, field or step.

Cases run as subprocesses where a user meets them at the command line (flag parsing, signals).
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from shared import REPO, TESTS, digests, tiny_config

from vidtx import distributed, ownership, run_checkpoints, sharding, trainer
from vidtx.data import dmvr


def _env() -> dict[str, str]:
  return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([REPO, TESTS])}


def _train_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "train.py", *args],
    cwd=REPO,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A tiny run with checkpoints 2, 4 and 6 (its config is returned with it)."""
  config = tiny_config(str(tmp_path_factory.mktemp("data")), steps=6)
  config.checkpoint_every_steps = 2
  config.max_checkpoints_to_keep = 5
  workdir = str(tmp_path_factory.mktemp("run"))
  trainer.train_and_evaluate(config, workdir)
  return config, workdir


def _copy(run_dir, tmp_path) -> str:
  copy = str(tmp_path / "run")
  shutil.copytree(run_dir[1], copy)
  return copy


# ---------------------------------------------------------------------------------------------
# The run's record of itself (item 3) and damaged checkpoints (item 10).
# ---------------------------------------------------------------------------------------------


def test_a_failed_resume_leaves_the_run_byte_identical(run_dir, tmp_path):
  config, _ = run_dir
  workdir = _copy(run_dir, tmp_path)
  before = digests(workdir)
  wider = config.copy_and_resolve_references()
  wider.model.hidden_size, wider.model.mlp_dim = 64, 128
  with pytest.raises(run_checkpoints.CheckpointMismatchError) as error:
    trainer.train_and_evaluate(wider, workdir)
  message = str(error.value)
  assert "checkpoints/6 is of another model" in message and "config.json" in message
  assert "cls: checkpoint (1, 1, 32), config (1, 1, 64)" in message
  assert "\n" not in message and len(message) < 1000  # One line, not orbax's tree dump.
  assert digests(workdir) == before  # config.json included: export still works.


@pytest.mark.parametrize("damage", ["metadata", "blobs"])
def test_a_damaged_newest_checkpoint_is_named_and_an_intact_one_offered(run_dir, tmp_path, damage):
  config, _ = run_dir
  workdir = _copy(run_dir, tmp_path)
  state_dir = os.path.join(workdir, "checkpoints", "6", "state")
  if damage == "metadata":
    os.remove(os.path.join(state_dir, "_METADATA"))
  else:
    for root, _, files in os.walk(state_dir):
      for name in files:
        if os.path.basename(root) == "d":
          os.remove(os.path.join(root, name))
  before = digests(workdir)
  with pytest.raises(run_checkpoints.DamagedCheckpointError) as error:
    trainer.train_and_evaluate(config, workdir)
  message = str(error.value)
  assert "Checkpoint(s) 6 in" in message and "The newest intact one is 4" in message
  assert "--skip_damaged_checkpoints" in message and len(message) < 2000
  assert digests(workdir) == before  # Nothing deleted, config.json not rewritten.

  # With the flag: resumes from 4 and keeps the damaged checkpoint aside.
  results = trainer.train_and_evaluate(config, workdir, skip_damaged_checkpoints=True)
  assert results["num_videos"] == 10
  aside = os.path.join(workdir, "damaged_checkpoints", "6")
  assert {k for k in before if k.startswith("checkpoints/6/")} == {
    "checkpoints/6/" + k for k in digests(aside)
  }
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "6"))  # Retrained and saved.


# ---------------------------------------------------------------------------------------------
# The workdir (ownership) and plain bad values.
# ---------------------------------------------------------------------------------------------


def test_a_workdir_holding_someone_elses_files_is_refused(run_dir, tmp_path):
  config, _ = run_dir
  folder = tmp_path / "papers"
  folder.mkdir()
  (folder / "notes.txt").write_text("mine")
  with pytest.raises(ownership.NotOwnedError, match=r"papers is not empty \(notes.txt\)"):
    trainer.train_and_evaluate(config, str(folder))
  assert sorted(os.listdir(folder)) == ["notes.txt"]
  a_file = tmp_path / "a_file"
  a_file.write_text("mine")
  with pytest.raises(ownership.NotOwnedError, match="a_file is a file, not a directory"):
    trainer.train_and_evaluate(config, str(a_file))
  assert a_file.read_text() == "mine"
  # A workdir that cannot be created (a file in the way; root ignores permissions, so this is
  # the read-only case every user can meet).
  with pytest.raises(
    ownership.UnwritableError,
    match=r"a_file/run: cannot create this "
    r"directory: .*a_file is a file",
  ):
    trainer.train_and_evaluate(config, str(a_file / "run"))


def test_a_negative_batch_size_is_named():
  mesh = sharding.make_mesh(None)
  with pytest.raises(ValueError, match=r"config.batch_size=-4: expected a positive integer"):
    sharding.check_batch_size(-4, mesh)
  with pytest.raises(ValueError, match=r"config.eval_batch_size=0: expected a positive"):
    sharding.check_batch_size(0, mesh, "eval_batch_size")


@pytest.mark.slow
def test_command_line_mistakes_are_one_line(tmp_path):
  """A misspelt config field: the did-you-mean hint on one line, no traceback; a workdir that
  is a file: one line naming it."""
  result = _train_cli(
    "--config=configs/synthetic_timesformer.py",
    "--config.modle.dtype=x",
    f"--workdir={tmp_path / 'run'}",
  )
  assert result.returncode == 1, result.stderr
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last == (
    "train.py: error: --config.modle.dtype: the config has no field 'modle'. "
    'Did you mean "model" instead of "modle"?'
  )
  assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Signals: a stop at any phase, within seconds.
# ---------------------------------------------------------------------------------------------


def test_stop_request_raises_before_the_loop_and_flags_in_it():
  stop = distributed.StopRequest(immediate=True)
  try:
    with pytest.raises(distributed.Stopped) as error:
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(1)  # The handler runs here and raises.
    assert error.value.exit_code == 128 + signal.SIGTERM
  finally:
    stop.restore()
  stop = distributed.StopRequest(immediate=True)
  try:
    stop.begin_loop()
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)
    assert stop.requested(1) and stop.reason == "SIGINT"
  finally:
    stop.restore()


def test_next_or_stop_returns_when_a_signal_comes_during_a_blocked_read():
  def blocked():
    time.sleep(60)  # Like a reader stuck in native code.
    yield 1

  stop = distributed.StopRequest(immediate=False)
  try:
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    previous = signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    start = time.time()
    assert distributed.next_or_stop(blocked(), stop) is None
    assert time.time() - start < 5 and stop.reason == "SIGTERM"
  finally:
    signal.signal(signal.SIGALRM, previous)
    stop.restore()
  stop = distributed.StopRequest()
  try:
    assert distributed.next_or_stop(iter([7]), stop) == 7
  finally:
    stop.restore()


_FIFO_CONFIG = """
import importlib.util
spec = importlib.util.spec_from_file_location("c", {config!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)


def get_config():
  config = module.get_config()
  config.dataset_name = "dmvr"
  ds = config.dataset_configs
  ds.base_dir = {data!r}
  ds.tables = {{"train": "train.tfrecord@2", "validation": "validation.tfrecord@1"}}
  ds.examples_per_subset = {{"train": 8, "validation": 4}}
  ds.num_frames, ds.stride, ds.min_resize, ds.crop_size = 4, 1, 16, 16
  config.model.update(hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64)
  config.batch_size = config.eval_batch_size = 2
  config.num_training_steps = 4
  return config
"""


@pytest.mark.slow
def test_sigterm_while_waiting_for_data_exits_within_seconds(tmp_path):
  """A training shard that never delivers (a FIFO nobody writes: a hung file system) blocks the
  reader in native code; SIGTERM still ends the run at once, saving nothing, exit 143."""
  data = tmp_path / "data"
  data.mkdir()
  video = lambda label: dmvr.make_sequence_example(  # noqa: E731
    np.full((6, 16, 16, 3), 40 * label, np.uint8), label
  )
  dmvr.write_shards([video(i % 4) for i in range(4)], str(data / "validation.tfrecord"), 1)
  dmvr.write_shards([video(i % 4) for i in range(8)], str(data / "train.tfrecord"), 2)
  fifo = data / "train.tfrecord-00001-of-00002"
  os.remove(fifo)
  os.mkfifo(fifo)
  (data / "labels.txt").write_text("a\nb\nc\nd\n")
  config = tmp_path / "fifo_config.py"
  config.write_text(
    textwrap.dedent(
      _FIFO_CONFIG.format(
        config=os.path.join(REPO, "configs", "synthetic_timesformer.py"), data=str(data)
      )
    )
  )
  workdir = tmp_path / "run"
  process = subprocess.Popen(
    [sys.executable, "train.py", f"--config={config}", f"--workdir={workdir}"],
    cwd=REPO,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    for line in process.stdout:  # The start-up line: the loop is about to read data.
      if "from scratch" in line:
        break
    time.sleep(2)
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGTERM)
    start = time.time()
    _, stderr = process.communicate(timeout=60)
    # Not a hang: the watcher ends a main thread stuck in native code after its 5 s grace (a
    # loaded 2-core machine took 10 s to finish the exit).
    assert time.time() - start < 30
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == 128 + signal.SIGTERM, stderr
  assert "train.py: error: stopped by SIGTERM; nothing was saved." in stderr.splitlines()
  assert not os.listdir(workdir / "checkpoints")


def _dmvr_dataset(tmp_path, train_records: list[bytes]) -> str:
  """A 2-shard train split of `train_records` and a good validation split; returns the config
  file (the synthetic TimeSformer recipe reading them as DMVR)."""
  data = tmp_path / "data"
  data.mkdir()
  video = lambda label: dmvr.make_sequence_example(  # noqa: E731
    np.full((6, 16, 16, 3), 40 * label, np.uint8), label
  )
  dmvr.write_shards([video(i % 4) for i in range(4)], str(data / "validation.tfrecord"), 1)
  dmvr.write_shards(train_records, str(data / "train.tfrecord"), 2)
  (data / "labels.txt").write_text("a\nb\nc\nd\n")
  config = tmp_path / "dmvr_config.py"
  config.write_text(
    textwrap.dedent(
      _FIFO_CONFIG.format(
        config=os.path.join(REPO, "configs", "synthetic_timesformer.py"), data=str(data)
      )
    )
  )
  return str(config)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["zero_byte_shards", "every_record_bad"])
def test_data_that_cannot_give_a_batch_ends_with_a_named_error(tmp_path, case):
  """No record (0-byte shards), or every record bad with skip_bad_records set from the command
  line: a named error within a minute instead of a spin at 100% CPU or a flood of lines."""
  records = [] if case == "zero_byte_shards" else [b"not a SequenceExample"] * 8
  config = _dmvr_dataset(tmp_path, records)
  start = time.time()
  result = _train_cli(
    f"--config={config}",
    f"--workdir={tmp_path / 'run'}",
    "--config.dataset_configs.skip_bad_records=True",
    timeout=60,
  )
  assert time.time() - start < 60
  assert result.returncode == 1, result.stderr
  # TF's C++ log may still print from reader threads after the error: find the error line.
  [last] = [line for line in result.stderr.splitlines() if line.startswith("train.py: error:")]
  if case == "zero_byte_shards":
    assert "Split 'train' holds no record: its 2 file(s)" in last and "0 bytes" in last
    assert "train.tfrecord-00000-of-00002" in last
  else:  # Global order (the default on these shards): no record can replace the first one.
    assert "Split 'train': all 8 records tried for global position 0 of epoch 0" in last
    assert "train.tfrecord-0000" in last and "Fix or remove the bad records" in last
    assert result.stderr.count("skipping a bad record") < 10
  assert "Traceback" not in result.stderr


def test_a_signal_during_evaluation_stops_it_between_batches(run_dir, tmp_path, monkeypatch):
  """A finished run resumed repeats its final evaluation; SIGTERM while its first batch is read
  stops it before that batch is evaluated (not after hours of evaluation), saving nothing new."""
  from vidtx import evaluation

  config, _ = run_dir
  workdir = _copy(run_dir, tmp_path)
  videos = os.path.join(workdir, "eval_validation_videos.jsonl")
  with open(videos, "rb") as f:
    before = f.read()
  batches_seen = []
  original = evaluation.MultiViewEvaluator._batches

  def batches_then_a_signal(self):
    for batch in original(self):
      batches_seen.append(1)
      if len(batches_seen) == 1:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # The handler runs: it only records the request in the loop phase.
      yield batch

  monkeypatch.setattr(evaluation.MultiViewEvaluator, "_batches", batches_then_a_signal)
  with pytest.raises(distributed.Stopped) as error:
    trainer.train_and_evaluate(config, workdir)
  assert error.value.reason == "SIGTERM"
  assert len(batches_seen) == 1  # 10 videos in batches of 4: 3 batches when not stopped.
  with open(videos, "rb") as f:
    assert f.read() == before
