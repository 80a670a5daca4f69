"""Learning-rate schedules, optimizers with weight-decay masks, an EMA of parameters and the
steps/epochs helper.

Schedules (`config.lr_configs.schedule`), all optionally after a linear warmup from 0 over
`lr_configs.warmup_steps` (or `warmup_epochs`, converted with the run's steps per epoch; steps
win when both are set):
- 'cosine': cosine decay from `base_learning_rate` to `end_learning_rate` (default 0) at the
  last step (ViViT, X-ViT).
- 'constant': `base_learning_rate`.
- 'steps': `base_learning_rate` multiplied by `decay_factor` (default 0.1) at each boundary of
  `decay_steps` (steps) or `decay_epochs` (epochs, counted from 0; needs `steps_per_epoch`).
  TimeSformer: 0.005, divided by 10 at epochs 11 and 14 of 15.

Optimizers (`config.optimizer`, settings in `config.optimizer_configs`):
- 'momentum': SGD with `momentum` (and `nesterov`); `weight_decay` is coupled L2, added to the
  gradient before momentum as PyTorch's SGD and scenic do.
- 'adamw': `beta1`, `beta2`; `adamw_weight_decay` is decoupled (Loshchilov & Hutter). A
  `weight_decay` set as well is added to the gradient as for 'momentum'.
Both decays skip the parameters whose '/'-joined name matches a regex of
`optimizer_configs.no_decay_patterns` (default `NO_DECAY_PATTERNS`: positional embeddings,
class tokens, LayerNorms). `config.max_grad_norm` (0 or None: off) clips the global gradient
norm before anything else.

The papers' recipes (configs/k400_*.py):
- ViViT: SGD momentum 0.9, cosine schedule with linear warmup, no weight decay.
- TimeSformer: SGD momentum 0.9, weight decay 1e-4, lr 0.005 divided by 10 at epochs 11 and 14.
- X-ViT: SGD momentum 0.9 (Nesterov), weight decay 1e-5, cosine schedule with linear warmup.

Batch and learning rate (`resolve_batch`, run at start-up by train.py and eval.py once the
command line is applied): each recipe keeps the paper's batch and learning rate in
`config.batch_scaling`, and another global batch (`--config.batch_size`, or
`--config.per_device_batch_size` x data-parallel devices) scales `base_learning_rate` by the
family's rule (`LR_SCALING_RULES`; linear for all three papers: lr x new batch / paper's batch,
Goyal et al., arXiv:1706.02677). Warm-ups and decays given in epochs follow the new steps per
epoch by themselves. A `base_learning_rate` given on the command line is kept as given.
"""

import functools
import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vidtx import sharding
from vidtx.errors import UserError

PyTree = Any

SCHEDULES = ("cosine", "constant", "steps")

# Parameters weight decay skips by default: regexes searched in the '/'-joined parameter name,
# so they also match scanned layouts (encoder/encoderblocks/norm_mlp/scale). Biases of Dense
# and Conv layers are decayed, as in the papers' code; add r"/bias$" to skip them too.
NO_DECAY_PATTERNS = (
  r"pos_embedding",  # pos_embedding, spatial_pos_embedding, temporal_pos_embedding
  r"time_embedding",
  r"(^|/)embedding$",  # the parameter of any AddPositionEmbedding module, whatever its name
  r"(^|/)[^/]*cls(_token)?$",  # class tokens: cls, spatial_cls, temporal_cls
  r"(^|/)[^/]*[Nn]orm[^/]*/(scale|bias)$",  # LayerNorms: norm_*, encoder_norm, LayerNorm_0
)


def resolve_steps(
  config: ml_collections.ConfigDict, prefix: str, examples: int, batch_size: int
) -> int:
  """`{prefix}_steps`, or else `{prefix}_epochs` converted to steps; steps win when both are set.

  Returns 0 when neither is set.
  """
  steps = config.get(f"{prefix}_steps")
  epochs = config.get(f"{prefix}_epochs")
  if steps is not None:
    return int(steps)
  if epochs is not None:
    return int(math.ceil(epochs * examples / batch_size))
  return 0


