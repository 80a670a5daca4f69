"""The start-up checks and resolution of a config, shared by train.py, eval.py and
`python -m vidtx.config` (which prints their result): run once the command line's overrides are
applied, before any work; nothing here reads data or parameters.

- apply_recipe_defaults: the command line's overrides of what configs/finetune.py set (its
  model from init= and its clip geometry), named in a note; an overridden crop or short side
  takes the evaluation's short side along.
- optim.resolve_batch: the global batch, learning rate and evaluation batch for the devices
  this process sees.
- check_init_fits: an init_from checkpoint that cannot start the model stops the run in one
  line naming both shapes and the flags.
- geometry_warning: evaluation resizing far from training, in one line.
"""

from typing import Any

import ml_collections

from vidtx import models, optim, paths
from vidtx.checkpoints import vit
from vidtx.errors import UserError

# Evaluation's short side over training's beyond this factor (either way) is flagged.
GEOMETRY_FACTOR = 2.0


def check_config(config: ml_collections.ConfigDict) -> list[str]:
  """The lines to print at start-up: overrides of the recipe's values (apply_recipe_defaults),
  the batch and learning rate for this many devices (optim.resolve_batch), a geometry warning
  (geometry_warning); raises ValueError when the init checkpoint cannot start the model
  (check_init_fits) or the batch does not split over the devices. May set
  dataset_configs.eval_min_resize (see apply_recipe_defaults), batch_size, eval_batch_size and
  lr_configs.base_learning_rate (see optim.resolve_batch)."""
  lines = apply_recipe_defaults(config) + optim.resolve_batch(config)
  check_init_fits(config)
  warning = geometry_warning(config.dataset_configs)
  return lines + ([warning] if warning else [])


def _differences(config: ml_collections.ConfigDict, group: str) -> dict[str, tuple[Any, Any]]:
  """Field -> (recipe's value, current value) of config.<group> fields that differ from
  config.recipe_defaults.<group>."""
  defaults = config.recipe_defaults.get(group) or {}
  return {
    field: (value, config[group].get(field))
    for field, value in defaults.items()
    if config[group].get(field) != value
  }


def apply_recipe_defaults(config: ml_collections.ConfigDict) -> list[str]:
  """Tells the command line's overrides from what the recipe set (config.recipe_defaults, which
  configs/finetune.py writes: the model fields it followed from init= and its clip geometry),
  and returns the notes to print.

  An override wins, with a note naming it and the recipe's value. An overridden crop_size or
  min_resize takes dataset_configs.eval_min_resize along unless that is overridden too:
  evaluation then resizes short sides as training does (the recipe's eval_min_resize /
  min_resize, at least the crop), so that a 32-pixel crop is not evaluated on a 224-pixel frame.
  Configs without recipe_defaults (every other recipe, older runs) are left as they are.
  """
  if not config.get("recipe_defaults"):
    return []
  source = config.recipe_defaults.get("source") or ""
  model = _differences(config, "model")
  geometry = _differences(config, "dataset_configs")
  lines = []
  changed = [(f"model.{k}", v) for k, v in model.items()]
  changed += [(f"dataset_configs.{k}", v) for k, v in geometry.items()]
  if changed:
    where = f" ({source})" if source else ""
    lines.append(
      f"note: --config overrides win over configs/finetune.py's values{where}: "
      + ", ".join(f"{name}={ours} (recipe: {theirs})" for name, (theirs, ours) in changed)
      + "."
    )
  dc, defaults = config.dataset_configs, config.recipe_defaults.dataset_configs
  follows = {"crop_size", "min_resize"} & set(geometry)
  if follows and "eval_min_resize" in defaults and "eval_min_resize" not in geometry:
    ratio = defaults.eval_min_resize / defaults.min_resize
    dc.eval_min_resize = max(int(dc.crop_size), round(dc.min_resize * ratio))
    given = ", ".join(f"{k}={dc[k]}" for k in sorted(follows))
    lines.append(
      f"note: dataset_configs.eval_min_resize={dc.eval_min_resize} follows the overridden "
      f"{given} (evaluation resizes short sides as training does); "
      "--config.dataset_configs.eval_min_resize sets it."
    )
  return lines


