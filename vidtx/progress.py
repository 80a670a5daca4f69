"""Progress line (steps/s, clips/s, ETA) and the metrics.jsonl log."""

import json
import os
import time
from typing import Any


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
  """Prints `step N/T | loss | steps/s | clips/s | ETA` at each log step."""

  def __init__(self, total_steps: int, start_step: int, batch_size: int, enabled: bool = True):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.enabled = enabled
    self._last_step = start_step
    self._last_time = time.time()

  def update(self, step: int) -> dict[str, float]:
    """Rates since the previous call; the first interval includes compilation."""
    now = time.time()
    steps_per_sec = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    return {"steps_per_sec": steps_per_sec, "clips_per_sec": steps_per_sec * self.batch_size}

  def line(self, step: int, metrics: dict[str, float]) -> str:
    eta = (self.total_steps - step) / max(metrics["steps_per_sec"], 1e-9)
    return (
      f"step {step}/{self.total_steps} | loss {metrics['loss']:.4f} | "
      f"acc {metrics['accuracy']:.3f} | lr {metrics['learning_rate']:.4g} | "
      f"{metrics['steps_per_sec']:.2f} steps/s | {metrics['clips_per_sec']:.1f} clips/s | "
      f"ETA {format_duration(eta)}"
    )


class MetricsLog:
  """Appends one JSON object per logged step to WORKDIR/metrics.jsonl.

  On resume, lines of steps after the restored checkpoint (logged before a crash, then redone)
  are dropped so that every step appears once, and so is a line torn by a kill mid-write.
  """

  def __init__(self, path: str, enabled: bool = True, drop_after_step: int | None = None):
    self.path = path
    self.enabled = enabled
    if enabled and drop_after_step is not None and os.path.exists(path):
      with open(path) as f:
        kept = [line for line in f if _step(line) is not None and _step(line) <= drop_after_step]
      tmp = path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(kept)
      os.replace(tmp, path)

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **metrics}) + "\n")


def _step(line: str) -> int | None:
  """The step of a metrics.jsonl line; None for a blank or torn (partly written) one."""
  try:
    return int(json.loads(line).get("step", 0))
  except (ValueError, AttributeError):
    return None
