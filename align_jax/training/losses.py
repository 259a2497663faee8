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
from align_jax.parallel.partitioning import (current_context, logical_to_spec,
                                             with_logical_constraint)

LossSums = Callable[[Any, Mapping[str, jax.Array]], tuple[jax.Array, jax.Array, dict]]


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """-log p(target) per position, without materialising log-softmax over the vocabulary."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - picked


def batch_groups(rows: int) -> int:
  """How many parts the batch axis of `rows` rows ("act_batch") is split into over the
  devices of the current `sharding_context` (1 outside one)."""
  ctx = current_context()
  if ctx is None:
    return 1
  spec = logical_to_spec(("act_batch",), ctx.rules, ctx.mesh, (rows,))
  axes = spec[0] if len(spec) else None
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  return int(np.prod([ctx.mesh.shape[a] for a in axes], dtype=np.int64))


# A per-group head weight [groups, d, V]: groups split like the batch, the vocabulary
# like the logits' (over "tensor" by default), so tensor parallelism keeps it split.
_GROUP_WEIGHT_AXES = ("act_batch", "act_embed", "act_vocab")


def _group_weight(w_out, groups: int):
  """w_out [d, V] as [groups, d, V], one copy per part of the batch and split like it:
  each device then sums its part of the head's gradient over the chunks alone, and the
  copies are summed once, after the chunks (a replicated w_out's gradient would be
  all-reduced once a chunk)."""
  return with_logical_constraint(jnp.broadcast_to(w_out, (groups,) + w_out.shape),
                                 _GROUP_WEIGHT_AXES)


def _grouped(x, groups: int):
  """A chunk [B, c, ...] as [groups, B / groups * c, ...] (each part's rows together)."""
  return x.reshape((groups, -1) + x.shape[2:])


def _chunk_logits(h, wg):
  """float32 logits [groups, rows, V] of a grouped chunk h [groups, rows, d]. One
  device's part is one [rows, d] x [d, V] product (XLA:CPU runs a [B, c, d] one
  slower)."""
  if wg.shape[0] == 1:
    return jnp.dot(h[0], wg[0].astype(h.dtype), preferred_element_type=jnp.float32)[None]
  return jnp.einsum("grd,gdv->grv", h, wg.astype(h.dtype),
                    preferred_element_type=jnp.float32)


def _head_chunk_stats(h, wg, t, w):
  """A grouped chunk's logits, log-sum-exps and weighted -log p / argmax-hit sums."""
  logits = _chunk_logits(h, wg)
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
  correct = (jnp.argmax(logits, axis=-1) == t).astype(jnp.float32)
  return logits, lse, jnp.sum((lse - picked) * w), jnp.sum(correct * w)


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
  so a batch split over devices stays split: each device computes its own rows' head,
  and sums its part of w_out's gradient over the chunks before the devices' parts are
  summed (`_group_weight`).
  """
  hs, ts, ws, _ = head_chunks(hidden, targets, weights, chunk)
  groups = batch_groups(hs.shape[1])
  wg = _group_weight(w_out, groups)

  def body(carry, xs):
    h, t, w = (_grouped(x, groups) for x in xs)
    _, _, nll, correct = _head_chunk_stats(h, wg, t, w)
    return (carry[0] + nll, carry[1] + correct), None

  zero = jnp.zeros((), jnp.float32)
  (nll, correct), _ = jax.lax.scan(body, (zero, zero), (hs, ts, ws))
  return nll, correct


def _output_nll_fwd(hidden, w_out, targets, weights, chunk):
  hs, ts, ws, length = head_chunks(hidden, targets, weights, chunk)
  groups = batch_groups(hs.shape[1])
  wg = _group_weight(w_out, groups)
  split = lambda x: with_logical_constraint(x, _GROUP_WEIGHT_AXES)  # noqa: E731

  def body(carry, xs):
    nll_sum, correct_sum, grad_wg = carry
    h, t, w = (_grouped(x, groups) for x in xs)
    logits, lse, nll, correct = _head_chunk_stats(h, wg, t, w)
    d_logits = (jnp.exp(logits - lse[..., None])
                - jax.nn.one_hot(t, logits.shape[-1], dtype=jnp.float32)) * w[..., None]
    d_logits = d_logits.astype(w_out.dtype)
    grad_wg = split(grad_wg + jnp.einsum("grd,grv->gdv", h, d_logits,
                                         preferred_element_type=jnp.float32))
    grad_h = jnp.einsum("grv,gdv->grd", d_logits, wg.astype(d_logits.dtype),
                        preferred_element_type=jnp.float32)
    return ((nll_sum + nll, correct_sum + correct, grad_wg),
            grad_h.astype(hidden.dtype).reshape(xs[0].shape))

  zero = jnp.zeros((), jnp.float32)
  init = (zero, zero, split(jnp.zeros((groups,) + w_out.shape, jnp.float32)))
  (nll, correct, grad_wg), grad_h = jax.lax.scan(body, init, (hs, ts, ws))
  grad_h = head_unchunk(grad_h, length).reshape(hidden.shape)
  return (nll, correct), (grad_h, grad_wg.sum(0).astype(w_out.dtype), targets, weights)


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
  chunks along the length axis, [n, B, c, d] and [n, B, c], with about chunk // B
  positions (at least one; a short row is one chunk; the n chunks evened out so that
  the last one is padded by fewer than n positions), and L. Every chunk holds every row
  of the batch, so the batch axis keeps its sharding (and a device's chunk has chunk / D
  rows on D data-parallel devices). weights None: zeros."""
  if weights is None:
    weights = jnp.zeros(targets.shape, jnp.float32)
  if hidden.ndim == 2:
    hidden, targets, weights = hidden[None], targets[None], weights[None]
  rows, length = targets.shape
  c = min(max(1, chunk // rows), -(-length // 8) * 8)
  c = -(-length // -(-length // c))   # as many chunks, evened out: less padding
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


def chunked_head(hidden: jax.Array, w_out: jax.Array, targets: jax.Array, chunk: int,
                 per_token: Callable[[jax.Array, jax.Array], tuple[jax.Array, ...]]
                 ) -> tuple[jax.Array, ...]:
  """`per_token(logits, targets)` over logits = hidden @ w_out, about `chunk` rows at a
  time: hidden [B, L, d] (or [N, d]), w_out [d, V], targets [B, L] (or [N]);
  per_token maps float32 logits [..., V] and targets [...] to arrays of targets' shape,
  and the results come back with targets' shape.

  Chunks run along the length axis with the whole batch in each (`head_chunks`, so a
  batch split over devices stays split), each rematerialised (`jax.checkpoint`): forward
  and backward hold one chunk's [B, c, V] arrays (logits, softmax, their gradient),
  never [B, L, V]. w_out is cast to hidden's dtype inside a chunk, so its gradient sums
  over chunks in w_out's own dtype (float32 parameters of a bfloat16 model), per device
  until after the chunks (`_group_weight`)."""
  hs, ts, _, length = head_chunks(hidden, targets, chunk=chunk)
  groups = batch_groups(hs.shape[1])
  wg = _group_weight(w_out, groups)

  @jax.checkpoint
  def one(h, t):
    outs = per_token(_chunk_logits(_grouped(h, groups), wg), _grouped(t, groups))
    return tuple(o.reshape(t.shape) for o in outs)

  outs = jax.lax.map(lambda xs: one(*xs), (hs, ts))
  return tuple(head_unchunk(o, length).reshape(targets.shape) for o in outs)


def output_token_logprobs(hidden: jax.Array, w_out: jax.Array, targets: jax.Array,
                          chunk: int = 512) -> jax.Array:
  """log p(target) per position for logits = hidden @ w_out, float32 with targets'
  shape, a chunk at a time (`chunked_head`). For losses that need each row's own
  log-probability (DPO's per-response sums); `output_nll_sums` is the faster path for a
  plain summed cross-entropy."""
  def logprob(logits, t):
    picked = jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
    return (picked - jax.nn.logsumexp(logits, axis=-1),)

  return chunked_head(hidden, w_out, targets, chunk, logprob)[0]


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
