"""The converted-checkpoint directory that `vidtx.convert` writes and train.py (init_from),
eval.py (--checkpoint) and `vidtx.predict` read.

    DIR/vidtx_model.json   what the model is and how its inputs are prepared (below)
    DIR/params/            the parameters, an orbax checkpoint of the Flax params tree
    DIR/.vidtx             vidtx's marker (kind 'converted', vidtx.ownership): only such a
                           directory is ever replaced (--overwrite)

vidtx_model.json:
    model_name      'timesformer' | 'vivit' | 'xvit'
    model           model config overrides (vidtx.models.build fills in the rest)
    num_classes     classes of the head
    labels          class names (index i is class i) or null
    preprocessing   how a video becomes the model's input, as the source model was evaluated:
                    num_frames, stride (frames between sampled frames at the video's rate),
                    min_resize (short side before cropping), crop_size, mean and std (per
                    channel, for pixels in [0, 1]: input = (pixel - mean) / std),
                    num_test_clips, do_three_spatial_crops, aggregation (of the views' logits)
    source          where it came from: path, format, notes on numerics

The directory is written under a temporary name and renamed when complete, so a directory
with this layout is always whole. An existing directory is replaced only when asked to
(`overwrite`) and only when it is a converted checkpoint itself (marked, or of this layout from
before the marker), never the source it was converted from nor a directory holding that source.
A converted checkpoint is read from a local directory or from a bucket (gs://, vidtx.paths); it
is written to a local directory.
"""

import dataclasses
import datetime
import json
import os
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp

from vidtx import models, ownership, paths
from vidtx.errors import UserError

MODEL_FILE = "vidtx_model.json"
PARAMS_DIR = "params"

PREPROCESSING_FIELDS = (
  "num_frames",
  "stride",
  "min_resize",
  "crop_size",
  "mean",
  "std",
  "num_test_clips",
  "do_three_spatial_crops",
  "aggregation",
)
# Kept when present: how clips are sampled (if not scenic's stride) and resized for evaluation.
SAMPLING_FIELDS = (
  "train_sampling",
  "eval_sampling",
  "sampling_rate",
  "target_fps",
  "frame_rate",
  "eval_min_resize",
)


@dataclasses.dataclass
class Converted:
  """A model with its parameters, as stored in a converted-checkpoint directory."""

  model_name: str
  model_config: dict[str, Any]
  num_classes: int
  params: Any  # Nested dict of numpy arrays (the Flax params tree).
  preprocessing: dict[str, Any]
  labels: list[str] | None = None
  source: dict[str, Any] = dataclasses.field(default_factory=dict)

  def build_model(self) -> nn.Module:
    return models.build(self.model_name, self.model_config, self.num_classes)

  def dataset_overrides(self) -> dict[str, Any]:
    """The preprocessing as dataset_configs fields of the reader (vidtx.data.reader_config)."""
    p = self.preprocessing
    return dict(
      num_frames=p["num_frames"],
      stride=p["stride"],
      min_resize=p["min_resize"],
      crop_size=p["crop_size"],
      mean=list(p["mean"]),
      std=list(p["std"]),
      num_test_clips=p["num_test_clips"],
      do_three_spatial_crops=p["do_three_spatial_crops"],
      **{k: p[k] for k in SAMPLING_FIELDS if k in p},
    )


def is_converted_dir(path: str) -> bool:
  return paths.isfile(os.path.join(path, MODEL_FILE))


def is_legacy_converted_dir(path: str) -> bool:
  """A converted checkpoint written before the marker: vidtx_model.json and nothing but this
  layout (a user's folder that merely holds a vidtx_model.json is not one)."""
  names = set(paths.listdir(path)) if paths.isdir(path) else set()
  return MODEL_FILE in names and names <= {MODEL_FILE, PARAMS_DIR}


def check_out_dir(out_dir: str, *, overwrite: bool, source: str | None = None) -> None:
  """Raises unless `out_dir` may receive a converted checkpoint: it does not exist, or
  `overwrite` is set and it is a converted checkpoint (or an empty directory) that is neither
  `source` nor holds it. Cheap: callers run it before a long conversion."""
  if not os.path.exists(out_dir):
    return
  try:
    ownership.check_removable(
      out_dir, "converted", protected=(source,), legacy=is_legacy_converted_dir
    )
  except ownership.NotOwnedError as e:
    if overwrite:
      raise
    # Not only "pass --overwrite": that would be refused too.
    raise FileExistsError(
      f"{out_dir} exists; choose a new output directory (--overwrite would not replace it: {e})"
    ) from e
  if not overwrite:
    raise FileExistsError(f"{out_dir} exists; pass --overwrite to replace it.")


def _check_preprocessing(preprocessing: Mapping[str, Any], where: str) -> dict[str, Any]:
  missing = [k for k in PREPROCESSING_FIELDS if k not in preprocessing]
  if missing:
    raise UserError(
      f"{where}: preprocessing lacks {missing}; expected all of {list(PREPROCESSING_FIELDS)}."
    )
  for key in ("mean", "std"):
    values = preprocessing[key]
    if len(values) != 3 or (key == "std" and min(values) <= 0):
      raise UserError(
        f"{where}: preprocessing.{key}={values!r}: expected 3 per-channel values"
        + (" > 0." if key == "std" else ".")
      )
  return {k: preprocessing[k] for k in PREPROCESSING_FIELDS + SAMPLING_FIELDS if k in preprocessing}


