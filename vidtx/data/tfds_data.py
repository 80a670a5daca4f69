"""TFDS video datasets: read any locally prepared one, and vidtx's synthetic dataset as a builder.

Reading (`config.dataset_name = 'tfds:NAME'`): `records` yields one dict per video with the frames
still encoded, `info` tells the classes, split sizes and frame shape. NAME is what `tfds.builder`
takes ('ucf101', 'vidtx_synthetic/motion', 'ds/config:1.0.0'); 'ds/1.0.0' and 'ds/config/1.0.0'
(the directory layout) also name a version. Nothing is ever downloaded or generated here: the
dataset must already be prepared under dataset_configs.tfds_data_dir (default: $TFDS_DATA_DIR,
else ~/tensorflow_datasets). dataset_configs fields read (DatasetConfig.tfds_options, or any mapping
of them):

  tfds_data_dir    where the prepared dataset lives (None: TFDS's default).
  tfds_video_key   the Video (or Sequence(Image)) feature, default 'video'.
  tfds_label_key   the ClassLabel (or Sequence(ClassLabel)) feature, default 'label'.
  tfds_id_key      optional Text feature used as video_id.
  tfds_frame_rate  optional frames per second of the stored videos (TFDS does not record it).

Building the synthetic dataset (`VidtxSynthetic`, registered as 'vidtx_synthetic'): the videos
and labels of vidtx.data.synthetic.generate_split, JPEG-encoded exactly as the DMVR writer does.
One BuilderConfig per task holds configs.common.synthetic_dataset()'s sizes; `build_synthetic`
makes other sizes under their own config name. From the command line:

  python -m vidtx.data.tfds_data --data_dir=~/tensorflow_datasets --task=motion \
      [--train_examples=512 --validation_examples=128 --video_length=20 --video_size=36]

then train with config.dataset_name = 'tfds:vidtx_synthetic/<printed config name>'.
"""

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants

from vidtx.data import dmvr, synthetic
from vidtx.errors import UserError

# vidtx.configs.common.synthetic_dataset()'s generator fields (tests check they agree; the
# library does not import the recipes).
SYNTHETIC_DEFAULTS = {
  "train_examples": 6144,
  "validation_examples": 512,
  "video_length": 20,
  "video_size": 36,
  "seed": 0,
  "num_frames": 8,  # Only the 'order' task depends on the clip the reader samples.
  "stride": 2,
}

# ---------------------------------------------------------------------------------------------
# Reading a prepared dataset.
# ---------------------------------------------------------------------------------------------


def _data_dir(fields: Mapping[str, Any]) -> str:
  # Resolved here (not left to TFDS) so the error messages name the directory actually searched.
  data_dir = fields.get("tfds_data_dir") or constants.get_default_data_dir()
  return os.path.expanduser(data_dir)


def _tfds_name(name: str) -> str:
  """'ds/1.0.0' or 'ds/config/1.0.0' (a path under data_dir) -> TFDS's 'ds:1.0.0' syntax."""
  return re.sub(r"/(\d+\.\d+\.\d+)$", r":\1", name.removeprefix("tfds:"))


def _not_prepared(name: str, data_dir: str, why: str) -> ValueError:
  return UserError(
    f"TFDS dataset {name!r} is not prepared in data_dir={data_dir!r} ({why}). Expected the "
    f"files of `tfds build {_tfds_name(name)} --data_dir={data_dir}` there (for "
    f"vidtx_synthetic: `python -m vidtx.data.tfds_data --data_dir={data_dir}`); vidtx never "
    "downloads or generates TFDS data. Set dataset_configs.tfds_data_dir to where it is; "
    "name a version prepared earlier as NAME:X.Y.Z."
  )


def _builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The prepared dataset's builder; ValueError when its files are not in data_dir."""
  try:
    # Falls back to the files when no builder code is registered under `name` (a dataset
    # prepared elsewhere), and never downloads by itself.
    builder = tfds.builder(_tfds_name(name), data_dir=data_dir)
  except (tfds.core.DatasetNotFoundError, ValueError) as e:
    raise _not_prepared(name, data_dir, f"{type(e).__name__}: {e}") from e
  if not builder.is_prepared():
    raise _not_prepared(name, data_dir, f"no {builder.data_dir}")
  return builder


