"""vidtx.cli: --config by file or by recipe name, and the console scripts setup.py declares."""

import importlib.metadata
import os
import signal
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags
from shared import REPO

from vidtx import cli


def test_a_config_file_is_used_as_given(tmp_path):
  mine = tmp_path / "my_config.py"
  mine.write_text("def get_config(arg=None): ...\n")
  assert cli.resolve_config(f"{mine}:shrink=1") == f"{mine}:shrink=1"
  in_clone = os.path.join(REPO, "configs", "k400_vivit_fe.py")
  assert cli.resolve_config(in_clone) == in_clone


def test_a_recipe_name_or_a_clone_path_elsewhere_resolves_to_the_package(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # No configs/ here, as for a pip-installed vidtx.
  packaged = os.path.join(cli.CONFIGS_DIR, "synthetic_timesformer.py")
  assert cli.resolve_config("synthetic_timesformer") == packaged
  assert (
    cli.resolve_config("synthetic_timesformer:attention=space") == f"{packaged}:attention=space"
  )
  assert cli.resolve_config("configs/synthetic_timesformer.py:shrink=1") == f"{packaged}:shrink=1"
  # The packaged recipes are the repository's configs/ (vidtx/configs links to it).
  with open(packaged) as f, open(os.path.join(REPO, "configs", "synthetic_timesformer.py")) as g:
    assert f.read() == g.read()


def test_an_unknown_config_names_the_recipes(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(FileNotFoundError) as error:
    cli.resolve_config("k400_vivt_fe")
  message = str(error.value)
  assert "--config=k400_vivt_fe" in message and "no recipe named 'k400_vivt_fe'" in message
  assert "k400_vivit_fe" in message and "common" not in cli.recipe_names()
  assert set(cli.recipe_names()) == {
    name[:-3]
    for name in os.listdir(os.path.join(REPO, "configs"))
    if name.endswith(".py") and name not in ("__init__.py", "common.py")
  }


def test_argv_resolution_handles_both_flag_forms(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  packaged = os.path.join(cli.CONFIGS_DIR, "k400_xvit.py")
  argv = ["vidtx-train", "--config=k400_xvit", "--config.batch_size=2", "--workdir=w"]
  assert cli._resolve_config_args(argv) == [
    "vidtx-train",
    f"--config={packaged}",
    "--config.batch_size=2",
    "--workdir=w",
  ]
  assert cli._resolve_config_args(["x", "--config", "k400_xvit:shrink=1"]) == [
    "x",
    "--config",
    f"{packaged}:shrink=1",
  ]


def test_every_console_script_is_installed_and_callable():
  scripts = {
    entry.name: entry
    for entry in importlib.metadata.entry_points(group="console_scripts")
    if entry.value.startswith("vidtx.")
  }
  assert set(scripts) == {
    "vidtx-train",
    "vidtx-eval",
    "vidtx-convert",
    "vidtx-export",
    "vidtx-predict",
    "vidtx-make-shards",
    "vidtx-config",
  }
  for entry in scripts.values():
    assert callable(entry.load()), entry


def test_an_error_raised_by_a_config_file_is_one_line_without_traceback(tmp_path):
  config = tmp_path / "needs_data.py"
  config.write_text(
    "def get_config(arg=None):\n"
    "  raise ValueError(f'Config argument data={arg}: no such directory; expected shards.')\n"
  )
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values)
  with pytest.raises(flags.Error) as error:
    flag_values(["train.py", f"--config={config}:/nowhere"])
  assert "Traceback" in str(error.value)  # What config_flags gives.
  assert cli._flag_error(error.value) == (
    f"flag --config={config}:/nowhere: "
    "Config argument data=/nowhere: no such directory; expected shards."
  )


# A command whose work raises `error` (as JAX would from inside a train step), run as vidtx's
# commands are: cli.run's one-line errors, absl's traceback for the rest.
_RAISING_COMMAND = """
import sys
from vidtx import cli
from vidtx.errors import UserError

def main(argv):
  raise {error}

sys.argv = ["vidtx-test"]
cli.run(main)
"""


def _run_raising(error: str, **env: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-c", _RAISING_COMMAND.format(error=error)],
    capture_output=True,
    text=True,
    timeout=120,
    env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"} | env,
  )


@pytest.mark.parametrize(
  "error",
  ["UserError('--data=x: no such folder.')", "FileNotFoundError('x: no such file.')"],
)
def test_a_user_error_is_one_line(error):
  run = _run_raising(error)
  assert run.returncode == 1
  assert run.stderr.strip().splitlines()[-1].startswith("vidtx-test: error: ")
  assert "Traceback" not in run.stderr
  # VIDTX_TRACEBACK=1 shows where it came from.
  assert "Traceback" in _run_raising(error, VIDTX_TRACEBACK="1").stderr


@pytest.mark.parametrize(
  "error, last_line",
  [
    ("ValueError('boom from jax')", "ValueError: boom from jax"),
    ("KeyError('w')", "KeyError: 'w'"),
  ],
)
def test_a_library_value_or_key_error_shows_its_traceback(error, last_line):
  run = _run_raising(error)
  assert run.returncode == 1
  assert "Traceback (most recent call last)" in run.stderr
  assert run.stderr.strip().splitlines()[-1] == last_line
  assert "vidtx-test: error:" not in run.stderr


# A signal during set-up whose Stopped a library catches and raises again as its own error, as
# tf.data's autograph does while it traces the reader.
_STOPPED_INSIDE_A_LIBRARY = """
import os, signal, sys
from vidtx import cli, distributed

def main(argv):
  stop = distributed.StopRequest(immediate=True)
  try:
    try:
      os.kill(os.getpid(), signal.SIGTERM)
      for _ in range(10**7):
        pass
    except distributed.Stopped as e:
      raise RuntimeError(f"in user code: {e!r}") from None
  finally:
    stop.restore()

sys.argv = ["vidtx-test"]
cli.run(main)
"""


def test_a_signal_raised_again_by_a_library_still_stops_with_the_signals_code():
  run = subprocess.run(
    [sys.executable, "-c", _STOPPED_INSIDE_A_LIBRARY],
    capture_output=True,
    text=True,
    timeout=120,
    env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"},
  )
  assert run.returncode == 128 + signal.SIGTERM, run.stderr
  assert run.stderr.strip().splitlines()[-1] == (
    "vidtx-test: error: stopped by SIGTERM; nothing was saved."
  )


# train.py, with the mesh JAX would build raising as a library does.
_TRAIN_WITH_A_LIBRARY_ERROR = """
import sys
from vidtx import cli, sharding

def make_mesh(*args, **kwargs):
  raise ValueError("boom from jax")

sharding.make_mesh = make_mesh
sys.argv = ["train.py", "--config=synthetic_timesformer", "--workdir=" + sys.argv[1]]
cli.train()
"""


def test_a_library_value_error_in_train_py_shows_its_traceback(tmp_path):
  run = subprocess.run(
    [sys.executable, "-c", _TRAIN_WITH_A_LIBRARY_ERROR, str(tmp_path / "run")],
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"},
  )
  assert run.returncode == 1
  assert "Traceback (most recent call last)" in run.stderr
  assert "in make_mesh" in run.stderr  # The stack down to where it was raised.
  assert run.stderr.strip().splitlines()[-1] == "ValueError: boom from jax"
  assert "train.py: error:" not in run.stderr
