"""model.scan_layers and model.remat_policy: the same maths in every layout, parameters that move
between the per-layer and the scanned layout (stacking itself: tests/checkpoints/test_scan.py),
init_from into a scanned
model, and config errors. Tiny models: 4 frames of 16 x 16 with 8 x 8 patches."""

import contextlib
import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from shared import assert_trees_equal as _assert_trees_equal

from vidtx import models, rollout
from vidtx.checkpoints import init_from, scan, store
from vidtx.models import encoder, hparams, layers

jax.config.update("jax_numpy_rank_promotion", "raise")

SHAPE = (2, 4, 16, 16, 3)
TINY = dict(variant="Ti/8", hidden_size=32, num_heads=2, mlp_dim=64, num_layers=2)
VIVIT_TINY = dict(TINY, variant="Ti/8x2", temporal_layers=3)  # Model 2: L_s = 2, L_t = 3.

# Every block code path: model name, config overrides.
MODELS = {
  "vivit_spatio_temporal": ("vivit", dict(VIVIT_TINY, attention="spatio_temporal")),
  "vivit_factorised_encoder": ("vivit", dict(VIVIT_TINY, attention="factorised_encoder")),
  "vivit_factorised_self_attention": (
    "vivit",
    dict(VIVIT_TINY, attention="factorised_self_attention", classifier="gap"),
  ),
  "vivit_factorised_dot_product": (
    "vivit",
    dict(VIVIT_TINY, attention="factorised_dot_product", classifier="gap"),
  ),
  "timesformer_divided": ("timesformer", dict(TINY, attention="divided")),
  "timesformer_divided_gap": ("timesformer", dict(TINY, attention="divided", classifier="gap")),
  "timesformer_joint": ("timesformer", dict(TINY, attention="joint")),
  "timesformer_space": ("timesformer", dict(TINY, attention="space")),
  "xvit": ("xvit", dict(TINY, temporal_layers=2)),
}


# The tests compare numbers, not speed: XLA's cheapest CPU compile halves their run time.
FAST_COMPILE = dict(xla_backend_optimization_level=0, xla_llvm_disable_expensive_passes=True)


def _clips(seed: int = 0) -> np.ndarray:
  return np.random.RandomState(seed).randn(*SHAPE).astype(np.float32)


def _build(key: str, **overrides) -> nn.Module:
  model_name, config = MODELS[key]
  return models.build(model_name, dict(config, **overrides), 3)


def _random_params(model: nn.Module, seed: int = 1):
  """Random parameters of the unscanned layout (zero initialisers would hide mistakes)."""
  return reference.random_like(reference.init_shapes(model, SHAPE), seed=seed, scale=0.3)


@functools.cache
def _loss_and_grads_fn(model: nn.Module, train: bool):
  """Jitted (params, clips, rng) -> (loss, grads), one compile per model and mode."""

  def loss_fn(params, clips, rng):
    logits, _ = model.apply({"params": params}, clips, train=train, rngs={"dropout": rng})
    return jnp.mean(jax.nn.log_softmax(logits)[:, 0])

  return jax.jit(jax.value_and_grad(loss_fn), compiler_options=FAST_COMPILE)


@functools.cache
def _forward_fn(model: nn.Module, train: bool, with_rng: bool, intercept=None):
  """Jitted (params, clips, rng) -> ((logits, outputs), intermediates); the rng is used only
  with_rng, module methods are intercepted by `intercept` if given."""

  def forward(params, clips, rng):
    rngs = {"dropout": rng} if with_rng else {}
    with nn.intercept_methods(intercept) if intercept else contextlib.nullcontext():
      outputs, state = model.apply(
        {"params": params}, clips, train=train, rngs=rngs, mutable=["intermediates"]
      )
    return outputs, state.get("intermediates", {})

  return jax.jit(forward, compiler_options=FAST_COMPILE)


def _loss_and_grads(model, params, clips, train, rng=None):
  rng = jax.random.key(0) if rng is None else rng
  return _loss_and_grads_fn(model, train)(params, clips, rng)


