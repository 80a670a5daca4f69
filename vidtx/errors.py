"""vidtx's own diagnosis of a user's mistake: the errors the commands print as one line.

A command (vidtx.cli.run) ends with `prog: error: message` for a UserError, and with the
traceback for anything else: a ValueError that JAX, orbax, flax or TensorFlow raise is a bug or a
library's error, and its stack is what a report needs. UserError subclasses ValueError so that
`except ValueError` (and tests' `pytest.raises(ValueError)`) still catch it. A check that only a
bug in the calling code can fail (a layer given tokens of the wrong rank) raises a plain
ValueError: its traceback is the point.
"""


class UserError(ValueError):
  """Bad input, diagnosed by vidtx: the message names the file or field, what was expected and
  the fix."""


class UserFloatingPointError(UserError, FloatingPointError):
  """A diverged run (a loss or gradient that is not finite), diagnosed by vidtx's trainer."""
