r"""Does the attention rollout follow the moving object? A picture and a number, on the synthetic
motion task, for a checkpoint trained on it (train.py, then `python -m vidtx.convert --src RUN`).

  python -m vidtx.tools.rollout_demo --checkpoint=DIR --out=docs/rollout_divided.png \
      [--label=right] [--seed=9] [--video_out=motion.mp4] [--num_videos=64] [--overwrite]

1. Writes one synthetic motion video (`--label`, `--seed`) as an mp4 file and runs
   `python -m vidtx.predict --video=... --rollout=OUT` on it: the picture is made by the same code
   a user runs on their own videos.
2. Measures, over `--num_videos` further videos (new seeds, every class), the share of the rollout
   heat that falls on the moving object against the share of the frame the object covers. The
   generator knows where the object is (vidtx.data.synthetic.motion_with_mask); its coverage goes
   through the same clip sampling, resize and crops as the pixels, and is averaged over each patch.
   A model that looks at the object puts more than its area's share of the heat there (a lift
   above 1); the same model at initialisation is printed as the control.
"""

import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from vidtx import outputs, predict
from vidtx.checkpoints import store
from vidtx.data import synthetic
from vidtx.errors import UserError
from vidtx.inference import classifier, pictures, preprocess

VIDEO_LENGTH, VIDEO_SIZE = 20, 36  # The synthetic configs' videos (configs/common.py).
CLASSES = synthetic.TASKS["motion"].class_names


