"""Device mesh and the host-to-device hand-over of input batches.

The batch axis of every input lives on the mesh axis 'data'; parameters and optimizer state are
replicated (model-parallel axes come with the pod-scale work). Each process feeds only its own
share of the global batch; `jax.make_array_from_process_local_data` stitches the shares into one
global `jax.Array`, so the training step is written as if it saw the whole batch.
"""

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, axis name 'data'."""
  # Built directly: jax.make_mesh defaults to Explicit axis types in jax 0.10, which ordinary
  # Flax modules do not handle.
  devices = np.asarray(jax.devices())
  return Mesh(devices, (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data', everything else whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "batch_size") -> int:
  """Returns the per-process batch size, or explains why the global one does not split."""
  num_devices = mesh.devices.size
  if global_batch_size % num_devices:
    raise ValueError(
        f"config.{what}={global_batch_size} must be divisible by the number of devices "
        f"({num_devices}) because the batch is split over the mesh axis '{DATA_AXIS}'.")
  return global_batch_size // jax.process_count()


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, Any]:
  """Host-local numpy batch -> global jax.Arrays sharded on 'data' along axis 0."""
  sharding = data_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
