"""Never load a wrong head, nor answer NaN, silently: init_from matches the head's classes by
name (every family, scanned or not), `vidtx.predict` refuses non-finite inputs and logits, and
a truncated checkpoint file is a one-line error naming it."""

import dataclasses
import os
import re
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest
import reference
from flax import serialization
from safetensors.numpy import save_file
from shared import REPO
from test_predict import checkpoint_dir, converted, moving_square, write_video  # noqa: F401

from vidtx import models, predict
from vidtx.checkpoints import init_from, readers, scan, store
from vidtx.inference import classifier

ENV = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
TINY = dict(variant="Ti/16", hidden_size=32, num_heads=2, mlp_dim=64, num_layers=2)
FAMILIES = {
  "timesformer": ("timesformer", dict(TINY, attention="divided")),
  # X-ViT: a temporal-attention head and an MLP ('head_hidden') before the classifier.
  "xvit": ("xvit", dict(TINY, head_mlp_dim=24)),
  "vivit": (
    "vivit",
    dict(TINY, variant="Ti/16x2", attention="factorised_encoder", temporal_layers=1),
  ),
}
PREPROCESSING = dict(
  num_frames=4,
  stride=1,
  min_resize=32,
  crop_size=32,
  mean=[0.5] * 3,
  std=[0.5] * 3,
  num_test_clips=1,
  do_three_spatial_crops=False,
  aggregation="mean_logits",
)
THEIRS = ["left", "right", "up", "down"]


def _flat(tree) -> dict[str, np.ndarray]:
  return {
    k: np.asarray(v)
    for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/").items()
  }


def _random(family: str, num_classes: int, seed: int, **overrides) -> dict:
  """Random parameters (zero heads would hide a wrong column) of the unscanned layout."""
  model_name, config = FAMILIES[family]
  model = models.build(model_name, dict(config, **overrides), num_classes)
  shapes = reference.init_shapes(model, (1, 4, 32, 32, 3))
  return jax.tree.map(np.asarray, flax.core.unfreeze(reference.random_like(shapes, seed=seed)))


def _source(family: str, labels: list[str] | None = THEIRS, num_classes: int = 4):
  model_name, config = FAMILIES[family]
  return store.Converted(
    model_name=model_name,
    model_config=dict(config),
    num_classes=num_classes,
    params=_random(family, num_classes, seed=1),
    preprocessing=dict(PREPROCESSING),
    labels=labels,
  )


def _initialise(
  family: str, source: store.Converted, class_names, *, scanned: bool = False, **init_config
):
  """(fresh, initialised, report), flat per-layer names, for a model of len(class_names) or 4
  classes."""
  model_name, config = FAMILIES[family]
  num_classes = len(class_names) if class_names is not None else 4
  model = models.build(model_name, dict(config, scan_layers=scanned), num_classes)
  fresh = _random(family, num_classes, seed=2)
  params, report = init_from.initialise(
    scan.stack_layers(fresh) if scanned else fresh,
    model_name=model_name,
    model_config=model.config,
    init_config=dict(checkpoint_path="ckpt", **init_config),
    num_frames=4,
    crop_size=32,
    source=source,
    class_names=class_names,
  )
  return _flat(fresh), _flat(scan.unstack_layers(params) if scanned else params), report


# ---------------------------------------------------------------------------------------------
# init_from: the head's classes by name.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "family, scanned",
  [("timesformer", False), ("timesformer", True), ("xvit", False), ("vivit", True)],
)
def test_a_head_in_another_order_is_permuted_by_name(family, scanned):
  source = _source(family)
  want = _flat(source.params)
  fresh, got, report = _initialise(family, source, ["down", "left", "right", "up"], scanned=scanned)
  order = [3, 0, 1, 2]  # The run's class i is the checkpoint's class order[i].
  np.testing.assert_array_equal(got["head/kernel"], want["head/kernel"][:, order])
  np.testing.assert_array_equal(got["head/bias"], want["head/bias"][order])
  # Everything else by name as before, X-ViT's head MLP included (its axis is not the classes).
  for name in set(got) - {"head/kernel", "head/bias"}:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  assert "head: 4 classes remapped by name (the checkpoint's order differs)" in report.notes
  assert {"head/kernel", "head/bias"} <= set(report.adapted) & set(report.loaded)
  assert not report.fresh


def test_the_same_classes_in_the_same_order_are_kept_without_a_note():
  source = _source("timesformer")
  _, got, report = _initialise("timesformer", source, list(THEIRS))
  np.testing.assert_array_equal(got["head/kernel"], _flat(source.params)["head/kernel"])
  assert not any(note.startswith("head") for note in report.notes)
  assert "head/kernel" in report.loaded and "head/kernel" not in report.adapted


