"""What vidtx's command lines share: --config by path or recipe name, one-line errors.

--config takes a config file (configs/k400_vivit_fe.py[:arg]) or the name of a recipe shipped in
the package (k400_vivit_fe[:arg]), so the commands work in a clone and after a pip install alike.

A user's mistake (a misspelt config field, a folder that is not theirs to write, a damaged
checkpoint: vidtx.errors.UserError, or the system's refusal about a named file) ends with one line
on stderr that says what to do and exit code 1, not a traceback; any other error (a bug, or a
library's ValueError) shows its traceback;
a signal before the first step ends with 128 + the signal's number. VIDTX_TRACEBACK=1 shows the
traceback as well.

Start-up is quick: `--help` (-h, --helpshort) prints the command's doc and its flags on stdout and
exits 0, and a flag error ends in one line, before JAX or TensorFlow is imported (the commands
import them inside their functions; vidtx-train's flags are parsed here, by `train`, before
vidtx.trainer is imported). `quiet_start_up` keeps TensorFlow's C++ start-up lines (CPU
features, oneDNN, CUDA probing: INFO) off every command.
"""

import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags
from ml_collections import config_flags

from vidtx.errors import UserError

ErrorTypes = tuple[type[BaseException], ...]

# What ends as one line: vidtx's own diagnosis of a user's mistake (vidtx.errors.UserError, which
# ownership.UnwritableError, locks.LockedError and the checkpoint errors are), and the operating
# system's refusal about a file the user named (its message names the file). Anything else, a
# ValueError or KeyError from JAX, orbax, flax or TensorFlow included, is a bug or a library's
# error: its traceback is shown.
USER_ERRORS = (
  UserError,
  FileNotFoundError,
  FileExistsError,
  PermissionError,
  NotADirectoryError,
  IsADirectoryError,
)


HELP_FLAGS = ("-h", "-help", "--help", "--helpshort", "-?")


def quiet_start_up() -> None:
  """TensorFlow's C++ INFO lines at start-up (CPU instructions, oneDNN, CUDA drivers) off; its
  warnings and errors kept. Called first by every command, before TensorFlow is imported; a
  TF_CPP_MIN_LOG_LEVEL the user set wins.

  TensorFlow's oneDNN custom operations (on by default on CPUs with AVX-512) print a line that
  TF_CPP_MIN_LOG_LEVEL does not silence, and make the input pipeline's float results depend on
  the CPU: they are off unless the user sets TF_ENABLE_ONEDNN_OPTS (TensorFlow runs only the
  input pipeline here: decoding, resizing, augmentation, no matrix products)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _program() -> str:
  return os.path.basename(sys.argv[0]) or "vidtx"


def _fail(message: str, code: int = 1) -> None:
  print(f"{_program()}: error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def _config_override_error(argv: Sequence[str], error: Exception) -> str:
  """`--config.a.b=v` that the config does not have, with ml_collections' did-you-mean."""
  # A locked config raises AttributeError(KeyError("'field'\nDid you mean ...")): the message
  # is the innermost error's text, not its repr.
  while error.args and isinstance(error.args[0], Exception):
    error = error.args[0]
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


def usage(doc: str | None) -> str:
  """The command's `doc` and the flags vidtx defines for it (absl's own: --helpfull)."""
  parts = [(doc or f"{_program()} [flags]").strip("\n"), "", "Flags:"]
  for module, defined in sorted(flags.FLAGS.flags_by_module_dict().items()):
    if defined and not module.startswith(("absl", "ml_collections")):
      parts += flags.FLAGS.module_help(module).splitlines()[1:]  # Without the module's name.
  parts.append("\n--helpfull lists every flag, absl's included.")
  return "\n".join(parts)


def _asks_for_help(argv: Sequence[str]) -> bool:
  for arg in argv[1:]:
    if arg == "--":
      return False
    if arg in HELP_FLAGS:
      return True
  return False


def flags_parser(doc: str | None) -> Callable[[list[str]], list[str]]:
  """`parse_flags` for app.run's flags_parser, with `doc` as the command's --help."""
  return lambda argv: parse_flags(argv, doc)


