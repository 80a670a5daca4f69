"""A run's directory among the user's files, two commands on one run, a full disk, a partly empty
split and short fine-tunes: nothing of the user's is touched, and every error is one line that
names the file, the holder or the field.

Most cases stop before any compilation (the checks come first); one tiny run meets a full disk.
"""

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from etils import epath
from shared import REPO, TESTS, digests, tiny_config

from vidtx import (
  cli,
  evaluate,
  locks,
  models,
  optim,
  ownership,
  run_checkpoints,
  run_files,
  trainer,
)
from vidtx import data as vidtx_data
from vidtx import train_state as state_lib
from vidtx.configs import finetune
from vidtx.data import dmvr, records


class ExpensiveWorkStarted(Exception):
  """Raised by a stand-in for the first slow step: the run got past its start-up checks."""


def _no_expensive_work(monkeypatch) -> None:
  """The data preparation (the first slow step of train.py and eval.py) raises instead."""

  def prepare_dataset(config):
    raise ExpensiveWorkStarted

  monkeypatch.setattr(vidtx_data, "prepare_dataset", prepare_dataset)


def _run_dir(tmp_path, name: str = "run") -> str:
  """A workdir vidtx claimed for a run (marked), without checkpoints yet."""
  return ownership.claim(str(tmp_path / name), "run")


def _one_line(error: BaseException) -> str:
  message = str(error)
  assert "\n" not in message and len(message) < 1000, message
  return message


# ---------------------------------------------------------------------------------------------
# The checkpoints directory: orbax deletes old steps there, so it holds only vidtx's.
# ---------------------------------------------------------------------------------------------


def test_a_checkpoints_link_into_a_user_folder_is_refused_and_the_folder_kept(
  tmp_path, monkeypatch
):
  """Orbax took the user's 0/ for a step and deleted it on rotation: the link is refused."""
  _no_expensive_work(monkeypatch)
  mine = tmp_path / "my_folder"
  (mine / "0").mkdir(parents=True)
  (mine / "0" / "results.csv").write_text("epoch,acc\n0,0.5\n")
  (mine / "notes.txt").write_text("mine")
  before = digests(mine)
  workdir = _run_dir(tmp_path)
  os.symlink(mine, os.path.join(workdir, "checkpoints"))
  config = tiny_config(str(tmp_path / "data"))
  with pytest.raises(ValueError, match=r"checkpoints is a symbolic link \(to .*my_folder\)"):
    trainer.train_and_evaluate(config, workdir)
  assert digests(mine) == before and sorted(os.listdir(mine)) == ["0", "notes.txt"]
  assert not os.path.exists(os.path.join(workdir, locks.LOCK))  # Released.
  # A file in its place is refused too.
  os.remove(os.path.join(workdir, "checkpoints"))
  (tmp_path / "run" / "checkpoints").write_text("mine")
  with pytest.raises(ValueError, match="checkpoints is a file, not the run's checkpoints"):
    trainer.train_and_evaluate(config, workdir)
  assert (tmp_path / "run" / "checkpoints").read_text() == "mine"


def test_foreign_entries_in_the_checkpoints_directory_are_named_and_kept(tmp_path, monkeypatch):
  _no_expensive_work(monkeypatch)
  workdir = _run_dir(tmp_path)
  steps = tmp_path / "run" / "checkpoints"
  (steps / "0").mkdir(parents=True)  # Integer-named: orbax would take it for a step.
  (steps / "0" / "mine.txt").write_text("mine")
  (steps / "README.md").write_text("mine")
  # A checkpoint as orbax writes it, with a user's file inside, and an unfinished save.
  (steps / "4" / "state").mkdir(parents=True)
  (steps / "4" / "_CHECKPOINT_METADATA").write_text("{}")
  (steps / "4" / "NOTES.md").write_text("mine")
  (steps / "6.orbax-checkpoint-tmp-123" / "state.orbax-checkpoint-tmp").mkdir(parents=True)
  before = digests(steps)
  config = tiny_config(str(tmp_path / "data"))
  with pytest.raises(ValueError) as error:
    trainer.train_and_evaluate(config, workdir)
  message = _one_line(error.value)
  assert "holds entries that are not checkpoints vidtx wrote: 0/ (not a checkpoint: mine.txt)" in (
    message
  )
  assert "4/NOTES.md; README.md." in message and "6.orbax" not in message
  assert digests(steps) == before
  # Moved out, the run starts (here: reaches its data).
  os.rename(steps / "0", tmp_path / "0")
  os.rename(steps / "README.md", tmp_path / "README.md")
  os.rename(steps / "4" / "NOTES.md", tmp_path / "NOTES.md")
  with pytest.raises(ExpensiveWorkStarted):
    trainer.train_and_evaluate(config, workdir)