def test_a_partial_overlap_takes_the_shared_classes_and_keeps_the_others_fresh():
  source = _source("xvit")
  want = _flat(source.params)
  fresh, got, report = _initialise("xvit", source, ["down", "jump", "left", "up"])
  np.testing.assert_array_equal(got["head/kernel"][:, [0, 2, 3]], want["head/kernel"][:, [3, 0, 2]])
  np.testing.assert_array_equal(got["head/kernel"][:, 1], fresh["head/kernel"][:, 1])
  np.testing.assert_array_equal(
    got["head/bias"],
    [want["head/bias"][3], fresh["head/bias"][1], want["head/bias"][0], want["head/bias"][2]],
  )
  assert (
    "head: 3 of the run's 4 classes taken from the checkpoint's 4 by name, 1 fresh ('jump')"
  ) in report.notes
  assert "head/kernel" in report.adapted

  # Another class count: the run's 2 classes come from the checkpoint's 4 (a head of 2 fresh
  # classes before).
  _, got, report = _initialise("xvit", source, ["up", "left"])
  np.testing.assert_array_equal(got["head/kernel"], want["head/kernel"][:, [2, 0]])
  np.testing.assert_array_equal(got["head/bias"], want["head/bias"][[2, 0]])
  assert (
    "head: 2 of the run's 2 classes taken from the checkpoint's 4 by name, 0 fresh" in report.notes
  )
  assert "head/kernel" in report.loaded and "head/kernel" not in report.fresh


def test_no_shared_class_gives_a_fresh_head_with_a_note():
  source = _source("timesformer")
  fresh, got, report = _initialise("timesformer", source, ["a", "b", "c", "d"])
  for leaf in ("kernel", "bias"):
    np.testing.assert_array_equal(got[f"head/{leaf}"], fresh[f"head/{leaf}"])
    assert f"head/{leaf}" in report.fresh and f"head/{leaf}" not in report.loaded
  note = next(n for n in report.notes if n.startswith("head re-initialised"))
  assert "none of the run's 4 class names is among the checkpoint's 4" in note
  assert "'left'" in note and "'a'" in note
  assert note in report.summary()  # train.py prints the summary.


@pytest.mark.parametrize(
  "labels, class_names, why",
  [
    (None, ["down", "left", "right", "up"], "the checkpoint has no class names"),
    (THEIRS, None, "the run passed no class names"),
    (None, None, "neither has class names"),
  ],
)
def test_without_names_on_one_side_the_head_is_kept_by_index_with_a_note(labels, class_names, why):
  source = _source("timesformer", labels=labels)
  _, got, report = _initialise("timesformer", source, class_names)
  np.testing.assert_array_equal(got["head/kernel"], _flat(source.params)["head/kernel"])
  note = next(n for n in report.notes if n.startswith("head"))
  assert "the class names could not be compared" in note and why in note


def test_class_names_of_another_count_and_a_skipped_head():
  source = _source("timesformer")
  model = models.build("timesformer", FAMILIES["timesformer"][1], 4)
  with pytest.raises(ValueError, match="init_from ckpt: 3 class names for a model of 4 classes"):
    init_from.initialise(
      _random("timesformer", 4, seed=2),
      model_name="timesformer",
      model_config=model.config,
      init_config=dict(checkpoint_path="ckpt"),
      num_frames=4,
      crop_size=32,
      source=source,
      class_names=["a", "b", "c"],
    )
  # A head skipped by pattern stays fresh, and is not remapped or noted.
  fresh, got, report = _initialise(
    "timesformer", source, ["down", "left", "right", "up"], skip_patterns=["^head/"]
  )
  np.testing.assert_array_equal(got["head/kernel"], fresh["head/kernel"])
  assert "head/kernel" in report.skipped and not any("head" in n for n in report.notes)


def test_an_image_vit_head_of_other_classes_stays_fresh():
  vit = _source("timesformer", labels=["cat", "dog", "car"], num_classes=3)
  vit = dataclasses.replace(
    vit,
    model_config=dict(vit.model_config, attention="space"),
    params=_random("timesformer", 3, seed=1, attention="space"),
    preprocessing=dict(PREPROCESSING, num_frames=1),
  )
  assert init_from.is_image_vit(vit)
  fresh, got, report = _initialise("timesformer", vit, ["down", "left", "right", "up"])
  np.testing.assert_array_equal(got["head/kernel"], fresh["head/kernel"])
  assert "head/kernel" in report.fresh
  assert any(n.startswith("head re-initialised: none of the run's 4") for n in report.notes)
  # Shared names: their columns, as from a video checkpoint.
  _, got, _ = _initialise("timesformer", vit, ["dog", "x", "cat", "y"])
  np.testing.assert_array_equal(
    got["head/kernel"][:, [0, 2]], _flat(vit.params)["head/kernel"][:, [1, 0]]
  )


# ---------------------------------------------------------------------------------------------
# vidtx.predict: non-finite inputs and logits.
# ---------------------------------------------------------------------------------------------


def _command(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    env=ENV,
    capture_output=True,
    text=True,
    timeout=300,
  )


def _error_lines(result: subprocess.CompletedProcess, prefix: str) -> list[str]:
  """stderr from the command's own line on (TensorFlow's C++ start-up logs come before it)."""
  assert "Traceback" not in result.stderr, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  starts = [i for i, line in enumerate(lines) if line.startswith(prefix)]
  assert starts, result.stderr
  return lines[starts[0] :]


