"""Float64 numpy references and tiny-model helpers shared by the model tests.

The references (`ref_*`) write the models' building blocks out in plain numpy float64, on one
clip's tokens, with explicit attention masks; the helpers build random parameters for tiny
models without compiling anything (jax.eval_shape and numpy random numbers) and cache the
jitted apply functions.

Imported as `import reference`: pytest.ini puts tests/ on the import path.
"""

import functools
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from vidtx.models import kernels, layers

# ----------------------------------------------------------------------------------------
# Parameters and models.
# ----------------------------------------------------------------------------------------


def num_params(tree):
  """The number of entries in all the arrays (or shape structs) of `tree`."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def init_shapes(model, video_shape):
  """Parameter shapes and dtypes of `model`, via jax.eval_shape: nothing is computed."""
  key = jax.random.key(0)
  return jax.eval_shape(
    lambda: model.init({"params": key, "dropout": key}, jnp.zeros(video_shape), train=False)
  )["params"]


def random_like(tree, seed=1, scale=0.3):
  """Random float32 arrays shaped like `tree` (numpy, so nothing is compiled), so that the zero
  initialisers take part in what the tests compare."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda x: jnp.asarray(scale * rng.standard_normal(x.shape), jnp.float32), tree
  )


def random_attention(x, num_heads=2, attention_fn=kernels.dot_product_attention, seed=2):
  """(module, random parameters) of a layers.MultiHeadAttention on tokens shaped like `x`."""
  mha = layers.MultiHeadAttention(num_heads=num_heads, attention_fn=attention_fn)
  shapes = jax.eval_shape(functools.partial(mha.init, deterministic=True), jax.random.key(0), x)
  return mha, random_like(shapes, seed=seed)


@functools.cache
def jitted_apply(model, train=False):
  return jax.jit(functools.partial(model.apply, train=train))


# ----------------------------------------------------------------------------------------
# Numpy float64 references.
# ----------------------------------------------------------------------------------------


def as_float64(tree):
  """`tree` as a plain (unfrozen) tree of float64 numpy arrays."""
  return jax.tree.map(lambda x: np.asarray(x, np.float64), flax.core.unfreeze(tree))


def ref_layer_norm(x, p):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def ref_attention(x, p, mask):
  """Softmax attention of tokens x (L, D); mask (L, L) or per head (H, L, L), True = attend."""
  q, k, v = (
    np.einsum("ld,dhc->lhc", x, p[n]["kernel"]) + p[n]["bias"] for n in ("query", "key", "value")
  )
  logits = np.einsum("qhc,khc->hqk", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(mask if mask.ndim == 3 else mask[None], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  y = np.einsum("hqk,khc->qhc", weights, v)
  return np.einsum("qhc,hcd->qd", y, p["out"]["kernel"]) + p["out"]["bias"]


def ref_mlp(x, p, approximate=False):
  """The transformer MLP: exact (erf) GELU as TimeSformer and X-ViT, or its tanh approximation
  (approximate=True) as ViViT."""
  h = x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
  if approximate:
    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
  else:
    h = 0.5 * h * (1 + special.erf(h / np.sqrt(2)))
  return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def ref_patches(video, p, t=1):
  """(T, H, W, C) -> (T/t, N, D) by flattening t x P x P tubes (raster order) and one matmul.

  p["kernel"] is (P, P, C, D) or (t, P, P, C, D).
  """
  kernel = p["kernel"].reshape((t,) + p["kernel"].shape[-4:])
  T, H, W, C = video.shape
  P = kernel.shape[1]
  x = video.reshape(T // t, t, H // P, P, W // P, P, C).transpose(0, 2, 4, 1, 3, 5, 6)
  x = x.reshape(T // t, (H // P) * (W // P), t * P * P * C)
  return x @ kernel.reshape(-1, kernel.shape[-1]) + p["bias"]
