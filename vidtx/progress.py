"""Progress lines for long work, and the metrics.jsonl log.

`Reporter` is the one progress line of vidtx for counted work (shard making, evaluation, and the
training line built on it): done/total, rate, ETA and optional fields, redrawn in place with `\\r`
on a terminal and written as a whole line every N seconds to a log file.
Not tqdm: its `\\r` redraws pile up as unreadable lines in cluster log files.
"""

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from vidtx import outputs, paths


def format_duration(seconds: float) -> str:
  """`1h02m03s`, or `2m03s` under an hour."""
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class Reporter:
  """`{prefix}done/total{unit} | notes | N counter | rate unit | ETA` for counted work.

  On a terminal the line is redrawn in place (`\\r`) at most every `tty_every_s`; otherwise (a
  log file) a whole line is written every `every_s`, so a log holds a readable history. Nothing
  is written when disabled (processes other than 0), but rates are still measured.

  Args:
    total: the amount of work, or None when unknown (no ETA then).
    prefix, unit: around the count, e.g. 'validation: ' and ' videos'.
    done: work already done before this start (a resumed run); excluded from the rates.
    counters: named counts shown as `N name` (e.g. {'bad': 0}), changed by advance/update.
    rates: (unit, scale, decimals) of each rate shown: `scale` x the rate of the `work` counter,
      which follows `done` unless advance/update are given `work`. None: `{unit}/s`.
    window: rates (and the ETA) since the previous line instead of since the start.
    every_s: seconds between lines in a log file (None: 10 s); 0 writes one at every call.
    tty: whether to redraw in place (None: `stream.isatty()`).
    stream: where the lines go (None: sys.stderr).
    final_line: `finish` always writes a last line; otherwise only when a line was written.
    clock: seconds, monotonic (a fake one in tests).
  """

  def __init__(
    self,
    total: int | None,
    *,
    prefix: str = "",
    unit: str = "",
    done: int = 0,
    counters: dict[str, int] | None = None,
    rates: Sequence[tuple[str, float, int]] | None = None,
    window: bool = False,
    every_s: float | None = None,
    tty_every_s: float = 0.25,
    tty: bool | None = None,
    stream: TextIO | None = None,
    enabled: bool = True,
    final_line: bool = True,
    clock: Callable[[], float] = time.monotonic,
  ):
    self.total = None if total is None else int(total)
    self.prefix, self.unit = prefix, unit
    self.done = int(done)
    self.work = float(done)
    self.counters = dict(counters or {})
    self.notes: list[str] = []
    self.rates = tuple(rates) if rates is not None else ((f"{unit.strip() or 'items'}/s", 1.0, 1),)
    self.window = window
    self.stream = sys.stderr if stream is None else stream
    self.tty = _isatty(self.stream) if tty is None else tty
    self.every_s = tty_every_s if self.tty else (10.0 if every_s is None else every_s)
    self.enabled = enabled
    self.final_line = final_line
    self.clock = clock
    self._mark = (clock(), self.done, self.work)  # where the rates are measured from
    self._shown_at = self._mark[0]
    self._shown_any = False
    self._width = 0  # of the line drawn in place, to blank out a longer previous one

  def advance(self, n: int = 1, *, work: float | None = None, **counters: int) -> None:
    """`n` more done (and `work` more rate units, default `n`); counters grow by their values.
    Writes a line when one is due."""
    self.done += n
    self.work += n if work is None else work
    for name, value in counters.items():
      self.counters[name] = self.counters.get(name, 0) + value
    self._maybe_show()

  def update(
    self,
    done: int,
    *,
    work: float | None = None,
    notes: Sequence[str] | None = None,
    show: bool | None = None,
    **counters: int,
  ) -> None:
    """Sets the totals so far: `done`, `work` (default: grows with `done`), counters and the
    `notes` shown after the count. `show`: True writes a line now, False not, None when due."""
    self.work += (done - self.done) if work is None else work - self.work
    self.done = int(done)
    self.counters.update(counters)
    if notes is not None:
      self.notes = list(notes)
    if show is None:
      self._maybe_show()
    elif show:
      self.show()

  def rate_values(self) -> list[float]:
    """The rates shown (per second, in the order of `rates`)."""
    work_rate = self._rates()[1]
    return [work_rate * scale for _, scale, _ in self.rates]

  def line(self) -> str:
    """The progress line now."""
    done_rate = self._rates()[0]
    parts = [
      f"{self.prefix}{self.done}" + (f"/{self.total}" if self.total is not None else "") + self.unit
    ]
    parts += self.notes
    parts += [f"{value} {name}" for name, value in self.counters.items()]
    parts += [
      f"{value:.{decimals}f} {unit}"
      for value, (unit, _, decimals) in zip(self.rate_values(), self.rates, strict=True)
    ]
    if self.total is not None:
      left = max(self.total - self.done, 0)
      if left == 0:
        parts.append("ETA 0m00s")
      else:
        parts.append(f"ETA {format_duration(left / done_rate)}" if done_rate > 0 else "ETA ?")
    return " | ".join(parts)

  def show(self, final: bool = False) -> None:
    """Writes the line (in place on a terminal; `final` ends it there) and starts a new window
    for windowed rates."""
    if self.enabled:
      line = self.line()
      if self.tty:
        padding = " " * max(self._width - len(line), 0)
        self._width = len(line)
        self.stream.write("\r" + line + padding + ("\n" if final else ""))
      else:
        self.stream.write(line + "\n")
      self.stream.flush()
      self._shown_any = not final
    now = self.clock()
    self._shown_at = now
    if self.window:
      self._mark = (now, self.done, self.work)

  def finish(self, done: int | None = None, **counters: int) -> None:
    """The last line (with `final_line`, or to end lines already written), with the final
    totals when given."""
    if done is not None:
      self.work += done - self.done
      self.done = int(done)
    self.counters.update(counters)
    if self.final_line or self._shown_any:
      self.show(final=True)

  def _maybe_show(self) -> None:
    if self.clock() - self._shown_at >= self.every_s:
      self.show()

  def _rates(self) -> tuple[float, ...]:
    """(done per second, work per second) since the mark."""
    start, done, work = self._mark
    seconds = max(self.clock() - start, 1e-9)
    return (self.done - done) / seconds, (self.work - work) / seconds


