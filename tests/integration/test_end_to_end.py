"""train.py and eval.py end to end on a tiny synthetic dataset in temporary directories."""

import glob
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from shared import REPO, TESTS, restore_params, tiny_config

from vidtx import evaluate, trainer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  config = tiny_config(data_dir, steps=1)
  results = trainer.train_and_evaluate(config, workdir)
  return config, workdir, results


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_one_step_train_writes_metrics_checkpoint_and_evaluates(trained):
  config, workdir, results = trained
  lines = _read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  train_line = lines[0]
  assert train_line["step"] == 1
  for key in ("loss", "learning_rate", "clips_per_sec", "steps_per_sec", "accuracy"):
    assert np.isfinite(train_line[key]), key
  # The final evaluation is logged too, with every validation video counted once.
  eval_line = lines[-1]
  assert eval_line["val_num_videos"] == 10
  assert 0.0 <= eval_line["val_top1"] <= eval_line["val_top5"] <= 1.0
  assert results["num_videos"] == 10 and results["views_per_video"] == 2
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "1"))
  assert glob.glob(os.path.join(workdir, "**", "events.out.tfevents.*"), recursive=True)


def test_eval_reproduces_the_final_evaluation_of_train(trained):
  config, workdir, results = trained
  evaluated = evaluate.evaluate(config, workdir)
  assert evaluated["step"] == 1
  assert evaluated["top1"] == pytest.approx(results["top1"])
  assert evaluated["top5"] == pytest.approx(results["top5"])
  with open(os.path.join(workdir, "eval_validation.json")) as f:
    assert json.load(f)["top1"] == pytest.approx(results["top1"])


def test_eval_aggregations_and_three_crops(trained):
  config, workdir, _ = trained
  config = config.copy_and_resolve_references()
  config.dataset_configs.do_three_spatial_crops = True
  for aggregation in ("mean_logits", "sum_logits", "mean_softmax"):
    config.eval_aggregation = aggregation
    out = evaluate.evaluate(config, workdir)
    assert out["views_per_video"] == 6 and out["num_videos"] == 10


def test_resume_continues_at_the_right_step_with_identical_state(data_dir, tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  trainer.train_and_evaluate(tiny_config(data_dir, steps=4), straight)
  trainer.train_and_evaluate(tiny_config(data_dir, steps=2), resumed)
  first_half = restore_params(resumed, 2)
  trainer.train_and_evaluate(tiny_config(data_dir, steps=4), resumed)

  # The resumed run started from exactly the saved state ...
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(restore_params(straight, 2)),
    jax.device_get(first_half),
  )
  # ... and, reading the data stream from where it stopped, ends where the straight run ends.
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(restore_params(straight, 4)),
    jax.device_get(restore_params(resumed, 4)),
  )
  steps = [
    line["step"] for line in _read_jsonl(os.path.join(resumed, "metrics.jsonl")) if "loss" in line
  ]
  assert steps == [1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.tier2
def test_jittered_windows_resized_on_the_device_resume_exactly(data_dir, tmp_path):
  """Scale jitter that shrinks the short side (0.8 x 20 = the crop of 16): the reader sends 21 x
  21 window buffers and the train step resizes them; a resumed run ends where the straight one
  does."""

  def config(steps):
    c = tiny_config(data_dir, steps=steps)
    c.dataset_configs.augmentation_params = ml_collections.ConfigDict(
      dict(do_jitter_scale=True, scale_min_factor=0.8, scale_max_factor=1.25)
    )
    return c

  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  trainer.train_and_evaluate(config(4), straight)
  trainer.train_and_evaluate(config(2), resumed)
  trainer.train_and_evaluate(config(4), resumed)
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(restore_params(straight, 4)),
    jax.device_get(restore_params(resumed, 4)),
  )


def test_eval_without_checkpoint_is_a_clear_error(data_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    evaluate.evaluate(tiny_config(data_dir), str(tmp_path / "empty"))


@pytest.mark.slow
@pytest.mark.tier2
def test_cli_overrides_and_eval_cli(data_dir, tmp_path):
  """The two scripts as users call them, with --config.x=y overrides."""
  workdir = str(tmp_path / "cli")
  common = [
    f"--config.dataset_configs.base_dir={data_dir}",
    "--config.dataset_configs.examples_per_subset.train=24",
    "--config.dataset_configs.examples_per_subset.validation=10",
    "--config.dataset_configs.tables.train=train.tfrecord@2",
    "--config.dataset_configs.tables.validation=validation.tfrecord@1",
    "--config.dataset_configs.video_length=10",
    "--config.dataset_configs.video_size=20",
    "--config.dataset_configs.num_frames=4",
    "--config.dataset_configs.min_resize=20",
    "--config.dataset_configs.crop_size=16",
    "--config.dataset_configs.num_test_clips=1",
    "--config.model.hidden_size=32",
    "--config.model.num_layers=1",
    "--config.model.num_heads=2",
    "--config.model.mlp_dim=64",
    "--config.batch_size=4",
    "--config.eval_batch_size=4",
  ]
  config_arg = (
    "--config=" + os.path.join(REPO, "configs", "synthetic_timesformer.py") + ":attention=space"
  )
  out = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, "train.py"),
      config_arg,
      f"--workdir={workdir}",
      "--config.num_training_steps=2",
      "--config.log_every_steps=1",
    ]
    + common,
    capture_output=True,
    text=True,
    cwd=str(tmp_path),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "step 2/2" in out.stdout and "ETA" in out.stdout
  # The compilation is said, not minutes of silence: before the first step and when it ends.
  compiling = out.stdout.index("Compiling the train step")
  assert compiling < out.stdout.index("First step done after") < out.stdout.index("step 2/2")
  final = json.loads(out.stdout.strip().splitlines()[-1])
  # The installed console script, with the recipe named rather than a path (as after a pip
  # install), from a directory that is not the repository.
  vidtx_eval = os.path.join(os.path.dirname(sys.executable), "vidtx-eval")
  by_name = "--config=synthetic_timesformer:attention=space"
  out = subprocess.run(
    [vidtx_eval, by_name, f"--workdir={workdir}"] + common,
    capture_output=True,
    text=True,
    cwd=str(tmp_path),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, "eval_validation.json")) as f:
    evaluated = json.load(f)
  assert evaluated["step"] == 2
  assert evaluated["top1"] == pytest.approx(final["top1"])


