"""model.attention_implementation: which kernel the attention core picks ('auto' | 'xla' |
'cudnn' | 'splash'), the padded-and-masked path cuDNN runs on (checked here with XLA on a CPU: it
equals the plain path, outputs and gradients), the TPU's Pallas splash kernel (run here in Pallas
interpret mode against XLA), every model with either path forced on equals the plain model, and
the config field's validation."""

import functools
import importlib
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import init_shapes, random_like
from shared import REPO

from vidtx import models
from vidtx.models import kernels, timesformer

jax.config.update("jax_numpy_rank_promotion", "raise")

TOL = dict(rtol=1e-6, atol=1e-6)
# Small programs compiled once: XLA's CPU optimisation passes cost more time than they save.
FAST_COMPILE = dict(xla_backend_optimization_level=0, xla_llvm_disable_expensive_passes=True)


def _run(fn, *args):
  """fn(*args), jitted and compiled with FAST_COMPILE."""
  return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


def _close(actual, expected):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), **TOL)


# ----------------------------------------------------------------------------------------
# The padded-and-masked path against the plain one.
# ----------------------------------------------------------------------------------------


def _qkv_ct(length, kv_length=None, heads=2, head_dim=8, seed=0):
  """Random query (1, L, H, Dh), key/value (1, S, H, Dh) and an output cotangent."""
  kv_length = kv_length or length
  k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(k1, (1, length, heads, head_dim))
  k = jax.random.normal(k2, (1, kv_length, heads, head_dim))
  v = jax.random.normal(k3, (1, kv_length, heads, head_dim))
  return q, k, v, jax.random.normal(k4, q.shape)


def _value_and_grads(attend, q, k, v, ct, mask):
  """Output and gradients w.r.t. q, k, v of <attend(q, k, v), ct>; the mask is an argument, so
  that XLA does not constant-fold it."""

  def loss(q, k, v, mask):
    y = attend(q, k, v, mask=mask)
    return jnp.sum(y * ct), y

  (_, y), grads = _run(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True), q, k, v, mask)
  return y, grads


def _plain(q, k, v, *, mask):
  return jax.nn.dot_product_attention(q, k, v, mask=mask)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("length", [1, 8, 197, 1569, 3137])
def test_padded_path_equals_plain_path(length, masked):
  heads = 2 if length < 1000 else 1  # Keeps the (L, L) attention matrices of 3137 cheap.
  q, k, v, ct = _qkv_ct(length, heads=heads, seed=length)
  mask = None
  if masked:
    # Random per-head mask; the diagonal keeps every query with a key (an empty row is
    # undefined attention, spread over different key sets by the two paths).
    rng = np.random.default_rng(length)
    mask = (rng.random((1, heads, length, length)) < 0.5) | np.eye(length, dtype=bool)
  padded = functools.partial(kernels.padded_dot_product_attention, implementation="xla")
  y, grads = _value_and_grads(padded, q, k, v, ct, mask)
  y_ref, grads_ref = _value_and_grads(_plain, q, k, v, ct, mask)
  _close(y, y_ref)
  for grad, grad_ref in zip(grads, grads_ref, strict=True):
    assert np.isfinite(np.asarray(grad)).all()
    _close(grad, grad_ref)


def test_padded_path_broadcast_mask_and_longer_keys():
  """A key-padding style mask (1, 1, 1, S) and kv_length != q_length (X-ViT summary tokens)."""
  q, k, v, ct = _qkv_ct(70, kv_length=75, seed=3)
  mask = (jnp.arange(75) % 3 != 1)[None, None, None, :]
  padded = functools.partial(kernels.padded_dot_product_attention, implementation="xla")
  y, grads = _value_and_grads(padded, q, k, v, ct, mask)
  y_ref, grads_ref = _value_and_grads(_plain, q, k, v, ct, mask)
  _close(y, y_ref)
  for grad, grad_ref in zip(grads, grads_ref, strict=True):
    _close(grad, grad_ref)


def test_padded_rows_give_zero_outputs_and_zero_finite_gradients():
  """What the padded path relies on: with the true lengths given, padded query rows come out
  zero and no gradient reaches padded rows, even from a cotangent on them (the slice gives
  none)."""
  length, padded_length = 197, 256
  q, k, v, _ = _qkv_ct(padded_length, seed=5)
  lengths = jnp.full((1,), length, jnp.int32)

  def attend(q, k, v):
    return jax.nn.dot_product_attention(
      q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths, implementation="xla"
    )

  y, vjp = jax.vjp(attend, q, k, v)
  assert np.isfinite(np.asarray(y)).all() and not np.asarray(y[:, length:]).any()
  for grad in vjp(jnp.ones_like(y)):
    assert np.isfinite(np.asarray(grad)).all()
    assert not np.asarray(grad[:, length:]).any()


