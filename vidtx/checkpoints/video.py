"""Video checkpoints of the peers -> vidtx models, with their preprocessing and numerics.

- Hugging Face TimeSformer folders (divided / joint / space-only) and the official TimeSformer
  `.pyth` -> vidtx TimeSformer ('divided' / 'joint' / 'space').
- Hugging Face ViViT folders (Model 1) and scenic ViViT checkpoints (Models 1-4) -> vidtx ViViT.

The model config comes from the checkpoint (shapes) and its config where it has one; what the
checkpoint cannot tell (scenic: Model 1 with average pooling vs Model 4, Model 3's attention
order, the crop size of Models 1, 3, 4) must be passed, and the error says so.

Preprocessing recorded (the protocol each source was evaluated with; see docs/checkpoints.md):
- TimeSformer: 8 frames at stride 32 (the paper's "rate 1/32"; 96 frames: 1/4), short side to
  the crop size, 1 clip x 3 crops, mean 0.45 / std 0.225, sum of logits (the official test
  code; the paper's appendix says it averages softmax scores).
- ViViT: 32 frames at stride 2, short side 256, 224 crops, 4 clips x 3 crops, inputs in
  [-1, 1], mean of logits.
"""

from typing import Any, NamedTuple

import numpy as np

from vidtx.checkpoints import names, surgery, vit
from vidtx.checkpoints.readers import Source
from vidtx.checkpoints.store import Converted
from vidtx.errors import UserError

TIMESFORMER_ATTENTIONS = {
  "divided_space_time": "divided",
  "joint_space_time": "joint",
  "space_only": "space",
}


def timesformer_preprocessing(
  num_frames: int, crop_size: int, stride: int | None = None
) -> dict[str, Any]:
  if stride is None:
    stride = 4 if num_frames >= 96 else 32
  return dict(
    num_frames=num_frames,
    stride=stride,
    min_resize=crop_size,
    crop_size=crop_size,
    mean=[0.45] * 3,
    std=[0.225] * 3,
    num_test_clips=1,
    do_three_spatial_crops=True,
    aggregation="sum_logits",
  )


def vivit_preprocessing(num_frames: int, crop_size: int) -> dict[str, Any]:
  return dict(
    num_frames=num_frames,
    stride=2,
    min_resize=round(crop_size * 256 / 224),
    crop_size=crop_size,
    mean=[0.5] * 3,
    std=[0.5] * 3,
    num_test_clips=4,
    do_three_spatial_crops=True,
    aggregation="mean_logits",
  )


# ----------------------------------------------------------------------------------------
# TimeSformer.
# ----------------------------------------------------------------------------------------


def _timesformer_params(
  *, kernel, bias, cls, posemb, time_embedding, blocks, encoder_norm, head, attention: str
) -> dict[str, Any]:
  stage = {"divided": "spatial", "space": "spatial", "joint": "joint"}[attention]
  params = {
    "embedding": {"kernel": kernel, "bias": bias},
    "cls": np.reshape(cls, (1, 1, -1)),
    "pos_embedding": {"embedding": np.reshape(posemb, (-1, posemb.shape[-1]))},
    "encoder_norm": encoder_norm,
  }
  if attention != "space":
    params["time_embedding"] = {
      "embedding": np.reshape(time_embedding, (-1, time_embedding.shape[-1]))
    }
  for i, block in enumerate(blocks):
    out = {
      f"norm_{stage}": block["norm_attention"],
      f"attention_{stage}": block["attention"],
      "norm_mlp": block["norm_mlp"],
      "mlp": block["mlp"],
    }
    if attention == "divided":
      out.update(
        norm_temporal=block["norm_temporal"],
        attention_temporal=block["attention_temporal"],
        temporal_fc=block["temporal_fc"],
      )
    params[f"encoderblock_{i}"] = out
  if head is not None:
    params["head"] = head
  return params


def _check_temporal_blocks(blocks: list[dict], attention: str, where: str) -> None:
  has_temporal = ["attention_temporal" in b for b in blocks]
  if (attention == "divided") != all(has_temporal) or any(has_temporal) != all(has_temporal):
    raise UserError(
      f"{where}: attention {attention!r} but {sum(has_temporal)} of "
      f"{len(blocks)} blocks have temporal attention parameters."
    )