# How base_learning_rate follows the global batch (config.batch_scaling.rule): the factor for a
# batch `ratio` times the paper's. The three papers train with SGD + momentum: 'linear'.
LR_SCALING_RULES = {
  "linear": lambda ratio: ratio,
  "sqrt": math.sqrt,  # The usual rule for Adam-type optimizers (arXiv:2205.10287).
  "none": lambda ratio: 1.0,
}


def scaled_learning_rate(
  learning_rate: float, from_batch_size: int, to_batch_size: int, rule: str = "linear"
) -> float:
  """`learning_rate`, set for a global batch of `from_batch_size`, for `to_batch_size` by `rule`
  (LR_SCALING_RULES)."""
  if rule not in LR_SCALING_RULES:
    raise UserError(
      f"config.batch_scaling.rule={rule!r}: expected one of {list(LR_SCALING_RULES)}."
    )
  return learning_rate * LR_SCALING_RULES[rule](to_batch_size / from_batch_size)


def warmup_steps(lr_configs: ml_collections.ConfigDict, steps_per_epoch: float | None) -> int:
  """`lr_configs.warmup_steps`, or else `warmup_epochs` in steps (rounded up, as
  resolve_steps); 0 when neither is set."""
  steps, epochs = lr_configs.get("warmup_steps"), lr_configs.get("warmup_epochs")
  if steps is not None or not epochs:
    return int(steps or 0)
  if not steps_per_epoch or steps_per_epoch <= 0:
    raise UserError(
      f"config.lr_configs.warmup_epochs={epochs!r} needs the number of steps per epoch: pass "
      f"make_schedule(..., steps_per_epoch=examples / batch_size) (got {steps_per_epoch!r}), "
      "or set config.lr_configs.warmup_steps instead."
    )
  # The small slack keeps 2.5 x 3750.0000000001 from becoming one step more than resolve_steps.
  return int(math.ceil(epochs * steps_per_epoch - 1e-9))


