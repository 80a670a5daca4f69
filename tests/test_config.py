"""`python -m vidtx.config RECIPE`: the config train.py would train with, resolved by train.py's
own start-up code (vidtx.config_checks.check_config), printed without reading data or parameters."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from shared import REPO

from vidtx import config as config_cli

# Runs the command in a fresh interpreter and prints which of these it imported at exit.
HEAVY = ("jax", "tensorflow", "torch")
_RUNNER = """
import atexit, json, runpy, sys
atexit.register(lambda: print("IMPORTED " + json.dumps(
  [m for m in {heavy} if m in sys.modules]), file=sys.stderr))
sys.argv = ["vidtx-config", *sys.argv[1:]]
runpy.run_module("vidtx.config", run_name="__main__")
"""


def _run(*args: str, devices: int = 1) -> tuple[int, str, str, list[str]]:
  """(exit code, stdout, stderr without the marker, heavy modules imported)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
  result = subprocess.run(
    [sys.executable, "-c", _RUNNER.format(heavy=HEAVY), *args],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=REPO,
    env=env,
  )
  lines = result.stderr.splitlines()
  marker = [line for line in lines if line.startswith("IMPORTED ")]
  assert marker, result.stderr
  stderr = "\n".join(line for line in lines if not line.startswith("IMPORTED "))
  return result.returncode, result.stdout, stderr, json.loads(marker[-1].removeprefix("IMPORTED "))


def test_prints_a_recipes_resolved_config_with_the_overrides_and_the_batch_scaling():
  code, out, err, _ = _run(
    "k400_vivit_fe", "--config.batch_size=32", "--config.model.dropout_rate=0.1"
  )
  assert code == 0, err
  lines = out.splitlines()
  first_yaml = next(i for i, line in enumerate(lines) if line.startswith("# "))
  notes, described = lines[:first_yaml], lines[first_yaml]
  # The note train.py prints: the paper's batch and lr rescaled to the batch given (linear).
  assert len(notes) == 1 and notes[0].startswith("batch_size=32, the paper's 64 at lr 0.1")
  assert "0.1 x 32/64 = 0.05" in notes[0]
  assert described == (
    "# ViViT ViT-B/16x2 (768 wide, 12 + 4 layers, 12 heads, MLP 3072) at 224 px, 32 frames"
  )
  config = yaml.unsafe_load("\n".join(lines[first_yaml:]))  # Our own dump: tuples tagged.
  # ViViT (arXiv:2103.15691) Table 7's Kinetics recipe, B/16x2 Model 2.
  assert config["model_name"] == "vivit"
  assert config["model"]["variant"] == "B/16x2"
  assert config["model"]["attention"] == "factorised_encoder"
  assert config["model"]["temporal_layers"] == 4
  assert config["dataset_configs"]["num_frames"] == 32
  assert config["dataset_configs"]["stride"] == 2
  assert config["dataset_configs"]["crop_size"] == 224
  assert config["num_training_epochs"] == 30
  assert config["batch_scaling"]["paper_batch_size"] == 64
  # The command line's values, and what check_config resolved from them.
  assert config["model"]["dropout_rate"] == 0.1
  assert config["batch_size"] == 32
  assert config["lr_configs"]["base_learning_rate"] == pytest.approx(0.05)


def test_json_counts_the_devices_and_the_mesh_and_keeps_the_notes_off_stdout():
  code, out, err, _ = _run(
    "synthetic_timesformer:attention=space", "--format=json", "--config.mesh.data=2", devices=2
  )
  assert code == 0, err
  config = json.loads(out)  # stdout is the config alone.
  assert config["model"]["attention"] == "space"
  # data=2 is accepted only where 2 devices are seen (on 1: "data x fsdp x model = 2, but there
  # are 1 devices"), so the process counted JAX_NUM_CPU_DEVICES.
  assert config["mesh"]["data"] == 2
  assert config["eval_batch_size"] == config["batch_size"] == 32  # Follows batch_size.


@pytest.mark.parametrize(
  "args, expected",
  [
    (["k400_vivt_fe"], "vidtx has no recipe named 'k400_vivt_fe'"),
    (["k400_vivit_fe", "--config.batch_sise=3"], "--config.batch_sise: the config has no field"),
    (["k400_vivit_fe", "extra"], "one recipe expected, got 'k400_vivit_fe' and also: extra."),
    ([], "expected a recipe: vidtx-config RECIPE[:ARGS]"),
  ],
)
def test_a_bad_recipe_or_override_is_one_line_naming_it(args, expected):
  code, out, err, imported = _run(*args)
  assert (code, out) == (1, "")
  (line,) = err.strip().splitlines()
  assert line.startswith("vidtx-config: error: ") and expected in line
  assert "tensorflow" not in imported
  if "batch_sise" not in line:  # Loading a recipe imports vidtx.models (Flax, JAX).
    assert imported == []


def test_help_answers_without_jax_or_tensorflow():
  code, out, _, imported = _run("--help")
  assert (code, imported) == (0, [])
  assert out.startswith("Prints the config train.py would train with")
  assert "--format" in out and "--config" in out


def test_the_recipe_may_be_positional_or_the_config_flag():
  assert config_cli.recipe_as_flag(["p", "k400_vivit_fe:shrink=1", "--config.batch_size=2"]) == [
    "p",
    "--config=k400_vivit_fe:shrink=1",
    "--config.batch_size=2",
  ]
  # A flag's value given as the next argument is not the recipe.
  assert config_cli.recipe_as_flag(["p", "--format", "json", "r"]) == [
    "p",
    "--config=r",
    "--format",
    "json",
  ]
  assert config_cli.recipe_as_flag(["p", "--config", "r"]) == ["p", "--config", "r"]
  with pytest.raises(ValueError, match="the recipe is given twice"):
    config_cli.recipe_as_flag(["p", "r", "--config=s"])


def test_resolution_is_train_pys_check_config(monkeypatch, tmp_path):
  """vidtx.config calls train.py's start-up function itself (config_checks.check_config), not a
  copy of it: replaced, both vidtx.config and the trainer call the replacement."""
  from vidtx import config_checks, trainer
  from vidtx.configs import synthetic_timesformer

  config = synthetic_timesformer.get_config()
  seen = []
  monkeypatch.setattr(config_checks, "check_config", lambda c: seen.append(c) or ["a note"])
  notes, model = config_cli.resolve(config)
  assert seen == [config] and notes == ["a note"]
  assert model.startswith("TimeSformer ViT/8")

  def refuse(c):
    raise ValueError("the replaced start-up checks")

  monkeypatch.setattr(config_checks, "check_config", refuse)
  with pytest.raises(ValueError, match="the replaced start-up checks"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")
