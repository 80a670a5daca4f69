"""Learning-rate schedules, optimizers and the steps/epochs helper."""

import math

import ml_collections
import optax


def resolve_steps(config: ml_collections.ConfigDict, prefix: str, examples: int,
                  batch_size: int) -> int:
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


def make_schedule(lr_configs: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `base_learning_rate`, then cosine decay to `end_learning_rate`."""
  base = lr_configs.base_learning_rate
  warmup = min(int(lr_configs.warmup_steps), max(total_steps - 1, 0))
  if lr_configs.schedule == "constant":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, base, max(warmup, 1)), optax.constant_schedule(base)],
        [warmup])
  if lr_configs.schedule != "cosine":
    raise ValueError(f"config.lr_configs.schedule={lr_configs.schedule!r}: expected 'cosine' "
                     "or 'constant'.")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=base, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=lr_configs.get("end_learning_rate", 0.0))


def make_optimizer(config: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """The optimizer of `config.optimizer`, with optional global-norm clipping and weight decay."""
  opt = config.optimizer_configs
  parts = []
  if config.get("max_grad_norm"):
    parts.append(optax.clip_by_global_norm(config.max_grad_norm))
  if opt.get("weight_decay"):
    # Coupled L2 (as scenic's SGD recipes): added to the gradient before momentum.
    parts.append(optax.add_decayed_weights(opt.weight_decay))
  if config.optimizer == "momentum":
    parts.append(optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.get("nesterov", False)))
  elif config.optimizer == "adamw":
    parts.append(optax.adamw(schedule, b1=opt.get("beta1", 0.9), b2=opt.get("beta2", 0.999),
                             weight_decay=opt.get("adamw_weight_decay", 0.0)))
  else:
    raise ValueError(f"config.optimizer={config.optimizer!r}: expected 'momentum' or 'adamw'.")
  return optax.chain(*parts)
