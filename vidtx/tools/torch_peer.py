r"""The PyTorch world's video reader, beside vidtx's (vidtx.tools.input_benchmark --peer).

  python -m vidtx.tools.torch_peer --videos=k400like/videos [--num_frames=32 --frame_interval=2]
      [--crop=resized_crop|rescale_crop] [--batch_size=8 --batches=20 --warmup=3 --workers=2]

What MMAction2 does to train VideoMAE / TimeSformer from mp4s, written with torch ops only (no
torchvision, no mmcv): a torch DataLoader whose workers each open an mp4 with PyAV, sample a clip
(SampleFrames: `num_frames` frames `frame_interval` apart from a random offset, looped when the
video is shorter), decode it (PyAVDecode's accurate mode: every frame from the start up to the
last one kept, since H.264 frames depend on the ones before), then
  resized_crop   RandomResizedCrop (area 0.08-1, aspect 3/4-4/3) resized to crop_size (VideoMAE);
  rescale_crop   RandomRescale of the short side to [min, max] then a random crop_size crop
                 (TimeSformer);
then Flip (p 0.5) and normalisation to float32 NCTHW with ImageNet's mean and std (MMAction2 does
this last step in its data preprocessor; here the workers do it, as vidtx's host reader does).
decord, MMAction2's usual decoder, does not install here (no wheel for this platform / Python);
PyAV decodes the same FFmpeg streams.

CPU time: this process's (time.process_time) plus its DataLoader workers' (psutil, sampled while
they run, so their start-up is not counted). One line of JSON with --json.
"""

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # MMAction2's, on 0-255 pixels
IMAGENET_STD = (58.395, 57.12, 57.375)
CROPS = ("resized_crop", "rescale_crop")


def _torch():
  try:
    import torch  # noqa: PLC0415 (optional: pip install vidtx[torch])
  except ImportError as error:
    raise SystemExit(
      "vidtx.tools.torch_peer needs PyTorch: pip install 'vidtx[torch]' (or torch itself)."
    ) from error
  return torch


def clip_indices(
  rng: np.random.Generator, video_length: int, num_frames: int, frame_interval: int
) -> np.ndarray:
  """(num_frames,) frame indices: MMAction2's SampleFrames for one training clip (looped)."""
  span = (num_frames - 1) * frame_interval + 1
  offset = int(rng.integers(0, max(video_length - span, 0) + 1))
  return (offset + np.arange(num_frames) * frame_interval) % video_length


def decode_clip(path: str, rng: np.random.Generator, num_frames: int, frame_interval: int):
  """uint8 [T, H, W, 3]: the sampled frames, decoded in order from the video's start."""
  import av  # noqa: PLC0415

  with av.open(path) as container:
    stream = container.streams.video[0]
    length = stream.frames or int(float(stream.duration * stream.time_base) * stream.average_rate)
    indices = clip_indices(rng, length, num_frames, frame_interval)
    wanted = set(indices.tolist())
    kept = {}
    for i, frame in enumerate(container.decode(stream)):
      if i in wanted:
        kept[i] = frame.to_ndarray(format="rgb24")
      if i >= indices.max():
        break
  last = kept[max(kept)]  # A video shorter than its header says: repeat its last frame.
  return np.stack([kept.get(i, last) for i in indices.tolist()])


def resized_crop_box(
  rng: np.random.Generator, height: int, width: int, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
  """(top, left, h, w) of MMAction2's RandomResizedCrop: 10 tries, else the centre square."""
  for _ in range(10):
    target = rng.uniform(*area) * height * width
    ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  side = min(height, width)
  return (height - side) // 2, (width - side) // 2, side, side


def transform(
  frames: np.ndarray,
  rng: np.random.Generator,
  *,
  crop: str,
  crop_size: int,
  short_side_range: tuple[int, int],
  normalise: bool,
):
  """uint8 [T, H, W, 3] -> float32 [3, T, crop, crop] (uint8 without `normalise`)."""
  torch = _torch()
  functional = torch.nn.functional
  clip = torch.from_numpy(frames).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
  height, width = clip.shape[-2:]
  if crop == "resized_crop":
    top, left, h, w = resized_crop_box(rng, height, width)
    clip = clip[..., top : top + h, left : left + w].float()
    clip = functional.interpolate(clip, size=(crop_size, crop_size), mode="bilinear")
  else:  # rescale_crop: the whole frame is rescaled, then cropped
    short = int(rng.integers(short_side_range[0], short_side_range[1] + 1))
    scale = short / min(height, width)
    size = (max(crop_size, round(height * scale)), max(crop_size, round(width * scale)))
    clip = functional.interpolate(clip.float(), size=size, mode="bilinear")
    top = int(rng.integers(0, size[0] - crop_size + 1))
    left = int(rng.integers(0, size[1] - crop_size + 1))
    clip = clip[..., top : top + crop_size, left : left + crop_size]
  if rng.uniform() < 0.5:
    clip = clip.flip(-1)
  if not normalise:
    return clip.round().clamp(0, 255).to(torch.uint8).permute(1, 0, 2, 3)
  mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
  return ((clip - mean) / std).permute(1, 0, 2, 3).contiguous()  # [3, T, crop, crop]


class VideoClips:
  """A map-style dataset of `length` training clips drawn from `paths` (clip i from video
  i % len(paths), its randomness from (seed, i)); a torch Dataset by duck typing."""

  def __init__(self, paths: Sequence[str], length: int, seed: int = 0, **recipe: Any):
    self.paths, self.length, self.seed, self.recipe = list(paths), length, seed, recipe

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int):
    rng = np.random.default_rng([self.seed, index])
    frames = decode_clip(
      self.paths[index % len(self.paths)],
      rng,
      self.recipe["num_frames"],
      self.recipe["frame_interval"],
    )
    clip = transform(
      frames,
      rng,
      crop=self.recipe["crop"],
      crop_size=self.recipe["crop_size"],
      short_side_range=self.recipe["short_side_range"],
      normalise=self.recipe["normalise"],
    )
    return clip, index % len(self.paths)


