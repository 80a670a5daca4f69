"""vidtx never loses a user's data: it writes only into its own directories (vidtx.ownership).

Every refusal is checked where a user meets it (the command line, as a subprocess) and proves
that every file it was pointed at is byte-identical afterwards.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from shared import REPO, TINY_PREPROCESSING, digests, read_table, write_lines, write_video
from test_outputs import _digest

from vidtx import convert, models, ownership, run_files
from vidtx.checkpoints import store
from vidtx.data import make_shards, shard_tables, sources, synthetic


def run_command(args: list[str], tmp_path, timeout: int = 180) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu", VIDTX_CACHE=str(tmp_path / "cache"))
  return subprocess.run(
    [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
  )


def write_files(directory, files: dict[str, bytes]) -> None:
  for name, data in files.items():
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)


def users_shards(directory) -> None:
  """Someone's DMVR dataset: shards (any bytes will do: vidtx must not touch them) and labels."""
  rng = np.random.default_rng(0)
  files = {f"train.tfrecord-{i:05d}-of-00004": rng.bytes(300) for i in range(4)}
  files.update({f"validation.tfrecord-{i:05d}-of-00002": rng.bytes(200) for i in range(2)})
  files["labels.txt"] = b"walk\nrun\njump\nsit\n"
  write_files(directory, files)


# ---------------------------------------------------------------------------------------------
# The rule.
# ---------------------------------------------------------------------------------------------


def test_claim_accepts_only_new_empty_marked_or_legacy_directories(tmp_path):
  new = tmp_path / "new"
  assert ownership.claim(str(new), "shards") == str(new)
  assert ownership.marker_kind(str(new)) == "shards"
  assert ownership.claim(str(new), "shards") == str(new)  # Marked: accepted again.
  with pytest.raises(ownership.NotOwnedError, match="marker says 'shards'"):
    ownership.claim(str(new), "synthetic")
  (tmp_path / "empty").mkdir()
  ownership.claim(str(tmp_path / "empty"), "synthetic")
  assert os.listdir(tmp_path / "empty") == [ownership.MARKER]

  users = tmp_path / "users"
  users_shards(users)
  before = digests(users)
  with pytest.raises(ownership.NotOwnedError) as error:
    ownership.claim(str(users), "shards", hint="Try elsewhere.")
  assert str(users) in str(error.value) and "labels.txt" in str(error.value)
  assert str(error.value).endswith("Try elsewhere.")
  ownership.claim(str(users), "shards", legacy=lambda d: os.path.isfile(f"{d}/labels.txt"))
  after = digests(users)  # The legacy layout is kept byte for byte, and marked.
  assert after.pop(ownership.MARKER) and after == before
  assert ownership.marker_kind(str(users)) == "shards"

  a_file = tmp_path / "file"
  a_file.write_text("x")
  with pytest.raises(ownership.NotOwnedError, match="is a file"):
    ownership.claim(str(a_file), "shards")
  # A file where a parent directory should be: the system refuses; said before any writing.
  with pytest.raises(ownership.UnwritableError, match=f"{a_file} is a file"):
    ownership.check_claimable(str(a_file / "out"), "shards")
  assert a_file.read_text() == "x"


def test_check_removable_protects_the_source_and_other_folders(tmp_path):
  out = tmp_path / "out"
  ownership.claim(str(out), "converted")
  ownership.check_removable(str(out), "converted")
  (tmp_path / "empty").mkdir()
  ownership.check_removable(str(tmp_path / "empty"), "converted")  # Nothing to lose.
  with pytest.raises(ownership.NotOwnedError, match="marker says 'converted'"):
    ownership.check_removable(str(out), "shards")
  with pytest.raises(ownership.NotOwnedError, match="it is the source"):
    ownership.check_removable(str(out), "converted", protected=(str(out),))
  with pytest.raises(ownership.NotOwnedError, match="it contains the source"):
    ownership.check_removable(str(out), "converted", protected=(str(out / "a" / "run"),))
  # Through another spelling of the same path.
  with pytest.raises(ownership.NotOwnedError, match="it contains the source"):
    ownership.check_removable(
      str(tmp_path / "x" / ".." / "out"), "converted", protected=(str(out / "run"),)
    )
  users = tmp_path / "users"
  users_shards(users)
  with pytest.raises(ownership.NotOwnedError, match="not vidtx's output"):
    ownership.check_removable(str(users), "converted")


