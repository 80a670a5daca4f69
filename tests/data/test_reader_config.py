"""vidtx.data.reader_config.DatasetConfig: dataset_configs read once, typed, with one default per
field; unknown fields ignored as before; derived values as properties."""

import dataclasses

import ml_collections
import numpy as np
import pytest
import shared

from vidtx.data import reader_config
from vidtx.data.reader_config import DatasetConfig
from vidtx.errors import UserError


def test_from_config_types_fields_fills_defaults_and_ignores_unknown_fields():
  # A plain dict (a workdir's config.json, a converted checkpoint) or a ConfigDict (a recipe).
  fields = {**shared.reader_configs("/data").to_dict(), "stride": "3", "a_recipe_note": "kept out"}
  dataset = DatasetConfig.from_config(fields)
  assert (dataset.num_frames, dataset.stride, dataset.crop_size) == (4, 3, 16)
  assert dataset.tables == {"train": "train.tfrecord@1", "validation": "validation.tfrecord@1"}
  # Unset fields take the dataclass's one default.
  assert (dataset.num_test_clips, dataset.train_sampling, dataset.shuffle_buffer_size) == (
    1,
    "stride",
    256,
  )
  assert dataset.max_bad_fraction == reader_config.DEFAULT_MAX_BAD_FRACTION
  assert dataset.augmentation == reader_config.Augmentation()
  assert not hasattr(dataset, "a_recipe_note")
  # zero_centering=False (shared.reader_configs) is the 'none' preset: pixels in [0, 1].
  assert dataset.normalisation == reader_config.NORMALIZATIONS["none"]
  # None where None is no value takes the default; max_bad_fraction=None says "no cap".
  fields.update(num_test_clips=None, max_bad_fraction=None, label_offset=None)
  dataset = DatasetConfig.from_config(fields)
  assert (dataset.num_test_clips, dataset.max_bad_fraction, dataset.label_offset) == (1, None, 0)
  # The typed object is frozen: a run cannot change it behind the reader's back.
  with pytest.raises(dataclasses.FrozenInstanceError):
    dataset.num_frames = 8  # type: ignore[misc]


def test_derived_values_are_properties():
  dataset = DatasetConfig.from_config(
    shared.reader_configs(
      "/data",
      num_test_clips=2,
      do_three_spatial_crops=True,
      min_resize=20,
      flip_label_pairs=[(0, 2)],
      augmentation_params={"do_jitter_scale": True, "scale_max_factor": 1.5},
    )
  )
  assert dataset.num_views == 6 and dataset.eval_short_side == 20
  assert dataset.flip_table.tolist() == [2, 1, 0, 3] and dataset.flip_table.dtype == np.int32
  assert dataset.label_shape == () and not dataset.multi_hot
  assert dataset.augmentation.do_jitter_scale and dataset.augmentation.scale_max_factor == 1.5
  assert dataset.augmentation.scale_min_factor == 0.9  # The default of the rest.
  split = DatasetConfig.from_config(
    shared.reader_configs("/data", num_classes=5, class_splits=[3, 2], eval_min_resize=18)
  )
  assert split.class_splits == (3, 2) and split.split_names == ("split_0", "split_1")
  assert split.multi_hot and split.label_shape == (5,) and split.eval_short_side == 18


def test_errors_name_the_field():
  with pytest.raises(UserError, match=r"dataset_configs.num_frames='four': expected an integer"):
    DatasetConfig.from_config({**shared.reader_configs("/data").to_dict(), "num_frames": "four"})
  with pytest.raises(UserError, match=r"dataset_configs.base_dir must be set"):
    DatasetConfig.from_config(ml_collections.ConfigDict(dict(num_frames=4)))
  # The views alone (a converted checkpoint's preprocessing) need no source fields.
  views = {"num_frames": 4, "stride": 2, "min_resize": 16, "crop_size": 16}
  assert DatasetConfig.from_config(views, views_only=True).num_classes == 0
