"""THE attention core and its kernels: every attention in vidtx goes through
`dot_product_attention`.

Its kernel is `model.attention_implementation` ('auto' | 'xla' | 'cudnn' | 'splash'), resolved
per call by `choose_attention_implementation` (pure: the caller names the platform,
`current_platform`); cuDNN's flash kernel runs on lengths padded to a multiple of 64 and masked by
sequence lengths (`padded_dot_product_attention`), the TPU's Pallas splash kernel on lengths
padded to its block and masked by segment ids (`splash_dot_product_attention`).
`attention_weights` forms the weights where they are needed (attention dropout, attention maps).
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.backend  # `import jax` leaves jax.extend out.
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu import splash_attention
from jax.sharding import PartitionSpec

from vidtx.errors import UserError

# model.attention_implementation: the kernel of the attention core.
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")
# Platforms (`current_platform`) with cuDNN: NVIDIA GPUs ('gpu' where CUDA cannot be confirmed).
CUDNN_PLATFORMS = ("gpu", "cuda")
# What jax 0.10's cuDNN flash attention takes (its check_layout and check_is_flash_attention):
# query/key/value in float16 or bfloat16 (fp8 aside); head_dim a multiple of 8, at most 128
# (256 from compute capability 9.0, Hopper); an explicit mask only as a dense additive bias.
CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
CUDNN_HEAD_DIM_MULTIPLE = 8
CUDNN_MAX_HEAD_DIM = 128  # On every GPU; what 'auto' stays within.
CUDNN_MAX_HEAD_DIM_HOPPER = 256  # Compute capability >= 9.0; jax raises on older GPUs.
# Lengths are padded to this multiple and masked by sequence lengths. jax 0.10 refuses odd
# lengths in training (its flash-attention check always sees a bias operand: "Unsupported
# sequence length Q 197, KV 197", as measured on an H200), and cuDNN handles kv lengths off a
# multiple of 64 only together with its padding mask (cudnn-frontend 1.0.1 release notes).
CUDNN_LENGTH_MULTIPLE = 64
# 'auto' leaves shorter sequences to XLA (e.g. TimeSformer's 8-frame temporal groups): the
# padding would multiply their work and XLA's attention matrices are small there.
CUDNN_MIN_LENGTH = 128
# jax's Pallas splash attention (jax.experimental.pallas.ops.tpu.splash_attention, the kernel
# MaxText uses) runs on TPUs; on a CPU it runs in Pallas interpret mode (lowered to plain XLA
# loops: slow, for tests and debugging). Lengths are padded to a multiple of its block (the
# kernel's default 128 x 128 tiles: block_q, block_kv and the backward blocks) and the padded
# keys masked by segment ids. Any head dim: jax pads head dims off a multiple of 128 itself
# (jax PR 26676; ViT-B's 64 runs in interpret mode as it is).
SPLASH_PLATFORMS = ("tpu",)
SPLASH_INTERPRET_PLATFORMS = ("cpu",)
SPLASH_BLOCK = 128
# 'auto' takes the kernel from one block on: shorter sequences would pad to a whole block and
# their attention matrices are small (not measured on a TPU, where the break-even may lie
# higher; see docs/training.md).
SPLASH_MIN_LENGTH = SPLASH_BLOCK
# The mesh axis the heads are split over (vidtx.sharding.MODEL_AXIS; that module is on this
# one's floor); every other mesh axis splits the batch.
SPLASH_HEADS_AXIS = "model"


# Why no fused kernel takes attention dropout (a forced 'cudnn' or 'splash' says it).
_DROPOUT_PROBLEM = (
  "cannot apply attention dropout (model.attention_dropout_rate > 0 in training): it acts on "
  "the attention weights, which the fused kernel never forms"
)


def check_attention_implementation(value: Any) -> str:
  """Raises ValueError unless `value` is one of ATTENTION_IMPLEMENTATIONS; returns it."""
  if not isinstance(value, str) or value not in ATTENTION_IMPLEMENTATIONS:
    raise UserError(
      f"model.attention_implementation={value!r}: expected one of "
      f"{list(ATTENTION_IMPLEMENTATIONS)}."
    )
  return value


def current_platform() -> str:
  """The default backend's platform: 'cpu', 'tpu', 'cuda' (NVIDIA GPU), 'rocm' (AMD GPU), ...

  'gpu' for a GPU whose kind the backend does not say.
  """
  backend = jax.extend.backend.get_backend()
  platform = backend.platform
  if platform not in ("gpu", "cuda", "rocm"):
    return platform
  # jax calls both GPU kinds 'gpu'; the version string names the toolkit ('cuda 12080').
  version = str(getattr(backend, "platform_version", "")).lower()
  if platform == "rocm" or "rocm" in version:
    return "rocm"
  return "cuda" if platform == "cuda" or "cuda" in version else "gpu"


def kernel_shardable() -> bool:
  """Whether a Pallas kernel surely runs in the program being traced: one device, or a mesh in
  context to wrap it in shard_map over (`splash_dot_product_attention`): jax.set_mesh, or
  jax.sharding.use_abstract_mesh as vidtx's train, init and evaluation steps set it."""
  return jax.device_count() == 1 or not jax.sharding.get_abstract_mesh().empty


