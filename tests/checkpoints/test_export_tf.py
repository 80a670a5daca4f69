"""Export out of vidtx: the TF SavedModel (vidtx.checkpoints.export_tf) against vidtx's own
logits, and the `python -m vidtx.export` command's sources and output-directory rules."""

import dataclasses
import json
import os
import subprocess
import sys
import types

import flax
import jax
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from shared import REPO, tiny_config

from vidtx import checkpoints, models, ownership, trainer
from vidtx import export as export_cli
from vidtx.checkpoints import export_tf, store
from vidtx.models import kernels

TINY = dict(variant="Ti/16", hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64)
PREPROCESSING = dict(
  num_frames=2,
  stride=1,
  min_resize=32,
  crop_size=32,
  mean=[0.45, 0.5, 0.55],
  std=[0.2, 0.25, 0.3],
  num_test_clips=1,
  do_three_spatial_crops=False,
  aggregation="mean_logits",
)


def tiny(model_name: str, config: dict, seed: int = 0) -> store.Converted:
  """A tiny model whose every parameter is random (the zero-initialised head included)."""
  model = models.build(model_name, config, 3)
  video = np.zeros((1, 2, 32, 32, 3), np.float32)
  params = flax.core.unfreeze(model.init(jax.random.key(seed), video, train=False)["params"])
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
    lambda x: np.asarray(x) + rng.normal(0, 0.05, np.shape(x)).astype(np.float32), params
  )
  return store.Converted(
    model_name=model_name,
    model_config=dict(config),
    num_classes=3,
    params=params,
    preprocessing=dict(PREPROCESSING),
    labels=["run", "jump", "sit"],
    source=dict(path="x", format="timm"),
  )


def vidtx_logits(converted: store.Converted, video: np.ndarray) -> np.ndarray:
  model = converted.build_model()
  return np.asarray(model.apply({"params": converted.params}, video, train=False)[0])


def clips(batch: int, seed: int = 1) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(batch, 2, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def timesformer() -> store.Converted:
  return tiny("timesformer", TINY)


@pytest.fixture(scope="module")
def saved(timesformer, tmp_path_factory) -> str:
  out = str(tmp_path_factory.mktemp("savedmodel"))
  export_tf.write(timesformer, out)
  return out


# ---------------------------------------------------------------------------------------------
# The SavedModel.
# ---------------------------------------------------------------------------------------------


def test_savedmodel_logits_equal_vidtx_for_any_batch_size(timesformer, saved):
  loaded = tf.saved_model.load(saved)
  serve = loaded.signatures["serving_default"]
  for batch in (1, 3):
    video = clips(batch, seed=batch)
    got = serve(video=tf.constant(video))["logits"].numpy()
    want = vidtx_logits(timesformer, video)
    assert got.shape == (batch, 3) and np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_frames_signature_normalises_in_the_graph(timesformer, saved):
  frames = np.random.default_rng(2).integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8)
  got = tf.saved_model.load(saved).signatures["serving_frames"](frames=tf.constant(frames))
  mean, std = np.float32(PREPROCESSING["mean"]), np.float32(PREPROCESSING["std"])
  video = (frames.astype(np.float32) / np.float32(255) - mean) / std  # As the reader does.
  np.testing.assert_allclose(got["logits"].numpy(), vidtx_logits(timesformer, video), atol=1e-4)


def test_savedmodel_records_the_preprocessing_and_labels(saved):
  with open(os.path.join(saved, export_tf.PREPROCESSING_FILE)) as f:
    info = json.load(f)
  assert info["preprocessing"] == PREPROCESSING
  assert info["labels"] == ["run", "jump", "sit"]
  assert info["model_name"] == "timesformer" and info["num_classes"] == 3
  assert info["batch_size"] is None and set(info["signatures"]) == set(export_tf.SIGNATURES)
  assert sorted(os.listdir(saved)) == [
    "assets",
    "fingerprint.pb",
    "saved_model.pb",
    "variables",
    export_tf.PREPROCESSING_FILE,
  ]


def test_a_clip_of_the_wrong_shape_is_refused_naming_the_expected_shape(saved):
  """A loaded signature does not enforce its input spec: without the check a wrong frame count
  reached the embedded XLA module, whose refusal was a 23-line compiler dump."""
  signatures = tf.saved_model.load(saved).signatures
  calls = [
    ("serving_default", "video", tf.zeros([1, 3, 32, 32, 3])),  # 3 frames, not 2.
    ("serving_frames", "frames", tf.zeros([2, 2, 16, 16, 3], tf.uint8)),  # 16 x 16, not 32.
    ("serving_default", "video", tf.zeros([0, 2, 32, 32, 3])),  # No clip at all.
  ]
  for name, key, value in calls:
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
      signatures[name](**{key: value})
    message = raised.value.message
    assert f"{name}: {key} must have shape [B, 2, 32, 32, 3]" in message, message
    assert f"got shape] [{' '.join(map(str, value.shape))}]" in message, message
    assert message.count("\n") < 8 and "stablehlo" not in message, message


