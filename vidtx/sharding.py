"""Device mesh, the logical axis rules that shard parameters and activations, and the hand-over
of input batches.

The mesh has three axes (config.mesh):
- 'data': data parallelism; parameters replicated along it.
- 'fsdp': data parallelism too (the batch is split over data x fsdp), but parameters and
  optimizer state are split along it (ZeRO-3 / FSDP): each device keeps 1/fsdp of them and XLA
  gathers a layer's weights when it needs them.
- 'model': tensor parallelism over attention heads and the MLP's hidden units (Megatron-style:
  query/key/value and the first MLP layer split by columns, the output projections by rows, so a
  block needs one reduction for attention and one for the MLP).
Sharding says what it means: every parameter names its dimensions' *logical axes* where the
model defines it (vidtx.models.layers: query/key/value kernels ('embed', 'heads', 'kv'), MLP
kernels ('embed', 'mlp') and ('mlp', 'embed'), scanned stacks a leading 'layers'), and the
activations at block boundaries and inside attention are pinned to theirs (tokens ('batch',
'length', 'embed')). One table, config.mesh.rules (`DEFAULT_RULES`, checked by
`rules_from_config`), maps logical axes to mesh axes: batch -> ('data', 'fsdp'), embed -> 'fsdp',
mlp and heads -> 'model', the rest whole. `tree_shardings` gives the train state's shardings from
the parameters' logical axes (vidtx.models.param_logical_axes) and the rules; optimizer state and
EMA follow their parameter (momentum of `…/query/kernel` as `…/query/kernel`); the training and
evaluation steps are traced `under_rules`, so the activation constraints apply (without rules and
a mesh in context they do nothing). A module's name plays no part: renaming one keeps its
sharding. A dimension that does not divide by its axes' size stays whole (a Ti model's 3 heads
on a 2-way 'model' axis are replicated), and small parameters stay whole on 'fsdp'
(FSDP_MIN_SIZE).

On several TPU slices (devices that carry `slice_index`) the mesh is hybrid: the slices are joined
by the data-centre network (DCN), far slower than the links within a slice (ICI), so only the
'data' axis (and, when config.mesh.dcn_data is smaller than the slice count, 'fsdp') spans slices,
as MaxText's DCN parallelism does: one gradient all-reduce per step crosses DCN, and 'fsdp' and
'model' gathers stay inside a slice.

Each process feeds only its share of the global batch; `jax.make_array_from_process_local_data`
stitches the shares into one global `jax.Array`, so the training step is written as if it saw
the whole batch.
"""

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vidtx.errors import UserError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
MODEL_AXIS = "model"
MESH_AXES = (DATA_AXIS, FSDP_AXIS, MODEL_AXIS)
# config.mesh.dcn_data: how many slices the 'data' axis spans (default: every slice).
DCN_DATA = "dcn_data"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # The batch is split over both data-parallel axes.
RULES_KEY = "rules"  # config.mesh.rules: the logical axis rules (DEFAULT_RULES).

# Logical axes: what a dimension of a parameter or an activation means. The models name them where
# they define parameters (nn.with_logical_partitioning) and activations
# (nn.with_logical_constraint); the rule table below says which mesh axes each one is split over.
BATCH, LENGTH, EMBED, MLP = "batch", "length", "embed", "mlp"
HEADS, KV, LAYERS = "heads", "kv", "layers"
LOGICAL_AXES = (BATCH, LENGTH, EMBED, MLP, HEADS, KV, LAYERS)
# The default of config.mesh.rules: logical axis -> mesh axis, a tuple of them, or None (whole).
# The batch over both data-parallel axes; parameters' embedding dimension over 'fsdp' (ZeRO-3);
# the MLP's hidden units and the attention heads over 'model' (Megatron). An activation
# (batch, length, embed) takes 'fsdp' for its batch first, so its embed stays whole.
DEFAULT_RULES: dict[str, str | tuple[str, ...] | None] = {
  BATCH: (DATA_AXIS, FSDP_AXIS),
  EMBED: FSDP_AXIS,
  MLP: MODEL_AXIS,
  HEADS: MODEL_AXIS,
  KV: None,
  LENGTH: None,
  LAYERS: None,  # Scanned layers (model.scan_layers): every device holds every layer's share.
}
Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]  # As flax.linen.logical_axis_rules.
# A parameter with fewer elements than this is not split over 'fsdp' (norms, biases, class
# tokens): splitting it saves nothing and costs a gather each. The attention's and the MLP's
# weights (those with a 'heads' or 'mlp' axis) follow the rules at any size, so that tiny test
# models are laid out as large ones are.
FSDP_MIN_SIZE = 2**14


