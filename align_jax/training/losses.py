"""Losses as (sum, weight) pairs, so that micro-batching never changes the result.

A loss function returns the weighted sum of per-token losses, the sum of the weights
and auxiliary sums; the mean is taken once, over the whole batch, after every
micro-batch has been accumulated.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from align_jax.models.lora import merge_params

LossSums = Callable[[Any, Mapping[str, jax.Array]], tuple[jax.Array, jax.Array, dict]]


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """-log p(target) per position, without materialising log-softmax over the vocabulary."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - picked


def lm_loss_sums(model, params: Any, batch: Mapping[str, jax.Array]):
  """Next-token cross-entropy on the weighted targets of a packed batch."""
  logits = model.apply({"params": params}, batch["input_tokens"], batch["positions"],
                       batch["segment_ids"])
  weights = batch["loss_weights"].astype(jnp.float32)
  nll = token_nll(logits, batch["target_tokens"])
  correct = (jnp.argmax(logits, axis=-1) == batch["target_tokens"]).astype(jnp.float32)
  return (nll * weights).sum(), weights.sum(), {"correct": (correct * weights).sum()}


def accumulate_gradients(loss_sums: LossSums, trainable: Any, frozen: Any,
                         batch: Mapping[str, jax.Array], num_micro_batches: int = 1):
  """Sums of loss, weight, aux and gradients over `num_micro_batches` slices of the batch.

  `loss_sums(params, micro_batch)` sees the trainable and frozen leaves merged.
  Returns (loss_sum, weight_sum, aux_sums, grad_sums); divide by weight_sum for means.
  """
  def one(micro):
    def f(t):
      total, weight, aux = loss_sums(merge_params(t, frozen) if frozen else t, micro)
      return total, (weight, aux)
    (total, (weight, aux)), grads = jax.value_and_grad(f, has_aux=True)(trainable)
    return total, weight, aux, grads

  if num_micro_batches == 1:
    return one(batch)
  size = next(iter(batch.values())).shape[0]
  if size % num_micro_batches:
    raise ValueError(f"batch of {size} rows does not split into {num_micro_batches} micro-batches")
  micro = jax.tree.map(lambda x: x.reshape((num_micro_batches, -1) + x.shape[1:]), batch)
  first = jax.tree.map(lambda x: x[0], micro)
  zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(one, first))

  def body(carry, mb):
    return jax.tree.map(jnp.add, carry, one(mb)), None

  sums, _ = jax.lax.scan(body, zeros, micro)
  return sums
