"""vidtx.tools.collectives: the counts read from a compiled program's text, and the compiled
training steps of ViViT FE and TimeSformer divided on 4 meshes of 8 fake CPU devices, which
move weights, not activations (the logical axis rules of vidtx.sharding)."""

import os
import subprocess
import sys

import pytest
from shared import REPO, TESTS

from vidtx.tools import collectives


def test_count_collectives_reads_the_compiled_text():
  hlo = "\n".join(
    [
      "  %all-to-all.1 = f32[16,5,64]{2,1,0} all-to-all(f32[16,5,64]{2,1,0} %x), dimensions={0}",
      "  %ag.2 = f32[16,5,64]{2,1,0} all-gather(f32[2,5,64]{2,1,0} %y), dimensions={0}",
      "  %ag.3 = f32[64,4,16]{2,1,0} all-gather(f32[8,4,16]{2,1,0} %k), dimensions={0}",
      "  %ag.4 = (f32[64,2,16]{2,1,0}, f32[5,64]{1,0}) all-gather(f32[8,2,16] %a, f32[5,8] %b),"
      " dimensions={1}",
      "  %ar = f32[] all-reduce(f32[] %l), to_apply=%add",
      "  %add.5 = f32[16,5,64]{2,1,0} add(%ag.2, %ag.2)",
    ]
  )
  counts, activations = collectives.count_collectives(hlo, {(64, 4, 16), (4, 16, 64)}, 16)
  assert counts == {
    "all-to-all": 1,
    "activation all-gather (batch)": 1,
    "activation all-gather (other)": 1,
    "weight all-gather": 2,  # The whole kernel, and its 'model' shard.
    "all-reduce": 1,
    "reduce-scatter": 0,
  }
  assert activations == [
    "batch: (16, 5, 64) gathered on dimension 0",
    "other: (5, 64) gathered on dimension 1",
  ]


@pytest.mark.slow
@pytest.mark.tier2
def test_compiled_steps_move_weights_not_activations():
  """ViViT FE and TimeSformer divided on data, fsdp, fsdp x model and data x fsdp x model over 8
  fake devices (vidtx.tools.collectives, its SHAPES): no all-to-all and no all-gather of
  activations; under FSDP the weights are gathered. Before logical axes, ViViT FE had 128
  all-to-alls and 12 activation all-gathers at fsdp=8 (docs/training.md, 'Logical axes')."""
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="8", PYTHONPATH=os.pathsep.join([REPO, TESTS]))
  out = subprocess.run(
    [sys.executable, "-m", "vidtx.tools.collectives"],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO,
    timeout=900,
  )
  assert out.returncode == 0, out.stderr[-4000:]
  rows = [line.split("|")[1:-1] for line in out.stdout.splitlines()[2:]]
  assert len(rows) == len(collectives.MODELS) * len(collectives.MESHES), out.stdout
  for row in rows:
    model, mesh, *counts = (cell.strip() for cell in row)
    counts = dict(zip(collectives.COLUMNS, map(int, counts), strict=True))
    assert counts["all-to-all"] == 0, (model, mesh, counts)
    assert counts["activation all-gather (batch)"] == 0, (model, mesh, counts)
    assert counts["activation all-gather (other)"] == 0, (model, mesh, counts)
    assert (counts["weight all-gather"] > 0) == ("fsdp" in mesh.split("(")[0]), (model, mesh)