def resolve_batch(
  config: ml_collections.ConfigDict,
  num_devices: int | None = None,
  process_count: int | None = None,
) -> list[str]:
  """The global batch, learning rate and evaluation batch for this many devices, set on
  `config` once the command line is applied (train.py and eval.py at start-up); returns the
  lines to print.

  - `per_device_batch_size` N (if set): batch_size = N x the data-parallel devices (data x
    fsdp of config.mesh); a batch_size given as well must agree.
  - batch_size must split over the data-parallel devices and the processes: else one line
    naming the flags of the next batch that does, and the learning rate it would get.
  - `batch_scaling` (the recipes': the paper's batch and lr, the rule, and `lr_batch_size`, the
    batch base_learning_rate is set for): another batch scales base_learning_rate by the rule,
    unless the command line gave base_learning_rate (it differs from the recipe's): it is kept.
    One line says what was done, naming the paper's batch and lr and the flags that pin it.
  - eval_batch_size follows batch_size unless given; it is rounded up to the next multiple of
    the data-parallel devices (evaluation pads its last batch anyway), with a note.
  """
  num_devices = jax.device_count() if num_devices is None else num_devices
  processes = jax.process_count() if process_count is None else process_count
  ways = sharding.data_parallel_size(config.get("mesh"), num_devices)
  scaling = config.get("batch_scaling")
  lr_configs = config.lr_configs
  # The batch the recipe set, which the learning rate is for: a different batch_size is the
  # command line's.
  recipe_batch = int(scaling.lr_batch_size) if scaling else config.batch_size
  given_batch = config.batch_size != recipe_batch
  how = ""

  per_device = config.get("per_device_batch_size")
  if per_device is not None:
    if not isinstance(per_device, int) or per_device < 1:
      raise UserError(
        f"config.per_device_batch_size={per_device!r}: expected a positive integer (clips per "
        "data-parallel device)."
      )
    batch = per_device * ways
    if given_batch and config.batch_size != batch:
      raise UserError(
        f"config.per_device_batch_size={per_device} x {ways} data-parallel devices = {batch} "
        f"clips, but config.batch_size={config.batch_size}: give one of the two."
      )
    how = f" (per_device_batch_size={per_device} x {ways} data-parallel devices)"
    config.batch_size = batch
  batch = config.batch_size
  if not isinstance(batch, int) or batch < 1:
    raise UserError(
      f"config.batch_size={batch!r}: expected a positive integer (clips per step, over all "
      "devices)."
    )

  def lr_for(new_batch: int) -> float | None:
    """The rescaled lr for `new_batch`; None when the lr stays as it is (given, or no rule)."""
    if not scaling or scaling.rule == "none":
      return None
    recipe_lr = scaled_learning_rate(
      scaling.paper_learning_rate, scaling.paper_batch_size, recipe_batch, scaling.rule
    )
    if not math.isclose(lr_configs.base_learning_rate, recipe_lr, rel_tol=1e-9):
      return None  # Given on the command line: it wins.
    return scaled_learning_rate(
      scaling.paper_learning_rate, scaling.paper_batch_size, new_batch, scaling.rule
    )

  if batch % ways or batch % processes:
    valid = sharding.next_valid_batch_size(batch, ways, processes)
    new_lr = lr_for(valid)
    then = "" if new_lr is None else f", with which lr_configs.base_learning_rate is {new_lr:.6g}"
    raise UserError(sharding.divisibility_error(batch, ways, processes, "batch_size", then))

  lines = []
  if batch != recipe_batch:
    new_lr = lr_for(batch)
    lines.append(_batch_line(config, batch, how, new_lr))
    if new_lr is not None:
      config.lr_configs.base_learning_rate = new_lr
    if scaling:
      config.batch_scaling.lr_batch_size = batch  # The lr is now for this batch.

  # Evaluation: the recipes evaluate in batches of their training batch.
  eval_batch = config.get("eval_batch_size")
  if eval_batch is not None:
    if eval_batch == recipe_batch != batch:  # The recipe's: it follows the batch.
      eval_batch = batch
    if not isinstance(eval_batch, int) or eval_batch < 1:
      raise UserError(
        f"config.eval_batch_size={eval_batch!r}: expected a positive integer (clips per "
        "evaluation step, over all devices)."
      )
    valid = sharding.next_valid_batch_size(eval_batch, ways, processes)
    if valid != eval_batch:
      lines.append(
        f"note: eval_batch_size={eval_batch} rounded up to {valid}, the next multiple of the "
        f"{ways} data-parallel devices and {processes} process(es) (evaluation pads its last "
        "batch)."
      )
    config.eval_batch_size = valid
  return lines


def _batch_line(
  config: ml_collections.ConfigDict, batch: int, how: str, new_lr: float | None
) -> str:
  """The start-up line for a global batch other than the recipe's: what the lr became."""
  scaling, lr_configs = config.get("batch_scaling"), config.lr_configs
  if not scaling:
    return (
      f"batch_size={batch}{how}; lr_configs.base_learning_rate="
      f"{lr_configs.base_learning_rate:.6g} as set (no config.batch_scaling to rescale it by)."
    )
  paper = (
    f"the paper's {scaling.paper_batch_size} at lr {scaling.paper_learning_rate:.6g} "
    f"({scaling.get('paper') or 'the recipe'})"
  )
  if new_lr is None:
    why = "no rescaling (batch_scaling.rule='none')" if scaling.rule == "none" else "as given"
    lr = f"lr_configs.base_learning_rate={lr_configs.base_learning_rate:.6g} {why}"
  else:
    ratio = f"{batch}/{scaling.paper_batch_size}"
    factor = {"linear": ratio, "sqrt": f"sqrt({ratio})"}[scaling.rule]
    lr = (
      f"lr_configs.base_learning_rate = {scaling.paper_learning_rate:.6g} x {factor} = "
      f"{new_lr:.6g} ({scaling.rule} scaling)"
    )
  warmup = ""
  examples = (config.dataset_configs.get("examples_per_subset") or {}).get("train")
  if lr_configs.get("warmup_steps") is None and lr_configs.get("warmup_epochs") and examples:
    steps = warmup_steps(lr_configs, examples / batch)
    warmup = f"; warm-up {lr_configs.warmup_epochs:g} epochs = {steps} step{'s' * (steps != 1)}"
  pin = ""
  if new_lr is not None:
    pin = " --config.lr_configs.base_learning_rate=X (or --config.batch_scaling.rule=none) pins it."
  return f"batch_size={batch}{how}, {paper}: {lr}{warmup}.{pin}"


