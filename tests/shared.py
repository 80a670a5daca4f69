"""What the test areas share: tiny training configs, checkpoint reading, files on disk.

Tiny configs are small enough to train a step in seconds on a CPU; the same sizes recur so that
the compilation cache serves most programs.
"""

import hashlib
import importlib
import os
import struct

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf

from vidtx import device_augment, models
from vidtx.configs import synthetic_timesformer
from vidtx.data import dmvr, reader_config
from vidtx.inference.preprocess import encode_video
from vidtx.models import vivit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")

# ---------------------------------------------------------------------------------------------
# Tiny training configs.
# ---------------------------------------------------------------------------------------------


def tiny_config(data_dir: str, steps: int = 1, attention: str = "divided"):
  """A divided-attention TimeSformer of 1 layer on 34 synthetic videos of 10 x 20 x 20."""
  config = synthetic_timesformer.get_config(f"attention={attention}")
  ds = config.dataset_configs
  ds.base_dir = data_dir
  ds.tables = {"train": "train.tfrecord@2", "validation": "validation.tfrecord@1"}
  ds.examples_per_subset = {"train": 24, "validation": 10}
  ds.video_length, ds.video_size = 10, 20
  ds.num_frames, ds.stride, ds.min_resize, ds.crop_size = 4, 2, 20, 16
  ds.num_test_clips = 2
  config.model.update(hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64)
  config.batch_size = 4
  config.eval_batch_size = 4  # 10 videos: the last batch is padded.
  config.num_training_steps = steps
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.lr_configs.warmup_steps = 1
  return config


TINY_MODEL = dict(hidden_size=16, num_heads=2, mlp_dim=32, num_layers=2)
# Every (model, attention) pair the models accept: a new scheme is covered without editing here.
ZOO = [
  (name, attention)
  for name, entry in sorted(models.MODELS.items())
  for attention in importlib.import_module(entry.module.__module__).ATTENTIONS
]


def tiny_model_config(model_name: str, attention: str) -> dict:
  config = dict(TINY_MODEL, attention=attention)
  # 16x16 frames in 8x8 patches: a 2x2 grid, even as local-global attention needs.
  config["variant"] = "Ti/8x2" if model_name == "vivit" else "Ti/8"
  if model_name == "vivit" and attention == "factorised_encoder":
    config.update(spatial_layers=1, temporal_layers=1)
  if model_name == "vivit" and attention in vivit.GAP_ONLY:
    config["classifier"] = "gap"  # Models 3 and 4 have no class token.
  return config


def tiny_train_config(data_dir: str, model_name: str, attention: str):
  """`model_name` with `attention` at TINY_MODEL size, on 24 synthetic videos of 10 x 16 x 16."""
  config = synthetic_timesformer.get_config()
  ds = config.dataset_configs
  ds.base_dir = data_dir
  ds.tables = {"train": "train.tfrecord@1", "validation": "validation.tfrecord@1"}
  ds.examples_per_subset = {"train": 16, "validation": 8}
  ds.video_length, ds.video_size = 10, 16
  ds.num_frames, ds.stride, ds.min_resize, ds.crop_size = 4, 2, 16, 16
  ds.num_test_clips = 1
  config.model_name = model_name
  config.model = models.default_config(model_name)
  config.model.update(tiny_model_config(model_name, attention))
  config.batch_size = config.eval_batch_size = 8
  config.num_training_steps = 1
  config.log_every_steps = 1
  config.lr_configs.warmup_steps = 0
  return config


