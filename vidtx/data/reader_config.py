"""config.dataset_configs as one typed, checked object: `DatasetConfig.from_config` reads the
fields once where a run starts (vidtx.data.prepare_dataset) and the reader and its consumers read
attributes (`dataset.multi_label`). Also the sampling modes, normalisation presets, augmentation
defaults and bad-record caps.

A field of dataset_configs is added here, in two neighbouring places: its type, default and
comment (DatasetConfig or Augmentation) and, when it needs one, its check (_check). Recipes,
command-line overrides and a workdir's config.json keep the plain field names;
fields vidtx does not read (e.g. a recipe's notes) are ignored, as they always were.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from vidtx.errors import UserError

if TYPE_CHECKING:  # JAX: imported only where the augmentation is built (make_shards --help).
  from vidtx import device_augment

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


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """dataset_configs.augmentation_params: scenic's names, vidtx's defaults (all off but the crop;
  ViViT 2103.15691 Table 7)."""

  do_jitter_scale: bool = False  # Random scale of the short side before the crop.
  scale_min_factor: float = 0.9  # Smallest scale of the jitter.
  scale_max_factor: float = 1.33  # Largest scale of the jitter.
  prob_scale_jitter: float = 1.0  # Probability of jittering a clip (else plain resize + crop).
  do_color_augment: bool = False  # Colour jitter (brightness, contrast, saturation, hue).
  prob_color_augment: float = 0.8  # Probability of the colour jitter of a clip.
  prob_color_drop: float = 0.0  # Probability of turning a clip grey (with do_color_augment).
  do_rand_augment: bool = False  # RandAugment (arXiv:1909.13719), one draw per clip.
  rand_augment_num_layers: int = 2  # Operations applied per clip.
  rand_augment_magnitude: float = 15.0  # Their strength (0 to 30 in RandAugment's scale).
  random_erasing_probability: float = 0.0  # Probability of erasing a box (arXiv:1708.04896).


# dataset_configs.augmentation_params: scenic's names, vidtx's defaults.
AUGMENTATION_DEFAULTS = dataclasses.asdict(Augmentation())

_PROBABILITIES = (
  "prob_scale_jitter",
  "prob_color_augment",
  "prob_color_drop",
  "random_erasing_probability",
)


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """The reader's dataset_configs, checked; built by `from_config`. Each field has its one
  default here; the reader's own derived values are properties (normalisation, flip_table,
  eval_short_side, num_views, multi_hot, label_shape)."""

  # Where the data is and what it holds.
  base_dir: str  # Directory of the shards (the TFDS data dir for 'tfds:NAME').
  tables: dict[str, str]  # Split -> 'name.tfrecord@shards' (DMVR) or TFDS split.
  num_classes: int  # Classes of the labels (all class splits together).
  # Geometry of a clip.
  num_frames: int  # Frames per clip.
  stride: int  # Frames between two sampled frames ('stride' sampling).
  min_resize: int  # Short side of the frames before the training crop.
  crop_size: int  # Side of the square crop the model sees.
  dataset_name: str = ""  # The source ('synthetic', 'dmvr', 'tfds:NAME'); prepare_dataset sets it.
  # Where index_shards --index_dir wrote the shards' indexes and frame tables ('': beside them).
  index_dir: str = ""
  examples_per_subset: dict[str, int] = dataclasses.field(default_factory=dict)  # Split -> videos.
  eval_min_resize: int | None = None  # Short side before the evaluation crops (None: min_resize).
  # Sampling (vidtx.data.sampling).
  train_sampling: str = "stride"  # One of SAMPLINGS.
  eval_sampling: str = "stride"  # One of EVAL_SAMPLINGS.
  num_test_clips: int = 1  # Evaluation clips per video (evenly spaced; one: the middle).
  do_three_spatial_crops: bool = False  # Three evaluation crops per clip (else the centre one).
  sampling_rate: float = 32.0  # 'timesformer': the window is num_frames * sampling_rate frames...
  target_fps: float = 30.0  # ... at target_fps frames per second.
  frame_rate: float | None = None  # Frame rate of records that do not say (None: target_fps).
  # Labels.
  multi_label: bool = False  # Several labels per video, multi-hot targets.
  class_splits: tuple[int, ...] = ()  # Classes per split (EPIC: nouns, verbs); one label each.
  split_names: tuple[str, ...] = ()  # Their names (unset: split_0, split_1, ...).
  label_offset: int = 0  # Subtracted from the stored label indices.
  # Training input.
  random_flip: bool = False  # Horizontal flip with probability 0.5.
  flip_label_pairs: tuple[tuple[int, int], ...] = ()  # Classes that swap when flipped.
  shuffle_buffer_size: int = 256  # Records in the training shuffle buffer.
  # One stream for any topology (vidtx.data.global_order): a seeded global permutation per
  # epoch, read at random through the frame tables; the shuffle buffer is not used. None (auto):
  # on when every train shard has a current frame table (global_order.resolve); True: required.
  global_order: bool | None = None
  augmentation: Augmentation = Augmentation()  # dataset_configs.augmentation_params.
  # Normalisation, input = (pixel / 255 - mean) / std, per channel: dataset_configs.mean and std,
  # else the preset dataset_configs.normalization, else zero_centering (see `normalisation`).
  mean: tuple[float, float, float] = NORMALIZATIONS["vit"][0]
  std: tuple[float, float, float] = NORMALIZATIONS["vit"][1]
  # Bad records (vidtx.data.bad_records).
  skip_bad_records: bool = False  # Drop and count bad records instead of stopping.
  max_bad_fraction: float | None = DEFAULT_MAX_BAD_FRACTION  # None or 1.0: no fraction cap.
  max_bad_records: int | None = None  # Most bad records skipped in all (None: no limit).
  # The synthetic dataset's task (vidtx.data.synthetic; the rest of its fields it reads itself).
  task: str = "motion"
  # TFDS sources (vidtx.data.tfds_data).
  tfds_data_dir: str = ""  # Where the prepared dataset lives ('': TFDS's default).
  tfds_video_key: str = "video"  # The Video (or Sequence(Image)) feature.
  tfds_label_key: str = "label"  # The ClassLabel (or Sequence(ClassLabel)) feature.
  tfds_id_key: str = ""  # Optional Text feature used as video_id ('': none).
  tfds_frame_rate: float = 0.0  # Frames per second of the stored videos (0: unknown).

  @classmethod
  def from_config(
    cls, dataset_configs: Mapping[str, Any], *, views_only: bool = False
  ) -> "DatasetConfig":
    """config.dataset_configs (a ConfigDict or dict) checked and typed; raises UserError naming
    the field, what was expected and the fix. Unknown fields are ignored. `views_only`: the
    fields of the views of a video alone (a converted checkpoint's preprocessing, vidtx.predict):
    base_dir, tables and num_classes may be unset ('', {}, 0)."""
    return _from_config(cls, dataset_configs, views_only)

  @property
  def normalisation(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel (mean, std) of the reader: input = (pixel / 255 - mean) / std."""
    return self.mean, self.std

  @property
  def is_tfds(self) -> bool:
    return self.dataset_name.startswith("tfds:")

  @property
  def eval_short_side(self) -> int:
    """Short side of the frames before the evaluation crops."""
    return self.eval_min_resize or self.min_resize

  @property
  def window_size(self) -> int:
    """Side S of the square uint8 buffer that carries a training clip's scale-jittered window to
    the accelerator, which resizes it to crop_size (vidtx.device_augment.resize_windows); 0
    without scale jitter (the host sends crop_size crops).

    S is the largest window, in whole pixels, that the jitter cuts from frames stored at short
    side min_resize = m. A short side ss != m gives windows of crop * m / ss stored pixels
    across the short side and crop * L / round(L * ss / m) < crop * m / (ss - 0.5) along a long
    side L; rounding a window of extent e to whole pixels gives at most floor(e) + 1. The
    smallest ss is round(m * scale_min_factor) (or m itself, unjittered), at least crop_size.
    Larger windows (frames stored larger) are resized on the host.
    """
    aug = self.augmentation
    if not aug.do_jitter_scale:
      return 0
    crop, m = self.crop_size, self.min_resize
    smallest = round(m * aug.scale_min_factor)  # jittered_short_side's float64 round, to even
    if aug.prob_scale_jitter < 1.0:
      smallest = min(smallest, m)
    smallest = max(smallest, crop)
    if smallest >= m:  # ss = m: windows of exactly crop; ss > m: smaller ones.
      return crop
    return max(crop, math.floor(crop * m / (smallest - 0.5)) + 1)

  @property
  def num_views(self) -> int:
    """Evaluation views per element: num_test_clips x (3 or 1 crops), clip-major."""
    return self.num_test_clips * (3 if self.do_three_spatial_crops else 1)

  @property
  def multi_hot(self) -> bool:
    """Labels are multi-hot float32 (K,) (multi_label or class_splits), else one int32 index."""
    return self.multi_label or bool(self.class_splits)

  @property
  def label_shape(self) -> tuple[int, ...]:
    """The shape of one video's label: () or (num_classes,) multi-hot."""
    return (self.num_classes,) if self.multi_hot else ()

  @property
  def flip_table(self) -> np.ndarray | None:
    """(K,) int32 class permutation of a horizontal flip (flip_label_pairs swapped), or None."""
    if not self.flip_label_pairs:
      return None
    table = np.arange(self.num_classes, dtype=np.int32)
    for a, b in self.flip_label_pairs:
      table[a], table[b] = b, a
    return table

  @property
  def tfds_options(self) -> dict[str, Any]:
    """The fields vidtx.data.tfds_data reads."""
    return {f: getattr(self, f) for f in _TFDS_FIELDS}


_TFDS_FIELDS = (
  "tfds_data_dir",
  "tfds_video_key",
  "tfds_label_key",
  "tfds_id_key",
  "tfds_frame_rate",
)


def as_dataset_config(
  dataset: "DatasetConfig | Mapping[str, Any]", *, views_only: bool = False
) -> DatasetConfig:
  """`dataset` itself, or a plain dataset_configs (ConfigDict, dict) read with from_config: the
  reader's public functions take either, so that notebooks and tests can pass a ConfigDict."""
  if isinstance(dataset, DatasetConfig):
    return dataset
  return DatasetConfig.from_config(dataset, views_only=views_only)


def _three_numbers(
  dataset_configs: Mapping[str, Any], field: str, positive: bool
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
  dataset_configs: Mapping[str, Any],
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
  """Per-channel (mean, std) of plain dataset_configs fields: input = (pixel / 255 - mean) / std.

  Explicit dataset_configs.mean and std (both) win; else the preset dataset_configs.normalization
  (a key of NORMALIZATIONS); else the legacy zero_centering (default True: 'vit', [-1, 1]; False:
  'none', [0, 1]). Raises UserError naming the field when a value is invalid.
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
  zero_centering = dc.get("zero_centering")
  return NORMALIZATIONS["none" if zero_centering is not None and not zero_centering else "vit"]


def _number(field: str, value: Any, kind: type) -> Any:
  """`value` as int or float; UserError naming the field when it is not a number."""
  try:
    number = kind(value)
  except (TypeError, ValueError):
    number = None
  wrong_int = kind is int and not isinstance(value, str) and number != value  # 2.5 frames.
  if number is None or isinstance(value, bool) or wrong_int:
    what = "an integer" if kind is int else "a number"
    raise UserError(f"dataset_configs.{field}={value!r}: expected {what}.")
  return number


def _augmentation(given: Mapping[str, Any] | None) -> Augmentation:
  """dataset_configs.augmentation_params over the defaults, checked."""
  given = dict(given or {})
  unknown = sorted(set(given) - set(AUGMENTATION_DEFAULTS))
  if unknown:
    raise UserError(
      f"dataset_configs.augmentation_params has unknown fields {unknown}; "
      f"expected some of {sorted(AUGMENTATION_DEFAULTS)}."
    )
  params = {**AUGMENTATION_DEFAULTS, **given}
  for field, default in AUGMENTATION_DEFAULTS.items():
    if isinstance(default, bool):
      params[field] = bool(params[field])
    else:
      params[field] = _number(f"augmentation_params.{field}", params[field], type(default))
  for field in _PROBABILITIES:
    if not 0.0 <= params[field] <= 1.0:
      raise UserError(
        f"dataset_configs.augmentation_params.{field}={params[field]}: expected "
        "a probability in [0, 1]."
      )
  if not 0 < params["scale_min_factor"] <= params["scale_max_factor"]:
    raise UserError(
      "dataset_configs.augmentation_params: expected 0 < scale_min_factor <= "
      f"scale_max_factor, got {params['scale_min_factor']} and {params['scale_max_factor']}."
    )
  if params["rand_augment_num_layers"] < 0 or params["rand_augment_magnitude"] < 0:
    raise UserError(
      "dataset_configs.augmentation_params: rand_augment_num_layers and "
      "rand_augment_magnitude must be >= 0."
    )
  return Augmentation(**params)


def device_augmentation(
  dataset: "DatasetConfig | Mapping[str, Any]",
) -> "device_augment.Augmentation":
  """What the train step applies on the accelerator to the reader's uint8 clips: the resize of
  the scale-jittered window, the flip, the colour jitter and drop, RandAugment, the normalisation
  and random erasing of the config."""
  from vidtx import device_augment  # JAX: on first use, not at import (make_shards --help).

  dataset = as_dataset_config(dataset)
  aug = dataset.augmentation
  color = aug.do_color_augment
  return device_augment.Augmentation(
    mean=dataset.mean,
    std=dataset.std,
    flip=dataset.random_flip,
    color=color,
    color_drop=color and aug.prob_color_drop > 0,
    rand_augment_layers=aug.rand_augment_num_layers if aug.do_rand_augment else 0,
    rand_augment_magnitude=aug.rand_augment_magnitude,
    erasing=aug.random_erasing_probability > 0,
    crop_size=dataset.crop_size,
    window_size=dataset.window_size,
  )


# Required reader fields; then those that must be >= 1 (they are integers).
_REQUIRED = ("base_dir", "tables", "num_classes", "num_frames", "stride", "min_resize", "crop_size")
_POSITIVE_INTS = ("num_classes", "num_frames", "stride", "min_resize", "crop_size")


def _from_config(cls: type, dataset_configs: Mapping[str, Any], views_only: bool) -> DatasetConfig:
  dc = dict(dataset_configs)
  if views_only:  # The source's fields, unread by the views.
    dc = {"base_dir": "", "tables": {}, "num_classes": 0, **dc}
  for field in _REQUIRED:
    if dc.get(field) is None:
      raise UserError(f"dataset_configs.{field} must be set.")
  defaults = {f.name: f.default for f in dataclasses.fields(cls)}

  def given(field: str) -> Any:
    """The configured value; a field that is missing or None takes its default."""
    value = dc.get(field)
    return defaults[field] if value is None else value

  fields: dict[str, Any] = {}
  for field in _POSITIVE_INTS:
    fields[field] = _number(field, dc[field], int)
    if fields[field] < 1 and not (views_only and field == "num_classes"):
      raise UserError(f"dataset_configs.{field} must be >= 1, got {dc[field]}.")
  fields["base_dir"] = str(dc["base_dir"])
  fields["index_dir"] = str(dc.get("index_dir") or "")
  fields["tables"] = dict(dc["tables"])
  fields["examples_per_subset"] = {
    split: _number(f"examples_per_subset.{split}", n, int)
    for split, n in dict(dc.get("examples_per_subset") or {}).items()
  }
  for field in ("dataset_name", "train_sampling", "eval_sampling", "task"):
    fields[field] = given(field)
  for field in ("tfds_data_dir", "tfds_video_key", "tfds_label_key", "tfds_id_key"):
    fields[field] = dc.get(field) or defaults[field]
  for field in ("num_test_clips", "label_offset", "shuffle_buffer_size"):
    fields[field] = _number(field, given(field), int)
  for field in ("sampling_rate", "target_fps", "tfds_frame_rate"):
    fields[field] = _number(field, given(field), float)
  for field in (
    "do_three_spatial_crops",
    "multi_label",
    "random_flip",
    "skip_bad_records",
  ):
    fields[field] = bool(given(field))
  global_order = dc.get("global_order")
  fields["global_order"] = None if global_order is None else bool(global_order)
  for field in ("eval_min_resize", "frame_rate"):
    value = dc.get(field)
    kind = int if field == "eval_min_resize" else float
    fields[field] = None if value is None else _number(field, value, kind)
  fields["class_splits"] = tuple(int(x) for x in (dc.get("class_splits") or ()))
  names = dc.get("split_names")
  fields["split_names"] = None if names is None else tuple(str(name) for name in names)
  fields["flip_label_pairs"] = tuple(tuple(pair) for pair in (dc.get("flip_label_pairs") or ()))
  # max_bad_fraction: missing takes the default, None says no cap.
  fields["max_bad_fraction"] = dc.get("max_bad_fraction", DEFAULT_MAX_BAD_FRACTION)
  fields["max_bad_records"] = dc.get("max_bad_records")
  _check(fields)
  fields["flip_label_pairs"] = tuple((int(a), int(b)) for a, b in fields["flip_label_pairs"])
  if fields["max_bad_fraction"] is not None:
    fields["max_bad_fraction"] = float(fields["max_bad_fraction"])
  if fields["max_bad_records"] is not None:
    fields["max_bad_records"] = int(fields["max_bad_records"])
  if fields["split_names"] is None:
    fields["split_names"] = tuple(f"split_{i}" for i in range(len(fields["class_splits"])))
  fields["augmentation"] = _augmentation(dc.get("augmentation_params"))
  fields["mean"], fields["std"] = normalisation(dc)
  return cls(**fields)


def _check(fields: dict[str, Any]) -> None:
  """The checks across fields (each names the field and says what was expected)."""
  crop = fields["crop_size"]
  for field in ("min_resize", "eval_min_resize"):
    if fields[field] is not None and crop > fields[field]:
      raise UserError(
        f"dataset_configs.crop_size={crop} is larger than the resized "
        f"short side {field}={fields[field]}; expected crop_size <= {field}."
      )
  if fields["num_test_clips"] < 1:
    raise UserError(f"dataset_configs.num_test_clips must be >= 1, got {fields['num_test_clips']}.")
  train_sampling, eval_sampling = fields["train_sampling"], fields["eval_sampling"]
  if train_sampling not in SAMPLINGS:
    raise UserError(
      f"dataset_configs.train_sampling={train_sampling!r}: expected one of {list(SAMPLINGS)}."
    )
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
    if fields[field] is not None and not fields[field] > 0:
      raise UserError(f"dataset_configs.{field} must be > 0, got {fields[field]}.")
  num_classes, splits = fields["num_classes"], fields["class_splits"]
  if splits:
    if fields["multi_label"]:
      raise UserError(
        "dataset_configs.class_splits and multi_label are exclusive: class splits "
        "hold one label per split (e.g. EPIC noun and verb)."
      )
    if min(splits) < 1 or sum(splits) != num_classes:
      raise UserError(
        f"dataset_configs.class_splits={list(splits)} must be positive and sum to "
        f"num_classes={num_classes}."
      )
    names = fields["split_names"]
    if names is not None and len(names) != len(splits):
      raise UserError(
        f"dataset_configs.split_names={list(names)} needs one name per class split ({len(splits)})."
      )
  for pair in fields["flip_label_pairs"]:
    if len(pair) != 2 or not all(0 <= int(c) < num_classes for c in pair):
      raise UserError(
        f"dataset_configs.flip_label_pairs entry {pair!r}: expected a pair of "
        f"class indices in [0, {num_classes})."
      )
  fraction = fields["max_bad_fraction"]
  if fraction is not None and not 0.0 <= float(fraction) <= 1.0:
    raise UserError(
      f"dataset_configs.max_bad_fraction={fraction}: expected a fraction in "
      "[0, 1] (1.0 or None: no fraction cap)."
    )
  cap = fields["max_bad_records"]
  if cap is not None and (isinstance(cap, bool) or not float(cap).is_integer() or cap < 0):
    raise UserError(
      f"dataset_configs.max_bad_records={cap}: expected an integer >= 0 (None: no limit)."
    )
