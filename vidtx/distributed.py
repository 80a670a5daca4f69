"""JAX's multi-controller runtime: starting it, and stopping every process at the same step.

vidtx writes no distribution layer of its own. Every host runs the same train.py; after
`initialize`, jax.devices() lists the devices of all hosts, the mesh spans them, and XLA's
collectives move the data. Launches:
- one machine: nothing to do (one process drives all its GPUs or TPU cores);
- explicit: --coordinator_address=HOST0:PORT --num_processes=N --process_id=I on each host;
- auto-detected by JAX where the environment describes the job (Cloud TPU pods, SLURM, Open
  MPI, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set by a launcher).
"""

import os
import signal
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def _cluster_environment() -> str | None:
  """The kind of multi-process job the environment describes, or None for a single process."""
  def more_than_one(var: str) -> bool:
    return os.environ.get(var, "1").isdigit() and int(os.environ.get(var, "1")) > 1
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  if more_than_one("SLURM_NTASKS") or more_than_one("SLURM_STEP_NUM_TASKS"):
    return "SLURM"
  if more_than_one("OMPI_COMM_WORLD_SIZE"):
    return "Open MPI"
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", "") or os.environ.get(
      "MEGASCALE_COORDINATOR_ADDRESS"):
    return "Cloud TPU pod"
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Starts JAX's distributed runtime when the launch has several processes; else nothing.

  Must run before anything touches a JAX device.
  """
  explicit = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError("--coordinator_address, --num_processes and --process_id go together "
                       f"(got {coordinator_address!r}, {num_processes!r}, {process_id!r}).")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} must be in [0, --num_processes="
                       f"{num_processes}).")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif _cluster_environment():
    jax.distributed.initialize()  # JAX reads the job's layout from the environment.
  else:
    return
  print(f"Process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} "
        f"local device(s), {jax.device_count()} in all.", flush=True)


class StopRequest:
  """SIGTERM / SIGINT turn into a request that the training loop honours between steps.

  With one process the signal handlers set a flag. With several, every process must stop after
  the same step: SIGTERM (how schedulers announce preemption) goes through JAX's preemption
  sync point, which agrees on a step across hosts; a signal caught here by some processes only
  (e.g. Ctrl-C on one) is shared at `sync` steps, which the loop passes at every log step.
  """

  def __init__(self):
    self.reason: str | None = None
    self._previous: dict[int, Any] = {}
    signals = [signal.SIGINT]
    if jax.process_count() == 1:
      # With several processes JAX's preemption service owns SIGTERM.
      signals.append(signal.SIGTERM)
    for sig in signals:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. a notebook's worker): no handlers.
        pass

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    self.reason = signal.Signals(signum).name

  def requested(self, step: int, sync: bool = True) -> bool:
    """Whether to save and stop after `step`; every process must call this at every step."""
    if jax.process_count() == 1:
      return self.reason is not None
    try:
      if multihost_utils.reached_preemption_sync_point(step):
        self.reason = self.reason or "a preemption notice"
        return True
    except RuntimeError:  # The preemption service is switched off in this JAX.
      pass
    if not sync:
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.reason is not None))
    if np.any(flags):
      self.reason = self.reason or "a signal to another process"
      return True
    return False

  def restore(self) -> None:
    """Puts back the handlers that were there before (tests run several trainings)."""
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
