"""Checkpoints from elsewhere: read any peer's format, convert it, initialise from it.

    converted = checkpoints.convert_source('model.safetensors-folder')   # -> store.Converted
    converted = checkpoints.convert_source('hf:facebook/timesformer-base-finetuned-k400')
    store.save('out_dir', converted)                                      # python -m vidtx.convert
    params = init_from.initialise(params, ...)                            # train.py init_from

- hub.py: `hf:ORG/NAME[@REVISION]` -> the Hugging Face cache's folder (downloaded if allowed).
- readers.py: one reader per format -> flat {source name: array} (+ the source's config).
- names.py, vit.py, video.py: source names -> vidtx parameters, model config, preprocessing.
- surgery.py: the pure array functions (layouts, positional-embedding resize and tiling).
- init_from.py: the papers' rules to start any vidtx model from an image ViT or a video model.
- store.py: the converted-checkpoint directory.

A train.py workdir (config.json + checkpoints/) read as a converted checkpoint: vidtx.run_files;
the run's own orbax checkpoints: vidtx.run_checkpoints.
"""

import os
from typing import TYPE_CHECKING, Any

# Nothing of the package is imported here: a caller of one module (`from vidtx.checkpoints
# import init_from`) loads only what that module needs, and `vidtx-convert --help` answers at
# once. convert_source imports the readers and mappers when a conversion needs them.
from vidtx.errors import UserError

if TYPE_CHECKING:
  from vidtx.checkpoints import store

__all__ = ["FORMATS", "Converted", "convert_source"]


def __getattr__(name: str) -> Any:
  if name == "FORMATS":  # vidtx.checkpoints.FORMATS, imported when first asked for.
    return _formats()
  if name == "Converted":  # vidtx.checkpoints.Converted, imported when first asked for.
    from vidtx.checkpoints.store import Converted

    return Converted
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def convert_source(path: str, format: str = "auto", **options: Any) -> "store.Converted":
  """Reads `path` in `format` and maps it to a vidtx model (see vidtx.convert for options).

  `path`: a file or folder, or `hf:ORG/NAME[@REVISION]`, a Hugging Face Hub model (hub.py).

  options: num_heads, num_classes, attention, attention_order, crop_size, ignore (regexes of
  source names to drop), step (the checkpoint of a run; runs only). Options a format has no use
  for are ignored.
  """
  from vidtx import run_files
  from vidtx.checkpoints import hub, readers, video, vit

  formats = _formats()
  if format != "auto" and format not in formats:
    raise UserError(f"--format={format!r}: expected 'auto' or one of {list(formats)}.")
  if hub.is_hub_name(path):
    if format not in ("auto", "hf"):
      raise UserError(
        f"--format={format!r}: {path} names a Hugging Face Hub model; expected 'auto' or 'hf'."
      )
    hub_name, path, format = path, hub.resolve(path), "hf"
  else:
    hub_name = None
  num_classes = options.get("num_classes")
  # Before readers' detection: a run has a config.json too, which would read as 'hf'.
  if format == "run" or (format == "auto" and _looks_like_run(path)):
    if num_classes is not None:
      raise UserError(
        f"--num_classes={num_classes}: {path} is a train.py run, whose head has "
        "the classes it was trained on (config.dataset_configs.num_classes); "
        "leave --num_classes out (to train a new head, use the run as "
        "config.init_from.checkpoint_path of a new run)."
      )
    return run_files.export_run(path, step=options.get("step"))
  if options.get("step") is not None:
    raise UserError(
      f"--step={options['step']} picks a checkpoint of a train.py run; {path} is "
      "not one (expected a directory with config.json and checkpoints/)."
    )
  source = readers.read(path, format)
  ignore = tuple(options.get("ignore") or ())
  if source.format == "hf":
    model_type = (source.config or {}).get("model_type")
    mappers = {
      "vit": vit.from_hf_vit,
      "timesformer": video.from_hf_timesformer,
      "vivit": video.from_hf_vivit,
    }
    if model_type not in mappers:
      raise UserError(
        f"{path}/config.json: model_type={model_type!r}; vidtx converts {sorted(mappers)}."
      )
    converted = mappers[model_type](source, num_classes=num_classes, ignore=ignore)
    if hub_name:
      note = f"from {hub_name} (commit {os.path.basename(os.path.normpath(path))})"
      converted.source.setdefault("notes", []).append(note)
    return converted
  if source.format == "timesformer":
    return video.from_official_timesformer(
      source, num_heads=options.get("num_heads"), num_classes=num_classes, ignore=ignore
    )
  if source.format == "timm":
    return vit.from_timm(
      source, num_heads=options.get("num_heads"), num_classes=num_classes, ignore=ignore
    )
  if source.format in ("vit_npz", "big_vision"):
    return vit.from_flax_npz(source, num_classes=num_classes, ignore=ignore)
  return video.from_scenic(
    source,
    attention=options.get("attention"),
    attention_order=options.get("attention_order"),
    crop_size=options.get("crop_size"),
    num_classes=num_classes,
    ignore=ignore,
  )


def _formats() -> tuple[str, ...]:
  """What convert_source reads: a train.py run, and every peer format of readers.py."""
  from vidtx.checkpoints import readers

  return ("run", *readers.FORMATS)


def _looks_like_run(path: str) -> bool:
  """A train.py workdir; also one without config.json (from before train.py wrote it), so that
  export_run says how to add it. The peer formats' folders have no checkpoints/ subfolder
  (Hugging Face: config.json and weights; scenic: checkpoint_<step> files)."""
  from vidtx import run_files

  return run_files.looks_like_run(path)  # A local directory or a run kept in a bucket (gs://).