def from_hf_timesformer(
  source: Source, *, num_classes: int | None = None, ignore: tuple[str, ...] = ()
) -> Converted:
  config = source.config
  attention_type = config.get("attention_type", "divided_space_time")
  if attention_type not in TIMESFORMER_ATTENTIONS:
    raise UserError(
      f"{source.path}/config.json: attention_type={attention_type!r}; expected "
      f"one of {list(TIMESFORMER_ATTENTIONS)}."
    )
  attention = TIMESFORMER_ATTENTIONS[attention_type]
  keys, prefix, blocks = names.hf_encoder(source, "timesformer.", ignore)
  heads, num_layers = int(config["num_attention_heads"]), len(blocks)
  e = prefix + "embeddings."
  params = dict(
    kernel=surgery.conv2d_kernel(keys.get(e + "patch_embeddings.projection.weight")),
    bias=keys.get(e + "patch_embeddings.projection.bias"),
    cls=keys.get(e + "cls_token"),
    posemb=keys.get(e + "position_embeddings"),
    time_embedding=keys.get(e + "time_embeddings") if attention != "space" else None,
    blocks=blocks,
    encoder_norm=names.torch_layer_norm(keys, prefix + "layernorm"),
    head=names.torch_dense(keys, "classifier") if "classifier.weight" in keys else None,
  )
  keys.finish()
  _check_temporal_blocks(blocks, attention, source.path)
  params = _timesformer_params(**params, attention=attention)
  eps = float(config.get("layer_norm_eps", 1e-6))
  model_config = dict(
    variant=f"B/{int(config['patch_size'])}",
    hidden_size=int(config["hidden_size"]),
    num_layers=num_layers,
    num_heads=heads,
    mlp_dim=int(config["intermediate_size"]),
    attention=attention,
    gelu_approximate=vit.gelu_approximate_for(config.get("hidden_act", "gelu"), source.path),
    layer_norm_epsilon=eps,
  )
  num_frames, image_size = int(config["num_frames"]), int(config["image_size"])
  preprocessing = vit.preprocessing_from_hf(
    source, timesformer_preprocessing(num_frames, image_size)
  )
  notes = [
    f"Hugging Face TimeSformer ({attention_type}): hidden_act "
    f"{config.get('hidden_act', 'gelu')!r}, layer_norm_eps {eps}"
  ]
  if attention == "space":
    notes.append(
      "space_only: Hugging Face classifies every frame separately (one row of logits "
      "per frame); vidtx keeps the official model, which averages the frames' tokens "
      "before the final LayerNorm and gives one row per clip"
    )
  labels = None
  if params.get("head") is not None:
    labels = vit.labels_from_hf(config, params["head"]["kernel"].shape[1])
  return vit.finish_converted(
    "timesformer",
    params,
    model_config,
    source,
    num_classes=num_classes,
    labels=labels,
    preprocessing=preprocessing,
    notes=notes,
  )


