r"""Prints the config train.py would train with: a recipe resolved, nothing trained or read.

  python -m vidtx.config RECIPE[:ARGS] [--config.a.b=value ...] [--format=text|json]
  vidtx-config k400_vivit_fe
  vidtx-config configs/k400_vivit_fe.py:variant=L/16x2 --config.batch_size=32
  JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=256 vidtx-config k400_vivit_fe --config.batch_size=256

RECIPE: a config file or the name of a recipe shipped with vidtx (configs/), with its :ARGS;
--config=RECIPE works too. The command line's overrides are applied, then train.py's start-up
resolution (vidtx.config_checks.check_config, the function train.py calls): the recipe's values
against the overrides, the batch and learning rate for the devices this process sees (their
number: JAX_NUM_CPU_DEVICES on a CPU) and config.mesh, the geometry note. The notes train.py
would print come first, then the resolved config (text: YAML-like; json: the notes go to
stderr, the config alone to stdout). The model fields are validated as train.py's model build
does. No data and no parameters are read (an init_from checkpoint is only measured from its
description).
"""

import os
import sys
from typing import Any

from absl import flags, logging

from vidtx import cli
from vidtx.errors import UserError

FORMATS = ("text", "json")
VALUE_FLAGS = ("--config", "--format")  # The flags whose value may follow as the next argument.
USAGE = "vidtx-config RECIPE[:ARGS] [--config.a.b=value ...] [--format=text|json]."


def _define_flags() -> None:
  cli.define_config_flag()
  flags.DEFINE_enum(
    "format",
    "text",
    list(FORMATS),
    "text: the notes, then the config in YAML-like form; json: the config as JSON on stdout "
    "(the notes on stderr).",
  )


def recipe_as_flag(argv: list[str]) -> list[str]:
  """`PROG RECIPE[:ARGS] ...` -> `PROG --config=RECIPE[:ARGS] ...`: the recipe may be given as the
  one positional argument. Raises ValueError (one line) when no recipe, two, or a recipe and
  --config are given."""
  positional, takes_value = [], False
  for i, arg in enumerate(argv[1:], start=1):
    if takes_value:
      takes_value = False
    elif arg.startswith("-"):
      takes_value = arg in VALUE_FLAGS  # `--format json`: its value is the next argument.
    else:
      positional.append(i)
  given = any(arg in VALUE_FLAGS[:1] or arg.startswith("--config=") for arg in argv)
  if not positional and not given:
    raise UserError(f"expected a recipe: {USAGE}")
  if len(positional) > 1:
    extra = " ".join(argv[i] for i in positional[1:])
    raise UserError(f"one recipe expected, got {argv[positional[0]]!r} and also: {extra}.")
  if not positional:
    return list(argv)
  (index,) = positional
  if given:
    raise UserError(f"the recipe is given twice: {argv[index]!r} and --config; give one.")
  return [argv[0], f"--config={argv[index]}", *argv[1:index], *argv[index + 1 :]]


def resolve(config: Any) -> tuple[list[str], str]:
  """train.py's start-up resolution on `config` (changed in place): (the notes it prints, the
  model described with its sizes from the variant). Raises ValueError naming the field for a
  model field the model refuses, as train.py's model build would."""
  from vidtx import config_checks, models  # JAX: once the flags are parsed.
  from vidtx.checkpoints import vit

  notes = config_checks.check_config(config)
  models.default_config(config.model_name)  # An unknown model_name: one line naming it.
  models.MODELS[config.model_name].make_config(config.model)
  dc = config.dataset_configs
  shape = vit.shape_of(
    config.model_name, config.model, crop_size=dc.get("crop_size"), num_frames=dc.get("num_frames")
  )
  return notes, shape.describe(family=True)


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # As train.py: JAX's backend probing is INFO.
  config = flags.FLAGS.config
  notes, model = resolve(config)
  as_json = flags.FLAGS.format == "json"
  for note in notes:
    print(note, file=sys.stderr if as_json else sys.stdout, flush=True)
  if as_json:
    print(config.to_json(indent=2), flush=True)
  else:
    # The model's sizes as a YAML comment: the rest reads as YAML.
    print(f"# {model}\n{str(config).rstrip()}", flush=True)


def run_cli() -> None:
  """The command line (vidtx-config, python -m vidtx.config)."""
  cli.quiet_start_up()
  _define_flags()
  if not any(arg in cli.HELP_FLAGS for arg in sys.argv[1:]):
    try:
      # config_flags reads the --config.a.b overrides' names from sys.argv itself.
      sys.argv = recipe_as_flag(sys.argv)
    except ValueError as e:
      program = os.path.basename(sys.argv[0]) or "vidtx-config"
      print(f"{program}: error: {e}", file=sys.stderr, flush=True)
      sys.exit(1)
  cli.run(main, doc=__doc__)


if __name__ == "__main__":
  run_cli()