def choose_attention_implementation(
  requested: str,
  *,
  platform: str,
  dtype: Any,
  q_length: int,
  kv_length: int,
  head_dim: int,
  has_mask: bool = False,
  dropout: bool = False,
  shardable: bool = True,
) -> str:
  """The kernel of one attention call, 'xla', 'cudnn' or 'splash'; pure (the caller names the
  platform).

  requested: model.attention_implementation. dtype: that of query/key/value. has_mask: an
  explicit mask is given. dropout: attention dropout is applied (training, rate > 0).
  shardable: a Pallas kernel surely runs here, i.e. the program runs on one device or under a
  mesh in context (`kernel_shardable`; `splash_dot_product_attention` wraps the kernel in
  shard_map over it: jax cannot partition a Pallas TPU kernel by itself).

  - 'xla': 'xla'.
  - 'auto': 'cudnn' where all hold: an NVIDIA GPU (platform 'gpu' or 'cuda'); bfloat16 or
    float16; head_dim a multiple of 8 and at most 128; both lengths >= CUDNN_MIN_LENGTH; no
    explicit mask; no attention dropout. 'xla' otherwise.
  - 'cudnn': 'cudnn' at any length; ValueError naming the field where cuDNN cannot run (not an
    NVIDIA GPU, another dtype, head_dim, attention dropout).
  - 'auto' on a TPU: 'splash' where both lengths >= SPLASH_MIN_LENGTH, no explicit mask, no
    attention dropout and `shardable`; any float dtype and head dim. 'xla' otherwise.
  - 'splash': 'splash' at any length, on a TPU and (Pallas interpret mode) on a CPU;
    ValueError naming the field elsewhere or with attention dropout. Where not `shardable` it
    is tried all the same: a program partitioned over several TPU devices without a mesh in
    context then stops at compilation with jax's "Mosaic kernels cannot be automatically
    partitioned" (vidtx's train, init and evaluation steps set the mesh).

  Calls with attention dropout never take the fused kernels: dropout acts on the attention
  weights, which it never forms (`dot_product_attention` forms them). Calls with an explicit
  mask stay on XLA even under 'cudnn': jax hands a mask to cuDNN as a dense additive bias
  (batch|1, heads|1, q_length, kv_length) that must span both lengths (no broadcast key mask)
  and whose gradient cuDNN also computes in training, i.e. the attention-sized tensor and work
  the flash kernel exists to avoid. vidtx's patterns regroup tokens instead of masking, so no
  model call has a mask.
  """
  check_attention_implementation(requested)
  if requested == "xla":
    return "xla"
  if requested == "splash":
    problem = None
    if platform not in SPLASH_PLATFORMS + SPLASH_INTERPRET_PLATFORMS:
      problem = f"runs on TPUs (and, interpreted, on CPUs) only, not on platform {platform!r}"
    elif dropout:
      problem = _DROPOUT_PROBLEM
    if problem:
      raise UserError(
        f"model.attention_implementation='splash': the Pallas splash kernel {problem}; "
        "use 'auto' or 'xla'."
      )
    return "xla" if has_mask else "splash"
  dtype = jnp.dtype(dtype)
  head_dim_ok = head_dim % CUDNN_HEAD_DIM_MULTIPLE == 0
  if requested == "cudnn":
    problem = None
    if platform not in CUDNN_PLATFORMS:
      problem = f"runs on NVIDIA GPUs only, not on platform {platform!r}"
    elif dtype not in CUDNN_DTYPES:
      problem = f"needs bfloat16 or float16 compute, not {dtype} (model.dtype='bfloat16')"
    elif not head_dim_ok or head_dim > CUDNN_MAX_HEAD_DIM_HOPPER:
      problem = (
        f"needs a head dim that is a multiple of {CUDNN_HEAD_DIM_MULTIPLE} and at most "
        f"{CUDNN_MAX_HEAD_DIM_HOPPER} ({CUDNN_MAX_HEAD_DIM} before Hopper), not {head_dim}"
      )
    elif dropout:
      problem = _DROPOUT_PROBLEM
    if problem:
      raise UserError(
        f"model.attention_implementation='cudnn': cuDNN flash attention {problem}; "
        "use 'auto' or 'xla'."
      )
    return "xla" if has_mask else "cudnn"
  if platform in SPLASH_PLATFORMS:
    supported = not has_mask and not dropout and shardable
    long_enough = min(q_length, kv_length) >= SPLASH_MIN_LENGTH
    return "splash" if supported and long_enough else "xla"
  supported = (
    platform in CUDNN_PLATFORMS
    and dtype in CUDNN_DTYPES
    and head_dim_ok
    and head_dim <= CUDNN_MAX_HEAD_DIM
    and not has_mask
    and not dropout
  )
  return "cudnn" if supported and min(q_length, kv_length) >= CUDNN_MIN_LENGTH else "xla"


