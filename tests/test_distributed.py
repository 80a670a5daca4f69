"""vidtx.distributed: the flags of a multi-process start and the stop request (SIGINT, SIGTERM)."""

import os
import signal
import time

import pytest

from vidtx import distributed


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


def test_stop_request_catches_sigint_and_restores_the_handler():
  before = signal.getsignal(signal.SIGINT)
  stop = distributed.StopRequest()
  assert not stop.requested(1)
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(0.01)
  assert stop.requested(2) and stop.reason == "SIGINT"
  stop.restore()
  assert signal.getsignal(signal.SIGINT) is before
