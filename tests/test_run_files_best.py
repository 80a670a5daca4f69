"""The checkpoint of a train.py run that convert, export, predict and init_from take: the best by
config.best_checkpoint_metric unless --which latest or --step N (vidtx.run_files), each
saying in one line which step it took and that step's evaluation (issue 25).

The run is written directly (no training, nothing compiled): orbax checkpoints of a tiny state at
steps 1-4, each with its own parameters, config.json, and metrics.jsonl whose evaluations make
step 2 the best (top1 0.75) and step 4 the newest (0.5); step 3 was not evaluated.
"""

import json
import os
import shutil

import flax
import jax
import numpy as np
import pytest
from jax.sharding import Mesh
from shared import tiny_config

from vidtx import convert, export, models, predict, run_checkpoints, run_files, sharding
from vidtx import train_state as state_lib
from vidtx.checkpoints import init_from, store
from vidtx.inference import classifier

VALUES = {1: 0.25, 2: 0.75, 4: 0.5}  # Step 3: a checkpoint without an evaluation.
BEST = "checkpoint step 2 (best eval top1 0.7500; newest is step 4, top1 0.5000)"


def _state_of_step(abstract, step):
  """A state whose every array is filled with `step` + a fixed ramp: each checkpoint differs."""
  return jax.tree.map(
    lambda a: (np.arange(np.prod(a.shape)).reshape(a.shape) % 7 * 0.01 + step).astype(a.dtype),
    abstract,
  )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  config = tiny_config(str(tmp_path_factory.mktemp("data")))
  workdir = str(tmp_path_factory.mktemp("ft"))
  mesh = Mesh(np.asarray(jax.local_devices()[:1]), (sharding.DATA_AXIS,))
  abstract = state_lib.abstract_state_from_config(config, config.dataset_configs, mesh)[1]
  with run_checkpoints.checkpoint_manager(workdir, max_to_keep=10) as manager:
    for step in (1, 2, 3, 4):
      run_checkpoints.save(manager, step, _state_of_step(abstract, step), {"position": step})
    manager.wait_until_finished()
  run_files.write_config(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for step in (1, 2, 3, 4):
      f.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\n")
      if step in VALUES:
        f.write(json.dumps({"step": step, "val_top1": VALUES[step], "val_top5": 1.0}) + "\n")
    f.write('{"step": 5, "val_top1": 0.9')  # A line torn by a kill: skipped.
  return workdir


def _step_of(params):
  """The step a checkpoint's parameters were filled with (_state_of_step)."""
  leaf = next(iter(flax.traverse_util.flatten_dict(params).values()))
  return int(np.floor(np.asarray(leaf).flat[0]))


def test_convert_export_and_predict_take_the_best_by_default(run_dir, tmp_path, capsys):
  out = str(tmp_path / "converted")
  converted = convert.convert(src=run_dir, out=out)
  assert converted.source["step"] == 2 and _step_of(store.load(out).params) == 2
  assert converted.source["checkpoint"] == f"{run_dir}: {BEST}"
  assert converted.source["metric"] == {"top1": 0.75}
  assert store.load(out).source["checkpoint"] == f"{run_dir}: {BEST}"  # Recorded with it.
  assert convert.describe(converted, out).splitlines()[0] == f"{run_dir}: {BEST}"

  exported = export.load_source(run_dir)
  assert exported.source["step"] == 2 and _step_of(exported.params) == 2
  assert (
    export.describe(exported, str(tmp_path / "e"), "hf").splitlines()[0] == f"{run_dir}: {BEST}"
  )

  loaded = classifier.load_checkpoint(run_dir)
  assert loaded.source["step"] == 2 and _step_of(loaded.params) == 2
  assert capsys.readouterr().err.strip().splitlines() == [f"{run_dir}: {BEST}"]


def test_which_latest_and_step_take_the_others(run_dir, tmp_path, capsys):
  latest = f"{run_dir}: checkpoint step 4 (the newest, --which=latest, eval top1 0.5000; best is "
  latest += "step 2, top1 0.7500)"
  converted = convert.convert(src=run_dir, out=str(tmp_path / "latest"), which="latest")
  assert converted.source["step"] == 4 and converted.source["checkpoint"] == latest
  assert _step_of(store.load(str(tmp_path / "latest")).params) == 4
  step_3 = f"{run_dir}: checkpoint step 3 (--step=3, not evaluated; best is step 2, top1 0.7500; "
  step_3 += "newest is step 4, top1 0.5000)"
  exported = export.load_source(run_dir, step=3)
  assert _step_of(exported.params) == 3 and exported.source["checkpoint"] == step_3
  loaded = classifier.load_checkpoint(run_dir, step=1)
  assert _step_of(loaded.params) == 1
  assert "checkpoint step 1 (--step=1, eval top1 0.2500; best is step 2" in capsys.readouterr().err

  with pytest.raises(ValueError, match=r"--step=3 and --which=latest: give one of them"):
    export.load_source(run_dir, step=3, which="latest")
  with pytest.raises(ValueError, match=r"--which='newest': expected 'best' or 'latest'"):
    run_files.export_run(run_dir, which="newest")
  with pytest.raises(ValueError, match=r"--which=latest picks a checkpoint of a train.py run"):
    convert.convert(src=str(tmp_path / "model.npz"), out=str(tmp_path / "x"), which="latest")
  with pytest.raises(ValueError, match=r"--step=1 picks a checkpoint of a train.py run; .* is a"):
    classifier.load_checkpoint(str(tmp_path / "latest"), step=1)


def test_a_run_that_ranks_nothing_takes_the_newest(run_dir, tmp_path):
  copy = str(tmp_path / "run")
  shutil.copytree(run_dir, copy)
  config = run_files.read_config(copy)
  config.best_checkpoint_metric = ""
  run_files.write_config(config, copy)
  converted = run_files.export_run(copy)
  assert converted.source["step"] == 4 and _step_of(converted.params) == 4
  assert converted.source["checkpoint"] == (
    f"{copy}: checkpoint step 4 (the newest; the run ranks no checkpoint: "
    "best_checkpoint_metric is '')"
  )


def test_a_best_checkpoint_that_is_gone_is_said(run_dir, tmp_path):
  """Step 2's checkpoint removed (or half-written): the best complete one is taken, and the line
  says that step 2 evaluated higher."""
  copy = tmp_path / "run"
  shutil.copytree(run_dir, copy)
  os.remove(copy / "checkpoints" / "2" / run_files.STEP_METADATA)
  converted = run_files.export_run(str(copy))
  assert converted.source["step"] == 4 and _step_of(converted.params) == 4
  assert converted.source["checkpoint"] == (
    f"{copy}: checkpoint step 4 (best eval top1 0.5000, also the newest; step 2 evaluated "
    "higher, top1 0.7500, but has no complete checkpoint)"
  )


def test_step_metrics_reads_orbax_then_metrics_jsonl(run_dir, tmp_path):
  assert run_files.step_metrics(run_dir, "top1") == VALUES  # The torn line is skipped.
  assert run_files.step_metrics(run_dir, "") == {}
  copy = tmp_path / "run"
  shutil.copytree(run_dir, copy)
  with open(copy / "metrics.jsonl", "a") as f:
    f.write('\n{"step": 3, "val_top1": NaN}\n{"step": 1, "val_top1": 0.3}\n')  # Resumed: last wins.
  # Where orbax stored the metric with the checkpoint (a manager ranking by best_fn), it counts.
  (copy / "checkpoints" / "3" / "metrics").mkdir()
  (copy / "checkpoints" / "3" / "metrics" / "metrics").write_text('{"top1": 0.9}')
  assert run_files.step_metrics(str(copy), "top1", [1, 2, 3, 4]) == {
    1: 0.3,
    2: 0.75,
    3: 0.9,
    4: 0.5,
  }
  assert run_files.pick_step([1, 2, 3, 4], {1: 0.5, 2: 0.5}, None) == 2  # Ties: the newer.
  assert run_files.pick_step([1, 2, 3, 4], {1: 0.5, 2: 0.5}, "latest") == 4
  assert run_files.pick_step([1, 2, 3, 4], {}, None) == 4


def test_init_from_a_run_takes_its_best_or_what_the_config_says(run_dir):
  config = run_files.read_config(run_dir)
  model = models.build(config.model_name, config.model, config.dataset_configs.num_classes)
  params = jax.tree.map(
    lambda a: np.zeros(a.shape, a.dtype),
    jax.eval_shape(
      lambda: model.init(
        {"params": jax.random.key(0), "dropout": jax.random.key(0)},
        np.zeros((1, 4, 16, 16, 3), np.float32),
        train=False,
      )
    )["params"],
  )
  common = dict(model_name=config.model_name, model_config=model.config, num_frames=4, crop_size=16)
  init = dict(config.init_from.to_dict(), checkpoint_path=run_dir)
  loaded, report = init_from.initialise(params, init_config=init, **common)
  assert _step_of(loaded) == 2 and report.notes[0] == f"{run_dir}: {BEST}"
  assert f"note: {run_dir}: {BEST}" in report.summary()
  loaded, report = init_from.initialise(params, init_config=dict(init, which="latest"), **common)
  assert _step_of(loaded) == 4 and "config.init_from.which=latest" in report.notes[0]
  loaded, report = init_from.initialise(params, init_config=dict(init, step=3), **common)
  assert _step_of(loaded) == 3 and "config.init_from.step=3, not evaluated" in report.notes[0]
  with pytest.raises(ValueError, match=r"config.init_from.step=9: .* has no checkpoint of that"):
    init_from.initialise(params, init_config=dict(init, step=9), **common)


def test_predict_reads_a_run_directory(run_dir, tmp_path, capsys):
  """predict --checkpoint RUN: the run's best checkpoint converted in memory gives the logits of
  its parameters; errors name the vidtx.convert command."""
  config = run_files.read_config(run_dir)
  clip = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
  np.save(tmp_path / "clip.npy", clip)
  logits = predict.run(run_dir, input_path=str(tmp_path / "clip.npy"))
  model = models.build(config.model_name, config.model, config.dataset_configs.num_classes)
  params = classifier.load_checkpoint(run_dir).params
  expected = np.asarray(model.apply({"params": params}, clip[None], train=False)[0])
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
  assert f"{run_dir}: {BEST}" in capsys.readouterr().err

  command = f"python -m vidtx.convert --src {run_dir} --out {run_dir}_converted --step 7"
  with pytest.raises(ValueError, match=r"--step=7: .* has no checkpoint of that step") as raised:
    classifier.load_checkpoint(run_dir, step=7)
  assert command in str(raised.value) and "\n" not in str(raised.value)
  folder = tmp_path / "not_a_checkpoint"
  folder.mkdir()
  with pytest.raises(FileNotFoundError, match="neither a converted checkpoint") as raised:
    classifier.load_checkpoint(str(folder))
  assert f"python -m vidtx.convert --src {folder} --out {folder}_converted" in str(raised.value)
