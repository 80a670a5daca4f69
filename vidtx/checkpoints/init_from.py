"""Start any vidtx model from a checkpoint: the papers' rules for image ViTs, and name matching
(with embedding resizes) for video checkpoints of the same model family.

Config (config.init_from):
    checkpoint_path               '' (train from scratch), a converted-checkpoint directory
                                  (python -m vidtx.convert), a train.py workdir, or any format
                                  vidtx reads
    checkpoint_format             'auto' or a format of vidtx.checkpoints.FORMATS ('run' or a
                                  peer's format)
    step, which                   a train.py workdir's checkpoint: None and None (or 'best')
                                  take its best complete one (the newest where it ranks none),
                                  which='latest' the newest, step=N that step; the report's
                                  first note says which step was taken and its evaluation
    positional_embed_size_change  'tile' | 'resize' | 'resize_tile' (surgery.posemb_for_video)
    kernel_init_method            'central_frame' (Eq. 9) | 'inflate' (Eq. 8): ViViT's tubelet
                                  kernel from the ViT's 2D one
    skip_patterns                 regexes over parameter names ('encoderblock_0/mlp/Dense_0/
                                  kernel'); matching parameters keep their fresh initialisation

From an image ViT (vit_jax, big_vision, timm, HF ViT, or a converted space-only TimeSformer):
- TimeSformer (every scheme): patch embedding, class token, positional embedding (resized to
  the new patch grid), and in every block every attention stage (spatial, temporal, joint,
  local, global, width, height) from the ViT's attention with its LayerNorm, as the official
  code initialises the temporal attention from the spatial one; the stage projections
  (`temporal_fc`, ...) and the time embedding keep their initialisation (zero with
  model.temporal_init='image', so the model starts as the image model).
- ViViT Model 1 and 4: tubelet kernel by `kernel_init_method`, positional embedding tiled over
  the temporal indices (and/or resized), the encoder from the ViT's.
- ViViT Model 2: the spatial encoder, its class token and positional embedding from the ViT;
  the temporal encoder keeps its initialisation.
- ViViT Model 3: the spatial attention, LayerNorms and MLP from the ViT; the temporal attention
  keeps its initialisation (zero output, so each block starts as the ViT block).
- X-ViT: patch embedding, class token, positional embedding and the blocks from the ViT (the
  space-time mixing has no parameters of its own); the temporal aggregation is fresh.
- Every model: the head when its shape matches (same classes), else fresh.

From a video checkpoint of the same family (e.g. a converted Kinetics-400 TimeSformer for
Something-Something): every parameter by name; positional and time embeddings resized when
the patch grid or frame count differ; the head fresh when the class count differs.

The head's classes (initialise(class_names=...), the run's class names): when the checkpoint
has class names too, the head's columns are matched by name, not by index: a checkpoint whose
classes are in another order is permuted, one that shares only some classes gives those
columns (the others stay fresh), one that shares none gives a fresh head; each case is noted in
the report. When either side has no names, a head of the same shape is kept by index, with a
note that the names could not be compared.

Scanned layers (model.scan_layers): the rules work on per-layer names (encoderblock_{i}). The
model's parameters and the checkpoint's are brought to that layout first (vidtx.checkpoints.scan)
and the result is stacked back for a scanned model, so either layout initialises either model.
Report names and init_from.skip_patterns use the per-layer names.
"""

import collections
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import numpy as np

from vidtx.checkpoints import scan, store, surgery
from vidtx.errors import UserError
from vidtx.models import tokenizer

KERNEL_INIT_METHODS = ("central_frame", "inflate")


@dataclasses.dataclass
class Report:
  """What initialise() did, by parameter name."""

  source: str
  kind: str  # 'image ViT' or 'video <model_name>'
  loaded: list[str] = dataclasses.field(default_factory=list)
  adapted: list[str] = dataclasses.field(default_factory=list)  # loaded after a rule changed it
  fresh: list[str] = dataclasses.field(default_factory=list)
  skipped: list[str] = dataclasses.field(default_factory=list)
  unused: list[str] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    lines = [
      f"init_from {self.source} ({self.kind}): {len(self.loaded)} arrays loaded "
      f"({len(self.adapted)} adapted), {len(self.fresh)} fresh, "
      f"{len(self.skipped)} skipped by pattern, {len(self.unused)} unused"
    ]
    for title, items in (
      ("adapted", self.adapted),
      ("fresh", self.fresh),
      ("skipped", self.skipped),
      ("unused", self.unused),
    ):
      if items:
        lines.append(f"  {title}: " + ", ".join(_compress(items)))
    lines += [f"  note: {note}" for note in self.notes]
    return "\n".join(lines)


