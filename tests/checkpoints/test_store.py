"""vidtx.checkpoints.store: the converted-checkpoint directory written and read back, and what
it refuses."""

import dataclasses
import os

import flax
import jax
import numpy as np
import pytest
from test_surgery import PREPROCESSING, TINY, _flat

from vidtx import models
from vidtx.checkpoints import store


@pytest.fixture(scope="module")
def tiny_converted() -> store.Converted:
  model = models.build("timesformer", TINY, 3)
  params = model.init(jax.random.key(0), np.zeros((1, 2, 32, 32, 3), np.float32), train=False)[
    "params"
  ]
  params = jax.tree.map(np.asarray, flax.core.unfreeze(params))
  return store.Converted(
    model_name="timesformer",
    model_config=dict(TINY),
    num_classes=3,
    params=params,
    preprocessing=dict(PREPROCESSING),
    labels=["run", "jump", "sit"],
    source=dict(path="x", format="timm"),
  )


def _with(converted: store.Converted, **changes) -> store.Converted:
  return dataclasses.replace(converted, **changes)


def test_store_round_trip(tmp_path, tiny_converted):
  out = store.save(str(tmp_path / "tiny"), tiny_converted)
  assert out == str(tmp_path / "tiny")
  assert store.is_converted_dir(out)
  loaded = store.load(out)
  assert loaded.model_name == "timesformer"
  assert loaded.model_config == TINY
  assert loaded.num_classes == 3
  assert loaded.labels == ["run", "jump", "sit"]
  assert loaded.preprocessing == PREPROCESSING
  assert loaded.source["path"] == "x" and "written" in loaded.source
  want, got = _flat(tiny_converted.params), _flat(loaded.params)
  assert sorted(got) == sorted(want)
  for name in want:
    assert got[name].dtype == want[name].dtype, name
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  assert sorted(os.listdir(tmp_path)) == ["tiny"]


def test_store_refuses_an_existing_dir_unless_overwrite(tmp_path, tiny_converted):
  out = str(tmp_path / "tiny")
  store.save(out, tiny_converted)
  with open(os.path.join(out, store.MODEL_FILE)) as f:
    before = f.read()
  changed = _with(tiny_converted, labels=["a", "b", "c"])
  with pytest.raises(FileExistsError, match="--overwrite"):
    store.save(out, changed)
  with open(os.path.join(out, store.MODEL_FILE)) as f:
    assert f.read() == before
  assert store.load(out).labels == ["run", "jump", "sit"]
  store.save(out, changed, overwrite=True)
  assert store.load(out).labels == ["a", "b", "c"]
  assert sorted(os.listdir(tmp_path)) == ["tiny"]  # No temporary or '.old' directory left.


def test_store_lists_every_parameter_problem(tmp_path, tiny_converted):
  params = _flat(tiny_converted.params)
  del params["head/bias"]
  params["bogus/kernel"] = np.zeros((2, 2), np.float32)
  params["embedding/bias"] = np.zeros(31, np.float32)
  bad = _with(tiny_converted, params=flax.traverse_util.unflatten_dict(params, sep="/"))
  with pytest.raises(ValueError) as error:
    store.save(str(tmp_path / "bad"), bad)
  message = str(error.value)
  assert "3 problem(s)" in message
  assert "missing: head/bias (3,)" in message
  assert "unexpected: bogus/kernel (2, 2)" in message
  assert "shape of embedding/bias: (31,), the model expects (32,)" in message
  assert os.listdir(tmp_path) == []  # Neither the output nor a temporary directory.


def test_store_failure_midway_leaves_no_temporary_dir(tmp_path, tiny_converted, monkeypatch):
  out = str(tmp_path / "tiny")
  store.save(out, tiny_converted)

  def fail(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(store.json, "dump", fail)  # After the parameters are written.
  with pytest.raises(OSError, match="disk full"):
    store.save(str(tmp_path / "other"), tiny_converted)
  with pytest.raises(OSError, match="disk full"):
    store.save(out, _with(tiny_converted, labels=["a", "b", "c"]), overwrite=True)
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path)) == ["tiny"]
  assert store.load(out).labels == ["run", "jump", "sit"]  # The old one is intact.


def test_store_rejects_labels_that_do_not_match_the_classes(tmp_path, tiny_converted):
  with pytest.raises(ValueError, match="2 labels for 3 classes"):
    store.save(str(tmp_path / "tiny"), _with(tiny_converted, labels=["a", "b"]))
  with pytest.raises(ValueError, match="preprocessing.std"):
    store.save(
      str(tmp_path / "tiny"),
      _with(tiny_converted, preprocessing=dict(PREPROCESSING, std=[0.5, 0.0, 0.5])),
    )
  assert os.listdir(tmp_path) == []


def test_store_reports_missing_preprocessing_fields(tmp_path, tiny_converted):
  preprocessing = {k: v for k, v in PREPROCESSING.items() if k != "num_frames"}
  with pytest.raises(ValueError, match=r"preprocessing lacks \['num_frames'\]"):
    store.save(str(tmp_path / "tiny"), _with(tiny_converted, preprocessing=preprocessing))


def test_store_load_of_a_plain_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="vidtx.convert"):
    store.load(str(tmp_path))
