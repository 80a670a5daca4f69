"""Every model and attention scheme trains through train.py on the synthetic data: one step on
8 fake CPU devices (batch sharded over the mesh), and the same gradients with and without jit."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from shared import REPO, TESTS, ZOO, tiny_model_config, tiny_train_config

from vidtx import losses, models, trainer

# The second tier (README's test command leaves it out; .ci/run runs it after).
pytestmark = pytest.mark.tier2


def test_zoo_lists_every_family():
  assert {name for name, _ in ZOO} == set(models.MODELS)


@pytest.mark.slow
def test_every_model_trains_one_step_on_8_devices(tmp_path):
  script = f"""
import importlib.util, json, os, sys, jax
sys.path.insert(0, {REPO!r})
sys.path.insert(0, {TESTS!r})
import shared
from vidtx import trainer
assert jax.device_count() == 8, jax.devices()
for name, attention in shared.ZOO:
  workdir = os.path.join({str(tmp_path)!r}, name + "_" + attention)
  config = shared.tiny_train_config({str(tmp_path / "data")!r}, name, attention)
  results = trainer.train_and_evaluate(config, workdir)
  print("RESULT", json.dumps([name, attention, results["num_videos"]]))
"""
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="8")
  out = subprocess.run(
    [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO
  )
  assert out.returncode == 0, out.stderr[-4000:]
  done = [
    json.loads(line[len("RESULT ") :])
    for line in out.stdout.splitlines()
    if line.startswith("RESULT ")
  ]
  assert [(n, a) for n, a, _ in done] == ZOO
  assert all(count == 8 for _, _, count in done)
  for name, attention in ZOO:
    with open(tmp_path / f"{name}_{attention}" / "metrics.jsonl") as f:
      first = json.loads(f.readline())
    assert first["step"] == 1 and np.isfinite(first["loss"]), (name, attention)


@pytest.mark.parametrize("name,attention", ZOO)
def test_gradients_equal_with_and_without_jit(name, attention):
  # One layer, one clip: without jit every op is dispatched on its own, which is slow.
  model = models.build(name, dict(tiny_model_config(name, attention), num_layers=1), 3)
  video = jax.random.normal(jax.random.key(0), (1, 4, 16, 16, 3))
  labels = jnp.array([2])
  params = jax.jit(lambda v: model.init(jax.random.key(1), v, train=False))(video)["params"]

  def loss_fn(params):
    logits, _ = model.apply({"params": params}, video, train=False)
    return jnp.mean(losses.softmax_cross_entropy(logits, losses.smoothed_one_hot(labels, 3, 0.1)))

  grad_fn = jax.value_and_grad(loss_fn)
  loss_jit, grads_jit = jax.jit(grad_fn)(params)
  with jax.disable_jit():
    loss_eager, grads_eager = grad_fn(params)
  np.testing.assert_allclose(loss_jit, loss_eager, rtol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads_jit, grads_eager
  )


def test_train_py_without_jit_matches_jit(tmp_path):
  """train.py's own path (sharded init, step, checkpoint, evaluator) also runs op by op, and
  lands on the parameters of the compiled run."""
  data_dir = str(tmp_path / "data")
  results = {}
  for mode in ("jit", "eager"):
    config = tiny_train_config(data_dir, "timesformer", "divided")
    config.model.num_layers = 1
    workdir = str(tmp_path / mode)
    if mode == "eager":
      with jax.disable_jit():
        results[mode] = trainer.train_and_evaluate(config, workdir)
    else:
      results[mode] = trainer.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      results[mode]["loss"] = json.loads(f.readline())["loss"]
  np.testing.assert_allclose(results["eager"]["loss"], results["jit"]["loss"], rtol=1e-5)
  assert results["eager"]["num_videos"] == results["jit"]["num_videos"] == 8
  assert results["eager"]["top1"] == pytest.approx(results["jit"]["top1"])
