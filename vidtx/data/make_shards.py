r"""Converts downloaded video datasets into DMVR TFRecord shards (vidtx.data.dmvr).

  python -m vidtx.data.make_shards --source=kinetics --input=k400/train.csv --video_dir=k400/train \
      --output_dir=/data/k400 [--split=train] [--num_shards=16] [--fps=0] [--short_side=256] \
      [--jpeg_quality=90] [--num_workers=N] [--max_frames=0] [--min_frames=1] [--label_map=FILE] \
      [--duplicates=skip|keep|error] [--conflicts=error|skip|merge|keep]
  python -m vidtx.data.make_shards --source=ssv2 --input=something-something-v2-train.json \
      --labels_json=something-something-v2-labels.json --video_dir=20bn-something-something-v2 ...
  python -m vidtx.data.make_shards --source=epic --input=EPIC_100_train.csv \
      --video_dir=EPIC-KITCHENS \
      [--epic_noun_classes=EPIC_100_noun_classes.csv --epic_verb_classes=EPIC_100_verb_classes.csv]
  python -m vidtx.data.make_shards --source=csv --input=videos.csv --video_dir=videos ...
  python -m vidtx.data.make_shards --source=folders --input=ROOT --output_dir=OUT \
      [--val_fraction=0.1] [--seed=0] ...

Sources (--input is the annotation file; for folders, the root folder):
  kinetics  CSV `label,youtube_id,time_start,time_end,split` (no `label` in unlabelled test CSVs:
            those videos get label -1). A video is the pre-cut clip
            `{youtube_id}_{time_start:06d}_{time_end:06d}.{mp4,webm,mkv,...}` anywhere under
            --video_dir (e.g. in a `{label}/` folder), else the full video `{youtube_id}.{ext}`
            cut to [time_start, time_end) seconds.
  ssv2      Something-Something v2 split JSON; --labels_json maps each template (without its
            brackets) to the class index; videos `{id}.webm`.
  epic      Epic-Kitchens-100 CSV; one example per narration (its start..stop segment of
            `{video_id}.MP4` anywhere under --video_dir), labels [noun_class, 300 + verb_class],
            labels.txt = the 300 nouns then the 97 verbs.
  csv       `path,label[,start,end]` (optional header); label a class name or an integer index;
            paths relative to --video_dir; start / end in seconds.
  folders   no annotations, no --video_dir: ROOT/<class>/<video> (anywhere under the class
            folder) is split here into train and validation, class by class: round(val_fraction
            * n) of a class's n videos (half up; at least 1 when n >= 2, at most n - 1), drawn
            with --seed from the sorted file names; --val_fraction=0: train only. Or
            ROOT/train/<class>/... with ROOT/val/<class>/... (or validation/): that split is kept
            (--val_fraction is then an error). Classes: the sorted folder names (a class only in
            val/ is an error; a name labels.txt cannot hold as it is: a line break, spaces at
            its ends, empty, not UTF-8, is refused naming the folder); video id: the path
            relative to ROOT; hidden entries and files without a video extension are skipped.
            Linked folders are followed, each real folder once (device and inode): a loop or a
            second path to a folder is not followed, and one warning line lists them. A split
            drawn here draws from the videos that open and decode a first frame; the others go
            with train (reported bad there), so corrupt files never fill validation. A video
            in several class folders (a link to one file, or a copy with the same size and
            sha256) follows --conflicts (below: skip, merge and keep per class folder). One run
            writes both tables, each of --num_shards shards (at most one per video), records
            the split in folders_split.json (a rerun resumes only the same split), lists it in
            train.csv and validation.csv (`path,class`, path relative to ROOT; written before
            the conversion), warns (one line) when a class has fewer than 3 validation videos,
            naming them and the --val_fraction that fixes it, and prints the train.py command
            that fine-tunes on them: quoted for the shell, run in the shards folder (cd) when
            its path cannot go in --config's data= (a comma, spaces at its ends), with a line
            saying random flips will be off when class names say left / right / clockwise
            (class_labels.direction_classes), and not printed when a split holds no converted
            video or there are fewer than 2 classes (the final lines say why).

Output in --output_dir: `{split}.tfrecord-0000i-of-0000N` (the table `{split}.tfrecord@N`), one
SequenceExample per video (video i in shard i % N); labels.txt (line i = class i: --label_map,
else an existing labels.txt, so later splits reuse the training split's map, else the dataset's
own list or the sorted class names of the input); `{split}_report.txt` (the videos left out and
why); `{split}_summary.json`; `{split}_shards/` (one JSON per shard: its counts and bad videos;
and its record index, `NAME.idx` in DALI's format with a sidecar `NAME.idx.json`:
vidtx.data.record_index).

--output_dir must be new, empty, or a directory this tool wrote (its `.vidtx` marker, or from
before the marker a `{split}_summary.json` of this tool): anything else is refused before the
annotations are read, so a folder of other files is never written into (vidtx.ownership). It
must not be, or hold, an input (--input, --video_dir, ...), nor lie inside a folders --input
(vidtx.outputs.check_paths). One conversion at a time writes into it: a second one refuses,
naming the first (its lock, vidtx.locks), before it writes anything.

A shard is written under a hidden temporary name and renamed when complete; a rerun skips the
shards that exist, so an interrupted conversion resumes where it stopped. A bad video (missing,
empty, corrupt, too short, a segment outside it, an unknown label) is listed in the report and
never stops the conversion.

Repeated rows: rows for the same video and segment (the same id, file, start and end; input rows
are numbered from 1, a header not counted) are checked before anything is written.
  --duplicates  rows that repeat an earlier row's labels too. skip (default): left out, listed in
                the report as "duplicate of input row N" and counted as bad; keep: written again;
                error: stop.
  --conflicts   rows that give a video and segment other labels than an earlier row. error
                (default): stop, naming the first of them (a single-label dataset should not have
                any); skip: leave all of that video's rows out (reported, counted as bad); merge:
                one example with all the labels, in the order of the rows (a multi-label dataset
                listed one label per row, read with dataset_configs.multi_label=True); keep: one
                example per row, each with its own label.
The summary counts them ('duplicates': repeated rows, 'conflicts': videos with conflicting
labels, 'merged': rows folded into an earlier row's example) and the final line says so.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from vidtx import locks, outputs
from vidtx.data import folder_split, shard_tables, sources
from vidtx.errors import UserError

# TensorFlow (dmvr, shard_writer, class_labels) and PyAV (video_decode) are imported inside the
# functions that use them (here, in shard_tables and in folder_split): --help and argument errors
# answer before those imports.

SOURCES = ("kinetics", "ssv2", "epic", "csv", "folders")
# --duplicates: class_labels.DUPLICATE_MODES, here without its TensorFlow import (a test checks
# that they agree).
DUPLICATE_MODES = ("skip", "keep", "error")


def describe_repeats(
  summary: dict[str, Any], duplicates: str, conflicts: str, *, folders: bool = False
) -> str:
  """'  repeated rows: ...' for the final lines, or '' when the input had none; `folders`: the
  conflicts are videos in several class folders."""
  parts = []
  if summary.get("duplicates"):
    done = "left out (bad)" if duplicates == "skip" else "written again"
    parts.append(f"{summary['duplicates']} duplicate row(s) {done} (--duplicates={duplicates})")
  if summary.get("conflicts"):
    done = {
      "skip": "left out (bad)",
      "merge": f"merged ({summary.get('merged', 0)} row(s) folded into multi-label examples)",
      "keep": "written once per label",
    }[conflicts]
    where = "in several class folders" if folders else "under conflicting labels"
    parts.append(f"{summary['conflicts']} video(s) {where} {done} (--conflicts={conflicts})")
  if not parts:
    return ""
  return ("  repeated videos: " if folders else "  repeated rows: ") + "; ".join(parts)


def load_source(
  source: str,
  input_path: str,
  video_dir: str,
  *,
  labels_json: str | None = None,
  epic_noun_classes: str | None = None,
  epic_verb_classes: str | None = None,
) -> sources.Source:
  """The items of `input_path` for a --source name."""
  if source == "kinetics":
    return sources.kinetics_source(input_path, video_dir)
  if source == "ssv2":
    return sources.ssv2_source(input_path, labels_json, video_dir)
  if source == "epic":
    return sources.epic_source(input_path, video_dir, epic_noun_classes, epic_verb_classes)
  if source == "csv":
    return sources.csv_source(input_path, video_dir)
  if source == "folders":
    raise UserError("--source=folders writes two splits: see folder_split.write_folders.")
  raise UserError(f"--source={source!r}: expected one of {list(SOURCES)}.")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m vidtx.data.make_shards",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--source", required=True, choices=SOURCES, help="Annotation format.")
  parser.add_argument(
    "--input",
    required=True,
    help="The annotation file: Kinetics / Epic-Kitchens / generic CSV, or the SSv2 split JSON; "
    "folders: the root folder, ROOT/<class>/<video> or ROOT/{train,val}/<class>/<video>.",
  )
  parser.add_argument(
    "--video_dir",
    help="Where the videos are (searched recursively for kinetics and epic); not for folders.",
  )
  parser.add_argument("--output_dir", required=True, help="Where the shards go.")
  parser.add_argument("--labels_json", help="ssv2: something-something-v2-labels.json.")
  parser.add_argument(
    "--epic_noun_classes",
    help="epic: EPIC_100_noun_classes.csv (id,key,...) "
    "for the class names (default: the narrations' words).",
  )
  parser.add_argument("--epic_verb_classes", help="epic: EPIC_100_verb_classes.csv.")
  parser.add_argument(
    "--label_map",
    help="Class names, one per line (line i = class i); "
    "default: OUT/labels.txt if it exists, else built from the input.",
  )
  parser.add_argument("--split", help="Table name (default: from the input, e.g. train).")
  # None, not the default value, when not passed: for the user's own split passing it is an error.
  parser.add_argument(
    "--val_fraction",
    type=float,
    help="folders, ROOT/<class>/<video>: the share of each class's videos drawn for the "
    f"validation split (default {sources.DEFAULT_VAL_FRACTION}; 0: train only).",
  )
  parser.add_argument(
    "--seed",
    type=int,
    help="folders: the seed of the validation draw and of the training videos' order (default 0).",
  )
  parser.add_argument("--num_shards", type=int, default=16, help="Shards of the table.")
  parser.add_argument(
    "--fps", type=float, default=0.0, help="Frames per second to store (0: the native rate)."
  )
  parser.add_argument(
    "--short_side",
    type=int,
    default=0,
    help="Resize the shorter side to this many pixels (0: keep the size).",
  )
  parser.add_argument("--jpeg_quality", type=int, default=90, help="JPEG quality, 1-100.")
  # Half the CPUs: a worker's FFmpeg decoding runs on threads of its own.
  parser.add_argument(
    "--num_workers",
    type=int,
    default=max(1, (os.cpu_count() or 1) // 2),
    help="Processes; each writes whole shards (default: half the CPUs).",
  )
  parser.add_argument(
    "--max_frames", type=int, default=0, help="Keep at most this many frames per video (0: all)."
  )
  parser.add_argument(
    "--min_frames", type=int, default=1, help="Videos with fewer frames are left out as too short."
  )
  parser.add_argument(
    "--duplicates",
    choices=DUPLICATE_MODES,
    default="skip",
    help="Rows repeating an earlier row (same video, segment and labels): "
    "skip (default: left out and reported), keep, or error.",
  )
  parser.add_argument(
    "--conflicts",
    choices=sources.CONFLICT_MODES,
    default="error",
    help="Rows giving a video and segment other labels than an earlier row (folders: a video "
    "in several class folders, as a link or a copy with the same bytes): error (default), skip "
    "(leave them out, reported), merge (one multi-label example), or keep (one example per row "
    "or class folder).",
  )
  return parser.parse_args(argv)


def _check_source_flags(args: argparse.Namespace) -> None:
  """The flags that --source=folders takes and the others do not, and the reverse."""
  folders = args.source == "folders"
  for flag, given in (
    ("--video_dir", args.video_dir is not None and folders),
    ("--split", args.split is not None and folders),
    ("--val_fraction", args.val_fraction is not None and not folders),
    ("--seed", args.seed is not None and not folders),
  ):
    if given:
      raise UserError(
        f"{flag} is not used by --source={args.source}"
        + (
          ": --input is the root folder, and one run writes train and validation."
          if folders
          else "; it only splits --source=folders."
        )
      )


def check_io_paths(args: argparse.Namespace) -> None:
  """OverlapError (one line) when --output_dir is, or holds, an input file or folder; for
  --source=folders also when it lies inside --input (it would be read as a class folder)."""
  inputs = {
    "--input": args.input,
    "--video_dir": args.video_dir,
    "--labels_json": args.labels_json,
    "--epic_noun_classes": args.epic_noun_classes,
    "--epic_verb_classes": args.epic_verb_classes,
  }
  # The labels.txt of the output folder is only read (never replaced once it exists).
  own_labels = os.path.join(args.output_dir, "labels.txt")
  if args.label_map and not (
    os.path.exists(own_labels)
    and os.path.exists(args.label_map)
    and os.path.samefile(args.label_map, own_labels)
  ):
    inputs["--label_map"] = args.label_map
  outputs.check_paths(inputs, {"--output_dir": args.output_dir})
  if args.source == "folders" and "://" not in args.output_dir:
    real_root, real_out = os.path.realpath(args.input), os.path.realpath(args.output_dir)
    if os.path.commonpath([real_root, real_out]) == real_root:
      raise outputs.OverlapError(
        f"--output_dir {args.output_dir} is inside --input {args.input}, where it would be "
        "read as a class folder; choose an output directory outside it."
      )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the command; returns the summary of the split written (write_split's), or for
  --source=folders the summary of each split by name."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  summaries = _convert(args)
  out = os.path.abspath(args.output_dir)
  for split, summary in summaries.items():
    print(
      f"{summary['table']}: {summary['examples']} examples of {summary['videos']} videos, "
      f"{summary['bad']} bad (listed in {os.path.join(out, split + '_report.txt')}), "
      f"{summary['num_classes']} classes, {summary['seconds']:.1f} s"
    )
    repeats = describe_repeats(
      summary, args.duplicates, args.conflicts, folders=args.source == "folders"
    )
    if repeats:
      print(repeats)
  print("\n" + config_snippet(args.output_dir))
  if args.source != "folders":
    return summary
  _print_next_step(args, summaries)
  return summaries


def _convert(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
  """The conversion the flags ask for: each split's summary by name. A bad input (or an output
  the system refuses) exits 1 with its one-line message, not a traceback."""
  import tensorflow as tf

  from vidtx.data import shard_writer

  options = shard_writer.Options(
    fps=args.fps,
    short_side=args.short_side,
    jpeg_quality=args.jpeg_quality,
    max_frames=args.max_frames or None,
    min_frames=args.min_frames,
  )
  common = dict(
    num_shards=args.num_shards,
    fps=args.fps,
    short_side=args.short_side,
    jpeg_quality=args.jpeg_quality,
    num_workers=args.num_workers,
    max_frames=args.max_frames,
    min_frames=args.min_frames,
    label_map=args.label_map,
  )
  try:
    _check_source_flags(args)
    # Before the annotations are read and the video folder is walked (minutes on a big one).
    shard_tables.check_options(args.split or "train", args.num_shards, args.num_workers, options)
    check_io_paths(args)
    shard_tables.check_output_dir(args.output_dir)
    # An existing folder is locked before the inputs are read, so that a second conversion
    # refuses at once; a new one is locked where it is created (write_folders, write_split).
    early = "://" not in args.output_dir and os.path.isdir(args.output_dir)
    with (
      locks.hold(args.output_dir, shard_tables.LOCK_HOLDER) if early else contextlib.nullcontext()
    ):
      if args.source == "folders":
        return folder_split.write_folders(
          args.input,
          args.output_dir,
          val_fraction=args.val_fraction,
          seed=args.seed or 0,
          conflicts=args.conflicts,
          lock=not early,
          **common,
        )
      source = load_source(
        args.source,
        args.input,
        args.video_dir,
        labels_json=args.labels_json,
        epic_noun_classes=args.epic_noun_classes,
        epic_verb_classes=args.epic_verb_classes,
      )
      split = args.split or source.split
      return {
        split: shard_tables.write_split(
          source.items,
          args.output_dir,
          split,
          class_names=source.class_names,
          class_splits=source.class_splits,
          duplicates=args.duplicates,
          conflicts=args.conflicts,
          lock=not early,
          **common,
        )
      }
  except (UserError, OSError) as e:
    # Bad inputs (and an output the system refuses) are the user's to fix: the message, not a
    # traceback.
    print(f"vidtx.data.make_shards: error: {e}", file=sys.stderr)
    sys.exit(1)
  except tf.errors.OpError as e:  # TensorFlow's file errors (a shard that cannot be written).
    print(f"vidtx.data.make_shards: error: {e.message}", file=sys.stderr)
    sys.exit(1)


def _print_next_step(args: argparse.Namespace, summaries: dict[str, dict[str, Any]]) -> None:
  """--source=folders: the train.py command that fine-tunes on the shards, or why there is none
  (no validation split, a split without a video, fewer than 2 classes)."""
  from vidtx.data import class_labels

  out = os.path.abspath(args.output_dir)
  if "validation" not in summaries:
    # configs/finetune.py evaluates every epoch and keeps the best checkpoint: it needs one.
    if args.val_fraction == 0:
      print(
        "\nNo validation split (--val_fraction=0): configs/finetune.py needs one; run again "
        "into a new --output_dir with --val_fraction > 0 to fine-tune on these videos."
      )
    else:  # Every class kept its one readable video for training.
      print(
        "\nNo validation split: no class has 2 videos that can be read (a class keeps one for "
        "training), and configs/finetune.py needs one; add videos, then run again into a new "
        "--output_dir."
      )
    return
  # Never a command that cannot work: configs/finetune.py needs a video in each split, 2 classes.
  problems = [
    f"the {split} split holds no video that could be converted "
    f"({os.path.join(out, split + '_report.txt')} says why)"
    for split in ("train", "validation")
    if summaries[split]["examples"] == 0
  ]
  if summaries["train"]["num_classes"] < 2:
    problems.append(f"{summaries['train']['num_classes']} class(es); a classifier needs 2")
  if problems:
    print(
      "\nNo fine-tune command: " + "; ".join(problems) + ". configs/finetune.py cannot train on "
      "these shards: fix or add videos, then run again into a new --output_dir."
    )
    return
  command = finetune_command(args.output_dir)
  where = (
    ""
    if command.startswith("python train.py")
    else "; the path of the shards cannot go in --config (a comma, or spaces at its ends), so "
    "the command runs in their folder: give CHECKPOINT_DIR as an absolute path"
  )
  print(
    f"\nNext, fine-tune a pretrained model on them (model: timesformer, vivit_fe or xvit; "
    "CHECKPOINT_DIR: a checkpoint converted with python -m vidtx.convert, or a train.py run "
    f"directory; the model follows its size; see docs/checkpoints.md{where}):\n  {command}"
  )
  note = flip_note(class_labels.read_labels(os.path.join(args.output_dir, "labels.txt")))
  if note:
    print(note)


def flip_note(names: Sequence[str]) -> str:
  """The line under the fine-tune command when classes name a direction a horizontal flip
  swaps (class_labels.direction_classes): configs/finetune.py then trains without flips."""
  from vidtx.data import class_labels

  found = class_labels.direction_classes(names)
  if not found:
    return ""
  shown = ", ".join(repr(name) for name in found[: folder_split.SHOWN_CLASSES])
  more = (
    f" and {len(found) - folder_split.SHOWN_CLASSES} more"
    if len(found) > folder_split.SHOWN_CLASSES
    else ""
  )
  return (
    f"  random flips will be off: classes {shown}{more} name a direction a mirror image swaps "
    "(flip=1 turns them on)"
  )


def config_arg_safe(path: str) -> bool:
  """Whether `path` survives as a value of a config file's argument (`file.py:key=value,...`):
  vidtx.configs.common.parse_arg splits the argument at commas and strips each value."""
  return bool(path) and "," not in path and path == path.strip()


def finetune_command(output_dir: str, workdir: str = "runs/mine") -> str:
  """The train.py command that fine-tunes a pretrained model on the shards in `output_dir`,
  quoted for a POSIX shell.

  data= goes in the --config argument, which configs/finetune.py splits at commas and strips;
  where the path would not survive that (config_arg_safe), the command runs in the shards
  folder itself (`cd PATH && vidtx-train ...`, the packaged recipe, data=.), with an absolute
  --workdir: data= is what sizes the classes, splits and schedule, so no --config.* flag after
  it could stand in for it.
  """
  data = os.path.abspath(output_dir)
  if config_arg_safe(data):
    config = f"--config=configs/finetune.py:model=timesformer,data={data},init=CHECKPOINT_DIR"
    return f"python train.py {shlex.quote(config)} {shlex.quote('--workdir=' + workdir)}"
  return (
    f"cd {shlex.quote(data)} && vidtx-train "
    "--config=finetune:model=timesformer,data=.,init=CHECKPOINT_DIR "
    f"{shlex.quote('--workdir=' + os.path.abspath(workdir))}"
  )


def config_snippet(output_dir: str) -> str:
  """The dataset config of every split converted into `output_dir` (its *_summary.json)."""
  summaries = []
  for path in sorted(glob.glob(os.path.join(glob.escape(output_dir), "*_summary.json"))):
    with open(path, encoding="utf-8") as f:
      summaries.append(json.load(f))
  if not summaries:
    return ""
  # train first, then validation, test, others.
  order = {"train": 0, "validation": 1, "test": 2}
  summaries.sort(key=lambda s: (order.get(s["split"], 3), s["split"]))
  base_dir = summaries[0]["base_dir"]
  tables = {s["split"]: s["table"] for s in summaries}
  examples = {s["split"]: s["examples"] for s in summaries}
  num_classes = max(s["num_classes"] for s in summaries)
  lines = [
    "config.dataset_name = 'dmvr'",
    f"config.dataset_configs.base_dir = {base_dir!r}",
    f"config.dataset_configs.tables = {tables!r}",
    f"config.dataset_configs.examples_per_subset = {examples!r}",
    f"config.dataset_configs.num_classes = {num_classes}",
  ]
  class_splits = next((s["class_splits"] for s in summaries if s.get("class_splits")), None)
  if class_splits:
    # One label per group (EPIC: a noun in [0, 300), a verb in [300, 397)), as scenic reads them.
    lines.append(f"config.dataset_configs.class_splits = {class_splits!r}")
  elif any(s.get("merged") for s in summaries):
    # --conflicts=merge wrote examples with several labels: the reader takes them multi-hot.
    lines.append("config.dataset_configs.multi_label = True")
  flags = ["--config.dataset_name=dmvr", f"--config.dataset_configs.base_dir={base_dir}"]
  flags += [f"--config.dataset_configs.tables.{k}={v}" for k, v in tables.items()]
  flags += [f"--config.dataset_configs.examples_per_subset.{k}={v}" for k, v in examples.items()]
  flags.append(f"--config.dataset_configs.num_classes={num_classes}")
  if not class_splits and any(s.get("merged") for s in summaries):
    flags.append("--config.dataset_configs.multi_label=True")
  return "\n".join(lines) + "\n\n# or as train.py / eval.py flags:\n" + " \\\n  ".join(flags)


def run_cli() -> None:
  """The command line (vidtx-make-shards, python -m vidtx.data.make_shards)."""
  # Through the package module, so that spawned workers unpickle the same classes.
  from vidtx import cli
  from vidtx.data import make_shards

  cli.quiet_start_up()
  make_shards.main()


if __name__ == "__main__":
  run_cli()