def check_init_fits(config: ml_collections.ConfigDict) -> None:
  """ValueError in one line, before any work, when config.init_from's checkpoint (a converted
  directory or a train.py run: its sizes read from its description) cannot start the model:
  both shapes, what differs, and the flags that make them agree."""
  init = config.get("init_from") or {}
  path = init.get("checkpoint_path") or ""
  if not path or init.get("skip_patterns") or not paths.isdir(path):
    return  # Parameters kept fresh on purpose, or a format read only by converting it:
    # init_from checks them parameter by parameter.
  shape = vit.read_shape(path)
  if shape is None:
    return
  if config.model_name not in models.MODELS:
    return  # models.build names it.
  model = models.MODELS[config.model_name].make_config(config.model)
  misfits = vit.misfits(shape, config.model_name, model)
  if not misfits:
    return
  dc = config.dataset_configs
  ours = vit.shape_of(
    config.model_name,
    config.model.to_dict(),
    crop_size=dc.get("crop_size"),
    num_frames=dc.get("num_frames"),
  )
  source = (config.get("recipe_defaults") or {}).get("source") or ""
  name = source or f"config.init_from.checkpoint_path={path}"
  if misfits[0][0] == "model_name":
    raise UserError(
      f"{name} holds a {shape.describe(family=True)}, which cannot start a {config.model_name}; "
      f"pass an image ViT or a {config.model_name} checkpoint."
    )
  overridden = _differences(config, "model") if source else {}
  words = dict(hidden_size="width", num_heads="heads", mlp_dim="MLP", patch_size="patch")
  words.update(num_layers="layers", spatial_layers="spatial layers", tubelet_size="tubelet")
  words.update(attention="attention")
  differ = ", ".join(f"{words[f]} {theirs} vs {mine}" for f, theirs, mine in misfits)
  fixes = []
  for field, theirs, _ in misfits:
    if field in ("patch_size", "tubelet_size"):  # Both live in model.variant.
      letter = str(config.model.variant).split("/")[0]
      tubelet = ours.tubelet_size if shape.is_image_vit else shape.tubelet_size
      field, theirs = (
        "variant",
        f"{letter}/{shape.patch_size}" + (f"x{tubelet}" if tubelet > 1 else ""),
      )
    if field in overridden:
      fix = f"drop --config.model.{field}={overridden[field][1]}"
    else:
      fix = f"--config.model.{field}={theirs}"
    if fix not in fixes:
      fixes.append(fix)
  hint = "" if source else " (configs/finetune.py's init= sets them by itself)"
  raise UserError(
    f"{name} holds {shape.describe(family=True)}; the model is {ours.describe(family=True)}: "
    f"{differ}. To start from it: {' '.join(fixes)}{hint}."
  )


def geometry_warning(dataset_configs: ml_collections.ConfigDict) -> str | None:
  """One line when evaluation resizes frames far from how training does (their short sides
  over GEOMETRY_FACTOR apart): its crops then see another part of the frame, at another
  scale, and validation can sit at chance while training learns."""
  dc = dataset_configs
  if dc.get("crop_size") is None or dc.get("min_resize") is None:
    return None  # The reader's validation names it.
  crop, train = int(dc.crop_size), int(dc.min_resize)
  evaluation = int(dc.get("eval_min_resize") or train)
  if 1 / GEOMETRY_FACTOR <= evaluation / train <= GEOMETRY_FACTOR:
    return None
  return (
    f"warning: evaluation resizes short sides to {evaluation} "
    f"(dataset_configs.eval_min_resize), training to {train} (dataset_configs.min_resize), "
    f"both then crop {crop} (dataset_configs.crop_size): a validation crop sees "
    f"{crop / evaluation:.0%} of the short side, a training crop {crop / train:.0%}, so "
    "validation may stay at chance however well training goes; "
    f"--config.dataset_configs.eval_min_resize={max(crop, train)} evaluates as training sees."
  )