# ---------------------------------------------------------------------------------------------
# Synthetic data.
# ---------------------------------------------------------------------------------------------


def tiny_synthetic(base_dir: str, **changes) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      dict(
        base_dir=base_dir,
        task="motion",
        tables={"train": "train.tfrecord@4", "validation": "validation.tfrecord@2"},
        examples_per_subset={"train": 4, "validation": 2},
        video_length=4,
        video_size=12,
        seed=0,
        num_frames=2,
        stride=1,
      ),
      **changes,
    )
  )


@pytest.mark.slow
def test_synthetic_config_refuses_a_folder_of_shards(tmp_path):
  users = tmp_path / "mine"
  users_shards(users)
  before = digests(users)
  result = run_command(
    [
      "train.py",
      "--config=configs/synthetic_timesformer.py",
      f"--config.dataset_configs.base_dir={users}",
      f"--workdir={tmp_path / 'run'}",
    ],
    tmp_path,
  )
  assert result.returncode != 0
  assert str(users) in result.stderr and "dataset_name=dmvr" in result.stderr, result.stderr[-3000:]
  assert digests(users) == before
  assert sorted(os.listdir(users)) == sorted(before)  # Not even a marker.
  # A marked shards directory is refused the same way.
  shards = tmp_path / "shards"
  ownership.claim(str(shards), "shards")
  with pytest.raises(ownership.NotOwnedError, match="marker says 'shards'.*dataset_name=dmvr"):
    synthetic.ensure_dataset(tiny_synthetic(str(shards)))
  assert os.listdir(shards) == [ownership.MARKER]


def test_synthetic_generation_into_its_own_directories_still_works(tmp_path, monkeypatch):
  monkeypatch.setenv("VIDTX_CACHE", str(tmp_path / "cache"))
  base_dir = tmp_path / "data"
  base_dir.mkdir()  # Empty: fine.
  assert synthetic.ensure_dataset(tiny_synthetic(str(base_dir))) == str(base_dir)
  assert ownership.marker_kind(str(base_dir)) == "synthetic"
  shards = sorted(n for n in os.listdir(base_dir) if ".tfrecord-" in n)
  assert len(shards) == 6
  first = digests(base_dir)
  assert synthetic.ensure_dataset(tiny_synthetic(str(base_dir))) == str(base_dir)  # Reused.
  assert digests(base_dir) == first
  # Other parameters regenerate in place: the directory is vidtx's.
  synthetic.ensure_dataset(tiny_synthetic(str(base_dir), seed=1))
  assert all(digests(base_dir)[n] != first[n] for n in shards)

  # A synthetic directory from before the marker is recognised by its dataset_info.json.
  os.remove(base_dir / ownership.MARKER)
  synthetic.ensure_dataset(tiny_synthetic(str(base_dir), seed=2))
  assert ownership.marker_kind(str(base_dir)) == "synthetic"

  # The default: the cache, marked too.
  cached = synthetic.ensure_dataset(tiny_synthetic(""))
  assert cached.startswith(str(tmp_path / "cache" / "synthetic"))
  assert ownership.marker_kind(cached) == "synthetic"


# ---------------------------------------------------------------------------------------------
# Converted checkpoints.
# ---------------------------------------------------------------------------------------------


def fake_run(directory) -> None:
  """What a train.py run holds; the refusals come before it is read, so its bytes are enough."""
  write_files(
    directory,
    {
      "config.json": json.dumps({"model_name": "timesformer"}).encode(),
      "checkpoints/2/state/manifest.ocdbt": os.urandom(500),
      "checkpoints/2/_CHECKPOINT_METADATA": b"{}",
      "metrics.jsonl": b'{"step": 2, "loss": 1.3}\n',
    },
  )
  assert run_files.is_run_dir(str(directory))


@pytest.mark.slow
def test_convert_overwrite_never_removes_the_source_or_a_users_folder(tmp_path):
  sandbox = tmp_path / "sandbox"
  fake_run(sandbox / "run")
  (sandbox / "notes.txt").write_text("unrelated\n")
  users = tmp_path / "some_folder"
  write_files(users, {"a.txt": b"mine\n", "b/c.bin": os.urandom(100)})
  before = digests(tmp_path)
  cases = [
    (sandbox / "run", sandbox / "run", f"--out={sandbox / 'run'} is the input --src="),
    (sandbox / "run", sandbox, f"--out={sandbox} contains the input --src={sandbox / 'run'}"),
    (sandbox / "run", users, f"Refusing to replace {users}: it is not vidtx's output"),
  ]
  for src, out, message in cases:
    result = run_command(
      ["-m", "vidtx.convert", f"--src={src}", f"--out={out}", "--overwrite"], tmp_path, timeout=120
    )
    assert result.returncode == 1, result.stderr[-3000:]
    # One line, and this one: the fake run would fail otherwise, so nothing was converted.
    assert result.stderr.startswith(f"vidtx.convert: error: {message}"), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert digests(tmp_path) == before