def _forward(model, params, clips, train=False, rng=None, intercept=None):
  outputs, _ = _forward_fn(model, train, rng is not None, intercept)(params, clips, rng)
  return outputs


def _assert_trees_close(got, want, atol):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  pairs = zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True)
  for (path, a), b in pairs:
    np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), atol=atol, rtol=1e-4, err_msg=str(path)
    )


# ----------------------------------------------------------------------------------------
# Scanned layers: the same model in another layout.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(MODELS))
def test_scanned_model_equals_unscanned_with_stacked_params(key):
  # Stochastic depth on: evaluation must ignore it (and need no rng) in both layouts.
  plain = _build(key, stochastic_depth=0.2)
  scanned = _build(key, stochastic_depth=0.2, scan_layers=True)
  params = _random_params(plain)

  stacked = scan.stack_layers(params)
  _assert_trees_equal(scan.unstack_layers(stacked), params)
  # The scanned model's own init has exactly the stacked tree: names, shapes, dtypes.
  assert reference.init_shapes(scanned, SHAPE) == jax.eval_shape(lambda: stacked)
  flat = flax.traverse_util.flatten_dict(stacked, sep="/")
  assert not any("encoderblock_" in name for name in flat)

  clips = _clips()
  want_logits, want = _forward(plain, params, clips)
  got_logits, got = _forward(scanned, stacked, clips)  # No rng needed.
  np.testing.assert_allclose(got_logits, want_logits, atol=1e-5, rtol=0)
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=0, err_msg=name)


def test_scanned_parameter_names_shapes_and_init():
  model = _build("vivit_factorised_encoder", scan_layers=True)
  init = jax.jit(functools.partial(model.init, train=False), compiler_options=FAST_COMPILE)
  flat = flax.traverse_util.flatten_dict(init(jax.random.key(0), _clips())["params"], sep="/")
  # (L_s, D, heads, head_dim) and (L_t, ...): one stack per encoder, under a stable name.
  kernel = flat["spatial_encoder/encoderblocks/attention/query/kernel"]
  assert kernel.shape == (2, 32, 2, 16)
  assert flat["temporal_encoder/encoderblocks/mlp/Dense_0/kernel"].shape == (3, 32, 64)
  assert flat["spatial_encoder/encoder_norm/scale"].shape == (32,)
  # Every layer draws its own initialisation.
  assert not np.allclose(kernel[0], kernel[1])


def test_rollout_of_a_scanned_model_equals_the_unscanned_one():
  plain = _build("timesformer_divided")
  scanned = _build("timesformer_divided", scan_layers=True)
  params = _random_params(plain)
  clips = _clips()
  _, sown = _forward_fn(plain, False, False)(params, clips, None)
  want = rollout.rollout_from_intermediates(plain, sown, clips.shape)
  # Stacked (L, B*G, heads, L, L) maps, which rollout splits per layer.
  _, sown = _forward_fn(scanned, False, False)(scan.stack_layers(params), clips, None)
  assert sown["encoderblocks"]["attention_spatial"]["attention_weights"][0].shape[0] == 2
  got = rollout.rollout_from_intermediates(scanned, sown, clips.shape)
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------
# Stochastic depth under scan.
# ----------------------------------------------------------------------------------------


def _expected_drop_path(next_fun, args, kwargs, context):
  """Replaces each DropPath by its expectation x * (1 - rate): deterministic, rate-revealing."""
  if isinstance(context.module, layers.DropPath) and context.method_name == "__call__":
    rate = context.module.rate
    # The rate each layer saw, sown where the DropPath sits (stacked on the layer axis if scanned).
    context.module.sow("intermediates", "rate", jnp.asarray(rate, jnp.float32))
    return args[0] * (1.0 - rate)
  return next_fun(*args, **kwargs)


