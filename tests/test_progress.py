"""vidtx.progress: the reporter's log-file and terminal lines, its quiet cases, and the training
line's format."""

import io

from ml_collections import config_flags  # noqa: F401  (registers the config file loader)

from vidtx import progress


class FakeClock:
  def __init__(self) -> None:
    self.now = 0.0

  def __call__(self) -> float:
    return self.now


def test_reporter_log_file_writes_a_whole_line_every_interval():
  clock, stream = FakeClock(), io.StringIO()
  reporter = progress.Reporter(
    10,
    prefix="train: ",
    unit=" videos",
    counters={"bad": 0},
    rates=(("videos/s", 1.0, 1),),
    every_s=10,
    tty=False,
    stream=stream,
    clock=clock,
  )
  for i in range(1, 6):
    clock.now = 2.5 * i
    reporter.advance(bad=int(i == 3))
  clock.now = 20.0
  reporter.finish(10, bad=2)
  assert stream.getvalue() == (
    "train: 4/10 videos | 1 bad | 0.4 videos/s | ETA 0m15s\n"
    "train: 10/10 videos | 2 bad | 0.5 videos/s | ETA 0m00s\n"
  )


def test_reporter_terminal_redraws_in_place():
  clock, stream = FakeClock(), io.StringIO()
  reporter = progress.Reporter(
    20,
    prefix="validation: ",
    unit=" videos",
    rates=(("views/s", 1.0, 1),),
    tty=True,
    stream=stream,
    final_line=False,
    clock=clock,
  )
  clock.now = 0.1
  reporter.update(1, work=6)  # too soon after the start
  clock.now = 1.0
  reporter.update(10, work=1000)
  clock.now = 2.0
  reporter.update(20, work=1010)
  reporter.finish()
  first = "validation: 10/20 videos | 1000.0 views/s | ETA 0m01s"
  last = "validation: 20/20 videos | 505.0 views/s | ETA 0m00s"
  # The shorter line blanks out the end of the longer one; the last line ends the redraws.
  assert stream.getvalue() == f"\r{first}\r{last} \r{last}\n"


def test_reporter_quiet_cases():
  clock, stream = FakeClock(), io.StringIO()
  # final_line=False and nothing due: a short piece of work adds no line.
  short = progress.Reporter(5, tty=False, stream=stream, final_line=False, clock=clock)
  short.advance()
  short.finish(5)
  # Disabled (processes other than 0): nothing written, rates still measured.
  off = progress.Reporter(None, unit=" videos", every_s=0, stream=stream, enabled=False)
  off.advance(3)
  off.finish()
  assert stream.getvalue() == ""
  assert off.line().startswith("3 videos | ") and "ETA" not in off.line()  # total unknown
  # No progress yet: the ETA is unknown.
  assert progress.Reporter(5, unit=" videos", clock=clock).line() == (
    "0/5 videos | 0.0 videos/s | ETA ?"
  )


def test_training_line_keeps_its_format():
  clock, stream = FakeClock(), io.StringIO()
  line = progress.Progress(4, 0, 8, stream=stream, clock=clock)
  step_metrics = {"loss": 1.23456, "accuracy": 0.5, "learning_rate": 0.001}
  clock.now = 2.0
  assert line.update(2, step_metrics) == {"steps_per_sec": 1.0, "clips_per_sec": 8.0}
  clock.now = 3.0
  rates = line.update(4, step_metrics)  # since the previous line: 2 steps in 1 s
  assert rates == {"steps_per_sec": 2.0, "clips_per_sec": 16.0}
  assert stream.getvalue().splitlines() == [
    "step 2/4 | loss 1.2346 | acc 0.500 | lr 0.001 | 1.00 steps/s | 8.0 clips/s | ETA 0m02s",
    "step 4/4 | loss 1.2346 | acc 0.500 | lr 0.001 | 2.00 steps/s | 16.0 clips/s | ETA 0m00s",
  ]
