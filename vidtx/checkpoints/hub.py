"""Checkpoints by Hugging Face Hub name: `hf:ORG/NAME[@REVISION]` -> a local folder.

`resolve('hf:facebook/timesformer-base-finetuned-k400')` returns the snapshot folder of the
Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), which
readers.py reads as any Hugging Face folder:
- the cache is read first, without network (REVISION: a branch, tag or commit hash; default the
  default branch as last downloaded; a commit prefix of 7+ hex digits picks a cached snapshot);
- when the cache lacks it, the files vidtx reads (*.json, *.safetensors, *.bin) are downloaded,
  unless HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set;
- otherwise one line says what to run on a machine with network.
huggingface_hub (a dependency of transformers) is imported only here, when a name is resolved.
"""

import os
import re

from vidtx.errors import UserError

PREFIX = "hf:"
# What readers.py reads from a Hugging Face folder; not TF/Flax/ONNX weights.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.bin"]
# HF repo ids: ORG/NAME of letters, digits, '-', '_', '.'; no '--' or '..'; <= 96 chars.
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
_SPEC = re.compile(rf"({_PART}/{_PART})(?:@([^\s@]+))?")
_TRUE = ("1", "on", "yes", "true")


def is_hub_name(path: str) -> bool:
  """Whether `path` names a Hub checkpoint (`hf:...`) rather than a local path."""
  return isinstance(path, str) and path.startswith(PREFIX)


def parse(spec: str) -> tuple[str, str | None]:
  """'hf:ORG/NAME[@REVISION]' -> (repo id, revision or None); ValueError if malformed."""
  name = spec[len(PREFIX) :] if is_hub_name(spec) else spec
  match = _SPEC.fullmatch(name)
  if not match or "--" in match.group(1) or ".." in match.group(1) or len(match.group(1)) > 96:
    raise UserError(
      f"{spec!r}: expected hf:ORG/NAME or hf:ORG/NAME@REVISION (a Hugging Face model id, e.g. "
      "hf:facebook/timesformer-base-finetuned-k400)."
    )
  return match.group(1), match.group(2)


def cache_dir() -> str:
  """The Hub cache huggingface_hub uses, from the environment now (not at its import)."""
  home = os.environ.get("HF_HOME") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    "huggingface",
  )
  path = (
    os.environ.get("HF_HUB_CACHE")
    or os.environ.get("HUGGINGFACE_HUB_CACHE")
    or os.path.join(os.path.expanduser(home), "hub")
  )
  return os.path.expandvars(os.path.expanduser(path))


def offline() -> str | None:
  """The variable that forbids network attempts (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE), if set."""
  for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    if (os.environ.get(var) or "").strip().lower() in _TRUE:
      return var
  return None


def resolve(spec: str) -> str:
  """The local folder of `spec` ('hf:ORG/NAME[@REVISION]'): cached, else downloaded if allowed.

  Raises ValueError (malformed name) or FileNotFoundError (one line: what to run)."""
  repo_id, revision = parse(spec)
  try:
    import huggingface_hub
    from huggingface_hub import errors
  except ImportError as e:
    raise ImportError(
      f"{spec} needs huggingface_hub: pip install huggingface_hub (it comes with transformers)."
    ) from e
  cache = cache_dir()
  folder, complete = _cached(huggingface_hub, errors, repo_id, revision, cache)
  if folder and (complete or offline()):
    return folder
  reason = f"{offline()} is set"
  if not offline():
    try:
      return huggingface_hub.snapshot_download(
        repo_id, revision=revision, cache_dir=cache, allow_patterns=ALLOW_PATTERNS
      )
    except Exception as e:  # Network, HTTP (missing, gated), disk: all end in the line below.
      reason = f"{type(e).__name__}: {_first_line(e)}"
  if folder:  # Partly downloaded and not completed: readers.py says what is missing.
    return folder
  at = f" --revision {revision}" if revision else ""
  raise FileNotFoundError(
    f"{spec} is not in the Hugging Face cache (HF_HUB_CACHE={cache}) and could not be "
    f"downloaded ({reason}): run `hf download {repo_id}{at}` on a machine with network and copy "
    "its cache here (or set HF_HUB_CACHE to it), or pass --src a local folder."
  )


def _cached(hub, errors, repo_id: str, revision: str | None, cache: str) -> tuple[str | None, bool]:
  """The cached snapshot folder (or None) and whether it is known complete; no network."""
  if revision and re.fullmatch(r"[0-9a-f]{7,39}", revision):
    revision = _full_commit(repo_id, revision, cache) or revision
  try:
    folder = hub.snapshot_download(
      repo_id,
      revision=revision,
      cache_dir=cache,
      local_files_only=True,
      allow_patterns=ALLOW_PATTERNS,
    )
    return folder, True
  except getattr(errors, "IncompleteSnapshotError", ()) as e:  # Not in older huggingface_hub.
    # E.g. an interrupted download, or `hf download --include`: the files vidtx reads may be there.
    return e.snapshot_path, False
  except (errors.LocalEntryNotFoundError, OSError, ValueError):
    return None, False


def _full_commit(repo_id: str, prefix: str, cache: str) -> str | None:
  """The one cached snapshot whose commit starts with `prefix`, if exactly one does."""
  folder = os.path.join(cache, "models--" + repo_id.replace("/", "--"), "snapshots")
  found = [c for c in (os.listdir(folder) if os.path.isdir(folder) else []) if c.startswith(prefix)]
  return found[0] if len(found) == 1 else None


def _first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return lines[0] if lines else "no message"