# ----------------------------------------------------------------------------------------
# Every attention scheme of the three families with the padded path forced on.
# ----------------------------------------------------------------------------------------

# Tiny models: 8x8 frames in 4x4 patches (N = 4 per frame), D = 16, 2 heads, one block per
# stack (a block holds every attention stage of its scheme).
TINY = dict(variant="Ti/4", hidden_size=16, num_heads=2, mlp_dim=32, num_layers=1)
VIDEO_SHAPE = (2, 4, 8, 8, 3)  # (B, T, H, W, C)
NUM_CLASSES = 5
SCHEMES = [("timesformer", dict(attention=a)) for a in timesformer.ATTENTIONS] + [
  ("vivit", dict(attention="spatio_temporal", variant="Ti/4x2")),
  ("vivit", dict(attention="factorised_encoder", variant="Ti/4x2", temporal_layers=1)),
  ("vivit", dict(attention="factorised_self_attention", variant="Ti/4x2", classifier="gap")),
  ("vivit", dict(attention="factorised_dot_product", variant="Ti/4x2", classifier="gap")),
  ("xvit", dict(attention="space_time_mixing")),
  ("xvit", dict(attention="space_time_mixing", summary_tokens=2)),  # kv_length > q_length.
  ("xvit", dict(attention="tsm")),
]