@pytest.mark.slow
def test_predict_refuses_a_nan_input_in_one_line_with_a_non_zero_exit(checkpoint_dir, tmp_path):  # noqa: F811
  clips = np.zeros((2, 4, 32, 32, 3), np.float32)
  clips[1, 2, 5, 5, 0] = np.nan
  clips[1, 3, 0, 0, 2] = np.inf
  path = str(tmp_path / "nan.npy")
  np.save(path, clips)
  result = _command("vidtx.predict", f"--checkpoint={checkpoint_dir}", f"--input={path}")
  assert result.returncode != 0
  assert _error_lines(result, "error:") == [
    f"error: {path}: 2 non-finite value(s) (NaN or inf) in clip(s) 1; expected finite pixel values."
  ]
  assert "nan" not in result.stdout.lower()


@pytest.fixture(scope="module")
def nan_checkpoint_dir(converted, tmp_path_factory) -> str:  # noqa: F811
  """The tiny checkpoint of test_predict with one NaN in its head: finite inputs, NaN logits."""
  params = jax.tree.map(np.array, converted.params)
  params["head"]["bias"][2] = np.nan
  return store.save(
    str(tmp_path_factory.mktemp("nan") / "ckpt"), dataclasses.replace(converted, params=params)
  )


def test_predict_refuses_non_finite_logits_naming_the_file_and_the_views(
  nan_checkpoint_dir, tmp_path
):
  path = str(tmp_path / "clips.npy")
  np.save(path, np.zeros((3, 4, 32, 32, 3), np.float32))
  want = (
    rf"^{re.escape(path)}: non-finite logits \(NaN or inf\) for 3 of 3: 'clip 0', 'clip 1', "
    "'clip 2'; the checkpoint's parameters"
  )
  with pytest.raises(ValueError, match=want):
    predict.run(nan_checkpoint_dir, input_path=path)
  video = write_video(str(tmp_path / "clip.mp4"), moving_square(), "libx264")
  want = (
    rf"^{re.escape(video)}: non-finite logits \(NaN or inf\) for 6 of 6: 'clip 1, start "
    "crop', 'clip 1, centre crop', .*'clip 2, end crop';"
  )
  with pytest.raises(ValueError, match=want):
    predict.run(nan_checkpoint_dir, video=video)
  loaded = store.load(nan_checkpoint_dir)
  with pytest.raises(ValueError, match=r"the input array: non-finite logits .* 1 of 1: 'clip 0'"):
    classifier.predict_array(loaded, np.zeros((4, 32, 32, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# Truncated checkpoint files.
# ---------------------------------------------------------------------------------------------


def _truncate(path: str, keep: float = 0.6) -> str:
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: int(len(data) * keep)])
  return path


@pytest.mark.slow
def test_convert_names_a_truncated_safetensors_file_in_one_line(tmp_path):
  path = str(tmp_path / "vit.safetensors")
  save_file(
    {"head.weight": np.ones((3, 32), np.float32), "head.bias": np.zeros(3, np.float32)}, path
  )
  assert sorted(readers.read(path).tensors) == ["head.bias", "head.weight"]  # Whole: it reads.
  _truncate(path)
  out = str(tmp_path / "out")
  result = _command("vidtx.convert", f"--src={path}", f"--out={out}")
  assert result.returncode == 1
  lines = _error_lines(result, "vidtx.convert:")
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith(
    f"vidtx.convert: error: {path}: cannot read it as a .safetensors "
    "file: it is truncated or corrupt ("
  )
  assert not os.path.exists(out)


def test_truncated_npz_and_msgpack_files_are_named(tmp_path):
  path = str(tmp_path / "vit.npz")
  np.savez(path, **{"embedding/kernel": np.ones((16, 16, 3, 8), np.float32)})
  for keep in (0.6, 0.0):
    _truncate(path, keep)
    want = f"^{re.escape(path)}: cannot read it as an .npz file: it is truncated or corrupt"
    with pytest.raises(ValueError, match=want):
      readers.read(path)
  path = str(tmp_path / "checkpoint_1")
  with open(path, "wb") as f:
    f.write(serialization.msgpack_serialize({"params": {"a": np.ones(64, np.float32)}}))
  _truncate(path)
  with pytest.raises(
    ValueError, match=f"^{re.escape(path)}: not a Flax msgpack checkpoint, or truncated"
  ):
    readers.read(path)


class _CodeInPickle:
  """Unpickling this would create the file `path`: a checkpoint that carries code."""

  def __init__(self, path: str):
    self.path = path

  def __reduce__(self):
    return (open, (self.path, "w"))


@pytest.mark.slow
def test_a_pickle_with_code_is_refused_and_never_run(tmp_path):
  import torch

  ran = tmp_path / "code_ran"
  checkpoint = tmp_path / "model.pth"
  torch.save({"model": {"head.weight": _CodeInPickle(str(ran))}}, checkpoint)
  assert not ran.exists()
  with pytest.raises(ValueError, match="model.pth") as error:
    readers.read(str(checkpoint))
  assert "\n" not in str(error.value)
  assert not ran.exists()
