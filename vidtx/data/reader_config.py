"""The reader's dataset_configs fields: sampling modes, normalisation presets, augmentation
defaults, bad-record caps, and the checks of them (validate_dataset_configs)."""

import math
from typing import Any

import ml_collections

from vidtx import device_augment
from vidtx.errors import UserError

SAMPLINGS = ("stride", "timesformer", "segment")
EVAL_SAMPLINGS = SAMPLINGS + ("whole_video",)

# With skip_bad_records, the fraction cap applies from this many bad records on, so that one
# bad record among the first few read does not stop a run.
MIN_BAD_RECORDS = 10
DEFAULT_MAX_BAD_FRACTION = 0.1

# dataset_configs.normalization presets: per-channel (mean, std) for pixels in [0, 1].
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
  "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1]: ViT / ViViT (zero_centering=True).
  "timesformer": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),  # TimeSformer, X-ViT.
  "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
  "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # [0, 1] (zero_centering=False).
}

# dataset_configs.augmentation_params: scenic's names, vidtx's defaults (all off but the crop).
AUGMENTATION_DEFAULTS = dict(
  do_jitter_scale=False,
  scale_min_factor=0.9,
  scale_max_factor=1.33,
  prob_scale_jitter=1.0,
  do_color_augment=False,
  prob_color_augment=0.8,
  prob_color_drop=0.0,
  do_rand_augment=False,
  rand_augment_num_layers=2,
  rand_augment_magnitude=15.0,
  random_erasing_probability=0.0,
)


def _three_numbers(
  dataset_configs: ml_collections.ConfigDict, field: str, positive: bool
) -> tuple[float, float, float]:
  value = dataset_configs.get(field)
  expected = "3 positive numbers" if positive else "3 finite numbers"
  try:
    numbers = () if isinstance(value, str) else tuple(float(x) for x in value)
  except (TypeError, ValueError):
    numbers = ()
  if (
    len(numbers) != 3
    or not all(math.isfinite(x) for x in numbers)
    or (positive and min(numbers) <= 0)
  ):
    raise UserError(
      f"dataset_configs.{field}={value!r}: expected {expected} (per channel, for pixels in [0, 1])."
    )
  return numbers[0], numbers[1], numbers[2]


