"""Seeded procedural videos: the embedded dataset, small enough to train on in minutes on a CPU.

Every video is a textured object (random shape, random two-colour wave texture) on a static smooth
random-noise background, drawn with wrap-around at the frame edges, i.e. on a torus. Tasks:

  motion      4 classes (left, right, up, down): the object moves in that direction at a random
              speed (1 to 2 px per frame at 36 px frames) from a uniformly random start. On the
              torus a uniform position shifted by any amount is still uniform, so EVERY FRAME has
              the same distribution in every class; 'right' is exactly 'left' played backwards
              (and 'down' is 'up' backwards), so their unordered sets of frames are identically
              distributed too. Only the axis (horizontal or vertical) shows in the unordered set
              of frames: a model blind to frame order can at best tell the axis, never the
              direction.
  rotation    2 classes (clockwise, anticlockwise): an L-shaped textured object at a random place
              turns at 5 to 12 degrees per frame from a uniform start angle; every frame has the
              same distribution and each class is the other played backwards.
  order       2 classes (disc_first, square_first): a static disc and a static square; each flashes
              (inverts its colours) once, for `stride` consecutive frames, at times drawn so that
              every clip the reader can sample contains both flashes (see `event_window`). The
              classes are time reversals of each other, so the unordered set of frames carries no
              label information (a single frame at a known index can: the first flash is earlier).
  appearance  4 classes (disc, square, triangle, cross): the object's shape, moving in a random
              direction; one frame suffices.

`ensure_dataset` writes the train / validation splits as DMVR TFRecord shards plus labels.txt and
dataset_info.json, once per set of generator parameters (a cache under ~/.cache/vidtx/synthetic).
A `dataset_configs.base_dir` is written only when it is vidtx's (vidtx.ownership): new, empty,
marked as a synthetic dataset, or a synthetic dataset written before the marker (its
dataset_info.json has the generator's fields). Anything else, e.g. a folder of real shards, is an
error that says to set dataset_name='dmvr' to read them: a synthetic config never overwrites data.
"""

import functools
import hashlib
import json
import os
import time
import zlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

import ml_collections
import numpy as np
import tensorflow as tf

from vidtx import ownership
from vidtx.data import dmvr
from vidtx.errors import UserError

# Bump when the pictures change: it is part of the cache key, so old caches are not reused.
GENERATOR_VERSION = 1
JPEG_QUALITY = 90
SHAPES = ("disc", "square", "triangle", "cross")

# ---------------------------------------------------------------------------------------------
# Drawing: everything is vectorised over frames (T, S, S).
# ---------------------------------------------------------------------------------------------


def _wrap(d: np.ndarray, size: int) -> np.ndarray:
  """Signed displacement on a torus of circumference `size`, in [-size/2, size/2)."""
  return (d + size / 2) % size - size / 2


@functools.cache
def _periodic_interp_matrix(size: int, cells: int) -> np.ndarray:
  """(size, cells) weights that bilinearly upsample `cells` periodic samples to `size` pixels."""
  pos = (np.arange(size) + 0.5) * cells / size - 0.5
  low = np.floor(pos).astype(int)
  frac = pos - low
  matrix = np.zeros((size, cells), np.float32)
  matrix[np.arange(size), low % cells] += 1 - frac
  matrix[np.arange(size), (low + 1) % cells] += frac
  return matrix


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
  """Smooth random noise (size, size, 3) in [0, 1]: a random cells x cells grid, upsampled."""
  grid = rng.random((cells, cells, 3), dtype=np.float32)
  m = _periodic_interp_matrix(size, cells)
  rows = np.tensordot(m, grid, axes=1)  # (cells, cells, 3) -> (size, cells, 3)
  return m @ rows  # (size, cells, 3) -> (size, size, 3)


def _background(rng: np.random.Generator, size: int, dark: bool) -> np.ndarray:
  """A static smooth noise texture between two random colours; dark or bright (objects contrast)."""
  low, high = (0.0, 110.0) if dark else (145.0, 255.0)
  colour_a, colour_b = rng.uniform(low, high, (2, 3)).astype(np.float32)
  noise = _smooth_noise(rng, size, cells=int(rng.integers(3, 7)))
  return colour_a + (colour_b - colour_a) * noise


