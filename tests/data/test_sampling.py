"""vidtx.data.sampling: evaluation clips evenly spaced, random clips covering every offset."""

import numpy as np
import tensorflow as tf

from vidtx.data import sampling


def test_eval_clip_indices_are_evenly_spaced():
  def indices(length, frames, stride, clips):
    return sampling.eval_clip_indices(tf.constant(length), frames, stride, clips).numpy().tolist()

  # Span (4 - 1) * 2 + 1 = 7 frames of 20: offsets in [0, 13].
  assert indices(20, 4, 2, 1) == [[6, 8, 10, 12]]  # Middle: 13 // 2.
  assert indices(20, 4, 2, 3) == [[0, 2, 4, 6], [6, 8, 10, 12], [13, 15, 17, 19]]
  for length, frames, stride, clips in [(50, 8, 2, 4), (300, 32, 2, 7), (17, 3, 5, 2)]:
    offsets = np.floor(np.linspace(0, length - (frames - 1) * stride - 1, clips)).astype(int)
    expected = offsets[:, None] + np.arange(frames) * stride
    assert indices(length, frames, stride, clips) == expected.tolist()
  # A video shorter than the span loops.
  assert indices(5, 4, 2, 2) == [[0, 2, 4, 1], [0, 2, 4, 1]]


def test_random_clip_indices_cover_every_offset():
  offsets = set()
  for i in range(200):
    idx = sampling.random_clip_indices(tf.constant(12), 3, 2, tf.constant([7, i])).numpy()
    assert (np.diff(idx) == 2).all()
    offsets.add(int(idx[0]))
  assert offsets == set(range(12 - 5 + 1))
  short = sampling.random_clip_indices(tf.constant(3), 4, 1, tf.constant([0, 0])).numpy()
  assert short.tolist() == [0, 1, 2, 0]