def from_official_timesformer(
  source: Source,
  *,
  num_heads: int | None = None,
  num_classes: int | None = None,
  ignore: tuple[str, ...] = (),
) -> Converted:
  """The official TimeSformer .pyth (timm names under model_state, the cfg as YAML)."""
  cfg = source.config or {}
  keys = names.Keys(source.tensors, source.path)
  keys.ignore(ignore)
  width = keys.shape("patch_embed.proj.weight")[0]
  heads = vit.num_heads_for(width, num_heads, source.path)
  num_layers = keys.count(r"blocks\.(\d+)\.")
  blocks = [names.timm_block(keys, f"blocks.{i}", heads) for i in range(num_layers)]
  attention = (cfg.get("TIMESFORMER") or {}).get("ATTENTION_TYPE")
  if attention is None:  # Older checkpoints: tell from the parameters.
    attention = (
      "divided_space_time"
      if "blocks.0.temporal_attn.qkv.weight" in keys
      else "joint_space_time"
      if "time_embed" in keys
      else "space_only"
    )
  if attention not in TIMESFORMER_ATTENTIONS:
    raise UserError(
      f"{source.path}: cfg TIMESFORMER.ATTENTION_TYPE={attention!r}; expected one "
      f"of {list(TIMESFORMER_ATTENTIONS)}."
    )
  weight = keys.get("patch_embed.proj.weight")
  params = dict(
    kernel=surgery.conv2d_kernel(weight),
    bias=keys.get("patch_embed.proj.bias"),
    cls=keys.get("cls_token"),
    posemb=keys.get("pos_embed"),
    time_embedding=(keys.get("time_embed") if attention != "space_only" else None),
    blocks=blocks,
    encoder_norm=names.torch_layer_norm(keys, "norm"),
    head=names.torch_dense(keys, "head") if "head.weight" in keys else None,
  )
  keys.finish()
  vidtx_attention = TIMESFORMER_ATTENTIONS[attention]
  _check_temporal_blocks(blocks, vidtx_attention, source.path)
  params = _timesformer_params(**params, attention=vidtx_attention)
  patch = weight.shape[-1]
  grid = surgery.grid_size(params["pos_embedding"]["embedding"].shape[0] - 1, source.path)
  data = cfg.get("DATA") or {}
  crop = int(data.get("TEST_CROP_SIZE") or grid[0] * patch)
  if "time_embedding" in params:
    num_frames = params["time_embedding"]["embedding"].shape[0]
  else:
    num_frames = int(data.get("NUM_FRAMES", 8))
  preprocessing = timesformer_preprocessing(num_frames, crop, data.get("SAMPLING_RATE"))
  if data.get("MEAN") and data.get("STD"):
    preprocessing.update(mean=list(data["MEAN"]), std=list(data["STD"]))
  model_config = dict(
    variant=f"B/{patch}",
    hidden_size=int(width),
    num_layers=num_layers,
    num_heads=heads,
    mlp_dim=int(blocks[0]["mlp"]["Dense_0"]["kernel"].shape[1]),
    attention=vidtx_attention,
    gelu_approximate=False,
    layer_norm_epsilon=1e-6,
  )
  notes = [
    f"official TimeSformer ({attention}): exact GELU, LayerNorm epsilon 1e-6",
    "cfg read from the checkpoint"
    if cfg
    else "no cfg in the checkpoint: frames, stride and normalisation are the paper's defaults",
  ]
  return vit.finish_converted(
    "timesformer",
    params,
    model_config,
    source,
    num_classes=num_classes,
    labels=None,
    preprocessing=preprocessing,
    notes=notes,
  )


# ----------------------------------------------------------------------------------------
# ViViT.
# ----------------------------------------------------------------------------------------


def from_hf_vivit(
  source: Source, *, num_classes: int | None = None, ignore: tuple[str, ...] = ()
) -> Converted:
  """Hugging Face ViViT (Model 1, spatio-temporal attention, class token)."""
  config = source.config
  keys, prefix, blocks = names.hf_encoder(source, "vivit.", ignore)
  heads, num_layers = int(config["num_attention_heads"]), len(blocks)
  e = prefix + "embeddings."
  weight = keys.get(e + "patch_embeddings.projection.weight")
  params = {
    "embedding": {
      "kernel": surgery.conv3d_kernel(weight),
      "bias": keys.get(e + "patch_embeddings.projection.bias"),
    },
    "cls": keys.get(e + "cls_token"),
    "pos_embedding": {"embedding": keys.get(e + "position_embeddings")},
    "encoder": {f"encoderblock_{i}": block for i, block in enumerate(blocks)},
  }
  params["encoder"]["encoder_norm"] = names.torch_layer_norm(keys, prefix + "layernorm")
  if "classifier.weight" in keys:
    params["head"] = names.torch_dense(keys, "classifier")
  keys.finish()
  params["cls"] = params["cls"].reshape(1, 1, -1)
  posemb = params["pos_embedding"]["embedding"]
  params["pos_embedding"]["embedding"] = posemb.reshape(-1, posemb.shape[-1])
  tubelet = [int(x) for x in config.get("tubelet_size", [2, 16, 16])]
  if tubelet[1] != tubelet[2]:
    raise UserError(
      f"{source.path}/config.json: tubelet_size={tubelet}: vidtx uses square patches."
    )
  eps = float(config.get("layer_norm_eps", 1e-6))
  model_config = dict(
    variant=f"B/{tubelet[1]}x{tubelet[0]}",
    hidden_size=int(config["hidden_size"]),
    num_layers=num_layers,
    num_heads=heads,
    mlp_dim=int(config["intermediate_size"]),
    attention="spatio_temporal",
    classifier="token",
    gelu_approximate=vit.gelu_approximate_for(config.get("hidden_act", "gelu_fast"), source.path),
    layer_norm_epsilon=eps,
  )
  num_frames, image_size = int(config["num_frames"]), int(config["image_size"])
  # The HF ViViT image processor's defaults (rescale to [-1, 1] and then normalise by 0.5 / 0.5)
  # are not the [-1, 1] inputs the scenic weights were trained on: keep scenic's.
  preprocessing = vit.preprocessing_from_hf(
    source, vivit_preprocessing(num_frames, image_size), read_mean_std=False
  )
  notes = [
    f"Hugging Face ViViT (Model 1): hidden_act {config.get('hidden_act')!r}, layer_norm_eps {eps}",
    "inputs in [-1, 1] as scenic (not the HF processor's)",
  ]
  labels = None
  if "head" in params:
    labels = vit.labels_from_hf(config, params["head"]["kernel"].shape[1])
  return vit.finish_converted(
    "vivit",
    params,
    model_config,
    source,
    num_classes=num_classes,
    labels=labels,
    preprocessing=preprocessing,
    notes=notes,
  )


