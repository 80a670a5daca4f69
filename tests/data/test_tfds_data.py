"""vidtx.data.tfds_data: the vidtx_synthetic TFDS builder and the reader of prepared TFDS video
datasets (order, process shares, frames and labels, errors, a foreign builder's dataset)."""

import os

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vidtx.configs import common
from vidtx.data import dmvr, synthetic, tfds_data

tfds.disable_progress_bar()

SIZES = dict(train_examples=8, validation_examples=4, video_length=6, video_size=16)
NAME = "vidtx_synthetic/motion-train8-validation4-length6-size16"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  directory = str(tmp_path_factory.mktemp("tfds"))
  # Three files per split, so shuffling the files changes the order.
  builder = tfds_data.build_synthetic(directory, "motion", num_shards=3, **SIZES)
  assert f"vidtx_synthetic/{builder.builder_config.name}" == NAME
  return directory


def configs(data_dir: str, **fields) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(tfds_data_dir=data_dir, **fields))


def read(
  data_dir: str,
  split: str = "train",
  *,
  name: str = NAME,
  process_index: int = 0,
  process_count: int = 1,
  shuffle_seed: int | None = None,
  epochs: int = 1,
  **fields,
) -> list[dict]:
  ds = tfds_data.records(
    name,
    configs(data_dir, **fields),
    split,
    process_index=process_index,
    process_count=process_count,
    shuffle_seed=shuffle_seed,
  )
  return list(ds.repeat(epochs).as_numpy_iterator())


def ids(elements: list[dict]) -> list[str]:
  return [e["video_id"].decode() for e in elements]


# ---------------------------------------------------------------------------------------------
# The builder.
# ---------------------------------------------------------------------------------------------


def test_defaults_and_config_names():
  defaults = common.synthetic_dataset("order")
  assert tfds_data.SYNTHETIC_DEFAULTS == {
    "train_examples": defaults.examples_per_subset["train"],
    "validation_examples": defaults.examples_per_subset["validation"],
    "video_length": defaults.video_length,
    "video_size": defaults.video_size,
    "seed": defaults.seed,
    "num_frames": defaults.num_frames,
    "stride": defaults.stride,
  }
  names = {c.name for c in tfds_data.VidtxSynthetic.BUILDER_CONFIGS}
  assert names == set(synthetic.TASKS)
  # Only non-default parameters enter the name; the clip only for 'order'.
  assert tfds_data.synthetic_config("motion", video_size=36, num_frames=4).name == "motion"
  assert (
    tfds_data.synthetic_config("order", num_frames=12, stride=1, seed=3).name
    == "order-seed3-frames12-stride1"
  )
  with pytest.raises(ValueError, match="video_length=4"):  # Shorter than the 'order' clip.
    tfds_data.synthetic_config("order", video_length=4)


def test_info(data_dir):
  info = tfds_data.info(NAME, configs(data_dir))
  assert info["num_classes"] == 4
  assert info["class_names"] == ["left", "right", "up", "down"]
  assert info["examples_per_subset"] == {"train": 8, "validation": 4}
  assert info["frame_shape"] == (16, 16, 3)
  assert not info["multi_label"]
  assert info["data_dir"] == os.path.join(data_dir, NAME, "1.0.0")