TINY = dict(variant="Ti/16", hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64)
PREPROCESSING = dict(TINY_PREPROCESSING)


@pytest.fixture(scope="module")
def tiny_converted() -> store.Converted:
  model = models.build("timesformer", TINY, 3)
  params = model.init(jax.random.key(0), np.zeros((1, 2, 32, 32, 3), np.float32), train=False)[
    "params"
  ]
  return store.Converted(
    model_name="timesformer",
    model_config=dict(TINY),
    num_classes=3,
    params=jax.tree.map(np.asarray, params),
    preprocessing=dict(PREPROCESSING),
    labels=["a", "b", "c"],
    source=dict(path="model.npz", format="timm"),
  )


def test_overwrite_replaces_converted_checkpoints_only(tmp_path, tiny_converted, monkeypatch):
  out = str(tmp_path / "ckpt")
  store.save(out, tiny_converted)
  assert ownership.marker_kind(out) == "converted"
  assert store.load(out).labels == ["a", "b", "c"]  # The marker does not disturb loading.
  store.save(out, dataclasses.replace(tiny_converted, labels=["x", "y", "z"]), overwrite=True)
  assert store.load(out).labels == ["x", "y", "z"]
  # A converted checkpoint from before the marker (its exact layout) is replaced, and marked.
  os.remove(os.path.join(out, ownership.MARKER))
  store.save(out, tiny_converted, overwrite=True)
  assert ownership.marker_kind(out) == "converted" and store.load(out).labels == ["a", "b", "c"]
  assert sorted(os.listdir(tmp_path)) == ["ckpt"]

  # A folder that merely holds a vidtx_model.json besides its own files is not one.
  users = tmp_path / "users"
  write_files(users, {store.MODEL_FILE: b"{}", "thesis.tex": b"chapter 1\n"})
  before = digests(users)
  with pytest.raises(ownership.NotOwnedError, match="not vidtx's output"):
    store.save(str(users), tiny_converted, overwrite=True)
  with pytest.raises(FileExistsError, match="--overwrite would not replace it"):
    store.save(str(users), tiny_converted)
  # Nor the directory holding the source the checkpoint came from.
  source = tmp_path / "models"
  write_files(source, {"model.npz": b"weights"})
  source_files = digests(source)
  with pytest.raises(ownership.NotOwnedError, match="contains the source"):
    store.save(
      str(source),
      dataclasses.replace(
        tiny_converted, source=dict(path=str(source / "model.npz"), format="timm")
      ),
      overwrite=True,
    )
  assert digests(users) == before and digests(source) == source_files

  # vidtx.convert refuses before converting (which may take minutes).
  def no_conversion(*args, **kwargs):
    raise AssertionError("converted before checking --out")

  monkeypatch.setattr(convert, "convert_source", no_conversion)
  with pytest.raises(ownership.NotOwnedError, match="not vidtx's output"):
    convert.convert(src=str(source / "model.npz"), out=str(users), overwrite=True)
  assert digests(users) == before


# ---------------------------------------------------------------------------------------------
# Shards from videos.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  directory = tmp_path_factory.mktemp("videos")
  for name in ("a", "b", "c"):
    write_video(str(directory / f"{name}.mp4"), 4)
  return directory