_SCENIC_BLOCK = dict(
  norm_attention="LayerNorm_0",
  attention="MultiHeadDotProductAttention_0",
  norm_mlp="LayerNorm_1",
  mlp="MlpBlock_0",
)


def _swap_head_halves(attention: dict[str, Any]) -> dict[str, Any]:
  """scenic's Model 4 runs its first half of heads over time; vidtx over space: swap halves."""

  def swap(x: np.ndarray, axis: int) -> np.ndarray:
    half = x.shape[axis] // 2
    return np.concatenate(np.split(x, [half], axis=axis)[::-1], axis=axis)

  out = {}
  for name in ("query", "key", "value"):  # kernel [D, H, Dh], bias [H, Dh]
    out[name] = {
      "kernel": swap(attention[name]["kernel"], 1),
      "bias": swap(attention[name]["bias"], 0),
    }
  out["out"] = {
    "kernel": swap(attention["out"]["kernel"], 0),  # [H, Dh, D]
    "bias": attention["out"]["bias"],
  }
  return out


class _Encoder(NamedTuple):
  """What a scenic checkpoint's encoder(s) say about the model."""

  model: str  # vidtx's attention: factorised_encoder, spatio_temporal, ...
  num_layers: int
  heads_name: str  # A query kernel (D, heads, head_dim): the head count.
  mlp_name: str  # An MLP's first kernel (D, mlp_dim).
  classifier: str  # 'token' or 'gap'.
  extra: dict[str, Any]  # Model-specific config fields.


def _scenic_factorised_encoder(keys: names.Keys, params: dict[str, Any], where: str) -> _Encoder:
  """Model 2: the spatial and temporal encoders into `params`."""
  spatial_layers = keys.count(r"SpatialTransformer/encoderblock_(\d+)/")
  temporal_layers = keys.count(r"TemporalTransformer/encoderblock_(\d+)/")
  for encoder, name, layers in (
    ("SpatialTransformer", "spatial", spatial_layers),
    ("TemporalTransformer", "temporal", temporal_layers),
  ):
    if not layers:
      continue
    tree = {
      f"encoderblock_{i}": names.flax_block(keys, f"{encoder}/encoderblock_{i}", **_SCENIC_BLOCK)
      for i in range(layers)
    }
    tree["encoder_norm"] = names.flax_layer_norm(keys, f"{encoder}/encoder_norm")
    params[f"{name}_encoder"] = tree
    params[f"{name}_pos_embedding"] = {
      "embedding": keys.get(f"{encoder}/posembed_input/pos_embedding")
    }
    cls = keys.get(f"cls_{encoder}", optional=True)
    if cls is not None:
      params[f"{name}_cls"] = cls
  heads_name = "SpatialTransformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"
  classifier = "token" if "spatial_cls" in params else "gap"
  extra = dict(spatial_layers=spatial_layers, temporal_layers=temporal_layers)
  num_layers = spatial_layers
  mlp_name = "SpatialTransformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"
  if temporal_layers:
    for part in ("MultiHeadDotProductAttention_0/query/kernel", "MlpBlock_0/Dense_0/kernel"):
      spatial = keys.shape(f"SpatialTransformer/encoderblock_0/{part}")
      temporal = keys.shape(f"TemporalTransformer/encoderblock_0/{part}")
      if spatial != temporal:
        raise UserError(
          f"{where}: the spatial and temporal encoders differ in {part} "
          f"({spatial} vs {temporal}); vidtx's Model 2 shares one size."
        )
  return _Encoder("factorised_encoder", num_layers, heads_name, mlp_name, classifier, extra)