def _children_cpu_seconds() -> float:
  """user + sys seconds of this process's live descendants (the DataLoader workers)."""
  import psutil  # noqa: PLC0415 (installed with orbax-checkpoint)

  total = 0.0
  for child in psutil.Process().children(recursive=True):
    try:
      times = child.cpu_times()
      total += times.user + times.system
    except psutil.NoSuchProcess:
      pass
  return total


def measure(
  paths: Sequence[str],
  *,
  num_frames: int,
  frame_interval: int,
  crop: str = "resized_crop",
  crop_size: int = 224,
  short_side_range: tuple[int, int] = (256, 320),
  normalise: bool = True,
  batch_size: int = 8,
  warmup: int = 3,
  batches: int = 20,
  workers: int = 2,
) -> dict[str, float]:
  """Times `batches` batches of the peer after `warmup`; frames per second and per CPU-second
  (this process and its workers)."""
  torch = _torch()
  if crop not in CROPS:
    raise ValueError(f"crop={crop!r}: expected one of {CROPS}.")
  if not paths:
    raise ValueError("No videos to read.")
  dataset = VideoClips(
    paths,
    (warmup + batches) * batch_size,
    num_frames=num_frames,
    frame_interval=frame_interval,
    crop=crop,
    crop_size=crop_size,
    short_side_range=tuple(short_side_range),
    normalise=normalise,
  )
  loader = torch.utils.data.DataLoader(
    dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0
  )
  iterator = iter(loader)
  for _ in range(warmup):
    next(iterator)
  children_start = _children_cpu_seconds()
  cpu_start, wall_start = time.process_time(), time.perf_counter()
  frames = 0
  for _ in range(batches):
    clips, _ = next(iterator)  # [B, 3, T, crop, crop]
    frames += clips.shape[0] * clips.shape[2]
  wall = time.perf_counter() - wall_start
  cpu = time.process_time() - cpu_start + _children_cpu_seconds() - children_start
  del iterator, loader
  return dict(
    batches=batches,
    frames=frames,
    seconds=wall,
    cpu_seconds=cpu,
    frames_per_sec=frames / wall,
    frames_per_cpu_sec=frames / cpu,
    cpu_ms_per_clip=1000 * cpu * num_frames / frames,
  )


def list_videos(directory: str) -> list[str]:
  """The .mp4 files in `directory`, sorted."""
  if not os.path.isdir(directory):
    raise SystemExit(f"--videos {directory}: no such folder.")
  names = sorted(n for n in os.listdir(directory) if n.lower().endswith(".mp4"))
  if not names:
    raise SystemExit(f"--videos {directory}: no .mp4 files there.")
  return [os.path.join(directory, n) for n in names]


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
  parser = argparse.ArgumentParser(
    prog="python -m vidtx.tools.torch_peer",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--videos", required=True, help="A folder of .mp4 files.")
  parser.add_argument("--num_frames", type=int, default=32, help="Frames per clip.")
  parser.add_argument("--frame_interval", type=int, default=2, help="Frames between samples.")
  parser.add_argument("--crop", choices=CROPS, default="resized_crop", help="The crop recipe.")
  parser.add_argument("--crop_size", type=int, default=224, help="Output side.")
  parser.add_argument(
    "--short_side_range", type=int, nargs=2, default=(256, 320), help="rescale_crop's range."
  )
  parser.add_argument("--uint8", action="store_true", help="No normalisation: uint8 clips.")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--warmup", type=int, default=3, help="Batches read before timing.")
  parser.add_argument("--batches", type=int, default=20, help="Batches timed.")
  parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes.")
  parser.add_argument("--json", action="store_true", help="Print one line of JSON.")
  args = parser.parse_args(argv)
  result = measure(
    list_videos(args.videos),
    num_frames=args.num_frames,
    frame_interval=args.frame_interval,
    crop=args.crop,
    crop_size=args.crop_size,
    short_side_range=tuple(args.short_side_range),
    normalise=not args.uint8,
    batch_size=args.batch_size,
    warmup=args.warmup,
    batches=args.batches,
    workers=args.workers,
  )
  if args.json:
    print(json.dumps(result))
  else:
    print(
      f"PyTorch peer: {result['frames_per_cpu_sec']:,.0f} frames/CPU-s, "
      f"{result['frames_per_sec']:,.0f} frames/s ({result['cpu_ms_per_clip']:.1f} CPU ms/clip)"
    )
  return result


if __name__ == "__main__":
  main()