def _logits_and_grads(model, params):
  """Logits of a fixed random video and the gradients of a fixed random projection of them."""
  video = jax.random.normal(jax.random.key(0), VIDEO_SHAPE)
  ct = jax.random.normal(jax.random.key(1), (VIDEO_SHAPE[0], NUM_CLASSES))

  def loss(params):
    logits, _ = model.apply({"params": params}, video, train=False)
    return jnp.sum(logits * ct), logits

  (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
  return logits, grads


def _scheme_id(scheme):
  name, overrides = scheme
  return "-".join([name, overrides["attention"]] + [k for k in overrides if k == "summary_tokens"])


@pytest.mark.slow
@pytest.mark.parametrize("scheme", SCHEMES, ids=_scheme_id)
def test_model_with_padded_path_equals_plain_model(scheme, monkeypatch):
  """The same tiny model (random parameters) with model.attention_implementation 'xla' and with
  'cudnn', the chooser taking each request as it is (no platform check) and the padded path run
  with XLA: every attention call of the 'cudnn' model goes through the padding, and its logits
  and parameter gradients are the plain model's."""
  model_name, overrides = scheme
  requested, padded_lengths = [], []
  padded = kernels.padded_dot_product_attention

  def choose(implementation, **kwargs):
    requested.append(implementation)
    return implementation

  def padded_with_xla(query, key, value, *, mask=None, implementation):
    assert implementation == "cudnn" and mask is None
    padded_lengths.append((query.shape[1], key.shape[1]))
    return padded(query, key, value, mask=mask, implementation="xla")

  plain, forced = (
    models.build(model_name, dict(TINY, **overrides, attention_implementation=i), NUM_CLASSES)
    for i in ("xla", "cudnn")
  )
  params = random_like(init_shapes(plain, VIDEO_SHAPE))
  monkeypatch.setattr(kernels, "choose_attention_implementation", choose)
  monkeypatch.setattr(kernels, "padded_dot_product_attention", padded_with_xla)
  # Both models in one program: one compilation.
  (logits_ref, grads_ref), (logits, grads) = _run(
    lambda p: (_logits_and_grads(plain, p), _logits_and_grads(forced, p)), params
  )

  # Every core call saw its model's field; each of the 'cudnn' model's ran padded.
  assert requested.count("xla") == requested.count("cudnn") == len(padded_lengths) > 0
  assert set(requested) == {"xla", "cudnn"}
  if overrides.get("summary_tokens"):
    assert any(kv > q for q, kv in padded_lengths)
  _close(logits, logits_ref)
  jax.tree.map(_close, grads, grads_ref)


@pytest.mark.parametrize(
  "model_name, overrides",
  [
    ("timesformer", dict(attention="divided")),
    ("vivit", dict(attention="factorised_dot_product", variant="Ti/4x2", classifier="gap")),
    ("xvit", dict(attention="space_time_mixing")),
  ],
)
def test_cudnn_requested_on_cpu_fails_clearly_in_every_family(model_name, overrides):
  """The field reaches the core through the wrapped attention functions (ViViT Model 4, X-ViT)
  as well: forcing cuDNN on this CPU stops at the first attention, naming the field."""
  model = models.build(
    model_name, dict(TINY, **overrides, attention_implementation="cudnn"), NUM_CLASSES
  )
  with pytest.raises(ValueError, match=r"model\.attention_implementation='cudnn'.*platform 'cpu'"):
    init_shapes(model, VIDEO_SHAPE)


def test_auto_on_cpu_is_the_plain_core():
  q, k, v, _ = _qkv_ct(197, seed=9)
  np.testing.assert_array_equal(
    np.asarray(kernels.dot_product_attention(q, k, v)),
    np.asarray(jax.nn.dot_product_attention(q, k, v)),
  )


# ----------------------------------------------------------------------------------------
# What 'auto' picks.
# ----------------------------------------------------------------------------------------

# A ViT-B/16 joint attention (1 + 8 * 196 tokens, head dim 64) in bfloat16 on an NVIDIA GPU.
LONG = dict(q_length=1569, kv_length=1569, head_dim=64)


def _choose(requested="auto", platform="cuda", dtype=jnp.bfloat16, **overrides):
  kwargs = dict(LONG, has_mask=False, dropout=False)
  kwargs.update(overrides)
  return kernels.choose_attention_implementation(
    requested, platform=platform, dtype=dtype, **kwargs
  )


@pytest.mark.parametrize(
  "case, expected",
  [
    (dict(platform="cpu"), "xla"),
    (dict(platform="rocm"), "xla"),
    (dict(platform="cuda", dtype=jnp.float32), "xla"),
    (dict(platform="gpu", dtype=jnp.float32), "xla"),
    (dict(platform="cuda"), "cudnn"),
    (dict(platform="gpu"), "cudnn"),
    (dict(platform="cuda", dtype=jnp.float16), "cudnn"),
    (dict(q_length=197, kv_length=197), "cudnn"),  # TimeSformer spatial: 1 + 196.
    (dict(q_length=128, kv_length=128), "cudnn"),
    (dict(q_length=8, kv_length=8), "xla"),  # TimeSformer temporal: 8 frames.
    (dict(q_length=127, kv_length=127), "xla"),
    (dict(q_length=1, kv_length=1569), "xla"),
    (dict(dropout=True), "xla"),
    (dict(has_mask=True), "xla"),
    (dict(head_dim=80), "cudnn"),  # ViT-H: 1280 / 16.
    (dict(head_dim=128), "cudnn"),
    (dict(head_dim=60), "xla"),  # Not a multiple of 8.
    (dict(head_dim=136), "xla"),  # Beyond 128 only on Hopper: 'auto' stays within.
  ],
)
def test_auto_choice(case, expected):
  assert _choose(**case) == expected


def test_xla_is_always_xla():
  assert _choose("xla") == "xla"
  assert _choose("xla", platform="cpu", dtype=jnp.float32) == "xla"


def test_cudnn_forced():
  assert _choose("cudnn") == "cudnn"
  # Short lengths too: padded to 64.
  assert _choose("cudnn", q_length=8, kv_length=8) == "cudnn"
  assert _choose("cudnn", head_dim=256) == "cudnn"
  # Explicit masks stay on XLA (jax would hand cuDNN a dense bias).
  assert _choose("cudnn", has_mask=True) == "xla"


@pytest.mark.parametrize(
  "case, message",
  [
    (dict(platform="cpu"), "NVIDIA GPUs only, not on platform 'cpu'"),
    (dict(platform="tpu"), "NVIDIA GPUs only"),
    (dict(dtype=jnp.float32), "bfloat16 or float16 compute, not float32"),
    (dict(head_dim=60), "head dim .* not 60"),
    (dict(head_dim=264), "head dim .* not 264"),
    (dict(dropout=True), "attention dropout"),
  ],
)
def test_cudnn_forced_where_impossible_raises(case, message):
  with pytest.raises(ValueError, match=r"model\.attention_implementation='cudnn'.*" + message):
    _choose("cudnn", **case)


def test_unknown_request_raises():
  with pytest.raises(ValueError, match=r"model\.attention_implementation='flash'"):
    _choose("flash")


# ----------------------------------------------------------------------------------------
# The config field.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", sorted(models.MODELS))
def test_config_field(model_name):
  assert models.default_config(model_name).attention_implementation == "auto"
  for value in kernels.ATTENTION_IMPLEMENTATIONS:
    config = models.build(model_name, dict(attention_implementation=value), NUM_CLASSES).config
    assert config.attention_implementation == value
  for bad in ("bogus", "XLA", None, 1):
    with pytest.raises(
      ValueError,
      match=r"model\.attention_implementation=.*expected one of "
      r"\['auto', 'xla', 'cudnn', 'splash'\]",
    ):
      models.build(model_name, dict(attention_implementation=bad), NUM_CLASSES)


def test_every_recipe_has_the_field():
  """Every recipe's model config comes from the model's defaults, so
  --config.model.attention_implementation=... is accepted and validated everywhere."""
  recipes = sorted(
    name[:-3]
    for name in os.listdir(os.path.join(REPO, "configs"))
    if name.endswith(".py") and name not in ("__init__.py", "common.py")
  )
  assert recipes
  for name in recipes:
    config = importlib.import_module(f"vidtx.configs.{name}").get_config(None)
    assert config.model.attention_implementation == "auto", name
    config.model.attention_implementation = "cudnn"
    models.build(config.model_name, config.model, 10)
    config.model.attention_implementation = "bogus"
    with pytest.raises(ValueError, match=r"model\.attention_implementation='bogus'"):
      models.build(config.model_name, config.model, 10)


# ----------------------------------------------------------------------------------------
# The Pallas splash kernel (a TPU's; Pallas interpret mode on this CPU) against XLA.
# ----------------------------------------------------------------------------------------

# bfloat16 against bfloat16 XLA: a few units of its last place (2^-8 relative) on the outputs
# and on gradients summed over a few hundred keys.
BF16_TOL = dict(rtol=2**-5, atol=2**-5)


def _splash_and_xla(length, kv_length, dtype, batch=2, heads=2, head_dim=64):
  """Outputs and (q, k, v) gradients of the splash core (interpret mode) and of jax's XLA
  attention, in `dtype`, on the same random inputs."""
  q, k, v, ct = _qkv_ct(length, kv_length, heads=heads, head_dim=head_dim, seed=length)
  q, k, v, ct = (jnp.concatenate([x] * batch).astype(dtype) for x in (q, k, v, ct))
  splash = functools.partial(kernels.splash_dot_product_attention, interpret=True)

  def run(attend):
    def loss(q, k, v):
      y = attend(q, k, v)
      return jnp.sum((y * ct).astype(jnp.float32)), y

    (_, y), grads = _run(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True), q, k, v)
    return [np.asarray(x, np.float32) for x in (y, *grads)]

  return run(splash), run(functools.partial(jax.nn.dot_product_attention, implementation="xla"))


