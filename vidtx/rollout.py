"""Attention rollout (Abnar & Zuidema, 2020): how much each input patch flows into a prediction.

TimeSformer's supplementary (Fig. 1) shows it for divided space-time attention. Every attention
stage mixes tokens: a token's output is its input (the residual) plus its attention over the
tokens of its group. Rollout models a stage by the row-stochastic matrix Ã = (I + A) / 2, A the
attention weights fused over heads, a network by the product of its stages' matrices, and reads
one row of the product: the class token's, or the average of the tokens' for 'gap' models. That
row says how much of each input token reaches the representation that is classified. MLPs and
LayerNorms act on one token at a time and are left out, as in the paper.

Factorised attention never forms an (M x M) matrix for M tokens, and neither does this. A stage
is described by its weights on groups (the patterns' reshapes, vidtx.models.attention) and the
position of each group member among the M tokens, found by applying the model's own grouping to
token indices. The readout row is carried backwards through the stages, group by group: memory
O(M) per row, time O(M x L) per stage for groups of L tokens.

What the models imply:
- A class token copied into every group (TimeSformer's last stage of a block) has as its row
  the average of its copies' rows, as the model averages the copies' updates.
- A projected stage (TimeSformer's temporal_fc, ...) leaves the class token out: its row is
  the identity's.
- Stages that read the same input and sum their updates (TimeSformer 'parallel') give
  Ã = (I + sum_s A_s) / (1 + number of those stages the token takes part in).
- TimeSformer 'space' reads the average of the frames' class tokens; ViViT Model 2 weights the
  spatial rollout of each temporal index by the temporal encoder's rollout over the indices.

Supported: every TimeSformer scheme, ViViT Models 1-3. ViViT Model 4 splits each attention's
heads between space and time, and X-ViT shifts channels between frames inside its attention,
so no single weight matrix per stage describes them: they raise ValueError. Models with
model.scan_layers work too (their stacked maps are split per layer).

    logits, heat = rollout(model, params, clips)        # heat (B, T', h, w), see `rollout`
    image = rollout_image(frames, heat)                 # PIL image: frames above, heat below
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

from vidtx.checkpoints import scan
from vidtx.errors import UserError
from vidtx.models import attention, timesformer, vivit

# How the heads' weights (..., heads, L, L) become one row-stochastic matrix (..., L, L). Abnar &
# Zuidema average them; max and min (taken per entry, rows renormalised) are common variants.
HEAD_FUSIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "mean": lambda w: jnp.mean(w, axis=-3),
  "max": lambda w: _normalise_rows(jnp.max(w, axis=-3)),
  "min": lambda w: _normalise_rows(jnp.min(w, axis=-3)),
}


def _normalise_rows(w: jax.Array) -> jax.Array:
  return w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1e-12)


class Stage(NamedTuple):
  """One attention module's weights in token coordinates.

  path: the module's path in the model (where it sows 'attention_weights'); positions (G, L):
  the token position of member i of group g, in the order the module saw them; scale (G, L):
  1, or 1/G for the copies of a class token that joins every group.
  """

  path: tuple[str, ...]
  positions: np.ndarray
  scale: np.ndarray


class Plan(NamedTuple):
  """A network as rollout sees it: M token positions, the steps from input to output (each a
  tuple of stages that read the same input; chained stages are steps of one), the readout rows
  (K, M), and the positions of the patch tokens (T', h, w) whose relevance is the heat map."""

  num_tokens: int
  steps: tuple[tuple[Stage, ...], ...]
  readout: np.ndarray
  patches: np.ndarray


# ---------------------------------------------------------------------------------------------
# Plans: per model family, from its config and the token grid.
# ---------------------------------------------------------------------------------------------


def _group_positions(
  grouping: attention.Grouping, positions: np.ndarray, grid: attention.Grid
) -> np.ndarray:
  """Applies a model grouping to token positions (T, N) -> their groups (G, L)."""
  # (T, N) -> (1, T, N, 1): the grouping's (B, T, N, D) layout. Groupings only reshape and
  # transpose, so a numpy array stays numpy (constant under jit).
  groups, _ = grouping(np.asarray(positions)[None, :, :, None], grid)
  return np.asarray(groups)[0, :, :, 0]  # (1, G, L, 1) -> (G, L)


def _with_class_token(groups: np.ndarray, cls_position: int) -> tuple[np.ndarray, np.ndarray]:
  """(G, L) positions -> (G, 1+L) with the class token in front of every group, and its scale."""
  g, length = groups.shape
  positions = np.concatenate([np.full((g, 1), cls_position), groups], axis=1)
  scale = np.ones((g, 1 + length), np.float32)
  scale[:, 0] = 1.0 / g  # The copies' updates are averaged: each carries 1/G of the row.
  return positions, scale


def _plain(path: tuple[str, ...], positions: np.ndarray) -> Stage:
  return Stage(path, positions, np.ones(positions.shape, np.float32))


def _uniform(num_tokens: int, positions: np.ndarray) -> np.ndarray:
  row = np.zeros(num_tokens, np.float32)
  row[positions.ravel()] = 1.0 / positions.size
  return row


def _one_hot(num_tokens: int, position: int) -> np.ndarray:
  row = np.zeros(num_tokens, np.float32)
  row[position] = 1.0
  return row


def _timesformer_plan(config: timesformer.TimeSformerConfig, t: int, grid: attention.Grid) -> Plan:
  h, w = grid
  use_cls = config.classifier == "token"
  blocks = range(config.num_layers)
  if config.attention == "space":
    # An image model per frame: positions (T, [cls,] N), each frame its own class token.
    per_frame = 1 + h * w if use_cls else h * w
    positions = np.arange(t * per_frame).reshape(t, per_frame)
    stage = lambda i: _plain((f"encoderblock_{i}", "attention_spatial"), positions)  # noqa: E731
    steps = tuple((stage(i),) for i in blocks)
    patches = positions[:, 1:] if use_cls else positions
    # The model averages the frames' tokens, then reads the class token (or all tokens).
    readout = _uniform(t * per_frame, positions[:, 0] if use_cls else patches)
    return Plan(t * per_frame, steps, readout[None], patches.reshape(t, h, w))

  # One class token (position 0) and the patches (T, N) after it.
  offset = int(use_cls)
  patches = offset + np.arange(t * h * w).reshape(t, h * w)
  num_tokens = offset + t * h * w

  def stage(i: int, spec: timesformer.Stage) -> Stage:
    groups = _group_positions(timesformer.GROUPINGS[spec.name], patches, grid)
    path = (f"encoderblock_{i}", f"attention_{spec.name}")
    if use_cls and not spec.projected:  # An unprojected stage carries the class token.
      return Stage(path, *_with_class_token(groups, 0))
    return _plain(path, groups)

  stages = timesformer.SCHEMES[config.attention]
  if config.attention in timesformer.PARALLEL:
    steps = tuple(tuple(stage(i, s) for s in stages) for i in blocks)
  else:
    steps = tuple((stage(i, s),) for i in blocks for s in stages)
  readout = _one_hot(num_tokens, 0) if use_cls else _uniform(num_tokens, patches)
  return Plan(num_tokens, steps, readout[None], patches.reshape(t, h, w))


def _encoder_steps(
  prefix: str,
  num_layers: int,
  positions: np.ndarray,
) -> tuple[tuple[Stage, ...], ...]:
  """encoder.Encoder blocks whose one attention sees groups of `positions` (G, L)."""
  return tuple(
    (_plain((prefix, f"encoderblock_{i}", "attention"), positions),) for i in range(num_layers)
  )


def _vivit_plans(config: vivit.ViViTConfig, t: int, grid: attention.Grid) -> tuple[Plan, ...]:
  """ViViT: one plan, or for Model 2 the spatial and the temporal encoder's."""
  h, w = grid
  n = h * w
  use_cls = config.classifier == "token"
  offset = int(use_cls)
  if config.attention == "spatio_temporal":
    # One sequence [cls,] T*N, all tokens in one group.
    num_tokens = offset + t * n
    everything = np.arange(num_tokens)[None]  # (1, M)
    patches = offset + np.arange(t * n)
    readout = _one_hot(num_tokens, 0) if use_cls else _uniform(num_tokens, everything)
    return (
      Plan(
        num_tokens,
        _encoder_steps("encoder", config.num_layers, everything),
        readout[None],
        patches.reshape(t, h, w),
      ),
    )
  if config.attention == "factorised_self_attention":
    patches = np.arange(t * n).reshape(t, n)
    groupings = {
      "space": ("spatial", attention.frame_groups),
      "time": ("temporal", attention.location_groups),
    }
    steps = []
    for i in range(config.num_layers):
      for axis in config.attention_order.split("_"):
        name, grouping = groupings[axis]
        steps.append(
          (
            _plain(
              ("encoder", f"encoderblock_{i}", f"attention_{name}"),
              _group_positions(grouping, patches, grid),
            ),
          )
        )
    return (Plan(t * n, tuple(steps), _uniform(t * n, patches)[None], patches.reshape(t, h, w)),)
  if config.attention == "factorised_encoder":
    # Spatial encoder: every temporal index is an image ([cls,] N tokens); one readout row each.
    per_index = offset + n
    positions = np.arange(t * per_index).reshape(t, per_index)
    patches = positions[:, offset:]
    frame_rows = np.stack(
      [
        _one_hot(t * per_index, positions[i, 0]) if use_cls else _uniform(t * per_index, patches[i])
        for i in range(t)
      ]
    )
    spatial = Plan(
      t * per_index,
      _encoder_steps("spatial_encoder", config.spatial_layers, positions),
      frame_rows,
      patches.reshape(t, h, w),
    )
    # Temporal encoder over [cls,] T representations; its patches are the temporal indices.
    num_tokens = offset + t
    everything = np.arange(num_tokens)[None]
    readout = _one_hot(num_tokens, 0) if use_cls else _uniform(num_tokens, everything)
    temporal = Plan(
      num_tokens,
      _encoder_steps("temporal_encoder", config.temporal_layers, everything),
      readout[None],
      offset + np.arange(t),
    )
    return spatial, temporal
  raise UserError(
    f"Attention rollout: ViViT model.attention={config.attention!r} splits each attention's "
    "heads between space and time, which one weight matrix per stage does not describe; "
    "supported: spatio_temporal (Model 1), factorised_encoder (Model 2), "
    "factorised_self_attention (Model 3)."
  )


def plans(model: nn.Module, clip_shape: Sequence[int]) -> tuple[Plan, ...]:
  """The rollout plan(s) of `model` (built by vidtx.models.build) for clips (B, T, H, W, C)."""
  config = model.config
  _, frames, height, width, _ = clip_shape
  grid = (height // config.patch_size, width // config.patch_size)
  if isinstance(model, timesformer.TimeSformer):
    return (_timesformer_plan(config, frames, grid),)
  if isinstance(model, vivit.ViViT):
    return _vivit_plans(config, frames // config.tubelet_size, grid)
  raise UserError(
    f"Attention rollout: {type(model).__name__} is not supported. X-ViT's attention shifts "
    "channels between neighbouring frames, so no single weight matrix per stage describes it; "
    "supported: TimeSformer (every model.attention) and ViViT Models 1-3."
  )


# ---------------------------------------------------------------------------------------------
# Rollout.
# ---------------------------------------------------------------------------------------------


def _weights(intermediates: Any, path: tuple[str, ...]) -> jax.Array:
  node = intermediates
  for key in path:
    if key not in node:
      raise UserError(
        f"Attention rollout: the model sowed no attention weights at "
        f"{'/'.join(path)} (found {sorted(node)} at {key!r})."
      )
    node = node[key]
  return node["attention_weights"][0]  # sow keeps a tuple of values.


def propagate(plan: Plan, intermediates: Any, batch: int, head_fusion: str = "mean") -> jax.Array:
  """The readout rows carried back through the plan: (B, K, M) relevance of every position.

  Each row sums to the readout row's sum (every step's matrix is row-stochastic).
  """
  fuse = HEAD_FUSIONS[head_fusion]
  rows = jnp.broadcast_to(jnp.asarray(plan.readout), (batch,) + plan.readout.shape)
  for step in reversed(plan.steps):
    # How many of the step's stages each position takes part in (as a query).
    counts = np.zeros(plan.num_tokens, np.float32)
    for stage in step:
      counts[np.unique(stage.positions)] += 1
    # rows @ (I + sum_s A_s) / (1 + counts): scale the rows first, then residual + each stage.
    scaled = rows / (1.0 + counts)[None, None]  # (B, K, M) / (1, 1, M)
    new_rows = scaled
    for stage in step:
      g, length = stage.positions.shape
      weights = _weights(intermediates, stage.path)  # (B*G, heads, L, L)
      if weights.shape[0] != batch * g or weights.shape[-1] != length:
        raise UserError(
          f"Attention rollout: weights at {'/'.join(stage.path)} are "
          f"{weights.shape}; expected ({batch}*{g}, heads, {length}, {length})."
        )
      # (B*G, heads, L, L) -> (B, G, heads, L, L) -> (B, G, L, L)
      weights = fuse(weights.reshape((batch, g) + weights.shape[1:]))
      # Rows at the group members (B, K, G, L); a class token's copies share its row.
      members = scaled[:, :, stage.positions] * stage.scale[None, None]  # (B, K, G, L)
      flow = jnp.einsum("bkgi,bgij->bkgj", members, weights)
      new_rows = new_rows.at[:, :, stage.positions].add(flow)  # Copies add up at their token.
    rows = new_rows
  return rows


def rollout_from_intermediates(
  model: nn.Module, intermediates: Any, clip_shape: Sequence[int], head_fusion: str = "mean"
) -> jax.Array:
  """Heat (B, T', h, w) from the attention weights a model sowed (see `rollout`)."""
  if head_fusion not in HEAD_FUSIONS:
    raise UserError(f"head_fusion={head_fusion!r}: expected one of {sorted(HEAD_FUSIONS)}.")
  batch = clip_shape[0]
  # A model with scan_layers sows each stack's maps stacked on a layer axis under
  # `encoderblocks`; the plans name per-layer blocks.
  intermediates = scan.unstack_layers(intermediates)
  model_plans = plans(model, clip_shape)
  first = model_plans[0]
  rows = propagate(first, intermediates, batch, head_fusion)  # (B, K, M)
  if len(model_plans) == 2:
    # ViViT Model 2: the temporal encoder's relevance of each temporal index weights that
    # index's spatial rollout (no temporal encoder: the indices are averaged).
    second = model_plans[1]
    if second.steps:
      temporal = propagate(second, intermediates, batch, head_fusion)[:, 0]  # (B, M_t)
      index_weights = temporal[:, second.patches]  # (B, T')
    else:
      index_weights = jnp.full((batch, len(second.patches)), 1.0 / len(second.patches))
    rows = jnp.einsum("bk,bkm->bm", index_weights, rows)[:, None]  # (B, 1, M)
  return rows[:, 0, first.patches]  # (B, M) -> (B, T', h, w)


@functools.cache
def _jitted_rollout(model: nn.Module, head_fusion: str):
  def run(params: Any, clips: jax.Array) -> tuple[jax.Array, jax.Array]:
    (logits, _), state = model.apply(
      {"params": params}, clips, train=False, mutable=["intermediates"]
    )
    heat = rollout_from_intermediates(model, state["intermediates"], clips.shape, head_fusion)
    return logits, heat

  # Cached per (model, head fusion): inside one jit, the per-head maps are dropped once used.
  return jax.jit(run)


def rollout(
  model: nn.Module, params: Any, clips: jax.Array | np.ndarray, head_fusion: str = "mean"
) -> tuple[jax.Array, jax.Array]:
  """Logits (B, num_classes) and attention rollout heat (B, T', h, w) of clips (B, T, H, W, C).

  T' is the model's number of temporal indices (frames, or tubelets for ViViT), (h, w) its patch
  grid. heat[b, t, i, j] is the share of the readout (class token or token average) that flows
  from patch (i, j) of temporal index t; the shares of all patches and class tokens sum to 1
  (less for ViViT Model 2 with a class token, whose temporal class token takes a share).
  head_fusion: 'mean' (Abnar & Zuidema), 'max' or 'min' over heads.
  """
  if head_fusion not in HEAD_FUSIONS:
    raise UserError(f"head_fusion={head_fusion!r}: expected one of {sorted(HEAD_FUSIONS)}.")
  plans(model, np.shape(clips))  # Unsupported models fail here, before tracing.
  return _jitted_rollout(model, head_fusion)(params, jnp.asarray(clips, jnp.float32))


# ---------------------------------------------------------------------------------------------
# Pictures.
# ---------------------------------------------------------------------------------------------


def heat_overlay(
  frames: np.ndarray, heat: np.ndarray, *, alpha: float = 0.8, colormap: str = "inferno"
) -> np.ndarray:
  """uint8 frames (T, H, W, 3) with the clip's heat (T', h, w) laid over them: uint8 (T, H, W, 3).

  The heat is scaled to [0, 1] between its minimum and maximum over the whole clip (so frames
  compare, and the share every token keeps through the residual connections drops out), resized
  to the frame bilinearly, coloured with `colormap` and blended, in proportion to its strength,
  over the frame in grey; frame t shows temporal index t * T' // T (a tubelet covers several
  frames).
  """
  import matplotlib  # Imported here: only pictures need it.

  frames = np.asarray(frames)
  heat = np.asarray(heat, np.float32)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise UserError(
      f"heat_overlay: frames {frames.dtype} {frames.shape}; expected uint8 (T, H, W, 3)."
    )
  if heat.ndim != 3 or frames.shape[0] % heat.shape[0]:
    raise UserError(
      f"heat_overlay: heat {heat.shape} for {frames.shape[0]} frames; expected "
      "(T', h, w) with T' dividing the number of frames."
    )
  num_frames, height, width, _ = frames.shape
  heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)
  cmap = matplotlib.colormaps[colormap]
  out = np.empty_like(frames)
  for t in range(num_frames):
    index = t * heat.shape[0] // num_frames
    # (h, w) -> (H, W): bilinear, in float ('F' mode) so nothing is rounded before colouring.
    strength = np.asarray(Image.fromarray(heat[index]).resize((width, height), Image.BILINEAR))
    strength = np.clip(strength, 0.0, 1.0)[..., None]  # (H, W, 1)
    colour = cmap(strength[..., 0])[..., :3] * 255.0  # (H, W, 3)
    # On the frame in grey, so the colours read as heat and not as the scene's own colours.
    grey = frames[t].astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    blend = alpha * strength
    out[t] = (
      np.clip(grey[..., None] * (1 - blend) + colour * blend, 0, 255).round().astype(np.uint8)
    )
  return out


def rollout_image(
  frames: np.ndarray,
  heat: np.ndarray,
  titles: Sequence[str] | None = None,
  *,
  min_frame_size: int = 96,
) -> Image.Image:
  """One picture of V clips: for each, a title line, its frames, then the frames with the heat.

  frames: uint8 (V, T, H, W, 3); heat (V, T', h, w). Small frames are enlarged (nearest) to at
  least `min_frame_size` pixels, so 32-pixel synthetic clips stay readable.
  """
  frames = np.asarray(frames)
  heat = np.asarray(heat)
  if frames.ndim != 5 or heat.ndim != 4 or len(frames) != len(heat):
    raise UserError(
      f"rollout_image: frames {frames.shape}, heat {heat.shape}; expected (V, T, "
      "H, W, 3) and (V, T', h, w) with the same V."
    )
  titles = list(titles) if titles is not None else [f"clip {v + 1}" for v in range(len(frames))]
  if len(titles) != len(frames):
    raise UserError(f"rollout_image: {len(titles)} titles for {len(frames)} clips.")
  num_views, num_frames, height, width, _ = frames.shape
  zoom = max(1, math.ceil(min_frame_size / max(height, width)))
  gap, title_height = 4, 16
  frame_h, frame_w = height * zoom, width * zoom
  row_w = num_frames * frame_w + (num_frames - 1) * gap
  block_h = title_height + 2 * frame_h + gap
  canvas = Image.new("RGB", (row_w, num_views * block_h + (num_views - 1) * 2 * gap), "white")
  draw = ImageDraw.Draw(canvas)
  for v in range(num_views):
    top = v * (block_h + 2 * gap)
    draw.text((2, top + 2), titles[v], fill="black")
    overlays = heat_overlay(frames[v], heat[v])
    for t in range(num_frames):
      left = t * (frame_w + gap)
      for row, picture in enumerate((frames[v, t], overlays[t])):
        tile = Image.fromarray(picture).resize((frame_w, frame_h), Image.NEAREST)
        canvas.paste(tile, (left, top + title_height + row * (frame_h + gap)))
  return canvas
