r"""Kinetics-like test videos: H.264 mp4s that decode and compress like real video clips.

  python -m vidtx.tools.kinetics_like --output_dir=k400like/videos [--videos=24] [--classes=4]
  python -m vidtx.data.make_shards --source=kinetics --input=k400like/videos/train.csv \
      --video_dir=k400like/videos --output_dir=k400like/shards --num_shards=4
  (and the same with validate.csv)

For measuring readers (vidtx.tools.input_benchmark, its --peer) on data shaped like a prepared
Kinetics-400: 10 s at 25 fps, 340 x 256 (short side 256), H.264 (libx264, yuv420p). Content
matters for speed, since JPEG and H.264 decode cost follow the picture's detail: white noise
decodes several times slower than real video, flat frames far faster. Each video is a smooth
colour gradient with low-frequency texture, seen by a camera that pans across it, with 2 to 4
finely textured objects moving over it, plus mild sensor noise. The class only sets the pan's
direction; the videos are for timing, not for learning.

Written to --output_dir: `kl{i:04d}_000000_000010.mp4` (Kinetics' pre-cut clip names: youtube id,
start, end), train.csv and validate.csv in Kinetics' annotation format (`label,youtube_id,
time_start,time_end,split`; every `validation_every`-th video of a class goes to validation).
The directory is written whole (a temporary sibling renamed into place) and marked as vidtx's
(vidtx.ownership), so it is never written over someone else's files.
"""

import argparse
import csv
import os
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from vidtx import ownership