# ---------------------------------------------------------------------------------------------
# One writer per run: train.py and eval.py hold the workdir's lock.
# ---------------------------------------------------------------------------------------------


def test_a_second_command_on_a_run_refuses_before_any_work(tmp_path, monkeypatch):
  _no_expensive_work(monkeypatch)
  workdir = _run_dir(tmp_path)
  config = tiny_config(str(tmp_path / "data"))
  with locks.hold(workdir, "train.py"):
    with pytest.raises(locks.LockedError) as error:
      trainer.train_and_evaluate(config, workdir)
    message = _one_line(error.value)
    assert f"{workdir} is in use by train.py (pid {os.getpid()}" in message
    # eval.py writing its results into the run refuses too, and says who holds it.
    with pytest.raises(locks.LockedError, match=rf"in use by train.py \(pid {os.getpid()}"):
      evaluate.evaluate(config, workdir)
  assert issubclass(locks.LockedError, cli.USER_ERRORS)  # One line at the command line.
  # Released: the next run gets past the lock (and holds it while it works).
  held = []

  def prepare_dataset(config):
    held.append(locks.holder(workdir))
    raise ExpensiveWorkStarted

  monkeypatch.setattr(vidtx_data, "prepare_dataset", prepare_dataset)
  with pytest.raises(ExpensiveWorkStarted):
    trainer.train_and_evaluate(config, workdir)
  assert held[0]["what"] == "train.py" and held[0]["pid"] == os.getpid()
  assert not os.path.exists(os.path.join(workdir, locks.LOCK))


