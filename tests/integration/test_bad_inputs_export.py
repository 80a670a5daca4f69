"""`--overwrite` never deletes a user's file, and no output is ever an input: vidtx.convert and
vidtx.export onto their earlier outputs holding the user's files (refused before the work and
again before the replace, naming the files; sha256 before and after), and the outputs of
convert, export and vidtx.tools.plot against their inputs, however spelt (links, hard links).

In-process and without model compilation: the conversion and the export themselves are stubbed
(their own tests run them); what is tested here is which directories they may replace.
"""

import dataclasses
import hashlib
import json
import os

import jax
import numpy as np
import pytest
from shared import TINY_PREPROCESSING, digests

from vidtx import convert, models, ownership
from vidtx import export as export_cli
from vidtx.checkpoints import store
from vidtx.tools import plot

TINY = dict(variant="Ti/16", hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32)
PREPROCESSING = dict(TINY_PREPROCESSING)
USERS = {"NOTES.md": b"# what this checkpoint is for\n", "results.jsonl": b'{"video": "a.mp4"}\n'}


@pytest.fixture(scope="module")
def tiny() -> store.Converted:
  model = models.build("timesformer", TINY, 3)
  video = np.zeros((1, 2, 32, 32, 3), np.float32)
  params = model.init(jax.random.key(0), video, train=False)["params"]
  return store.Converted(
    model_name="timesformer",
    model_config=dict(TINY),
    num_classes=3,
    params=jax.tree.map(np.asarray, params),
    preprocessing=dict(PREPROCESSING),
    labels=["a", "b", "c"],
    source=dict(path="model.npz", format="timm"),
  )


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def put(directory, files: dict[str, bytes]) -> None:
  for name, data in files.items():
    with open(os.path.join(directory, name), "wb") as f:
      f.write(data)


@pytest.fixture
def source(tmp_path, tiny, monkeypatch) -> tuple[str, list]:
  """A checkpoint file to convert, with the conversion stubbed (it returns `tiny`); the list
  records each conversion, so a test can tell that a refusal came before the work."""
  src = tmp_path / "model.npz"
  src.write_bytes(b"the user's weights")
  calls = []

  def convert_source(path, format="auto", **options):
    calls.append(path)
    return dataclasses.replace(tiny, source=dict(path=str(path), format="timm"))

  monkeypatch.setattr(convert, "convert_source", convert_source)
  return str(src), calls


# ---------------------------------------------------------------------------------------------
# convert --overwrite onto a converted checkpoint holding the user's files.
# ---------------------------------------------------------------------------------------------


def test_convert_overwrite_refuses_a_checkpoint_holding_the_users_files(tmp_path, source):
  src, calls = source
  out = str(tmp_path / "ckpt")
  convert.convert(src, out)
  written = ownership.written_names(out)
  assert "vidtx_model.json" in written and any(n.startswith("params/") for n in written)
  put(out, USERS)
  before = digests(tmp_path)
  for overwrite, error in ((True, ownership.NotOwnedError), (False, FileExistsError)):
    with pytest.raises(error) as raised:
      convert.convert(src, out, overwrite=overwrite)
    message = str(raised.value)
    assert "\n" not in message and "NOTES.md, results.jsonl" in message
    assert "Move them out" in message
  assert len(calls) == 1  # Both refused before converting (a conversion may take minutes).
  # The user's files and the earlier checkpoint (its marker too) are byte-identical.
  assert digests(tmp_path) == before


def test_convert_refuses_files_put_there_during_the_conversion(tmp_path, source, tiny, monkeypatch):
  src, _ = source
  out = str(tmp_path / "ckpt")
  convert.convert(src, out)
  before = digests(out)

  def convert_source(path, format="auto", **options):
    put(out, {"NOTES.md": USERS["NOTES.md"]})  # The user writes while vidtx converts.
    return tiny

  monkeypatch.setattr(convert, "convert_source", convert_source)
  with pytest.raises(ownership.NotOwnedError, match=r"holds files vidtx did not write \(NOTES"):
    convert.convert(src, out, overwrite=True)
  after = digests(out)  # The user's file and the earlier checkpoint, byte-identical.
  assert after.pop("NOTES.md") == sha256(USERS["NOTES.md"]) and after == before
  assert sorted(os.listdir(tmp_path)) == ["ckpt", "model.npz"]  # No temporary left behind.


def test_convert_overwrite_of_a_clean_checkpoint_records_what_it_wrote(tmp_path, source):
  src, calls = source
  out = str(tmp_path / "ckpt")
  convert.convert(src, out)
  put(out, USERS)
  with pytest.raises(ownership.NotOwnedError):
    convert.convert(src, out, overwrite=True)
  aside = tmp_path / "kept"  # The user moves their files out, as the message says ...
  aside.mkdir()
  for name in USERS:
    os.rename(os.path.join(out, name), aside / name)
  convert.convert(src, out, overwrite=True)  # ... and the replace works.
  assert len(calls) == 2 and store.load(out).labels == ["a", "b", "c"]
  assert sorted(os.listdir(out)) == [".vidtx", "params", "vidtx_model.json"]
  written = ownership.written_names(out)
  on_disk = set(digests(out)) - {ownership.MARKER}
  assert written == on_disk and ownership.foreign_entries(out, "converted") == []
  assert digests(aside) == {name: sha256(data) for name, data in USERS.items()}


