"""Readers of the checkpoint formats users hold, into flat {source name: numpy array} dicts.

`read(path, format='auto')` returns a `Source`: the format, the arrays under the source's own
names (flattened with '/' for Flax/npz trees, '.' for PyTorch state dicts), and the source's
own configuration where it has one (Hugging Face config.json, the official TimeSformer cfg).
What the names mean is for the mappers (vit.py, video.py); this file only reads.

Formats (`FORMATS`), detected from the path when format='auto':
- 'hf': a Hugging Face `save_pretrained` folder: config.json + model.safetensors (or
  pytorch_model.bin, or shards with an index json). ViT, TimeSformer and ViViT.
- 'timesformer': the official TimeSformer `.pyth` (PySlowFast): state dict under
  'model_state', names prefixed 'model.', the run's cfg as a YAML string under 'cfg'.
- 'timm': a timm / PyTorch ViT state dict: `.pth`, `.pt`, `.bin` or `.safetensors`.
- 'vit_npz': a google-research/vision_transformer `.npz` (pre-Linen names).
- 'big_vision': a big_vision `.npz` (names under 'params/' or 'opt/target/').
- 'scenic': a scenic (Flax msgpack) checkpoint file `checkpoint_<step>`, or the directory
  holding them (the newest is read). Params under 'optimizer/target' or 'params'.
"""

import dataclasses
import glob
import json
import os
import re
import zipfile
import zlib
from typing import Any

import numpy as np

from vidtx.errors import UserError

FORMATS = ("hf", "timesformer", "timm", "vit_npz", "big_vision", "scenic")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".pyth")


@dataclasses.dataclass
class Source:
  """A checkpoint as read: arrays under the source's names, and its own config if any."""

  path: str
  format: str
  tensors: dict[str, np.ndarray]
  config: dict[str, Any] | None = None  # HF config.json; official TimeSformer cfg.
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. HF preprocessing.


