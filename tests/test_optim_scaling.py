"""Batch and learning rate at any device count (vidtx.optim.resolve_batch): the papers' recipes
keep their batch and learning rate as data, another global batch rescales the learning rate by
the family's rule, warm-ups and decays given in epochs follow, per_device_batch_size, the
divisibility error's proposed flags; and the 256-device rehearsal of a pod through train.py."""

import json
import math
import os
import subprocess
import sys

import ml_collections
import pytest
from shared import REPO, TESTS

from vidtx import config_checks, optim, sharding
from vidtx import train_state as state_lib
from vidtx.configs import common, k400_timesformer, k400_vivit_fe, k400_xvit, synthetic_timesformer

# (recipe, the paper's batch, the paper's lr, warm-up epochs): ViViT (arXiv:2103.15691) Table 7,
# TimeSformer (arXiv:2102.05095) supplementary §1, the X-ViT (arXiv:2106.05968) release.
FAMILIES = [
  (k400_vivit_fe, 64, 0.1, 2.5),
  (k400_timesformer, 16, 0.005, None),
  (k400_xvit, 64, 0.03, 5),
]


def test_scaling_rules():
  assert optim.scaled_learning_rate(0.1, 64, 256) == pytest.approx(0.4)
  assert optim.scaled_learning_rate(0.1, 64, 16, "linear") == pytest.approx(0.025)
  assert optim.scaled_learning_rate(0.1, 64, 256, "sqrt") == pytest.approx(0.2)
  assert optim.scaled_learning_rate(0.1, 64, 256, "none") == 0.1
  with pytest.raises(ValueError, match=r"batch_scaling.rule='cube'.*'linear'"):
    optim.scaled_learning_rate(0.1, 64, 256, "cube")


@pytest.mark.parametrize("recipe, paper_batch, paper_lr, warmup_epochs", FAMILIES)
def test_another_batch_rescales_each_family(recipe, paper_batch, paper_lr, warmup_epochs):
  config = recipe.get_config()
  scaling = config.batch_scaling
  assert (scaling.paper_batch_size, scaling.paper_learning_rate, scaling.rule) == (
    paper_batch,
    paper_lr,
    "linear",
  )
  assert config.lr_configs.get("warmup_epochs") == warmup_epochs
  assert optim.resolve_batch(config, num_devices=paper_batch, process_count=1) == []  # As built.
  config.batch_size = 256  # As --config.batch_size=256 sets it.
  lines = optim.resolve_batch(config, num_devices=256, process_count=32)
  assert config.lr_configs.base_learning_rate == pytest.approx(paper_lr * 256 / paper_batch)
  assert config.eval_batch_size == 256  # It follows the batch.
  assert len(lines) == 1
  assert f"batch_size=256, the paper's {paper_batch} at lr {paper_lr:g} (" in lines[0]
  assert f"= {paper_lr:g} x 256/{paper_batch} = {paper_lr * 256 / paper_batch:g}" in lines[0]
  assert "--config.lr_configs.base_learning_rate=X" in lines[0]
  assert "--config.batch_scaling.rule=none" in lines[0]

  # The schedule train.py builds: the warm-up and the decays in the new steps per epoch.
  examples = config.dataset_configs.examples_per_subset["train"]
  _, schedule = state_lib.optimizer_from_config(config, config.dataset_configs)
  peak = config.lr_configs.base_learning_rate
  if warmup_epochs:
    warmup = math.ceil(warmup_epochs * examples / 256)
    assert f"warm-up {warmup_epochs:g} epochs = {warmup} steps" in lines[0]
    assert float(schedule(warmup - 1)) < peak and float(schedule(warmup)) == pytest.approx(peak)
  else:  # TimeSformer: /10 at epochs 11 and 14.
    first = round(11 * examples / 256)
    assert float(schedule(first - 1)) == pytest.approx(peak)
    assert float(schedule(first)) == pytest.approx(peak / 10)
  # Resolved once: a second resolution (eval.py, a resumed run) changes nothing.
  assert optim.resolve_batch(config, num_devices=256, process_count=32) == []
  assert config.lr_configs.base_learning_rate == pytest.approx(paper_lr * 256 / paper_batch)


