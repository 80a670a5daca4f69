"""vidtx.data.synthetic: the generators are deterministic and well formed, the motion tasks'
invariances (the same distribution in every class, rotations turning their way, flashes inside
every clip), and the moving object's mask is where it moves."""

import numpy as np
import pytest

from vidtx.data import synthetic


def test_motion_mask_is_where_the_object_moves():
  from vidtx.data import synthetic

  frames, label = synthetic.generate_motion(np.random.default_rng(5), 20, 36, label=1)
  same, label2, coverage = synthetic.motion_with_mask(np.random.default_rng(5), 20, 36, label=1)
  np.testing.assert_array_equal(frames, same)  # The dataset's video, plus where the object is.
  assert label == label2 == 1 and coverage.shape == (20, 36, 36)
  # 'right': the covered columns move right (on the torus), rows stay.
  rows, columns = np.nonzero(coverage[0] > 0.5)
  rows5, columns5 = np.nonzero(coverage[5] > 0.5)
  shift = (
    (
      np.angle(np.exp(2j * np.pi * columns5 / 36).mean())
      - np.angle(np.exp(2j * np.pi * columns / 36).mean())
    )
    * 36
    / (2 * np.pi)
  )
  assert 5 <= shift % 36 <= 10  # 1 to 2 pixels per frame, 5 frames.
  drift = (
    (
      np.angle(np.exp(2j * np.pi * rows5 / 36).mean())
      - np.angle(np.exp(2j * np.pi * rows / 36).mean())
    )
    * 36
    / (2 * np.pi)
  )
  assert abs(drift) < 0.2  # Pixels: only the anti-aliased outline changes.


def test_generators_are_deterministic_and_well_formed():
  for name, task in synthetic.TASKS.items():
    a, label_a = task.generate(np.random.default_rng(3), 12, 24, num_frames=6, stride=2)
    b, label_b = task.generate(np.random.default_rng(3), 12, 24, num_frames=6, stride=2)
    c, _ = task.generate(np.random.default_rng(4), 12, 24, num_frames=6, stride=2)
    assert a.shape == (12, 24, 24, 3) and a.dtype == np.uint8, name
    assert label_a == label_b and 0 <= label_a < len(task.class_names)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_motion_frames_have_the_same_distribution_in_every_class(monkeypatch):
  length, size, count = 8, 24, 150
  coverage = {}  # class -> (count, T, S, S) object coverage
  colour = {}  # class -> mean colour of the object's pixels
  for label, name in enumerate(synthetic.TASKS["motion"].class_names):
    frames = render_without_background(monkeypatch, "motion", label, count, length, size)
    coverage[name] = (frames[..., 0] > -500).astype(np.float64)
    colour[name] = frames[coverage[name] > 0].mean(0)
  everything = np.mean(list(coverage.values()))
  # Shape, size and colour do not depend on the class (object area: shape and size).
  for name, cover in coverage.items():
    assert abs(cover.mean() / everything - 1) < 0.05, name
    assert np.abs(colour[name] - np.mean(list(colour.values()), axis=0)).max() < 15, name
  for name, cover in coverage.items():
    for t in (0, length - 1):  # Every position is equally likely in any frame of any class.
      rows = cover[:, t].mean(axis=(0, 2))
      columns = cover[:, t].mean(axis=(0, 1))
      assert np.abs(rows - everything).max() < 0.05, (name, t)
      assert np.abs(columns - everything).max() < 0.05, (name, t)
    # The object really moves in the class's direction: displacement per frame of its centroid.
    centres = circular_centroid(cover)  # (count, T, 2)
    step = (np.diff(centres, axis=1) + size / 2) % size - size / 2
    velocity = step.mean(axis=1)  # (count, 2) as (dy, dx)
    direction = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[name]
    along = velocity @ np.array(direction)
    assert (along > 0.5).all() and (along < 2.5).all(), name
    assert np.abs(velocity @ np.array(direction[::-1])).max() < 0.3, name
  # Time reversal: 'right' is 'left' played backwards (same coverage statistics, mirrored speed).
  left_reversed = coverage["left"][:, ::-1]
  for statistic in (lambda c: c.mean(axis=(0, 1, 2)), lambda c: c.mean(axis=(0, 1, 3))):
    np.testing.assert_allclose(statistic(left_reversed), statistic(coverage["right"]), atol=0.05)