def _decay_boundaries(
  lr_configs: ml_collections.ConfigDict, steps_per_epoch: float | None
) -> list[int]:
  """The steps at which the 'steps' schedule decays; explicit steps win over epochs."""
  decay_steps = lr_configs.get("decay_steps")
  decay_epochs = lr_configs.get("decay_epochs")
  for field, value in (("decay_steps", decay_steps), ("decay_epochs", decay_epochs)):
    if value is not None and not isinstance(value, (tuple, list)):
      raise UserError(
        f"config.lr_configs.{field}={value!r}: expected a tuple of boundaries, e.g. (11, 14)."
      )
  if decay_steps is not None:
    field, boundaries = "decay_steps", [int(s) for s in decay_steps]
  elif decay_epochs is not None:
    if not steps_per_epoch or steps_per_epoch <= 0:
      raise UserError(
        f"config.lr_configs.decay_epochs={tuple(decay_epochs)!r} needs the number of steps per "
        f"epoch: pass make_schedule(..., steps_per_epoch=examples / batch_size) (got "
        f"{steps_per_epoch!r}), or set config.lr_configs.decay_steps instead."
      )
    # Epoch e starts at step round(e * steps_per_epoch); epochs are counted from 0.
    field, boundaries = "decay_epochs", [round(e * steps_per_epoch) for e in decay_epochs]
  else:
    raise UserError(
      "config.lr_configs.schedule='steps' needs its boundaries: set "
      "config.lr_configs.decay_epochs (e.g. (11, 14)) or decay_steps."
    )
  if not boundaries:
    raise UserError(f"config.lr_configs.{field} is empty: expected at least one boundary.")
  if boundaries[0] < 0 or any(b >= c for b, c in zip(boundaries, boundaries[1:], strict=False)):
    raise UserError(
      f"config.lr_configs.{field}={tuple(lr_configs.get(field))!r} (steps "
      f"{boundaries}): expected strictly increasing, non-negative boundaries."
    )
  return boundaries


def _steps_schedule(
  base: float, boundaries: Sequence[int], factor: float, warmup: int
) -> optax.Schedule:
  """`base * factor**k` from the k-th boundary on, times a linear warmup from 0 if any."""
  bounds = jnp.asarray(boundaries, jnp.int32)

  def schedule(step):
    step = jnp.asarray(step)
    # PySlowFast's 'steps_with_relative_lrs': the decay applies from the boundary step itself
    # (optax.piecewise_constant_schedule would apply it one step later).
    lr = base * factor ** jnp.sum(step >= bounds)
    if warmup > 0:
      lr = lr * jnp.minimum(step / warmup, 1.0)
    return lr

  return schedule


def make_schedule(
  lr_configs: ml_collections.ConfigDict, total_steps: int, *, steps_per_epoch: float | None = None
) -> optax.Schedule:
  """The learning rate per step for `lr_configs` (see the module docstring).

  'steps' schedule: the lr is `base_learning_rate` for steps < b_1, times `decay_factor` for
  b_1 <= step < b_2, and so on. `lr_configs.decay_steps` gives the b_i directly; otherwise
  `lr_configs.decay_epochs` gives epochs e_i and b_i = round(e_i * steps_per_epoch), the first
  step of epoch e_i counting from 0 (PySlowFast's SOLVER.STEPS). A warmup multiplies the
  schedule by step / warmup_steps until warmup_steps (`lr_configs.warmup_epochs` converted with
  `steps_per_epoch` when warmup_steps is unset).
  """
  base = lr_configs.base_learning_rate
  warmup = warmup_steps(lr_configs, steps_per_epoch)
  schedule_name = lr_configs.get("schedule")
  if schedule_name == "steps":
    boundaries = _decay_boundaries(lr_configs, steps_per_epoch)
    factor = lr_configs.get("decay_factor")
    factor = 0.1 if factor is None else float(factor)
    if factor <= 0:
      raise UserError(f"config.lr_configs.decay_factor={factor!r}: expected a number > 0.")
    return _steps_schedule(base, boundaries, factor, warmup)
  # The warmup must end before the last step for the cosine to have a length.
  warmup = min(warmup, max(total_steps - 1, 0))
  if schedule_name == "constant":
    return optax.join_schedules(
      [optax.linear_schedule(0.0, base, max(warmup, 1)), optax.constant_schedule(base)], [warmup]
    )
  if schedule_name != "cosine":
    raise UserError(
      f"config.lr_configs.schedule={schedule_name!r}: expected one of "
      f"{', '.join(repr(s) for s in SCHEDULES)}."
    )
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=base,
    warmup_steps=warmup,
    decay_steps=max(total_steps, warmup + 1),
    end_value=lr_configs.get("end_learning_rate", 0.0),
  )