# ---------------------------------------------------------------------------------------------
# export --overwrite onto an earlier export holding the user's DEPLOY.md.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted_dir(tiny, tmp_path_factory) -> str:
  return store.save(str(tmp_path_factory.mktemp("src") / "tiny"), tiny)


@pytest.fixture
def stub_export(monkeypatch) -> list:
  """vidtx.export's writer stubbed (a config.json and weights); returns its calls."""
  calls = []

  def write(converted, out_dir, format, *, batch_size=None):
    calls.append(out_dir)
    put(out_dir, {"config.json": b"{}", "model.safetensors": b"weights"})

  monkeypatch.setattr(export_cli, "write", write)
  return calls


def test_export_overwrite_refuses_an_export_holding_the_users_files(
  converted_dir, tmp_path, stub_export
):
  out = str(tmp_path / "exported")
  export_cli.export(converted_dir, out, format="hf")
  assert ownership.written_names(out) == {"config.json", "model.safetensors"}
  put(out, {"DEPLOY.md": b"kubectl apply -f model.yaml\n"})
  before = digests(tmp_path)
  for overwrite, error in ((True, ownership.NotOwnedError), (False, FileExistsError)):
    with pytest.raises(error) as raised:
      export_cli.export(converted_dir, out, format="hf", overwrite=overwrite)
    assert "DEPLOY.md" in str(raised.value) and "Move them out" in str(raised.value)
    assert "\n" not in str(raised.value)
  assert len(stub_export) == 1  # Refused before the export.
  assert digests(tmp_path) == before

  # An export from before the marker listed its files: its format's layout stands in.
  marker = os.path.join(out, ownership.MARKER)
  with open(marker, "w") as f:
    json.dump({"kind": "exported"}, f)
  before = digests(tmp_path)
  with pytest.raises(ownership.NotOwnedError, match="DEPLOY.md"):
    export_cli.export(converted_dir, out, format="hf", overwrite=True)
  assert digests(tmp_path) == before and len(stub_export) == 1

  os.rename(os.path.join(out, "DEPLOY.md"), tmp_path / "DEPLOY.md")
  export_cli.export(converted_dir, out, format="hf", overwrite=True)
  assert len(stub_export) == 2 and ownership.foreign_entries(out, "exported") == []
  assert ownership.written_names(out) == {"config.json", "model.safetensors"}


def test_export_refuses_files_put_there_during_the_export(converted_dir, tmp_path, monkeypatch):
  out = str(tmp_path / "exported")

  def write(converted, out_dir, format, *, batch_size=None):
    put(out_dir, {"config.json": b"{}"})
    if os.path.isdir(out):
      put(out, {"DEPLOY.md": b"mine"})  # The user writes while vidtx exports.

  monkeypatch.setattr(export_cli, "write", write)
  export_cli.export(converted_dir, out, format="hf")
  before = digests(out)
  with pytest.raises(ownership.NotOwnedError, match="DEPLOY.md"):
    export_cli.export(converted_dir, out, format="hf", overwrite=True)
  after = digests(out)
  assert after.pop("DEPLOY.md") == sha256(b"mine") and after == before
  assert sorted(os.listdir(tmp_path)) == ["exported"]


# ---------------------------------------------------------------------------------------------
# Outputs against inputs.
# ---------------------------------------------------------------------------------------------


def test_convert_and_export_outputs_are_never_their_source(
  converted_dir, tmp_path, source, stub_export
):
  src, calls = source
  link = tmp_path / "link"
  link.symlink_to(os.path.dirname(converted_dir))  # A folder holding the source, by a link.
  same = tmp_path / "same"
  same.symlink_to(converted_dir)
  before = digests(os.path.dirname(converted_dir))
  for out in (converted_dir, str(link), str(same), os.path.join(converted_dir, "inside")):
    with pytest.raises(ValueError, match="source|input") as raised:
      export_cli.export(converted_dir, out, format="hf", overwrite=True)
    assert "\n" not in str(raised.value)
  assert stub_export == [] and digests(os.path.dirname(converted_dir)) == before

  hard = tmp_path / "hard.npz"
  os.link(src, hard)  # Two names, one file: replacing either loses the weights.
  source_digest = sha256(b"the user's weights")
  for out in (src, str(hard), str(tmp_path)):
    with pytest.raises(ValueError, match="source|input"):
      convert.convert(src, out, overwrite=True)
  assert calls == [] and digests(tmp_path)["model.npz"] == source_digest


def test_plot_out_is_checked_against_the_runs_before_reading(tmp_path, capsys):
  run = tmp_path / "run"
  run.mkdir()
  metrics = run / "metrics.jsonl"
  metrics.write_text('{"step": 1, "loss": 2.0}\n')
  link = tmp_path / "curves.png"
  link.symlink_to(metrics)  # A PNG name that is the run's metrics.
  (tmp_path / "folder.png").mkdir()
  (tmp_path / "file").write_text("mine")
  before = digests(tmp_path)
  cases = [
    (link, "is the input RUN/metrics.jsonl"),
    (tmp_path / "folder.png", "is a directory; name a file"),
    (tmp_path / "file" / "curves.png", "is a file, not a directory"),
    (run / "curves.jpg", "expected a file name ending in .png"),
  ]
  for out, message in cases:
    assert plot.main([str(run), f"--out={out}", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
  assert digests(tmp_path) == before
  assert plot.main([str(run), f"--out={run / 'curves.png'}"]) == 0  # Beside the run: fine.