def _compress(names: list[str]) -> list[str]:
  """'encoderblock_3/temporal_fc/kernel' x 12 -> 'encoderblock_*/temporal_fc/kernel (x12)'."""
  counts: dict[str, int] = {}
  for name in names:
    key = re.sub(r"encoderblock_\d+", "encoderblock_*", name)
    counts[key] = counts.get(key, 0) + 1
  return [k if n == 1 else f"{k} (x{n})" for k, n in counts.items()]


def load_source(
  path: str, format: str = "auto", *, step: int | None = None, which: str | None = None
) -> store.Converted:
  """A converted directory, a train.py workdir (its best complete checkpoint, `which='latest'`
  the newest, or `step`: vidtx.run_files), or any format vidtx reads, as a Converted."""
  from vidtx import run_files
  from vidtx.checkpoints import convert_source  # The package imports this module.

  option = "config.init_from."
  is_run = not store.is_converted_dir(path) and (
    format == "run" or (format == "auto" and run_files.looks_like_run(path))
  )
  if is_run:
    return run_files.export_run(path, step=step, which=which, option=option)
  run_files.check_choice(step, which, option)
  if step is not None:
    raise UserError(
      f"{option}step={step} picks a checkpoint of a train.py run; {path} is not one (expected "
      "a directory with config.json and checkpoints/)."
    )
  if store.is_converted_dir(path):
    return store.load(path)
  return convert_source(path, format)


def is_image_vit(converted: store.Converted) -> bool:
  return (
    converted.model_name == "timesformer" and converted.model_config.get("attention") == "space"
  )


def initialise(
  params: Any,
  *,
  model_name: str,
  model_config: Any,
  init_config: Mapping,
  num_frames: int,
  crop_size: int,
  source: store.Converted | None = None,
  class_names: Sequence[str] | None = None,
) -> tuple[dict[str, Any], Report]:
  """`params` (a fresh init of the model) with what the checkpoint provides; and a Report.

  model_config: the validated config of the model (vidtx.models.*.make_config). num_frames,
  crop_size: the clips the model is built for. class_names: the run's classes (index i is
  class i), matched by name against the checkpoint's labels to place the head's columns. The
  returned parameters have the layout of `params` (stacked `encoderblocks` with
  model.scan_layers), the report per-layer names.
  """
  path = init_config["checkpoint_path"]
  if source is None:
    source = load_source(
      path,
      init_config.get("checkpoint_format", "auto") or "auto",
      step=init_config.get("step"),
      which=init_config.get("which") or None,
    )
  # A run: which of its checkpoints, with its evaluation (vidtx.run_files.choice_line).
  # (A converted directory keeps the line of its own export in vidtx_model.json: not said again.)
  chosen = None if store.is_converted_dir(path) else source.source.get("checkpoint")
  # The rules below work on per-layer blocks: unstack scanned layouts (a no-op otherwise).
  per_layer = scan.unstack_layers(flax.core.unfreeze(params))
  target = {
    k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(per_layer, sep="/").items()
  }
  source = dataclasses.replace(source, params=scan.unstack_layers(source.params))
  source_flat = flax.traverse_util.flatten_dict(source.params, sep="/")
  geometry = dict(
    patch=model_config.patch_size,
    tubelet=model_config.tubelet_size,
    num_frames=num_frames,
    crop=crop_size,
  )
  if is_image_vit(source):
    report = Report(path, "image ViT")
    proposal, adapted = _from_image_vit(
      source, source_flat, target, model_name, model_config, geometry, init_config, report
    )
  else:
    if source.model_name != model_name:
      raise UserError(
        f"init_from {path}: a {source.model_name} checkpoint cannot initialise a {model_name} "
        "model; start from an image ViT (or a converted space-only TimeSformer) instead."
      )
    report = Report(path, f"video {source.model_name}")
    proposal, adapted = _from_video(source, source_flat, target, geometry)
  _match_classes(proposal, adapted, target, source.labels, class_names, init_config, report)
  _check_numerics(source, model_config, report)
  if chosen:
    report.notes.insert(0, chosen)
  merged = _merge(target, proposal, adapted, init_config, report)
  if getattr(model_config, "scan_layers", False):
    merged = scan.stack_layers(merged)
  return merged, report


