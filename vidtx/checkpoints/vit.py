"""Image ViT checkpoints (vit_jax / big_vision .npz, timm state dicts, Hugging Face ViT folders)
-> a vidtx model: the space-only TimeSformer, which is an image ViT applied to every frame
(on one frame it is exactly the ViT; on several, the frames' tokens are averaged before the
final LayerNorm, as in the official space-only TimeSformer).

This converted form is also what `init_from` reads an image ViT as: parameter names
`embedding`, `cls`, `pos_embedding/embedding` [(1+)N, D], `encoderblock_i/{norm_spatial,
attention_spatial, norm_mlp, mlp}`, `encoder_norm`, `head`.

Numerics recorded from the source (they matter for parity):
- GELU: vit_jax and big_vision use Flax's tanh approximation; timm and Hugging Face ('gelu')
  the exact erf form.
- LayerNorm epsilon: 1e-6, except Hugging Face folders, which record theirs (1e-12 for the
  converted Google ViTs).
- big_vision (and timm models with `no_embed_class`) add no positional embedding to the class
  token: its entry is zero here, which computes the same.

`read_shape(path)` tells what model a converted directory or a train.py run holds (width,
depth, heads, MLP, patch and tubelet, image size and frames) from its vidtx_model.json or
config.json alone, without loading a parameter: configs/finetune.py builds its model to it
(init=) and train.py checks a config against it before any work (`misfits`).
"""

import dataclasses
import math
import os
from typing import Any

import numpy as np

from vidtx.checkpoints import names, store, surgery
from vidtx.checkpoints.readers import Source
from vidtx.checkpoints.store import Converted
from vidtx.errors import UserError

# Heads of the standard ViT widths, for sources that do not record them (timm, official .pyth).
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}

# ViT image preprocessing: [-1, 1] inputs (vit_jax, big_vision, the Google HF ViTs).
VIT_MEAN_STD = ([0.5] * 3, [0.5] * 3)


def num_heads_for(width: int, num_heads: int | None, where: str) -> int:
  if num_heads:
    return int(num_heads)
  if width not in HEADS_BY_WIDTH:
    raise UserError(
      f"{where}: the checkpoint does not record its number of heads and width "
      f"{width} is not a standard ViT width {sorted(HEADS_BY_WIDTH)}; pass "
      "--num_heads."
    )
  return HEADS_BY_WIDTH[width]


def gelu_approximate_for(hidden_act: str, where: str) -> bool:
  """Hugging Face `hidden_act` -> model.gelu_approximate."""
  if hidden_act in ("gelu", "gelu_python"):
    return False
  if hidden_act in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu_accurate"):
    return True
  raise UserError(f"{where}: hidden_act={hidden_act!r} is not a GELU vidtx implements.")


def labels_from_hf(config: dict[str, Any], num_classes: int) -> list[str] | None:
  id2label = config.get("id2label") or {}
  labels = [id2label.get(str(i), id2label.get(i)) for i in range(num_classes)]
  if any(label is None for label in labels) or all(
    label == f"LABEL_{i}" for i, label in enumerate(labels)
  ):
    return None  # Hugging Face's placeholders carry no information.
  return labels


def preprocessing_from_hf(
  source: Source, defaults: dict[str, Any], read_mean_std: bool = True
) -> dict[str, Any]:
  """`defaults` updated by the folder's preprocessor_config.json, where it has one; a folder
  exported by vidtx carries its whole preprocessing (`vidtx_preprocessing`), read back as it is:
  HF's `shortest_edge` is the evaluation size, which is not min_resize."""
  out = dict(defaults)
  processor = source.extra.get("preprocessor_config") or {}
  exported = processor.get("vidtx_preprocessing")
  if isinstance(exported, dict):
    out.update(exported)
    return out
  size = processor.get("size")
  if isinstance(size, dict) and "shortest_edge" in size:
    out["min_resize"] = int(size["shortest_edge"])
  crop = processor.get("crop_size")
  if isinstance(crop, dict) and "height" in crop:
    out["crop_size"] = int(crop["height"])
  if read_mean_std and processor.get("do_normalize", True) and "image_mean" in processor:
    out["mean"], out["std"] = list(processor["image_mean"]), list(processor["image_std"])
  return out


