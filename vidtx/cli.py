"""What train.py and eval.py share as command lines: flag parsing and one-line errors.

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

from vidtx import distributed, ownership

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


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser (for app.run's flags_parser), with config overrides' errors on one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f"{e}\nPass --helpshort or --helpfull to see help on flags.")
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    # ml_collections' config_flags apply --config.x=v while parsing: a field that does not exist
    # (KeyError / AttributeError of a locked config) or a value of the wrong type.
    _fail(_config_override_error(argv, e))
  return []  # Not reached.


def run(main: Callable[[list[str]], Any]) -> None:
  """app.run(main) with one-line errors for user mistakes (see the module doc)."""

  def guarded(argv: list[str]) -> Any:
    # orbax reads arrays in asyncio tasks: after a failed restore (a damaged checkpoint) each
    # failed task would print its tensorstore error at exit, hundreds of lines; the error that
    # matters is raised and reported below.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
      return main(argv)
    except distributed.Stopped as e:
      _fail(f"{e}; nothing was saved.", e.exit_code)
    except USER_ERRORS as e:
      if os.environ.get("VIDTX_TRACEBACK"):
        raise
      message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
      _fail(message.strip() + " (VIDTX_TRACEBACK=1 shows where)")

  app.run(guarded, flags_parser=parse_flags)