def save(out_dir: str, converted: Converted, *, overwrite: bool = False) -> str:
  """Writes `converted` to out_dir atomically; an existing out_dir is replaced only with
  `overwrite` and only when it is a converted checkpoint (check_out_dir)."""
  out_dir = os.path.abspath(out_dir)
  check_out_dir(out_dir, overwrite=overwrite, source=converted.source.get("path"))
  preprocessing = _check_preprocessing(converted.preprocessing, out_dir)
  # The model must build and its parameters must be exactly those it expects.
  model = converted.build_model()
  check_params(model, converted.params, preprocessing, where=out_dir)
  info = dict(
    model_name=converted.model_name,
    model=dict(converted.model_config),
    num_classes=int(converted.num_classes),
    labels=list(converted.labels) if converted.labels is not None else None,
    preprocessing=preprocessing,
    source=dict(
      converted.source, written=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    ),
  )
  if info["labels"] is not None and len(info["labels"]) != info["num_classes"]:
    raise UserError(f"{out_dir}: {len(info['labels'])} labels for {info['num_classes']} classes.")

  def fill(tmp: str) -> None:
    params = jax.tree.map(np.asarray, converted.params)
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(tmp, PARAMS_DIR), params)
      checkpointer.wait_until_finished()
    with open(os.path.join(tmp, MODEL_FILE), "w") as f:
      json.dump(info, f, indent=2)

  ownership.write_directory(
    out_dir,
    "converted",
    fill,
    recheck=lambda: check_out_dir(
      out_dir, overwrite=overwrite, source=converted.source.get("path")
    ),
  )
  return out_dir


def read_description(path: str) -> dict[str, Any]:
  """DIR/vidtx_model.json as a dict, without the parameters; ValueError naming the file when it
  is not a JSON object."""
  model_file = os.path.join(path, MODEL_FILE)
  try:
    info = json.loads(paths.read_text(model_file))
  except json.JSONDecodeError as e:
    raise UserError(f"{model_file}: not valid JSON ({e}).") from e
  if not isinstance(info, dict):
    raise UserError(f"{model_file}: expected a JSON object (what vidtx.convert writes).")
  return info


def load(path: str) -> Converted:
  """Reads a directory written by `save` (vidtx.convert)."""
  model_file = os.path.join(path, MODEL_FILE)
  if not paths.isfile(model_file):
    raise FileNotFoundError(
      f"{path} is not a converted checkpoint: no {MODEL_FILE} in it "
      "(make one with python -m vidtx.convert)."
    )
  info = read_description(path)
  for key in ("model_name", "model", "num_classes", "preprocessing"):
    if key not in info:
      raise UserError(f"{model_file}: field {key!r} is missing.")
  params_dir = paths.abspath(os.path.join(path, PARAMS_DIR))
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      params = checkpointer.restore(params_dir)
  except Exception as e:  # noqa: BLE001 - files missing, truncated or corrupt.
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    raise UserError(
      f"{params_dir}: cannot be read: files missing, truncated or corrupt "
      f"({reason}); convert the checkpoint again."
    ) from e
  params = jax.tree.map(np.asarray, params)
  converted = Converted(
    model_name=info["model_name"],
    model_config=info["model"],
    num_classes=int(info["num_classes"]),
    params=params,
    preprocessing=_check_preprocessing(info["preprocessing"], model_file),
    labels=info.get("labels"),
    source=info.get("source", {}),
  )
  return converted


def expected_shapes(model: nn.Module, num_frames: int, crop_size: int) -> dict[str, tuple]:
  """Flat 'a/b/c' -> shape of the params `model` creates for clips of this size."""
  video = jax.ShapeDtypeStruct((1, num_frames, crop_size, crop_size, 3), np.float32)
  shapes = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)
  flat = flax.traverse_util.flatten_dict(shapes["params"], sep="/")
  return {k: tuple(v.shape) for k, v in flat.items()}


def check_params(
  model: nn.Module, params: Any, preprocessing: Mapping[str, Any], where: str
) -> None:
  """Raises ValueError listing every missing, unexpected or misshapen parameter."""
  expected = expected_shapes(model, preprocessing["num_frames"], preprocessing["crop_size"])
  got = {
    k: tuple(np.shape(v))
    for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/").items()
  }
  problems = [f"missing: {k} {expected[k]}" for k in sorted(set(expected) - set(got))]
  problems += [f"unexpected: {k} {got[k]}" for k in sorted(set(got) - set(expected))]
  problems += [
    f"shape of {k}: {got[k]}, the model expects {expected[k]}"
    for k in sorted(set(got) & set(expected))
    if got[k] != expected[k]
  ]
  if problems:
    raise UserError(
      f"{where}: the parameters do not fit the model "
      f"({len(problems)} problem(s)):\n  " + "\n  ".join(problems)
    )