def read(path: str, format: str = "auto") -> Source:
  """Reads the checkpoint at `path` (file or folder) in `format` ('auto': detected)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"Checkpoint {path!r} does not exist.")
  if format == "auto":
    format = detect_format(path)
  if format not in FORMATS:
    raise UserError(f"--format={format!r}: expected 'auto' or one of {list(FORMATS)}.")
  return _READERS[format](path)


def detect_format(path: str) -> str:
  """The format of `path`, from its layout and, for ambiguous files, its contents."""
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, "config.json")):
      return "hf"
    if _scenic_files(path):
      return "scenic"
    raise UserError(
      f"{path} is a directory but neither a Hugging Face folder (no config.json) nor a scenic "
      "checkpoint directory (no checkpoint_<step> files); pass the checkpoint file itself or "
      "--format."
    )
  name = os.path.basename(path)
  if name.endswith(".npz"):
    keys = list(_read_npz_file(path, keys_only=True))
    return (
      "big_vision" if any(k.startswith(("params/", "opt/target/")) for k in keys) else "vit_npz"
    )
  if name.endswith(".pyth"):
    return "timesformer"
  if name.endswith(".safetensors"):
    return "timm"
  if name.endswith(TORCH_SUFFIXES):
    state = _torch_load(path, unwrap=False)
    return "timesformer" if "model_state" in state else "timm"
  if re.match(r"checkpoint_\d+$", name) or _is_msgpack(path):
    return "scenic"
  raise UserError(
    f"Cannot tell the format of {path!r} from its name; expected a Hugging Face folder, .npz, "
    f".pyth, .pth/.pt/.bin, .safetensors or a scenic checkpoint_<step>; or pass --format "
    f"(one of {list(FORMATS)})."
  )


# ----------------------------------------------------------------------------------------
# Per-format readers.
# ----------------------------------------------------------------------------------------


def _read_hf(path: str) -> Source:
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    raise UserError(f"{path}: not a Hugging Face folder (no config.json).")
  with open(config_path) as f:
    config = json.load(f)
  tensors = {}
  files = _hf_weight_files(path)
  for file in files:
    part = _read_safetensors(file) if file.endswith(".safetensors") else _torch_load(file)
    tensors.update(part)
  extra = {}
  preprocessor = os.path.join(path, "preprocessor_config.json")
  if os.path.isfile(preprocessor):
    with open(preprocessor) as f:
      extra["preprocessor_config"] = json.load(f)
  return Source(path, "hf", tensors, config, extra)


def _hf_weight_files(path: str) -> list[str]:
  for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
    index = os.path.join(path, index_name)
    if os.path.isfile(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      return [os.path.join(path, name) for name in sorted(set(weight_map.values()))]
  for name in ("model.safetensors", "pytorch_model.bin"):
    if os.path.isfile(os.path.join(path, name)):
      return [os.path.join(path, name)]
  raise UserError(
    f"{path}: Hugging Face folder without weights; expected model.safetensors or "
    "pytorch_model.bin (or a sharded index)."
  )


def _read_official_timesformer(path: str) -> Source:
  state = _torch_load(path, unwrap=False)
  if "model_state" not in state:
    raise UserError(
      f"{path}: not an official TimeSformer checkpoint: no 'model_state' "
      f"(top-level keys: {sorted(state)[:10]})."
    )
  tensors = {_strip(k, "model."): v for k, v in _to_numpy(state["model_state"]).items()}
  config = None
  if isinstance(state.get("cfg"), str):
    import yaml  # PyYAML comes with ml_collections.

    config = yaml.safe_load(state["cfg"])
  return Source(path, "timesformer", tensors, config)


def _read_timm(path: str) -> Source:
  if path.endswith(".safetensors"):
    tensors = _read_safetensors(path)
  else:
    tensors = _torch_load(path)
  # DDP / wrapper prefixes.
  for prefix in ("module.", "model."):
    if tensors and all(k.startswith(prefix) for k in tensors):
      tensors = {_strip(k, prefix): v for k, v in tensors.items()}
  return Source(path, "timm", tensors)


def _read_npz(path: str, format: str) -> Source:
  tensors = _read_npz_file(path)
  if format == "big_vision":
    for prefix in ("params/", "opt/target/"):
      if any(k.startswith(prefix) for k in tensors):
        tensors = {_strip(k, prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        break
    # Two-tower models keep the image tower under 'img/'.
    if tensors and all(k.startswith("img/") for k in tensors):
      tensors = {_strip(k, "img/"): v for k, v in tensors.items()}
  return Source(path, format, tensors)


def _read_scenic(path: str) -> Source:
  from flax import serialization, traverse_util

  if os.path.isdir(path):
    files = _scenic_files(path)
    if not files:
      raise UserError(f"{path}: no scenic checkpoint_<step> files in this directory.")
    path = files[-1]
  with open(path, "rb") as f:
    try:
      state = serialization.msgpack_restore(f.read())
    except Exception as e:  # msgpack raises several unrelated types on bad input.
      raise UserError(
        f"{path}: not a Flax msgpack checkpoint, or truncated or corrupt ({type(e).__name__}: {e})."
      ) from e
  if not isinstance(state, dict):
    raise UserError(f"{path}: a Flax checkpoint holds a dict, got {type(state).__name__}.")
  for keys in (("optimizer", "target"), ("params",)):
    node = state
    for key in keys:
      node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
      params = node
      break
  else:
    raise UserError(
      f"{path}: no parameters under 'optimizer/target' or 'params' "
      f"(top-level keys: {sorted(state)})."
    )
  flat = traverse_util.flatten_dict(params, sep="/")
  return Source(path, "scenic", {k: np.asarray(v) for k, v in flat.items()})


_READERS = {
  "hf": _read_hf,
  "timesformer": _read_official_timesformer,
  "timm": _read_timm,
  "vit_npz": lambda path: _read_npz(path, "vit_npz"),
  "big_vision": lambda path: _read_npz(path, "big_vision"),
  "scenic": _read_scenic,
}


# ----------------------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------------------


def _strip(name: str, prefix: str) -> str:
  return name[len(prefix) :] if name.startswith(prefix) else name


def _scenic_files(path: str) -> list[str]:
  files = [
    f
    for f in glob.glob(os.path.join(glob.escape(path), "checkpoint_*"))
    if re.match(r"checkpoint_\d+$", os.path.basename(f)) and os.path.isfile(f)
  ]
  return sorted(files, key=lambda f: int(f.rsplit("_", 1)[1]))


def _is_msgpack(path: str) -> bool:
  # A msgpack map starts with 0x80-0x8f (fixmap), 0xde or 0xdf.
  with open(path, "rb") as f:
    head = f.read(1)
  return bool(head) and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF))


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  """Every tensor of a .safetensors file; bfloat16 and float16 come back float32, as from .pth."""
  from safetensors import SafetensorError, safe_open

  tensors = {}
  try:
    with safe_open(path, framework="numpy") as f:
      for key in f.keys():
        value = f.get_tensor(key)
        if value.dtype.kind == "V" or value.dtype.name in ("bfloat16", "float16"):
          value = value.astype(np.float32)
        tensors[key] = value
  except SafetensorError as e:
    # The header is checked against the file's size on opening: a cut-off download lands here.
    raise UserError(_corrupt(path, "a .safetensors", e)) from e
  except (TypeError, ValueError) as e:
    if "bf16" not in str(e).lower() and "bfloat16" not in str(e).lower():
      raise UserError(f"{path}: cannot read as safetensors ({e}).") from e
    # A numpy without bfloat16 support: read through torch and upcast.
    torch = _import_torch(path)
    with safe_open(path, framework="pt") as f:
      for key in f.keys():
        tensors[key] = f.get_tensor(key).to(torch.float32).numpy()
  return tensors


def _read_npz_file(path: str, keys_only: bool = False) -> dict[str, np.ndarray | None]:
  """Every array of an .npz (or only its names, values None), ValueError naming the file if
  it is truncated or corrupt (zip reports a cut-off file as 'not a zip file', a damaged
  member as a bad CRC, only when it is read)."""
  with open(path, "rb") as f:
    head = f.read(4)
  # np.load takes a file without the zip signature for a pickle, and says so: misleading here.
  if head not in (b"PK\x03\x04", b"PK\x05\x06"):
    raise UserError(_corrupt(path, "an .npz", "no zip signature at its start"))
  try:
    with np.load(path, allow_pickle=False) as npz:
      return {k: None if keys_only else np.asarray(npz[k]) for k in npz.keys()}
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
    raise UserError(_corrupt(path, "an .npz", e)) from e
  except ValueError as e:  # E.g. object arrays, which need pickle.
    raise UserError(f"{path}: cannot read it as an .npz file of arrays ({e}).") from e


def _corrupt(path: str, kind: str, error: BaseException | str) -> str:
  """One line: `path` cannot be read as `kind`, probably cut off, with the library's reason."""
  reason = str(error).splitlines()[0] if str(error) else type(error).__name__
  return (
    f"{path}: cannot read it as {kind} file: it is truncated or corrupt ({reason}); "
    "download or write it again."
  )


