r"""Training curves of one or more runs in one PNG.

  python -m vidtx.tools.plot runs/ts runs/ts_space --out=curves.png [--overwrite]

Reads each RUN/metrics.jsonl (vidtx.progress.MetricsLog: one JSON object per logged step, with
'loss', 'accuracy', 'learning_rate' at training steps and 'val_top1' at evaluations) and draws
four panels against the step: loss, training accuracy, learning rate and evaluation top-1, the
runs overlaid and named in a legend (the RUN folder's name, its path when two names clash). A
RUN may be kept in a bucket (gs://bucket/run); --out is local.

--out must end in .png and must not exist: a file there is never replaced unless --overwrite is
given (vidtx writes over no file of the user's by surprise), and it is never one of the runs'
files, even through a link (vidtx.outputs). Exit status 2 with one line on stderr for a missing
metrics.jsonl (naming the run), an existing --out or a bad path; all checked before reading.
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from vidtx import outputs, paths
from vidtx.errors import UserError

# (metrics.jsonl key, panel title), one panel each, in this order.
PANELS = (
  ("loss", "loss"),
  ("accuracy", "training accuracy"),
  ("learning_rate", "learning rate"),
  ("val_top1", "eval top-1"),
)


def read_series(path: str) -> dict[str, tuple[list[int], list[float]]]:
  """{key: (steps, values)} of the numeric fields of a metrics.jsonl, by step (a step logged
  twice keeps its last value); blank and torn lines (a run killed mid-write) are skipped."""
  by_key: dict[str, dict[int, float]] = {}
  for line in paths.read_text(path).splitlines():  # A local file or a gs:// object.
    try:
      record = json.loads(line)
      step = int(record["step"])
    except (ValueError, KeyError, TypeError):
      continue
    for key, value in record.items():
      if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
        by_key.setdefault(key, {})[step] = float(value)
  return {
    key: (sorted(values), [values[s] for s in sorted(values)]) for key, values in by_key.items()
  }


def run_names(runs: Sequence[str]) -> list[str]:
  """Legend names: each run folder's name, or its path where two names would clash."""
  names = [os.path.basename(os.path.normpath(run)) or run for run in runs]
  return [name if names.count(name) == 1 else run for name, run in zip(names, runs, strict=True)]


def figure(runs: dict[str, dict[str, tuple[list[int], list[float]]]]) -> Any:
  """A Figure (Agg canvas, no pyplot) with one panel per PANELS entry and one line per run that
  logged that key; `runs` maps a legend name to read_series' result."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.ticker import MaxNLocator

  fig = Figure(figsize=(12, 8), dpi=100, layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(2, 2, sharex=True).ravel()  # One step axis: evaluations line up.
  for ax, (key, title) in zip(axes, PANELS, strict=True):
    for name, series in runs.items():
      if key in series:
        steps, values = series[key]
        # Markers: an evaluation series is often a handful of points.
        ax.plot(steps, values, label=name, marker="." if len(steps) < 50 else None)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # Steps are whole numbers.
    ax.grid(alpha=0.3)
    if not ax.lines:
      ax.text(0.5, 0.5, f"no {key!r} logged", ha="center", va="center", transform=ax.transAxes)
    elif key == "learning_rate":
      ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
  handles, labels = axes[0].get_legend_handles_labels()
  for ax in axes[1:]:  # A run may lack some keys: the legend lists every run once.
    for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
      if label not in labels:
        handles.append(handle)
        labels.append(label)
  fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4) or 1)
  return fig


def plot(runs: Sequence[str], out: str, *, overwrite: bool = False) -> str:
  """Draws the runs' metrics.jsonl into the PNG `out`; returns its path.

  Raises FileNotFoundError naming a run without metrics.jsonl, FileExistsError when `out`
  exists and not `overwrite`, ValueError for an `out` that is not a .png, is a directory, or is
  one of the runs' files (vidtx.outputs.OverlapError).
  """
  # Before reading anything: the PNG must be a new file (or --overwrite) and never one of the
  # runs' files, however spelt (a link named curves.png to a metrics.jsonl is that file).
  metrics = [os.path.join(run, "metrics.jsonl") for run in runs]
  outputs.check_paths({"RUN": list(runs), "RUN/metrics.jsonl": metrics}, {"--out": out})
  outputs.check_output_file(out, "--out", overwrite=overwrite, suffixes=(".png",))
  series = {}
  for name, run, path in zip(run_names(runs), runs, metrics, strict=True):
    if not paths.isfile(path):
      raise FileNotFoundError(f"Run {run}: no metrics.jsonl ({path}); is it a train.py workdir?")
    series[name] = read_series(path)
  fig = figure(series)
  with outputs.atomic_writer(out, "wb") as f:  # Never a half-written PNG under the name.
    fig.canvas.print_png(f)
  return out


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m vidtx.tools.plot",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("runs", nargs="+", metavar="RUN", help="train.py workdirs.")
  parser.add_argument("--out", required=True, help="The PNG to write (must not exist).")
  parser.add_argument("--overwrite", action="store_true", help="Replace --out if it exists.")
  args = parser.parse_args(argv)
  try:
    path = plot(args.runs, args.out, overwrite=args.overwrite)
  except (OSError, UserError) as error:
    print(f"plot: {error}", file=sys.stderr)
    return 2
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
