"""`hf:ORG/NAME[@REVISION]`: checkpoints by Hub name, read from a Hugging Face cache.

The cache is written here in huggingface_hub's layout (models--ORG--NAME/refs/<revision> holding
a commit, snapshots/<commit>/ the files), under tmp_path. No test touches the network: every
call of huggingface_hub.snapshot_download is checked to be local unless it is stubbed.
"""

import os
import shutil
import subprocess
import sys

import huggingface_hub
import jax
import numpy as np
import pytest
from huggingface_hub import errors
from test_checkpoints import _hf_timesformer

from vidtx.checkpoints import convert_source, hub, init_from

REPO = "vidtx-tests/tiny-timesformer"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMIT_A = "a" * 40
COMMIT_B = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[str, str]:
  """Two tiny HF TimeSformer folders (save_pretrained) with different weights."""
  return (
    _hf_timesformer(tmp_path_factory, "divided_space_time", seed=0)[1],
    _hf_timesformer(tmp_path_factory, "divided_space_time", seed=1)[1],
  )


@pytest.fixture
def cache(tmp_path, monkeypatch) -> str:
  """An empty Hub cache in tmp_path, through the environment; snapshot_download may only look
  at it (local_files_only) unless a test replaces it."""
  path = str(tmp_path / "hub")
  os.makedirs(path)
  monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
  monkeypatch.setenv("HF_HUB_CACHE", path)
  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
  real = huggingface_hub.snapshot_download

  def local_only(*args, **kwargs):
    assert kwargs.get("local_files_only"), "a network attempt"
    return real(*args, **kwargs)

  monkeypatch.setattr(huggingface_hub, "snapshot_download", local_only)
  return path


def _add_snapshot(cache: str, folder: str, commit: str, *refs: str) -> None:
  repo = os.path.join(cache, "models--" + REPO.replace("/", "--"))
  shutil.copytree(folder, os.path.join(repo, "snapshots", commit))
  for ref in refs:
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", ref), "w") as f:
      f.write(commit)


def _same_params(a, b) -> bool:
  leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, a.params, b.params))
  same_tree = jax.tree_util.tree_structure(a.params) == jax.tree_util.tree_structure(b.params)
  return same_tree and all(leaves)


def test_cached_name_converts_like_the_folder(cache, folders):
  _add_snapshot(cache, folders[0], COMMIT_A, "main")
  converted = convert_source(f"hf:{REPO}")
  direct = convert_source(folders[0])
  assert _same_params(converted, direct)
  assert converted.model_config == direct.model_config
  assert converted.preprocessing == direct.preprocessing
  assert f"from hf:{REPO} (commit {COMMIT_A})" in converted.source["notes"]
  assert convert_source(f"hf:{REPO}", "hf").num_classes == direct.num_classes
  assert _same_params(init_from.load_source(f"hf:{REPO}"), direct)  # train.py's init_from.


def test_revision_picks_the_snapshot(cache, folders):
  _add_snapshot(cache, folders[0], COMMIT_A, "v1")
  _add_snapshot(cache, folders[1], COMMIT_B, "main")
  first, second = convert_source(folders[0]), convert_source(folders[1])
  assert not _same_params(first, second)
  assert _same_params(convert_source(f"hf:{REPO}"), second)  # The default branch.
  for revision in ("v1", COMMIT_A, COMMIT_A[:7]):  # Tag, commit, commit prefix.
    assert _same_params(convert_source(f"hf:{REPO}@{revision}"), first), revision
  assert _same_params(convert_source(f"hf:{REPO}@{COMMIT_B}"), second)


def _one_line(error: BaseException) -> str:
  message = str(error)
  assert "\n" not in message
  return message


def test_offline_and_not_cached_is_one_line_naming_the_command(cache, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(FileNotFoundError) as e:
    convert_source(f"hf:{REPO}@v2")
  message = _one_line(e.value)
  assert message.startswith(f"hf:{REPO}@v2 is not in the Hugging Face cache (HF_HUB_CACHE={cache})")
  assert f"`hf download {REPO} --revision v2`" in message
  assert "HF_HUB_OFFLINE is set" in message


def test_download_is_tried_when_allowed_and_its_failure_is_one_line(cache, monkeypatch, folders):
  calls = []

  def fake(repo_id, **kwargs):
    calls.append((repo_id, kwargs.get("local_files_only", False)))
    if kwargs.get("local_files_only"):
      raise errors.LocalEntryNotFoundError("not cached")
    if len(calls) == 2:
      raise errors.LocalEntryNotFoundError("Got: ConnectError: no route\nmore details")
    return folders[0]  # As if downloaded.

  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
  with pytest.raises(FileNotFoundError) as e:
    convert_source(f"hf:{REPO}")
  message = _one_line(e.value)
  assert "(LocalEntryNotFoundError: Got: ConnectError: no route): run `hf download" in message
  assert calls == [(REPO, True), (REPO, False)]
  assert _same_params(convert_source(f"hf:{REPO}"), convert_source(folders[0]))


def test_incomplete_snapshot_is_completed_when_allowed_else_read_as_is(cache, monkeypatch, folders):
  downloads = []

  def fake(repo_id, **kwargs):
    if kwargs.get("local_files_only"):
      raise errors.IncompleteSnapshotError("1 file(s) are missing", snapshot_path=folders[0])
    downloads.append(repo_id)
    raise errors.LocalEntryNotFoundError("no network")

  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
  assert hub.resolve(f"hf:{REPO}") == folders[0] and downloads == [REPO]  # Tried, then as is.
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  assert hub.resolve(f"hf:{REPO}") == folders[0] and downloads == [REPO]  # Not tried.


@pytest.mark.slow  # A subprocess (pytest.ini).
def test_cli_error_is_one_line(cache, tmp_path):
  env = dict(os.environ, HF_HUB_OFFLINE="1")
  out = tmp_path / "out"
  result = subprocess.run(
    [sys.executable, "-m", "vidtx.convert", f"--src=hf:{REPO}", f"--out={out}"],
    capture_output=True,
    text=True,
    env=env,
    cwd=ROOT,
    timeout=120,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
    f"vidtx.convert: error: hf:{REPO} is not in the Hugging Face cache (HF_HUB_CACHE={cache}) "
    f"and could not be downloaded (HF_HUB_OFFLINE is set): run `hf download {REPO}` on a "
    "machine with network and copy its cache here (or set HF_HUB_CACHE to it), or pass --src a "
    "local folder."
  ]
  assert not out.exists()


@pytest.mark.parametrize(
  "name", ["hf:", "hf:timesformer", "hf:a/b/c", "hf:org/na--me", "hf:org/name@", "hf:-org/name"]
)
def test_malformed_name(cache, name):
  with pytest.raises(ValueError, match=r"expected hf:ORG/NAME or hf:ORG/NAME@REVISION"):
    convert_source(name)


def test_hub_name_is_a_hugging_face_folder(cache):
  with pytest.raises(ValueError, match="expected 'auto' or 'hf'"):
    convert_source(f"hf:{REPO}", "scenic")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
  for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  assert hub.cache_dir() == os.path.join(str(tmp_path), ".cache", "huggingface", "hub")
  monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
  assert hub.cache_dir() == str(tmp_path / "home" / "hub")
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
  assert hub.cache_dir() == str(tmp_path / "cache")
  assert hub.parse("hf:facebook/timesformer-base-finetuned-k400@main") == (
    "facebook/timesformer-base-finetuned-k400",
    "main",
  )