def _check_numerics(source: store.Converted, model_config: Any, report: Report) -> None:
  for field, default in (("gelu_approximate", None), ("layer_norm_epsilon", 1e-6)):
    theirs = source.model_config.get(field, default)
    ours = getattr(model_config, field)
    if theirs is not None and theirs != ours:
      report.notes.append(
        f"the checkpoint was trained with model.{field}={theirs}, this model uses {ours}"
      )


def _head_leaves(target: Mapping[str, np.ndarray], skip: Sequence[re.Pattern]) -> list[str]:
  """The classification head's leaves (the last axis is the class axis), unless skipped.

  Every family names its classifier 'head' (vidtx.models.layers.classification_head); X-ViT's
  MLP before it is 'head_hidden', whose last axis is not the classes.
  """
  num_classes = target["head/kernel"].shape[-1]
  return [
    name
    for name, value in target.items()
    if name.startswith("head/")
    and value.shape[-1:] == (num_classes,)
    and not any(p.search(name) for p in skip)
  ]


def _match_classes(
  proposal: dict[str, np.ndarray],
  adapted: set[str],
  target: Mapping[str, np.ndarray],
  source_labels: Sequence[str] | None,
  class_names: Sequence[str] | None,
  init_config: Mapping,
  report: Report,
) -> None:
  """Places the checkpoint's head columns by class name (in `proposal`), noting what it did.

  A head left in `proposal` with another class count is re-initialised by _merge.
  """
  if "head/kernel" not in target:
    return
  ours = target["head/kernel"].shape[-1]
  if class_names is not None and len(class_names) != ours:
    raise UserError(
      f"init_from {report.source}: {len(class_names)} class names for a model of "
      f"{ours} classes; pass one name per class of the run."
    )
  skip = [re.compile(p) for p in (init_config.get("skip_patterns") or ())]
  heads = [name for name in _head_leaves(target, skip) if name in proposal]
  if not heads:
    return
  theirs = proposal[heads[0]].shape[-1]
  if any(
    proposal[n].shape[:-1] != target[n].shape[:-1] or proposal[n].shape[-1] != theirs for n in heads
  ):
    return  # Not a head of this model's width: _merge reports it.
  why = None
  if class_names is None or source_labels is None:
    why = (
      "neither has class names"
      if class_names is None and source_labels is None
      else "the checkpoint has no class names (labels)"
      if source_labels is None
      else "the run passed no class names"
    )
  elif len(source_labels) != theirs:
    why = f"the checkpoint's {len(source_labels)} labels do not fit its {theirs}-class head"
  else:
    for side, names in (("the run's", class_names), ("the checkpoint's", source_labels)):
      repeated = sorted(n for n, count in collections.Counter(map(str, names)).items() if count > 1)
      if repeated:
        why = f"{side} class names repeat {repeated[:3]}"
  if why is not None:
    if theirs == ours:
      report.notes.append(f"head: kept by index; the class names could not be compared ({why})")
    return  # Another class count: _merge re-initialises the head.

  ours_names, theirs_names = [str(n) for n in class_names], [str(n) for n in source_labels]
  if ours_names == theirs_names:
    return  # The same classes in the same order: kept as it is.
  index = {name: j for j, name in enumerate(theirs_names)}
  pairs = [(i, index[name]) for i, name in enumerate(ours_names) if name in index]
  if not pairs:
    for name in heads:
      del proposal[name]  # _merge keeps the fresh initialisation and reports it.
    report.notes.append(
      f"head re-initialised: none of the run's {ours} class names is among the checkpoint's "
      f"{theirs} (the checkpoint: {_some(theirs_names)}; the run: {_some(ours_names)})"
    )
    return
  rows, columns = (np.array(x) for x in zip(*pairs, strict=True))
  for name in heads:
    head = np.array(target[name])  # A copy: the unmatched classes keep their fresh values.
    head[..., rows] = proposal[name][..., columns]
    proposal[name] = head
    adapted.add(name)
  if len(pairs) == ours == theirs:
    report.notes.append(f"head: {ours} classes remapped by name (the checkpoint's order differs)")
  else:
    missing = [name for name in ours_names if name not in index]
    report.notes.append(
      f"head: {len(pairs)} of the run's {ours} classes taken from the checkpoint's {theirs} by "
      f"name, {len(missing)} fresh" + (f" ({_some(missing)})" if missing else "")
    )


