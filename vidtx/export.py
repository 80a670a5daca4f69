r"""Exports a vidtx model out of vidtx: a Hugging Face folder or a TensorFlow SavedModel.

  python -m vidtx.export --src SRC --out DIR --format=hf|savedmodel [--overwrite]
      [--step N | --which best|latest] [--batch_size B]

SRC: a converted checkpoint (python -m vidtx.convert; vidtx.checkpoints.store) or a train.py
run directory: its best complete checkpoint (the highest evaluation of the run's
best_checkpoint_metric; the newest where the run ranks none), --which latest (the newest complete
one) or --step N (vidtx.run_files); one line says which step was taken and its evaluation.

- --format=hf: a Hugging Face folder (config.json, weights) that transformers loads
  (vidtx.checkpoints.export_hf).
- --format=savedmodel: a TensorFlow SavedModel with serving signatures for normalised float32
  clips and for uint8 frames, and vidtx_preprocessing.json (vidtx.checkpoints.export_tf).
  --batch_size fixes the batch size of the signatures (default: any).

DIR is written under a temporary name next to it and renamed when complete: a failed export
leaves nothing behind. DIR must not exist or be empty; --overwrite replaces an earlier export
(marked by vidtx's .vidtx file, kind 'exported', which lists what it wrote), never the source, a
folder holding the source or inside it, nor any other folder; an earlier export holding files
vidtx did not write (a DEPLOY.md put there) is refused, naming them: move them out first. All
this is checked before the export starts. docs/export.md says how to load each format.

A run that train.py is writing exports a complete checkpoint (the note says which newer ones
were skipped); with none complete yet, one line says so. SRC may be kept in a bucket
(gs://bucket/run, or a converted checkpoint there); DIR is a local directory.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

from vidtx import cli, outputs, ownership, paths
from vidtx.errors import UserError

# store imports JAX, Flax and orbax: inside the functions, so that --help answers at once.
if TYPE_CHECKING:
  from vidtx.checkpoints import store

FORMATS = ("hf", "savedmodel")
KIND = "exported"


def check_out_dir(out: str, *, overwrite: bool, source: str | None = None) -> None:
  """Raises unless `out` may receive an export: new, empty, or (with `overwrite`) an earlier
  export that is neither `source` nor holds it. Cheap: run before the export."""
  out = os.path.abspath(out)
  if source and not paths.is_url(source):  # A gs:// source holds no local directory.
    real_out, real_src = os.path.realpath(out), os.path.realpath(source)
    if real_out.startswith(real_src.rstrip(os.sep) + os.sep):
      raise ownership.NotOwnedError(
        f"{out} is inside the source {source}; choose an output directory outside it."
      )
  if not os.path.lexists(out):
    ownership.check_claimable(out, KIND)  # Permissions, a file in the way of a parent.
    return
  try:
    ownership.check_removable(out, KIND, protected=(source,))
  except ownership.NotOwnedError as e:
    if overwrite:
      raise
    raise FileExistsError(
      f"{out} exists; choose a new output directory (--overwrite would not replace it: {e})"
    ) from e
  if ownership.entries(out) and not overwrite:
    raise FileExistsError(f"{out} exists; pass --overwrite to replace it.")


def load_source(src: str, step: int | None = None, which: str | None = None) -> store.Converted:
  """A converted checkpoint directory, or a train.py run: its best complete checkpoint (the
  newest where it ranks none), `which='latest'` the newest, or `step` (vidtx.run_files)."""
  from vidtx import run_files
  from vidtx.checkpoints import store

  if store.is_converted_dir(src):
    for flag, value in (("--step", step), ("--which", which)):
      if value is not None:
        raise UserError(
          f"{flag}={value} picks a checkpoint of a train.py run; {src} is not one (a converted "
          "checkpoint holds one set of parameters)."
        )
    return store.load(src)
  if paths.isdir(src) and (
    run_files.is_run_dir(src) or paths.isdir(os.path.join(src, run_files.CHECKPOINTS_DIR))
  ):
    return run_files.export_run(src, step=step, which=which)
  raise UserError(
    f"--src={src}: neither a converted checkpoint ({store.MODEL_FILE}) nor a train.py run "
    f"({run_files.CONFIG_FILE} and {run_files.CHECKPOINTS_DIR}/); convert other checkpoints first "
    "with python -m vidtx.convert."
  )


def write(
  converted: store.Converted, out_dir: str, format: str, *, batch_size: int | None = None
) -> None:
  """Writes `converted` in `format` into the existing, empty `out_dir`."""
  if format == "hf":
    try:
      from vidtx.checkpoints import export_hf
    except ImportError as e:
      raise ImportError(
        f"--format=hf: vidtx.checkpoints.export_hf cannot be imported ({e})."
      ) from e
    export_hf.write(converted, out_dir)
  elif format == "savedmodel":
    from vidtx.checkpoints import export_tf

    export_tf.write(converted, out_dir, batch_size=batch_size)
  else:
    raise UserError(f"--format={format!r}: expected one of {list(FORMATS)}.")


def export(
  src: str,
  out: str,
  *,
  format: str,
  overwrite: bool = False,
  step: int | None = None,
  which: str | None = None,
  batch_size: int | None = None,
) -> store.Converted:
  """Exports `src` (a converted checkpoint or a train.py run) to `out` in `format`; returns the
  model that was exported."""
  if format not in FORMATS:
    raise UserError(f"--format={format!r}: expected one of {list(FORMATS)}.")
  if batch_size is not None and (format != "savedmodel" or batch_size < 1):
    raise UserError(
      f"--batch_size={batch_size}: expected a positive size, with --format=savedmodel only."
    )
  out = os.path.abspath(out)
  # Before the (possibly long) export: --out is never the source nor holds it, and an existing
  # --out is replaced only when it is an earlier export holding nothing vidtx did not write.
  outputs.check_paths({"--src": src}, {"--out": out})
  check_out_dir(out, overwrite=overwrite, source=src)
  converted = load_source(src, step, which)
  ownership.write_directory(
    out,
    KIND,
    lambda tmp: write(converted, tmp, format, batch_size=batch_size),
    recheck=lambda: check_out_dir(out, overwrite=overwrite, source=src),
  )
  return converted


def describe(converted: store.Converted, out: str, format: str) -> str:
  config = converted.model_config
  # A run: which checkpoint was taken and its evaluation (vidtx.run_files.choice_line).
  lines = [converted.source["checkpoint"]] if converted.source.get("checkpoint") else []
  lines += [
    f"wrote {out} ({format})",
    f"  model: {converted.model_name} {config.get('attention')}, {converted.num_classes} classes"
    + (" (with names)" if converted.labels else ""),
  ]
  # E.g. a run being written: which checkpoint was exported and which were skipped.
  lines += [f"  note: {note}" for note in converted.source.get("notes", [])]
  return "\n".join(lines)


def _define_flags(flag_values: Any = None) -> None:
  """Defines the flags in `flag_values` (default: absl's global FLAGS)."""
  from absl import flags

  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_string(
    "src", None, "Converted checkpoint directory, or a train.py --workdir.", flag_values=fv
  )
  flags.DEFINE_string(
    "out", None, "Output directory (new or empty, or an earlier export).", flag_values=fv
  )
  flags.DEFINE_enum(
    "format", None, list(FORMATS), "Hugging Face folder or TF SavedModel.", flag_values=fv
  )
  flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace an existing --out that is an earlier export (nothing else).",
    flag_values=fv,
  )
  cli.define_run_checkpoint_flags(fv)
  flags.DEFINE_integer(
    "batch_size",
    None,
    "savedmodel: a fixed batch size for the signatures (default: any).",
    flag_values=fv,
  )
  flags.mark_flags_as_required(["src", "out", "format"], flag_values=fv)


def main(argv: list[str], flag_values: Any = None) -> None:
  """The command's body (app.run calls it); `flag_values`: parsed flags, default absl's FLAGS."""
  del argv
  from absl import flags, logging

  logging.set_verbosity(logging.WARNING)  # orbax and TensorFlow log every write at INFO.
  f = flags.FLAGS if flag_values is None else flag_values
  start = time.time()
  try:
    converted = export(
      f.src,
      f.out,
      format=f.format,
      overwrite=f.overwrite,
      step=f.step,
      which=f.which,
      batch_size=f.batch_size,
    )
  except (UserError, OSError, ImportError) as e:
    message = " ".join(line.strip() for line in str(e).splitlines()) or type(e).__name__
    print(f"vidtx.export: error: {message}", file=sys.stderr)
    sys.exit(1)
  print(describe(converted, os.path.abspath(f.out), f.format) + f" ({time.time() - start:.1f} s)")


def run_cli() -> None:
  """The command line (vidtx-export, python -m vidtx.export)."""
  from absl import app

  cli.quiet_start_up()
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser(__doc__))


if __name__ == "__main__":
  run_cli()
