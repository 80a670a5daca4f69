"""Every notebook in colabs/ runs top to bottom (a few steps, a small dataset), has its outputs
cleared, and prints what it is there to show."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    cwd=os.path.dirname(path),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  for marker in MARKERS[os.path.basename(path)]:
    assert marker in out.stdout, f"{path}: {marker!r} not printed:\n{out.stdout[-3000:]}"
  if os.path.basename(path) == "conversion.ipynb":
    differences = [float(d) for d in DIFFERENCE.findall(out.stdout)]
    assert len(differences) == 4, out.stdout[-3000:]  # Divided, joint; ViT features, logits.
    assert max(differences) < 1e-4, out.stdout[-3000:]
