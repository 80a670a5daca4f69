r"""Classify video files (or a prepared clip) with a converted checkpoint or a train.py run.

  python -m vidtx.predict --checkpoint=DIR --video=FILE [--top_k=5] [--labels=FILE] \
      [--logits_out=OUT.npy] [--batch_size=8] [--rollout=OUT.png [--head_fusion=mean]]
  python -m vidtx.predict --checkpoint=DIR --input=CLIP.npy [--top_k=5] [--labels=FILE] \
      [--logits_out=OUT.npy] [--batch_size=8] [--rollout=OUT.png [--head_fusion=mean]]
  python -m vidtx.predict --checkpoint=DIR --video=FOLDER|GLOB|FILE | --list=FILE \
      [--out=RESULTS.jsonl|.csv [--per_view]] [--window=S [--hop=S] [--timeline_png=OUT.png]] \
      [--features=OUT_DIR [--token_features]] [--batch_size=8]
  python -m vidtx.predict --checkpoint=DIR --video=CLASS_FOLDERS [--labels_from_folders] \
      [--out=RESULTS.jsonl|.csv] [--per_class_csv=OUT.csv] [--confusion_png=OUT.png]
  (each form also takes --overwrite)

DIR is a converted-checkpoint directory (vidtx.checkpoints.store, written by vidtx.convert), or a
train.py run directory, converted in memory as vidtx.convert would: its best complete checkpoint
(the highest evaluation of the run's best_checkpoint_metric; the newest where it ranks none),
--which latest the newest, --step N that step; one line says which step and its evaluation.

Class folders (--labels_from_folders; on by itself, with a line saying so, when every video of
the --video folder lies in a subfolder named after a class of the checkpoint): each video's true
class is its top-level subfolder. After the predictions, top-1 and top-5 over the videos and the
worst classes are printed, and the per-class table (vidtx.metrics.per_class_csv, as evaluation's
eval_<split>_per_class.csv) and the labelled confusion matrix (metrics.confusion_matrix_figure, as
eval_<split>_confusion.png) are written to --per_class_csv and --confusion_png, by default next to
--out (RESULTS_per_class.csv, RESULTS_confusion.png); without either, only printed. Videos that
fail are left out of the counts (and counted).

--video: the frame count and rate are read from the container (or counted by a first streaming
pass), the checkpoint's evaluation clips are chosen with the reader's rule
(vidtx.data.sampling.eval_clip_indices_for, with the video's frame rate: the middle clip, or
evenly spaced clips; short videos loop), only those frames are kept while the video streams
through PyAV (as RGB; vidtx.video_io: memory does not grow with the video's length) and
turned into views by the reader's own code (sampling.eval_views:
short side to min_resize, centre crop or three crops, per-channel mean / std), so a video scores
as the evaluation scores the same frames. The views' logits are aggregated as the checkpoint says
(preprocessing.aggregation) and the top-k classes are printed with their probabilities.
--logits_out saves the per-view logits, float32 (V, num_classes).

--input: a float32 array (T, H, W, C) or (B, T, H, W, C) goes to the model as it is (no
preprocessing); T, H = W and C must be what the checkpoint was made for (num_frames, crop_size,
3: the positional and time embeddings fix them). Prints the top-k of every row; --logits_out
saves the raw logits (B, num_classes).

Many videos (a folder, searched recursively for video extensions, hidden files skipped; a glob;
--list, one path per line or a CSV whose first column is the path) share model calls of
--batch_size views. Each gets a line on stdout, or --out: .jsonl ({"id", "top_k": [{"label",
"prob"}], "view_logits" with --per_view}) or .csv (id, top1, top1_prob, top_k as
"label:prob;...", error). A video that cannot be decoded is reported on stderr and as
{"id", "error"}, and the others go on; the exit status is 1 only when none succeeded. A row is
formatted whole before it is written: one that cannot be written fails alone, and the summary
counts what the results hold. A file name that is not UTF-8 keeps its row, its odd bytes written
as \xNN. A --batch_size larger than the work pads the last call only to the next power of two.

--window S [--hop S]: every window [k * hop, k * hop + S) seconds of a video, on its frames'
presentation timestamps (variable frame rates included), is classified as a video of its own
(the same sampling), one result per window with "start" and "end" in seconds, in one streaming
pass (vidtx.inference.timeline), with a progress line on stderr of the seconds of video done (a
long video streams for minutes); --timeline_png draws the top-1 class over time. Both flags must
be finite, at least 1 ms, and at least one frame interval of each video (else that video fails,
naming the flag).

Outputs (--out, --logits_out, --rollout, --timeline_png, --features) are checked before any work
(vidtx.outputs): one that is an input (a video, a folder's or --list's video, the --list, the
checkpoint, --labels, --input) or another output is refused, and so is an existing file unless
--overwrite. Files are written atomically (--out when the run ends): a failed run leaves the
previous file, or none.

--features OUT_DIR: per video (or window) the pre-logits embedding (D,), float32 .npy, the mean
over its views (the head is linear: the head of the mean embedding is the mean of the views'
logits, which 'mean_logits' aggregates), and OUT_DIR/index.jsonl ({"id", "file", "shape"}),
named by the input's position and its id ('000002_sub__a.mp4.npy': never two inputs on one name);
--token_features adds the last block's token grid (T', N, D), mean over views, for models that
return it ('encoded_tokens': TimeSformer). OUT_DIR is new, empty, or written by --features
before (vidtx.ownership).

Class names: --labels (one per line), else the checkpoint's labels, else "class <i>".

A NaN or inf in the --input array, in a video's views or in the logits is an error naming the
file (and the clips or views), not a top-k of NaN.

--rollout OUT.png shows what the model looked at: for every view (or clip), its sampled frames
and below them the attention rollout (vidtx.rollout; Abnar & Zuidema, as in TimeSformer's
supplementary Fig. 1) laid over them as a heat map, titled with the view's top-1. The logits are
those of the same model call. TimeSformer (every attention) and ViViT Models 1-3.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from absl import app, flags, logging

from vidtx import cli, outputs, ownership
from vidtx.errors import UserError
from vidtx.inference import (
  class_folders,
  classifier,
  many_videos,
  pictures,
  preprocess,
  results,
  timeline,
)

# JAX, Flax, TensorFlow, orbax and PyAV (with the vidtx modules that import them) are imported
# inside the functions that use them (here and in vidtx.inference), so that --help and flag
# errors answer at once.
if TYPE_CHECKING:
  from vidtx.checkpoints import store

OUT_SUFFIXES = (".jsonl", ".csv")
# A folder's videos, for --video's help: sorted(video_io.VIDEO_EXTENSIONS), written out so that
# --help does not import video_io (TensorFlow; a test checks that they agree).
VIDEO_EXTENSIONS = "3gp avi flv m4v mkv mov mp4 mpeg mpg ogv webm wmv".split()

# ---------------------------------------------------------------------------------------------
# One video file, or the clips of an --input array.
# ---------------------------------------------------------------------------------------------


def run(
  checkpoint: str,
  *,
  video: str | None = None,
  input_path: str | None = None,
  top_k: int = 5,
  labels: str | None = None,
  logits_out: str | None = None,
  batch_size: int = 8,
  rollout_out: str | None = None,
  head_fusion: str = "mean",
  overwrite: bool = False,
  step: int | None = None,
  which: str | None = None,
) -> np.ndarray:
  """The command: prints the predictions, returns the logits ((V, K) or (B, K)) it saves.
  --logits_out and --rollout never replace an input, and replace an existing file only with
  `overwrite`."""
  from vidtx import rollout

  if (video is None) == (input_path is None):
    raise UserError("Give exactly one of --video FILE or --input CLIP.npy.")
  if top_k < 1 or batch_size < 1:
    raise UserError(f"--top_k={top_k}, --batch_size={batch_size}: expected both >= 1.")
  if rollout_out and head_fusion not in rollout.HEAD_FUSIONS:
    raise UserError(
      f"--head_fusion={head_fusion!r}: expected one of {sorted(rollout.HEAD_FUSIONS)}."
    )
  # Before any work: an output that is an input, or a file the user did not ask to replace.
  outputs.check_paths(
    {"--video": video, "--input": input_path, "--checkpoint": checkpoint, "--labels": labels},
    {"--logits_out": logits_out, "--rollout": rollout_out},
  )
  if rollout_out:
    pictures.image_format(rollout_out)
  for flag, path in (("--logits_out", logits_out), ("--rollout", rollout_out)):
    if path:
      outputs.check_output_file(path, flag, overwrite=overwrite)
  converted = classifier.load_checkpoint(checkpoint, step, which)
  names = classifier.class_names(converted, labels)
  if rollout_out:
    # Before decoding or running anything: a model rollout cannot describe fails now.
    rollout.plans(converted.build_model(), (1,) + preprocess.expected_clip(converted.preprocessing))

  def logits_of(clips: np.ndarray) -> np.ndarray:
    return _logits_and_rollout(
      converted, clips, names, video, input_path, batch_size, rollout_out, head_fusion
    )

  if video is not None:
    logits = _print_video(converted, video, names, top_k, logits_of)
  else:
    logits = _print_clips(converted, input_path, names, top_k, logits_of)
  if rollout_out:
    print(
      f"attention rollout ({head_fusion} over heads) of {len(logits)} "
      f"{'view' if video is not None else 'clip'}(s) written to {rollout_out}"
    )
  if logits_out:
    results.save_array(logits_out, logits)
    print(f"logits {logits.shape} written to {logits_out}")
  return logits


def _logits_and_rollout(
  converted: store.Converted,
  clips: np.ndarray,
  names: Sequence[str],
  video: str | None,
  input_path: str | None,
  batch_size: int,
  rollout_out: str | None,
  head_fusion: str,
) -> np.ndarray:
  """The logits (N, K) of the views of --video (or the clips of --input), checked finite; with
  --rollout, of the same model call that draws the rollout picture."""
  source = video if video is not None else input_path
  rows = (
    preprocess.view_names(converted.preprocessing)
    if video is not None
    else preprocess.clip_names(len(clips))
  )
  if not rollout_out:
    logits = classifier.model_logits(converted, clips, batch_size)
    return preprocess.check_finite(logits, source, "logits", rows)
  logits, heat = classifier.model_rollout(converted, clips, batch_size, head_fusion)
  preprocess.check_finite(logits, source, "logits", rows)  # Before a picture titled with NaN.
  clip_names = (
    preprocess.view_names(converted.preprocessing)
    if video is not None
    else [f"clip {i + 1}" for i in range(len(clips))]
  )
  pictures.save_rollout(
    rollout_out, clips, heat, logits, names, converted.preprocessing, clip_names
  )
  return logits


def _print_video(
  converted: store.Converted,
  video: str,
  names: Sequence[str],
  top_k: int,
  logits_of: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
  """--video FILE: its views' logits (V, K) by `logits_of`; prints what was decoded and the
  top-k of the aggregated views."""
  aggregation = converted.preprocessing["aggregation"]
  classifier.check_aggregation(aggregation)  # Before the decoding.
  views, clips = preprocess.streamed_views(video, converted)
  views = preprocess.check_finite(
    views, video, "views", preprocess.view_names(converted.preprocessing)
  )
  logits = logits_of(views)
  probabilities = classifier.aggregate(logits, aggregation)
  height, width = clips.clips.shape[2:4]
  print(
    f"{video}: {clips.length} frames decoded ({width}x{height}); "
    f"{preprocess.describe_preprocessing(converted.preprocessing)}"
  )
  print(f"top-{min(top_k, len(names))}:\n" + classifier.format_top_k(probabilities, names, top_k))
  return logits


def _print_clips(
  converted: store.Converted,
  input_path: str,
  names: Sequence[str],
  top_k: int,
  logits_of: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
  """--input CLIP.npy: its clips' logits (B, K) by `logits_of`; prints the top-k of each."""
  import jax

  clips = preprocess.load_clip(input_path, converted)  # Checked before the model is built.
  logits = logits_of(clips)
  print(
    f"{input_path}: {len(clips)} clip(s) {clips.shape[1:]}, used as they are (no preprocessing)"
  )
  probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
  for row, p in enumerate(probabilities):
    print(f"clip {row} top-{min(top_k, len(names))}:\n" + classifier.format_top_k(p, names, top_k))
  return logits