def _check_splash(length, kv_length, dtype, **shape):
  got, want = _splash_and_xla(length, kv_length, dtype, **shape)
  tol = dict(rtol=1e-5, atol=1e-5) if dtype == jnp.float32 else BF16_TOL
  for name, actual, expected in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
    assert np.isfinite(actual).all(), name
    np.testing.assert_allclose(actual, expected, err_msg=name, **tol)


F32, BF16 = jnp.float32, jnp.bfloat16


@pytest.mark.parametrize(
  "length, kv_length, dtype",
  [(197, 197, F32), (70, 75, BF16)],  # 75 keys: X-ViT's summary tokens.
  ids=["197-f32", "70-75-bf16"],
)
def test_splash_path_equals_xla_path(length, kv_length, dtype):
  """ViT-B's head dim 64 as it is, a batch of 2 (the kernel is vmapped), lengths padded to the
  kernel's 128 block and masked (3 s each in interpret mode: the rest are in tier 2)."""
  _check_splash(length, kv_length, dtype)


@pytest.mark.slow
@pytest.mark.tier2
@pytest.mark.parametrize(
  "length, kv_length, dtype",
  [
    (8, 8, F32),  # TimeSformer temporal: 8 frames in one padded block.
    (8, 8, BF16),
    (128, 128, F32),  # No padding.
    (197, 197, BF16),
    (70, 75, F32),
    (1569, 1569, F32),  # TimeSformer joint (ViT-B).
    (1569, 1569, BF16),
    (3137, 3137, F32),  # ViViT Model 1 (ViT-B); bfloat16 at 1569 (22 s more for 3137).
  ],
  ids=lambda x: str(x) if isinstance(x, int) else jnp.dtype(x).name,
)
def test_splash_path_equals_xla_path_tier2(length, kv_length, dtype):
  # One example and one head at the long lengths: XLA's reference forms (L, L) matrices.
  shape = dict(batch=1, heads=1) if length > 1000 else {}
  _check_splash(length, kv_length, dtype, **shape)