def padded_dot_product_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  *,
  mask: jax.Array | None = None,
  implementation: str = "xla",
  multiple: int = CUDNN_LENGTH_MULTIPLE,
) -> jax.Array:
  """`jax.nn.dot_product_attention` on lengths padded to a multiple, the padding masked out.

  Shapes as `dot_product_attention`. query and key/value are zero-padded along their length to
  the next multiple of `multiple` and the kernel is given the true lengths
  (query_seq_lengths, key_value_seq_lengths): padded keys get no weight, padded query rows
  come out zero (XLA multiplies them by 0; cuDNN skips them) and are sliced away, so nothing
  flows back through them. That is how cuDNN's flash kernel runs any length; with
  implementation='xla' the result is the plain call's. `mask` (broadcastable to (batch, heads,
  q_length, kv_length)) is padded with False. A query row the mask leaves without keys is
  spread over the padded keys instead of the kv_length ones (no vidtx attention has one).
  """
  batch, q_length = query.shape[:2]
  kv_length = key.shape[1]
  q_pad, kv_pad = -q_length % multiple, -kv_length % multiple
  if not q_pad and not kv_pad:
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation=implementation)

  def pad(x: jax.Array, amount: int) -> jax.Array:
    # (batch, length, heads, head_dim) -> (batch, length + amount, heads, head_dim)
    return jnp.pad(x, ((0, 0), (0, amount), (0, 0), (0, 0)))

  if mask is not None:
    mask = jnp.asarray(mask)
    # (..., q_length|1, kv_length|1) -> (batch|1, heads|1, q_length|1, kv_length|1), as jax
    # reads it, then -> (.., q_length + q_pad, kv_length + kv_pad); broadcast axes stay 1.
    mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    mask = jnp.pad(
      mask,
      ((0, 0), (0, 0), (0, q_pad * (mask.shape[2] > 1)), (0, kv_pad * (mask.shape[3] > 1))),
    )
  y = jax.nn.dot_product_attention(
    pad(query, q_pad),
    pad(key, kv_pad),
    pad(value, kv_pad),
    mask=mask,
    query_seq_lengths=jnp.full((batch,), q_length, jnp.int32),
    key_value_seq_lengths=jnp.full((batch,), kv_length, jnp.int32),
    implementation=implementation,
  )
  # (batch, q_length + q_pad, heads, head_dim) -> (batch, q_length, heads, head_dim)
  return y[:, :q_length]


