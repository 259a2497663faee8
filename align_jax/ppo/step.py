"""The PPO update: old log-probabilities and values, GAE, then clipped policy/value epochs.

`make_ppo_step` builds the pure `step_fn(state, rollouts, frozen)` the shared
`train_loop` compiles; one call is one PPO iteration over a batch of rollouts.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from align_jax.models import Transformer, TransformerWithHead, merge_params
from align_jax.ppo import ops
from align_jax.ppo.config import PPOConfig
from align_jax.ppo.rollouts import response_logprobs
from align_jax.training.loop import TrainState
from align_jax.training.losses import accumulate_gradients


def response_values(model: TransformerWithHead, params: Any, batch: Mapping[str, jax.Array],
                    start: int) -> jax.Array:
  """The value model's estimate before each response token, float32 [batch, response]."""
  scores = model.apply({"params": params}, batch["tokens"], batch["positions"],
                       batch["segment_ids"])
  return scores[:, start - 1:-1]


def make_ppo_step(policy: Transformer, value: TransformerWithHead, config: PPOConfig,
                  optimizer: optax.GradientTransformation, start: int):
  """step_fn(state, rollouts, frozen) for `train_loop`.

  state.params = {"policy": ..., "value": ...} (trainable leaves); frozen holds the
  rest of each ({"policy": base, "value": {"backbone": base}} with LoRA, else None).
  rollouts: tokens, positions, segment_ids [B, start + R]; response_mask and
  token_rewards [B, R].
  """
  micro_rows = config.mini_batch_size // config.num_micro_batches

  def outputs(params, batch):
    logprobs, entropy = response_logprobs(policy, params["policy"], batch, start,
                                          config.temperature)
    return logprobs, entropy, response_values(value, params["value"], batch, start)

  # Rematerialised, the differentiated forward pass is computed exactly like the
  # old-log-probability pass (no residuals change how XLA fuses it), so the first ratio
  # is 1 to the bit; without it the two differ by float32 rounding (~1e-8).
  differentiated = (jax.checkpoint(outputs, policy=jax.checkpoint_policies.nothing_saveable)
                    if config.exact_ratio else outputs)

  def loss_sums(params, batch):
    logprobs, entropy, values = differentiated(params, batch)
    mask = batch["response_mask"]
    pg = ops.policy_loss_terms(logprobs, batch["old_logprobs"], batch["advantages"], mask,
                                    config.clip_ratio)
    vf = ops.value_loss_terms(values, batch["old_values"], batch["returns"],
                                   config.value_clip)
    total = (pg["loss"] + config.value_loss_coef * vf["loss"] - config.entropy_coef * entropy)
    s = lambda x: ops.masked_sum(x, mask)
    return s(total), jnp.sum(mask), {
        "policy/loss": s(pg["loss"]), "value/loss": s(vf["loss"]),
        "policy/clip_fraction": s(pg["clipped"]), "value/clip_fraction": s(vf["clipped"]),
        "policy/approx_kl": s(0.5 * pg["log_ratio"] ** 2), "policy/ratio_mean": s(pg["ratio"]),
        "policy/ratio_sq": s(pg["ratio"] ** 2), "policy/entropy": s(entropy),
        "policy/abs_log_ratio": s(jnp.abs(pg["log_ratio"]))}

  def step_fn(state: TrainState, rollouts: Mapping[str, jax.Array], frozen: Any):
    full = lambda p: merge_params(p, frozen) if frozen else p
    rows = rollouts["tokens"].shape[0]
    mask = rollouts["response_mask"]

    # Old log-probabilities and values, micro-batch by micro-batch in the first epoch's
    # order, with the very function the loss calls: the first ratios are exactly 1.
    chunks = jax.tree.map(lambda x: x.reshape((rows // micro_rows, micro_rows) + x.shape[1:]),
                          dict(rollouts))
    params0 = full(state.params)
    old_logprobs, _, old_values = jax.lax.map(lambda c: outputs(params0, c), chunks)
    old_logprobs, old_values = (x.reshape(rows, -1) for x in (old_logprobs, old_values))
    old_logprobs = jnp.where(mask > 0, old_logprobs, 0.0)
    old_values = jnp.where(mask > 0, old_values, 0.0)
    rewards = rollouts["token_rewards"]
    if config.whiten_rewards == "scale":
      rewards = ops.masked_rescale(rewards, mask)
    elif config.whiten_rewards:
      rewards = ops.masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = ops.gae(rewards, old_values, mask, config.gamma, config.lam)
    if config.whiten_advantages:
      advantages = ops.masked_whiten(advantages, mask)
    data = {**rollouts, "old_logprobs": old_logprobs, "old_values": old_values,
            "advantages": advantages, "returns": returns}
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    num_minibatches = rows // config.mini_batch_size

    def update(carry, minibatch):
      params, opt_state = carry
      loss_sum, weight, aux, grads = accumulate_gradients(loss_sums, params, frozen, minibatch,
                                                          config.num_micro_batches)
      denominator = jnp.maximum(weight, 1.0)
      grads = jax.tree.map(lambda g: g / denominator, grads)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      metrics = {k: v / denominator for k, v in aux.items()}
      metrics.update({"loss": loss_sum / denominator, "grad_norm": optax.global_norm(grads)})
      return (params, opt_state), metrics

    def epoch(carry, index):
      order = jnp.where(index == 0, jnp.arange(rows),
                        jax.random.permutation(jax.random.fold_in(key, index), rows))
      minibatches = jax.tree.map(
          lambda x: x[order].reshape((num_minibatches, config.mini_batch_size) + x.shape[1:]),
          data)
      return jax.lax.scan(update, carry, minibatches)

    (params, opt_state), per_update = jax.lax.scan(
        epoch, (state.params, state.opt_state), jnp.arange(config.num_epochs))
    metrics = {k: jnp.mean(v) for k, v in per_update.items()}
    ratio_sq = metrics.pop("policy/ratio_sq")
    metrics["policy/ratio_std"] = jnp.sqrt(jnp.maximum(
        ratio_sq - metrics["policy/ratio_mean"] ** 2, 0.0))
    for name in ("policy/ratio_mean", "policy/approx_kl", "policy/clip_fraction", "loss",
                 "policy/abs_log_ratio"):
      metrics[name.replace("policy/", "policy/first_") if "/" in name else "first_loss"] = (
          per_update[name][0, 0])
    metrics.update({
        "value/explained_variance": ops.explained_variance(old_values, returns, mask),
        "value/mean": ops.masked_mean(old_values, mask),
        "value/returns_mean": ops.masked_mean(returns, mask),
        "value/advantages_mean": ops.masked_mean(advantages, mask),
    })
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return step_fn