def test_a_lock_left_by_a_dead_trainer_is_taken_over(tmp_path, monkeypatch):
  _no_expensive_work(monkeypatch)
  workdir = _run_dir(tmp_path)
  gone = subprocess.run(
    [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
  )
  record = {"what": "train.py", "pid": int(gone.stdout), "host": socket.gethostname()}
  with open(os.path.join(workdir, locks.LOCK), "w") as f:
    f.write(json.dumps(record) + "\n")
  with pytest.raises(ExpensiveWorkStarted):  # Past the lock.
    trainer.train_and_evaluate(tiny_config(str(tmp_path / "data")), workdir)


@pytest.mark.slow
def test_train_py_refuses_a_run_another_process_trains(tmp_path):
  """Two processes: one holds the run (as a training train.py does), train.py refuses in one
  line naming it, exit 1, within the time of its imports."""
  workdir = _run_dir(tmp_path)
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import sys, time; from vidtx import locks\n"
      f"with locks.hold({workdir!r}, 'train.py'):\n  print('held', flush=True); time.sleep(60)",
    ],
    stdout=subprocess.PIPE,
    text=True,
    cwd=REPO,
  )
  try:
    assert holder.stdout.readline().strip() == "held"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([REPO, TESTS])}
    start = time.time()
    result = subprocess.run(
      [
        sys.executable,
        "train.py",
        "--config=configs/synthetic_timesformer.py",
        f"--workdir={workdir}",
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
    )
  finally:
    holder.kill()
    holder.wait()
  assert result.returncode == 1, result.stderr
  [line] = result.stderr.strip().splitlines()
  assert line.startswith(f"train.py: error: {workdir} is in use by train.py (pid {holder.pid} ")
  assert time.time() - start < 60
  # Nothing written; the killed holder's lock file stays (stale: the next run takes it).
  assert sorted(os.listdir(workdir)) == [ownership.MARKER, locks.LOCK]


# ---------------------------------------------------------------------------------------------
# A full disk: one line naming the file or checkpoint, no background tracebacks.
# ---------------------------------------------------------------------------------------------


def _enospc(path) -> OSError:
  return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(tmp_path, monkeypatch, caplog):
  """Checkpoint 1's input position (written by orbax in its background thread) meets a full
  disk: the run stops with one line naming checkpoint 1. Orbax's threads log the failure with
  tracebacks, and tensorstore prints 'Event loop is closed' per array in flight: dropped."""
  config = tiny_config(str(tmp_path / "data"), steps=2)
  config.checkpoint_every_steps = 1
  workdir = str(tmp_path / "run")
  write_text = epath.gpath._GPath.write_text

  def full_disk(self, *args, **kwargs):
    if f"{os.sep}checkpoints{os.sep}1" in str(self):
      raise _enospc(self)
    return write_text(self, *args, **kwargs)

  monkeypatch.setattr(epath.gpath._GPath, "write_text", full_disk)
  unraisable = []
  monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
  caplog.set_level(logging.ERROR)
  with pytest.raises(run_checkpoints.WriteError) as error:
    trainer.train_and_evaluate(config, workdir)
  message = _one_line(error.value)
  assert message.startswith(f"Writing checkpoint 1 in {workdir}/checkpoints failed: no space")
  assert "run the same command to resume" in message
  assert issubclass(run_checkpoints.WriteError, OSError)
  assert not [r.getMessage()[:200] for r in caplog.records if r.exc_info]
  assert not [str(u.exc_value) for u in unraisable]
  assert not os.path.exists(os.path.join(workdir, "checkpoints", "1"))  # Never half a step.
  assert not os.path.exists(os.path.join(workdir, locks.LOCK))


def test_a_full_disk_writing_the_runs_files_names_them(tmp_path, monkeypatch):
  """config.json (rewritten at every start, also when resuming) and metrics.jsonl."""
  workdir = str(tmp_path / "run")

  def full_disk(config, workdir):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # As a failed close: no file name.

  monkeypatch.setattr(run_files, "write_config", full_disk)
  with pytest.raises(run_checkpoints.WriteError) as error:
    trainer.train_and_evaluate(tiny_config(str(tmp_path / "data")), workdir)
  assert _one_line(error.value).startswith(
    f"Writing {workdir}/config.json failed: no space left on device. Training stopped"
  )
  # The helpers: orbax's and TensorFlow's texts, Python's file name, and other errors untouched.
  orbax = ValueError(
    f'RESOURCE_EXHAUSTED: Error writing local file "{workdir}/checkpoints/6.orbax-checkpoint-'
    'tmp/state.orbax-checkpoint-tmp/_sharding": Failed to write 25303 bytes to file 9: No '
    "space left on device [os_error_code='28']"
  )
  assert str(run_checkpoints.write_error(orbax, workdir)).startswith(
    f"Writing checkpoint 6 in {workdir}/checkpoints failed: no space left on device."
  )
  events = RuntimeError(
    f"Failed to flush 1 events to {workdir}/events.out.tfevents.1.v2: No space left on device"
  )
  assert f"Writing {workdir}/events.out.tfevents.1.v2 failed" in str(
    run_checkpoints.write_error(events, workdir)
  )
  quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), f"{workdir}/metrics.jsonl")
  assert "metrics.jsonl failed: disk quota exceeded" in str(
    run_checkpoints.write_error(quota, workdir)
  )
  assert run_checkpoints.write_error(ValueError("bad value"), workdir) is None
  assert run_checkpoints.write_error(FileNotFoundError(errno.ENOENT, "x"), workdir) is None


# ---------------------------------------------------------------------------------------------
# A split with empty files among good ones is named at start-up.
# ---------------------------------------------------------------------------------------------