@functools.lru_cache(maxsize=64)
def _splash_kernel(
  heads: int, q_length: int, kv_length: int, interpret: bool
) -> Callable[..., jax.Array]:
  """The splash kernel for (heads, q_length, head_dim) queries and (heads, kv_length, head_dim)
  keys/values, lengths multiples of SPLASH_BLOCK, every query allowed every key (the padding is
  masked by segment ids). Cached: its block tables are built on the host."""
  mask = splash_attention.MultiHeadMask(
    [splash_attention.FullMask((q_length, kv_length)) for _ in range(heads)]
  )
  # The default tiles, spelled out: forward, dq and dkv blocks, all SPLASH_BLOCK.
  blocks = splash_attention.BlockSizes(
    block_q=SPLASH_BLOCK,
    block_kv=SPLASH_BLOCK,
    block_q_dkv=SPLASH_BLOCK,
    block_kv_dkv=SPLASH_BLOCK,
    block_q_dq=SPLASH_BLOCK,
    block_kv_dq=SPLASH_BLOCK,
  )
  # Its tables become arrays: concrete ones, even when first built inside a trace.
  with jax.ensure_compile_time_eval():
    return splash_attention.make_splash_mha(
      mask, block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret
    )


def _splash_partition_specs(
  mesh: jax.sharding.AbstractMesh, batch: int, heads: int
) -> tuple[PartitionSpec, PartitionSpec]:
  """shard_map specs for (batch, heads, length, head_dim) and the (length,) segment ids: the
  batch split over every mesh axis but the model axis (as far as it divides), the heads over the
  model axis where they divide."""
  batch_axes, batch_split = [], 1
  for axis in mesh.axis_names:
    size = mesh.shape[axis]
    if axis != SPLASH_HEADS_AXIS and size > 1 and batch % (batch_split * size) == 0:
      batch_axes.append(axis)
      batch_split *= size
  model_size = mesh.shape.get(SPLASH_HEADS_AXIS, 1)
  heads_axis = SPLASH_HEADS_AXIS if model_size > 1 and heads % model_size == 0 else None
  return PartitionSpec(tuple(batch_axes) or None, heads_axis), PartitionSpec()


