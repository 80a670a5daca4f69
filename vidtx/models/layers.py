"""The layers the video transformers are built of, with ViT's parameter names and initialisers.

- `MultiHeadAttention` (and its `OutProjection`): multi-head self-attention on arranged tokens
  (batch, length, D) around the attention core (kernels.dot_product_attention).
- `gelu` (erf form; `gelu_with_erfc` traces the erfc form for TensorFlow export), `MlpBlock`,
  `DropPath` (stochastic depth), `regularise_branch`.
- `attention_module`, `mlp_module`, `layer_norm`: those layers built from a model's config, the
  one place the config's fields reach them.
- `AddPositionEmbedding`, `class_token`, `classification_head`: embeddings and the head.

Initialisers follow ViT (vit_jax): xavier_uniform kernels, normal(1e-6) MLP biases,
normal(0.02) position embeddings, zero class token and zero head.

Logical axes (vidtx.sharding): every parameter names what its dimensions mean where it is defined
(`logical`, nn.with_logical_partitioning: query kernels ('embed', 'heads', 'kv'), ...), and the
activations at block boundaries and inside attention are pinned with `constrain`
(nn.with_logical_constraint: tokens ('batch', 'length', 'embed')). config.mesh.rules maps the
names to mesh axes. The names never reach the parameters' tree: `init` returns plain arrays, and
only `boxed_init` gives the boxed tree that vidtx.models.param_logical_axes reads. Without rules
in context (one device, the converters) the constraints do nothing.
"""

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidtx.errors import UserError
from vidtx.models import hparams, kernels

KERNEL_INIT = nn.initializers.xavier_uniform()
MLP_BIAS_INIT = nn.initializers.normal(stddev=1e-6)
POSEMB_INIT = nn.initializers.normal(stddev=0.02)

# Logical axes (vidtx.sharding.LOGICAL_AXES), spelled once.
BATCH, LENGTH, EMBED, MLP, HEADS, KV = "batch", "length", "embed", "mlp", "heads", "kv"
LogicalAxes = tuple[str | None, ...]


_BOXED = contextvars.ContextVar("logical_axes_boxed", default=False)


def logical(init: Callable[..., jax.Array], *axes: str | None) -> Callable[..., Any]:
  """`init` of a parameter whose dimensions are the logical `axes`.

  Within `boxed_init` the parameter comes out boxed with its axes (nn.with_logical_partitioning,
  nn.LogicallyPartitioned); everywhere else (init, apply's shape checks) as the plain array, so
  the parameters' tree, and every consumer of it (checkpoints, converters, export, surgery),
  never sees the boxes.
  """
  boxed = nn.with_logical_partitioning(init, axes)

  def init_fn(*args: Any, **kwargs: Any) -> Any:
    return boxed(*args, **kwargs) if _BOXED.get() else init(*args, **kwargs)

  return init_fn