def _video(label: int) -> bytes:
  return dmvr.make_sequence_example(np.full((6, 16, 16, 3), 40 * label, np.uint8), label)


def test_an_empty_shard_among_good_ones_is_named_at_start_up(tmp_path, monkeypatch, capsys):
  data = tmp_path / "data"
  # 3 records in 4 shards, round-robin: the 4th shard is a 0-byte file.
  dmvr.write_shards([_video(i) for i in range(3)], str(data / "train.tfrecord"), 4)
  dmvr.write_shards([_video(i) for i in range(2)], str(data / "validation.tfrecord"), 1)
  (data / "labels.txt").write_text("a\nb\nc\nd\n")
  empty = data / "train.tfrecord-00003-of-00004"
  assert os.path.getsize(empty) == 0
  config = tiny_config(str(data))
  config.dataset_name = "dmvr"
  config.dataset_configs.update(
    tables={"train": "train.tfrecord@4", "validation": "validation.tfrecord@1"},
    examples_per_subset={"train": 3, "validation": 2},
  )

  # Started: the warning comes before the model is built.
  def build(*args, **kwargs):
    raise ExpensiveWorkStarted

  monkeypatch.setattr(models, "build", build)
  with pytest.raises(ExpensiveWorkStarted):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  [line] = [line for line in capsys.readouterr().out.splitlines() if "Warning" in line]
  assert line.startswith(
    "Warning: split 'train': 1 of its 4 files hold no record (0 bytes, or shorter than one "
    f"record): {empty}; only the other 3 file(s) are read (examples_per_subset.train says 3)."
  )
  # Good splits, and a split with no record at all (an error of its own), give no warning.
  dc = vidtx_data.prepare_dataset(config)
  assert records.empty_files_warning(dc, "validation") is None
  empty.write_bytes(_video(3)[:5])  # Shorter than one record: as empty.
  assert "1 of its 4 files" in records.empty_files_warning(dc, "train")


# ---------------------------------------------------------------------------------------------
# configs/finetune.py: short runs and large batches build (no training here).
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
  """9 training videos (2 shards) and 3 validation videos of 3 classes, counted (no summary)."""
  data = tmp_path_factory.mktemp("small_shards")
  dmvr.write_shards([_video(i % 3) for i in range(9)], str(data / "train.tfrecord"), 2)
  dmvr.write_shards([_video(i) for i in range(3)], str(data / "validation.tfrecord"), 1)
  (data / "labels.txt").write_text("a\nb\nc\n")
  return str(data)


@pytest.mark.parametrize(
  "arg, steps",
  [
    ("epochs=1", 2),  # 9 videos in batches of 8: both decays rounded to step 1 before.
    ("epochs=1,batch=16", 1),  # A batch larger than the split: one step spans it.
    ("batch=64", 3),  # 15 epochs of 9 videos in batches of 64: 3 steps.
    ("epochs=2,batch=9", 2),
  ],
)
def test_finetune_short_runs_and_large_batches_build(small_shards, arg, steps):
  config = finetune.get_config(f"data={small_shards},{arg}")
  examples = config.dataset_configs.examples_per_subset["train"]
  assert examples == 9
  assert optim.resolve_steps(config, "num_training", examples, config.batch_size) == steps
  _, schedule = state_lib.optimizer_from_config(config, config.dataset_configs)  # Builds.
  boundaries = [round(e * examples / config.batch_size) for e in config.lr_configs.decay_epochs]
  assert 1 <= boundaries[0] < boundaries[1]
  assert float(schedule(0)) == 0.0  # The warm-up starts from 0 as always.
  assert config.eval_every_steps == config.checkpoint_every_steps >= 1
  assert config.lr_configs.warmup_steps >= 1 and config.log_every_steps >= 1
  # The usual case keeps the paper's fractions exactly (decays at 11/15 and 14/15 of the run).
  usual = finetune.get_config(f"data={small_shards},epochs=15,batch=2")
  assert tuple(usual.lr_configs.decay_epochs) == (11, 14)