def _some(names: Sequence[str], limit: int = 5) -> str:
  """'a', 'b', 'c' and 2 more."""
  shown = ", ".join(repr(n) for n in names[:limit])
  return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _merge(
  target: dict[str, np.ndarray],
  proposal: dict[str, np.ndarray],
  adapted: set[str],
  init_config: Mapping,
  report: Report,
) -> dict[str, Any]:
  skip = [re.compile(p) for p in (init_config.get("skip_patterns") or ())]
  out, mismatched = {}, []
  for name, fresh in target.items():
    if any(p.search(name) for p in skip):
      report.skipped.append(name)
      out[name] = fresh
    elif name not in proposal:
      report.fresh.append(name)
      out[name] = fresh
    elif proposal[name].shape != fresh.shape:
      if name.startswith("head/"):
        # A different class count: the head is for the new task.
        report.fresh.append(name)
        if name == "head/kernel":
          report.notes.append(
            f"head re-initialised: the checkpoint has "
            f"{proposal[name].shape[-1]} classes, the model {fresh.shape[-1]}"
          )
        out[name] = fresh
      else:
        mismatched.append(f"{name}: checkpoint {proposal[name].shape}, model {fresh.shape}")
    else:
      out[name] = proposal[name].astype(fresh.dtype)
      report.loaded.append(name)
      if name in adapted:
        report.adapted.append(name)
  if mismatched:
    raise UserError(
      f"init_from {report.source}: {len(mismatched)} parameter(s) do not fit the "
      "model (list them in init_from.skip_patterns to keep them fresh):\n  "
      + "\n  ".join(mismatched)
    )
  report.unused = sorted(set(proposal) - set(target))
  return flax.traverse_util.unflatten_dict(out, sep="/")


# ----------------------------------------------------------------------------------------
# From an image ViT.
# ----------------------------------------------------------------------------------------

_VIT_BLOCK_PARTS = {
  "norm_spatial": "norm",
  "attention_spatial": "attention",
  "norm_mlp": "norm_mlp",
  "mlp": "mlp",
}