def boxed_init(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
  """module.init(*args, **kwargs) with the parameters boxed with their logical axes (scanned
  stacks with a leading 'layers' axis). Call it under jax.eval_shape: only the names matter."""
  token = _BOXED.set(True)
  try:
    return module.init(*args, **kwargs)
  finally:
    _BOXED.reset(token)


def constrain(x: jax.Array, *axes: str | None) -> jax.Array:
  """x pinned to the logical `axes` under config.mesh.rules (nn.logical_axis_rules and a mesh
  in context, as in the training step); unchanged otherwise. A dimension its mesh axes do not
  divide is left to the compiler, as parameters keep such a dimension whole (a Ti model's 3
  heads on a 2-way 'model' axis): pinning it would pad it."""
  rules, mesh = nn.get_logical_axis_rules(), jax.sharding.get_abstract_mesh()
  if not rules or mesh.empty:
    return x
  mesh_axes = nn.logical_to_mesh_axes(axes, rules)
  dividing = []
  for name, dim, mapped in zip(axes, x.shape, mesh_axes, strict=True):
    mapped = () if mapped is None else (mapped,) if isinstance(mapped, str) else tuple(mapped)
    ways = int(np.prod([mesh.shape[a] for a in mapped]))
    dividing.append(name if dim % ways == 0 else None)
  return nn.with_logical_constraint(x, tuple(dividing))


def token_axes(ndim: int) -> LogicalAxes:
  """Logical axes of tokens (B, ..., L, D): batch, length, embed; the middle axes of
  (B, T, N, D) layouts (time) are left to the compiler."""
  return (BATCH,) + (None,) * (ndim - 3) + (LENGTH, EMBED)


def constrain_tokens(x: jax.Array) -> jax.Array:
  """Tokens (B, ..., L, D) pinned to token_axes: the batch split over the data-parallel axes,
  each example's tokens and channels whole on its device."""
  return constrain(x, *token_axes(x.ndim))


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
  attention_fn: Callable[..., jax.Array] = kernels.dot_product_attention
  implementation: str = "auto"  # model.attention_implementation; see kernels.dot_product_attention.
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
      raise UserError(
        f"MultiHeadAttention: {features} channels are not divisible by {self.num_heads} heads."
      )
    projection = functools.partial(
      nn.DenseGeneral,
      features=(self.num_heads, features // self.num_heads),
      axis=-1,
      dtype=self.dtype,
      kernel_init=logical(KERNEL_INIT, EMBED, HEADS, KV),
      bias_init=logical(nn.initializers.zeros, HEADS, KV),
    )
    # Tokens (batch, length, D), or (B, T, N, D) for patterns that regroup heads (ViViT Model 4).
    head_axes = token_axes(x.ndim)[:-1] + (HEADS, KV)
    x = constrain(x, *token_axes(x.ndim))
    # (batch, length, D) -> (batch, length, heads, head_dim)
    query = constrain(projection(name="query")(x), *head_axes)
    key = constrain(projection(name="key")(x), *head_axes)
    value = constrain(projection(name="value")(x), *head_axes)
    if self.attention_fn is kernels.dot_product_attention and self.is_mutable_collection(
      "intermediates"
    ):
      self.sow("intermediates", "attention_weights", kernels.attention_weights(query, key, mask))
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
    y = constrain(y, *head_axes)
    # (..., heads, head_dim) -> (..., D), or (..., D') with `then` folded in.
    y = OutProjection(features, dtype=self.dtype, kernel_init=self.out_kernel_init, name="out")(
      y, then=then
    )
    return constrain(y, *token_axes(x.ndim))


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

    kernel = self.param(
      "kernel", logical(init_kernel, HEADS, KV, EMBED), (heads, head_dim, self.features)
    )
    bias = self.param("bias", logical(nn.initializers.zeros, EMBED), (self.features,))
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
# GELU, MLP, stochastic depth, and the layers built from a model's config.
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
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    hidden_axes = token_axes(x.ndim)[:-1] + (MLP,)
    y = dense(
      self.mlp_dim,
      kernel_init=logical(KERNEL_INIT, EMBED, MLP),
      bias_init=logical(MLP_BIAS_INIT, MLP),
      name="Dense_0",
    )(constrain_tokens(x))
    y = constrain(gelu(y, approximate=self.gelu_approximate), *hidden_axes)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    y = dense(
      x.shape[-1],
      kernel_init=logical(KERNEL_INIT, MLP, EMBED),
      bias_init=logical(MLP_BIAS_INIT, EMBED),
      name="Dense_1",
    )(y)
    return constrain_tokens(nn.Dropout(self.dropout_rate)(y, deterministic=deterministic))


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
  config: hparams.ModelConfig,
  name: str,
  *,
  attention_fn: Callable[..., jax.Array] = kernels.dot_product_attention,
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


def mlp_module(config: hparams.ModelConfig, name: str = "mlp") -> MlpBlock:
  """The MLP of a model's blocks (call inside a compact method)."""
  return MlpBlock(
    mlp_dim=config.mlp_dim,
    dropout_rate=config.dropout_rate,
    gelu_approximate=config.gelu_approximate,
    dtype=jnp.dtype(config.dtype),
    name=name,
  )


def layer_norm(config: hparams.ModelConfig, name: str) -> nn.LayerNorm:
  """LayerNorm (eps model.layer_norm_epsilon); statistics are taken in float32."""
  return nn.LayerNorm(
    epsilon=config.layer_norm_epsilon,
    dtype=jnp.dtype(config.dtype),
    scale_init=logical(nn.initializers.ones, EMBED),
    bias_init=logical(nn.initializers.zeros, EMBED),
    name=name,
  )


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
    embedding = self.param(
      "embedding", logical(self.embedding_init, None, EMBED), (x.shape[axis], x.shape[-1])
    )
    # (L, D) -> (1, .., L, .., D), broadcastable against the tokens.
    shape = [1] * x.ndim
    shape[axis], shape[-1] = x.shape[axis], x.shape[-1]
    return x + embedding.reshape(shape).astype(x.dtype)


def class_token(module: nn.Module, name: str, hidden_size: int) -> jax.Array:
  """A zero-initialised (1, 1, D) class token parameter of `module` (vit_jax layout)."""
  return module.param(name, logical(nn.initializers.zeros, None, None, EMBED), (1, 1, hidden_size))


def classification_head(pre_logits: jax.Array, num_classes: int) -> jax.Array:
  """Zero-initialised linear head, in float32 whatever the compute dtype."""
  return nn.Dense(
    num_classes,
    dtype=jnp.float32,
    kernel_init=logical(nn.initializers.zeros, EMBED, None),
    bias_init=logical(nn.initializers.zeros, None),
    name="head",
  )(pre_logits.astype(jnp.float32))