# ---------------------------------------------------------------------------------------------
# Many videos, windows of long videos, features, class folders.
# ---------------------------------------------------------------------------------------------


def many_mode(video: str | None, list_file: str | None, **options: Any) -> bool:
  """Whether the command takes the many-videos path: a --list, a folder or glob, or any of its
  options (--out, --window, --features, --per_view); else one file prints as before."""
  if list_file is not None or any(v not in (None, False) for v in options.values()):
    return True
  return (
    video is not None
    and not os.path.isfile(video)
    and (os.path.isdir(video) or glob.has_magic(video))
  )


def run_many(
  checkpoint: str,
  *,
  video: str | None = None,
  list_file: str | None = None,
  top_k: int = 5,
  labels: str | None = None,
  batch_size: int = 8,
  out: str | None = None,
  per_view: bool = False,
  window: float | None = None,
  hop: float | None = None,
  timeline_png: str | None = None,
  features: str | None = None,
  token_features: bool = False,
  overwrite: bool = False,
  step: int | None = None,
  which: str | None = None,
  labels_from_folders: bool | None = None,
  per_class_csv: str | None = None,
  confusion_png: str | None = None,
) -> tuple[int, int]:
  """The command for many videos (or windows, or features); returns (succeeded, failed).

  Every flag and output path is checked before any work: an output that is an input (a video,
  the --list, the checkpoint) or another output is refused, and so is an existing --out,
  --timeline_png, --per_class_csv or --confusion_png without `overwrite`. `labels_from_folders`
  None: on when every video lies in a folder named after a class (module doc)."""
  from vidtx import video_io

  if (video is None) == (list_file is None):
    raise UserError("Give exactly one of --video FILE|FOLDER|GLOB or --list FILE.")
  if top_k < 1 or batch_size < 1:
    raise UserError(f"--top_k={top_k}, --batch_size={batch_size}: expected both >= 1.")
  window, hop = timeline.check_flags(window, hop)
  if window is None and timeline_png:
    raise UserError("--timeline_png needs --window SECONDS.")
  if token_features and not features:
    raise UserError("--token_features needs --features OUT_DIR.")
  inputs = video_io.list_videos(video, list_file)
  paths = [path for _, path in inputs]
  classes = class_folders.class_folders_asked(
    checkpoint, video, list_file, inputs, labels, labels_from_folders, window
  )
  if classes is None and (per_class_csv or confusion_png):
    raise UserError(
      f"--{'per_class_csv' if per_class_csv else 'confusion_png'} needs class folders: "
      "--video FOLDER whose subfolders are the checkpoint's classes (--labels_from_folders)."
    )
  if classes is not None:
    per_class_csv, confusion_png = class_folders.report_paths(out, per_class_csv, confusion_png)
  _check_many_outputs(
    checkpoint,
    video=video,
    list_file=list_file,
    labels=labels,
    paths=paths,
    out=out,
    timeline_png=timeline_png,
    features=features,
    per_class_csv=per_class_csv,
    confusion_png=confusion_png,
    overwrite=overwrite,
  )
  converted = classifier.load_checkpoint(checkpoint, step, which)
  names = classifier.class_names(converted, labels)
  unknown = sorted(set(classes.values()) - set(names)) if classes is not None else []
  if unknown:  # The names read up front were another checkpoint's (replaced since).
    raise UserError(f"--video {video}: class folder(s) {unknown} are not classes of the model.")
  scores: dict[int, np.ndarray] | None = {} if classes is not None else None
  ok, bad = many_videos.predict_many(
    converted,
    inputs,
    names=names,
    top_k=top_k,
    batch_size=batch_size,
    out=out,
    per_view=per_view,
    window_s=window,
    hop_s=hop,
    timeline_png=timeline_png,
    features=features,
    token_features=token_features,
    scores=scores,
  )
  if classes is not None:
    class_folders.accuracy_report(
      scores, inputs, classes, names, per_class_csv=per_class_csv, confusion_png=confusion_png
    )
  written = [f"results in {out}"] if out else []
  written += [f"features in {features}"] if features else []
  written += [f"timeline in {timeline_png}"] if timeline_png and ok else []
  print(
    f"{ok} of {len(inputs)} video(s) predicted" + "".join(f"; {w}" for w in written),
    file=sys.stderr,
  )
  return ok, bad