@pytest.mark.parametrize("key", ["timesformer_divided", "vivit_factorised_encoder", "xvit"])
def test_scanned_layers_get_the_linearly_rising_drop_path_rates(key):
  plain = _build(key, stochastic_depth=0.4)
  scanned = _build(key, stochastic_depth=0.4, scan_layers=True)
  params = _random_params(plain)
  clips = _clips()
  results = []
  for model, p in ((plain, params), (scanned, scan.stack_layers(params))):
    forward = _forward_fn(model, True, True, _expected_drop_path)
    (logits, _), intermediates = forward(p, clips, jax.random.key(0))
    results.append((logits, scan.unstack_layers(intermediates)))
  (want_logits, want_rates), (got_logits, got_rates) = results
  # Train mode, expected drop path: equal outputs need the same rate in every layer.
  np.testing.assert_allclose(got_logits, want_logits, atol=1e-5, rtol=0)
  want_flat = flax.traverse_util.flatten_dict(want_rates, sep="/")
  got_flat = flax.traverse_util.flatten_dict(got_rates, sep="/")
  rates = {k: v for k, v in got_flat.items() if k.endswith("/rate")}
  assert rates and sorted(rates) == sorted(k for k in want_flat if k.endswith("/rate"))
  for name, value in rates.items():
    np.testing.assert_allclose(value[0], want_flat[name][0], rtol=1e-6, err_msg=name)
    layer = int(name.split("encoderblock_")[1].split("/")[0])
    if name.startswith("temporal_encoder/"):
      # ViViT's L_t = 3 temporal layers rise on their own; X-ViT's head has no stochastic depth.
      want_rate = 0.0 if key == "xvit" else encoder.drop_path_rates(0.4, 3)[layer]
    else:
      want_rate = encoder.drop_path_rates(0.4, 2)[layer]
    np.testing.assert_allclose(value[0], want_rate, rtol=1e-6, atol=1e-7, err_msg=name)


def test_scanned_train_mode_drops_paths_and_needs_no_rng_without_stochastic_depth():
  clips = _clips()
  model = _build("vivit_spatio_temporal", scan_layers=True, stochastic_depth=0.0)
  params = scan.stack_layers(_random_params(_build("vivit_spatio_temporal")))
  train, _ = _forward(model, params, clips, train=True)  # No rng asked for.
  evaluation, _ = _forward(model, params, clips)
  np.testing.assert_allclose(train, evaluation, atol=1e-6, rtol=0)
  # Stochastic depth 0.9 in the last layer: train-mode outputs now vary with the rng.
  model = _build("vivit_spatio_temporal", scan_layers=True, stochastic_depth=0.9)
  outs = [_forward(model, params, clips, True, jax.random.key(seed))[0] for seed in range(3)]
  assert not all(np.allclose(outs[0], out) for out in outs[1:])


# ----------------------------------------------------------------------------------------
# Rematerialisation: the same loss and gradients.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "key, policies",
  [
    ("vivit_spatio_temporal", ("full", "dots", "dots_no_batch")),
    # The other block codes: TimeSformer's (x, cls) carry, with and without a class token.
    ("timesformer_divided", ("dots",)),
    ("timesformer_divided_gap", ("full",)),
    ("vivit_factorised_self_attention", ("full",)),
    ("xvit", ("dots_no_batch",)),
  ],
)
def test_remat_policies_give_the_same_loss_and_gradients(key, policies):
  plain = _build(key)
  params = _random_params(plain)
  clips = _clips()
  want = _loss_and_grads(plain, params, clips, train=False)
  for policy in policies:
    got = _loss_and_grads(_build(key, remat_policy=policy), params, clips, train=False)
    _assert_trees_close(got, want, atol=1e-6)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_remat_with_dropout_in_train_mode_draws_the_same_masks(scan_layers):
  regularised = dict(dropout_rate=0.1, stochastic_depth=0.3, scan_layers=scan_layers)
  plain = _build("vivit_spatio_temporal", **regularised)
  params = _random_params(_build("vivit_spatio_temporal"))
  if scan_layers:
    params = scan.stack_layers(params)
  clips, rng = _clips(), jax.random.key(3)
  want = _loss_and_grads(plain, params, clips, train=True, rng=rng)
  # Dropout really acts: another rng gives another loss.
  other = _loss_and_grads(plain, params, clips, train=True, rng=jax.random.key(4))
  assert not np.allclose(other[0], want[0])
  model = _build("vivit_spatio_temporal", **regularised, remat_policy="dots_no_batch")
  _assert_trees_close(_loss_and_grads(model, params, clips, train=True, rng=rng), want, atol=1e-6)


