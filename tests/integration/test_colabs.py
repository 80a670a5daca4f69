"""Every notebook in colabs/ runs top to bottom (a few steps, a small dataset), has its outputs
cleared, and prints what it is there to show."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest
from shared import REPO

# The second tier (README's test command leaves it out; .ci/run runs it after).
pytestmark = pytest.mark.tier2

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "colabs", "*.ipynb")))

# What each notebook must print; a new notebook needs an entry.
MARKERS = {
  "quickstart.ipynb": ["top-1", "confusion matrix:"],
  "inference.ipynb": ["top-5:", "wrote "],
  "attention_rollout.ipynb": [
    "heat on object, divided",
    "heat on object, joint",
    "attention rollout (mean over heads)",
  ],
  "conversion.ipynb": ["max |logit difference|", "max |feature difference|"],
}
# conversion.ipynb: converted and Hugging Face models must agree (README: within 1e-4).
DIFFERENCE = re.compile(r"max \|(?:logit|feature) difference\| ([0-9.e+-]+)")


def test_there_are_notebooks():
  assert sorted(os.path.basename(p) for p in NOTEBOOKS) == sorted(MARKERS)


# Colab opens a notebook alone, without the repository: vidtx comes from pip, nothing by path.
INSTALL = "vidtx @ git+https://github.com/vidtx/vidtx"
BY_PATH = ("sys.path", "chdir(", "spec_from_file_location", "PYTHONPATH", "train.py", "eval.py")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_installs_vidtx_and_uses_the_package(path):
  with open(path) as f:
    cells = json.load(f)["cells"]
  # A title, then the install cell: pip only where vidtx is not importable (CI runs offline).
  assert [cell["cell_type"] for cell in cells[:2]] == ["markdown", "code"], path
  install = "".join(cells[1]["source"])
  assert INSTALL in install and 'find_spec("vidtx") is None' in install, install
  for cell in cells[2:]:
    if cell["cell_type"] == "code":
      source = "".join(cell["source"])
      assert not any(word in source for word in BY_PATH), f"{path}: {source}"
  if os.path.basename(path) == "quickstart.ipynb":
    code = "".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    assert "trainer.train_and_evaluate(" in code


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_and_is_clean(path, tmp_path):
  with open(path) as f:
    notebook = json.load(f)
  assert notebook["nbformat"] == 4
  code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
  for cell in code_cells:
    assert not cell.get("outputs") and cell.get("execution_count") is None, (
      f"{path}: clear the outputs before committing"
    )
  # Shell and magic lines (%pip, !ls) are for Colab; the test environment is installed already.
  source = "\n\n".join(
    "\n".join(
      line.rstrip("\n") for line in cell["source"] if not line.lstrip().startswith(("%", "!"))
    )
    for cell in code_cells
  )
  # A few steps on 64 + 32 videos (VIDTX_NOTEBOOK_QUICK), files in tmp, plots drawn off screen.
  # As a user runs it: vidtx from the installed package, from a directory outside the repository
  # (its install cell finds vidtx and does nothing).
  env = dict(
    os.environ,
    VIDTX_NOTEBOOK_STEPS="2",
    VIDTX_NOTEBOOK_QUICK="1",
    VIDTX_CACHE=str(tmp_path / "cache"),
    VIDTX_NOTEBOOK_WORKDIR=str(tmp_path / "run"),
    MPLBACKEND="Agg",
  )
  out = subprocess.run(
    [sys.executable, "-c", source],
    capture_output=True,
    text=True,
    env=env,
    cwd=tmp_path,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  for marker in MARKERS[os.path.basename(path)]:
    assert marker in out.stdout, f"{path}: {marker!r} not printed:\n{out.stdout[-3000:]}"
  if os.path.basename(path) == "conversion.ipynb":
    differences = [float(d) for d in DIFFERENCE.findall(out.stdout)]
    assert len(differences) == 4, out.stdout[-3000:]  # Divided, joint; ViT features, logits.
    assert max(differences) < 1e-4, out.stdout[-3000:]