def test_splash_keeps_the_xla_scale_for_other_head_dims():
  """The query is scaled by 1/sqrt of the real head dim (here 40, not a power of 4)."""
  _check_splash(130, 130, jnp.float32, batch=1, head_dim=40)


def _model_logits_and_grads(scheme, implementations):
  """Logits and parameter gradients of one tiny model (the same random parameters) per
  model.attention_implementation, one compiled program; and the (q_length, kv_length) of every
  call that ran the splash core."""
  model_name, overrides = scheme
  splash_lengths = []
  splash = kernels.splash_dot_product_attention

  def recording_splash(query, key, value, **kwargs):
    splash_lengths.append((query.shape[1], key.shape[1]))
    return splash(query, key, value, **kwargs)

  built = [
    models.build(model_name, dict(TINY, **overrides, attention_implementation=i), NUM_CLASSES)
    for i in implementations
  ]
  params = random_like(init_shapes(built[0], VIDEO_SHAPE))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(kernels, "splash_dot_product_attention", recording_splash)
    results = _run(lambda p: [_logits_and_grads(m, p) for m in built], params)
  return results, splash_lengths


def _check_model_with_splash(scheme):
  """The tiny model with 'splash' forced (interpret mode on this CPU) equals it with 'xla':
  logits and every parameter gradient, and every attention call took the kernel."""
  ((logits_ref, grads_ref), (logits, grads)), lengths = _model_logits_and_grads(
    scheme, ("xla", "splash")
  )
  assert lengths
  if scheme[1].get("summary_tokens"):
    assert any(kv > q for q, kv in lengths)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(logits_ref), rtol=1e-5, atol=1e-5)
  jax.tree.map(
    lambda g, r: np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5),
    grads,
    grads_ref,
  )


@pytest.mark.slow
@pytest.mark.tier2
@pytest.mark.parametrize("scheme", SCHEMES, ids=_scheme_id)
def test_model_with_splash_equals_xla(scheme):
  """Every scheme of the three families (those whose groups are long in the real models among
  them: ViViT Model 1 and the spatial stages, TimeSformer joint and divided, X-ViT)."""
  _check_model_with_splash(scheme)


# What 'auto' picks on a TPU: a ViT-B/16 joint attention (LONG) in bfloat16 unless said.
@pytest.mark.parametrize(
  "case, expected",
  [
    (dict(), "splash"),
    (dict(dtype=jnp.float32), "splash"),  # The kernel computes in float32 as well.
    (dict(q_length=3137, kv_length=3137), "splash"),  # ViViT Model 1.
    (dict(q_length=197, kv_length=197), "splash"),  # TimeSformer spatial: 1 + 196.
    (dict(q_length=128, kv_length=128), "splash"),  # One block.
    (dict(q_length=127, kv_length=127), "xla"),
    (dict(q_length=8, kv_length=8), "xla"),  # TimeSformer temporal: 8 frames.
    (dict(q_length=17, kv_length=17), "xla"),  # ViViT FE temporal: 1 + 16 tubelets.
    (dict(q_length=1, kv_length=1569), "xla"),
    (dict(head_dim=64), "splash"),  # ViT-B, as it is.
    (dict(head_dim=80), "splash"),  # ViT-H.
    (dict(dropout=True), "xla"),  # The kernel never forms the weights dropout acts on.
    (dict(has_mask=True), "xla"),
    (dict(shardable=False), "xla"),  # Several devices, no mesh to shard_map over.
  ],
)
def test_auto_choice_on_tpu(case, expected):
  assert _choose(platform="tpu", **case) == expected


def test_splash_forced():
  assert _choose("splash", platform="tpu") == "splash"
  assert _choose("splash", platform="tpu", q_length=8, kv_length=8) == "splash"  # Padded.
  assert _choose("splash", platform="cpu", dtype=jnp.float32) == "splash"  # Interpret mode.
  assert _choose("splash", platform="tpu", has_mask=True) == "xla"
  # Tried without a mesh on several devices: jax says whether it can partition the program.
  assert _choose("splash", platform="tpu", shardable=False) == "splash"
  # 'auto' never picks it off a TPU: interpret mode is for tests and debugging.
  assert _choose(platform="cpu", dtype=jnp.float32) == "xla"


