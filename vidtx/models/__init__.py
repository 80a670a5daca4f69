"""Video transformer models: `build(model_name, model_config, num_classes)`.

    model = vidtx.models.build('timesformer', config.model, num_classes=400)
    variables = model.init({'params': key, 'dropout': key}, video, train=False)
    logits, out = model.apply(variables, video, train=True, rngs={'dropout': key})

`video` is float (B, T, H, W, C); `logits` float32 (B, num_classes); `out` a dict of named
intermediates, at least 'pre_logits' (B, D). Attention maps on request:

    (logits, out), state = model.apply(variables, video, train=False, mutable=['intermediates'])

puts every attention's weights (batch, heads, L, L) in state['intermediates'] under the
module's path (…/attention_<stage>/attention_weights); vidtx.rollout turns them into rollout
heat maps. `default_config(model_name)` lists every model
field with its default; a config only needs to override what differs. Every parameter names its
logical axes where it is defined (vidtx.models.layers); `param_logical_axes` reads them, and
vidtx.sharding turns them into shardings by config.mesh.rules. `init` returns plain arrays.
"""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vidtx.errors import UserError
from vidtx.models import hparams, layers, timesformer, vivit, xvit


class _Model(NamedTuple):
  default_config: Callable[[], ml_collections.ConfigDict]
  make_config: Callable[[Any], Any]
  module: type[nn.Module]


# The one place models are selected by name.
MODELS = {
  "timesformer": _Model(
    timesformer.default_config, timesformer.make_config, timesformer.TimeSformer
  ),
  "vivit": _Model(vivit.default_config, vivit.make_config, vivit.ViViT),
  "xvit": _Model(xvit.default_config, xvit.make_config, xvit.XViT),
}


def _lookup(model_name: str) -> _Model:
  if model_name not in MODELS:
    raise UserError(f"model_name={model_name!r}: unknown model; expected one of {sorted(MODELS)}.")
  return MODELS[model_name]


def default_config(model_name: str) -> ml_collections.ConfigDict:
  """All fields of `model_name`'s config with their defaults."""
  return _lookup(model_name).default_config()


def build(
  model_name: str, model_config: ml_collections.ConfigDict | Mapping[str, Any], num_classes: int
) -> nn.Module:
  """Validates `model_config` (fields not given take their defaults) and builds the model."""
  entry = _lookup(model_name)
  if not hparams.is_int(num_classes) or num_classes < 1:
    raise UserError(f"num_classes={num_classes!r}: expected a positive integer.")
  return entry.module(config=entry.make_config(model_config), num_classes=num_classes)


def param_logical_axes(
  model: nn.Module, input_shape: tuple[int, ...]
) -> dict[str, tuple[str | None, ...] | None]:
  """Every parameter's logical axes, by its '/'-joined path under 'params'
  (encoder/encoderblock_0/attention/query/kernel -> ('embed', 'heads', 'kv')); None for a
  parameter that declares none. Shapes only: nothing is computed."""
  video = jax.ShapeDtypeStruct(input_shape, jnp.float32)
  boxed = jax.eval_shape(
    lambda v: layers.boxed_init(model, jax.random.key(0), v, train=False)["params"], video
  )
  is_box = lambda x: isinstance(x, nn.Partitioned)  # noqa: E731
  named = jax.tree_util.tree_leaves_with_path(boxed, is_leaf=is_box)
  return {
    jax.tree_util.keystr(path, simple=True, separator="/"): (
      tuple(leaf.names) if is_box(leaf) else None
    )
    for path, leaf in named
  }