def _isatty(stream: TextIO) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):  # a closed or minimal stream
    return False


class Progress:
  """The training line `step N/T | loss | acc | lr | steps/s | clips/s | ETA` (a Reporter),
  written on stdout at every log step and never redrawn: the losses are the run's history."""

  def __init__(
    self,
    total_steps: int,
    start_step: int,
    batch_size: int,
    enabled: bool = True,
    *,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
  ):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self._reporter = Reporter(
      total_steps,
      prefix="step ",
      done=start_step,
      rates=(("steps/s", 1.0, 2), ("clips/s", float(batch_size), 1)),
      window=True,  # The first window includes compilation; later ones are the steady rate.
      every_s=0,
      tty=False,
      stream=sys.stdout if stream is None else stream,
      enabled=enabled,
      clock=clock,
    )

  def update(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
    """Writes the line of `step` with `metrics` (loss, accuracy, learning_rate); returns the
    rates since the previous call for the metrics log."""
    notes = [
      f"loss {metrics['loss']:.4f}",
      f"acc {metrics['accuracy']:.3f}",
      f"lr {metrics['learning_rate']:.4g}",
    ]
    self._reporter.update(step, notes=notes, show=False)
    steps_per_sec, clips_per_sec = self._reporter.rate_values()
    self._reporter.show()
    return {"steps_per_sec": steps_per_sec, "clips_per_sec": clips_per_sec}


class MetricsLog:
  """Appends one JSON object per logged step to WORKDIR/metrics.jsonl.

  On resume, lines of steps after the restored checkpoint (logged before a crash, then redone)
  are dropped so that every step appears once, and so is a line torn by a kill mid-write.
  In a bucket (gs://), where objects cannot be appended to, the log is kept in memory and the
  whole object rewritten at each write (one upload: a reader sees the old log or the new one).
  """

  def __init__(self, path: str, enabled: bool = True, drop_after_step: int | None = None):
    self.path = path
    self.enabled = enabled
    self.lines: list[str] = []  # The whole log, for a URL.
    if not enabled:
      return
    if paths.is_url(path):
      if paths.exists(path):
        text = paths.read_bytes(path).decode("utf-8", errors="replace")
        self.lines = [line + "\n" for line in text.splitlines() if _step(line) is not None]
        if drop_after_step is not None:
          self.lines = [line for line in self.lines if _step(line) <= drop_after_step]
          self._upload()
      return
    if drop_after_step is not None and os.path.exists(path):
      with open(path) as f:
        kept = [line for line in f if _step(line) is not None and _step(line) <= drop_after_step]
      with outputs.atomic_writer(path) as f:
        f.writelines(kept)

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    line = json.dumps({"step": step, **metrics}) + "\n"
    if paths.is_url(self.path):
      self.lines.append(line)
      self._upload()
      return
    with open(self.path, "a") as f:
      f.write(line)

  def _upload(self) -> None:
    paths.write_bytes(self.path, "".join(self.lines).encode("utf-8"))


def _step(line: str) -> int | None:
  """The step of a metrics.jsonl line; None for a blank or torn (partly written) one."""
  try:
    return int(json.loads(line).get("step", 0))
  except (ValueError, AttributeError):
    return None
