"""Quiet, fast commands (issue 25, items 9 and 10): every console script answers --help and a
flag error without importing JAX, TensorFlow or torch; orbax's two warnings on a healthy run's
read are filtered; messages are plain text and say how a clip samples its frames; a video's
windows stream with a progress line.

The --help checks run each console script's entry point in a subprocess (a fresh interpreter is
what the user meets: nothing imported yet) and read sys.modules at its exit; no timing is
asserted (docs/testing.md has the measured times)."""

import importlib.metadata
import io
import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import flags
from jax.sharding import Mesh
from ml_collections import config_flags
from shared import tiny_config

from vidtx import (
  cli,
  convert,
  export,
  predict,
  progress,
  run_checkpoints,
  run_files,
  sharding,
  video_io,
)
from vidtx import train_state as state_lib
from vidtx.checkpoints import store
from vidtx.data import class_labels, make_shards
from vidtx.inference import classifier, many_videos, preprocess

HEAVY = ("jax", "tensorflow", "torch")
SCRIPTS = (
  "vidtx-train",
  "vidtx-eval",
  "vidtx-convert",
  "vidtx-export",
  "vidtx-predict",
  "vidtx-make-shards",
  "vidtx-config",
)

# Runs a console script's entry point as the installed script does, and prints which of HEAVY
# were imported when the process exits (after absl's or argparse's sys.exit).
_RUNNER = """
import atexit, importlib.metadata, json, sys
name, *args = sys.argv[1:]
atexit.register(lambda: print("IMPORTED " + json.dumps(
  [m for m in {heavy} if m in sys.modules]), file=sys.stderr))
(entry,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == name]
sys.argv = [name, *args]
sys.exit(entry.load()())
"""


def _script(name: str, *args: str, cwd: str | None = None) -> tuple[int, str, list[str]]:
  """(exit code, stdout + stderr without the marker line, the heavy modules imported)."""
  result = subprocess.run(
    [sys.executable, "-c", _RUNNER.format(heavy=HEAVY), name, *args],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=cwd,
  )
  marker = [line for line in result.stderr.splitlines() if line.startswith("IMPORTED ")]
  assert marker, result.stderr
  rest = result.stdout + "\n".join(
    line for line in result.stderr.splitlines() if not line.startswith("IMPORTED ")
  )
  return result.returncode, rest, json.loads(marker[-1].removeprefix("IMPORTED "))


def test_the_scripts_are_the_ones_checked():
  installed = {
    e.name for e in importlib.metadata.entry_points(group="console_scripts") if e.name in SCRIPTS
  }
  assert installed == set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_answers_without_jax_tensorflow_or_torch(name):
  code, text, imported = _script(name, "--help")
  assert code == 0, text
  assert imported == [], f"{name} --help imported {imported}"
  assert "--help" not in text.splitlines()[0]  # The command's description first, not absl's.
  assert "usage:" in text or "Flags:" in text
  if name != "vidtx-make-shards":  # argparse lists its own; absl's: the command's flags.
    assert "--helpfull lists every flag" in text
  expected = {
    "vidtx-train": "--workdir",
    "vidtx-eval": "--checkpoint",
    "vidtx-convert": "--src",
    "vidtx-export": "--format",
    "vidtx-predict": "--window",
    "vidtx-make-shards": "--output_dir",
    "vidtx-config": "--format",
  }[name]
  assert expected in text


def test_flag_errors_and_a_misspelt_config_field_are_one_plain_line(tmp_path):
  config = tmp_path / "my_config.py"
  config.write_text(
    "import ml_collections\n"
    "def get_config(arg=None):\n"
    "  return ml_collections.ConfigDict({'batch_size': 2, 'model': {'hidden_size': 8}})\n"
  )
  code, text, imported = _script(
    "vidtx-train", f"--config={config}", "--workdir=w", "--config.model.hiden_size=4"
  )
  assert (code, imported) == (1, [])
  assert text.strip() == (
    "vidtx-train: error: --config.model.hiden_size: the config has no field 'hiden_size'. "
    'Did you mean "hidden_size" instead of "hiden_size"?'
  )
  code, text, imported = _script("vidtx-predict", "--checkpoint=c", "--no_such_flag")
  assert (code, imported) == (1, [])
  assert text.splitlines()[0] == "vidtx-predict: error: Unknown command line flag 'no_such_flag'"


def test_a_locked_configs_missing_field_is_read_from_the_inner_error(tmp_path, monkeypatch):
  """ml_collections raises AttributeError(KeyError("'x'\\nDid you mean ...")): the message is
  the KeyError's text, never its repr with a literal \\n."""
  config = tmp_path / "c.py"
  config.write_text(
    "import ml_collections\n"
    "def get_config():\n"
    "  return ml_collections.ConfigDict({'batch_size': 2})\n"
  )
  argv = ["vidtx-train", f"--config={config}", "--config.batch_sise=3"]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv.
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  with pytest.raises(AttributeError) as error:
    values(argv)
  message = cli._config_override_error(argv, error.value)
  assert message == (
    "--config.batch_sise: the config has no field 'batch_sise'. "
    'Did you mean "batch_size" instead of "batch_sise"?'
  )
  assert "\\n" not in message and "\n" not in message