def test_data_convert_writes_only_into_its_own_directory(tmp_path, videos, capsys):
  annotations = write_lines(tmp_path / "train.csv", ["a.mp4,walk", "b.mp4,run"])
  users = tmp_path / "mine"
  users_shards(users)
  before = digests(users)
  args = [
    "--source=csv",
    f"--input={annotations}",
    f"--video_dir={videos}",
    "--num_shards=2",
    "--num_workers=1",
  ]
  with pytest.raises(SystemExit) as exit_info:
    make_shards.main([*args, f"--output_dir={users}"])
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert err.startswith(f"vidtx.data.make_shards: error: {users} is not empty")
  assert err.count("\n") == 1
  assert digests(users) == before

  out = tmp_path / "out"
  make_shards.main([*args, f"--output_dir={out}"])
  assert ownership.marker_kind(str(out)) == "shards"

  def shards():
    return {k: v for k, v in digests(out).items() if ".tfrecord-" in k}

  first = shards()
  # Two shards, their stats, record indexes and sidecars, and frame tables (3 files each).
  assert len(first) == 14
  make_shards.main([*args, f"--output_dir={out}"])  # Resumes: the shards exist.
  assert "skipping the 2 of 2 shards that exist" in capsys.readouterr().err
  assert shards() == first
  # A directory written before the marker (its summary says so) resumes too, and is marked.
  os.remove(out / ownership.MARKER)
  os.remove(out / "train.tfrecord-00001-of-00002")
  summary = make_shards.main([*args, f"--output_dir={out}"])
  assert (summary["shards_written"], summary["shards_skipped"]) == (1, 1)
  assert ownership.marker_kind(str(out)) == "shards"


def test_duplicates_and_conflicts_are_reported(tmp_path, videos, capsys):
  rows = ["a.mp4,walk", "b.mp4,run", "a.mp4,walk", "c.mp4,walk", "c.mp4,run", "a.mp4,walk,0,0.1"]
  items = sources.csv_source(write_lines(tmp_path / "train.csv", rows), str(videos)).items
  out = tmp_path / "out"
  # By default a video under two labels stops the conversion, naming it, before any writing.
  with pytest.raises(
    ValueError,
    match=r"1 video\(s\) are listed under different labels .*"
    r"'c.mp4' as 'walk' \(row 4\) and 'run' \(row 5\)",
  ):
    shard_tables.write_split(items, str(out), "train", num_shards=2, progress=False)
  assert not out.exists()
  with pytest.raises(ValueError, match=r"row 3 repeats row 1 \('a.mp4'\)"):
    shard_tables.write_split(
      items, str(out), "train", num_shards=2, duplicates="error", conflicts="keep", progress=False
    )
  assert not out.exists()

  summary = shard_tables.write_split(
    items, str(out / "skip"), "train", num_shards=2, conflicts="skip", progress=False
  )
  assert (summary["examples"], summary["bad"]) == (3, 3)
  assert (summary["duplicates"], summary["conflicts"]) == (1, 1)
  reasons = {row[0]: row[3] for row in summary["bad_videos"]}
  assert reasons[2].startswith("duplicate of input row 1")
  assert reasons[3].startswith("conflicting labels: 'c.mp4' as 'walk' (row 4) and 'run' (row 5)")
  with open(out / "skip" / "train_summary.json") as f:
    assert json.load(f)["duplicates"] == 1
  with open(out / "skip" / "train_report.txt") as f:
    assert len(f.read().splitlines()) == 3

  summary = shard_tables.write_split(
    items, str(out / "merge"), "train", num_shards=2, conflicts="merge", progress=False
  )
  assert (summary["examples"], summary["bad"], summary["merged"]) == (4, 1, 1)
  labels = {
    (e["id"], e["start"]): (e["labels"], e["text"])
    for e in read_table(out / "merge", "train.tfrecord@2")
  }
  assert labels[("c.mp4", -1)] == ([1, 0], "walk+run")  # labels.txt: run, walk.
  assert "config.dataset_configs.multi_label = True" in make_shards.config_snippet(
    str(out / "merge")
  )

  summary = shard_tables.write_split(
    items,
    str(out / "keep"),
    "train",
    num_shards=2,
    duplicates="keep",
    conflicts="keep",
    progress=False,
  )
  assert (summary["examples"], summary["bad"], summary["duplicates"]) == (6, 0, 1)

  # The command's last lines say so.
  capsys.readouterr()
  make_shards.main(
    [
      "--source=csv",
      f"--input={tmp_path / 'train.csv'}",
      f"--video_dir={videos}",
      f"--output_dir={out / 'cli'}",
      "--num_shards=2",
      "--num_workers=1",
      "--conflicts=skip",
    ]
  )
  printed = capsys.readouterr().out
  assert "train.tfrecord@2: 3 examples of 6 videos, 3 bad" in printed
  assert (
    "repeated rows: 1 duplicate row(s) left out (bad) (--duplicates=skip); 1 video(s) "
    "under conflicting labels left out (bad) (--conflicts=skip)"
  ) in printed


