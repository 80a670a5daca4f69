"""Pieces shared by the video transformers.

- `parse_variant`, `ModelConfig`, `make_config`: sizes from a variant string, validated once.
- `dot_product_attention`: THE attention core; every attention in vidtx goes through it. Its
  kernel is `model.attention_implementation` ('auto' | 'xla' | 'cudnn'), resolved per call by
  `choose_attention_implementation`; cuDNN's flash kernel runs on lengths padded to a multiple
  of 64 and masked by sequence lengths (`padded_dot_product_attention`).
- `MultiHeadAttention`, `MlpBlock`, `DropPath`, `EncoderBlock`, `Encoder`: a pre-LN ViT
  encoder whose attention pattern (see attention.py) is a parameter.
- `stack_blocks`: THE loop over a stack of identical blocks, used by every model, which applies
  the two memory/compile-time options of the config:
  - `model.remat_policy` ('none' | 'full' | 'dots' | 'dots_no_batch', see REMAT_POLICIES):
    rematerialise each block in the backward pass; trades extra compute (about 30% more for
    'full') for activation memory (long clips, large models).
  - `model.scan_layers`: run the blocks of a stack under `nn.scan`, so XLA compiles one block
    instead of L (faster compiles for L/H models, same maths). The stack's parameters then live
    under one name `encoderblocks` with a leading layer axis instead of `encoderblock_{i}`;
    vidtx.checkpoints.scan converts between the two layouts.
- `AddPositionEmbedding`: learned embedding added along one token axis.

Initialisers follow ViT (vit_jax): xavier_uniform kernels, normal(1e-6) MLP biases,
normal(0.02) position embeddings, zero class token and zero head.
"""

import contextlib
import contextvars
import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.extend.backend  # `import jax` leaves jax.extend out.
import jax.numpy as jnp
import ml_collections
import numpy as np
from ml_collections import config_dict

from vidtx.models import attention

KERNEL_INIT = nn.initializers.xavier_uniform()
MLP_BIAS_INIT = nn.initializers.normal(stddev=1e-6)
POSEMB_INIT = nn.initializers.normal(stddev=0.02)