def restore_params(workdir, step):
  """Params of a checkpoint, onto this process's first device (whatever mesh saved them)."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
    dict(checkpointer.metadata(path).item_metadata.tree),
  )
  return checkpointer.restore(path, target)["params"]


def reader_configs(base_dir: str, **overrides) -> ml_collections.ConfigDict:
  """dataset_configs of the reader for 12 + 3 videos of 4 classes, 16 x 16 crops of 4 frames."""
  dc = ml_collections.ConfigDict(
    dict(
      base_dir=base_dir,
      tables={"train": "train.tfrecord@1", "validation": "validation.tfrecord@1"},
      examples_per_subset={"train": 12, "validation": 3},
      num_classes=4,
      num_frames=4,
      stride=2,
      min_resize=16,
      crop_size=16,
      zero_centering=False,
      random_flip=False,
      num_test_clips=1,
      do_three_spatial_crops=False,
      label_offset=0,
    )
  )
  dc.update(overrides)
  return dc


def model_inputs(batch: dict, dataset_configs: ml_collections.ConfigDict) -> np.ndarray:
  """float32 model inputs of a reader batch, as the accelerator makes them: a training batch's
  uint8 clips (B, T, H, W, 3) augmented with their parameters (the train step), evaluation views
  (B, V, T, H, W, 3) normalised (the evaluator's step)."""
  dc = reader_config.as_dataset_config(dataset_configs)
  if batch["inputs"].ndim == 6:
    return np.asarray(device_augment.normalise(batch["inputs"], *dc.normalisation))
  augmentation = reader_config.device_augmentation(dc)
  fields = {k: batch[k] for k in ("inputs", *augmentation.fields)}
  return np.asarray(device_augment.augment_batch(fields, augmentation)["inputs"])


# ---------------------------------------------------------------------------------------------
# Peer checkpoints: a tiny timm state dict (torch imported on use).
# ---------------------------------------------------------------------------------------------


def timm_state_dict(seed: int = 0) -> dict:
  """The state dict of a tiny timm ViT: width 32, 2 heads, 1 block, 16 x 16 patches of 32 x 32
  images, 3 classes."""
  import torch

  g = torch.Generator().manual_seed(seed)
  shapes = {
    "cls_token": (1, 1, 32),
    "pos_embed": (1, 5, 32),
    "patch_embed.proj.weight": (32, 3, 16, 16),
    "patch_embed.proj.bias": (32,),
    "blocks.0.norm1.weight": (32,),
    "blocks.0.norm1.bias": (32,),
    "blocks.0.attn.qkv.weight": (96, 32),
    "blocks.0.attn.qkv.bias": (96,),
    "blocks.0.attn.proj.weight": (32, 32),
    "blocks.0.attn.proj.bias": (32,),
    "blocks.0.norm2.weight": (32,),
    "blocks.0.norm2.bias": (32,),
    "blocks.0.mlp.fc1.weight": (64, 32),
    "blocks.0.mlp.fc1.bias": (64,),
    "blocks.0.mlp.fc2.weight": (32, 64),
    "blocks.0.mlp.fc2.bias": (32,),
    "norm.weight": (32,),
    "norm.bias": (32,),
    "head.weight": (3, 32),
    "head.bias": (3,),
  }
  return {name: 0.1 * torch.randn(shape, generator=g) for name, shape in shapes.items()}


# ---------------------------------------------------------------------------------------------
# Files: what a folder holds, test videos whose frames say their index, shards read back.
# ---------------------------------------------------------------------------------------------


def png_size(path: str) -> tuple[int, int]:
  """(width, height) from a PNG's header, after checking its signature."""
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", head
  return struct.unpack(">II", head[16:24])


def assert_trees_equal(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(a, b)


def digests(root) -> dict[str, str]:
  """sha256 of every file under `root`, by path relative to it."""
  found = {}
  for directory, _, files in os.walk(root):
    for name in files:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return found


H, W = 32, 48
BASE, STEP = 20, 8


def frames_of(num_frames: int, height: int = H, width: int = W) -> np.ndarray:
  frames = np.zeros((num_frames, height, width, 3), np.uint8)
  for k in range(num_frames):
    frames[k] = BASE + STEP * k
    frames[k, : height // 4, : width // 4] = (200, 30, 30)
  return frames


def frame_index(frame: np.ndarray) -> int:
  """Which source frame a decoded frame is, from the brightness of its lower half."""
  return int(round((frame[frame.shape[0] // 2 :].mean() - BASE) / STEP))


def write_video(path: str, num_frames: int, fps: int = 30, **size) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  codec = "libvpx-vp9" if path.endswith(".webm") else "libx264"
  return encode_video(path, frames_of(num_frames, **size), fps=fps, codec=codec)


def write_lines(path, lines) -> str:
  with open(path, "w") as f:
    f.write("".join(line + "\n" for line in lines))
  return str(path)


def read_table(output_dir: str, table: str) -> list[dict]:
  """Every example of a table, in shard order, with its frames decoded."""
  files = dmvr.expand_table(str(output_dir), table)
  examples = []
  for serialized in tf.data.TFRecordDataset(files):
    context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features={
        dmvr.LABEL_INDEX_KEY: tf.io.VarLenFeature(tf.int64),
        dmvr.LABEL_TEXT_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
        dmvr.VIDEO_ID_KEY: tf.io.FixedLenFeature([], tf.string),
        dmvr.START_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        dmvr.END_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        dmvr.FRAME_RATE_KEY: tf.io.FixedLenFeature([], tf.float32),
      },
      sequence_features={dmvr.IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string)},
    )
    frames = np.stack([tf.io.decode_jpeg(jpeg).numpy() for jpeg in sequence[dmvr.IMAGE_KEY]])
    examples.append(
      {
        "frames": frames,
        "indices": [frame_index(f) for f in frames],
        "labels": tf.sparse.to_dense(context[dmvr.LABEL_INDEX_KEY]).numpy().tolist(),
        "text": context[dmvr.LABEL_TEXT_KEY].numpy().decode(),
        "id": context[dmvr.VIDEO_ID_KEY].numpy().decode(),
        "start": int(context[dmvr.START_KEY]),
        "end": int(context[dmvr.END_KEY]),
        "fps": float(context[dmvr.FRAME_RATE_KEY]),
      }
    )
  return examples


# ---------------------------------------------------------------------------------------------
# Bounded waits (predict's bad inputs): a hang fails the test instead of stalling the suite.
# ---------------------------------------------------------------------------------------------


class TookTooLong(AssertionError):
  """A block under `within` ran past its deadline."""


class within:  # Lower case: read as `with within(5):`.
  """Fails (TookTooLong) when the block runs longer than `seconds`: SIGALRM interrupts it, even
  inside a blocking system call such as opening a named pipe. Main thread only (pytest's)."""

  def __init__(self, seconds: float):
    self.seconds = seconds

  def _expired(self, signum, frame):
    raise TookTooLong(f"still running after {self.seconds} s")

  def __enter__(self):
    import signal  # Here, not at the top: this block stays self-contained.

    self.previous = signal.signal(signal.SIGALRM, self._expired)
    signal.setitimer(signal.ITIMER_REAL, self.seconds)
    return self

  def __exit__(self, *exc):
    import signal

    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, self.previous)
    return False


# The preprocessing of the tiny converted checkpoints the checkpoint and ownership tests write.
TINY_PREPROCESSING = dict(
  num_frames=2,
  stride=1,
  min_resize=32,
  crop_size=32,
  mean=[0.5] * 3,
  std=[0.5] * 3,
  num_test_clips=1,
  do_three_spatial_crops=False,
  aggregation="mean_logits",
)