def motion_video(label: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A synthetic motion video, uint8 (T, S, S, 3), and its object coverage float32 (T, S, S)."""
  frames, _, coverage = synthetic.motion_with_mask(
    np.random.default_rng([seed, 7919]), VIDEO_LENGTH, VIDEO_SIZE, label=label
  )
  return frames, coverage


def patch_coverage(coverage: np.ndarray, converted: store.Converted) -> np.ndarray:
  """Object coverage of a video (T, S, S) -> per view and patch, (V, T', h, w) in [0, 1].

  The coverage is sampled, resized and cropped exactly as the pixels (preprocess.video_views),
  then averaged over each patch (and over the frames of a tubelet)."""
  as_frames = np.repeat(np.round(coverage * 255).astype(np.uint8)[..., None], 3, axis=-1)
  views = preprocess.video_views(as_frames, converted)  # (V, T, crop, crop, 3), normalised
  pixels = pictures.display_frames(views, converted.preprocessing)[..., 0] / 255.0
  config = converted.build_model().config
  v, t, height, width = pixels.shape
  p, tubelet = config.patch_size, config.tubelet_size
  h, w = height // p, width // p
  # (V, T, H, W) -> (V, T', tubelet, h, P, w, P) -> mean over tubelet and patch pixels.
  pixels = pixels[:, :, : h * p, : w * p].reshape(v, t // tubelet, tubelet, h, p, w, p)
  return pixels.mean(axis=(2, 4, 6)).astype(np.float32)


def heat_on_object(
  converted: store.Converted,
  num_videos: int = 64,
  seed: int = 1000,
  head_fusion: str = "mean",
  batch_size: int = 8,
) -> dict[str, Any]:
  """Share of the rollout heat on the object vs the share of the frame it covers, averaged over
  the views of `num_videos` synthetic motion videos (labels cycle through the classes)."""
  if num_videos < 1:
    raise UserError(f"num_videos={num_videos}: expected >= 1.")
  shares, areas, correct = [], [], 0
  for i in range(num_videos):
    label = i % len(CLASSES)
    frames, coverage = motion_video(label, seed + i)
    views = preprocess.video_views(frames, converted)
    logits, heat = classifier.model_rollout(converted, views, batch_size, head_fusion)
    cover = patch_coverage(coverage, converted)  # (V, T', h, w), as heat
    heat = heat / heat.sum(axis=(1, 2, 3), keepdims=True)
    shares.extend((heat * cover).sum(axis=(1, 2, 3)))
    areas.extend(cover.mean(axis=(1, 2, 3)))
    aggregation = converted.preprocessing["aggregation"]
    correct += int(np.argmax(classifier.aggregate(logits, aggregation)) == label)
  share, area = float(np.mean(shares)), float(np.mean(areas))
  return dict(
    share=share,
    area=area,
    lift=share / area,
    num_videos=num_videos,
    num_views=len(shares),
    accuracy=correct / num_videos,
  )


def run(
  checkpoint: str,
  out: str,
  *,
  label: str = "right",
  seed: int = 9,
  video_out: str | None = None,
  num_videos: int = 64,
  head_fusion: str = "mean",
  overwrite: bool = False,
) -> dict[str, Any]:
  """The command: the picture via predict --rollout, then the heat-on-object figures. An
  existing --out or --video_out is replaced only with `overwrite`."""
  if label not in CLASSES:
    raise UserError(f"--label={label!r}: expected one of {list(CLASSES)}.")
  outputs.check_paths({"--checkpoint": checkpoint}, {"--out": out, "--video_out": video_out})
  outputs.check_output_file(out, "--out", overwrite=overwrite, suffixes=(".png",))
  if video_out:
    outputs.check_output_file(video_out, "--video_out", overwrite=overwrite, suffixes=(".mp4",))
  converted = store.load(checkpoint)
  if converted.labels is not None and tuple(converted.labels) != CLASSES:
    raise UserError(
      f"--checkpoint={checkpoint} has classes {converted.labels}; expected a model "
      f"of the synthetic motion task {list(CLASSES)}."
    )
  frames, _ = motion_video(CLASSES.index(label), seed)
  with tempfile.TemporaryDirectory() as scratch:
    video = os.path.join(scratch, "motion.mp4")
    preprocess.encode_video(video, frames)
    predict.run(
      checkpoint,
      video=video,
      rollout_out=out,
      top_k=len(CLASSES),
      head_fusion=head_fusion,
      overwrite=overwrite,
    )
    if video_out:
      os.makedirs(os.path.dirname(os.path.abspath(video_out)), exist_ok=True)
      shutil.move(video, video_out + ".tmp")  # Whole under its own name, or not at all.
      os.replace(video_out + ".tmp", video_out)
  figures = heat_on_object(converted, num_videos, head_fusion=head_fusion)
  print(
    f"heat on object: {figures['share']:.1%} of the rollout falls on the moving object, "
    f"which covers {figures['area']:.1%} of the frame ({figures['lift']:.2f}x its share), "
    f"over {figures['num_videos']} videos x {figures['num_views'] // figures['num_videos']} "
    f"views; top-1 on them {figures['accuracy']:.1%}"
  )
  # The control: the same architecture at initialisation, which has learned nothing.
  untrained = heat_on_object(
    dataclasses.replace(converted, params=initial_params(converted)),
    num_videos,
    head_fusion=head_fusion,
  )
  print(
    f"untrained control (same model at initialisation): {untrained['share']:.1%} on the "
    f"object ({untrained['lift']:.2f}x its share)"
  )
  figures["untrained"] = untrained
  return figures


def initial_params(converted: store.Converted, seed: int = 0) -> Any:
  """Freshly initialised parameters of the checkpoint's model (as train.py starts)."""
  model = converted.build_model()
  p = converted.preprocessing
  clip = jnp.zeros((1, p["num_frames"], p["crop_size"], p["crop_size"], 3), jnp.float32)
  return model.init({"params": jax.random.key(seed)}, clip, train=False)["params"]


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  try:
    run(
      f.checkpoint,
      f.out,
      label=f.label,
      seed=f.seed,
      video_out=f.video_out,
      num_videos=f.num_videos,
      head_fusion=f.head_fusion,
      overwrite=f.overwrite,
    )
  except (UserError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Converted checkpoint of a synthetic motion model.")
  flags.DEFINE_string("out", None, "Where the rollout picture goes (.png).")
  flags.DEFINE_enum("label", "right", list(CLASSES), "Direction of the pictured video.")
  flags.DEFINE_integer(
    "seed", 9, "Seed of the pictured video (9: the object crosses the middle of the frame)."
  )
  flags.DEFINE_string("video_out", None, "Also keep the pictured video here (.mp4).")
  flags.DEFINE_integer("num_videos", 64, "Videos for the heat-on-object figures.", lower_bound=1)
  flags.DEFINE_enum("head_fusion", "mean", ["mean", "max", "min"], "Fusion of the heads.")
  flags.DEFINE_bool("overwrite", False, "Replace --out and --video_out if they exist.")
  flags.mark_flags_as_required(["checkpoint", "out"])
  app.run(main)
