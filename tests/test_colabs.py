"""Every notebook in colabs/ runs top to bottom (a few steps) and has its outputs cleared."""

import glob
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "colabs", "*.ipynb")))


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_and_is_clean(path, tmp_path):
  with open(path) as f:
    notebook = json.load(f)
  code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
  for cell in code_cells:
    assert not cell.get("outputs") and cell.get("execution_count") is None, (
        f"{path}: clear the outputs before committing")
  # Shell and magic lines (%pip, !ls) are for Colab; the test environment is installed already.
  source = "\n\n".join(
      "\n".join(line.rstrip("\n") for line in cell["source"]
                if not line.lstrip().startswith(("%", "!")))
      for cell in code_cells)
  env = dict(os.environ, VIDTX_NOTEBOOK_STEPS="2", VIDTX_CACHE=str(tmp_path / "cache"),
             VIDTX_NOTEBOOK_WORKDIR=str(tmp_path / "run"))
  out = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(path))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "top-1" in out.stdout