def test_a_given_learning_rate_wins():
  config = k400_vivit_fe.get_config()
  config.batch_size, config.lr_configs.base_learning_rate = 256, 0.3  # Both given.
  lines = optim.resolve_batch(config, num_devices=8, process_count=1)
  assert config.lr_configs.base_learning_rate == 0.3
  assert "lr_configs.base_learning_rate=0.3 as given" in lines[0]
  # The paper's own value given at another batch: --config.batch_scaling.rule=none keeps it.
  config = k400_vivit_fe.get_config()
  config.batch_size, config.batch_scaling.rule = 256, "none"
  lines = optim.resolve_batch(config, num_devices=8, process_count=1)
  assert config.lr_configs.base_learning_rate == 0.1
  assert "lr_configs.base_learning_rate=0.1 no rescaling (batch_scaling.rule='none')" in lines[0]


def test_the_shrunk_recipe_scales_from_the_paper():
  # shrink=1 trains 4 clips at the paper's lr x 4/64; --config.batch_size=8 on top doubles it.
  config = k400_vivit_fe.get_config("shrink=1")
  assert config.lr_configs.base_learning_rate == pytest.approx(0.1 * 4 / 64)
  assert config_checks.check_config(config) == []
  config.batch_size = 8
  lines = config_checks.check_config(config)  # Train.py's start-up checks, on this one CPU device.
  assert config.lr_configs.base_learning_rate == pytest.approx(0.1 * 8 / 64)
  assert (config.batch_size, config.eval_batch_size) == (8, 8)
  assert lines[0].startswith("batch_size=8, the paper's 64 at lr 0.1 (ViViT (arXiv:2103.15691)")


def test_per_device_batch_size():
  config = k400_xvit.get_config()
  config.per_device_batch_size = 2
  config.mesh.fsdp = 4  # The batch splits over data x fsdp = 32 devices, not over 'model'.
  config.mesh.model = 2
  lines = optim.resolve_batch(config, num_devices=64, process_count=8)
  assert (config.batch_size, config.eval_batch_size) == (64, 64)  # X-ViT's own batch: no line.
  assert lines == [] and config.lr_configs.base_learning_rate == 0.03
  config = k400_xvit.get_config()
  config.per_device_batch_size = 4
  lines = optim.resolve_batch(config, num_devices=64, process_count=8)
  assert config.batch_size == 256 and config.lr_configs.base_learning_rate == pytest.approx(0.12)
  assert "batch_size=256 (per_device_batch_size=4 x 64 data-parallel devices)" in lines[0]
  # Both given: they must agree.
  config = k400_xvit.get_config()
  config.per_device_batch_size, config.batch_size = 4, 256
  optim.resolve_batch(config, num_devices=64, process_count=8)
  assert config.batch_size == 256
  config = k400_xvit.get_config()
  config.per_device_batch_size, config.batch_size = 4, 128
  with pytest.raises(ValueError) as error:
    optim.resolve_batch(config, num_devices=64, process_count=8)
  assert str(error.value) == (
    "config.per_device_batch_size=4 x 64 data-parallel devices = 256 clips, but "
    "config.batch_size=128: give one of the two."
  )
  config.per_device_batch_size = 0
  with pytest.raises(ValueError, match=r"per_device_batch_size=0: expected a positive integer"):
    optim.resolve_batch(config, num_devices=64, process_count=8)


def test_the_divisibility_error_proposes_the_next_batch():
  # The review's case: k400_vivit_fe on 256 devices.
  config = k400_vivit_fe.get_config()
  with pytest.raises(ValueError) as error:
    optim.resolve_batch(config, num_devices=256, process_count=64)
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith("config.batch_size=64 must be divisible by the number of data-")
  assert message.endswith(
    "Next valid: --config.batch_size=256 (or --config.per_device_batch_size=1), with which "
    "lr_configs.base_learning_rate is 0.4."
  )
  # A batch given that does not split: the next multiple of devices and processes.
  config.batch_size = 300
  with pytest.raises(ValueError, match=r"batch_size=512 \(or .*=2\), with which .* is 0.8\.$"):
    optim.resolve_batch(config, num_devices=256, process_count=64)
  # sharding.check_batch_size (the evaluator, the benchmark) proposes the same flags.
  assert sharding.next_valid_batch_size(6, 4, 3) == 12
  assert sharding.divisibility_error(30, 8, 2, "eval_batch_size").endswith(
    "Next valid: --config.eval_batch_size=32."
  )


