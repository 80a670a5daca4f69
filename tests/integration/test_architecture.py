"""docs/architecture.md's layers are true: every module-level import of vidtx by vidtx goes to a
lower floor of its table, and every module of the package is on one floor. And the tests mirror
the package (docs/testing.md): a module's tests are found from its path."""

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


# ---------------------------------------------------------------------------------------------
# The tests mirror the package (docs/testing.md, "Where a module's tests are").
# ---------------------------------------------------------------------------------------------

TESTS = os.path.join(REPO, "tests")
# Modules with logic whose tests are elsewhere, and where. A module given its own test file
# leaves this list (the test below says so).
MIRROR_EXCEPTIONS = {
  "vidtx/config_checks.py": "train.py's start-up checks, run by tests/test_config.py (vidtx-config "
  "resolves a recipe with them), test_optim_scaling.py and integration/test_finetune_truth.py",
  "vidtx/evaluate.py": "the eval.py command, run end to end by integration/test_end_to_end.py",
  "vidtx/export.py": "the export command, tested beside the SavedModel export it drives in "
  "tests/checkpoints/test_export_tf.py, whose fixtures it shares",
  "vidtx/paths.py": "gs:// paths, against a local GCS server in integration/test_gcs_workdir.py",
  "vidtx/checkpoints/video.py": "each peer's video checkpoint converted and run against the peer "
  "itself in tests/checkpoints/test_checkpoints.py",
  "vidtx/checkpoints/vit.py": "each peer's ViT converted and run against the peer itself in "
  "tests/checkpoints/test_checkpoints.py",
  "vidtx/models/tokenizer.py": "the tubelet embedding and its initialisations, in "
  "tests/models/test_vivit.py",
  "vidtx/data/class_labels.py": "each source's labels, in the round trips of "
  "tests/data/test_make_shards.py",
  "vidtx/data/shard_writer.py": "tests/data/test_make_shards.py and test_folder_split.py",
  "vidtx/tools/hf_peer.py": "the PyTorch side of tools/benchmark.py, run by "
  "tests/tools/test_benchmark.py",
  "vidtx/tools/kinetics_like.py": "the benchmark's videos, made and read back by "
  "tests/tools/test_input_benchmark.py",
  "vidtx/tools/torch_peer.py": "the PyTorch side of tools/input_benchmark.py, run by "
  "tests/tools/test_input_benchmark.py",
}


def _mirrored(module: str) -> str:
  """vidtx/a/b.py -> tests/a/test_b.py; a package's vidtx/a/__init__.py -> tests/a/test_a.py."""
  folder, name = os.path.split(os.path.relpath(module, "vidtx"))
  if name == "__init__.py":
    name = os.path.basename(folder) + ".py"
  return os.path.join("tests", folder, "test_" + name)


def _modules_with_logic() -> list[str]:
  """vidtx's modules that define a function or a class, relative to the repository."""
  found = []
  for root, _, names in os.walk(PACKAGE):  # vidtx/configs is a link: not followed.
    for name in sorted(names):
      path = os.path.join(root, name)
      if name.endswith(".py") and path != os.path.join(PACKAGE, "__init__.py"):
        with open(path, encoding="utf-8") as f:
          tree = ast.parse(f.read())
        if any(isinstance(n, ast.FunctionDef | ast.ClassDef) for n in tree.body):
          found.append(os.path.relpath(path, REPO))
  return found


def test_every_module_has_its_tests_at_its_mirrored_path():
  modules = _modules_with_logic()
  assert len(modules) > 60  # The walk found the package.
  missing = [
    f"{m}: {_mirrored(m)}"
    for m in modules
    if m not in MIRROR_EXCEPTIONS and not os.path.exists(os.path.join(REPO, _mirrored(m)))
  ]
  assert missing == [], "put these modules' tests at their mirrored paths"
  stale = [m for m in MIRROR_EXCEPTIONS if os.path.exists(os.path.join(REPO, _mirrored(m)))]
  assert stale == [], "these modules have their test files now: take them off MIRROR_EXCEPTIONS"
  gone = sorted(set(MIRROR_EXCEPTIONS) - set(modules))
  assert gone == [], "MIRROR_EXCEPTIONS names modules that are gone"


def test_every_test_file_outside_integration_names_its_module():
  """tests/a/test_b.py or tests/a/test_b_TOPIC.py tests vidtx/a/b.py (or the package a); the
  recipes in configs/ are tests/test_configs.py; what spans modules is in tests/integration."""
  stems = {_mirrored(m).removesuffix(".py") for m in _modules_with_logic()}
  stems.add(os.path.join("tests", "test_configs"))
  strays = []
  for root, _, names in os.walk(TESTS):
    if os.path.relpath(root, TESTS).split(os.sep)[0] == "integration":
      continue
    for name in names:
      if name.startswith("test_") and name.endswith(".py"):
        stem = os.path.relpath(os.path.join(root, name), REPO).removesuffix(".py")
        if not any(stem == s or stem.startswith(s + "_") for s in stems):
          strays.append(stem + ".py")
  assert sorted(strays) == [], "name these files after their module, or move them to integration"