# ViT sizes: hidden size, depth, heads, MLP width (ViT paper Table 1; Ti and S from DeiT).
VIT_SIZES = {
  "Ti": dict(hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768),
  "S": dict(hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
  "B": dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
  "L": dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
  "H": dict(hidden_size=1280, num_layers=32, num_heads=16, mlp_dim=5120),
}

_VARIANT_RE = re.compile(r"^(?P<size>[A-Za-z]+)/(?P<patch>\d+)(?:x(?P<tubelet>\d+))?$")


def parse_variant(variant: str) -> dict[str, int]:
  """'B/16x2' -> ViT-Base sizes, 16x16 patches, tubelet length 2 ('B/16' = length 1)."""
  match = _VARIANT_RE.match(variant) if isinstance(variant, str) else None
  if match is None or match["size"] not in VIT_SIZES:
    raise ValueError(
      f'model.variant={variant!r}: expected "<size>/<patch>[x<tubelet>]" with size in '
      f'{list(VIT_SIZES)}, e.g. "B/16" or "B/16x2".'
    )
  patch_size = int(match["patch"])
  tubelet_size = int(match["tubelet"] or 1)
  if patch_size < 1 or tubelet_size < 1:
    raise ValueError(f"model.variant={variant!r}: patch and tubelet sizes must be >= 1.")
  return dict(VIT_SIZES[match["size"]], patch_size=patch_size, tubelet_size=tubelet_size)


# ----------------------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------------------


def base_config() -> ml_collections.ConfigDict:
  """The fields every model has, with their defaults (the models add their own)."""
  return ml_collections.ConfigDict(
    dict(
      variant="B/16",
      # None: take the value from the variant. Typed placeholders, so that the command line can
      # set them (--config.model.hidden_size=384): a plain None field has no type to parse to.
      hidden_size=config_dict.placeholder(int),
      num_layers=config_dict.placeholder(int),
      num_heads=config_dict.placeholder(int),
      mlp_dim=config_dict.placeholder(int),
      attention="",  # Each model sets its own default and list of patterns.
      classifier="token",  # 'token': class token; 'gap': average of the tokens.
      dropout_rate=0.0,
      attention_dropout_rate=0.0,
      # Drop-path rate of the last layer; rises linearly from 0 at the first layer.
      stochastic_depth=0.0,
      gelu_approximate=False,  # False: exact erf GELU; True: tanh approximation.
      # ViT, TimeSformer, scenic and timm use 1e-6; Hugging Face ViT folders record 1e-12.
      layer_norm_epsilon=1e-6,
      dtype="float32",  # Compute dtype; parameters are always float32.
      # Recompute each block in the backward pass instead of keeping its activations: 'none',
      # 'full' (keep nothing; ~30% more compute, least memory), 'dots' (keep matmul outputs),
      # 'dots_no_batch' (keep matmul outputs without batch dims). See REMAT_POLICIES.
      remat_policy="none",
      # True: run the identical blocks of each stack under nn.scan (XLA compiles one block
      # instead of L: fast compiles for L/H models); parameters stacked under `encoderblocks`.
      scan_layers=False,
      # Kernel of the attention core: 'auto' (cuDNN flash attention on NVIDIA GPUs for
      # bfloat16 where it pays, XLA elsewhere), 'xla' or 'cudnn' (forced; an error where it
      # cannot run). See choose_attention_implementation.
      attention_implementation="auto",
    )
  )


# model.remat_policy -> what a rematerialised block keeps for the backward pass (None: no remat).
REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.dots_saveable,
  "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Validated model hyper-parameters, sizes resolved from the variant."""

  variant: str
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  patch_size: int
  tubelet_size: int
  attention: str
  classifier: str
  dropout_rate: float
  attention_dropout_rate: float
  stochastic_depth: float
  gelu_approximate: bool
  layer_norm_epsilon: float
  dtype: str
  remat_policy: str
  scan_layers: bool
  attention_implementation: str


def make_config(
  config_cls: type,
  defaults: ml_collections.ConfigDict,
  overrides: ml_collections.ConfigDict | Mapping[str, Any],
  *,
  model_name: str,
  attentions: Iterable[str],
) -> Any:
  """Merges `overrides` into `defaults`, validates the common fields, returns config_cls.

  Model-specific fields are copied through; their model checks them.
  """
  if isinstance(overrides, ml_collections.ConfigDict):
    overrides = overrides.to_dict()
  fields = defaults.to_dict()
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(
      f"{model_name} model config: unknown field(s) {unknown}; known fields: {sorted(fields)}."
    )
  fields.update(overrides)

  sizes = parse_variant(fields["variant"])
  for key in ("hidden_size", "num_layers", "num_heads", "mlp_dim"):
    if fields[key] is None:
      fields[key] = sizes[key]
    if not is_int(fields[key]) or fields[key] < 1:
      raise ValueError(f"model.{key}={fields[key]!r}: expected a positive integer.")
  fields["patch_size"] = sizes["patch_size"]
  fields["tubelet_size"] = sizes["tubelet_size"]
  if fields["hidden_size"] % fields["num_heads"]:
    raise ValueError(
      f"model.hidden_size={fields['hidden_size']} is not divisible by "
      f"model.num_heads={fields['num_heads']}."
    )

  attentions = list(attentions)
  if fields["attention"] not in attentions:
    raise ValueError(
      f"model.attention={fields['attention']!r} is not a {model_name} "
      f"attention; expected one of {attentions}."
    )
  if fields["classifier"] not in ("token", "gap"):
    raise ValueError(f'model.classifier={fields["classifier"]!r}: expected "token" or "gap".')
  for key in ("dropout_rate", "attention_dropout_rate", "stochastic_depth"):
    rate = fields[key]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
      raise ValueError(f"model.{key}={rate!r}: expected a number in [0, 1).")
    fields[key] = float(rate)
  if not isinstance(fields["gelu_approximate"], bool):
    raise ValueError(
      f"model.gelu_approximate={fields['gelu_approximate']!r}: expected True or False."
    )
  eps = fields["layer_norm_epsilon"]
  if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1e-2:
    raise ValueError(f"model.layer_norm_epsilon={eps!r}: expected a small positive number.")
  fields["layer_norm_epsilon"] = float(eps)
  if fields["dtype"] not in ("float32", "bfloat16"):
    raise ValueError(f'model.dtype={fields["dtype"]!r}: expected "float32" or "bfloat16".')
  if not isinstance(fields["remat_policy"], str) or fields["remat_policy"] not in REMAT_POLICIES:
    raise ValueError(
      f"model.remat_policy={fields['remat_policy']!r}: expected one of {list(REMAT_POLICIES)}."
    )
  if not isinstance(fields["scan_layers"], bool):
    raise ValueError(f"model.scan_layers={fields['scan_layers']!r}: expected True or False.")
  check_attention_implementation(fields["attention_implementation"])
  return config_cls(**fields)


def is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def drop_path_rates(rate: float, num_layers: int) -> list[float]:
  """Per-layer drop-path rates rising linearly from 0 at the first layer to `rate` at the last.

  Linear in depth as ViViT Eq. 10; indexed from 0 as in the official TimeSformer and scenic.
  """
  return [rate * i / max(num_layers - 1, 1) for i in range(num_layers)]


# ----------------------------------------------------------------------------------------
# Attention.
# ----------------------------------------------------------------------------------------


# model.attention_implementation: the kernel of the attention core.
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")
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


def check_attention_implementation(value: Any) -> str:
  """Raises ValueError unless `value` is one of ATTENTION_IMPLEMENTATIONS; returns it."""
  if not isinstance(value, str) or value not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(
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
) -> str:
  """The kernel of one attention call, 'xla' or 'cudnn'; pure (the caller names the platform).

  requested: model.attention_implementation. dtype: that of query/key/value. has_mask: an
  explicit mask is given. dropout: attention dropout is applied (training, rate > 0).

  - 'xla': 'xla'.
  - 'auto': 'cudnn' where all hold: an NVIDIA GPU (platform 'gpu' or 'cuda'); bfloat16 or
    float16; head_dim a multiple of 8 and at most 128; both lengths >= CUDNN_MIN_LENGTH; no
    explicit mask; no attention dropout. 'xla' otherwise.
  - 'cudnn': 'cudnn' at any length; ValueError naming the field where cuDNN cannot run (not an
    NVIDIA GPU, another dtype, head_dim, attention dropout).

  Calls with attention dropout never take the fused kernel: dropout acts on the attention
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
      problem = (
        "cannot apply attention dropout (model.attention_dropout_rate > 0 in training): it "
        "acts on the attention weights, which the fused kernel never forms"
      )
    if problem:
      raise ValueError(
        f"model.attention_implementation='cudnn': cuDNN flash attention {problem}; "
        "use 'auto' or 'xla'."
      )
    return "xla" if has_mask else "cudnn"
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
  kernel (`padded_dot_product_attention`).
  """
  use_dropout = not deterministic and dropout_rate > 0.0
  chosen = choose_attention_implementation(
    implementation,
    platform=current_platform(),
    dtype=query.dtype,
    q_length=query.shape[1],
    kv_length=key.shape[1],
    head_dim=query.shape[-1],
    has_mask=mask is not None,
    dropout=use_dropout,
  )
  if not use_dropout:
    if chosen == "cudnn":
      return padded_dot_product_attention(query, key, value, mask=mask, implementation="cudnn")
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="xla")
  if dropout_rng is None:
    raise ValueError("dot_product_attention: attention dropout needs a dropout_rng.")
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


