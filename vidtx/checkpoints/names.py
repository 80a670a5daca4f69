"""Source names -> vidtx names for the layers the peers share.

A `Keys` wraps a source's arrays: the mappers ask it for the names they expect; at the end
`Keys.finish()` raises one error listing every expected name that was missing and every source
name nobody asked for, so a mismatch shows in full rather than one name at a time.

The block mappers return a vidtx block (vidtx.models.encoder.EncoderBlock's names):
    {'norm_attention': LN, 'attention': {query, key, value, out}, 'norm_mlp': LN,
     'mlp': {'Dense_0', 'Dense_1'}}
and, for TimeSformer's divided blocks, 'norm_temporal', 'attention_temporal', 'temporal_fc'.
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from vidtx.checkpoints import surgery
from vidtx.errors import UserError

Tree = dict[str, Any]


class Keys:
  """The arrays of a source, handed out by name, with a record of what was asked for."""

  def __init__(self, tensors: Mapping[str, np.ndarray], where: str):
    self.tensors = dict(tensors)
    self.where = where
    self.used: set[str] = set()
    self.missing: list[str] = []

  def __contains__(self, name: str) -> bool:
    return name in self.tensors

  def get(self, name: str, optional: bool = False) -> np.ndarray | None:
    if name in self.tensors:
      self.used.add(name)
      return self.tensors[name]
    if not optional:
      self.missing.append(name)
    return None

  def shape(self, name: str) -> tuple[int, ...]:
    if name not in self.tensors:
      raise UserError(
        f"{self.where}: expected parameter {name!r} is missing; the checkpoint "
        f"has {_preview(self.tensors)}."
      )
    return tuple(self.tensors[name].shape)

  def count(self, pattern: str) -> int:
    """How many distinct integers fill the '(\\d+)' group of `pattern` (e.g. layer indices)."""
    indices = set()
    for name in self.tensors:
      match = re.match(pattern, name)
      if match:
        indices.add(int(match.group(1)))
    if indices and indices != set(range(len(indices))):
      raise UserError(
        f"{self.where}: layer indices {sorted(indices)} of {pattern!r} are not 0..N-1."
      )
    return len(indices)

  def ignore(self, patterns: Iterable[str]) -> None:
    """Marks source names matching any regex as used (dropped on purpose)."""
    for pattern in patterns:
      for name in self.tensors:
        if re.fullmatch(pattern, name):
          self.used.add(name)

  def finish(self) -> None:
    unknown = sorted(set(self.tensors) - self.used)
    if self.missing or unknown:
      lines = [f"missing: {name}" for name in self.missing]
      lines += [f"unknown: {name} {tuple(self.tensors[name].shape)}" for name in unknown]
      raise UserError(
        f"{self.where}: the checkpoint does not match the model inferred from it "
        f"({len(self.missing)} missing, {len(unknown)} unknown name(s)):\n  "
        + "\n  ".join(lines)
        + "\n(Pass --ignore REGEX to drop source names on purpose.)"
      )


def _preview(tensors: Mapping[str, Any], n: int = 8) -> str:
  names = sorted(tensors)
  return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _all(*values: Any) -> bool:
  return all(v is not None for v in values)


# ----------------------------------------------------------------------------------------
# Leaf layers.
# ----------------------------------------------------------------------------------------


def torch_layer_norm(keys: Keys, prefix: str) -> Tree | None:
  scale, bias = keys.get(prefix + ".weight"), keys.get(prefix + ".bias")
  return {"scale": scale, "bias": bias} if _all(scale, bias) else None


def torch_dense(keys: Keys, prefix: str) -> Tree | None:
  weight, bias = keys.get(prefix + ".weight"), keys.get(prefix + ".bias", optional=True)
  if weight is None:
    return None
  if bias is None:
    bias = np.zeros(weight.shape[0], weight.dtype)
  return {"kernel": surgery.linear_kernel(weight), "bias": bias}


def flax_subtree(keys: Keys, prefix: str, leaves: tuple[str, ...]) -> Tree | None:
  values = {leaf: keys.get(f"{prefix}/{leaf}") for leaf in leaves}
  return values if _all(*values.values()) else None


def flax_attention(keys: Keys, prefix: str) -> Tree | None:
  """Flax MultiHeadDotProductAttention: query/key/value/out {kernel, bias}, layouts as vidtx."""
  parts = {
    name: flax_subtree(keys, f"{prefix}/{name}", ("kernel", "bias"))
    for name in ("query", "key", "value", "out")
  }
  return parts if _all(*parts.values()) else None


def _mlp(dense_0: Tree | None, dense_1: Tree | None) -> Tree | None:
  return {"Dense_0": dense_0, "Dense_1": dense_1} if _all(dense_0, dense_1) else None


# ----------------------------------------------------------------------------------------
# Blocks.
# ----------------------------------------------------------------------------------------


def _torch_attention(
  keys: Keys, qkv: str, separate: tuple[str, str, str] | None, out: str, num_heads: int
) -> Tree | None:
  """Attention from a fused `qkv` Linear or three separate ones, and the output Linear."""
  if separate is not None and separate[0] + ".weight" in keys:
    weights = [keys.get(name + ".weight") for name in separate]
    biases = [keys.get(name + ".bias", optional=True) for name in separate]
    if not _all(*weights):
      return None
    parts = {
      role: surgery.attention_projection(w, b, num_heads)
      for role, w, b in zip(("query", "key", "value"), weights, biases, strict=True)
    }
  else:
    weight, bias = keys.get(qkv + ".weight"), keys.get(qkv + ".bias", optional=True)
    if weight is None:
      return None
    parts = surgery.split_qkv(weight, bias, num_heads)
  out_weight, out_bias = keys.get(out + ".weight"), keys.get(out + ".bias")
  if not _all(out_weight, out_bias):
    return None
  parts["out"] = surgery.attention_output(out_weight, out_bias, num_heads)
  return parts


def hf_block(keys: Keys, prefix: str, num_heads: int) -> Tree:
  """A Hugging Face ViT / ViViT / TimeSformer layer at `prefix` ('...encoder.layer.3')."""
  p = prefix + "."
  block = {
    "norm_attention": torch_layer_norm(keys, p + "layernorm_before"),
    "attention": _torch_attention(
      keys,
      p + "attention.attention.qkv",
      tuple(p + f"attention.attention.{n}" for n in ("query", "key", "value")),
      p + "attention.output.dense",
      num_heads,
    ),
    "norm_mlp": torch_layer_norm(keys, p + "layernorm_after"),
    "mlp": _mlp(torch_dense(keys, p + "intermediate.dense"), torch_dense(keys, p + "output.dense")),
  }
  if p + "temporal_layernorm.weight" in keys:
    block["norm_temporal"] = torch_layer_norm(keys, p + "temporal_layernorm")
    block["attention_temporal"] = _torch_attention(
      keys,
      p + "temporal_attention.attention.qkv",
      None,
      p + "temporal_attention.output.dense",
      num_heads,
    )
    block["temporal_fc"] = torch_dense(keys, p + "temporal_dense")
  return block


def hf_encoder(
  source: Any, model_prefix: str, ignore: Iterable[str]
) -> tuple[Keys, str, list[Tree]]:
  """A Hugging Face folder's Keys, its names' prefix ('vit.', or '' for a bare backbone) and
  its layers (`source` a readers.Source with config.json as .config)."""
  tensors = surgery.rename(source.tensors, HF_NEW_NAMES)
  prefix = model_prefix if any(k.startswith(model_prefix) for k in tensors) else ""
  keys = Keys(tensors, source.path)
  # A bare backbone's pooler (Dense + tanh) is not part of the classifier.
  keys.ignore([r"pooler\..*", *ignore])
  heads = int(source.config["num_attention_heads"])
  num_layers = keys.count(rf"{prefix}encoder\.layer\.(\d+)\.")
  blocks = [hf_block(keys, f"{prefix}encoder.layer.{i}", heads) for i in range(num_layers)]
  return keys, prefix, blocks


def timm_block(keys: Keys, prefix: str, num_heads: int) -> Tree:
  """A timm ViT block at `prefix` ('blocks.3'), with the official TimeSformer's temporal parts."""
  p = prefix + "."
  block = {
    "norm_attention": torch_layer_norm(keys, p + "norm1"),
    "attention": _torch_attention(keys, p + "attn.qkv", None, p + "attn.proj", num_heads),
    "norm_mlp": torch_layer_norm(keys, p + "norm2"),
    "mlp": _mlp(torch_dense(keys, p + "mlp.fc1"), torch_dense(keys, p + "mlp.fc2")),
  }
  if p + "temporal_norm1.weight" in keys:
    block["norm_temporal"] = torch_layer_norm(keys, p + "temporal_norm1")
    block["attention_temporal"] = _torch_attention(
      keys, p + "temporal_attn.qkv", None, p + "temporal_attn.proj", num_heads
    )
    block["temporal_fc"] = torch_dense(keys, p + "temporal_fc")
  return block