def test_eval_batch_size_follows_or_rounds_up():
  config = k400_timesformer.get_config()
  config.eval_batch_size = 100  # Given: kept, rounded up to a multiple of the devices.
  lines = optim.resolve_batch(config, num_devices=16, process_count=2)
  assert config.eval_batch_size == 112 and config.batch_size == 16
  assert lines == [
    "note: eval_batch_size=100 rounded up to 112, the next multiple of the 16 data-parallel "
    "devices and 2 process(es) (evaluation pads its last batch)."
  ]
  # A config without batch_scaling (the synthetic recipes, older runs): nothing is rescaled.
  config = synthetic_timesformer.get_config()
  config.per_device_batch_size = 8
  lines = optim.resolve_batch(config, num_devices=8, process_count=1)
  assert (config.batch_size, config.eval_batch_size) == (64, 64)
  assert config.lr_configs.base_learning_rate == 0.05
  assert "as set (no config.batch_scaling to rescale it by)" in lines[0]


def test_warmup_in_epochs():
  lr = ml_collections.ConfigDict(
    dict(schedule="cosine", base_learning_rate=1.0, warmup_steps=None, warmup_epochs=2.5)
  )
  schedule = optim.make_schedule(lr, 100, steps_per_epoch=4)  # 10 warm-up steps.
  assert float(schedule(5)) == pytest.approx(0.5) and float(schedule(10)) == pytest.approx(1.0)
  assert optim.warmup_steps(lr, 3750.0) == 9375  # As resolve_steps: ceil(2.5 x 3750).
  with pytest.raises(ValueError, match=r"warmup_epochs=2.5 needs the number of steps per epoch"):
    optim.make_schedule(lr, 100)
  lr.warmup_steps = 3  # Steps win.
  assert optim.warmup_steps(lr, 4) == 3


def test_set_batch_size_is_the_builders_one_rule():
  config = k400_xvit.get_config()
  common.set_batch_size(config, 8)
  assert (config.batch_size, config.eval_batch_size, config.batch_scaling.lr_batch_size) == (8,) * 3
  assert config.lr_configs.base_learning_rate == pytest.approx(0.03 * 8 / 64)


@pytest.mark.slow
@pytest.mark.tier2
def test_a_recipe_fills_256_devices(tmp_path):
  """The review's pod: configs/k400_vivit_fe.py:shrink=1 on 256 devices with
  --config.batch_size=256 resolves, says so in one line, and one step compiles and runs."""
  workdir = tmp_path / "pod"
  command = [
    sys.executable,
    "train.py",
    "--config=configs/k400_vivit_fe.py:shrink=1",
    f"--workdir={workdir}",
    "--config.batch_size=256",
    "--config.num_training_steps=1",
  ]
  # The final evaluation on one view per video: a single padded batch.
  one_view = [
    "--config.dataset_configs.num_test_clips=1",
    "--config.dataset_configs.do_three_spatial_crops=False",
  ]
  command += one_view
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="256", PYTHONPATH=os.pathsep.join([REPO, TESTS]))
  out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  paper_lr, paper_batch = 0.1, 64  # ViViT (arXiv:2103.15691) Table 7.
  lr = paper_lr * 256 / paper_batch
  lines = [line for line in out.stdout.splitlines() if line.startswith("batch_size=")]
  assert lines == [
    "batch_size=256, the paper's 64 at lr 0.1 (ViViT (arXiv:2103.15691) Table 7): "
    "lr_configs.base_learning_rate = 0.1 x 256/64 = 0.4 (linear scaling); warm-up 2.5 epochs = "
    "1 step. --config.lr_configs.base_learning_rate=X (or --config.batch_scaling.rule=none) pins "
    "it."
  ]
  assert "on 256 device(s) of 1 process(es), mesh {'data': 256, 'fsdp': 1, 'model': 1}" in (
    out.stdout
  )
  with open(workdir / "config.json") as f:
    config = json.load(f)
  assert (config["batch_size"], config["eval_batch_size"]) == (256, 256)
  assert config["lr_configs"]["base_learning_rate"] == pytest.approx(lr)
  with open(workdir / "metrics.jsonl") as f:
    step = json.loads(f.readline())
  # One warm-up step: the first step runs at the full rescaled rate.
  assert step["step"] == 1 and step["learning_rate"] == pytest.approx(lr, rel=1e-6)
  assert math.isfinite(step["loss"])

  # eval.py resolves the same way, here from the per-device form: 1 clip x 256 devices.
  command = [sys.executable, "eval.py"] + command[2:4] + ["--config.per_device_batch_size=1"]
  command += one_view
  out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "batch_size=256 (per_device_batch_size=1 x 256 data-parallel devices)" in out.stdout
  with open(workdir / "eval_validation.json") as f:
    assert json.load(f)["num_videos"] == 4