def image_preprocessing(image_size: int) -> dict[str, Any]:
  mean, std = VIT_MEAN_STD
  return dict(
    num_frames=1,
    stride=1,
    min_resize=image_size,
    crop_size=image_size,
    mean=mean,
    std=std,
    num_test_clips=1,
    do_three_spatial_crops=False,
    aggregation="mean_logits",
  )


def _grid_of(posemb: np.ndarray, has_cls: bool, where: str) -> tuple[bool, int]:
  """(whether the embedding has a class-token entry, patches per side)."""
  length = posemb.shape[0]
  if has_cls and math.isqrt(length - 1) ** 2 == length - 1:
    return True, math.isqrt(length - 1)
  if math.isqrt(length) ** 2 == length:
    return False, math.isqrt(length)
  raise UserError(
    f"{where}: positional embedding of {length} entries is not a square grid of "
    "patches (plus a class token)."
  )


def assemble_space_model(
  *,
  kernel,
  bias,
  cls,
  posemb,
  blocks,
  encoder_norm,
  head,
  num_heads: int,
  gelu_approximate: bool,
  layer_norm_epsilon: float,
  where: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
  """vidtx space-only TimeSformer params and model config from image-ViT parts."""
  posemb = np.asarray(posemb).reshape(-1, posemb.shape[-1])  # (1, L, D) -> (L, D)
  has_entry, _ = _grid_of(posemb, cls is not None, where)
  if cls is not None and not has_entry:
    # The class token gets no positional embedding: a zero entry computes the same.
    posemb = np.concatenate([np.zeros_like(posemb[:1]), posemb])
  params = {
    "embedding": {"kernel": kernel, "bias": bias},
    "pos_embedding": {"embedding": posemb},
    "encoder_norm": encoder_norm,
  }
  if cls is not None:
    params["cls"] = np.asarray(cls).reshape(1, 1, -1)
  for i, block in enumerate(blocks):
    params[f"encoderblock_{i}"] = {
      "norm_spatial": block["norm_attention"],
      "attention_spatial": block["attention"],
      "norm_mlp": block["norm_mlp"],
      "mlp": block["mlp"],
    }
  if head is not None:
    params["head"] = head
  patch, width = kernel.shape[0], kernel.shape[-1]
  model_config = dict(
    variant=f"B/{patch}",
    hidden_size=int(width),
    num_layers=len(blocks),
    num_heads=int(num_heads),
    mlp_dim=int(blocks[0]["mlp"]["Dense_0"]["kernel"].shape[1]),
    attention="space",
    classifier="token" if cls is not None else "gap",
    gelu_approximate=bool(gelu_approximate),
    layer_norm_epsilon=float(layer_norm_epsilon),
  )
  return params, model_config


def finish_converted(
  model_name: str,
  params: dict[str, Any],
  model_config: dict[str, Any],
  source: Source,
  *,
  num_classes: int | None,
  labels: list[str] | None,
  preprocessing: dict[str, Any],
  notes: list[str],
) -> Converted:
  """The Converted of mapped `params`; a head-less source (a backbone) gets a zero head of
  `num_classes` classes (--num_classes), or an error saying so."""
  if params.get("head") is None:
    params.pop("head", None)
    if not num_classes:
      raise UserError(
        f"{source.path}: the checkpoint has no classification head (a backbone); "
        "pass --num_classes to add a zero-initialised one, or use it via "
        "init_from."
      )
    params["head"] = {
      "kernel": np.zeros((model_config["hidden_size"], num_classes), np.float32),
      "bias": np.zeros(num_classes, np.float32),
    }
    notes.append(f"no head in the source: a zero head of {num_classes} classes was added")
  return Converted(
    model_name=model_name,
    model_config=model_config,
    num_classes=int(params["head"]["kernel"].shape[1]),
    params=params,
    preprocessing=preprocessing,
    labels=labels,
    source=dict(path=source.path, format=source.format, notes=notes),
  )


# ----------------------------------------------------------------------------------------
# Per format.
# ----------------------------------------------------------------------------------------


def from_flax_npz(
  source: Source, *, num_classes: int | None = None, ignore: tuple[str, ...] = ()
) -> Converted:
  """vit_jax (pre-Linen names) or big_vision .npz -> space-only TimeSformer."""
  keys = names.Keys(source.tensors, source.path)
  keys.ignore(ignore)
  if source.format == "vit_npz":
    prefix, posemb_name = "Transformer/", "Transformer/posembed_input/pos_embedding"
    module_names = dict(
      norm_attention="LayerNorm_0",
      attention="MultiHeadDotProductAttention_1",
      norm_mlp="LayerNorm_2",
      mlp="MlpBlock_3",
    )
  else:
    prefix, posemb_name = "Transformer/", "pos_embedding"
    module_names = dict(
      norm_attention="LayerNorm_0",
      attention="MultiHeadDotProductAttention_0",
      norm_mlp="LayerNorm_1",
      mlp="MlpBlock_0",
    )
    if any(k.startswith("Transformer/encoderblock/") for k in source.tensors):
      keys = names.Keys(_unscan(source.tensors, "Transformer/encoderblock/"), source.path)
      keys.ignore(ignore)
  num_layers = keys.count(rf"{prefix}encoderblock_(\d+)/")
  blocks = [
    names.flax_block(keys, f"{prefix}encoderblock_{i}", **module_names) for i in range(num_layers)
  ]
  num_heads = keys.shape(f"{prefix}encoderblock_0/{module_names['attention']}/query/kernel")[1]
  head = names.flax_dense(keys, "head") if "head/kernel" in keys else None
  kernel = keys.get("embedding/kernel")
  parts = dict(
    kernel=kernel,
    bias=keys.get("embedding/bias"),
    cls=keys.get("cls", optional=True),
    posemb=keys.get(posemb_name),
    blocks=blocks,
    encoder_norm=names.flax_layer_norm(keys, f"{prefix}encoder_norm"),
    head=head,
  )
  keys.finish()
  params, model_config = assemble_space_model(
    **parts, num_heads=num_heads, gelu_approximate=True, layer_norm_epsilon=1e-6, where=source.path
  )
  image_size = (
    kernel.shape[0]
    * _grid_of(params["pos_embedding"]["embedding"], "cls" in params, source.path)[1]
  )
  notes = ["Flax nn.gelu (tanh approximation)", "LayerNorm epsilon 1e-6"]
  return finish_converted(
    "timesformer",
    params,
    model_config,
    source,
    num_classes=num_classes,
    labels=None,
    preprocessing=image_preprocessing(image_size),
    notes=notes,
  )


def _unscan(tensors: dict[str, np.ndarray], scanned: str) -> dict[str, np.ndarray]:
  """big_vision's scanned layers [L, ...] under `scanned` -> encoderblock_{i}/... per layer."""
  out = {}
  for name, value in tensors.items():
    if name.startswith(scanned):
      rest = name[len(scanned) :]
      for i in range(value.shape[0]):
        out[f"{scanned[:-1]}_{i}/{rest}"] = value[i]
    else:
      out[name] = value
  return out


def from_timm(
  source: Source,
  *,
  num_heads: int | None = None,
  num_classes: int | None = None,
  ignore: tuple[str, ...] = (),
) -> Converted:
  """timm / PyTorch ViT state dict -> space-only TimeSformer."""
  keys = names.Keys(source.tensors, source.path)
  keys.ignore(ignore)
  width = keys.shape("patch_embed.proj.weight")[0]
  heads = num_heads_for(width, num_heads, source.path)
  num_layers = keys.count(r"blocks\.(\d+)\.")
  blocks = [names.timm_block(keys, f"blocks.{i}", heads) for i in range(num_layers)]
  weight = keys.get("patch_embed.proj.weight")
  head = names.torch_dense(keys, "head") if "head.weight" in keys else None
  parts = dict(
    kernel=surgery.conv2d_kernel(weight),
    bias=keys.get("patch_embed.proj.bias"),
    cls=keys.get("cls_token", optional=True),
    posemb=keys.get("pos_embed"),
    blocks=blocks,
    encoder_norm=names.torch_layer_norm(keys, "norm"),
    head=head,
  )
  keys.finish()
  params, model_config = assemble_space_model(
    **parts, num_heads=heads, gelu_approximate=False, layer_norm_epsilon=1e-6, where=source.path
  )
  image_size = (
    weight.shape[-1]
    * _grid_of(params["pos_embedding"]["embedding"], "cls" in params, source.path)[1]
  )
  notes = [
    "timm: exact GELU, LayerNorm epsilon 1e-6",
    "preprocessing mean/std 0.5 assumed (timm's augreg ViTs); DeiT and other ImageNet-"
    "normalised models need --normalization=imagenet",
  ]
  return finish_converted(
    "timesformer",
    params,
    model_config,
    source,
    num_classes=num_classes,
    labels=None,
    preprocessing=image_preprocessing(image_size),
    notes=notes,
  )


def from_hf_vit(
  source: Source, *, num_classes: int | None = None, ignore: tuple[str, ...] = ()
) -> Converted:
  """Hugging Face ViT folder (ViTForImageClassification or ViTModel) -> space-only TimeSformer."""
  config = source.config
  keys, prefix, blocks = names.hf_encoder(source, "vit.", ignore)
  heads = int(config["num_attention_heads"])
  e = prefix + "embeddings."
  head = names.torch_dense(keys, "classifier") if "classifier.weight" in keys else None
  parts = dict(
    kernel=surgery.conv2d_kernel(keys.get(e + "patch_embeddings.projection.weight")),
    bias=keys.get(e + "patch_embeddings.projection.bias"),
    cls=keys.get(e + "cls_token"),
    posemb=keys.get(e + "position_embeddings"),
    blocks=blocks,
    encoder_norm=names.torch_layer_norm(keys, prefix + "layernorm"),
    head=head,
  )
  keys.finish()
  eps = float(config.get("layer_norm_eps", 1e-12))
  gelu = gelu_approximate_for(config.get("hidden_act", "gelu"), source.path)
  params, model_config = assemble_space_model(
    **parts, num_heads=heads, gelu_approximate=gelu, layer_norm_epsilon=eps, where=source.path
  )
  image_size = int(config.get("image_size", 224))
  preprocessing = preprocessing_from_hf(source, image_preprocessing(image_size))
  labels = labels_from_hf(config, head["kernel"].shape[1]) if head is not None else None
  notes = [
    f"Hugging Face ViT: hidden_act {config.get('hidden_act', 'gelu')!r}, layer_norm_eps {eps}"
  ]
  return finish_converted(
    "timesformer",
    params,
    model_config,
    source,
    num_classes=num_classes,
    labels=labels,
    preprocessing=preprocessing,
    notes=notes,
  )


# ----------------------------------------------------------------------------------------
# A checkpoint's sizes, from its description alone.
# ----------------------------------------------------------------------------------------

# The size fields of a model config that a checkpoint fixes (ViViT Model 2 adds its two stacks).
SIZE_FIELDS = ("hidden_size", "num_layers", "num_heads", "mlp_dim")
_FAMILY_NAMES = {"timesformer": "TimeSformer", "vivit": "ViViT", "xvit": "X-ViT"}


@dataclasses.dataclass(frozen=True)
class Shape:
  """The model a checkpoint holds and the clips it was made for (None where it does not say)."""

  model_name: str
  attention: str
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  patch_size: int
  tubelet_size: int
  classifier: str = "token"
  crop_size: int | None = None
  num_frames: int | None = None
  spatial_layers: int | None = None  # ViViT Model 2's L_s and L_t.
  temporal_layers: int | None = None

  @property
  def is_image_vit(self) -> bool:
    """A space-only TimeSformer is an image ViT (vidtx.checkpoints.init_from.is_image_vit)."""
    return self.model_name == "timesformer" and self.attention == "space"

  def vit_name(self) -> str:
    """'ViT-S/16' for DeiT's and ViT's sizes, 'ViT/8' otherwise; 'x2' for 2-frame tubelets."""
    from vidtx.models import hparams

    sizes = {k: getattr(self, k) for k in SIZE_FIELDS}
    letter = next((k for k, v in hparams.VIT_SIZES.items() if v == sizes), "")
    tubelet = f"x{self.tubelet_size}" if self.tubelet_size > 1 else ""
    return f"ViT{'-' + letter if letter else ''}/{self.patch_size}{tubelet}"

  def describe(self, family: bool = False) -> str:
    """'ViT-S/16 (384 wide, 12 layers, 6 heads, MLP 1536) at 112 px, 8 frames'; `family`
    names the model first ('TimeSformer ViT/8 ...') unless it is an image ViT."""
    text = self.vit_name()
    if family and not self.is_image_vit:
      text = f"{_FAMILY_NAMES.get(self.model_name, self.model_name)} {text}"
    layers = f"{self.num_layers} layer{'s' if self.num_layers != 1 else ''}"
    if self.model_name == "vivit" and self.attention == "factorised_encoder":
      layers = f"{self.spatial_layers or self.num_layers} + {self.temporal_layers} layers"
    text += f" ({self.hidden_size} wide, {layers}, {self.num_heads} heads, MLP {self.mlp_dim})"
    if self.crop_size:
      text += f" at {self.crop_size} px"
    if self.num_frames:
      text += f", {self.num_frames} frame{'s' if self.num_frames != 1 else ''}"
    return text


def shape_of(
  model_name: str,
  model: dict[str, Any],
  *,
  crop_size: int | None = None,
  num_frames: int | None = None,
  where: str = "model",
) -> Shape:
  """The Shape of a model config (fields not given take the model's defaults, sizes the
  variant's); ValueError naming `where` when it is not a vidtx model."""
  from vidtx import models

  if model_name not in models.MODELS:
    raise UserError(f"{where}: model_name={model_name!r}; expected one of {sorted(models.MODELS)}.")
  fields = models.default_config(model_name).to_dict()
  fields.update({k: v for k, v in dict(model).items() if k in fields})
  try:
    resolved = models.MODELS[model_name].make_config(fields)
  except ValueError as e:
    raise UserError(f"{where}: {e}") from e
  vivit_fe = model_name == "vivit" and resolved.attention == "factorised_encoder"
  return Shape(
    model_name=model_name,
    attention=resolved.attention,
    hidden_size=resolved.hidden_size,
    num_layers=resolved.num_layers,
    num_heads=resolved.num_heads,
    mlp_dim=resolved.mlp_dim,
    patch_size=resolved.patch_size,
    tubelet_size=resolved.tubelet_size,
    classifier=resolved.classifier,
    crop_size=int(crop_size) if crop_size else None,
    num_frames=int(num_frames) if num_frames else None,
    spatial_layers=resolved.spatial_layers if vivit_fe else None,
    temporal_layers=resolved.temporal_layers if vivit_fe else None,
  )


def read_shape(path: str) -> Shape | None:
  """The Shape of a converted directory (its vidtx_model.json) or a train.py run (its
  config.json), without loading parameters; None for any other path (a format read only by
  converting it). ValueError naming the file when the description is unreadable."""
  from vidtx import run_files  # It imports this package's store.

  if store.is_converted_dir(path):
    where = os.path.join(path, store.MODEL_FILE)
    described = store.read_description(path)
    preprocessing = described.get("preprocessing") or {}
    return shape_of(
      described.get("model_name"),
      described.get("model") or {},
      crop_size=preprocessing.get("crop_size"),
      num_frames=preprocessing.get("num_frames"),
      where=where,
    )
  if run_files.is_run_dir(path):
    config = run_files.read_config(path)
    dc = config.dataset_configs
    return shape_of(
      config.model_name,
      config.model.to_dict(),
      crop_size=dc.get("crop_size"),
      num_frames=dc.get("num_frames"),
      where=os.path.join(path, run_files.CONFIG_FILE),
    )
  return None


def misfits(shape: Shape, model_name: str, model: Any) -> list[tuple[str, Any, Any]]:
  """What keeps checkpoint `shape` from starting `model_name`'s validated config `model`
  (vidtx.models.MODELS[...].make_config): [(field, checkpoint's value, model's value)], as
  vidtx.checkpoints.init_from would find it after building the model. An image ViT starts any
  model of its width, heads, MLP and patch with at most its depth; a video checkpoint one of its
  own family, attention and sizes (depth and embeddings may differ: extra layers start fresh;
  another attention would leave its attention parameters unused and the model's fresh)."""
  out = []
  if not shape.is_image_vit and shape.model_name != model_name:
    out.append(("model_name", shape.model_name, model_name))
    return out
  for field in ("hidden_size", "num_heads", "mlp_dim", "patch_size"):
    if getattr(shape, field) != getattr(model, field):
      out.append((field, getattr(shape, field), getattr(model, field)))
  if shape.is_image_vit:
    layers = getattr(model, "spatial_layers", None) or model.num_layers
    if model_name == "vivit" and model.attention == "factorised_encoder":
      field = "spatial_layers"
    else:
      field = "num_layers"
    if layers > shape.num_layers:
      out.append((field, shape.num_layers, layers))
  else:
    if shape.tubelet_size != model.tubelet_size:
      out.append(("tubelet_size", shape.tubelet_size, model.tubelet_size))
    if shape.attention != model.attention:
      out.append(("attention", shape.attention, model.attention))
  return out
