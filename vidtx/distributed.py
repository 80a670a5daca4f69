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
import sys
import threading
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from vidtx.errors import UserError


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
    "MEGASCALE_COORDINATOR_ADDRESS"
  ):
    return "Cloud TPU pod"
  return None


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Starts JAX's distributed runtime when the launch has several processes; else nothing.

  Must run before anything touches a JAX device.
  """
  explicit = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise UserError(
        "--coordinator_address, --num_processes and --process_id go together "
        f"(got {coordinator_address!r}, {num_processes!r}, {process_id!r})."
      )
    if not 0 <= process_id < num_processes:
      raise UserError(f"--process_id={process_id} must be in [0, --num_processes={num_processes}).")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif _cluster_environment():
    jax.distributed.initialize()  # JAX reads the job's layout from the environment.
  else:
    return
  print(
    f"Process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} "
    f"local device(s), {jax.device_count()} in all.",
    flush=True,
  )


class Stopped(Exception):
  """A signal stopped the run where nothing could be saved (before its first step)."""

  def __init__(self, reason: str):
    super().__init__(f"stopped by {reason}")
    self.reason = reason
    self.exit_code = 128 + int(getattr(signal, reason, signal.SIGTERM))


# The Stopped a signal handler raised last. A library that catches it mid-call re-raises it as an
# error of its own (tf.data's autograph, when the signal comes while it traces the reader).
_raised: Stopped | None = None


def raised_by_signal() -> Stopped | None:
  """The Stopped a signal raised since the newest StopRequest, or None."""
  return _raised


class StopRequest:
  """SIGTERM / SIGINT turn into a request that the training loop honours between steps.

  With `immediate` (train.py's set-up: data, compilation, restore) a signal raises `Stopped` as
  soon as the main thread runs Python again; if it stays inside native code (XLA compiling, a
  blocked reader) for `grace_s`, a watcher thread ends the process with exit code 128 + signal.
  In the loop (`immediate` False) a signal only sets `reason`, and the loop saves and stops; a
  second signal ends the process at once.

  With one process the signal handlers set a flag. With several, every process must stop after
  the same step: SIGTERM (how schedulers announce preemption) goes through JAX's preemption
  sync point, which agrees on a step across hosts; a signal caught here by some processes only
  (e.g. Ctrl-C on one) is shared at `sync` steps, which the loop passes at every log step.
  """

  def __init__(self, immediate: bool = False, grace_s: float = 5.0):
    global _raised
    _raised = None
    self.reason: str | None = None
    self.immediate = immediate
    self._grace_s = grace_s
    self._handled = threading.Event()  # The main thread ran the Python handler.
    self._previous: dict[int, Any] = {}
    self._wakeup: tuple[int, int] | None = None
    self._previous_wakeup = -1
    signals = [signal.SIGINT]
    if jax.process_count() == 1:
      # With several processes JAX's preemption service owns SIGTERM.
      signals.append(signal.SIGTERM)
    for sig in signals:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. a notebook's worker): no handlers.
        pass
    if self._previous:
      self._start_watcher()

  def _start_watcher(self) -> None:
    """Python handlers run only when the main thread is back in Python; the wakeup fd is written
    by the C-level handler at once, so a thread reading it sees every signal."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    if previous != -1:  # Someone else's (an asyncio loop in a notebook): leave theirs.
      signal.set_wakeup_fd(previous)
      os.close(read_fd)
      os.close(write_fd)
      return
    self._wakeup = (read_fd, write_fd)
    threading.Thread(
      target=self._watch, args=(read_fd,), daemon=True, name="vidtx-stop-watcher"
    ).start()

  def _watch(self, read_fd: int) -> None:
    received = 0
    while True:
      try:
        data = os.read(read_fd, 64)
      except OSError:
        return
      if not data:  # restore() closed the pipe.
        return
      for signum in data:
        if signum not in self._previous:
          continue
        received += 1
        name = signal.Signals(signum).name
        if received > 1:
          self._exit(name, "a second signal: exiting now without saving")
        elif self.immediate and not self._handled.wait(self._grace_s):
          self._exit(
            name,
            f"the main thread did not stop within {self._grace_s:g} s (busy "
            "in native code); exiting without saving",
          )

  @staticmethod
  def _exit(name: str, why: str) -> None:
    print(f"vidtx: {name}: {why}.", file=sys.stderr, flush=True)
    os._exit(128 + int(getattr(signal, name)))

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    self.reason = signal.Signals(signum).name
    self._handled.set()
    if self.immediate:
      global _raised
      _raised = Stopped(self.reason)
      raise _raised

  def begin_loop(self) -> None:
    """From now on a signal asks the loop to save and stop; one that came before stops here."""
    if self.reason is not None:
      raise Stopped(self.reason)
    self.immediate = False

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
    if self._wakeup is not None:
      signal.set_wakeup_fd(-1)
      for fd in self._wakeup:
        os.close(fd)
      self._wakeup = None


def next_or_stop(iterator: Iterator[Any], stop: StopRequest, poll_s: float = 0.2) -> Any | None:
  """next(iterator), waiting in a way a signal can interrupt: None when `stop` was requested
  (one process) before the element came. The reader's next() runs in native code, where the
  Python signal handler cannot run until it returns, which it may never do."""
  if jax.process_count() > 1:
    return next(iterator)  # Every process must take the same steps: the loop decides when.
  result: dict[str, Any] = {}
  done = threading.Event()

  def fetch() -> None:
    try:
      result["value"] = next(iterator)
    except BaseException as e:  # Re-raised in the main thread.
      result["error"] = e
    done.set()

  threading.Thread(target=fetch, daemon=True, name="vidtx-next-batch").start()
  while not done.wait(poll_s):
    if stop.reason is not None:
      return None
  if "error" in result:
    raise result["error"]
  return result["value"]