def splash_dot_product_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  *,
  interpret: bool = False,
) -> jax.Array:
  """The attention core on jax's Pallas splash kernel, lengths padded to SPLASH_BLOCK.

  Shapes as `dot_product_attention` (no mask). query is scaled by 1/sqrt(head_dim) here (the
  kernel does not scale), in its dtype: exact for head dims that are powers of 4 (ViT-B's 64:
  1/8), one rounding of q otherwise. Padded keys get segment id 1, everything else 0, so no
  query attends to them; padded query rows attend the real keys and are sliced away, so nothing
  flows back through them. The kernel takes one example, (heads, length, head_dim): vmapped
  over the batch. Under a mesh in context (several devices; `kernel_shardable`) it runs in
  shard_map, the batch split over the data-parallel axes and the heads over the model axis
  (`_splash_partition_specs`): jax cannot partition a Pallas TPU kernel by itself.
  interpret: Pallas interpret mode (any platform; what CPUs run).
  """
  batch, q_length, heads, head_dim = query.shape
  kv_length = key.shape[1]
  q_pad, kv_pad = -q_length % SPLASH_BLOCK, -kv_length % SPLASH_BLOCK
  kernel = _splash_kernel(heads, q_length + q_pad, kv_length + kv_pad, interpret)
  segment_ids = splash_attention.SegmentIds(
    q=jnp.zeros((q_length + q_pad,), jnp.int32),
    kv=(jnp.arange(kv_length + kv_pad) >= kv_length).astype(jnp.int32),
  )

  def to_kernel(x: jax.Array, amount: int) -> jax.Array:
    # (batch, length, heads, head_dim) -> (batch, heads, length + amount, head_dim)
    return jnp.pad(x, ((0, 0), (0, amount), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

  def attend(q: jax.Array, k: jax.Array, v: jax.Array, ids: Any) -> jax.Array:
    return jax.vmap(lambda q, k, v: kernel(q, k, v, segment_ids=ids))(q, k, v)

  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty and mesh.size > 1:
    qkv_spec, ids_spec = _splash_partition_specs(mesh, batch, heads)
    attend = jax.shard_map(
      attend,
      mesh=mesh,
      in_specs=(qkv_spec, qkv_spec, qkv_spec, ids_spec),
      out_specs=qkv_spec,
      check_vma=False,
    )
  scale = jnp.asarray(1.0 / np.sqrt(head_dim), query.dtype)
  y = attend(
    to_kernel(query * scale, q_pad), to_kernel(key, kv_pad), to_kernel(value, kv_pad), segment_ids
  )
  # (batch, heads, q_length + q_pad, head_dim) -> (batch, q_length, heads, head_dim)
  return y.transpose(0, 2, 1, 3)[:, :q_length]


def dot_product_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  *,
  mask: jax.Array | None = None,
  dropout_rate: float = 0.0,
  dropout_rng: jax.Array | None = None,
  deterministic: bool = True,
  implementation: str = "auto",
) -> jax.Array:
  """The attention core: softmax(q k^T / sqrt(Dh)) v per head.

  query: (batch, q_length, heads, head_dim); key, value: (batch, kv_length, heads,
  head_dim); mask: optional boolean, broadcastable to (batch, heads, q_length, kv_length),
  True = may attend. Returns (batch, q_length, heads, head_dim). implementation:
  model.attention_implementation, resolved for this call by `choose_attention_implementation`
  on the default backend: 'xla' runs jax's XLA attention as is, 'cudnn' the padded flash
  kernel (`padded_dot_product_attention`), 'splash' the padded Pallas kernel
  (`splash_dot_product_attention`), compiled on a TPU and in interpret mode elsewhere (CPU).
  """
  use_dropout = not deterministic and dropout_rate > 0.0
  platform = current_platform()
  chosen = choose_attention_implementation(
    implementation,
    platform=platform,
    dtype=query.dtype,
    q_length=query.shape[1],
    kv_length=key.shape[1],
    head_dim=query.shape[-1],
    has_mask=mask is not None,
    dropout=use_dropout,
    shardable=kernel_shardable(),
  )
  if not use_dropout:
    if chosen == "splash":
      return splash_dot_product_attention(
        query, key, value, interpret=platform not in SPLASH_PLATFORMS
      )
    if chosen == "cudnn":
      return padded_dot_product_attention(query, key, value, mask=mask, implementation="cudnn")
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="xla")
  if dropout_rng is None:
    raise UserError("dot_product_attention: attention dropout needs a dropout_rng.")
  # Attention dropout acts on the weights, which the fused kernel never materialises, so
  # this path forms them.
  weights = attention_weights(query, key, mask)
  keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
  weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0).astype(value.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, value)


def attention_weights(query: jax.Array, key: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """softmax(q k^T / sqrt(Dh)) per head, float32 (batch, heads, q_length, kv_length).

  Shapes as `dot_product_attention`; logits and softmax in float32 as in the fused path.
  """
  scale = 1.0 / np.sqrt(query.shape[-1])
  logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32) * scale
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1)