def parse_flags(argv: list[str], doc: str | None = None) -> list[str]:
  """absl's parser (for app.run's flags_parser): --help prints `usage(doc)` and exits 0,
  --config resolved, errors on one line."""
  if _asks_for_help(argv):
    print(usage(doc), flush=True)
    sys.exit(0)
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
  main: Callable[[list[str]], Any],
  user_errors: ErrorTypes | Callable[[], ErrorTypes] = (),
  doc: str | None = None,
) -> None:
  """app.run(main) with one-line errors for user mistakes (see the module doc) and for the
  command's own `user_errors` (e.g. vidtx.run_checkpoints.WriteError: a full disk; or a
  function returning them, called only when an error comes, so that they are imported late);
  `doc`: the command's --help text."""

  def guarded(argv: list[str]) -> Any:
    from vidtx import distributed  # JAX: once the flags are parsed.

    # orbax reads arrays in asyncio tasks: after a failed restore (a damaged checkpoint) each
    # failed task would print its tensorstore error at exit, hundreds of lines; the error that
    # matters is raised and reported below.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
      return main(argv)
    except distributed.Stopped as e:
      _fail(f"{e}; nothing was saved.", e.exit_code)
    except Exception as e:
      stopped = distributed.raised_by_signal()
      if stopped is not None:  # Raised again by a library as its own error.
        _fail(f"{stopped}; nothing was saved.", stopped.exit_code)
      own = user_errors() if callable(user_errors) else tuple(user_errors)
      if not isinstance(e, USER_ERRORS + own) or os.environ.get("VIDTX_TRACEBACK"):
        raise
      _fail(str(e).strip() + " (VIDTX_TRACEBACK=1 shows where)")

  app.run(guarded, flags_parser=flags_parser(doc))


def write_errors() -> ErrorTypes:
  """A full disk or a read-only folder while a checkpoint or result is written (for `run`)."""
  from vidtx import run_checkpoints  # orbax: only when an error is reported.

  return (run_checkpoints.WriteError,)


# vidtx-train: its flags here, so that --help and flag errors answer before vidtx.trainer (JAX,
# TensorFlow, orbax: seconds) is imported.
TRAIN_DOC = r"""Trains a video transformer; resumes from the newest checkpoint in --workdir.

  vidtx-train --config=CONFIG[:ARG] --workdir=DIR [--config.a.b=value ...]
  python train.py --config=configs/synthetic_timesformer.py --workdir=runs/ts

CONFIG: a config file or the name of a recipe shipped with vidtx (configs/); every field can be
overridden with --config.a.b=value. Export a run with vidtx-convert --src DIR --out OUT.
"""


def define_train_flags() -> None:
  """The flags of vidtx-train (train.py, vidtx.trainer)."""
  define_config_flag()
  flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
  # Multi-host launches (vidtx.distributed): all three, or none for JAX's auto-detection.
  flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0.")
  flags.DEFINE_integer("num_processes", None, "Number of processes in the job.")
  flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes-1.")
  flags.DEFINE_bool(
    "skip_damaged_checkpoints",
    False,
    "Resume from the newest intact "
    "checkpoint when newer ones are damaged (moved to damaged_checkpoints/).",
  )
  flags.mark_flags_as_required(["config", "workdir"])


def train() -> None:
  """vidtx-train and train.py: the flags parsed, then vidtx.trainer imported and run."""
  quiet_start_up()
  define_train_flags()

  def main(argv: list[str]) -> Any:
    from vidtx import trainer

    return trainer.main(argv)

  run(main, user_errors=write_errors, doc=TRAIN_DOC)


def define_run_checkpoint_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """--step and --which: which checkpoint of a train.py run convert, export and predict read
  (vidtx.run_files.export_run)."""
  flags.DEFINE_integer(
    "step",
    None,
    "A train.py run's checkpoint (default: its best, see --which).",
    flag_values=flag_values,
  )
  flags.DEFINE_enum(
    "which",
    None,
    ["best", "latest"],  # vidtx.run_files.WHICH
    "A train.py run's checkpoint: best (default; the highest evaluation of its "
    "best_checkpoint_metric, else the newest) or latest (the newest complete one).",
    flag_values=flag_values,
  )