def _features_listing(builder: tfds.core.DatasetBuilder) -> str:
  return ", ".join(
    f"{key!r}: {type(feature).__name__}" for key, feature in sorted(builder.info.features.items())
  )


def _is_frames(feature: tfds.features.FeatureConnector) -> bool:
  # A Video is a Sequence of Image; both store one encoded PNG or JPEG string per frame. Float
  # images are bit-cast PNGs that tf.io.decode_image cannot read.
  return (
    isinstance(feature, tfds.features.Sequence)
    and isinstance(feature.feature, tfds.features.Image)
    and feature.feature.np_dtype in (np.uint8, np.uint16)
  )


def _class_label(feature: tfds.features.FeatureConnector) -> tfds.features.ClassLabel | None:
  """The ClassLabel of a single-label or multi-label (Sequence(ClassLabel)) feature, else None."""
  if isinstance(feature, tfds.features.ClassLabel):
    return feature
  if isinstance(feature, tfds.features.Sequence) and isinstance(
    feature.feature, tfds.features.ClassLabel
  ):
    return feature.feature
  return None


def _is_text(feature: tfds.features.FeatureConnector) -> bool:
  # Text and Tensor(shape=(), dtype=string) both decode to a scalar string.
  return (
    isinstance(feature, tfds.features.Tensor)
    and feature.tf_dtype == tf.string
    and feature.shape == ()
  )


def _keys(
  builder: tfds.core.DatasetBuilder,
  name: str,
  data_dir: str,
  fields: Mapping[str, Any],
) -> tuple[str, str, str | None]:
  """(video, label, id or None) feature keys, checked against the dataset's features."""
  features = builder.info.features
  video_key = fields.get("tfds_video_key") or "video"
  label_key = fields.get("tfds_label_key") or "label"
  id_key = fields.get("tfds_id_key") or None
  checks = (
    (
      "tfds_video_key",
      video_key,
      _is_frames,
      "a Video (or Sequence(Image)) feature of uint8/uint16 frames",
    ),
    (
      "tfds_label_key",
      label_key,
      lambda f: _class_label(f) is not None,
      "a ClassLabel or Sequence(ClassLabel) feature",
    ),
    ("tfds_id_key", id_key, _is_text, "a Text (scalar string) feature"),
  )
  for field, key, accepts, expected in checks:
    if key is None:
      continue
    if key not in features or not accepts(features[key]):
      found = type(features[key]).__name__ if key in features else "no such feature"
      raise UserError(
        f"dataset_configs.{field}={key!r} for TFDS dataset {name!r} in data_dir={data_dir!r}: "
        f"expected {expected}, found {found}. The dataset's features: "
        f"{{{_features_listing(builder)}}}."
      )
  return video_key, label_key, id_key


def info(name: str, fields: Mapping[str, Any]) -> dict:
  """What the prepared TFDS dataset `name` holds, from its metadata (nothing is read or decoded).

  Returns {'name', 'data_dir' (the dataset's version directory), 'num_classes', 'class_names',
  'multi_label' (Sequence(ClassLabel)), 'examples_per_subset' ({split: count}), 'frame_shape'
  ((H, W, C), None where sizes vary), 'video_key', 'label_key'}. Raises ValueError when the
  dataset is not prepared or the configured features are missing or of the wrong kind.
  """
  data_dir = _data_dir(fields)
  builder = _builder(name, data_dir)
  video_key, label_key, _ = _keys(builder, name, data_dir, fields)
  features = builder.info.features
  labels = _class_label(features[label_key])
  return {
    "name": name,
    "data_dir": builder.data_dir,
    "num_classes": labels.num_classes,
    "class_names": list(labels.names),
    "multi_label": not isinstance(features[label_key], tfds.features.ClassLabel),
    "examples_per_subset": {
      split: split_info.num_examples for split, split_info in sorted(builder.info.splits.items())
    },
    "frame_shape": tuple(features[video_key].feature.shape),
    "video_key": video_key,
    "label_key": label_key,
  }


