"""Language-model training steps: pretraining and supervised fine-tuning share one step."""

from __future__ import annotations

from typing import Any

import jax
import optax

from align_jax.training.losses import accumulate_gradients, lm_loss_sums
from align_jax.training.loop import TrainState
from align_jax.training.optimizer import OptimizerConfig, learning_rate_schedule


def make_lm_step(model, optimizer: optax.GradientTransformation, optimizer_config: OptimizerConfig,
                 num_micro_batches: int = 1):
  """step_fn(state, batch, frozen) for next-token training on weighted targets.

  Only `state.params` (the trainable leaves) are differentiated; `frozen` leaves (a
  LoRA base) are merged in for the forward pass.
  """
  schedule = learning_rate_schedule(optimizer_config)

  def step_fn(state: TrainState, batch, frozen: Any):
    loss_sum, weight, aux, grads = accumulate_gradients(
        lambda params, mb: lm_loss_sums(model, params, mb), state.params, frozen, batch,
        num_micro_batches)
    denominator = jax.numpy.maximum(weight, 1.0)
    grads = jax.tree.map(lambda g: g / denominator, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss_sum / denominator, "accuracy": aux["correct"] / denominator,
               "target_tokens": weight, "grad_norm": optax.global_norm(grads),
               "learning_rate": schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step_fn