def test_vivit_with_a_fixed_batch_size(tmp_path):
  config = dict(TINY, variant="Ti/16x2", attention="factorised_encoder")
  config.update(spatial_layers=1, temporal_layers=1, classifier="token")
  converted = tiny("vivit", config, seed=3)
  export_tf.write(converted, str(tmp_path), batch_size=2)
  serve = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
  assert serve.structured_input_signature[1]["video"].shape.as_list() == [2, 2, 32, 32, 3]
  video = clips(2, seed=4)
  np.testing.assert_allclose(
    serve(video=tf.constant(video))["logits"].numpy(), vidtx_logits(converted, video), atol=1e-4
  )
  # A fully static spec: another batch size is refused naming the expected shape too.
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected shape \[2,2,32,32,3\]"):
    serve(video=tf.constant(clips(3)))


def test_attention_is_xla_where_auto_would_pick_cudnn(tmp_path, monkeypatch):
  """On an NVIDIA GPU 'auto' takes cuDNN for bfloat16 at >= 128 tokens; the export must not
  (a cuDNN custom call would not run on the other platforms, nor on a machine without cuDNN)."""
  monkeypatch.setattr(kernels, "current_platform", lambda: "cuda")
  config = dict(TINY, variant="Ti/4", attention="joint", dtype="bfloat16")
  converted = tiny("timesformer", dict(config, attention_implementation="xla"))
  converted.model_config["attention_implementation"] = "auto"  # 2 x 8 x 8 = 128 tokens.
  with pytest.raises(RuntimeError, match="cuDNN"):  # vidtx itself would call cuDNN here.
    vidtx_logits(converted, clips(1))
  assert export_tf.inference_model(converted).config.attention_implementation == "xla"
  export_tf.write(converted, str(tmp_path))
  with open(tmp_path / "saved_model.pb", "rb") as f:
    graph = f.read()
  assert b"__cudnn$" not in graph and b"fmha" not in graph  # jax's cuDNN custom-call targets.


def test_parameters_that_do_not_fit_are_refused(timesformer, tmp_path):
  params = flax.traverse_util.flatten_dict(timesformer.params, sep="/")
  del params["head/bias"]
  broken = dataclasses.replace(
    timesformer, params=flax.traverse_util.unflatten_dict(params, sep="/")
  )
  with pytest.raises(ValueError, match="missing: head/bias"):
    export_tf.write(broken, str(tmp_path))
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# The command.
# ---------------------------------------------------------------------------------------------


def run_main(*args: str) -> None:
  """`python -m vidtx.export ARGS` in this process (its own flags, not absl's global ones)."""
  values = flags.FlagValues()
  export_cli._define_flags(values)
  values(["vidtx.export", *args])
  export_cli.main([], flag_values=values)


def fake_hf(monkeypatch) -> list:
  """A stand-in for vidtx.checkpoints.export_hf: writes config.json; returns its calls."""
  calls = []

  def write(converted, out_dir):
    calls.append(out_dir)
    assert os.listdir(out_dir) == []
    with open(os.path.join(out_dir, "config.json"), "w") as f:
      json.dump({"labels": converted.labels}, f)

  module = types.ModuleType("vidtx.checkpoints.export_hf")
  module.write = write
  monkeypatch.setitem(sys.modules, module.__name__, module)
  monkeypatch.setattr(checkpoints, "export_hf", module, raising=False)
  return calls


@pytest.fixture(scope="module")
def converted_dir(timesformer, tmp_path_factory) -> str:
  return store.save(str(tmp_path_factory.mktemp("src") / "tiny"), timesformer)


def test_cli_exports_a_converted_checkpoint_as_savedmodel(timesformer, converted_dir, tmp_path):
  out = str(tmp_path / "exported")
  run_main("--src", converted_dir, "--out", out, "--format=savedmodel")
  assert ownership.marker_kind(out) == "exported"
  assert sorted(os.listdir(tmp_path)) == ["exported"]  # No temporary directory left.
  video = clips(2)
  got = tf.saved_model.load(out).signatures["serving_default"](video=tf.constant(video))
  np.testing.assert_allclose(got["logits"].numpy(), vidtx_logits(timesformer, video), atol=1e-4)


def test_cli_exports_a_training_run(tmp_path):
  config = tiny_config(str(tmp_path / "data"), steps=1)
  workdir = str(tmp_path / "run")
  trainer.train_and_evaluate(config, workdir)
  out = str(tmp_path / "exported")
  export_cli.export(workdir, out, format="savedmodel")
  converted = checkpoints.convert_source(workdir)
  with open(os.path.join(out, export_tf.PREPROCESSING_FILE)) as f:
    assert json.load(f)["preprocessing"]["num_frames"] == 4
  video = np.random.default_rng(5).normal(size=(2, 4, 16, 16, 3)).astype(np.float32)
  got = tf.saved_model.load(out).signatures["serving_default"](video=tf.constant(video))
  np.testing.assert_allclose(got["logits"].numpy(), vidtx_logits(converted, video), atol=1e-4)


