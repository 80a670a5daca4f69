"""vidtx.checkpoints.names: Keys' full-list errors (every missing and unknown name at once)."""

import numpy as np
import pytest

from vidtx.checkpoints import names


def test_keys_finish_lists_every_missing_and_unknown_name():
  tensors = {
    "a.weight": np.zeros((2, 3)),
    "b.weight": np.zeros(4),
    "c.bias": np.zeros(5),
    "extra.weight": np.zeros(1),
  }
  keys = names.Keys(tensors, "ckpt.pth")
  assert keys.get("a.weight") is tensors["a.weight"]
  assert keys.get("x.weight") is None and keys.get("y.bias") is None
  assert keys.get("z.bias", optional=True) is None  # optional: not missing
  with pytest.raises(ValueError) as error:
    keys.finish()
  message = str(error.value)
  assert "ckpt.pth" in message and "2 missing, 3 unknown" in message
  for line in (
    "missing: x.weight",
    "missing: y.bias",
    "unknown: b.weight (4,)",
    "unknown: c.bias (5,)",
    "unknown: extra.weight (1,)",
  ):
    assert line in message
  assert "z.bias" not in message
  assert "missing: a.weight" not in message and "unknown: a.weight" not in message


def test_keys_ignore_suppresses_unknowns_by_full_match():
  tensors = {
    "a.weight": np.zeros(1),
    "pre_logits.weight": np.zeros(1),
    "pre_logits.bias": np.zeros(1),
    "extra.weight": np.zeros(1),
  }
  keys = names.Keys(tensors, "ckpt")
  keys.get("a.weight")
  keys.ignore([r"pre_logits\..*", "extra"])  # 'extra' does not match all of 'extra.weight'
  with pytest.raises(ValueError) as error:
    keys.finish()
  assert "unknown: extra.weight" in str(error.value)
  assert "pre_logits" not in str(error.value)
  keys.ignore([r"extra\..*"])
  keys.finish()  # Nothing left over.


def test_keys_count_and_shape():
  keys = names.Keys(
    {"blocks.0.w": np.zeros(1), "blocks.1.w": np.zeros((2, 3)), "blocks.1.b": np.zeros(1)}, "ckpt"
  )
  assert keys.count(r"blocks\.(\d+)\.") == 2
  assert keys.shape("blocks.1.w") == (2, 3)
  with pytest.raises(ValueError, match="'blocks.2.w' is missing"):
    keys.shape("blocks.2.w")
  gappy = names.Keys({"blocks.0.w": np.zeros(1), "blocks.2.w": np.zeros(1)}, "ckpt")
  with pytest.raises(ValueError, match="not 0..N-1"):
    gappy.count(r"blocks\.(\d+)\.")