def normalisation(
  dataset_configs: ml_collections.ConfigDict,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
  """Per-channel (mean, std) of the reader: input = (pixel / 255 - mean) / std.

  Explicit dataset_configs.mean and std (both) win; else the preset dataset_configs.normalization
  (a key of NORMALIZATIONS); else the legacy zero_centering (default True: 'vit', [-1, 1]; False:
  'none', [0, 1]). Raises ValueError naming the field when a value is invalid.
  """
  dc = dataset_configs
  mean, std = dc.get("mean"), dc.get("std")
  if mean is not None or std is not None:
    if mean is None or std is None:
      given, missing = ("mean", "std") if std is None else ("std", "mean")
      raise UserError(
        f"dataset_configs.{given} is set but dataset_configs.{missing} is not; "
        "set both (or neither, to use dataset_configs.normalization)."
      )
    return _three_numbers(dc, "mean", positive=False), _three_numbers(dc, "std", positive=True)
  name = dc.get("normalization")
  if name is not None:
    if name not in NORMALIZATIONS:
      raise UserError(
        f"dataset_configs.normalization={name!r}: expected one of {sorted(NORMALIZATIONS)}."
      )
    return NORMALIZATIONS[name]
  return NORMALIZATIONS["vit" if bool(dc.get("zero_centering", True)) else "none"]


def augmentation_params(dataset_configs: ml_collections.ConfigDict) -> dict[str, Any]:
  """dataset_configs.augmentation_params over AUGMENTATION_DEFAULTS, checked."""
  given = dict(dataset_configs.get("augmentation_params") or {})
  unknown = sorted(set(given) - set(AUGMENTATION_DEFAULTS))
  if unknown:
    raise UserError(
      f"dataset_configs.augmentation_params has unknown fields {unknown}; "
      f"expected some of {sorted(AUGMENTATION_DEFAULTS)}."
    )
  params = {**AUGMENTATION_DEFAULTS, **given}
  for field in (
    "prob_scale_jitter",
    "prob_color_augment",
    "prob_color_drop",
    "random_erasing_probability",
  ):
    if not 0.0 <= float(params[field]) <= 1.0:
      raise UserError(
        f"dataset_configs.augmentation_params.{field}={params[field]}: expected "
        "a probability in [0, 1]."
      )
  if not 0 < float(params["scale_min_factor"]) <= float(params["scale_max_factor"]):
    raise UserError(
      "dataset_configs.augmentation_params: expected 0 < scale_min_factor <= "
      f"scale_max_factor, got {params['scale_min_factor']} and {params['scale_max_factor']}."
    )
  if int(params["rand_augment_num_layers"]) < 0 or float(params["rand_augment_magnitude"]) < 0:
    raise UserError(
      "dataset_configs.augmentation_params: rand_augment_num_layers and "
      "rand_augment_magnitude must be >= 0."
    )
  return params


def device_augmentation(dataset_configs: ml_collections.ConfigDict) -> device_augment.Augmentation:
  """What the train step applies on the accelerator to the reader's uint8 clips: the flip, the
  colour jitter and drop, RandAugment, the normalisation and random erasing of the config."""
  dc = dataset_configs
  aug = augmentation_params(dc)
  mean, std = normalisation(dc)
  color = bool(aug["do_color_augment"])
  return device_augment.Augmentation(
    mean=mean,
    std=std,
    flip=bool(dc.get("random_flip", False)),
    color=color,
    color_drop=color and float(aug["prob_color_drop"]) > 0,
    rand_augment_layers=int(aug["rand_augment_num_layers"]) if aug["do_rand_augment"] else 0,
    rand_augment_magnitude=float(aug["rand_augment_magnitude"]),
    erasing=float(aug["random_erasing_probability"]) > 0,
  )


def class_splits(dataset_configs: ml_collections.ConfigDict) -> tuple[int, ...]:
  """dataset_configs.class_splits (e.g. (300, 97): EPIC nouns then verbs), or () when unset."""
  splits = tuple(int(x) for x in (dataset_configs.get("class_splits") or ()))
  return splits


def validate_dataset_configs(dataset_configs: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field when a reader field is missing or inconsistent."""
  dc = dataset_configs
  for field in (
    "base_dir",
    "tables",
    "num_classes",
    "num_frames",
    "stride",
    "min_resize",
    "crop_size",
  ):
    if dc.get(field) is None:
      raise UserError(f"dataset_configs.{field} must be set.")
  for field in ("num_classes", "num_frames", "stride", "min_resize", "crop_size"):
    if int(dc[field]) < 1:
      raise UserError(f"dataset_configs.{field} must be >= 1, got {dc[field]}.")
  for field in ("min_resize", "eval_min_resize"):
    if dc.get(field) is not None and dc.crop_size > dc[field]:
      raise UserError(
        f"dataset_configs.crop_size={dc.crop_size} is larger than the resized "
        f"short side {field}={dc[field]}; expected crop_size <= {field}."
      )
  if int(dc.get("num_test_clips", 1)) < 1:
    raise UserError(f"dataset_configs.num_test_clips must be >= 1, got {dc.num_test_clips}.")
  train_sampling = dc.get("train_sampling", "stride")
  if train_sampling not in SAMPLINGS:
    raise UserError(
      f"dataset_configs.train_sampling={train_sampling!r}: expected one of {list(SAMPLINGS)}."
    )
  eval_sampling = dc.get("eval_sampling", "stride")
  if eval_sampling not in EVAL_SAMPLINGS:
    raise UserError(
      f"dataset_configs.eval_sampling={eval_sampling!r}: expected one of {list(EVAL_SAMPLINGS)}."
    )
  if eval_sampling == "whole_video" and train_sampling == "segment":
    raise UserError(
      "dataset_configs.eval_sampling='whole_video' cuts videos into clips of the "
      "training geometry, which train_sampling='segment' does not have; use "
      "'stride' or 'timesformer'."
    )
  for field in ("sampling_rate", "target_fps", "frame_rate"):
    if dc.get(field) is not None and not float(dc[field]) > 0:
      raise UserError(f"dataset_configs.{field} must be > 0, got {dc[field]}.")
  splits = class_splits(dc)
  if splits:
    if dc.get("multi_label", False):
      raise UserError(
        "dataset_configs.class_splits and multi_label are exclusive: class splits "
        "hold one label per split (e.g. EPIC noun and verb)."
      )
    if min(splits) < 1 or sum(splits) != int(dc.num_classes):
      raise UserError(
        f"dataset_configs.class_splits={list(splits)} must be positive and sum to "
        f"num_classes={dc.num_classes}."
      )
    names = dc.get("split_names")
    if names is not None and len(names) != len(splits):
      raise UserError(
        f"dataset_configs.split_names={list(names)} needs one name per class split ({len(splits)})."
      )
  pairs = dc.get("flip_label_pairs") or ()
  for pair in pairs:
    if len(pair) != 2 or not all(0 <= int(c) < int(dc.num_classes) for c in pair):
      raise UserError(
        f"dataset_configs.flip_label_pairs entry {pair!r}: expected a pair of "
        f"class indices in [0, {dc.num_classes})."
      )
  fraction = dc.get("max_bad_fraction", DEFAULT_MAX_BAD_FRACTION)
  if fraction is not None and not 0.0 <= float(fraction) <= 1.0:
    raise UserError(
      f"dataset_configs.max_bad_fraction={fraction}: expected a fraction in "
      "[0, 1] (1.0 or None: no fraction cap)."
    )
  cap = dc.get("max_bad_records")
  if cap is not None and (isinstance(cap, bool) or not float(cap).is_integer() or cap < 0):
    raise UserError(
      f"dataset_configs.max_bad_records={cap}: expected an integer >= 0 (None: no limit)."
    )
  augmentation_params(dc)
  normalisation(dc)


def split_names(dataset_configs: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The names of the class splits ('noun', 'verb' for EPIC), default split_0, split_1, ..."""
  splits = class_splits(dataset_configs)
  names = dataset_configs.get("split_names")
  return tuple(names) if names else tuple(f"split_{i}" for i in range(len(splits)))