@pytest.mark.slow
def test_unwritable_output_dir_is_one_line(tmp_path, videos):
  annotations = write_lines(tmp_path / "train.csv", ["a.mp4,walk"])
  # A file where the output's parent should be: refused for every user, root included.
  blocker = tmp_path / "blocker"
  blocker.write_text("not a directory\n")
  result = run_command(
    [
      "-m",
      "vidtx.data.make_shards",
      "--source=csv",
      f"--input={annotations}",
      f"--video_dir={videos}",
      f"--output_dir={blocker / 'out'}",
      "--num_workers=1",
    ],
    tmp_path,
    timeout=120,
  )
  assert result.returncode == 1
  lines = [line for line in result.stderr.splitlines() if line.startswith("vidtx.data.make_shards")]
  assert lines == [
    f"vidtx.data.make_shards: error: {blocker / 'out'}: cannot create this directory: "
    f"{blocker} is a file, not a directory; choose another output directory."
  ]
  assert "Traceback" not in result.stderr
  assert blocker.read_text() == "not a directory\n"
  if os.geteuid() != 0:  # Root writes through permissions: only testable as another user.
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    with pytest.raises(ownership.UnwritableError, match="permission denied"):
      shard_tables.check_output_dir(str(read_only / "out"))


def _fill(tmp):
  os.makedirs(os.path.join(tmp, "params", "d"))
  for name in ["vidtx_model.json", "params/a", "params/d/b"]:
    with open(os.path.join(tmp, name), "w") as f:
      f.write(name)


def test_a_replace_lists_what_it_wrote_and_refuses_the_users_files(tmp_path):
  out = str(tmp_path / "converted")
  ownership.write_directory(out, "converted", _fill, recheck=lambda: None)
  marker = json.loads(open(os.path.join(out, ownership.MARKER)).read())
  assert marker["written"] == ["params/a", "params/d/b", "vidtx_model.json"]
  assert ownership.foreign_entries(out, "converted") == []
  ownership.check_removable(out, "converted")
  # The user's notes beside vidtx's files, and a file slipped into vidtx's subfolder.
  notes, inner = tmp_path / "converted" / "NOTES.md", tmp_path / "converted" / "params" / "mine"
  notes.write_text("notes")
  inner.write_text("mine")
  (tmp_path / "converted" / "results").mkdir()
  (tmp_path / "converted" / "results" / "r.jsonl").write_text("{}")
  before = {p: _digest(p) for p in (notes, inner)}
  assert ownership.foreign_entries(out, "converted") == [
    "NOTES.md",
    "params/mine",
    "results/r.jsonl",
  ]
  with pytest.raises(ownership.NotOwnedError, match="files vidtx did not write .*NOTES.md"):
    ownership.check_removable(out, "converted")

  def recheck():
    ownership.check_removable(out, "converted")

  with pytest.raises(ownership.NotOwnedError, match="never deletes them"):
    ownership.write_directory(out, "converted", _fill, recheck=recheck)
  assert {p: _digest(p) for p in (notes, inner)} == before
  assert sorted(os.listdir(tmp_path)) == ["converted"]  # No temporary left behind.


def test_directories_without_an_inventory_fall_back_on_their_kinds_layout(tmp_path):
  old = tmp_path / "old"
  old.mkdir()
  (old / ownership.MARKER).write_text('{"kind": "converted"}')  # An earlier vidtx's marker.
  (old / "vidtx_model.json").write_text("{}")
  (old / "params").mkdir()
  assert ownership.written_names(str(old)) is None
  assert ownership.foreign_entries(str(old), "converted") == []
  (old / "DEPLOY.md").write_text("mine")
  assert ownership.foreign_entries(str(old), "converted") == ["DEPLOY.md"]
  # claim() of a new directory starts an empty inventory; record_written adds to it.
  run = tmp_path / "run"
  ownership.claim(str(run), "run")
  assert ownership.written_names(str(run)) == set()
  ownership.record_written(str(run), ["metrics.jsonl", "checkpoints"])
  ownership.claim(str(run), "run")  # Claiming again keeps the inventory.
  assert ownership.written_names(str(run)) == {"metrics.jsonl", "checkpoints"}
  with pytest.raises(ValueError, match="relative"):
    ownership.record_written(str(run), ["../escape"])
