r"""Converts a peer's checkpoint, or exports a train.py run, into a vidtx converted-checkpoint
directory.

  python -m vidtx.convert --src PATH --out DIR [--format auto|run|hf|timesformer|scenic|vit_npz|
      big_vision|timm] [--overwrite] [--ignore REGEX ...] [--num_heads H] [--num_classes C]
      [--attention A] [--attention_order O] [--crop_size S] [--normalization vit|timesformer|
      imagenet] [--labels FILE]
  python -m vidtx.convert --src RUN --out DIR [--step N | --which best|latest]
      # RUN: a train.py --workdir

DIR gets the parameters (orbax) and vidtx_model.json (model, preprocessing, labels, source;
vidtx.checkpoints.store), which train.py (config.init_from.checkpoint_path=DIR), eval.py
(--checkpoint=DIR) and `python -m vidtx.predict --checkpoint=DIR` read.

- A train.py run (RUN/config.json and RUN/checkpoints/; vidtx.run_files; RUN may be kept
  in a bucket, gs://bucket/run, while DIR is local) exports the
  parameters of its best complete checkpoint (the highest evaluation of the run's
  best_checkpoint_metric; the newest where the run ranks none), or of --which latest (the newest
  complete one) or --step N, with the model, input preprocessing, view aggregation and class
  names of its config; its dataset is not needed. One line says which step was taken, with its
  evaluation value and the best's and newest's.
- The model config is inferred from the checkpoint and its config; options fill in what a
  format does not record (timm / official TimeSformer: --num_heads for non-standard widths;
  scenic: --attention for checkpoints without a class token, --attention_order for Model 3,
  --crop_size for Models 1, 3, 4 when not 224).
- Unknown or missing names, or parameters of the wrong shape, fail with the full list;
  --ignore REGEX drops source names on purpose (e.g. 'pre_logits/.*').
- DIR is written under a temporary name and renamed when complete; an existing DIR is only
  replaced with --overwrite, and only when it is a converted checkpoint (its .vidtx marker says
  so and lists what vidtx wrote, or it has this layout from before the marker) or empty: never
  the source (a run given as --src and --out), a directory holding the source, nor any other
  folder. A converted checkpoint holding files vidtx did not write (the user's NOTES.md, a
  predict results.jsonl kept there) is refused, naming them: move them out first; nothing of the
  user's is moved or deleted. This is checked before the conversion starts and again before the
  replace.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from vidtx import checkpoints, cli, outputs
from vidtx.checkpoints import convert_source, hub
from vidtx.errors import UserError

# run and store import JAX, Flax and orbax: inside the functions, so that --help answers at once.
if TYPE_CHECKING:
  from vidtx.checkpoints import store


def convert(
  src: str,
  out: str,
  *,
  format: str = "auto",
  overwrite: bool = False,
  ignore: tuple[str, ...] = (),
  num_heads: int | None = None,
  num_classes: int | None = None,
  attention: str | None = None,
  attention_order: str | None = None,
  crop_size: int | None = None,
  normalization: str | None = None,
  labels_file: str | None = None,
  step: int | None = None,
  which: str | None = None,
) -> store.Converted:
  """Converts `src` (`step` or `which`: the checkpoint of a train.py run; vidtx.run_files)
  and writes `out`; returns what was written."""
  from vidtx import run_files
  from vidtx.checkpoints import store

  out = os.path.abspath(out)
  # Before the (possibly long) conversion: --out is never the source (a file or folder) nor
  # holds it, and an existing out is refused, or with --overwrite replaced only when it is a
  # converted checkpoint holding nothing vidtx did not write (the user's files make it refuse,
  # naming them), other than the source and its parents.
  if not hub.is_hub_name(src):  # hf:ORG/NAME is no path (its cache is vidtx's).
    outputs.check_paths({"--src": src}, {"--out": out})
  store.check_out_dir(out, overwrite=overwrite, source=src)
  is_run = format == "run" or (
    format == "auto" and not hub.is_hub_name(src) and run_files.looks_like_run(src)
  )
  if which is not None and not is_run:
    raise UserError(
      f"--which={which} picks a checkpoint of a train.py run; {src} is not one (expected a "
      "directory with config.json and checkpoints/)."
    )
  if is_run and num_classes is None:
    converted = run_files.export_run(src, step=step, which=which)
  else:  # A peer's format (a run given --num_classes: convert_source refuses it).
    converted = convert_source(
      src,
      format,
      ignore=ignore,
      num_heads=num_heads,
      num_classes=num_classes,
      attention=attention,
      attention_order=attention_order,
      crop_size=crop_size,
      step=step,
    )
  if normalization:
    from vidtx.data import reader_config  # The reader's presets (imports TensorFlow: only here).

    if normalization not in reader_config.NORMALIZATIONS:
      raise UserError(
        f"--normalization={normalization!r}: expected one of "
        f"{sorted(reader_config.NORMALIZATIONS)}."
      )
    mean, std = reader_config.NORMALIZATIONS[normalization]
    converted.preprocessing.update(mean=list(mean), std=list(std))
    converted.source.setdefault("notes", []).append(f"--normalization={normalization}")
  if labels_file:
    with open(labels_file) as f:
      labels = [line.strip() for line in f if line.strip()]
    if len(labels) != converted.num_classes:
      raise UserError(
        f"--labels {labels_file}: {len(labels)} names for a head of "
        f"{converted.num_classes} classes."
      )
    converted.labels = labels
  store.save(out, converted, overwrite=overwrite)
  return converted


def describe(converted: store.Converted, out: str) -> str:
  from vidtx.inference import preprocess  # predict's words for the preprocessing.

  config = converted.model_config
  p = converted.preprocessing
  # A run: which checkpoint was taken and its evaluation (vidtx.run_files.choice_line).
  lines = [converted.source["checkpoint"]] if converted.source.get("checkpoint") else []
  lines += [
    f"wrote {out}",
    f"  model: {converted.model_name} {config.get('attention')} "
    f"D={config.get('hidden_size')} L={config.get('num_layers')} H={config.get('num_heads')} "
    f"patch {config.get('variant')}, {converted.num_classes} classes"
    + (" (with names)" if converted.labels else ""),
    f"  input: {preprocess.describe_frames(p)}, short side {preprocess.eval_short_side(p)}, "
    f"{p['crop_size']} crop, mean {p['mean']} std {p['std']}; eval {p['num_test_clips']} clip(s)"
    f" x {3 if p['do_three_spatial_crops'] else 1} crop(s), {p['aggregation']}",
  ]
  lines += [f"  note: {note}" for note in converted.source.get("notes", [])]
  return "\n".join(lines)


def _define_flags() -> None:
  from absl import flags

  flags.DEFINE_string(
    "src", None, "Checkpoint file or folder to convert, or a train.py --workdir to export."
  )
  flags.DEFINE_string("out", None, "Output directory.")
  flags.DEFINE_enum("format", "auto", ["auto", *checkpoints.FORMATS], "Source format.")
  flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace an existing --out that is a converted "
    "checkpoint (never the source or another folder).",
  )
  flags.DEFINE_multi_string("ignore", [], "Regex of source names to drop (repeatable).")
  flags.DEFINE_integer("num_heads", None, "Heads, where the source does not record them.")
  flags.DEFINE_integer("num_classes", None, "Classes of a zero head for head-less sources.")
  flags.DEFINE_string(
    "attention", None, "scenic without class token: spatio_temporal | factorised_dot_product."
  )
  flags.DEFINE_string("attention_order", None, "scenic Model 3: space_time | time_space.")
  flags.DEFINE_integer("crop_size", None, "scenic Models 1, 3, 4: the crop size (default 224).")
  flags.DEFINE_string(
    "normalization", None, "Override the input normalisation: vit | timesformer | imagenet | none."
  )
  flags.DEFINE_string("labels", None, "Class names, one per line, to store with the model.")
  cli.define_run_checkpoint_flags()
  flags.mark_flags_as_required(["src", "out"])


def main(argv: list[str]) -> None:
  del argv
  from absl import flags, logging

  logging.set_verbosity(logging.WARNING)  # orbax logs every write at INFO.
  f = flags.FLAGS
  start = time.time()
  try:
    converted = convert(
      f.src,
      f.out,
      format=f.format,
      overwrite=f.overwrite,
      ignore=tuple(f.ignore),
      num_heads=f.num_heads,
      num_classes=f.num_classes,
      attention=f.attention,
      attention_order=f.attention_order,
      crop_size=f.crop_size,
      normalization=f.normalization,
      labels_file=f.labels,
      step=f.step,
      which=f.which,
    )
  except (UserError, OSError, ImportError) as e:
    print(f"vidtx.convert: error: {e}", file=sys.stderr)
    sys.exit(1)
  print(describe(converted, os.path.abspath(f.out)) + f"\n  ({time.time() - start:.1f} s)")


def run_cli() -> None:
  """The command line (vidtx-convert, python -m vidtx.convert)."""
  from absl import app

  cli.quiet_start_up()
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser(__doc__))


if __name__ == "__main__":
  run_cli()