PAN_DIRECTIONS = ("pan_left", "pan_right", "pan_up", "pan_down")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
  """Gaussian-blurred white noise scaled to [-1, 1]: texture with detail of about `sigma` px."""
  noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma=(sigma, sigma, 0)[: len(shape)])
  return noise / (np.abs(noise).max() + 1e-6)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A float [height, width, 3] scene: two-colour gradient, soft blobs and a little fine detail."""
  y, x = np.mgrid[:height, :width].astype(np.float32)
  angle = rng.uniform(0, 2 * np.pi)
  ramp = (np.cos(angle) * x + np.sin(angle) * y) / max(height, width)  # [H, W], about [-1, 1]
  ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
  colour_a, colour_b = rng.uniform(30, 220, (2, 3))
  scene = colour_a + ramp[..., None] * (colour_b - colour_a)  # [H, W, 3]
  scene += 35 * _smooth_noise(rng, (height, width, 3), sigma=12)
  # Hard-edged shapes (furniture, walls, signs): real scenes have edges, which cost JPEG bits.
  for _ in range(int(rng.integers(8, 16))):
    top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
    bottom, right = top + rng.integers(8, height // 2), left + rng.integers(8, width // 3)
    scene[top:bottom, left:right] = 0.4 * scene[top:bottom, left:right] + rng.uniform(0, 150, 3)
  scene += 22 * _smooth_noise(rng, (height, width, 3), sigma=3)
  scene += 20 * _smooth_noise(rng, (height, width, 1), sigma=0.8)
  return scene


def _objects(rng: np.random.Generator, count: int, height: int) -> list[dict]:
  """Textured ellipses: a mask, a texture and a path (start, velocity) each."""
  objects = []
  for _ in range(count):
    # Radii of 18 to 47 px in a 256 px high frame, in proportion in others.
    radius_y, radius_x = rng.integers(max(1, 18 * height // 256), max(2, 48 * height // 256), 2)
    y, x = np.mgrid[-radius_y:radius_y, -radius_x:radius_x].astype(np.float32)
    mask = ((y / radius_y) ** 2 + (x / radius_x) ** 2 <= 1).astype(np.float32)[..., None]
    base = rng.uniform(20, 235, 3)
    texture = base + 45 * _smooth_noise(rng, (2 * radius_y, 2 * radius_x, 3), sigma=1.2)
    objects.append(
      dict(
        mask=mask,
        texture=texture,
        start=rng.uniform(0, 1, 2),
        velocity=rng.uniform(-3, 3, 2),
        wobble=rng.uniform(0, 2 * np.pi),
      )
    )
  return objects


def render(
  rng: np.random.Generator, *, frames: int, height: int, width: int, pan: str
) -> np.ndarray:
  """uint8 [frames, height, width, 3]: a panning camera over a scene with moving objects."""
  speed = rng.uniform(0.6, 1.6)  # px per frame
  travel = int(np.ceil(speed * frames)) + 1
  horizontal = pan in ("pan_left", "pan_right")
  scene_h, scene_w = (height, width + travel) if horizontal else (height + travel, width)
  scene = _background(rng, scene_h, scene_w)  # [scene_h, scene_w, 3]
  objects = _objects(rng, int(rng.integers(2, 5)), height)
  video = np.empty((frames, height, width, 3), np.uint8)
  for t in range(frames):
    offset = int(speed * (t if pan in ("pan_right", "pan_down") else frames - 1 - t))
    if horizontal:
      frame = scene[:, offset : offset + width].copy()  # [H, W, 3]
    else:
      frame = scene[offset : offset + height].copy()
    for obj in objects:
      oh, ow = obj["mask"].shape[:2]
      # Positions bounce inside the frame (a triangle wave), with a small sinusoidal wobble.
      span = np.array([height - oh, width - ow], np.float32)
      pos = obj["start"] * span + obj["velocity"] * t + 6 * np.sin(t / 9 + obj["wobble"])
      pos = np.abs((pos + span) % (2 * span) - span).astype(int)  # [2] top-left corner
      window = frame[pos[0] : pos[0] + oh, pos[1] : pos[1] + ow]
      window += obj["mask"] * (obj["texture"] - window)
    frame += rng.normal(0, 2.5, frame.shape)
    video[t] = np.clip(frame, 0, 255).astype(np.uint8)
  return video


def write_mp4(path: str, video: np.ndarray, fps: int, crf: int = 23) -> None:
  """H.264 (libx264, yuv420p) at constant quality `crf` (x264's default 23, as most web video)."""
  import av  # noqa: PLC0415 (PyAV: only the writer needs it)

  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=fps)
    stream.height, stream.width = video.shape[1:3]
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf)}
    for frame in video:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def make_videos(
  output_dir: str,
  *,
  videos: int = 24,
  classes: int = 4,
  seconds: int = 10,
  fps: int = 25,
  height: int = 256,
  width: int = 340,
  validation_every: int = 3,
  seed: int = 0,
) -> list[str]:
  """Writes the videos and their Kinetics CSVs to `output_dir`; returns the mp4 paths."""
  if not 1 <= classes <= len(PAN_DIRECTIONS):
    raise ValueError(f"--classes={classes}: expected 1 to {len(PAN_DIRECTIONS)}.")
  ownership.check_claimable(output_dir, "synthetic")
  names = [f"kl{i:04d}_{0:06d}_{seconds:06d}" for i in range(videos)]

  def fill(tmp: str) -> None:
    rows = {"train": [], "validate": []}
    for i, name in enumerate(names):
      rng = np.random.default_rng([seed, i])
      label = PAN_DIRECTIONS[i % classes]
      video = render(rng, frames=seconds * fps, height=height, width=width, pan=label)
      write_mp4(os.path.join(tmp, name + ".mp4"), video, fps)
      split = "validate" if (i // classes) % validation_every == validation_every - 1 else "train"
      # Kinetics' own validate.csv says "val" in its split column.
      kinetics_split = "val" if split == "validate" else split
      rows[split].append([label, name.split("_")[0], 0, seconds, kinetics_split])
    for split, split_rows in rows.items():
      with open(os.path.join(tmp, f"{split}.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        writer.writerows(split_rows)

  ownership.write_directory(
    output_dir, "synthetic", fill, lambda: ownership.check_removable(output_dir, "synthetic")
  )
  return [os.path.join(output_dir, name + ".mp4") for name in names]


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    prog="python -m vidtx.tools.kinetics_like",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--output_dir", required=True, help="A new or empty directory.")
  parser.add_argument("--videos", type=int, default=24, help="How many videos.")
  parser.add_argument("--classes", type=int, default=4, help="Classes (pan directions), 1-4.")
  parser.add_argument("--seconds", type=int, default=10, help="Length of each video.")
  parser.add_argument("--fps", type=int, default=25, help="Frames per second.")
  parser.add_argument("--height", type=int, default=256, help="Frame height (the short side).")
  parser.add_argument("--width", type=int, default=340, help="Frame width.")
  parser.add_argument("--seed", type=int, default=0, help="Seed of the content.")
  args = parser.parse_args(argv)
  paths = make_videos(
    args.output_dir,
    videos=args.videos,
    classes=args.classes,
    seconds=args.seconds,
    fps=args.fps,
    height=args.height,
    width=args.width,
    seed=args.seed,
  )
  print(f"Wrote {len(paths)} videos, train.csv and validate.csv to {args.output_dir}")


if __name__ == "__main__":
  main()