def _import_torch(path: str):
  try:
    import torch
  except ImportError as e:
    raise ImportError(
      f"Reading {path} needs PyTorch: pip install torch==2.13.0 (the CPU build is enough)."
    ) from e
  return torch


def _torch_load(path: str, unwrap: bool = True) -> dict[str, Any]:
  """A PyTorch checkpoint as a dict; with unwrap, the state dict of the usual wrappers."""
  torch = _import_torch(path)
  try:
    # weights_only: never run code from a checkpoint file.
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for unreadable or unsafe files.
    # A refused (unsafe) pickle is whole; anything else is most often a cut-off download.
    why = (
      "" if "weights only" in str(e).lower() else ": truncated, corrupt or not a torch.save file"
    )
    raise UserError(
      f"{path}: cannot read as a PyTorch checkpoint{why} ({type(e).__name__}: "
      f"{str(e).splitlines()[0] if str(e) else ''})."
    ) from e
  if not isinstance(state, dict):
    raise UserError(f"{path}: expected a dict (a state dict), got {type(state).__name__}.")
  if not unwrap:
    return state
  for key in ("model_state", "state_dict", "model", "module"):
    if isinstance(state.get(key), dict):
      state = state[key]
      break
  return _to_numpy(state)


def _to_numpy(state: dict[str, Any]) -> dict[str, np.ndarray]:
  import torch

  out = {}
  for key, value in state.items():
    if isinstance(value, torch.Tensor):
      value = value.detach()
      if value.dtype in (torch.bfloat16, torch.float16):
        value = value.to(torch.float32)
      out[key] = value.numpy()
  return out
