"""Pictures of predictions: normalised views back to pixels, and the attention rollout picture
(--rollout; vidtx.rollout draws it)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from vidtx import outputs
from vidtx.errors import UserError


def display_frames(clips: np.ndarray, preprocessing: dict[str, Any]) -> np.ndarray:
  """Normalised clips (..., 3) back to uint8 pixels with the checkpoint's mean / std."""
  mean = np.asarray(preprocessing["mean"], np.float32)
  std = np.asarray(preprocessing["std"], np.float32)
  return np.clip(np.round((clips * std + mean) * 255.0), 0, 255).astype(np.uint8)


def save_rollout(
  path: str,
  clips: np.ndarray,
  heat: np.ndarray,
  logits: np.ndarray,
  names: Sequence[str],
  preprocessing: dict[str, Any],
  clip_names: Sequence[str],
) -> None:
  """The rollout picture (vidtx.rollout.rollout_image) of clips with their top-1, written
  atomically in the format of the file's extension (.png, .jpg, ...)."""
  import jax

  from vidtx import rollout

  file_format = image_format(path)
  probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
  titles = [
    f"{clip_name}: {names[int(np.argmax(p))]} {np.max(p):.0%}"
    for clip_name, p in zip(clip_names, probabilities, strict=True)
  ]
  image = rollout.rollout_image(display_frames(clips, preprocessing), heat, titles)
  with outputs.atomic_writer(path, "wb") as f:
    image.save(f, format=file_format)


def image_format(path: str) -> str:
  """PIL's format for the --rollout file's extension; ValueError for one PIL does not know."""
  from PIL import Image

  extension = os.path.splitext(path)[1].lower()
  image_format = Image.registered_extensions().get(extension)
  if image_format is None:
    raise UserError(
      f"--rollout {path}: unknown image extension {extension!r}; expected e.g. .png or .jpg."
    )
  return image_format