@pytest.mark.slow
@pytest.mark.tier2
def test_two_devices_train_like_one(data_dir, tmp_path):
  """The batch split over a 2-device 'data' mesh gives the same training as one device, the
  augmentation on the device included (each device augments its own clips; no flip: the
  synthetic 'motion' classes are directions)."""
  script = f"""
import importlib.util, sys, jax, numpy as np
sys.path.insert(0, {REPO!r})
sys.path.insert(0, {TESTS!r})
import shared
from vidtx import trainer
workdir = sys.argv[1]
config = shared.tiny_config({data_dir!r}, steps=2)
config.dataset_configs.augmentation_params = dict(
  do_color_augment=True, do_rand_augment=True, random_erasing_probability=0.5
)
trainer.train_and_evaluate(config, workdir)
print("DEVICES", jax.device_count())
"""
  params = {}
  for devices in (1, 2):
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices))
    workdir = str(tmp_path / f"devices{devices}")
    out = subprocess.run(
      [sys.executable, "-c", script, workdir], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"DEVICES {devices}" in out.stdout
    params[devices] = jax.device_get(restore_params(workdir, 2))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params[1], params[2]
  )


def test_epic_style_training_with_the_paper_regularisers(tmp_path):
  """Class splits (noun, verb), mixup, label smoothing, RandAugment, colour jitter, random
  erasing, a corrupt record skipped and counted, whole-video evaluation, per-video results."""
  from vidtx.data import dmvr

  rng = np.random.default_rng(0)
  videos = [rng.integers(0, 255, (6 + 3 * i, 20, 20, 3), dtype=np.uint8) for i in range(8)]
  examples = [
    dmvr.make_sequence_example(v, [i % 3, 3 + i % 2], video_id=f"clip{i}")
    for i, v in enumerate(videos)
  ]
  corrupt = dmvr.sequence_example_from_jpegs([b"\xff\xd8 not a jpeg"] * 6, [0, 3])
  dmvr.write_shards(examples + [corrupt], str(tmp_path / "data" / "train.tfrecord"), 1)
  dmvr.write_shards(examples[:4], str(tmp_path / "data" / "validation.tfrecord"), 1)

  config = tiny_config(str(tmp_path / "data"), steps=3)
  config.dataset_name = "dmvr"
  ds = config.dataset_configs
  ds.tables = {"train": "train.tfrecord@1", "validation": "validation.tfrecord@1"}
  ds.examples_per_subset = {"train": 9, "validation": 4}
  ds.update(
    num_classes=5,
    class_splits=[3, 2],
    split_names=["noun", "verb"],
    skip_bad_records=True,
    eval_sampling="whole_video",
    shuffle_buffer_size=16,
    random_flip=True,
  )
  ds.augmentation_params = dict(
    do_jitter_scale=True,
    do_color_augment=True,
    do_rand_augment=True,
    rand_augment_magnitude=15.0,
    random_erasing_probability=0.5,
  )
  config.mixup = dict(alpha=0.3)
  config.label_smoothing = 0.2
  config.checkpoint_every_steps = 3
  workdir = str(tmp_path / "run")
  results = trainer.train_and_evaluate(config, workdir)

  assert results["num_videos"] == 4
  for key in ("noun_top1", "verb_top1", "action_top1", "noun_mean_class_accuracy"):
    assert 0.0 <= results[key] <= 1.0, key
  assert (
    results["top1"] == results["action_top1"] <= min(results["noun_top1"], results["verb_top1"])
  )
  lines = _read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert lines[-2]["skipped_records"] >= 1  # the corrupt record, counted
  rows = _read_jsonl(os.path.join(workdir, "eval_validation_videos.jsonl"))
  assert sorted(row["id"] for row in rows) == [f"clip{i}" for i in range(4)]
  assert all(len(row["labels"]) == 2 for row in rows)
  # The checkpoint carries the input position of the stream, global by default on these shards
  # (make_shards wrote their frame tables): 3 steps of 4 clips; the corrupt record's position
  # got the next clean record of the order.
  with open(os.path.join(workdir, "checkpoints", "3", "data", "metadata")) as f:
    data_state = json.load(f)
  assert data_state == {"stream": "global", "global_position": 12, "process_count": 1}
