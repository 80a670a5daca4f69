"""vidtx.data.synthetic: the moving object's mask is where it moves."""

import numpy as np


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
