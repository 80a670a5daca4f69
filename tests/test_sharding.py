"""vidtx.sharding: mesh shapes from the config (its logical axis rules:
test_sharding_logical.py), and device meshes over TPU slices (vidtx.sharding.device_grid) on
mock TPU v4 devices: one slice is laid out by topology, several slices as a hybrid mesh with
'data' across slices (config.mesh.dcn_data), and a layout that cannot be placed falls back to
process order with one line saying why."""

import dataclasses

import jax
import numpy as np
import pytest

from vidtx import sharding


@dataclasses.dataclass(frozen=True)
class MockTpuDevice:
  """What mesh_utils reads of a TPU device."""

  id: int
  process_index: int
  coords: tuple[int, int, int]
  slice_index: int
  core_on_chip: int = 0
  platform: str = "tpu"
  device_kind: str = "TPU v4"  # One device per chip (megacore).


def mock_tpu_devices(x: int, y: int, z: int, slices: int = 1) -> list[MockTpuDevice]:
  """`slices` slices of x * y * z chips each, 4 chips per host (process) as on TPU v4."""
  devices = []
  for s in range(slices):
    for k in range(z):
      for j in range(y):
        for i in range(x):
          n = len(devices)
          devices.append(MockTpuDevice(n, n // 4, (i, j, k), s))
  return devices


def slices_of(grid: np.ndarray) -> np.ndarray:
  return np.vectorize(lambda d: d.slice_index)(grid)


def test_one_slice_is_laid_out_by_topology():
  devices = mock_tpu_devices(2, 2, 2)
  grid, note = sharding.device_grid((2, 2, 2), devices)
  assert note == "" and grid.shape == (2, 2, 2)
  assert sorted(d.id for d in grid.ravel()) == list(range(8))
  # 'model', the innermost axis, pairs neighbouring chips (one link apart).
  for pair in grid.reshape(4, 2):
    assert sum(abs(a - b) for a, b in zip(pair[0].coords, pair[1].coords, strict=True)) == 1
  with pytest.raises(ValueError, match=r"config.mesh.dcn_data=2: the 8 devices are one slice"):
    sharding.device_grid((8, 1, 1), devices, dcn_data=2)


def test_two_slices_make_a_hybrid_mesh_with_data_across_them():
  devices = mock_tpu_devices(2, 2, 1, slices=2)
  # Every device on 'data' (the default mesh): its first half on slice 0, its second on slice 1.
  grid, note = sharding.device_grid(sharding.mesh_shape(None, 8), devices)
  assert note == "" and grid.shape == (8, 1, 1)
  assert slices_of(grid).ravel().tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
  # fsdp and model stay inside a slice: each data index is one slice.
  grid, _ = sharding.device_grid((2, 2, 2), devices)
  assert (slices_of(grid) == np.arange(2)[:, None, None]).all()
  # data=2 on 4 slices: by default 'data' takes 2 of them, 'fsdp' the other 2.
  grid, note = sharding.device_grid((2, 8, 1), mock_tpu_devices(2, 2, 1, slices=4))
  assert note == "" and (slices_of(grid) // 2 == np.arange(2)[:, None, None]).all()
  # dcn_data=1: 'data' inside each slice, the slices across 'fsdp' instead.
  grid, _ = sharding.device_grid((4, 2, 1), devices, dcn_data=1)
  assert (slices_of(grid) == np.arange(2)[None, :, None]).all()
  assert sharding.mesh_shape({"data": -1, "dcn_data": 2}, 8) == (8, 1, 1)


def test_dcn_data_that_cannot_divide_is_named():
  devices = mock_tpu_devices(2, 2, 1, slices=2)
  with pytest.raises(ValueError, match=r"dcn_data=3: expected a divisor of both the 2 slices"):
    sharding.device_grid((8, 1, 1), devices, dcn_data=3)
  with pytest.raises(ValueError, match=r"leaves 2 slices to 'fsdp'.*fsdp=1"):
    sharding.device_grid((8, 1, 1), devices, dcn_data=1)


def test_a_layout_that_cannot_be_placed_falls_back_with_one_line():
  # Slices of 4 and 2 chips: no hybrid mesh.
  devices = mock_tpu_devices(2, 2, 1) + [
    MockTpuDevice(4 + i, 1, (i, 0, 0), slice_index=1) for i in range(2)
  ]
  grid, note = sharding.device_grid((6, 1, 1), devices, dcn_data=2)
  assert [d.id for d in grid.ravel()] == list(range(6))  # Process order.
  assert "\n" not in note
  assert note.startswith(
    "mesh: devices placed in process order, no hybrid mesh over the 2 slices: (data, fsdp, "
    "model)=(6, 1, 1) as (3, 1, 1) per slice x (2, 1, 1) across slices cannot be laid out ("
  )
  # The default dcn_data, with 'model' over both slices: no hybrid mesh either.
  grid, note = sharding.device_grid((1, 1, 8), mock_tpu_devices(2, 2, 1, slices=2))
  assert [d.id for d in grid.ravel()] == list(range(8))
  assert note == (
    "mesh: devices placed in process order, no hybrid mesh over the 2 slices: (data, fsdp, "
    "model)=(1, 1, 8) does not split over them ('data' x 'fsdp' must take the 2 slices; 'model' "
    "stays within one)."
  )
  # One slice of 3 chips, not a box: no topology-aware layout.
  grid, note = sharding.device_grid((3, 1, 1), mock_tpu_devices(2, 2, 1)[:3])
  assert [d.id for d in grid.ravel()] == [0, 1, 2]
  assert note.startswith(
    "mesh: devices placed in process order: the topology-aware layout cannot place "
    "(data, fsdp, model)=(3, 1, 1) on these 3 devices ("
  )


def test_make_mesh_prints_the_fall_back(monkeypatch, capsys):
  def cannot(*args, **kwargs):
    raise ValueError("odd topology")

  monkeypatch.setattr(sharding.mesh_utils, "create_device_mesh", cannot)
  mesh = sharding.make_mesh(None, devices=jax.devices()[:1])
  assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "model": 1}
  assert capsys.readouterr().out == (
    "mesh: devices placed in process order: the topology-aware layout cannot place (data, "
    "fsdp, model)=(1, 1, 1) on these 1 devices (odd topology).\n"
  )


# The mesh's sizes (the rule table: tests/test_sharding_logical.py).


def test_mesh_shape_from_config():
  assert sharding.mesh_shape(None, 8) == (8, 1, 1)
  assert sharding.mesh_shape({"fsdp": 2, "model": 2}, 8) == (2, 2, 2)
  assert sharding.mesh_shape({"data": 2, "fsdp": -1, "model": 2}, 16) == (2, 4, 2)
  with pytest.raises(ValueError, match="config.mesh.*unknown axis"):
    sharding.mesh_shape({"tensor": 2}, 8)
  # config.mesh.rules says what is split, not how many ways.
  assert sharding.mesh_shape({"fsdp": 2, "rules": {"mlp": None}, "dcn_data": None}, 8) == (4, 2, 1)
  with pytest.raises(ValueError, match="not divisible"):
    sharding.mesh_shape({"model": 3}, 8)
  with pytest.raises(ValueError, match="there are 8 devices"):
    sharding.mesh_shape({"data": 2, "fsdp": 2, "model": 1}, 8)
