"""The arithmetic of PPO for language models, as small pure functions.

Everything works on [batch, length] arrays of response tokens with a `mask` that is 1
on real response tokens (up to and including the first EOS) and 0 on padding. These
are the pieces whose subtle bugs users of RLHF libraries report most: statistics that
count padding, a score that lands on a pad token, an exploding k3 estimator, a KL
controller moving the wrong way, advantages that leak across the mask.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from align_jax.training.reward import last_token_index

Array = jax.Array


def masked_sum(x: Array, mask: Array, axis=None) -> Array:
  """Sum over positions where mask is 1; whatever the padding holds (even inf) is ignored."""
  return jnp.sum(jnp.where(mask > 0, x, 0.0), axis=axis)


def masked_mean(x: Array, mask: Array, axis=None) -> Array:
  """Mean over positions where mask is 1 (0 when there are none)."""
  return masked_sum(x, mask, axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


def masked_var(x: Array, mask: Array, unbiased: bool = True) -> Array:
  """Variance over the masked positions (Bessel-corrected by default)."""
  mean = masked_mean(x, mask)
  count = jnp.sum(mask)
  var = masked_sum((x - mean) ** 2, mask) / jnp.maximum(count, 1.0)
  if unbiased:
    var = var * count / jnp.maximum(count - 1.0, 1.0)
  return var


def masked_whiten(x: Array, mask: Array, shift_mean: bool = True, eps: float = 1e-8) -> Array:
  """(x - mean) / std over the masked positions of the whole batch; 0 outside the mask."""
  mean = masked_mean(x, mask)
  whitened = (x - mean) * jax.lax.rsqrt(masked_var(x, mask) + eps)
  if not shift_mean:
    whitened = whitened + mean
  return jnp.where(mask > 0, whitened, 0.0)


def masked_rescale(x: Array, mask: Array, eps: float = 1e-8) -> Array:
  """x / std over the masked positions of the whole batch (no shift); 0 outside the mask."""
  return jnp.where(mask > 0, x * jax.lax.rsqrt(masked_var(x, mask) + eps), 0.0)


def kl_penalty(logprobs: Array, ref_logprobs: Array, estimator: str = "k1",
               clamp: float = 20.0, clamp_min: float | None = None) -> Array:
  """Per-token KL estimate of policy vs reference from sampled-token log-probabilities.

  k1: log p - log q (unbiased, can be negative per token); with clamp_min, at least
    clamp_min (clamp_min=0 never rewards moving below the reference, and biases the
    estimate upwards).
  k3: exp(-x) - 1 + x with x = log p - log q, clamped before exp (always >= 0).
  """
  log_ratio = logprobs - ref_logprobs
  if clamp_min is not None and estimator != "k1":
    raise ValueError(f"clamp_min applies to the 'k1' estimator only, got {estimator!r}")
  if estimator == "k1":
    return log_ratio if clamp_min is None else jnp.maximum(log_ratio, clamp_min)
  if estimator == "k3":
    x = jnp.clip(log_ratio, -clamp, clamp)
    return jnp.exp(-x) - 1.0 + x
  raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1' or 'k3'")


def token_rewards(scores: Array, kl: Array, mask: Array, beta: float | Array) -> Array:
  """Per-token rewards: -beta * KL on every response token, plus each sequence's
  score on its last response token (the EOS, or the last token when it has none);
  0 outside the mask."""
  rewards = jnp.where(mask > 0, -beta * kl, 0.0)
  last = jnp.arange(mask.shape[-1]) == last_token_index(mask)[:, None]
  last = last & (jnp.sum(mask, axis=-1, keepdims=True) > 0)
  return rewards + jnp.where(last, scores[:, None], 0.0)


def missing_eos_penalty(scores: Array, has_eos: Array, penalty: float) -> Array:
  """Replaces the score of every response without EOS by a fixed penalty."""
  return jnp.where(has_eos, scores, penalty)


def gae(rewards: Array, values: Array, mask: Array, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[Array, Array]:
  """Generalised advantage estimates and returns over the masked positions.

  Positions outside the mask contribute nothing and get advantage 0; the value after
  the last real token is taken as 0 (episodes end with the response).
  """
  rewards, values = jnp.where(mask > 0, rewards, 0.0), jnp.where(mask > 0, values, 0.0)

  def step(carry, inputs):
    next_value, next_advantage = carry
    reward, value, m = inputs
    delta = reward + gamma * next_value - value
    advantage = jnp.where(m > 0, delta + gamma * lam * next_advantage, 0.0)
    # Outside the mask, pass the running quantities through unchanged.
    new_value = jnp.where(m > 0, value, next_value)
    new_advantage = jnp.where(m > 0, advantage, next_advantage)
    return (new_value, new_advantage), advantage

  batch = rewards.shape[0]
  init = (jnp.zeros((batch,), rewards.dtype), jnp.zeros((batch,), rewards.dtype))
  xs = (rewards.T[::-1], values.T[::-1], mask.T[::-1].astype(rewards.dtype))
  _, advantages = jax.lax.scan(step, init, xs)
  advantages = advantages[::-1].T
  returns = jnp.where(mask > 0, advantages + values, 0.0)
  return advantages, returns


def policy_loss_terms(logprobs: Array, old_logprobs: Array, advantages: Array, mask: Array,
                      clip: float = 0.2) -> dict[str, Array]:
  """Per-token pieces of the clipped surrogate: loss, clipped (0/1), ratio, log-ratio."""
  log_ratio = jnp.where(mask > 0, logprobs - old_logprobs, 0.0)
  ratio = jnp.exp(log_ratio)
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
  return {"loss": jnp.maximum(unclipped, clipped),
          "clipped": (clipped > unclipped).astype(jnp.float32),
          "ratio": ratio, "log_ratio": log_ratio}


def value_loss_terms(values: Array, old_values: Array, returns: Array,
                     clip: float | None = 0.2) -> dict[str, Array]:
  """Per-token 0.5 * squared error to the returns, optionally clipped around the old
  values, and whether the clipped error was the larger one."""
  error = (values - returns) ** 2
  if clip is None:
    return {"loss": 0.5 * error, "clipped": jnp.zeros_like(error)}
  clipped_values = old_values + jnp.clip(values - old_values, -clip, clip)
  clipped_error = (clipped_values - returns) ** 2
  return {"loss": 0.5 * jnp.maximum(error, clipped_error),
          "clipped": (clipped_error > error).astype(jnp.float32)}


def explained_variance(values: Array, returns: Array, mask: Array) -> Array:
  """1 - Var(returns - values) / Var(returns) over the masked positions."""
  return 1.0 - masked_var(returns - values, mask) / jnp.maximum(masked_var(returns, mask), 1e-8)


@dataclasses.dataclass
class AdaptiveKLController:
  """beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n_episodes / horizon."""
  beta: float
  target: float
  horizon: int = 10_000

  def update(self, kl: float, n_episodes: int) -> float:
    error = min(max(kl / self.target - 1.0, -0.2), 0.2)
    self.beta *= 1.0 + error * n_episodes / self.horizon
    return self.beta


@dataclasses.dataclass
class FixedKLController:
  """A constant KL coefficient beta (when no target KL is set)."""
  beta: float

  def update(self, kl: float, n_episodes: int) -> float:
    del kl, n_episodes
    return self.beta
