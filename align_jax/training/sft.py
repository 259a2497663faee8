"""Training steps built from a loss: one step function for LM, reward and process losses."""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from align_jax.training.losses import accumulate_gradients, lm_loss_sums
from align_jax.training.loop import TrainState
from align_jax.training.optimizer import OptimizerConfig, learning_rate_schedule


def make_train_step(loss_sums: Callable, optimizer: optax.GradientTransformation,
                    optimizer_config: OptimizerConfig, num_micro_batches: int = 1):
  """step_fn(state, batch, frozen) minimising sum / weight of `loss_sums(params, batch)`.

  Only `state.params` (the trainable leaves) are differentiated; `frozen` leaves (a
  LoRA base) are merged in for the forward pass. Metrics: loss, accuracy (from the
  aux sum `correct`), every other aux sum divided by the weight, the weight itself,
  the gradient norm and the learning rate.
  """
  schedule = learning_rate_schedule(optimizer_config)

  def step_fn(state: TrainState, batch, frozen: Any):
    loss_sum, weight, aux, grads = accumulate_gradients(
        loss_sums, state.params, frozen, batch, num_micro_batches)
    denominator = jax.numpy.maximum(weight, 1.0)
    grads = jax.tree.map(lambda g: g / denominator, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss_sum / denominator, "target_tokens": weight,
               "grad_norm": optax.global_norm(grads), "learning_rate": schedule(state.step)}
    metrics.update({("accuracy" if k == "correct" else k): v / denominator
                    for k, v in aux.items()})
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step_fn


def make_lm_step(model, optimizer: optax.GradientTransformation, optimizer_config: OptimizerConfig,
                 num_micro_batches: int = 1):
  """step_fn for next-token training on weighted targets (pretraining and SFT)."""
  return make_train_step(lambda params, batch: lm_loss_sums(model, params, batch), optimizer,
                         optimizer_config, num_micro_batches)