def _vit_blocks(flat: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
  """Per layer: {'norm/scale': ..., 'attention/query/kernel': ..., 'mlp/Dense_0/kernel': ...}."""
  blocks: dict[int, dict[str, np.ndarray]] = {}
  for name, value in flat.items():
    match = re.match(r"encoderblock_(\d+)/([^/]+)/(.*)$", name)
    if match:
      part = _VIT_BLOCK_PARTS[match.group(2)]
      blocks.setdefault(int(match.group(1)), {})[f"{part}/{match.group(3)}"] = value
  return [blocks[i] for i in range(len(blocks))]


def _timesformer_parts(target: dict[str, np.ndarray], report: Report) -> dict[str, str]:
  """{our block part: the ViT's}: every attention stage of the scheme (names in the target)
  from the ViT's attention."""
  stages = sorted(
    {m.group(1) for k in target if (m := re.match(r"encoderblock_0/attention_([a-z]+)/", k))}
  )
  parts = {"norm_mlp": "norm_mlp", "mlp": "mlp"}
  for stage in stages:
    parts[f"norm_{stage}"] = "norm"
    parts[f"attention_{stage}"] = "attention"
  if len(stages) > 1:
    report.notes.append(f"attention stages {stages} all start from the ViT's attention")
  return parts


def _tubelet_kernel(
  vit: dict[str, np.ndarray], geometry: dict[str, int], init_config: Mapping, report: Report
) -> np.ndarray:
  """ViViT's tubelet kernel (t, p, p, C, D) from the ViT's 2D one by init_from's
  kernel_init_method."""
  method = init_config.get("kernel_init_method") or "central_frame"
  if method not in KERNEL_INIT_METHODS:
    raise UserError(
      f"init_from.kernel_init_method={method!r}: expected one of {list(KERNEL_INIT_METHODS)}."
    )
  kernel = tokenizer.kernel_from_2d(vit["embedding/kernel"], geometry["tubelet"], method)
  kernel = np.asarray(kernel)
  report.notes.append(f"tubelet kernel from the 2D kernel by {method!r}")
  return kernel


def _from_image_vit(
  source: store.Converted,
  vit: dict[str, np.ndarray],
  target: dict[str, np.ndarray],
  model_name: str,
  model_config: Any,
  geometry: dict[str, int],
  init_config: Mapping,
  report: Report,
) -> tuple[dict[str, np.ndarray], set[str]]:
  blocks = _vit_blocks(vit)
  proposal: dict[str, np.ndarray] = {}
  adapted: set[str] = set()
  vit_patch = vit["embedding/kernel"].shape[0]
  if vit_patch != geometry["patch"]:
    raise UserError(
      f"init_from {report.source}: the ViT has {vit_patch}x{vit_patch} patches, "
      f"the model {geometry['patch']}x{geometry['patch']} (model.variant)."
    )
  vit_has_cls = "cls" in vit
  cls_entry, patch_posemb = surgery.split_class_entry(vit["pos_embedding/embedding"], vit_has_cls)
  old_grid = surgery.grid_size(patch_posemb.shape[0], f"init_from {report.source}")
  new_grid = (geometry["crop"] // geometry["patch"],) * 2
  size_change = init_config.get("positional_embed_size_change", "resize_tile")

  def posemb(name: str, num_frames: int) -> None:
    """Target table `name`: [class entry] + the ViT's patch entries for num_frames indices."""
    patch_part = surgery.posemb_for_video(
      patch_posemb, old_grid=old_grid, new_grid=new_grid, num_frames=num_frames, method=size_change
    )
    current = target.get(name)
    if current is None:
      return
    has_entry = current.shape[0] == patch_part.shape[0] + 1
    if has_entry:
      first = cls_entry if cls_entry is not None else current[:1]
      patch_part = np.concatenate([first, patch_part])
    proposal[name] = patch_part
    if old_grid != new_grid or num_frames > 1:
      adapted.add(name)

  def copy_block(prefix: str, i: int, parts: dict[str, str]) -> None:
    """Target `prefix/encoderblock_i/<ours>/...` <- ViT block part `<theirs>/...`."""
    for ours, theirs in parts.items():
      for name, value in blocks[i].items():
        if name.startswith(theirs + "/"):
          proposal[f"{prefix}encoderblock_{i}/{ours}/{name[len(theirs) + 1 :]}"] = value

  def copy_encoder(prefix: str, num_layers: int, parts: dict[str, str]) -> None:
    if num_layers > len(blocks):
      raise UserError(
        f"init_from {report.source}: the ViT has {len(blocks)} layers, the model's "
        f"{prefix or 'encoder'} {num_layers}."
      )
    if num_layers < len(blocks):
      report.notes.append(
        f"{prefix or 'encoder'}: the first {num_layers} of the ViT's {len(blocks)} layers"
      )
    for i in range(num_layers):
      copy_block(prefix, i, parts)
    for leaf in ("scale", "bias"):
      proposal[f"{prefix}encoder_norm/{leaf}"] = vit[f"encoder_norm/{leaf}"]

  plain = {"norm_attention": "norm", "attention": "attention", "norm_mlp": "norm_mlp", "mlp": "mlp"}
  for leaf in ("kernel", "bias"):
    if f"head/{leaf}" in vit:
      proposal[f"head/{leaf}"] = vit[f"head/{leaf}"]
  proposal["embedding/bias"] = vit["embedding/bias"]

  if model_name in ("timesformer", "xvit"):
    proposal["embedding/kernel"] = vit["embedding/kernel"]
    if vit_has_cls:
      proposal["cls"] = vit["cls"]
    posemb("pos_embedding/embedding", 1)
    parts = _timesformer_parts(target, report) if model_name == "timesformer" else plain
    copy_encoder("", model_config.num_layers, parts)
  elif model_name == "vivit":
    proposal["embedding/kernel"] = _tubelet_kernel(vit, geometry, init_config, report)
    adapted.add("embedding/kernel")
    temporal_indices = geometry["num_frames"] // geometry["tubelet"]
    attention = model_config.attention
    if attention == "factorised_encoder":
      if vit_has_cls:
        proposal["spatial_cls"] = vit["cls"]
      posemb("spatial_pos_embedding/embedding", 1)
      copy_encoder("spatial_encoder/", model_config.spatial_layers, plain)
    else:
      if vit_has_cls:
        proposal["cls"] = vit["cls"]
      posemb("pos_embedding/embedding", temporal_indices)
      if attention == "factorised_self_attention":
        parts = {
          "norm_spatial": "norm",
          "attention_spatial": "attention",
          "norm_mlp": "norm_mlp",
          "mlp": "mlp",
        }
      else:
        parts = plain
      copy_encoder("encoder/", model_config.num_layers, parts)
  else:
    raise UserError(f"init_from: no image-ViT rules for model {model_name!r}.")
  return proposal, adapted


# ----------------------------------------------------------------------------------------
# From a video checkpoint of the same family.
# ----------------------------------------------------------------------------------------


def _from_video(
  source: store.Converted,
  flat: dict[str, np.ndarray],
  target: dict[str, np.ndarray],
  geometry: dict[str, int],
) -> tuple[dict[str, np.ndarray], set[str]]:
  proposal = dict(flat)
  adapted: set[str] = set()
  src_patch = source.params["embedding"]["kernel"].shape[1 if source.model_name == "vivit" else 0]
  src_tubelet = source.params["embedding"]["kernel"].shape[0] if source.model_name == "vivit" else 1
  src_grid = (source.preprocessing["crop_size"] // src_patch,) * 2
  src_t = source.preprocessing["num_frames"] // src_tubelet
  new_grid = (geometry["crop"] // geometry["patch"],) * 2
  new_t = geometry["num_frames"] // geometry["tubelet"]

  for name, value in flat.items():
    if name not in target or target[name].shape == value.shape:
      continue
    if name in ("pos_embedding/embedding", "spatial_pos_embedding/embedding"):
      space_time = source.model_name == "vivit" and name == "pos_embedding/embedding"
      proposal[name] = _resize_table(
        value,
        target[name].shape[0],
        src_grid,
        new_grid,
        src_t if space_time else 1,
        new_t if space_time else 1,
      )
      adapted.add(name)
    elif name in ("time_embedding/embedding", "temporal_pos_embedding/embedding"):
      has_entry = name == "temporal_pos_embedding/embedding" and value.shape[0] == src_t + 1
      first, rest = surgery.split_class_entry(value, has_entry)
      rest = surgery.resize_1d(rest, target[name].shape[0] - int(has_entry))
      proposal[name] = rest if first is None else np.concatenate([first, rest])
      adapted.add(name)
  return proposal, adapted


def _resize_table(
  value: np.ndarray,
  target_length: int,
  old_grid: tuple[int, int],
  new_grid: tuple[int, int],
  old_t: int,
  new_t: int,
) -> np.ndarray:
  """A [(1+)T*h*w, D] table to new grid and temporal length (grid bilinear, time nearest)."""
  old_n, new_n = old_grid[0] * old_grid[1], new_grid[0] * new_grid[1]
  has_entry = value.shape[0] == old_t * old_n + 1
  if value.shape[0] != old_t * old_n + int(has_entry):
    raise UserError(
      f"positional embedding of {value.shape[0]} entries is not {old_t} x "
      f"{old_grid[0]}x{old_grid[1]} patches (+ a class entry)."
    )
  first, rest = surgery.split_class_entry(value, has_entry)
  d = value.shape[-1]
  # [T*h*w, D] -> T x [h*w, D] resized on the grid -> [T', h'*w', D] -> [T'*h'*w', D]
  frames = [
    surgery.resize_posemb_grid(f, old_grid, new_grid) for f in rest.reshape(old_t, old_n, d)
  ]
  frames = surgery.resize_1d(np.stack(frames), new_t)
  rest = frames.reshape(new_t * new_n, d)
  out = rest if first is None else np.concatenate([first, rest])
  if out.shape[0] != target_length:
    raise UserError(
      f"positional embedding resized to {out.shape[0]} entries; the model has {target_length}."
    )
  return out
