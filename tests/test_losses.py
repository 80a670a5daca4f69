"""Unit tests of the pieces train.py and eval.py are made of: aggregation, top-k, losses,
schedules, step counting, config files."""

import glob
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from ml_collections import config_flags  # noqa: F401  (registers the config file loader)
from shared import REPO

from vidtx import evaluation, losses, optim

jax.config.update("jax_numpy_rank_promotion", "raise")


def test_aggregations_match_their_definitions_over_the_unmasked_views():
  logits = np.random.RandomState(0).randn(3, 4, 5).astype(np.float32)  # (B, V, K)
  mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32)  # (B, V)
  softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  for b, views in enumerate((4, 2, 1)):

    def agg(name):
      return evaluation.aggregate(logits, mask, name)[b]  # noqa: B023 (used at once)

    np.testing.assert_allclose(agg("mean_logits"), logits[b, :views].mean(0), rtol=1e-6)
    np.testing.assert_allclose(agg("sum_logits"), logits[b, :views].sum(0), rtol=1e-6)
    np.testing.assert_allclose(agg("mean_softmax"), softmax[b, :views].mean(0), rtol=1e-5)
  # Class splits take a softmax per split; multi-label models a sigmoid.
  split = evaluation.aggregate(logits, mask, "mean_softmax", class_splits=(3, 2))
  np.testing.assert_allclose(split[:, :3].sum(-1), 1, rtol=1e-6)
  np.testing.assert_allclose(split[:, 3:].sum(-1), 1, rtol=1e-6)
  sigmoid = evaluation.aggregate(logits, mask, "mean_softmax", multi_label=True)
  np.testing.assert_allclose(sigmoid[0], (1 / (1 + np.exp(-logits[0]))).mean(0), rtol=1e-5)


def test_mean_of_softmax_can_disagree_with_mean_of_logits():
  # View 1 is confidently class 0, views 2-3 mildly prefer class 1.
  mask = np.ones((1, 3), np.float32)
  logits = np.array([[[10.0, 0.0], [0.0, 6.0], [0.0, 6.0]]])
  assert np.argmax(evaluation.aggregate(logits, mask, "mean_logits")[0]) == 1
  assert np.argmax(evaluation.aggregate(logits, mask, "mean_softmax")[0]) == 1
  logits = np.array([[[20.0, 0.0], [0.0, 6.0], [0.0, 6.0]]])
  assert np.argmax(evaluation.aggregate(logits, mask, "mean_logits")[0]) == 0
  assert np.argmax(evaluation.aggregate(logits, mask, "mean_softmax")[0]) == 1


def test_label_smoothing_targets_and_cross_entropy():
  targets = losses.smoothed_one_hot(jnp.array([2]), 4, 0.2)
  np.testing.assert_allclose(targets, [[0.05, 0.05, 0.85, 0.05]], rtol=1e-6)
  logits = jnp.array([[1.0, 2.0, 3.0, 4.0]])
  log_probs = logits - jnp.log(jnp.sum(jnp.exp(logits)))
  np.testing.assert_allclose(
    losses.softmax_cross_entropy(logits, targets), -jnp.sum(targets * log_probs, -1), rtol=1e-6
  )


def test_cosine_schedule_with_linear_warmup():
  lr = ml_collections.ConfigDict(
    dict(schedule="cosine", base_learning_rate=0.4, warmup_steps=10, end_learning_rate=0.0)
  )
  schedule = optim.make_schedule(lr, 110)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5)), 0.2, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), 0.4, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(60)), 0.2, rtol=1e-5)  # half way down the cosine
  assert float(schedule(110)) < 1e-6


def test_steps_win_over_epochs():
  config = ml_collections.ConfigDict(dict(num_training_steps=None, num_training_epochs=2.5))
  assert optim.resolve_steps(config, "num_training", examples=100, batch_size=8) == 32
  config.num_training_steps = 7
  assert optim.resolve_steps(config, "num_training", examples=100, batch_size=8) == 7


def test_unknown_optimizer_is_a_clear_error():
  config = ml_collections.ConfigDict(
    dict(optimizer="sgdd", optimizer_configs={}, max_grad_norm=None)
  )
  with pytest.raises(ValueError, match="config.optimizer"):
    optim.make_optimizer(
      config,
      optim.make_schedule(
        ml_collections.ConfigDict(dict(schedule="cosine", base_learning_rate=0.1, warmup_steps=1)),
        10,
      ),
    )


def _load_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  import importlib.util

  spec = importlib.util.spec_from_file_location("config_under_test", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))))
def test_every_config_builds_its_model(path):
  if os.path.basename(path) in ("__init__.py", "common.py"):
    return
  from vidtx import models

  config = _load_config(path)
  model = models.build(config.model_name, config.model, config.dataset_configs.num_classes)
  video = jax.ShapeDtypeStruct(
    (
      1,
      config.dataset_configs.num_frames,
      config.dataset_configs.crop_size,
      config.dataset_configs.crop_size,
      3,
    ),
    jnp.float32,
  )
  shapes = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)) > 0


def test_timesformer_config_argument():
  path = os.path.join(REPO, "configs", "synthetic_timesformer.py")
  assert _load_config(path).model.attention == "divided"
  assert _load_config(path, "attention=space").model.attention == "space"
  with pytest.raises(ValueError, match="expected key=value"):
    _load_config(path, "atention=space")