@pytest.mark.parametrize(
  "case, message",
  [
    (dict(platform="cuda"), "TPUs .* only, not on platform 'cuda'"),
    (dict(platform="rocm"), "not on platform 'rocm'"),
    (dict(platform="tpu", dropout=True), "attention dropout"),
  ],
)
def test_splash_forced_where_impossible_raises(case, message):
  with pytest.raises(ValueError, match=r"model\.attention_implementation='splash'.*" + message):
    _choose("splash", **case)


def test_splash_with_dropout_stays_on_the_weights_path():
  """Attention dropout in training under 'auto' on this CPU: the weights path, as with cuDNN;
  forcing 'splash' with it is an error naming the field."""
  q, k, v, _ = _qkv_ct(130, heads=2, head_dim=8, seed=2)
  kwargs = dict(dropout_rate=0.5, dropout_rng=jax.random.key(0), deterministic=False)
  assert kernels.dot_product_attention(q, k, v, **kwargs).shape == q.shape
  with pytest.raises(ValueError, match=r"'splash'.*attention dropout"):
    kernels.dot_product_attention(q, k, v, implementation="splash", **kwargs)


# Two fake CPU devices: the kernel in shard_map under a mesh in context equals XLA (the batch
# split, the heads split), and so does the train step (init included), which sets the mesh.
SHARDED_SCRIPT = textwrap.dedent(
  """
  import functools
  import jax, jax.numpy as jnp, numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from vidtx.models import kernels

  assert jax.device_count() == 2 and not kernels.kernel_shardable()
  ks = jax.random.split(jax.random.key(0), 4)
  q, k, v, ct = (jax.random.normal(key, (4, 197, 2, 64)) for key in ks)

  def grads(implementation, q, k, v):
    attend = functools.partial(kernels.dot_product_attention, implementation=implementation)
    return jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v) * ct), argnums=(0, 1, 2))(q, k, v)

  want = jax.jit(functools.partial(grads, "xla"))(q, k, v)
  # No mesh: not shard_mapped ('auto' would keep XLA; on a TPU jax would refuse to partition
  # the kernel, here interpret mode is plain XLA).
  assert "shard_map" not in str(jax.jit(functools.partial(grads, "splash")).trace(q, k, v).jaxpr)
  for shape in ((2, 1, 1), (1, 1, 2)):  # data = 2; model = 2 (the heads split).
    mesh = Mesh(np.asarray(jax.devices()).reshape(shape), ("data", "fsdp", "model"))

    def step(q, k, v):  # As vidtx's steps: the mesh set inside.
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        assert kernels.kernel_shardable()
        return grads("splash", q, k, v)

    step = jax.jit(step, in_shardings=NamedSharding(mesh, P(("data", "fsdp"))))
    assert "shard_map" in str(step.trace(q, k, v).jaxpr)
    for g, w in zip(step(q, k, v), want):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)

  # train_state.make_train_step on data = 2 (2 micro-batches): 'splash' takes the step as 'xla'.
  import optax
  from vidtx import models, sharding, train_state

  mesh = sharding.make_mesh(dict(data=2))
  batch = {"inputs": jax.random.normal(ks[0], (4, 4, 16, 16, 3)), "label": jnp.arange(4) % 3}
  results = []
  for implementation in ("xla", "splash"):
    model = models.build(
      "vivit",
      dict(variant="Ti/8x2", hidden_size=32, num_heads=2, mlp_dim=64, num_layers=1,
           attention="spatio_temporal", attention_implementation=implementation),
      3,
    )
    tx = optax.sgd(0.5)
    state, abstract = train_state.create_train_state(
      model, tx, (4, 4, 16, 16, 3), mesh, jax.random.key(0)
    )
    step = train_state.make_train_step(
      model, tx, optax.constant_schedule(0.5), abstract, mesh, num_classes=3, grad_accum_steps=2
    )
    state, metrics = step(state, batch)
    results.append(jax.device_get((state.params, metrics["loss"])))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), results[1], results[0]
  )
  print("ok")
  """
)


@pytest.mark.slow
@pytest.mark.tier2
def test_splash_under_a_mesh_runs_in_shard_map():
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  done = subprocess.run(
    [sys.executable, "-c", SHARDED_SCRIPT],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
