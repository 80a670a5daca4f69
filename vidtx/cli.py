"""What vidtx's command lines share: --config by path or recipe name, one-line errors.

--config takes a config file (configs/k400_vivit_fe.py[:arg]) or the name of a recipe shipped in
the package (k400_vivit_fe[:arg]), so the commands work in a clone and after a pip install alike.

A user's mistake (a misspelt config field, a folder that is not theirs to write, a damaged
checkpoint) ends with one line on stderr that says what to do and exit code 1, not a traceback;
a signal before the first step ends with 128 + the signal's number. VIDTX_TRACEBACK=1 shows the
traceback as well.
"""

import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags
from ml_collections import config_flags

from vidtx import distributed, locks, ownership

# Exceptions that carry a message written for the user (vidtx raises these for bad input).
USER_ERRORS = (
  ValueError,
  KeyError,
  FileNotFoundError,
  FileExistsError,
  PermissionError,
  NotADirectoryError,
  IsADirectoryError,
  FloatingPointError,
  ownership.UnwritableError,
  locks.LockedError,  # Another command holds the directory: its message names the holder.
)


def _program() -> str:
  return os.path.basename(sys.argv[0]) or "vidtx"


def _fail(message: str, code: int = 1) -> None:
  print(f"{_program()}: error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def _config_override_error(argv: Sequence[str], error: Exception) -> str:
  """`--config.a.b=v` that the config does not have, with ml_collections' did-you-mean."""
  text = str(error.args[0]) if error.args else str(error)
  key, _, hint = text.partition("\n")
  key = key.strip("'\"")
  overrides = [a for a in argv if a.startswith("--config.")]
  culprit = next(
    (a for a in overrides if re.search(rf"[.]{re.escape(key)}(?:[.=]|$)", a)),
    overrides[-1] if overrides else "--config",
  )
  if isinstance(error, KeyError) or "does not exist" in text or "locked" in text:
    text = f"the config has no field {key!r}." + (f" {hint.strip()}" if hint.strip() else "")
  return f"{culprit.split('=', 1)[0]}: {text}"


# The recipes shipped in the package: vidtx/configs (a link to the repository's configs/).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def define_config_flag() -> None:
  config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file or recipe name, with an optional argument: configs/k400_vivit_fe.py, "
    "k400_vivit_fe or synthetic_timesformer:attention=space.",
    lock_config=True,
  )


def recipe_names() -> list[str]:
  return sorted(
    name[:-3]
    for name in os.listdir(CONFIGS_DIR)
    if name.endswith(".py") and name not in ("__init__.py", "common.py")
  )


def resolve_config(spec: str) -> str:
  """'path[:arg]' unchanged when path is a file; else the packaged recipe of that name."""
  path, colon, arg = spec.partition(":")
  if os.path.isfile(path):
    return spec
  name = os.path.basename(path).removesuffix(".py")
  packaged = os.path.join(CONFIGS_DIR, name + ".py")
  if name in recipe_names():
    return packaged + colon + arg
  raise FileNotFoundError(
    f"--config={spec}: {path!r} is not a file and vidtx has no recipe named {name!r}; "
    f"expected a config file or one of: {', '.join(recipe_names())}."
  )


def _resolve_config_args(argv: list[str]) -> list[str]:
  resolved = list(argv)
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--config="):
      resolved[i] = "--config=" + resolve_config(arg.removeprefix("--config="))
    elif arg == "--config" and i + 1 < len(argv):
      resolved[i + 1] = resolve_config(argv[i + 1])
  return resolved


def _flag_error(error: flags.Error) -> str:
  """absl's message, without the traceback config_flags embeds when a config file raises: the
  config's own error (e.g. a missing data directory) is what the user needs."""
  text = str(error)
  if "Traceback (most recent call last)" not in text:
    return f"{text}\nPass --helpshort or --helpfull to see help on flags."
  flag = text.split(": Error whilst parsing", 1)[0]
  raised = [line for line in text.splitlines() if re.match(r"^\w+(Error|Exception): ", line)]
  return f"{flag}: {raised[-1].split(': ', 1)[1]}" if raised else text


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser (for app.run's flags_parser): --config resolved, errors on one line."""
  try:
    if "config" in flags.FLAGS:
      argv = _resolve_config_args(argv)
    return flags.FLAGS(argv)
  except FileNotFoundError as e:
    _fail(str(e))
  except flags.Error as e:
    _fail(_flag_error(e))
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    # ml_collections' config_flags apply --config.x=v while parsing: a field that does not exist
    # (KeyError / AttributeError of a locked config) or a value of the wrong type.
    _fail(_config_override_error(argv, e))
  return []  # Not reached.


def run(
  main: Callable[[list[str]], Any], user_errors: tuple[type[BaseException], ...] = ()
) -> None:
  """app.run(main) with one-line errors for user mistakes (see the module doc) and for the
  command's own `user_errors` (e.g. vidtx.checkpoints.training.WriteError: a full disk)."""

  def guarded(argv: list[str]) -> Any:
    # orbax reads arrays in asyncio tasks: after a failed restore (a damaged checkpoint) each
    # failed task would print its tensorstore error at exit, hundreds of lines; the error that
    # matters is raised and reported below.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
      return main(argv)
    except distributed.Stopped as e:
      _fail(f"{e}; nothing was saved.", e.exit_code)
    except USER_ERRORS + tuple(user_errors) as e:
      if os.environ.get("VIDTX_TRACEBACK"):
        raise
      message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
      _fail(message.strip() + " (VIDTX_TRACEBACK=1 shows where)")

  app.run(guarded, flags_parser=parse_flags)