def test_rotation_classes_turn_their_way(monkeypatch):
  for label, sign in ((0, 1), (1, -1)):  # Clockwise on screen (y points down) is positive.
    frames = render_without_background(monkeypatch, "rotation", label, 20, 16, 40)
    centres = circular_centroid((frames[..., 0] > -500).astype(np.float64))  # (count, T, 2)
    # The L's centroid circles the fixed centre: the sign of the area its path sweeps (relative
    # to the path's mean) is the direction of rotation.
    path = (centres - centres[:, :1] + 20) % 40 - 20  # Unwrapped around the first frame.
    path = path - path.mean(axis=1, keepdims=True)
    y, x = path[..., 0], path[..., 1]
    swept = (x[:, :-1] * y[:, 1:] - y[:, :-1] * x[:, 1:]).sum(axis=1)
    assert (np.sign(swept) == sign).all()


def test_order_flashes_fall_inside_every_clip(monkeypatch):
  length, num_frames, stride, size = 20, 8, 2, 64
  first, last = synthetic.event_window(length, num_frames, stride)
  assert (first, last) == (5, 14)
  for label in (0, 1):
    videos = render_without_background(
      monkeypatch, "order", label, 15, length, size, num_frames=num_frames, stride=stride
    )
    for video in videos:
      changed = np.abs(video - np.median(video, axis=0)).sum(-1) > 30  # (T, S, S)
      times = np.flatnonzero(changed.any(axis=(1, 2)))
      assert first <= times.min() and times.max() <= last
      # Two flashes of exactly `stride` frames each (possibly back to back: a new flash starts
      # where the changed region changes); the disc is the rounder one.
      starts = [
        t for t in times if t - 1 not in times or not np.array_equal(changed[t], changed[t - 1])
      ]
      assert len(starts) == 2 and len(times) == 2 * stride
      shapes = []
      for start in starts:
        # Centre the flashing object (it may wrap around the frame edges) before measuring it.
        centre = circular_centroid(changed[start].astype(np.float64)).round().astype(int)
        centred = np.roll(changed[start], tuple(size // 2 - centre), axis=(0, 1))
        ys, xs = np.nonzero(centred)
        spread = np.hypot(ys - ys.mean(), xs - xs.mean()).max() / np.sqrt(len(ys))
        shapes.append("disc" if spread < 0.635 else "square")
      assert shapes == (["disc", "square"] if label == 0 else ["square", "disc"])
      # Whatever offset the reader draws, each flash is in exactly one sampled frame.
      for offset in range(length - (num_frames - 1) * stride):
        sampled = offset + stride * np.arange(num_frames)
        assert np.isin(sampled, times).sum() == 2
  with pytest.raises(ValueError, match="video_length"):
    synthetic.event_window(30, 8, 2)


def render_without_background(
  monkeypatch, task: str, label: int, count: int, length: int, size: int, **clip
) -> np.ndarray:
  """float frames (count, T, S, S, 3) with the background at -1000, so objects can be located."""
  monkeypatch.setattr(
    synthetic, "_background", lambda rng, size, dark: np.full((size, size, 3), -1000.0, np.float32)
  )
  monkeypatch.setattr(synthetic, "_to_uint8", lambda frames: frames)
  generate = synthetic.TASKS[task].generate
  return np.stack(
    [
      generate(np.random.default_rng([label, i]), length, size, label=label, **clip)[0]
      for i in range(count)
    ]
  )


def circular_centroid(mask: np.ndarray) -> np.ndarray:
  """(..., S, S) coverage -> (..., 2) centroid (y, x) on the torus."""
  size = mask.shape[-1]
  angle = 2 * np.pi * np.arange(size) / size
  centre = []
  for axis in (-2, -1):
    weights = mask.sum(axis=-1 if axis == -2 else -2)  # (..., S) profile along `axis`.
    mean = np.arctan2(weights @ np.sin(angle), weights @ np.cos(angle))
    centre.append(mean % (2 * np.pi) * size / (2 * np.pi))
  return np.stack(centre, -1)