def _check_many_outputs(
  checkpoint: str,
  *,
  video: str | None,
  list_file: str | None,
  labels: str | None,
  paths: Sequence[str],
  out: str | None,
  timeline_png: str | None,
  features: str | None,
  per_class_csv: str | None,
  confusion_png: str | None,
  overwrite: bool,
) -> None:
  """Before any work: no output is an input or another output, no existing file is replaced
  without `overwrite`, each has its suffix, and --features is a directory predict may write."""
  outputs.check_paths(
    {
      "--checkpoint": checkpoint,
      "--labels": labels,
      "--list": list_file,
      "--video": video if list_file is None else None,
      "--video file" if list_file is None else "--list entry": paths,
    },
    {
      "--out": out,
      "--timeline_png": timeline_png,
      "--features": features,
      "--per_class_csv": per_class_csv,
      "--confusion_png": confusion_png,
    },
  )
  if out:
    outputs.check_output_file(out, "--out", overwrite=overwrite, suffixes=OUT_SUFFIXES)
  if timeline_png:
    outputs.check_output_file(
      timeline_png, "--timeline_png", overwrite=overwrite, suffixes=timeline.image_suffixes()
    )
  for path, flag, suffix in (
    (per_class_csv, "--per_class_csv", ".csv"),
    (confusion_png, "--confusion_png", ".png"),
  ):
    if path:
      outputs.check_output_file(path, flag, overwrite=overwrite, suffixes=(suffix,))
  if features:
    # Before any decoding: a directory that is not ours is refused up front.
    ownership.check_claimable(features, "features", hint="Choose a new --features directory.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  options = dict(
    out=f.out,
    per_view=f.per_view,
    window=f.window,
    hop=f.hop,
    timeline_png=f.timeline_png,
    features=f.features,
    token_features=f.token_features,
    labels_from_folders=f.labels_from_folders,
    per_class_csv=f.per_class_csv,
    confusion_png=f.confusion_png,
  )
  if f.input is not None and (f.list or any(v not in (None, False) for v in options.values())):
    raise app.UsageError("--input CLIP.npy takes none of --list, --out, --window, --features.")
  many = f.input is None and many_mode(f.video, f.list, **options)
  if many and (f.rollout or f.logits_out):
    raise app.UsageError("--rollout and --logits_out take one --video FILE.")
  if not many and (f.video is None) == (f.input is None):
    raise app.UsageError("Give exactly one of --video FILE or --input CLIP.npy.")
  try:
    if many:
      ok, _ = run_many(
        f.checkpoint,
        video=f.video,
        list_file=f.list,
        top_k=f.top_k,
        labels=f.labels,
        batch_size=f.batch_size,
        overwrite=f.overwrite,
        step=f.step,
        which=f.which,
        **options,
      )
      sys.exit(0 if ok else 1)
    run(
      f.checkpoint,
      video=f.video,
      input_path=f.input,
      top_k=f.top_k,
      labels=f.labels,
      logits_out=f.logits_out,
      batch_size=f.batch_size,
      rollout_out=f.rollout,
      head_fusion=f.head_fusion,
      overwrite=f.overwrite,
      step=f.step,
      which=f.which,
    )
  except (UserError, OSError) as e:
    # Bad inputs, paths and a busy --features directory are the user's to fix: the message,
    # not a traceback.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def run_cli() -> None:
  """The command line (vidtx-predict, python -m vidtx.predict); flags are defined here."""

  cli.quiet_start_up()
  flags.DEFINE_string(
    "checkpoint",
    None,
    "Converted-checkpoint directory (vidtx.convert), or a train.py run directory (converted "
    "in memory: its best checkpoint, see --which and --step).",
  )
  cli.define_run_checkpoint_flags()
  flags.DEFINE_boolean(
    "labels_from_folders",
    None,
    "Each video's true class is its subfolder of --video FOLDER: report top-1/top-5, the "
    "worst classes, a per-class table and a confusion matrix (default: on when every "
    "subfolder is a class of the checkpoint).",
  )
  flags.DEFINE_string(
    "per_class_csv",
    None,
    "Class folders: the per-class table (.csv; default: next to --out, RESULTS_per_class.csv).",
  )
  flags.DEFINE_string(
    "confusion_png",
    None,
    "Class folders: the confusion matrix (.png; default: next to --out, RESULTS_confusion.png).",
  )
  flags.DEFINE_string(
    "video",
    None,
    "A video file to classify (anything FFmpeg decodes), a folder (recursive: "
    + " ".join(VIDEO_EXTENSIONS)
    + "), or a glob (quoted).",
  )
  flags.DEFINE_string("list", None, "Videos to classify: one path per line, or a CSV (column 1).")
  flags.DEFINE_string("out", None, "Results: .jsonl (one JSON object per video or window) or .csv.")
  flags.DEFINE_boolean("per_view", False, "Add each view's logits to the --out JSON lines.")
  flags.DEFINE_boolean(
    "overwrite",
    False,
    "Replace an existing --out, --logits_out, --rollout, --timeline_png, --per_class_csv or "
    "--confusion_png file (never an input).",
  )
  flags.DEFINE_float(
    "window",
    None,
    "Long videos: classify every window [t, t + window) seconds (each as a whole video).",
  )
  flags.DEFINE_float("hop", None, "Seconds between window starts (default: --window).")
  flags.DEFINE_string(
    "timeline_png",
    None,
    "With --window: a strip of the top class over time (.png, or another matplotlib format).",
  )
  flags.DEFINE_string(
    "features",
    None,
    "Write each video's (window's) pre-logits embedding, the mean over its views, as float32 "
    ".npy here, with index.jsonl (a new or empty directory, or one this option wrote).",
  )
  flags.DEFINE_boolean(
    "token_features",
    False,
    "With --features: also the final token grid (T', N, D), mean over views (TimeSformer).",
  )
  flags.DEFINE_string(
    "input",
    None,
    "A .npy float32 clip (T, H, W, C) or clips (B, T, H, W, C), "
    "fed to the model without preprocessing.",
  )
  flags.DEFINE_integer("top_k", 5, "How many classes to print.", lower_bound=1)
  flags.DEFINE_string("labels", None, "Class names, one per line (default: the checkpoint's).")
  flags.DEFINE_string(
    "logits_out",
    None,
    "Write the logits here (.npy, float32): per view for "
    "--video (V, K), per clip for --input (B, K).",
  )
  flags.DEFINE_integer("batch_size", 8, "Clips per model call.", lower_bound=1)
  flags.DEFINE_string(
    "rollout",
    None,
    "Save the attention rollout over the sampled frames of "
    "every view (or clip) as one image here (.png, .jpg). It holds every "
    "layer's attention maps per clip: for joint attention at 224 (1569 "
    "tokens) use a small --batch_size.",
  )
  flags.DEFINE_enum(
    "head_fusion",
    "mean",
    ["mean", "max", "min"],
    "How --rollout fuses the attention heads (mean: Abnar & Zuidema).",
  )
  flags.mark_flags_as_required(["checkpoint"])
  app.run(main, flags_parser=cli.flags_parser(__doc__))


if __name__ == "__main__":
  run_cli()