def mesh_shape(mesh_config: Mapping[str, int] | None, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, model) sizes from config.mesh; one axis may be -1 (all remaining devices)."""
  mesh_config = dict(mesh_config or {})
  mesh_config.pop(DCN_DATA, None)  # How the axes lie over slices, not their sizes.
  mesh_config.pop(RULES_KEY, None)  # What is split over the axes (rules_from_config).
  unknown = sorted(set(mesh_config) - set(MESH_AXES))
  if unknown:
    raise UserError(
      f"config.mesh: unknown axis {unknown}; expected {list(MESH_AXES)} (and {DCN_DATA}, "
      f"{RULES_KEY})."
    )
  sizes = [int(mesh_config.get(axis, -1 if axis == DATA_AXIS else 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"config.mesh={mesh_config}: sizes must be positive, at most one -1.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise UserError(
        f"config.mesh={mesh_config}: {num_devices} devices are not divisible by "
        f"the fixed axes' product {known}."
      )
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise UserError(
      f"config.mesh={mesh_config}: data x fsdp x model = {math.prod(sizes)}, but "
      f"there are {num_devices} devices."
    )
  return tuple(sizes)


def data_parallel_size(mesh_config: Mapping[str, Any] | None, num_devices: int) -> int:
  """How many ways config.mesh splits the batch over `num_devices`: data x fsdp."""
  data, fsdp, _ = mesh_shape(mesh_config, num_devices)
  return data * fsdp


def num_slices(devices: list[Any]) -> int:
  """How many TPU slices `devices` span (1 where devices carry no slice_index: CPU, most GPUs)."""
  return len({getattr(d, "slice_index", 0) for d in devices})


def device_grid(
  shape: tuple[int, int, int], devices: list[Any], dcn_data: int | None = None
) -> tuple[np.ndarray, str]:
  """The devices laid out as a (data, fsdp, model) array of `shape`, and a one-line note when
  the layout fell back to process order ('' otherwise).

  One slice: `mesh_utils.create_device_mesh` (topology-aware on TPU, process order elsewhere).
  Several slices: `mesh_utils.create_hybrid_device_mesh`, 'data' split over `dcn_data` slices
  (default: all, or as many as divide 'data') and 'fsdp' over the rest, so the slow links
  between slices carry only the data-parallel reduction (and fsdp's, where dcn_data < slices).
  A layout that cannot be placed (a slice of odd shape, slices of unequal sizes, a default mesh
  whose 'model' would span slices) falls back to process order, which runs but may cross slow
  links more often: the note says so and why. A dcn_data given that cannot work raises.
  """
  slices = num_slices(devices)
  data, fsdp, model = shape
  if slices == 1:
    if dcn_data not in (None, 1):
      raise UserError(
        f"config.mesh.{DCN_DATA}={dcn_data}: the {len(devices)} devices are one slice; "
        f"drop --config.mesh.{DCN_DATA} (or set it to 1)."
      )
    try:
      return mesh_utils.create_device_mesh(shape, devices, contiguous_submeshes=False), ""
    except (ValueError, NotImplementedError, AssertionError) as e:
      reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
      note = (
        f"mesh: devices placed in process order: the topology-aware layout cannot place "
        f"(data, fsdp, model)={shape} on these {len(devices)} devices ({reason})."
      )
      return np.asarray(devices).reshape(shape), note
  # Slices over 'data' first (by default as many as divide it: all of them, usually), the rest
  # over 'fsdp'; 'model' never leaves a slice.
  given = dcn_data is not None
  dcn_data = int(dcn_data) if given else math.gcd(slices, data)
  dcn_fsdp = slices // dcn_data if dcn_data >= 1 and slices % dcn_data == 0 else 0
  if not dcn_fsdp or data % dcn_data:
    problem = (
      f"config.mesh.{DCN_DATA}={dcn_data}: expected a divisor of both the {slices} slices and "
      f"config.mesh.data={data}, e.g. --config.mesh.{DCN_DATA}={math.gcd(slices, data)}"
    )
  elif fsdp % dcn_fsdp:
    problem = (
      f"config.mesh.{DCN_DATA}={dcn_data} leaves {dcn_fsdp} slices to 'fsdp', which does not "
      f"divide config.mesh.fsdp={fsdp}: set --config.mesh.{DCN_DATA}={slices} (the data axis "
      "over every slice) or an fsdp size that is a multiple of it"
    )
  else:
    problem = ""
  if problem and given:
    raise UserError(problem + ".")
  if problem:
    note = (
      f"mesh: devices placed in process order, no hybrid mesh over the {slices} slices: "
      f"(data, fsdp, model)={shape} does not split over them ('data' x 'fsdp' must take the "
      f"{slices} slices; 'model' stays within one)."
    )
    return np.asarray(devices).reshape(shape), note
  ici_shape = (data // dcn_data, fsdp // dcn_fsdp, model)  # Within one slice.
  dcn_shape = (dcn_data, dcn_fsdp, 1)  # Across slices.
  try:
    grid = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices)
    return grid, ""
  except (ValueError, NotImplementedError, AssertionError) as e:
    reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    note = (
      f"mesh: devices placed in process order, no hybrid mesh over the {slices} slices: "
      f"(data, fsdp, model)={shape} as {ici_shape} per slice x {dcn_shape} across slices "
      f"cannot be laid out ({reason})."
    )
    return np.asarray(devices).reshape(shape), note


def make_mesh(
  mesh_config: Mapping[str, Any] | ml_collections.ConfigDict | None = None,
  devices: list[Any] | None = None,
) -> Mesh:
  """The ('data', 'fsdp', 'model') mesh of config.mesh over every device of every process.

  Without a config every device is on 'data'. Devices are laid out by `device_grid`
  (topology-aware on TPU, hybrid over several slices; process order elsewhere), so 'model' and
  'fsdp', the innermost axes, stay within a host or a TPU slice's fast links where they fit. A
  fall back to process order is printed (process 0) in one line saying why.
  """
  devices = list(jax.devices() if devices is None else devices)
  if isinstance(mesh_config, ml_collections.ConfigDict):
    mesh_config = mesh_config.to_dict()
  shape = mesh_shape(mesh_config, len(devices))
  rules_from_config(mesh_config)  # Bad config.mesh.rules fail here, before any work.
  if shape[2] > 1 and jax.process_count() > 1 and shape[2] > jax.local_device_count():
    raise UserError(
      f"config.mesh.model={shape[2]} is larger than the {jax.local_device_count()} "
      "devices of a process: tensor parallelism must stay within a host."
    )
  grid, note = device_grid(shape, devices, (mesh_config or {}).get(DCN_DATA))
  if note and jax.process_index() == 0:
    print(note, flush=True)
  # Built directly with the default (Auto) axis types: jax.make_mesh defaults to Explicit axis
  # types in jax 0.10, which ordinary Flax modules do not handle.
  return Mesh(grid, MESH_AXES)


def _axis_size(mesh: Mesh, axis: str | None) -> int:
  return mesh.shape.get(axis, 1) if axis else 1


def batch_size_divisor(mesh: Mesh) -> int:
  """How many ways the batch is split: the product of the data-parallel axes."""
  return math.prod(_axis_size(mesh, a) for a in BATCH_AXES)


def _batch_axes(mesh: Mesh) -> tuple[str, ...]:
  return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data-parallel axes, everything else whole."""
  return NamedSharding(mesh, PartitionSpec(_batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def rules_from_config(mesh_config: Mapping[str, Any] | None) -> Rules:
  """config.mesh.rules as flax's logical axis rules ((logical axis, mesh axes), ...), checked.

  Absent: DEFAULT_RULES. Logical axes the config leaves out stay whole. A mesh axis is given as
  its name, a tuple (or comma-separated string) of names, or None ('None' on the command line).
  The batch comes first: flax gives a mesh axis to the first rule that asks for it, so an
  activation (batch, length, embed) keeps 'fsdp' for its batch.
  """
  if isinstance(mesh_config, ml_collections.ConfigDict):
    mesh_config = mesh_config.to_dict()
  given = (mesh_config or {}).get(RULES_KEY)
  if given is None:
    given = DEFAULT_RULES
  if isinstance(given, ml_collections.ConfigDict):
    given = given.to_dict()
  if not isinstance(given, Mapping):
    raise UserError(
      f"config.mesh.{RULES_KEY}={given!r}: expected a dict of logical axis -> mesh axes, "
      f"e.g. {DEFAULT_RULES}."
    )
  unknown = sorted(set(given) - set(LOGICAL_AXES))
  if unknown:
    raise UserError(
      f"config.mesh.{RULES_KEY}: unknown logical axis {unknown}; expected some of "
      f"{list(LOGICAL_AXES)}."
    )
  rules = []
  for logical in sorted(given, key=LOGICAL_AXES.index):
    value = given[logical]
    if isinstance(value, str):
      value = None if value in ("None", "none", "") else (value,)
    # Names of a tuple may come comma-separated (--config.mesh.rules.batch=data,fsdp).
    axes = (None,) if value is None else tuple(a for v in value for a in str(v).split(","))
    if value is not None and (not axes or any(a not in MESH_AXES for a in axes)):
      raise UserError(
        f"config.mesh.{RULES_KEY}.{logical}={given[logical]!r}: unknown mesh axis; expected "
        f"None, one of {list(MESH_AXES)}, or a tuple of them."
      )
    rules.append((logical, None if value is None else axes[0] if len(axes) == 1 else axes))
  return tuple(rules)


def logical_partition_spec(
  logical_axes: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh, rules: Rules
) -> PartitionSpec:
  """The PartitionSpec of an array whose dimensions are `logical_axes`, by `rules`.

  flax maps the names to mesh axes (nn.logical_to_mesh_axes); then a dimension stays whole
  where its mesh axes do not divide it (a Ti model's 3 heads on a 2-way 'model' axis) or where
  they are all of size 1, and a parameter under FSDP_MIN_SIZE elements without a 'heads' or
  'mlp' axis is not split on 'fsdp'.
  """
  mesh_axes = nn.logical_to_mesh_axes(logical_axes, rules)
  tensor_parallel = bool({HEADS, MLP} & set(logical_axes))
  small = math.prod(shape) < FSDP_MIN_SIZE and not tensor_parallel
  spec = []
  for dim, axes in zip(shape, mesh_axes, strict=True):
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    axes = tuple(a for a in axes if _axis_size(mesh, a) > 1 and not (small and a == FSDP_AXIS))
    ways = math.prod(_axis_size(mesh, a) for a in axes)
    if not axes or dim % ways:
      spec.append(None)
    else:
      spec.append(axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def fallback_partition_spec(shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
  """An array without logical axes (optimizer statistics not shaped like their parameter):
  split over 'fsdp' along its largest dimension that divides, when it has at least
  FSDP_MIN_SIZE elements; otherwise (step counts, the rng, small arrays) replicated. Every
  parameter of the models has logical axes (tests/test_sharding_logical.py): none comes here."""
  fsdp = _axis_size(mesh, FSDP_AXIS)
  if fsdp > 1 and math.prod(shape) >= FSDP_MIN_SIZE:
    divisible = [i for i, dim in enumerate(shape) if dim % fsdp == 0]
    if divisible:
      largest = max(divisible, key=lambda i: shape[i])
      return PartitionSpec(*(FSDP_AXIS if i == largest else None for i in range(len(shape))))
  return PartitionSpec()


def path_name(path: tuple[Any, ...]) -> str:
  """A tree path as '/'-joined keys: params/encoder/encoderblock_0/attention/query/kernel."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def logical_axes_of(name: str, shape: tuple[int, ...], param_axes: Mapping[str, Any]) -> Any:
  """The logical axes of the state leaf `name` (of `shape`): those of the parameter whose path
  is the longest suffix of `name` and whose rank it has, so optimizer state follows its
  parameter (…/mu/encoder/…/query/kernel as encoder/…/query/kernel). None if there is none."""
  parts = name.split("/")
  for i in range(len(parts)):
    axes = param_axes.get("/".join(parts[i:]))
    if axes is not None and len(axes) == len(shape):
      return axes
  return None


def tree_shardings(
  tree: Any, mesh: Mesh, param_axes: Mapping[str, Any], rules: Rules | None = None
) -> Any:
  """NamedShardings for every leaf of `tree` (arrays or ShapeDtypeStructs): by the logical axes
  of its parameter (`param_axes`: '/'-joined parameter path -> logical axes, as
  vidtx.models.param_logical_axes gives them) and `rules` (default DEFAULT_RULES).

  Works on a whole train state: optimizer-state and EMA leaves carry their parameter's path as
  a suffix (…/trace/encoder/encoderblock_0/attention/query/kernel), so they follow it; leaves
  without a parameter (step counts, the rng) take fallback_partition_spec.
  """
  rules = rules_from_config(None) if rules is None else rules

  def leaf_sharding(path, leaf):
    shape = tuple(leaf.shape)
    axes = logical_axes_of(path_name(path), shape, param_axes)
    if axes is None:
      return NamedSharding(mesh, fallback_partition_spec(shape, mesh))
    return NamedSharding(mesh, logical_partition_spec(axes, shape, mesh, rules))

  return jax.tree_util.tree_map_with_path(leaf_sharding, tree)


def under_mesh(fn: Callable[..., Any], mesh: Mesh) -> Callable:
  """`fn` traced with `mesh` in context (the abstract mesh: all that can be set inside jit), so
  a Pallas attention kernel runs in shard_map over it (vidtx.models.kernels); jit it."""

  @functools.wraps(fn)
  def traced(*args: Any, **kwargs: Any) -> Any:
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args, **kwargs)

  return traced


def under_rules(fn: Callable[..., Any], mesh: Mesh, rules: Rules | None = None) -> Callable:
  """`fn` traced under_mesh and with the logical axis `rules` (default DEFAULT_RULES) in context,
  so the models' activation constraints (nn.with_logical_constraint) apply within; jit it."""
  rules = rules_from_config(None) if rules is None else rules

  def with_rules(*args: Any, **kwargs: Any) -> Any:
    with nn.logical_axis_rules(rules):
      return fn(*args, **kwargs)

  return under_mesh(functools.wraps(fn)(with_rules), mesh)


def describe(tree: Any) -> str:
  """How `tree` (arrays or ShapeDtypeStructs with their shardings) is laid out: bytes per device
  against the total, and how many leaves are split."""
  leaves = jax.tree.leaves(tree)
  specs = [x.sharding for x in leaves]
  total = sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves)
  per_device = sum(
    math.prod(s.shard_shape(tuple(x.shape))) * np.dtype(x.dtype).itemsize
    for x, s in zip(leaves, specs, strict=True)
  )
  split = sum(1 for s in specs if any(a is not None for a in s.spec))
  return (
    f"{total / 2**20:.1f} MiB of state, {per_device / 2**20:.1f} MiB per device "
    f"({split}/{len(leaves)} arrays split)"
  )


def next_valid_batch_size(batch_size: int, ways: int, processes: int) -> int:
  """The smallest batch >= `batch_size` that splits over `ways` devices and `processes`."""
  step = math.lcm(ways, processes)
  return -(-batch_size // step) * step


def divisibility_error(
  batch_size: int, ways: int, processes: int, what: str = "batch_size", then: str = ""
) -> str:
  """The one-line message for a batch that does not split, with the flags of the next one that
  does; `then` says what else follows that batch (the learning rate, for config.batch_size)."""
  valid = next_valid_batch_size(batch_size, ways, processes)
  fix = f"--config.{what}={valid}"
  if what == "batch_size" and valid % ways == 0:
    fix += f" (or --config.per_device_batch_size={valid // ways})"
  return (
    f"config.{what}={batch_size} must be divisible by the number of data-parallel devices "
    f"({ways}) and of processes ({processes}): the batch is split over them. Next valid: "
    f"{fix}{then}."
  )


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "batch_size") -> int:
  """Returns the per-process batch size, or explains why the global one does not split and
  names the flags of the next batch that does."""
  if not isinstance(global_batch_size, int) or global_batch_size < 1:
    raise UserError(
      f"config.{what}={global_batch_size!r}: expected a positive integer (clips "
      "per step, over all devices)."
    )
  ways = batch_size_divisor(mesh)
  if global_batch_size % ways or global_batch_size % jax.process_count():
    raise UserError(divisibility_error(global_batch_size, ways, jax.process_count(), what))
  return global_batch_size // jax.process_count()


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, Any]:
  """Host-local numpy batch -> global jax.Arrays split over the data-parallel axes on axis 0."""
  sharding = data_sharding(mesh)
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
  }