class _Object(NamedTuple):
  shape: str
  radius: float  # px
  colours: np.ndarray  # (2, 3): the texture blends between them.
  freqs: np.ndarray  # (K,) rad per px of the texture's plane waves.
  wave_angles: np.ndarray  # (K,)
  phases: np.ndarray  # (K,)


def _random_object(
  rng: np.random.Generator, shape: str, radius: float, dark_background: bool
) -> _Object:
  # Object colours come from the other half of the range than the background, so it stands out.
  low, high = (140.0, 255.0) if dark_background else (0.0, 115.0)
  return _Object(
    shape=shape,
    radius=radius,
    colours=rng.uniform(low, high, (2, 3)).astype(np.float32),
    freqs=rng.uniform(0.5, 1.3, 2).astype(np.float32),
    wave_angles=rng.uniform(0, np.pi, 2).astype(np.float32),
    phases=rng.uniform(0, 2 * np.pi, 2).astype(np.float32),
  )


def _shape_sdf(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
  """Approximate signed distance in px to the shape's outline (negative inside); v points down."""
  if shape == "disc":
    return np.hypot(u, v) - r
  if shape == "square":
    return np.maximum(np.abs(u), np.abs(v)) - 0.85 * r
  if shape == "triangle":
    # Equilateral, pointing up, circumradius 1.25 r (so its area is close to the disc's).
    inradius = 0.625 * r
    return np.maximum(np.maximum(v, 0.866 * u - 0.5 * v), -0.866 * u - 0.5 * v) - inradius
  if shape == "cross":
    half_width = 0.38 * r
    horizontal = np.maximum(np.abs(u) - r, np.abs(v) - half_width)
    vertical = np.maximum(np.abs(u) - half_width, np.abs(v) - r)
    return np.minimum(horizontal, vertical)
  if shape == "ell":
    # An L (no rotational symmetry, so its angle is unambiguous): a vertical bar on the left and a
    # horizontal bar at the bottom of the [-r, r]^2 box.
    width = 0.7 * r
    vertical = np.maximum(np.abs(u + r - width / 2) - width / 2, np.abs(v) - r)
    horizontal = np.maximum(np.abs(u) - r, np.abs(v - r + width / 2) - width / 2)
    return np.minimum(vertical, horizontal)
  raise UserError(f"Unknown shape {shape!r}; expected one of {SHAPES + ('ell',)}.")


def _object_layer(
  obj: _Object, centres: np.ndarray, angles: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
  """Colour (T, S, S, 3) and coverage mask (T, S, S, 1) of `obj` at `centres` (T, 2) as (y, x).

  `angles` (T,) turn the object clockwise on screen; shape and texture turn together.
  """
  # float32 throughout: twice as fast as float64 and plenty for 8-bit pictures.
  centres = centres.astype(np.float32)
  angles = angles.astype(np.float32)
  pixels = np.arange(size, dtype=np.float32)
  dy = _wrap(pixels[None, :, None] - centres[:, 0, None, None], size)  # (T, S, 1)
  dx = _wrap(pixels[None, None, :] - centres[:, 1, None, None], size)  # (T, 1, S)
  cos = np.cos(angles)[:, None, None]
  sin = np.sin(angles)[:, None, None]
  # Object-local coordinates: the pixel offset turned back by the object's angle. (T, S, S) each.
  u = cos * dx + sin * dy
  v = cos * dy - sin * dx
  # Anti-aliased coverage: a 1 px ramp across the outline keeps sub-pixel motion smooth.
  mask = np.clip(0.5 - _shape_sdf(obj.shape, u, v, np.float32(obj.radius)), 0.0, 1.0)[..., None]
  blend = 0.5
  for f, a, p in zip(obj.freqs, obj.wave_angles, obj.phases, strict=True):
    blend = blend + 0.25 * np.sin(u * (f * np.cos(a)) + v * (f * np.sin(a)) + p)
  blend = blend[..., None]  # (T, S, S, 1) in [0, 1]
  colour = obj.colours[0] + (obj.colours[1] - obj.colours[0]) * blend
  return colour, mask


def _composite(frames: np.ndarray, colour: np.ndarray, mask: np.ndarray) -> np.ndarray:
  return frames * (1 - mask) + colour * mask


def _to_uint8(frames: np.ndarray) -> np.ndarray:
  return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def _pick_label(rng: np.random.Generator, label: int | None, num_classes: int) -> int:
  if label is None:
    return int(rng.integers(num_classes))
  if not 0 <= label < num_classes:
    raise UserError(f"label must be in [0, {num_classes}), got {label}.")
  return int(label)


# ---------------------------------------------------------------------------------------------
# Tasks. Every generator: (rng, video_length, size, *, label=None, num_frames=None, stride=1)
#   -> (frames uint8 (T, size, size, 3), label). `label=None` draws it; num_frames / stride
#   describe the clips the reader samples (only 'order' needs them).
# ---------------------------------------------------------------------------------------------

# (dy, dx) per frame, in the order of the class names.
_DIRECTIONS = np.array([[0, -1], [0, 1], [-1, 0], [1, 0]], np.float32)


def generate_motion(
  rng: np.random.Generator,
  video_length: int,
  size: int,
  *,
  label: int | None = None,
  num_frames: int | None = None,
  stride: int = 1,
) -> tuple[np.ndarray, int]:
  """An object of random shape moves left / right / up / down on the torus; static background."""
  del num_frames, stride  # Any clip shows the motion.
  frames, label, _ = motion_with_mask(rng, video_length, size, label=label)
  return frames, label


def motion_with_mask(
  rng: np.random.Generator, video_length: int, size: int, *, label: int | None = None
) -> tuple[np.ndarray, int, np.ndarray]:
  """`generate_motion`'s video (the same one for the same rng), its label and where the object is:
  coverage float32 (T, size, size) in [0, 1]. Tells how much attention lands on the object."""
  label = _pick_label(rng, label, 4)
  dark = bool(rng.random() < 0.5)
  background = _background(rng, size, dark)
  obj = _random_object(rng, SHAPES[rng.integers(4)], rng.uniform(0.16, 0.22) * size, dark)
  speed = rng.uniform(1.0, 2.0) * size / 36
  start = rng.uniform(0, size, 2)
  angle = rng.uniform(0, 2 * np.pi)
  t = np.arange(video_length, dtype=np.float32)[:, None]
  centres = (start + speed * t * _DIRECTIONS[label]) % size  # (T, 2)
  colour, mask = _object_layer(obj, centres, np.full(video_length, angle), size)
  return _to_uint8(_composite(background, colour, mask)), label, mask[..., 0]


def generate_rotation(
  rng: np.random.Generator,
  video_length: int,
  size: int,
  *,
  label: int | None = None,
  num_frames: int | None = None,
  stride: int = 1,
) -> tuple[np.ndarray, int]:
  """An L-shaped object turns clockwise (0) or anticlockwise (1) in place."""
  del num_frames, stride
  label = _pick_label(rng, label, 2)
  dark = bool(rng.random() < 0.5)
  background = _background(rng, size, dark)
  obj = _random_object(rng, "ell", rng.uniform(0.2, 0.26) * size, dark)
  centre = rng.uniform(0, size, 2)
  start_angle = rng.uniform(0, 2 * np.pi)
  speed = np.deg2rad(rng.uniform(5.0, 12.0)) * (1 if label == 0 else -1)
  angles = start_angle + speed * np.arange(video_length)
  colour, mask = _object_layer(obj, np.tile(centre, (video_length, 1)), angles, size)
  return _to_uint8(_composite(background, colour, mask)), label


def event_window(video_length: int, num_frames: int | None, stride: int) -> tuple[int, int]:
  """Frames [first, last] that every clip of `num_frames` frames at `stride` contains.

  The reader's clip spans span = (num_frames - 1) * stride + 1 frames from a random offset in
  [0, video_length - span], so it always covers [video_length - span, span - 1]. A flash that
  lasts `stride` consecutive frames inside that window is seen by exactly one sampled frame of
  every clip. Two flashes need 2 * stride frames: 2 * span - video_length >= 2 * stride.
  `num_frames=None` means the clip is the whole video.
  """
  if num_frames is None:
    num_frames, stride = video_length, 1
  span = (num_frames - 1) * stride + 1
  if span > video_length:
    raise UserError(
      f"Task 'order': a clip of num_frames={num_frames} at stride={stride} spans {span} frames, "
      f"more than video_length={video_length}; the reader would loop the video and show each "
      "flash twice. Use video_length >= span."
    )
  first, last = video_length - span, span - 1
  if last - first + 1 < 2 * stride:
    raise UserError(
      f"Task 'order': every clip of num_frames={num_frames} at stride={stride} shares only "
      f"{max(last - first + 1, 0)} frames of a {video_length}-frame video, fewer than the "
      f"2 * stride = {2 * stride} two flashes need. Lower video_length to at most "
      f"{2 * span - 2 * stride} or sample longer clips."
    )
  return first, last


def generate_order(
  rng: np.random.Generator,
  video_length: int,
  size: int,
  *,
  label: int | None = None,
  num_frames: int | None = None,
  stride: int = 1,
) -> tuple[np.ndarray, int]:
  """A static disc and square each flash once; the label says which flashes first."""
  label = _pick_label(rng, label, 2)
  first_frame, last_frame = event_window(video_length, num_frames, stride)
  duration = stride
  # Flash starts (a, b), a + duration <= b, both flashes inside the window, uniform over all such
  # pairs (by rejection). The set of pairs maps onto itself under time reversal, so class 1 is
  # exactly class 0 played backwards.
  latest = last_frame - duration + 1
  while True:
    a, b = rng.integers(first_frame, latest + 1, 2)
    if a + duration <= b:
      break
  dark = bool(rng.random() < 0.5)
  frames = np.repeat(_background(rng, size, dark)[None], video_length, axis=0)
  radii = rng.uniform(0.12, 0.17, 2) * size
  disc = _random_object(rng, "disc", radii[0], dark)
  square = _random_object(rng, "square", radii[1], dark)
  # Two places far enough apart on the torus that the objects never touch.
  disc_centre = rng.uniform(0, size, 2)
  while True:
    square_centre = rng.uniform(0, size, 2)
    if np.hypot(*_wrap(square_centre - disc_centre, size)) > 1.25 * radii.sum() + 2:
      break
  square_angle = rng.uniform(0, np.pi / 2)
  flash_starts = (a, b) if label == 0 else (b, a)  # (disc, square)
  t = np.arange(video_length)
  for obj, centre, angle, start in (
    (disc, disc_centre, 0.0, flash_starts[0]),
    (square, square_centre, square_angle, flash_starts[1]),
  ):
    colour, mask = _object_layer(
      obj, np.tile(centre, (video_length, 1)), np.full(video_length, angle), size
    )
    flashing = ((t >= start) & (t < start + duration))[:, None, None, None]
    colour = np.where(flashing, 255 - colour, colour)
    frames = _composite(frames, colour, mask)
  return _to_uint8(frames), label


def generate_appearance(
  rng: np.random.Generator,
  video_length: int,
  size: int,
  *,
  label: int | None = None,
  num_frames: int | None = None,
  stride: int = 1,
) -> tuple[np.ndarray, int]:
  """The label is the object's shape; it moves in a random direction."""
  del num_frames, stride
  label = _pick_label(rng, label, 4)
  dark = bool(rng.random() < 0.5)
  background = _background(rng, size, dark)
  obj = _random_object(rng, SHAPES[label], rng.uniform(0.16, 0.22) * size, dark)
  speed = rng.uniform(1.0, 2.0) * size / 36
  heading = rng.uniform(0, 2 * np.pi)
  start = rng.uniform(0, size, 2)
  angle = rng.uniform(0, 2 * np.pi)
  t = np.arange(video_length, dtype=np.float32)[:, None]
  centres = (start + speed * t * np.array([np.sin(heading), np.cos(heading)])) % size
  colour, mask = _object_layer(obj, centres, np.full(video_length, angle), size)
  return _to_uint8(_composite(background, colour, mask)), label


class Task(NamedTuple):
  class_names: tuple[str, ...]
  generate: Callable[..., tuple[np.ndarray, int]]
  # The pictures depend on the reader's num_frames and stride (they enter the cache key).
  uses_clip_length: bool = False
  # A horizontal flip keeps the label (False: it swaps classes, so random_flip must be off).
  flip_invariant: bool = True


TASKS: dict[str, Task] = {
  "motion": Task(("left", "right", "up", "down"), generate_motion, flip_invariant=False),
  "rotation": Task(("clockwise", "anticlockwise"), generate_rotation, flip_invariant=False),
  "order": Task(("disc_first", "square_first"), generate_order, uses_clip_length=True),
  "appearance": Task(SHAPES, generate_appearance),
}


def get_task(name: str) -> Task:
  if name not in TASKS:
    raise UserError(f"Unknown synthetic task {name!r}; expected one of {sorted(TASKS)}.")
  return TASKS[name]


# ---------------------------------------------------------------------------------------------
# Writing the dataset.
# ---------------------------------------------------------------------------------------------


def _split_key(split: str) -> int:
  return zlib.crc32(split.encode("utf-8"))


def dataset_parameters(dataset_configs: ml_collections.ConfigDict) -> dict:
  """Everything the generated files depend on; stored in dataset_info.json and hashed."""
  dc = dataset_configs
  task_name = dc.get("task", "motion")
  task = get_task(task_name)
  for field in ("video_length", "video_size"):
    if int(dc.get(field, 0)) < 1:
      raise UserError(f"dataset_configs.{field} must be a positive int, got {dc.get(field)}.")
  tables = dict(dc.get("tables", {}))
  examples = dict(dc.get("examples_per_subset", {}))
  if not tables:
    raise UserError(
      "dataset_configs.tables is empty; expected e.g. "
      "{'train': 'train.tfrecord@4', 'validation': 'validation.tfrecord@2'}."
    )
  splits = {}
  for split, table in sorted(tables.items()):
    if not isinstance(table, str) or not dmvr.is_sharded_table(table):
      raise UserError(
        f"dataset_configs.tables[{split!r}]={table!r}: the synthetic generator "
        "writes shards, so expected 'name@num_shards'."
      )
    if int(examples.get(split, 0)) < 1:
      raise UserError(
        f"dataset_configs.examples_per_subset[{split!r}] must be a positive int, "
        f"got {examples.get(split)}."
      )
    splits[split] = {"table": table, "num_examples": int(examples[split])}
  params = {
    "generator_version": GENERATOR_VERSION,
    "task": task_name,
    "class_names": list(task.class_names),
    "video_length": int(dc.video_length),
    "video_size": int(dc.video_size),
    "seed": int(dc.get("seed", 0)),
    "jpeg_quality": JPEG_QUALITY,
    "splits": splits,
  }
  if task.uses_clip_length:
    params["num_frames"] = int(dc.num_frames)
    params["stride"] = int(dc.stride)
    event_window(params["video_length"], params["num_frames"], params["stride"])  # Validates.
  return params


def cache_dir(params: dict) -> str:
  """~/.cache/vidtx/synthetic/<task>-<hash> ($VIDTX_CACHE replaces ~/.cache/vidtx)."""
  root = os.environ.get("VIDTX_CACHE") or os.path.join("~", ".cache", "vidtx")
  digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
  return os.path.join(os.path.expanduser(root), "synthetic", f"{params['task']}-{digest}")


def generate_split(params: dict, split: str) -> Iterator[tuple[np.ndarray, int]]:
  """The split's videos in order, deterministically: (frames, label) per video.

  Labels are balanced (a seeded permutation of 0, 1, ..., C-1, 0, 1, ...); every video has its
  own generator seeded by (seed, split, index), so splits and videos are independent.
  """
  task = get_task(params["task"])
  num_classes = len(task.class_names)
  num_examples = params["splits"][split]["num_examples"]
  key = _split_key(split)
  labels = np.random.default_rng([params["seed"], key]).permutation(
    np.arange(num_examples) % num_classes
  )
  clip = {"num_frames": params.get("num_frames"), "stride": params.get("stride", 1)}
  for i in range(num_examples):
    rng = np.random.default_rng([params["seed"], key, i])
    yield task.generate(
      rng, params["video_length"], params["video_size"], label=int(labels[i]), **clip
    )


def _serialized_split(params: dict, split: str, chunk: int = 64) -> Iterator[bytes]:
  """The split's serialised SequenceExamples; JPEG-encodes `chunk` videos per encoder call."""
  class_names = params["class_names"]
  length = params["video_length"]

  def serialise(videos: list[tuple[np.ndarray, int]], start: int) -> Iterator[bytes]:
    jpegs = dmvr.encode_jpegs(np.concatenate([f for f, _ in videos]), params["jpeg_quality"])
    for j, (_, label) in enumerate(videos):
      yield dmvr.sequence_example_from_jpegs(
        jpegs[j * length : (j + 1) * length],
        label,
        label_text=class_names[label],
        video_id=f"{split}-{start + j:06d}",
      )

  videos, start = [], 0
  for video in generate_split(params, split):
    videos.append(video)
    if len(videos) == chunk:
      yield from serialise(videos, start)
      videos, start = [], start + chunk
  if videos:
    yield from serialise(videos, start)


def is_legacy_dataset_dir(directory: str) -> bool:
  """A synthetic dataset written before the ownership marker: its dataset_info.json holds the
  generator's fields (a DMVR dataset's own dataset_info.json does not)."""
  info = ownership.read_json(os.path.join(directory, "dataset_info.json"))
  return bool(info) and {"generator_version", "task", "class_names", "splits"} <= set(info)


def _claim(directory: str, in_cache: bool) -> None:
  hint = (
    f"To train on the data in {directory}, set --config.dataset_name=dmvr (with its "
    "dataset_configs.tables, examples_per_subset and num_classes) to read these shards; to "
    "generate the synthetic dataset, leave dataset_configs.base_dir empty (vidtx's cache) "
    "or name a new directory."
  )
  # The cache path (<cache>/synthetic/<task>-<hash>) is vidtx's by construction: whatever is there
  # (e.g. an interrupted generation from before the marker) was written by vidtx.
  ownership.claim(
    directory,
    "synthetic",
    hint=hint,
    legacy=(lambda _: True) if in_cache else is_legacy_dataset_dir,
  )


def ensure_dataset(dataset_configs: ml_collections.ConfigDict) -> str:
  """Generates the synthetic dataset unless it is already there; returns its directory.

  Writes every split of `dataset_configs.tables` (sizes from `examples_per_subset`), labels.txt
  and dataset_info.json into `dataset_configs.base_dir`, or into the cache directory when
  base_dir is empty. dataset_info.json is written last: a matching one means the data is complete.
  Raises ownership.NotOwnedError (a ValueError) when base_dir holds anything but vidtx's
  synthetic data, before anything is written.
  """
  params = dataset_parameters(dataset_configs)
  base_dir = dataset_configs.get("base_dir")
  directory = base_dir or cache_dir(params)
  info_path = os.path.join(directory, "dataset_info.json")
  if ownership.read_json(info_path) == params:
    # Complete (only vidtx writes these fields). Marked on the way, if the directory can be
    # written: a read-only copy of the dataset is still read.
    try:
      _claim(directory, in_cache=not base_dir)
    except ownership.UnwritableError:
      pass
    return directory
  _claim(directory, in_cache=not base_dir)
  if tf.io.gfile.exists(info_path):
    # Stale: remove it first, so an interrupted regeneration never looks complete.
    tf.io.gfile.remove(info_path)
  for split, spec in params["splits"].items():
    start = time.time()
    name, num_shards = spec["table"].rsplit("@", 1)
    # overwrite: the directory is vidtx's synthetic dataset (claimed above); older shards of the
    # same names are generated data of other parameters.
    dmvr.write_shards(
      _serialized_split(params, split),
      os.path.join(directory, name),
      int(num_shards),
      overwrite=True,
    )
    elapsed = time.time() - start
    print(
      f"vidtx synthetic '{params['task']}': wrote {spec['num_examples']} {split} videos to "
      f"{directory} in {elapsed:.1f} s ({spec['num_examples'] / elapsed:.0f} videos/s)",
      flush=True,
    )
  dmvr.write_text_atomically(
    os.path.join(directory, "labels.txt"), "".join(name + "\n" for name in params["class_names"])
  )
  dmvr.write_text_atomically(info_path, json.dumps(params, indent=2, sort_keys=True))
  return directory