def test_start_up_keeps_a_users_tensorflow_log_level(monkeypatch):
  monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
  cli.quiet_start_up()
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"  # INFO off; warnings and errors kept.
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
  cli.quiet_start_up()
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_constants_written_out_for_a_light_import_agree():
  assert predict.VIDEO_EXTENSIONS == sorted(video_io.VIDEO_EXTENSIONS)
  assert make_shards.DUPLICATE_MODES == class_labels.DUPLICATE_MODES
  assert tuple(run_files.WHICH) == ("best", "latest")  # convert's and export's --which choices.


# ---------------------------------------------------------------------------------------------
# orbax's warnings on a healthy run.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthy_run(tmp_path_factory) -> str:
  """A train.py run written directly (nothing trained or compiled): steps 1 and 2."""
  config = tiny_config(str(tmp_path_factory.mktemp("data")))
  workdir = str(tmp_path_factory.mktemp("run"))
  mesh = Mesh(np.asarray(jax.local_devices()[:1]), (sharding.DATA_AXIS,))
  abstract = state_lib.abstract_state_from_config(config, config.dataset_configs, mesh)[1]
  with run_checkpoints.checkpoint_manager(workdir, max_to_keep=3) as manager:
    for step in (1, 2):
      state = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)
      run_checkpoints.save(manager, step, state, {"position": step})
    manager.wait_until_finished()
  run_files.write_config(config, workdir)
  return workdir


NOISE = ("Given directory is read only", "Metadata file does not exist")


def test_convert_export_and_predict_of_a_healthy_run_print_no_orbax_warning(
  healthy_run, tmp_path, caplog, capfd
):
  caplog.set_level(logging.INFO)
  convert.convert(src=healthy_run, out=str(tmp_path / "converted"))
  export.load_source(healthy_run, which="latest")
  classifier.load_checkpoint(healthy_run, step=1)
  logged = caplog.text + "".join(capfd.readouterr())
  assert not [line for line in logged.splitlines() if any(noise in line for noise in NOISE)]
  # Other warnings still pass the filter.
  record = logging.LogRecord("absl", logging.WARNING, __file__, 1, "a real warning", None, None)
  assert all(f.filter(record) for f in logging.getLogger("absl").filters)


# ---------------------------------------------------------------------------------------------
# Words: how a clip samples its frames.
# ---------------------------------------------------------------------------------------------

BASE = dict(
  num_frames=8,
  stride=32,
  min_resize=256,
  crop_size=224,
  mean=[0.45] * 3,
  std=[0.225] * 3,
  num_test_clips=1,
  do_three_spatial_crops=True,
  aggregation="mean_logits",
)


def test_the_frames_are_described_as_the_clip_samples_them():
  segment = BASE | dict(train_sampling="segment", eval_sampling="segment", eval_min_resize=224)
  assert preprocess.describe_frames(segment) == "8 frames, one per segment"
  line = preprocess.describe_preprocessing(segment)
  assert "8 frames, one per segment" in line and "stride" not in line
  assert "short side 224" in line  # eval_min_resize: what evaluation resizes to.
  assert preprocess.describe_frames(BASE) == "8 frames at stride 32"
  timesformer = BASE | dict(train_sampling="timesformer", eval_sampling="timesformer")
  assert preprocess.describe_frames(timesformer) == "8 frames over 256 frames at 30 fps"
  whole = BASE | dict(eval_sampling="whole_video")
  assert preprocess.describe_frames(whole) == (
    "8 frames at stride 32, one after another over the whole video"
  )
  converted = store.Converted("timesformer", {"attention": "divided"}, 4, {}, segment)
  described = convert.describe(converted, "/out")
  assert "input: 8 frames, one per segment, short side 224" in described
  assert "stride" not in described


# ---------------------------------------------------------------------------------------------
# Progress while a video's windows stream.
# ---------------------------------------------------------------------------------------------


def test_the_windows_of_a_video_stream_with_a_progress_line(tmp_path, monkeypatch):
  path = str(tmp_path / "long.mp4")
  preprocess.encode_video(path, np.zeros((40, 32, 48, 3), np.uint8), fps=10)  # 4 s.
  reporters, real = [], many_videos.streaming_reporter

  def recording(video_id: str, video_path: str) -> progress.Reporter:
    reporter = real(video_id, video_path)
    reporter.stream, reporter.every_s, reporter.tty = io.StringIO(), 0, False  # Every update.
    reporters.append(reporter)
    return reporter

  monkeypatch.setattr(many_videos, "streaming_reporter", recording)
  preprocessing = BASE | dict(num_frames=2, stride=1, min_resize=32, crop_size=32)
  converted = store.Converted("timesformer", {}, 4, {}, preprocessing)
  configs = preprocess.dataset_configs(converted)
  rows = preprocess.view_names(preprocessing)
  items = list(many_videos._video_items(1, "long.mp4", path, configs, rows, 1.0, 1.0))
  assert len(items) == 4
  (reporter,) = reporters
  lines = reporter.stream.getvalue().splitlines()
  assert [line.split(" | ")[0] for line in lines] == [
    "long.mp4: 1/4 s of video",
    "long.mp4: 2/4 s of video",
    "long.mp4: 3/4 s of video",
    "long.mp4: 4/4 s of video",
    "long.mp4: 4/4 s of video",  # finish: the line ends.
  ]
  # Whole videos (no --window) take no seconds line.
  list(many_videos._video_items(1, "long.mp4", path, configs, rows, None, None))
  assert len(reporters) == 1
