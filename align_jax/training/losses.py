"""Losses as (sum, weight) pairs, so that micro-batching never changes the result.

A loss function returns the weighted sum of per-token losses, the sum of the weights
and auxiliary sums; the mean is taken once, over the whole batch, after every
micro-batch has been accumulated.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from align_jax.models.lora import merge_params

LossSums = Callable[[Any, Mapping[str, jax.Array]], tuple[jax.Array, jax.Array, dict]]


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """-log p(target) per position, without materialising log-softmax over the vocabulary."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - picked


def head_chunk_rows(vocab_size: int, backend: str | None = None) -> int:
  """Rows per chunk of the fused output head: [rows, vocab] float32 logits of about
  64 MiB on CPU (cache-friendly; 512 rows for a 32k vocabulary) and 512 MiB on
  accelerators (fewer, larger matrix products), in multiples of 128 rows."""
  budget = 2 ** 24 if (backend or jax.default_backend()) == "cpu" else 2 ** 27
  return max(128, budget // vocab_size // 128 * 128)


def head_chunks(hidden, targets, weights, chunk):
  n = hidden.shape[0]
  chunk = min(chunk, -(-n // 8) * 8)  # a short input is one chunk
  pad = (-n) % chunk
  if pad:
    hidden = jnp.pad(hidden, ((0, pad), (0, 0)))
    targets, weights = jnp.pad(targets, (0, pad)), jnp.pad(weights, (0, pad))
  shape = lambda x: x.reshape((-1, chunk) + x.shape[1:])  # noqa: E731
  return shape(hidden), shape(targets), shape(weights), n


def _head_chunk_stats(h, w_out, t, w):
  """A chunk's [rows, V] logits, log-sum-exps and weighted -log p / argmax-hit sums;
  h [rows, d], t / w [rows] (a [B, c] chunk flattened: XLA:CPU runs one [B * c, d]
  product faster than a batched [B, c, d] one)."""
  logits = jnp.dot(h, w_out, preferred_element_type=jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, t[:, None], axis=-1)[:, 0]
  correct = (jnp.argmax(logits, axis=-1) == t).astype(jnp.float32)
  return logits, lse, jnp.sum((lse - picked) * w), jnp.sum(correct * w)


def _flat(h, t, w):
  return h.reshape(-1, h.shape[-1]), t.reshape(-1), w.reshape(-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def output_nll_sums(hidden: jax.Array, w_out: jax.Array, targets: jax.Array,
                    weights: jax.Array, chunk: int = 512) -> tuple[jax.Array, jax.Array]:
  """(weighted sum of -log p(target), weighted count of argmax hits) for
  logits = hidden @ w_out, computed about `chunk` rows at a time.

  hidden [B, L, d] (or [N, d]: one row of N positions), w_out [d, V], targets/weights
  [B, L] (or [N]). The [B * L, V] logits never exist at once; under differentiation the
  gradient is formed chunk by chunk in the forward pass (the loss is the last operation,
  so it is known up to the incoming scale), which keeps the softmax traffic in cache.
  Chunks run along the length axis with every row of the batch in each (`head_chunks`),
  so a batch split over devices stays split: each device computes its own rows' head.
  """
  hs, ts, ws, _ = head_chunks(hidden, targets, weights, chunk)

  def body(carry, xs):
    h, t, w = _flat(*xs)
    _, _, nll, correct = _head_chunk_stats(h, w_out, t, w)
    return (carry[0] + nll, carry[1] + correct), None

  zero = jnp.zeros((), jnp.float32)
  (nll, correct), _ = jax.lax.scan(body, (zero, zero), (hs, ts, ws))
  return nll, correct


def _output_nll_fwd(hidden, w_out, targets, weights, chunk):
  hs, ts, ws, length = head_chunks(hidden, targets, weights, chunk)

  def body(carry, xs):
    nll_sum, correct_sum, grad_w = carry
    shape = xs[0].shape
    h, t, w = _flat(*xs)
    logits, lse, nll, correct = _head_chunk_stats(h, w_out, t, w)
    d_logits = (jnp.exp(logits - lse[:, None])
                - jax.nn.one_hot(t, logits.shape[-1], dtype=jnp.float32)) * w[:, None]
    d_logits = d_logits.astype(w_out.dtype)
    grad_w = grad_w + jnp.dot(h.T, d_logits, preferred_element_type=jnp.float32)
    grad_h = jnp.dot(d_logits, w_out.T, preferred_element_type=jnp.float32)
    return ((nll_sum + nll, correct_sum + correct, grad_w),
            grad_h.astype(hidden.dtype).reshape(shape))

  zero = jnp.zeros((), jnp.float32)
  init = (zero, zero, jnp.zeros(w_out.shape, jnp.float32))
  (nll, correct, grad_w), grad_h = jax.lax.scan(body, init, (hs, ts, ws))
  grad_h = head_unchunk(grad_h, length).reshape(hidden.shape)
  return (nll, correct), (grad_h, grad_w.astype(w_out.dtype), targets, weights)


def _output_nll_bwd(chunk, residuals, cotangents):
  del chunk
  grad_h, grad_w, targets, weights = residuals
  g = cotangents[0]  # the argmax count has no gradient
  return (grad_h * g.astype(grad_h.dtype), grad_w * g.astype(grad_w.dtype),
          np.zeros(targets.shape, jax.dtypes.float0), jnp.zeros_like(weights))


output_nll_sums.defvjp(_output_nll_fwd, _output_nll_bwd)


def head_chunk_rows(vocab_size: int, backend: str | None = None) -> int:
  """Rows per chunk of the fused output head: [rows, vocab] float32 logits of about
  64 MiB on CPU (cache-friendly; 512 rows for a 32k vocabulary) and 512 MiB on
  accelerators (fewer, larger matrix products), in multiples of 128 rows."""
  budget = 2 ** 24 if (backend or jax.default_backend()) == "cpu" else 2 ** 27
  return max(128, budget // vocab_size // 128 * 128)


def head_chunks(hidden, targets, weights=None, chunk: int = 512):
  """hidden [B, L, d] and targets / weights [B, L] (or [N, d] and [N]: one row) as
  chunks along the length axis, [n, B, c, d] and [n, B, c], with c = chunk // B
  positions (at least one; a short row is one chunk), and L. Every chunk holds every
  row of the batch, so the batch axis keeps its sharding. weights None: zeros."""
  if weights is None:
    weights = jnp.zeros(targets.shape, jnp.float32)
  if hidden.ndim == 2:
    hidden, targets, weights = hidden[None], targets[None], weights[None]
  rows, length = targets.shape
  c = min(max(1, chunk // rows), -(-length // 8) * 8)
  pad = (-length) % c
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets, weights = (jnp.pad(x, ((0, 0), (0, pad))) for x in (targets, weights))
  split = lambda x: jnp.moveaxis(x.reshape((rows, -1, c) + x.shape[2:]), 1, 0)  # noqa: E731
  return split(hidden), split(targets), split(weights), length


def head_unchunk(x, length):
  """The inverse of `head_chunks`' split: [n, B, c, ...] -> [B, L, ...]."""
  x = jnp.moveaxis(x, 0, 1)
  return x.reshape((x.shape[0], -1) + x.shape[3:])[:, :length]


def output_token_logprobs(hidden: jax.Array, w_out: jax.Array, targets: jax.Array,
                          chunk: int = 512) -> jax.Array:
  """log p(target) per position for logits = hidden @ w_out, float32 with targets'
  shape; hidden [B, L, d] (or [N, d]), w_out [d, V], targets [B, L] (or [N]).

  About `chunk` rows at a time (`head_chunks`: along the length axis, the batch kept
  whole, so it stays split over devices), each chunk rematerialised (`jax.checkpoint`):
  forward and backward hold the [B, c, V] arrays of one chunk at a time (logits,
  softmax, their gradient), never [B, L, V]. w_out is cast to hidden's dtype inside a
  chunk, so its gradient sums over chunks in w_out's own dtype (float32 parameters of a
  bfloat16 model). For losses that need each row's own log-probability (DPO's
  per-response sums); `output_nll_sums` is the faster path for a plain summed
  cross-entropy."""
  hs, ts, _, length = head_chunks(hidden, targets, chunk=chunk)

  @jax.checkpoint
  def one(h, t):
    # One [B * c, d] x [d, V] product (XLA:CPU runs a batched [B, c, d] one slower).
    logits = jnp.dot(h.reshape(-1, h.shape[-1]), w_out.astype(h.dtype),
                     preferred_element_type=jnp.float32)
    picked = jnp.take_along_axis(logits, t.reshape(-1, 1), axis=-1)[:, 0]
    return (picked - jax.nn.logsumexp(logits, axis=-1)).reshape(t.shape)

  return head_unchunk(jax.lax.map(lambda xs: one(*xs), (hs, ts)), length).reshape(
      targets.shape)


def output_matrix(model, params: Any) -> jax.Array:
  """The [d_model, vocab] matrix that maps final hidden states to logits."""
  if model.config.tie_embeddings:
    return params["embedder"]["embedding"].T
  return params["lm_head"]


def lm_loss_sums(model, params: Any, batch: Mapping[str, jax.Array]):
  """Next-token cross-entropy on the weighted targets of a packed batch.

  The output projection and the softmax run fused, a chunk of tokens at a time
  (`output_nll_sums`); the result equals logits + log-softmax to float32 rounding.
  """
  hidden = model.apply({"params": params}, batch["input_tokens"], batch["positions"],
                       batch["segment_ids"], output="hidden")
  weights = batch["loss_weights"].astype(jnp.float32)
  w_out = output_matrix(model, params).astype(hidden.dtype)
  nll, correct = output_nll_sums(hidden, w_out, batch["target_tokens"], weights,
                                 head_chunk_rows(w_out.shape[-1]))
  return nll, weights.sum(), {"correct": correct}


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
