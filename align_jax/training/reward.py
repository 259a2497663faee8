"""Reward-model losses: pairwise (Bradley-Terry), per-step (process) and outcome BCE.

The model is a `TransformerWithHead` (per-token scores). A sequence's reward is the
score at its last real token; a process reward model is trained on the scores at
given positions (e.g. step separators). Losses return (sum, weight, aux sums) like
every other loss, so they accumulate over micro-batches exactly.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from align_jax.parallel import to_host


def last_token_index(mask: jax.Array) -> jax.Array:
  """Index of the last 1 in each row of a [batch, length] mask (0 for empty rows)."""
  length = mask.shape[-1]
  positions = jnp.arange(length)
  return jnp.max(jnp.where(mask > 0, positions, 0), axis=-1)


def unshift(batch: Mapping[str, jax.Array], prefix: str = "") -> tuple[jax.Array, jax.Array]:
  """Whole sequences (tokens, segment ids) from a shifted one-sequence-per-row batch."""
  inputs, targets = batch[prefix + "input_tokens"], batch[prefix + "target_tokens"]
  segments = batch[prefix + "segment_ids"]
  tokens = jnp.concatenate([inputs[:, :1], targets], axis=1)
  segment_ids = jnp.concatenate([segments[:, :1], segments], axis=1)
  return tokens, segment_ids


def sequence_scores(model, params: Any, tokens: jax.Array, segment_ids: jax.Array,
                    positions: jax.Array | None = None) -> jax.Array:
  """Each row's score at its last real token (segment id > 0), float32 [batch]."""
  scores = model.apply({"params": params}, tokens, positions, segment_ids)
  last = last_token_index(segment_ids > 0)
  return jnp.take_along_axis(scores, last[:, None], axis=1)[:, 0]


def pairwise_loss_sums(model, params: Any, batch: Mapping[str, jax.Array]):
  """-log sigmoid(r_chosen - r_rejected) summed over real pairs, with accuracy/margin sums."""
  chosen = sequence_scores(model, params, *unshift(batch, "chosen_"))
  rejected = sequence_scores(model, params, *unshift(batch, "rejected_"))
  real = (batch["chosen_segment_ids"][:, 0] > 0).astype(jnp.float32)
  margin = chosen - rejected
  loss = -jax.nn.log_sigmoid(margin)
  return (loss * real).sum(), real.sum(), {
      "correct": ((margin > 0).astype(jnp.float32) * real).sum(),
      "margin": (margin * real).sum()}


def process_loss_sums(model, params: Any, batch: Mapping[str, jax.Array]):
  """Binary cross-entropy of per-token scores at labelled positions.

  batch: a kind='process' batch (`align_jax.data.pipeline`): the shifted sequence
  features, `loss_weights` 1 where a label applies (the last token of each step for a
  process reward model, the EOS for an outcome model) and `labels` (0/1) there.
  """
  tokens, segment_ids = unshift(batch)
  scores = model.apply({"params": params}, tokens, None, segment_ids)[:, 1:]
  labels = batch["labels"].astype(jnp.float32)
  mask = batch["loss_weights"].astype(jnp.float32)
  bce = -(labels * jax.nn.log_sigmoid(scores) + (1 - labels) * jax.nn.log_sigmoid(-scores))
  correct = ((scores > 0) == (labels > 0.5)).astype(jnp.float32)
  return (bce * mask).sum(), mask.sum(), {"correct": (correct * mask).sum()}


class SequenceScorer:
  """Scores token sequences with a reward model, compiled once: at each one's last token
  (`__call__`) or at every token (`token_scores`, e.g. a process reward model's step
  ends).

  Sequences are right-padded into batches of `batch_size` rows whose length is a
  multiple of 16, so few shapes compile; with a mesh the rows are split over its
  batch axes.
  """

  def __init__(self, model, params: Any, batch_size: int = 64, mesh=None, rules=None):
    self.model, self.params, self.batch_size = model, params, batch_size
    self.mesh, self.rules = mesh, rules
    self._score = jax.jit(lambda p, t, s: sequence_scores(model, p, t, s))
    self._score_tokens = jax.jit(lambda p, t, s: model.apply({"params": p}, t, None, s))

  def _place(self, x: np.ndarray):
    if self.mesh is None:
      return x
    from align_jax.parallel.partitioning import logical_sharding
    return jax.device_put(x, logical_sharding(("act_batch", None), self.rules, self.mesh,
                                              x.shape))

  def _batches(self, sequences):
    """(start, chunk, placed tokens, placed segment ids) per batch of sequences."""
    for start in range(0, len(sequences), self.batch_size):
      chunk = [np.asarray(x) for x in sequences[start:start + self.batch_size]]
      length = -(-max(len(x) for x in chunk) // 16) * 16
      tokens = np.zeros((self.batch_size, length), np.int32)
      segments = np.zeros((self.batch_size, length), np.int32)
      for i, x in enumerate(chunk):
        tokens[i, :len(x)], segments[i, :len(x)] = x, 1
      yield start, chunk, self._place(tokens), self._place(segments)

  def __call__(self, sequences) -> np.ndarray:
    out = np.zeros(len(sequences), np.float32)
    for start, chunk, tokens, segments in self._batches(sequences):
      scores = self._score(self.params, tokens, segments)
      out[start:start + len(chunk)] = to_host(scores)[:len(chunk)]
    return out

  def token_scores(self, sequences) -> list[np.ndarray]:
    """Every token's score, float32 [len(sequence)] per sequence."""
    out: list[np.ndarray] = []
    for _, chunk, tokens, segments in self._batches(sequences):
      scores = to_host(self._score_tokens(self.params, tokens, segments))
      out += [scores[i, :len(x)].astype(np.float32) for i, x in enumerate(chunk)]
    return out


def score_sequences(model, params: Any, sequences, batch_size: int = 64) -> np.ndarray:
  """A reward model's score at the last token of each token sequence (float32 [N])."""
  return SequenceScorer(model, params, batch_size)(sequences)


def fit_normalization(scores: np.ndarray) -> dict[str, float]:
  """Gain and bias that map scores of reference-policy samples to mean 0, std 1."""
  scores = np.asarray(scores, np.float64)
  std = float(scores.std())
  gain = 1.0 / std if std > 0 else 1.0
  return {"gain": gain, "bias": -float(scores.mean()) * gain}