def _scenic_single_encoder(
  keys: names.Keys,
  params: dict[str, Any],
  where: str,
  attention: str | None,
  attention_order: str | None,
) -> _Encoder:
  """Models 1, 3 and 4: one encoder into `params`; which model, from the names and the flags."""
  num_layers = keys.count(r"Transformer/encoderblock_(\d+)/")
  factorised = "Transformer/encoderblock_0/LayerNorm_space/scale" in keys
  has_cls = "cls" in keys
  if factorised:
    model = "factorised_self_attention"
    if attention_order not in ("space_time", "time_space"):
      raise UserError(
        f"{where}: a scenic Model 3 (factorised self-attention) checkpoint does not record "
        "its attention order; pass --attention_order=time_space or space_time, as in the "
        "scenic config's model.attention_config.attention_order."
      )
  elif has_cls:
    model = "spatio_temporal"
  else:
    if attention not in ("spatio_temporal", "factorised_dot_product"):
      raise UserError(
        f"{where}: a scenic ViViT without a class token is Model 1 with average pooling or "
        "Model 4 (factorised dot-product attention), which have the same parameters; pass "
        "--attention=spatio_temporal or --attention=factorised_dot_product."
      )
    model = attention
  blocks = {}
  for i in range(num_layers):
    p = f"Transformer/encoderblock_{i}"
    if factorised:
      attention_name = f"{p}/MultiHeadDotProductAttention_"
      blocks[f"encoderblock_{i}"] = {
        "norm_spatial": names.flax_layer_norm(keys, f"{p}/LayerNorm_space"),
        "attention_spatial": names.flax_attention(keys, attention_name + "space"),
        "norm_temporal": names.flax_layer_norm(keys, f"{p}/LayerNorm_time"),
        "attention_temporal": names.flax_attention(keys, attention_name + "time"),
        "norm_mlp": names.flax_layer_norm(keys, f"{p}/LayerNorm_mlp"),
        "mlp": {
          "Dense_0": names.flax_dense(keys, f"{p}/MlpBlock/Dense_0"),
          "Dense_1": names.flax_dense(keys, f"{p}/MlpBlock/Dense_1"),
        },
      }
    else:
      blocks[f"encoderblock_{i}"] = names.flax_block(keys, p, **_SCENIC_BLOCK)
  blocks["encoder_norm"] = names.flax_layer_norm(keys, "Transformer/encoder_norm")
  params["encoder"] = blocks
  params["pos_embedding"] = {"embedding": keys.get("Transformer/posembed_input/pos_embedding")}
  if has_cls:
    params["cls"] = keys.get("cls")
  heads_name = (
    "Transformer/encoderblock_0/MultiHeadDotProductAttention_space/query/kernel"
    if factorised
    else "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"
  )
  mlp_name = (
    "Transformer/encoderblock_0/MlpBlock/Dense_0/kernel"
    if factorised
    else "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"
  )
  classifier = "token" if has_cls else "gap"
  extra = dict(attention_order=attention_order) if factorised else {}
  return _Encoder(model, num_layers, heads_name, mlp_name, classifier, extra)


