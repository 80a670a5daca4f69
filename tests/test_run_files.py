"""A train.py run exported as a converted checkpoint (vidtx.run_files, vidtx.convert)."""

import json
import os
import shutil
import subprocess
import sys

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from shared import REPO, tiny_config

from vidtx import checkpoints, convert, locks, models, run_checkpoints, run_files, trainer
from vidtx import data as vidtx_data
from vidtx.checkpoints import readers, store
from vidtx.inference import classifier


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Two steps of a tiny TimeSformer, checkpointed after each: steps 1 and 2 exist."""
  config = tiny_config(str(tmp_path_factory.mktemp("data")), steps=2)
  config.checkpoint_every_steps = 1
  workdir = str(tmp_path_factory.mktemp("run"))
  trainer.train_and_evaluate(config, workdir)
  return config, workdir


def _restore_params(workdir, step):
  """The params of checkpoint `step` as orbax saved them, read without vidtx's code."""
  with ocp.StandardCheckpointer() as checkpointer:
    state = checkpointer.restore(os.path.join(workdir, "checkpoints", str(step), "state"))
  return jax.device_get(state["params"])


def _flat(params):
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")


def _assert_params_equal(got, expected):
  got, expected = _flat(got), _flat(jax.device_get(expected))
  assert sorted(got) == sorted(expected)
  for name, value in expected.items():
    np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(value), err_msg=name)


def test_train_writes_the_full_config_as_json(trained):
  config, workdir = trained
  assert run_files.is_run_dir(workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    restored = ml_collections.ConfigDict(json.load(f))
  # Every field round-trips (JSON has no tuples: skip_patterns=() comes back as []).
  assert restored.to_dict() == json.loads(json.dumps(config.to_dict()))
  assert restored.num_training_steps == 2 and restored.checkpoint_every_steps == 1
  assert restored.dataset_configs.crop_size == 16 and restored.model.hidden_size == 32
  assert (
    models.build(restored.model_name, restored.model, 4).config
    == models.build(config.model_name, config.model, 4).config
  )


def test_a_resumed_run_rewrites_its_config(trained, tmp_path):
  """A resumed run may override fields: config.json says what the run is now."""
  config, workdir = trained
  resumed = str(tmp_path / "run")
  shutil.copytree(workdir, resumed)
  changed = config.copy_and_resolve_references()
  changed.eval_aggregation = "sum_logits"
  trainer.train_and_evaluate(changed, resumed)  # Finished: restores, then the final evaluation.
  assert run_files.read_config(resumed).eval_aggregation == "sum_logits"
  assert not [name for name in os.listdir(resumed) if "tmp" in name]
  assert checkpoints.convert_source(resumed).preprocessing["aggregation"] == "sum_logits"


def test_convert_exports_the_newest_checkpoint_without_the_data(trained, tmp_path, monkeypatch):
  config, workdir = trained

  def no_data(*args, **kwargs):
    raise AssertionError("the export read or generated the dataset")

  monkeypatch.setattr(vidtx_data, "prepare_dataset", no_data)
  monkeypatch.setattr(vidtx_data.synthetic, "ensure_dataset", no_data)
  out = str(tmp_path / "ckpt")
  written = convert.convert(src=workdir, out=out)
  loaded = store.load(out)

  _assert_params_equal(loaded.params, _restore_params(workdir, 2))
  assert loaded.model_name == "timesformer" and loaded.num_classes == 4
  assert loaded.model_config == config.model.to_dict()
  assert loaded.preprocessing == dict(
    num_frames=4,
    stride=2,
    min_resize=20,
    crop_size=16,
    mean=[0.5, 0.5, 0.5],
    std=[0.5, 0.5, 0.5],  # zero_centering: the ViT's [-1, 1].
    num_test_clips=2,
    do_three_spatial_crops=False,
    aggregation="mean_logits",
  )
  assert loaded.labels == ["left", "right", "up", "down"]
  assert loaded.source["format"] == "run" and loaded.source["step"] == 2
  assert loaded.source["path"] == os.path.abspath(workdir)
  assert written.preprocessing == loaded.preprocessing


def test_exported_logits_match_the_trained_model(trained, tmp_path):
  config, workdir = trained
  out = str(tmp_path / "ckpt")
  convert.convert(src=workdir, out=out)
  loaded = store.load(out)
  clip = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
  model = models.build(config.model_name, config.model, config.dataset_configs.num_classes)
  params = jax.device_get(_restore_params(workdir, 2))
  expected = np.asarray(model.apply({"params": params}, clip[None], train=False)[0])
  got = classifier.predict_array(loaded, clip)
  assert got.shape == (1, 4)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  # Two steps from a random start: the logits are not all alike (a real comparison).
  assert np.ptp(expected) > 1e-4


def test_step_exports_an_older_checkpoint(trained, tmp_path):
  _, workdir = trained
  older = checkpoints.convert_source(workdir, step=1)
  _assert_params_equal(older.params, _restore_params(workdir, 1))
  assert older.source["step"] == 1
  newest = _flat(_restore_params(workdir, 2))
  assert any(
    not np.array_equal(older_value, np.asarray(newest[name]))
    for name, older_value in _flat(older.params).items()
  )


@pytest.mark.slow
def test_cli_exports_a_run_with_format_and_step(trained, tmp_path):
  _, workdir = trained
  out = str(tmp_path / "ckpt")
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "vidtx.convert",
      f"--src={workdir}",
      f"--out={out}",
      "--format=run",
      "--step=1",
    ],
    capture_output=True,
    text=True,
    cwd=REPO,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"wrote {out}" in result.stdout and "step 1" in result.stdout
  assert store.load(out).source["step"] == 1
  _assert_params_equal(store.load(out).params, _restore_params(workdir, 1))


