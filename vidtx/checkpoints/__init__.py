"""Checkpoints from elsewhere: read any peer's format, convert it, initialise from it.

    converted = checkpoints.convert_source('model.safetensors-folder')   # -> store.Converted
    store.save('out_dir', converted)                                      # python -m vidtx.convert
    params = init_from.initialise(params, ...)                            # train.py init_from

- readers.py: one reader per format -> flat {source name: array} (+ the source's config).
- names.py, vit.py, video.py: source names -> vidtx parameters, model config, preprocessing.
- surgery.py: the pure array functions (layouts, positional-embedding resize and tiling).
- init_from.py: the papers' rules to start any vidtx model from an image ViT or a video model.
- store.py: the converted-checkpoint directory.
"""

from typing import Any

from vidtx.checkpoints import readers, video, vit
from vidtx.checkpoints.store import Converted

__all__ = ["Converted", "convert_source"]


def convert_source(path: str, format: str = "auto", **options: Any) -> Converted:
  """Reads `path` in `format` and maps it to a vidtx model (see vidtx.convert for options).

  options: num_heads, num_classes, attention, attention_order, crop_size, ignore (regexes of
  source names to drop). Options a format has no use for are ignored.
  """
  source = readers.read(path, format)
  ignore = tuple(options.get("ignore") or ())
  num_classes = options.get("num_classes")
  if source.format == "hf":
    model_type = (source.config or {}).get("model_type")
    mappers = {"vit": vit.from_hf_vit, "timesformer": video.from_hf_timesformer,
               "vivit": video.from_hf_vivit}
    if model_type not in mappers:
      raise ValueError(f"{path}/config.json: model_type={model_type!r}; vidtx converts "
                       f"{sorted(mappers)}.")
    return mappers[model_type](source, num_classes=num_classes, ignore=ignore)
  if source.format == "timesformer":
    return video.from_official_timesformer(source, num_heads=options.get("num_heads"),
                                           num_classes=num_classes, ignore=ignore)
  if source.format == "timm":
    return vit.from_timm(source, num_heads=options.get("num_heads"), num_classes=num_classes,
                         ignore=ignore)
  if source.format in ("vit_npz", "big_vision"):
    return vit.from_flax_npz(source, num_classes=num_classes, ignore=ignore)
  return video.from_scenic(source, attention=options.get("attention"),
                           attention_order=options.get("attention_order"),
                           crop_size=options.get("crop_size"), num_classes=num_classes,
                           ignore=ignore)