def _position(tfds_id: tf.Tensor, shard_offsets: tf.Tensor) -> tf.Tensor:
  """The example's index in its split (as in split[i:i+1]) as a string, from TFDS's example id
  'FILE-00003-of-00008__17' (record 17 of shard 3); the id itself for other file names."""
  match = tf.strings.regex_full_match(tfds_id, r".*-\d+-of-\d+__\d+")
  shard = tf.strings.regex_replace(tfds_id, r".*-(\d+)-of-\d+__\d+$", r"\1")
  record = tf.strings.regex_replace(tfds_id, r".*__(\d+)$", r"\1")
  # Both branches are computed: the "0"s keep the unused one valid.
  shard = tf.strings.to_number(tf.where(match, shard, "0"), tf.int64)
  record = tf.strings.to_number(tf.where(match, record, "0"), tf.int64)
  index = tf.gather(shard_offsets, shard) + record
  return tf.where(match, tf.strings.as_string(index), tfds_id)


def records(
  name: str,
  fields: Mapping[str, Any],
  split: str,
  *,
  process_index: int,
  process_count: int,
  shuffle_seed: int | None,
) -> tf.data.Dataset:
  """This process's share of `split`, one dict per video, frames still encoded.

  Elements: 'jpegs' tf.string (T,) (PNG or JPEG, as stored: tf.io.decode_image reads both),
  'labels' int64 (L,) (one index for a ClassLabel), 'video_id' tf.string () (the tfds_id_key
  feature, else 'NAME/split/<index in the split>'), 'source' tf.string () for error messages,
  'frame_rate' float32 () (dataset_configs.tfds_frame_rate, else 0 = unknown).

  Process p of n reads the p-th of n consecutive, near-equal pieces of the split
  (tfds.even_splits): the shares are disjoint and cover the split. `shuffle_seed` None reads
  them in the split's order; a seed shuffles the shard files (differently each epoch when the
  caller repeats the dataset) and interleaves 16 of them, deterministically for that seed.
  """
  data_dir = _data_dir(fields)
  builder = _builder(name, data_dir)
  video_key, label_key, id_key = _keys(builder, name, data_dir, fields)
  splits = builder.info.splits
  if split not in splits:
    raise UserError(
      f"TFDS dataset {name!r} in data_dir={data_dir!r} has no split {split!r}; "
      f"its splits: {sorted(splits)}."
    )
  if not 0 <= process_index < process_count:
    raise UserError(f"process_index={process_index} must be in [0, process_count={process_count}).")
  if splits[split].num_examples < process_count:
    raise UserError(
      f"TFDS dataset {name!r} split {split!r} has {splits[split].num_examples} "
      f"examples, fewer than process_count={process_count}: some process would "
      "read none."
    )
  shuffle = shuffle_seed is not None
  options = tf.data.Options()
  options.deterministic = True
  read_config = tfds.ReadConfig(
    shuffle_seed=shuffle_seed,
    shuffle_reshuffle_each_iteration=True,
    # Fixed order: one file after the other, i.e. the split's own order. Shuffled: 16 files
    # at a time, one example from each in turn, so neighbours come from different files.
    interleave_cycle_length=16 if shuffle else 1,
    interleave_block_length=1,
    add_tfds_id=True,
    options=options,
  )
  # Only the features used are parsed: a dataset may hold other, costly ones (audio, flow).
  wanted = {key: True for key in (video_key, label_key, id_key) if key is not None}
  decoders = tfds.decode.PartialDecoding(wanted, decoders={video_key: tfds.decode.SkipDecoding()})
  share = tfds.even_splits(split, n=process_count)[process_index]
  ds = builder.as_dataset(
    split=share, shuffle_files=shuffle, read_config=read_config, decoders=decoders
  )
  shard_offsets = tf.constant(np.cumsum([0] + list(splits[split].shard_lengths))[:-1], tf.int64)
  frame_rate = float(fields.get("tfds_frame_rate") or 0.0)

  def to_record(index, example):
    if id_key is None:
      video_id = tf.strings.join([f"{name}/{split}/", _position(example["tfds_id"], shard_offsets)])
    else:
      video_id = example[id_key]
    return {
      "jpegs": tf.reshape(example[video_key], [-1]),
      "labels": tf.reshape(tf.cast(example[label_key], tf.int64), [-1]),
      "video_id": video_id,
      "source": tf.strings.join(
        [f"tfds:{name} split={split} example ", tf.strings.as_string(index)]
      ),
      "frame_rate": tf.constant(frame_rate, tf.float32),
    }

  return ds.enumerate().map(to_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# ---------------------------------------------------------------------------------------------
# The synthetic dataset as a TFDS builder.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class VidtxSyntheticConfig(tfds.core.BuilderConfig):
  """Generator parameters of one vidtx_synthetic variant (see vidtx.data.synthetic)."""

  task: str = "motion"
  train_examples: int = SYNTHETIC_DEFAULTS["train_examples"]
  validation_examples: int = SYNTHETIC_DEFAULTS["validation_examples"]
  video_length: int = SYNTHETIC_DEFAULTS["video_length"]
  video_size: int = SYNTHETIC_DEFAULTS["video_size"]
  seed: int = SYNTHETIC_DEFAULTS["seed"]
  # The reader's clip, for the tasks whose pictures depend on it ('order'); None otherwise.
  num_frames: int | None = None
  stride: int | None = None


# Short names of the non-default parameters in config names ('motion-train8-length6').
_NAME_PARTS = {
  "train_examples": "train",
  "validation_examples": "validation",
  "video_length": "length",
  "video_size": "size",
  "seed": "seed",
  "num_frames": "frames",
  "stride": "stride",
}


def synthetic_config(task: str = "motion", **overrides: int | None) -> VidtxSyntheticConfig:
  """The BuilderConfig of `task` with generator parameters `overrides` (None: the default).

  Its name is the task followed by every non-default parameter, e.g. 'motion-train8-size16', so
  two variants never share a directory. num_frames / stride only apply to the 'order' task.
  """
  unknown = set(overrides) - set(SYNTHETIC_DEFAULTS)
  if unknown:
    raise UserError(
      f"Unknown synthetic parameters {sorted(unknown)}; expected some of "
      f"{sorted(SYNTHETIC_DEFAULTS)}."
    )
  uses_clip = synthetic.get_task(task).uses_clip_length
  values, parts = {}, [task]
  for field, default in SYNTHETIC_DEFAULTS.items():
    if field in ("num_frames", "stride") and not uses_clip:
      continue
    value = overrides.get(field)
    values[field] = default if value is None else int(value)
    if values[field] != default:
      parts.append(f"{_NAME_PARTS[field]}{values[field]}")
  config = VidtxSyntheticConfig(
    name="-".join(parts),
    description=f"vidtx synthetic task {task!r}: {values}.",
    task=task,
    **values,
  )
  synthetic_parameters(config)  # Validates (sizes, the 'order' task's clip).
  return config


def synthetic_parameters(config: VidtxSyntheticConfig) -> dict:
  """vidtx.data.synthetic's parameters for `config`: generate_split(params, split) gives its
  videos."""
  fields = {
    "task": config.task,
    "video_length": config.video_length,
    "video_size": config.video_size,
    "seed": config.seed,
    # Only their sizes matter here; dataset_parameters insists on shard counts.
    "tables": {"train": "train@1", "validation": "validation@1"},
    "examples_per_subset": {
      "train": config.train_examples,
      "validation": config.validation_examples,
    },
  }
  if config.num_frames is not None:
    fields.update(num_frames=config.num_frames, stride=config.stride)
  return synthetic.dataset_parameters(ml_collections.ConfigDict(fields))


# Run as `python -m`, this file is a second copy of the module (__main__), which only hands over
# to vidtx.data.tfds_data; registering the class twice under one name would be an error.
class VidtxSynthetic(tfds.core.GeneratorBasedBuilder, skip_registration=__name__ == "__main__"):
  """vidtx's procedural videos (vidtx.data.synthetic): one config per task."""

  # The major version follows the generator's: new pictures never reuse old files.
  VERSION = tfds.core.Version(f"{synthetic.GENERATOR_VERSION}.0.0")
  RELEASE_NOTES = {
    str(VERSION): f"vidtx.data.synthetic generator version {synthetic.GENERATOR_VERSION}."
  }
  BUILDER_CONFIGS = [synthetic_config(task) for task in synthetic.TASKS]

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.video_size
    # DatasetInfo itself, not dataset_info_from_configs: that looks for metadata files next to
    # the module, which a TFDS catalog dataset has and this one does not need.
    return tfds.core.DatasetInfo(
      builder=self,
      description=f"vidtx's synthetic videos, task {self.builder_config.task!r}.",
      features=tfds.features.FeaturesDict(
        {
          "video": tfds.features.Video(shape=(None, size, size, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(
            names=synthetic.get_task(self.builder_config.task).class_names
          ),
          "video_id": tfds.features.Text(),
        }
      ),
      supervised_keys=("video", "label"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in ("train", "validation")}

  def _generate_examples(self, split: str):
    params = synthetic_parameters(self.builder_config)
    for i, (frames, label) in enumerate(synthetic.generate_split(params, split)):
      # Encoded here (TFDS would pass bytes through) so the JPEGs are the DMVR writer's, same
      # encoder and quality.
      yield (
        i,
        {
          "video": dmvr.encode_jpegs(frames, params["jpeg_quality"]),
          "label": label,
          "video_id": f"{split}-{i:06d}",
        },
      )


def build_synthetic(
  data_dir: str,
  task: str = "motion",
  *,
  train_examples: int | None = None,
  validation_examples: int | None = None,
  video_length: int | None = None,
  video_size: int | None = None,
  seed: int | None = None,
  num_frames: int | None = None,
  stride: int | None = None,
  num_shards: int | None = None,
) -> VidtxSynthetic:
  """Builds vidtx_synthetic/<config> into data_dir (unless already there); returns the builder.

  Unset parameters take configs.common.synthetic_dataset()'s values; read it back as
  'tfds:vidtx_synthetic/' + builder.builder_config.name. `num_shards` (default: TFDS's choice,
  one file for small data) sets the number of files per split.
  """
  config = synthetic_config(
    task,
    train_examples=train_examples,
    validation_examples=validation_examples,
    video_length=video_length,
    video_size=video_size,
    seed=seed,
    num_frames=num_frames,
    stride=stride,
  )
  builder = VidtxSynthetic(config=config, data_dir=os.path.expanduser(data_dir))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      num_shards=num_shards, compute_stats=tfds.download.ComputeStatsMode.SKIP
    )
  )
  return builder


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description="Builds vidtx's synthetic dataset with TFDS.")
  parser.add_argument("--data_dir", default=constants.get_default_data_dir())
  parser.add_argument("--task", default="motion", choices=sorted(synthetic.TASKS))
  for field in SYNTHETIC_DEFAULTS:
    parser.add_argument(
      f"--{field}", type=int, default=None, help=f"default {SYNTHETIC_DEFAULTS[field]}"
    )
  parser.add_argument("--num_shards", type=int, default=None)
  args = vars(parser.parse_args(argv))
  builder = build_synthetic(args.pop("data_dir"), args.pop("task"), **args)
  print(
    f"Prepared {builder.data_dir}\nRead it with "
    f"config.dataset_name = 'tfds:vidtx_synthetic/{builder.builder_config.name}'."
  )


if __name__ == "__main__":
  from vidtx.data import tfds_data

  tfds_data.main()