def test_errors_name_the_problem(trained, tmp_path):
  _, workdir = trained
  out = str(tmp_path / "out")
  with pytest.raises(
    ValueError,
    match=r"--step=7: .*checkpoints has no checkpoint of that "
    r"step; it has step\(s\) \[1, 2\]",
  ):
    convert.convert(src=workdir, out=out, step=7)
  with pytest.raises(ValueError, match="--num_classes=10: .* is a train.py run"):
    convert.convert(src=workdir, out=out, num_classes=10)
  with pytest.raises(ValueError, match="--step=1 picks a checkpoint of a train.py run"):
    convert.convert(src=str(tmp_path / "model.npz"), out=out, step=1)
  with pytest.raises(ValueError, match="expected 'auto' or one of \\['run', 'hf'"):
    checkpoints.convert_source(workdir, format="onnx")
  assert not os.path.exists(out)

  # A run from before train.py wrote config.json: detected all the same, and told what to do.
  old_run = tmp_path / "old_run"
  shutil.copytree(os.path.join(workdir, "checkpoints"), old_run / "checkpoints")
  with pytest.raises(FileNotFoundError, match="no config.json. train.py writes it"):
    convert.convert(src=str(old_run), out=out)
  # A run without checkpoints.
  empty = tmp_path / "empty"
  (empty / "checkpoints").mkdir(parents=True)
  shutil.copy(os.path.join(workdir, "config.json"), empty / "config.json")
  with pytest.raises(FileNotFoundError, match="No checkpoint in .*train first"):
    convert.convert(src=str(empty), out=out)
  assert not os.path.exists(out)


def test_a_run_being_written_exports_its_newest_complete_checkpoint(trained, tmp_path):
  """train.py may be saving a checkpoint (orbax writes '<step>.orbax-checkpoint-tmp-<t>' and
  renames it when complete; elsewhere '<step>/' in place, its metadata last) or removing an old
  one file by file while the run is exported."""
  _, workdir = trained
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  steps = copy / "checkpoints"
  os.remove(steps / "2" / run_files.STEP_METADATA)  # Step 2: half-written, or half-removed.
  (steps / "3.orbax-checkpoint-tmp-17").mkdir()  # Step 3: being saved.
  converted = checkpoints.convert_source(str(copy))
  assert converted.source["step"] == 1
  _assert_params_equal(converted.params, _restore_params(workdir, 1))
  assert "step(s) [2, 3] of " in converted.source["notes"][-1]
  assert "step 1 is the newest complete checkpoint" in converted.source["notes"][-1]
  with pytest.raises(ValueError, match=r"--step=2: checkpoint 2 in .* is not complete") as raised:
    checkpoints.convert_source(str(copy), step=2)
  assert "complete step(s): [1]." in str(raised.value) and "\n" not in str(raised.value)
  os.remove(steps / "1" / "state" / run_files.ITEM_METADATA)
  no_complete = r"has no complete checkpoint yet \(step\(s\) \[1, 2, 3\] being written"
  with pytest.raises(FileNotFoundError, match=no_complete):
    convert.convert(src=str(copy), out=str(tmp_path / "out"))
  # With train.py's lock held (here by this process), the message names the writer; also for a
  # run just started, before its config.json (not 'a run from before train.py wrote it').
  started = tmp_path / "started"
  (started / "checkpoints").mkdir(parents=True)
  for workdir_now in (copy, started):
    with locks.hold(str(workdir_now), "train.py"):
      writing = rf"has no complete checkpoint yet: train.py \(pid {os.getpid()} .* is writing it"
      with pytest.raises(FileNotFoundError, match=writing):
        checkpoints.convert_source(str(workdir_now))
  assert not os.path.exists(tmp_path / "out")


def test_a_checkpoint_rotated_away_while_read_gives_way_to_the_newest(
  trained, tmp_path, monkeypatch
):
  """train.py saves step 3 and removes step 2 (keeping the newest few) while the export reads
  step 2: the export takes step 3 instead of failing (it failed with a raw AttributeError)."""
  _, workdir = trained
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  steps = copy / "checkpoints"
  restore_step, reads = run_checkpoints.restore_step, []

  def while_training(manager, abstract_state, step):
    reads.append(step)
    if step == 2 and not (steps / "3").exists():
      shutil.copytree(steps / "2", steps / "3")  # Saved ...
      shutil.rmtree(steps / "2" / "state")  # ... and rotation is removing step 2.
      os.remove(steps / "2" / run_files.STEP_METADATA)
    if step == 1:
      shutil.rmtree(steps / "1")
    return restore_step(manager, abstract_state, step)

  monkeypatch.setattr(run_checkpoints, "restore_step", while_training)
  converted = checkpoints.convert_source(str(copy))
  assert converted.source["step"] == 3 and reads == [2, 3]
  _assert_params_equal(converted.params, _restore_params(workdir, 2))  # Step 3 is 2's copy.
  with pytest.raises(ValueError, match=r"--step=1: checkpoint 1 in .* was removed while it was"):
    checkpoints.convert_source(str(copy), step=1)


def test_run_detection_comes_before_the_peer_formats(trained, tmp_path):
  _, workdir = trained
  # A run's config.json alone would read as a Hugging Face folder.
  assert readers.detect_format(workdir) == "hf"
  assert checkpoints.FORMATS[0] == "run" and "run" not in readers.FORMATS
  hf_like = tmp_path / "hf"
  hf_like.mkdir()
  (hf_like / "config.json").write_text("{}")
  assert not run_files.is_run_dir(str(hf_like)) and not run_files.is_run_dir(
    str(tmp_path / "nowhere")
  )