def test_fixed_order_reads_every_video_once_as_generated(data_dir):
  params = synthetic.dataset_parameters(
    ml_collections.ConfigDict(
      dict(
        task="motion",
        video_length=6,
        video_size=16,
        seed=0,
        tables={"train": "t@1", "validation": "v@1"},
        examples_per_subset={"train": 8, "validation": 4},
      )
    )
  )
  for split, count in (("train", 8), ("validation", 4)):
    elements = read(data_dir, split, tfds_id_key="video_id", tfds_frame_rate=25.0)
    assert sorted(ids(elements)) == [f"{split}-{i:06d}" for i in range(count)]
    again = read(data_dir, split, tfds_id_key="video_id")
    assert ids(again) == ids(elements)  # The same order again.
    by_id = {e["video_id"].decode(): e for e in elements}
    for i, (frames, label) in enumerate(synthetic.generate_split(params, split)):
      element = by_id[f"{split}-{i:06d}"]
      assert element["labels"].tolist() == [label]
      # The DMVR writer's JPEGs, byte for byte; decoded within JPEG tolerance of the pictures.
      assert element["jpegs"].tolist() == dmvr.encode_jpegs(frames, synthetic.JPEG_QUALITY)
      decoded = np.stack([tf.io.decode_image(j, channels=3).numpy() for j in element["jpegs"]])
      # (Small textured 16 x 16 frames with chroma subsampling: a few levels on average.)
      assert np.abs(decoded.astype(int) - frames).mean() < 8
    assert [e["frame_rate"] for e in elements] == [25.0] * count
    assert [e["source"].decode() for e in elements] == [
      f"tfds:{NAME} split={split} example {i}" for i in range(count)
    ]
  # Without an id feature: the position in the split, which is the fixed order.
  assert ids(read(data_dir)) == [f"{NAME}/train/{i}" for i in range(8)]


def test_shuffled_order_is_deterministic_per_seed(data_dir):
  first = ids(read(data_dir, shuffle_seed=0, epochs=3))
  assert ids(read(data_dir, shuffle_seed=0, epochs=3)) == first
  epochs = [first[i : i + 8] for i in (0, 8, 16)]
  assert all(sorted(epoch) == [f"{NAME}/train/{i}" for i in range(8)] for epoch in epochs)
  assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # Reshuffled every epoch.
  assert ids(read(data_dir, shuffle_seed=1, epochs=3)) != first


@pytest.mark.parametrize("process_count", [2, 3])
@pytest.mark.parametrize("shuffle_seed", [None, 0])
def test_process_shares_are_disjoint_and_cover_the_split(data_dir, process_count, shuffle_seed):
  shares = [
    ids(read(data_dir, process_index=p, process_count=process_count, shuffle_seed=shuffle_seed))
    for p in range(process_count)
  ]
  assert sorted(sum(shares, [])) == sorted(f"{NAME}/train/{i}" for i in range(8))
  assert sorted(len(s) for s in shares) == sorted(
    len(range(p, 8, process_count)) for p in range(process_count)
  )
  if shuffle_seed is None:  # Consecutive pieces of the split's order.
    assert sum(shares, []) == [f"{NAME}/train/{i}" for i in range(8)]


# ---------------------------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vidtx_synthetic/motion", "no_such_dataset", NAME])
def test_not_prepared(tmp_path, name):
  empty = str(tmp_path)
  for call in (lambda: tfds_data.info(name, configs(empty)), lambda: read(empty, name=name)):
    with pytest.raises(ValueError, match="not prepared") as error:
      call()
    message = str(error.value)
    assert name in message and empty in message and "never downloads" in message
  assert os.listdir(empty) == []  # Nothing downloaded or generated.


def test_bad_split(data_dir):
  with pytest.raises(ValueError, match=r"no split 'test'.*\['train', 'validation'\]") as error:
    read(data_dir, "test")
  assert NAME in str(error.value) and data_dir in str(error.value)
  with pytest.raises(ValueError, match="fewer than process_count=5"):
    read(data_dir, "validation", process_count=5)