class MultiHeadAttention(nn.Module):
  """Multi-head self-attention on already-arranged tokens (batch, length, D).

  Kernels are laid out as in vit_jax: query/key/value [D, heads, head_dim], out
  [heads, head_dim, D], so ViT checkpoints load without reshaping. `attention_fn` is the
  core by default; patterns that regroup heads (e.g. ViViT Model 4) wrap it.

  Attention maps on request: with `apply(..., mutable=["intermediates"])` the module sows its
  weights, float32 (batch, heads, length, length), as intermediates `attention_weights`
  (vidtx.rollout reads them). They are formed only then, as the fused core never materialises
  them, and only for the plain core: a wrapped `attention_fn` mixes keys in its own way.

  `attention_fn` is called as the core is, with `implementation` (model.attention_implementation)
  among its keywords; a wrapper passes it on to the core.
  """

  num_heads: int
  dropout_rate: float = 0.0  # Attention dropout (on the attention weights).
  dtype: Any = jnp.float32
  attention_fn: Callable[..., jax.Array] = dot_product_attention
  implementation: str = "auto"  # model.attention_implementation; see dot_product_attention.
  out_kernel_init: Callable[..., jax.Array] = KERNEL_INIT  # Zeros: the branch starts switched off.

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    *,
    deterministic: bool,
    mask: jax.Array | None = None,
    then: jax.Array | None = None,
  ) -> jax.Array:
    """x: (batch, length, D) -> (batch, length, D).

    then: a (D, D') kernel of a linear map that follows this module (TimeSformer's temporal_fc),
    folded into the out projection: returns y (W_out then) + b_out then, (batch, length, D'),
    without forming y W_out + b_out (one (length x D x D) matmul fewer per token forward and two
    backward, for a (D x D x D) product).
    """
    features = x.shape[-1]
    if features % self.num_heads:
      raise ValueError(
        f"MultiHeadAttention: {features} channels are not divisible by {self.num_heads} heads."
      )
    projection = functools.partial(
      nn.DenseGeneral,
      features=(self.num_heads, features // self.num_heads),
      axis=-1,
      dtype=self.dtype,
      kernel_init=KERNEL_INIT,
    )
    # (batch, length, D) -> (batch, length, heads, head_dim)
    query = projection(name="query")(x)
    key = projection(name="key")(x)
    value = projection(name="value")(x)
    if self.attention_fn is dot_product_attention and self.is_mutable_collection("intermediates"):
      self.sow("intermediates", "attention_weights", attention_weights(query, key, mask))
    use_dropout = not deterministic and self.dropout_rate > 0.0
    y = self.attention_fn(
      query,
      key,
      value,
      mask=mask,
      dropout_rate=self.dropout_rate,
      dropout_rng=self.make_rng("dropout") if use_dropout else None,
      deterministic=deterministic,
      implementation=self.implementation,
    )
    # (..., heads, head_dim) -> (..., D), or (..., D') with `then` folded in.
    return OutProjection(features, dtype=self.dtype, kernel_init=self.out_kernel_init, name="out")(
      y, then=then
    )


class OutProjection(nn.Module):
  """The attention's out projection (..., heads, head_dim) -> (..., D): nn.DenseGeneral over the
  last two axes, with its parameters (kernel (heads, head_dim, D), bias (D,)) and initialisation,
  that can fold a following linear map `then` (D, D') into its kernel and bias."""

  features: int
  dtype: Any = jnp.float32
  kernel_init: Callable[..., jax.Array] = KERNEL_INIT

  @nn.compact
  def __call__(self, y: jax.Array, then: jax.Array | None = None) -> jax.Array:
    heads, head_dim = y.shape[-2:]

    def init_kernel(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
      # As DenseGeneral: initialised as the flat (heads * head_dim, D) matrix, then reshaped.
      return self.kernel_init(rng, (heads * head_dim, self.features), jnp.float32).reshape(shape)

    kernel = self.param("kernel", init_kernel, (heads, head_dim, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if then is not None:
      # Products of the float32 parameters: (heads, head_dim, D) x (D, D') -> (heads, head_dim, D').
      kernel = jnp.einsum("hcd,de->hce", kernel, then.astype(jnp.float32))
      bias = bias @ then.astype(jnp.float32)
    y = jnp.einsum("...hc,hcd->...d", y.astype(self.dtype), kernel.astype(self.dtype))
    return y + add_axes(bias.astype(self.dtype), y.ndim)


def add_axes(vector: jax.Array, ndim: int) -> jax.Array:
  """(D,) -> (1, ..., 1, D) of rank `ndim`, to add along the last axis (vidtx keeps rank
  promotion explicit)."""
  return vector.reshape((1,) * (ndim - 1) + vector.shape)


# ----------------------------------------------------------------------------------------
# Encoder.
# ----------------------------------------------------------------------------------------


def gelu(x: jax.Array, approximate: bool = False) -> jax.Array:
  """GELU: exact x * Phi(x) = x * 0.5 * (1 + erf(x / sqrt(2))), or the tanh approximation.

  The exact form is computed with erf as PyTorch computes it (Hugging Face, official
  TimeSformer), not with jax.nn.gelu's erfc: both are exact to float32 rounding, but XLA's CPU
  erfc (a piecewise rational with an exp) and its gradient took about 5% of a TimeSformer
  training step's CPU time, erf (one polynomial) about a third of that. Within
  `gelu_with_erfc()` the erfc form is traced instead (see there).
  """
  if approximate:
    return nn.gelu(x, approximate=True)
  if _GELU_WITH_ERFC.get():
    return x * 0.5 * jax.lax.erfc(x * np.asarray(-np.sqrt(0.5), x.dtype))
  return x * 0.5 * (1.0 + jax.lax.erf(x * np.asarray(np.sqrt(0.5), x.dtype)))


_GELU_WITH_ERFC = contextvars.ContextVar("gelu_with_erfc", default=False)


@contextlib.contextmanager
def gelu_with_erfc() -> Iterator[None]:
  """Models traced within compute the exact GELU with erfc rather than erf: the same function,
  for consumers of serialized StableHLO that cannot read erf (jax serializes it as a composite
  op that TensorFlow 2.21's XlaCallModule does not know; vidtx.checkpoints.export_tf). Only
  traces made within take it: a jitted function traced before keeps its cached program."""
  token = _GELU_WITH_ERFC.set(True)
  try:
    yield
  finally:
    _GELU_WITH_ERFC.reset(token)


class MlpBlock(nn.Module):
  """Dense -> GELU -> dropout -> Dense -> dropout, on the last axis."""

  mlp_dim: int
  dropout_rate: float = 0.0
  gelu_approximate: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    dense = functools.partial(
      nn.Dense, dtype=self.dtype, kernel_init=KERNEL_INIT, bias_init=MLP_BIAS_INIT
    )
    y = dense(self.mlp_dim, name="Dense_0")(x)
    y = gelu(y, approximate=self.gelu_approximate)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    y = dense(x.shape[-1], name="Dense_1")(y)
    return nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)


class DropPath(nn.Module):
  """Stochastic depth: drops a residual branch for whole examples (axis 0).

  Kept branches are scaled by 1 / (1 - rate), as in timm and the official TimeSformer,
  so evaluation needs no rescaling. `rate` is a Python float, or a scalar array where the rate
  is a traced input (blocks under nn.scan get their layer's rate that way).
  """

  rate: float | jax.Array

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    is_python = isinstance(self.rate, (int, float))
    if deterministic or (is_python and self.rate == 0.0):
      return x
    keep_prob = 1.0 - self.rate
    keep = jax.random.bernoulli(
      self.make_rng("dropout"), keep_prob, (x.shape[0],) + (1,) * (x.ndim - 1)
    )
    if not is_python:
      # Divide in x's dtype, as the weakly typed Python float does.
      keep_prob = keep_prob.astype(x.dtype)
    return jnp.where(keep, x / keep_prob, 0.0).astype(x.dtype)


def regularise_branch(
  y: jax.Array, *, dropout_rate: float, drop_path_rate: float | jax.Array, deterministic: bool
) -> jax.Array:
  """Dropout then stochastic depth on a residual branch (call inside a compact method)."""
  y = nn.Dropout(dropout_rate)(y, deterministic=deterministic)
  return DropPath(drop_path_rate)(y, deterministic=deterministic)


def attention_module(
  config: ModelConfig,
  name: str,
  *,
  attention_fn: Callable[..., jax.Array] = dot_product_attention,
  out_kernel_init: Callable[..., jax.Array] = KERNEL_INIT,
) -> MultiHeadAttention:
  """The multi-head attention of a model (call inside a compact method).

  Every model builds its attentions here, so model.attention_implementation reaches the core
  of each, wrapped `attention_fn`s included.
  """
  return MultiHeadAttention(
    num_heads=config.num_heads,
    dropout_rate=config.attention_dropout_rate,
    dtype=jnp.dtype(config.dtype),
    attention_fn=attention_fn,
    implementation=config.attention_implementation,
    out_kernel_init=out_kernel_init,
    name=name,
  )


def mlp_module(config: ModelConfig, name: str = "mlp") -> MlpBlock:
  """The MLP of a model's blocks (call inside a compact method)."""
  return MlpBlock(
    mlp_dim=config.mlp_dim,
    dropout_rate=config.dropout_rate,
    gelu_approximate=config.gelu_approximate,
    dtype=jnp.dtype(config.dtype),
    name=name,
  )


def layer_norm(config: ModelConfig, name: str) -> nn.LayerNorm:
  """LayerNorm (eps model.layer_norm_epsilon); statistics are taken in float32."""
  return nn.LayerNorm(epsilon=config.layer_norm_epsilon, dtype=jnp.dtype(config.dtype), name=name)


def stack_blocks(
  block: type[nn.Module],
  carry: Any,
  *,
  config: ModelConfig,
  num_layers: int,
  deterministic: bool,
  **fields: Any,
) -> Any:
  """`num_layers` blocks `block(config=config, **fields)` one after the other on `carry`.

  Call inside a compact method; the blocks become its children. Every block follows one
  protocol: `carry = block(carry, drop_path_rate, deterministic)`, all positional (remat makes
  Python arguments static by position). `carry` is any pytree: tokens x, or TimeSformer's
  (x, cls) with cls possibly None. Layer i's drop-path rate is
  drop_path_rates(config.stochastic_depth, num_layers)[i].

  - config.scan_layers False: children `encoderblock_0` .. `encoderblock_{L-1}`; the rates are
    Python floats.
  - config.scan_layers True: one child `encoderblocks` run under nn.scan; its parameters (and
    sown intermediates, e.g. attention maps) have a leading axis of length L, the 'params' and
    'dropout' rngs are split per layer. The rates are a scanned (L,) array input; without
    stochastic depth a broadcast Python 0.0, so that no layer asks for a 'dropout' rng for it.
  - config.remat_policy other than 'none': each block is wrapped in nn.remat with the policy of
    REMAT_POLICIES.
  """
  rates = drop_path_rates(config.stochastic_depth, num_layers)
  # Traced rates only where they must be: scanned layers with stochastic depth.
  traced_rates = config.scan_layers and config.stochastic_depth > 0
  if config.remat_policy != "none":
    block = nn.remat(
      block,
      policy=REMAT_POLICIES[config.remat_policy],
      # Inside scan the loop already keeps XLA from merging the recomputation away.
      prevent_cse=not config.scan_layers,
      # Positions count self: 1 carry, 2 drop_path_rate, 3 deterministic.
      static_argnums=(3,) if traced_rates else (2, 3),
    )
  if not config.scan_layers:
    for i, rate in enumerate(rates):
      carry = block(config=config, **fields, name=f"encoderblock_{i}")(carry, rate, deterministic)
    return carry

  def body(module: nn.Module, carry: Any, rate: jax.Array | float) -> tuple[Any, None]:
    return module(carry, rate, deterministic), None

  scan = nn.scan(
    body,
    variable_axes={"params": 0, "intermediates": 0},
    split_rngs={"params": True, "dropout": True},
    in_axes=0 if traced_rates else nn.broadcast,
    length=num_layers,
  )
  # (L,) rates, one per scan step.
  scanned = jnp.asarray(rates, jnp.float32) if traced_rates else 0.0
  carry, _ = scan(block(config=config, **fields, name="encoderblocks"), carry, scanned)
  return carry


class EncoderBlock(nn.Module):
  """Pre-LN transformer block; `pattern` (attention.py) decides who attends to whom.

  x = x + DropPath(Dropout(pattern(Attention, LN(x)))); x = x + DropPath(MLP(LN(x))).
  Tokens may have any layout the pattern accepts, e.g. (B, L, D) or (B, T, N, D).
  Called as `stack_blocks` calls blocks: block(x, drop_path_rate, deterministic).
  """

  config: ModelConfig
  pattern: Callable[..., jax.Array] = attention.joint_attention

  @nn.compact
  def __call__(
    self, x: jax.Array, drop_path_rate: float | jax.Array, deterministic: bool
  ) -> jax.Array:
    config = self.config
    regularise = functools.partial(
      regularise_branch,
      dropout_rate=config.dropout_rate,
      drop_path_rate=drop_path_rate,
      deterministic=deterministic,
    )
    attend = functools.partial(attention_module(config, "attention"), deterministic=deterministic)
    y = self.pattern(attend, layer_norm(config, "norm_attention")(x))
    x = x + regularise(y)
    y = mlp_module(config)(layer_norm(config, "norm_mlp")(x), deterministic=deterministic)
    return x + DropPath(drop_path_rate)(y, deterministic=deterministic)


class Encoder(nn.Module):
  """`num_layers` EncoderBlocks with linearly rising stochastic depth, then LayerNorm."""

  config: ModelConfig
  num_layers: int
  pattern: Callable[..., jax.Array] = attention.joint_attention

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    x = stack_blocks(
      EncoderBlock,
      x,
      config=self.config,
      num_layers=self.num_layers,
      deterministic=deterministic,
      pattern=self.pattern,
    )
    return layer_norm(self.config, "encoder_norm")(x)


# ----------------------------------------------------------------------------------------
# Embeddings and heads.
# ----------------------------------------------------------------------------------------


class AddPositionEmbedding(nn.Module):
  """Adds a learned embedding of shape (tokens[axis], D) along `axis` of the tokens.

  axis=-2 on (B, T, N, D) gives a spatial embedding shared by all frames; axis=1 gives a
  temporal embedding shared by all spatial positions; on (B, L, D) it is the usual 1D one.
  """

  axis: int = -2
  embedding_init: Callable[..., jax.Array] = POSEMB_INIT

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    axis = self.axis % x.ndim
    if axis in (0, x.ndim - 1):
      raise ValueError(
        f"AddPositionEmbedding: axis {self.axis} of tokens {x.shape} is the batch or channel axis."
      )
    embedding = self.param("embedding", self.embedding_init, (x.shape[axis], x.shape[-1]))
    # (L, D) -> (1, .., L, .., D), broadcastable against the tokens.
    shape = [1] * x.ndim
    shape[axis], shape[-1] = x.shape[axis], x.shape[-1]
    return x + embedding.reshape(shape).astype(x.dtype)


def class_token(module: nn.Module, name: str, hidden_size: int) -> jax.Array:
  """A zero-initialised (1, 1, D) class token parameter of `module` (vit_jax layout)."""
  return module.param(name, nn.initializers.zeros, (1, 1, hidden_size))


def classification_head(pre_logits: jax.Array, num_classes: int) -> jax.Array:
  """Zero-initialised linear head, in float32 whatever the compute dtype."""
  return nn.Dense(num_classes, dtype=jnp.float32, kernel_init=nn.initializers.zeros, name="head")(
    pre_logits.astype(jnp.float32)
  )
