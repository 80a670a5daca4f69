"""The shape of vidtx's code (issue 27): no function over MAX_FUNCTION_LINES lines."""

import ast
import os

from shared import REPO

MAX_FUNCTION_LINES = 120


def _functions(path: str):
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
      yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_function_in_vidtx_is_over_120_lines():
  package = os.path.join(REPO, "vidtx")
  too_long, seen = [], 0
  # vidtx/configs is a link to the repository's configs/: walked too (os.walk does not follow it).
  for top in (package, os.path.join(REPO, "configs")):
    for folder, _, names in os.walk(top):
      for name in sorted(names):
        if name.endswith(".py"):
          path = os.path.join(folder, name)
          for function, line, lines in _functions(path):
            seen += 1
            if lines > MAX_FUNCTION_LINES:
              too_long.append(f"{os.path.relpath(path, REPO)}:{line} {function} ({lines} lines)")
  assert seen > 500  # The walk found the package.
  assert not too_long, "cut these into named steps:\n" + "\n".join(too_long)
