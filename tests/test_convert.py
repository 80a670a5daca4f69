"""python -m vidtx.convert: a Hugging Face folder and a timm file converted, unknown names
refused until --ignore, an existing output refused."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from shared import (
  REPO,
)
from shared import timm_state_dict as _timm_state_dict

from vidtx.checkpoints import store


def _start(*args: str) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen(
    [sys.executable, "-m", "vidtx.convert", *args],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
  stdout, stderr = process.communicate(timeout=120)
  return process.returncode, stdout, stderr


@pytest.mark.slow
def test_convert_cli(tmp_path, hf_vit_dir):
  out = str(tmp_path / "hf_out")
  state = _timm_state_dict()
  state["extra.weight"] = torch.zeros(4, 2)
  timm_path = str(tmp_path / "vit.pth")
  torch.save(state, timm_path)
  timm_out = str(tmp_path / "timm_out")

  # Two at a time: each run spends most of its time importing.
  first = _start("--src", hf_vit_dir, "--out", out)
  unknown = _start("--src", timm_path, "--out", timm_out, "--num_heads", "2")
  code, stdout, stderr = _finish(first)
  assert code == 0, stderr
  assert f"wrote {out}" in stdout
  assert store.load(out).model_config["attention"] == "space"
  code, stdout, stderr = _finish(unknown)
  assert code == 1
  assert "unknown: extra.weight (4, 2)" in stderr
  assert "--ignore" in stderr and "Traceback" not in stderr
  assert not os.path.exists(timm_out)

  again = _start("--src", hf_vit_dir, "--out", out)
  ignored = _start(
    "--src", timm_path, "--out", timm_out, "--num_heads", "2", "--ignore", r"extra\..*"
  )
  code, stdout, stderr = _finish(again)
  assert code == 1
  assert "exists" in stderr and "--overwrite" in stderr and "Traceback" not in stderr
  code, stdout, stderr = _finish(ignored)
  assert code == 0, stderr
  assert f"wrote {timm_out}" in stdout
  converted = store.load(timm_out)
  np.testing.assert_allclose(
    converted.params["head"]["kernel"], state["head.weight"].numpy().T, rtol=0, atol=0
  )
  assert sorted(os.listdir(tmp_path)) == ["hf_out", "timm_out", "vit.pth"]
