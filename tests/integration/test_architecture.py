"""docs/architecture.md's layers are true: every module-level import of vidtx by vidtx goes to a
lower floor of its table, and every module of the package is on one floor."""

import ast
import os
import re

from shared import REPO

PACKAGE = os.path.join(REPO, "vidtx")
DOC = os.path.join(REPO, "docs", "architecture.md")


def _floors() -> dict[str, int]:
  """Module or package name -> floor, from the doc's table (| N | `a`, `b` |)."""
  with open(DOC, encoding="utf-8") as f:
    text = f.read()
  layers = text[text.index("## Layers") :]
  floors = {}
  for number, names in re.findall(r"^\| (\d+) \| (.+) \|$", layers, flags=re.M):
    for name in re.findall(r"`([\w.]+)`", names):
      assert name not in floors, f"{name} is on two floors of docs/architecture.md"
      floors[name] = int(number)
  return floors


def _unit(path: str) -> str:
  """The floor's unit of a file: its top-level module, or its subpackage."""
  first = os.path.relpath(path, PACKAGE).split(os.sep)[0]
  return first.removesuffix(".py")


def _module_level(statements: list[ast.stmt]) -> list[ast.stmt]:
  """The statements run when the module is imported: inside if/try blocks too, but not under
  `if TYPE_CHECKING:` (for type checkers only) nor in functions (run on first use)."""
  found = []
  for node in statements:
    if isinstance(node, ast.If):
      if "TYPE_CHECKING" not in ast.unparse(node.test):
        found += _module_level(node.body)
      found += _module_level(node.orelse)
    elif isinstance(node, ast.Try):
      for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
        found += _module_level(block)
    else:
      found.append(node)
  return found


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
  """(line, vidtx unit) of each import of vidtx run when the module is imported."""
  found = []
  for node in _module_level(tree.body):
    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vidtx":
      if node.module == "vidtx":  # from vidtx import a, b
        found += [(node.lineno, alias.name) for alias in node.names]
      else:  # from vidtx.a.b import c
        found.append((node.lineno, node.module.split(".")[1]))
    elif isinstance(node, ast.Import):
      found += [
        (node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("vidtx.")
      ]
  return found


def test_every_module_imports_only_lower_floors():
  floors = _floors()
  units = {
    name.removesuffix(".py")
    for name in os.listdir(PACKAGE)
    if (name.endswith(".py") and name != "__init__.py")
    or (os.path.isdir(os.path.join(PACKAGE, name)) and not name.startswith("__"))
  } - {"configs"}  # The recipes: a link to configs/ at the root, above the package.
  assert sorted(units - set(floors)) == [], "modules missing from docs/architecture.md"
  assert sorted(set(floors) - units) == [], "docs/architecture.md names modules that are gone"
  upward = []
  for root, _, names in os.walk(PACKAGE):
    if os.path.relpath(root, PACKAGE).split(os.sep)[0] == "configs":
      continue
    for name in names:
      if not name.endswith(".py"):
        continue
      path = os.path.join(root, name)
      if path == os.path.join(PACKAGE, "__init__.py"):
        continue
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
      unit = _unit(path)
      for line, imported in _runtime_imports(tree):
        if imported in floors and imported != unit and floors[imported] >= floors[unit]:
          upward.append(
            f"{os.path.relpath(path, REPO)}:{line} imports {imported} "
            f"(floor {floors[imported]} >= {unit}'s {floors[unit]})"
          )
  assert upward == []