# ----------------------------------------------------------------------------------------
# init_from into a scanned model.
# ----------------------------------------------------------------------------------------


def _converted(key: str, num_frames: int, seed: int) -> store.Converted:
  model = _build(key)
  params = jax.tree.map(np.asarray, _random_params(model, seed=seed))
  return store.Converted(
    model_name=MODELS[key][0],
    model_config=dict(MODELS[key][1]),
    num_classes=3,
    params=params,
    preprocessing=dict(num_frames=num_frames, crop_size=16),
  )


@pytest.mark.parametrize(
  "source_key, target_key",
  [
    ("timesformer_space", "vivit_factorised_encoder"),  # An image ViT (frames = 1), two stacks.
    ("timesformer_space", "timesformer_divided"),
    ("timesformer_divided", "timesformer_divided"),  # A video checkpoint of the family.
  ],
)
def test_init_from_an_unscanned_checkpoint_into_a_scanned_model(source_key, target_key):
  image = source_key == "timesformer_space"
  source = _converted(source_key, num_frames=1 if image else 4, seed=5)
  plain = _build(target_key)
  scanned = _build(target_key, scan_layers=True)
  fresh = jax.tree.map(np.asarray, _random_params(plain, seed=6))  # Fresh parts stay as they are.
  init_config = dict(checkpoint_path="source", skip_patterns=["encoderblock_1/mlp/"])
  results = []
  for model, template in ((plain, fresh), (scanned, scan.stack_layers(fresh))):
    params, report = init_from.initialise(
      template,
      model_name=target_key.split("_")[0],
      model_config=model.config,
      init_config=init_config,
      num_frames=4,
      crop_size=16,
      source=source,
    )
    assert jax.eval_shape(lambda p=params: p) == jax.eval_shape(lambda t=template: t)
    results.append((_forward(model, params, _clips())[0], report))
  (want, want_report), (got, got_report) = results
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  assert sorted(got_report.loaded) == sorted(want_report.loaded)
  assert sorted(got_report.skipped) == sorted(want_report.skipped)
  assert any("encoderblock_1/mlp/" in name for name in got_report.skipped)


def test_init_from_a_scanned_checkpoint_into_an_unscanned_model():
  source = _converted("timesformer_divided", num_frames=4, seed=5)
  scanned_source = store.Converted(**{**vars(source), "params": scan.stack_layers(source.params)})
  model = _build("timesformer_divided")
  fresh = jax.tree.map(np.asarray, _random_params(model, seed=6))
  params, _ = init_from.initialise(
    fresh,
    model_name="timesformer",
    model_config=model.config,
    init_config=dict(checkpoint_path="source"),
    num_frames=4,
    crop_size=16,
    source=scanned_source,
  )
  _assert_trees_equal(params, source.params)


# ----------------------------------------------------------------------------------------
# Config errors.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "overrides, field",
  [
    (dict(remat_policy="everything"), "model.remat_policy"),
    (dict(remat_policy=None), "model.remat_policy"),
    (dict(remat_policy=True), "model.remat_policy"),
    (dict(scan_layers="yes"), "model.scan_layers"),
    (dict(scan_layers=1), "model.scan_layers"),
  ],
)
@pytest.mark.parametrize("model_name", ["vivit", "timesformer", "xvit"])
def test_invalid_values_name_the_field(model_name, overrides, field):
  with pytest.raises(ValueError, match=field):
    models.build(model_name, dict(TINY, **overrides), 3)


def test_defaults_are_off():
  for model_name in ("vivit", "timesformer", "xvit"):
    config = models.default_config(model_name)
    assert config.remat_policy == "none" and config.scan_layers is False
  assert set(hparams.REMAT_POLICIES) == {"none", "full", "dots", "dots_no_batch"}