def _scenic_frames(
  params: dict[str, Any],
  encoder: _Encoder,
  patch: int,
  crop_size: int | None,
  where: str,
) -> tuple[int, int]:
  """(crop, temporal token count) from the positional embeddings' lengths."""
  model, classifier = encoder.model, encoder.classifier
  temporal_layers = encoder.extra.get("temporal_layers")  # Model 2's.
  if model == "factorised_encoder":
    num_patches = params["spatial_pos_embedding"]["embedding"].shape[0] - (classifier == "token")
    crop = patch * surgery.grid_size(num_patches, where)[0]
    if temporal_layers:
      num_tokens_t = params["temporal_pos_embedding"]["embedding"].shape[0] - (
        classifier == "token"
      )
    else:
      num_tokens_t = None
  else:
    crop = crop_size or 224
    num_patches = (crop // patch) ** 2
    tokens = params["pos_embedding"]["embedding"].shape[0] - (classifier == "token")
    if tokens % num_patches:
      raise UserError(
        f"{where}: {tokens} positional entries are not a multiple of the "
        f"{num_patches} patches of a {crop}x{crop} crop; pass --crop_size."
      )
    num_tokens_t = tokens // num_patches
  if num_tokens_t is None:
    raise UserError(f"{where}: the average-pooling baseline does not record its frame count.")
  return crop, num_tokens_t


def from_scenic(
  source: Source,
  *,
  attention: str | None = None,
  attention_order: str | None = None,
  crop_size: int | None = None,
  num_classes: int | None = None,
  ignore: tuple[str, ...] = (),
) -> Converted:
  """scenic ViViT Models 1-4 (names as scenic's ViViT / SpaceTimeViViT create them)."""
  keys = names.Keys(source.tensors, source.path)
  keys.ignore(ignore)
  where = source.path
  kernel = keys.get("embedding/kernel")
  if kernel is None:
    keys.finish()
  if kernel.ndim == 4:  # 2D embedding of sampled frames ('temporal_sampling'): tubelet of 1.
    kernel = kernel[None]
  tubelet, patch, width = kernel.shape[0], kernel.shape[1], kernel.shape[-1]
  params: dict[str, Any] = {"embedding": {"kernel": kernel, "bias": keys.get("embedding/bias")}}

  if "SpatialTransformer/encoderblock_0/LayerNorm_0/scale" in keys:
    encoder = _scenic_factorised_encoder(keys, params, where)
  else:
    encoder = _scenic_single_encoder(keys, params, where, attention, attention_order)
  model, num_layers, heads_name, mlp_name, classifier, extra = encoder
  heads = keys.shape(heads_name)[1]
  mlp_dim = keys.shape(mlp_name)[1]
  if "output_projection/kernel" in keys:
    params["head"] = names.flax_dense(keys, "output_projection")
  keys.finish()

  # Flatten the (1, L, D) embeddings and class tokens; find the frame count.
  for name in list(params):
    if name.endswith("pos_embedding"):
      posemb = params[name]["embedding"]
      params[name]["embedding"] = posemb.reshape(-1, posemb.shape[-1])
  for name in ("cls", "spatial_cls", "temporal_cls"):
    if name in params:
      params[name] = params[name].reshape(1, 1, -1)
  crop, num_tokens_t = _scenic_frames(params, encoder, patch, crop_size, where)
  if model == "factorised_dot_product":
    for name, block in params["encoder"].items():
      if name.startswith("encoderblock_"):
        block["attention"] = _swap_head_halves(block["attention"])

  model_config = dict(
    variant=f"B/{patch}x{tubelet}",
    hidden_size=int(width),
    num_layers=num_layers,
    num_heads=int(heads),
    mlp_dim=int(mlp_dim),
    attention=model,
    classifier=classifier,
    gelu_approximate=True,
    layer_norm_epsilon=1e-6,
    **extra,
  )
  notes = [f"scenic ViViT ({model}): Flax nn.gelu (tanh), LayerNorm epsilon 1e-6"]
  if model == "factorised_dot_product":
    notes.append(
      "Model 4: scenic's temporal half of the heads comes first; swapped to vidtx's "
      "space-first order"
    )
  preprocessing = vivit_preprocessing(num_tokens_t * tubelet, crop)
  return vit.finish_converted(
    "vivit",
    params,
    model_config,
    source,
    num_classes=num_classes,
    labels=None,
    preprocessing=preprocessing,
    notes=notes,
  )