@pytest.mark.parametrize(
  "fields, pattern",
  [
    (dict(tfds_video_key="frames"), r"tfds_video_key='frames'.*no such feature"),
    (dict(tfds_video_key="label"), r"tfds_video_key='label'.*found ClassLabel"),
    (dict(tfds_label_key="action"), r"tfds_label_key='action'.*no such feature"),
    (dict(tfds_label_key="video_id"), r"tfds_label_key='video_id'.*found Text"),
    (dict(tfds_id_key="video"), r"tfds_id_key='video'.*found Video"),
  ],
)
def test_bad_keys(data_dir, fields, pattern):
  # Names the dataset, where it is, what was expected and which features there are.
  pattern = f"{pattern}.*{{'label': ClassLabel, 'video': Video, 'video_id': Text}}"
  with pytest.raises(ValueError, match=pattern) as error:
    tfds_data.info(NAME, configs(data_dir, **fields))
  assert NAME in str(error.value) and data_dir in str(error.value)
  with pytest.raises(ValueError, match=pattern):
    read(data_dir, **fields)


# ---------------------------------------------------------------------------------------------
# A dataset from another builder, whose code vidtx does not have.
# ---------------------------------------------------------------------------------------------


class GreyClips(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Grey PNG frames of varying length under other feature names, and a multi-label feature."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "frames": tfds.features.Video(shape=(None, 8, 10, 1), encoding_format="png"),
          "action": tfds.features.ClassLabel(names=["a", "b", "c"]),
          "tags": tfds.features.Sequence(tfds.features.ClassLabel(names=["x", "y"])),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"test": self._generate_examples()}

  def _generate_examples(self):
    for i in range(5):
      yield i, {"frames": grey_video(i), "action": i % 3, "tags": [1, 0][: i % 3]}


def grey_video(i: int) -> np.ndarray:
  # A horizontal ramp over a per-video level: a lossless round trip shows every pixel.
  return np.full((2 + i, 8, 10, 1), 40 * i, np.uint8) + np.arange(10, dtype=np.uint8)[:, None]


def test_other_builders_dataset_with_other_keys(tmp_path):
  GreyClips(data_dir=str(tmp_path)).download_and_prepare()
  fields = dict(tfds_video_key="frames", tfds_label_key="action")
  info = tfds_data.info("grey_clips", configs(str(tmp_path), **fields))
  assert (info["num_classes"], info["frame_shape"]) == (3, (8, 10, 1))
  # A version named the TFDS way or as its directory.
  for name in ("grey_clips", "grey_clips:1.0.0", "grey_clips/1.0.0"):
    elements = read(str(tmp_path), "test", name=name, **fields)
    assert len(elements) == 5
    for element in elements:
      labels = element["labels"].tolist()
      assert len(labels) == 1
      i = next(i for i in range(5) if i % 3 == labels[0] and len(element["jpegs"]) == 2 + i)
      # Still encoded; lossless PNG decodes to the grey frames repeated over RGB.
      assert element["jpegs"][0].startswith(b"\x89PNG")
      decoded = np.stack([tf.io.decode_image(j, channels=3).numpy() for j in element["jpegs"]])
      np.testing.assert_array_equal(decoded, np.repeat(grey_video(i), 3, axis=-1))
  tags = read(
    str(tmp_path), "test", name="grey_clips", tfds_video_key="frames", tfds_label_key="tags"
  )
  assert sorted(len(e["labels"]) for e in tags) == [0, 0, 1, 1, 2]
  assert tfds_data.info(
    "grey_clips", configs(str(tmp_path), tfds_video_key="frames", tfds_label_key="tags")
  )["multi_label"]


def test_command_line_builds_the_order_task(tmp_path, capsys):
  tfds_data.main(
    [
      f"--data_dir={tmp_path}",
      "--task=order",
      "--train_examples=2",
      "--validation_examples=2",
      "--video_length=6",
      "--video_size=16",
      "--num_frames=4",
      "--stride=1",
    ]
  )
  name = "vidtx_synthetic/order-train2-validation2-length6-size16-frames4-stride1"
  assert f"'tfds:{name}'" in capsys.readouterr().out
  info = tfds_data.info(name, configs(str(tmp_path)))
  assert info["examples_per_subset"] == {"train": 2, "validation": 2}
  assert info["class_names"] == ["disc_first", "square_first"]