def test_overwrite_replaces_only_an_earlier_export(
  timesformer, converted_dir, tmp_path, monkeypatch
):
  calls = fake_hf(monkeypatch)
  out = str(tmp_path / "hf")
  export_cli.export(converted_dir, out, format="hf")
  assert len(calls) == 1 and ownership.marker_kind(out) == "exported"
  with pytest.raises(FileExistsError, match="--overwrite"):
    export_cli.export(converted_dir, out, format="hf")
  export_cli.export(converted_dir, out, format="hf", overwrite=True)
  assert len(calls) == 2 and sorted(os.listdir(out)) == [".vidtx", "config.json"]
  assert sorted(os.listdir(tmp_path)) == ["hf"]

  empty = tmp_path / "empty"  # An empty folder is new: no --overwrite needed.
  empty.mkdir()
  export_cli.export(converted_dir, str(empty), format="hf")
  assert ownership.marker_kind(str(empty)) == "exported"

  users = tmp_path / "users"
  users.mkdir()
  (users / "notes.txt").write_text("mine")
  for overwrite in (False, True):
    with pytest.raises((FileExistsError, ownership.NotOwnedError), match="not vidtx's output"):
      export_cli.export(converted_dir, str(users), format="hf", overwrite=overwrite)
  assert os.listdir(users) == ["notes.txt"]
  parent = os.path.dirname(converted_dir)
  for target in (converted_dir, parent, os.path.join(converted_dir, "inside")):
    # vidtx.outputs.OverlapError (is or holds the input --src) or NotOwnedError (inside it).
    with pytest.raises(ValueError, match="the input --src|inside the source"):
      export_cli.export(converted_dir, target, format="hf", overwrite=True)
  assert store.is_converted_dir(converted_dir) and len(calls) == 3


def test_a_failed_export_leaves_nothing_behind(converted_dir, tmp_path, monkeypatch, capsys):
  calls = fake_hf(monkeypatch)
  out = str(tmp_path / "hf")
  export_cli.export(converted_dir, out, format="hf")

  def fail(converted, out_dir, batch_size=None):
    with open(os.path.join(out_dir, "saved_model.pb"), "w") as f:
      f.write("half")
    raise OSError("disk full")

  monkeypatch.setattr(export_tf, "write", fail)
  new = str(tmp_path / "new")
  with pytest.raises(SystemExit):
    run_main("--src", converted_dir, "--out", new, "--format=savedmodel")
  assert capsys.readouterr().err.strip() == "vidtx.export: error: disk full"
  with pytest.raises(OSError, match="disk full"):
    export_cli.export(converted_dir, out, format="savedmodel", overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["hf"]  # The earlier export, intact; no temporaries.
  assert sorted(os.listdir(out)) == [".vidtx", "config.json"] and len(calls) == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
  (tmp_path / "folder").mkdir()
  for src in ("missing", "folder"):
    with pytest.raises(SystemExit):
      run_main("--src", str(tmp_path / src), "--out", str(tmp_path / "o"), "--format=savedmodel")
    err = capsys.readouterr().err
    assert err.startswith("vidtx.export: error: --src=") and err.count("\n") == 1, err
  assert os.listdir(tmp_path) == ["folder"]


def test_cli_hf_with_vidtx_hf_exporter(converted_dir, tmp_path):
  """The real vidtx.checkpoints.export_hf (its own tests check the folder against transformers)."""
  pytest.importorskip("vidtx.checkpoints.export_hf")
  out = str(tmp_path / "hf")
  run_main("--src", converted_dir, "--out", out, "--format=hf")
  assert ownership.marker_kind(out) == "exported"
  assert os.path.isfile(os.path.join(out, "config.json"))
  with pytest.raises(ValueError, match="--batch_size"):
    export_cli.export(converted_dir, str(tmp_path / "other"), format="hf", batch_size=2)
  assert sorted(os.listdir(tmp_path)) == ["hf"]


@pytest.mark.slow
def test_command_line(converted_dir, tmp_path):
  out = str(tmp_path / "sm")
  command = [sys.executable, "-m", "vidtx.export", f"--src={converted_dir}", f"--out={out}"]
  done = subprocess.run(
    [*command, "--format=savedmodel"], cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert done.returncode == 0, done.stderr
  assert "wrote" in done.stdout and os.path.isfile(os.path.join(out, "saved_model.pb"))
  done = subprocess.run(
    [*command, "--format=savedmodel"], cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert done.returncode == 1 and "--overwrite" in done.stderr.strip().splitlines()[-1]