def decay_mask(params: PyTree, patterns: Sequence[str] = NO_DECAY_PATTERNS) -> PyTree:
  """A pytree like `params` of bools: True where weight decay applies, False where a regex of
  `patterns` is found in the parameter's '/'-joined name (e.g. 'encoder/encoder_norm/scale')."""
  compiled = [re.compile(p) for p in patterns]

  def decays(path, _):
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    return not any(p.search(name) for p in compiled)

  return jax.tree_util.tree_map_with_path(decays, params)


def _no_decay_patterns(opt: ml_collections.ConfigDict) -> tuple[str, ...]:
  """`optimizer_configs.no_decay_patterns` checked; the default when absent or None."""
  patterns = opt.get("no_decay_patterns")
  if patterns is None:
    return NO_DECAY_PATTERNS
  # A bare string would be read character by character.
  if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
    raise UserError(
      f"config.optimizer_configs.no_decay_patterns={patterns!r}: expected a "
      "tuple of regexes, e.g. (r'pos_embedding', r'/bias$')."
    )
  for p in patterns:
    try:
      re.compile(p)
    except re.error as e:
      raise UserError(
        f"config.optimizer_configs.no_decay_patterns: {p!r} is not a valid regex ({e})."
      ) from e
  return tuple(patterns)


def make_optimizer(
  config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """The optimizer of `config.optimizer`: global-norm clipping first, then weight decay masked by
  `optimizer_configs.no_decay_patterns`, then the update (see the module docstring)."""
  opt = config.optimizer_configs
  for field in ("weight_decay", "adamw_weight_decay"):
    if (opt.get(field) or 0) < 0:
      raise UserError(f"config.optimizer_configs.{field}={opt.get(field)!r}: expected >= 0.")
  patterns = _no_decay_patterns(opt)
  # No patterns: no mask, and the optimizer state keeps the unmasked structure.
  mask = functools.partial(decay_mask, patterns=patterns) if patterns else None
  parts = []
  if config.get("max_grad_norm"):
    parts.append(optax.clip_by_global_norm(config.max_grad_norm))
  if opt.get("weight_decay"):
    # Coupled L2 (as scenic's SGD recipes): added to the gradient before momentum.
    parts.append(optax.add_decayed_weights(opt.weight_decay, mask=mask))
  if config.optimizer == "momentum":
    parts.append(optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.get("nesterov", False)))
  elif config.optimizer == "adamw":
    adamw_decay = opt.get("adamw_weight_decay") or 0.0
    parts.append(
      optax.adamw(
        schedule,
        b1=opt.get("beta1", 0.9),
        b2=opt.get("beta2", 0.999),
        weight_decay=adamw_decay,
        mask=mask if adamw_decay else None,
      )
    )
  else:
    raise UserError(f"config.optimizer={config.optimizer!r}: expected 'momentum' or 'adamw'.")
  return optax.chain(*parts)


def ema_update(ema_params: PyTree, params: PyTree, decay: float) -> PyTree:
  """One step of an exponential moving average of parameters, leaf-wise:
  `decay * ema + (1 - decay) * params` in the EMA's dtype (float32, even for bf16 params).

  Pure, for use inside the jitted train step; `decay` is typically 0.9999. Whether the EMA is
  kept at all (decay 0: off) is the caller's decision.
  """
  return jax.tree.map(
    lambda e, p: (decay * e + (1.0 - decay) * p.astype(e.dtype)).astype(e.dtype), ema_params, params
  )
