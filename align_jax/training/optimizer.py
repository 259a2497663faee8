"""AdamW with warmup and decay, global-norm clipping, and a trainable-leaf mask."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Mapping, NamedTuple

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW settings.

  The learning rate warms up linearly from 0 over `warmup_steps`, then decays to
  `end_lr_fraction * learning_rate` at `total_steps` ('cosine' or 'linear'), or stays
  ('constant'). Weight decay skips one-dimensional leaves (norm scales, biases).
  """
  learning_rate: float = 3e-4
  warmup_steps: int = 100
  total_steps: int = 1000
  decay: Literal["cosine", "linear", "constant"] = "cosine"
  end_lr_fraction: float = 0.1
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  max_grad_norm: float | None = 1.0


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
  """The learning rate per step: linear warmup from 0, then the configured decay."""
  peak, end = config.learning_rate, config.learning_rate * config.end_lr_fraction
  warmup = max(config.warmup_steps, 0)
  decay_steps = max(config.total_steps - warmup, 1)
  if config.decay == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.end_lr_fraction)
  elif config.decay == "linear":
    after = optax.linear_schedule(peak, end, decay_steps)
  elif config.decay == "constant":
    after = optax.constant_schedule(peak)
  else:
    raise ValueError(f"unknown decay {config.decay!r}; expected cosine, linear or constant")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(config: OptimizerConfig,
                   steps_per_schedule_step: int = 1) -> optax.GradientTransformation:
  """The optimizer for the trainable parameters (frozen ones are never passed in).

  The learning-rate schedule advances once every `steps_per_schedule_step` updates
  (e.g. once per PPO iteration), so its warmup_steps and total_steps count groups of
  that many updates.
  """
  if steps_per_schedule_step < 1:
    raise ValueError(f"steps_per_schedule_step must be >= 1, got {steps_per_schedule_step}")
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  schedule = learning_rate_schedule(config)
  if steps_per_schedule_step > 1:
    base = schedule
    schedule = lambda count: base(count // steps_per_schedule_step)  # noqa: E731
  parts = []
  if config.max_grad_norm:
    parts.append(optax.clip_by_global_norm(config.max_grad_norm))
  parts.append(optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                           weight_decay=config.weight_decay, mask=decay_mask))
  return optax.chain(*parts)


class PartsTransformation(NamedTuple):
  """An optax GradientTransformation (init, update) that also names its `parts`."""
  init: Callable[..., Any]
  update: Callable[..., Any]
  parts: Mapping[str, optax.GradientTransformation]


def by_part(transforms: Mapping[str, optax.GradientTransformation]) -> PartsTransformation:
  """One transformation per top-level part of a dict of parameters (e.g. {"policy": ...,
  "value": ...}), each with its own state: separate learning rates, moments and clipping.
  (optax.multi_transform masks the other parts, which our weight-decay mask cannot read.)"""
  transforms = dict(transforms)

  def init(params):
    return {name: t.init(params[name]) for name, t in transforms.items()}

  def update(updates, state, params=None):
    out, new_state = {}, {}
    for name, t in transforms.items():
      out[name], new_state[name] = t.update(updates[name], state[name],
                                            None if params is None else params[name])
    return out, new_state

  return PartsTransformation(init, update, transforms)