def flax_block(
  keys: Keys, prefix: str, *, norm_attention: str, attention: str, norm_mlp: str, mlp: str
) -> Tree:
  """A Flax (vit_jax, big_vision, scenic) encoder block; the module names differ by source."""
  ln = ("scale", "bias")
  dense = ("kernel", "bias")
  return {
    "norm_attention": flax_subtree(keys, f"{prefix}/{norm_attention}", ln),
    "attention": flax_attention(keys, f"{prefix}/{attention}"),
    "norm_mlp": flax_subtree(keys, f"{prefix}/{norm_mlp}", ln),
    "mlp": _mlp(
      flax_subtree(keys, f"{prefix}/{mlp}/Dense_0", dense),
      flax_subtree(keys, f"{prefix}/{mlp}/Dense_1", dense),
    ),
  }


def flax_layer_norm(keys: Keys, prefix: str) -> Tree | None:
  return flax_subtree(keys, prefix, ("scale", "bias"))


def flax_dense(keys: Keys, prefix: str) -> Tree | None:
  return flax_subtree(keys, prefix, ("kernel", "bias"))


# Hugging Face transformers 5 renames some layers in memory (the hub files keep the old names);
# both spellings are read as the old ones.
_HF_LAYER = r"(.*?)layers\.(\d+)\."
HF_NEW_NAMES = [
  (_HF_LAYER + new, r"\1encoder.layer.\2." + old)
  for new, old in [
    (r"attention\.q_proj\.(\w+)", r"attention.attention.query.\3"),
    (r"attention\.k_proj\.(\w+)", r"attention.attention.key.\3"),
    (r"attention\.v_proj\.(\w+)", r"attention.attention.value.\3"),
    (r"attention\.o_proj\.(\w+)", r"attention.output.dense.\3"),
    (r"mlp\.fc1\.(\w+)", r"intermediate.dense.\3"),
    (r"mlp\.fc2\.(\w+)", r"output.dense.\3"),
    (r"(layernorm_before|layernorm_after)\.(\w+)", r"\3.\4"),
  ]
]
