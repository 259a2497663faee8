"""Sampling settings and the logit processing they imply.

`SamplingConfig` is what a user (or a gin file) sets; `process_logits` turns a step's
raw logits into the distribution sampled from, applying in order: logit bias, the
ban on stop tokens before `min_new_tokens`, temperature, top-k, top-p. Everything
here is traced inside the compiled decode loop.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to sample continuations.

  temperature: 0 means greedy (argmax); otherwise logits are divided by it.
  top_k: keep the k most likely tokens (0 keeps all).
  top_p: keep the smallest set of most likely tokens whose mass reaches p (1 keeps all).
  logit_bias: (token id, bias) pairs added to the logits, e.g. (id, -100.0) bans a token.
  min_new_tokens: stop tokens (EOS included) are banned for this many steps.
  stop_token_ids: tokens that end a continuation, besides the vocabulary's EOS.
  stop_strings: texts that end a continuation; the text and tokens are cut right before
    the first occurrence (e.g. "\\n\\n" to stop at the first blank line).
  num_samples: continuations per prompt; they share one prefill.
  repetition_penalty: every token already in the prompt or the continuation has its
    logit divided by this when positive, multiplied when negative (1 is off; the
    semantics of transformers' `repetition_penalty`).
  frequency_penalty, presence_penalty: subtracted from a token's logit per time it
    occurs in the continuation so far, and once if it occurs at all (0 is off; the
    OpenAI API's semantics: the prompt does not count).
  no_repeat_ngram_size: n > 0 bans every token that would repeat an n-gram of the prompt
    and continuation so far (transformers' `no_repeat_ngram_size`).
  The penalties act on the model's logits, before the logit bias, temperature and
  truncation; they all run inside the compiled decode loop.
  """
  max_new_tokens: int = 128
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  logit_bias: tuple[tuple[int, float], ...] = ()
  min_new_tokens: int = 0
  stop_token_ids: tuple[int, ...] = ()
  stop_strings: tuple[str, ...] = ()
  num_samples: int = 1
  repetition_penalty: float = 1.0
  frequency_penalty: float = 0.0
  presence_penalty: float = 0.0
  no_repeat_ngram_size: int = 0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
    if self.repetition_penalty <= 0:
      raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
    if self.no_repeat_ngram_size < 0:
      raise ValueError(f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")
    # gin and JSON hand over lists; keep the config hashable.
    object.__setattr__(self, "logit_bias",
                       tuple((int(t), float(b)) for t, b in self.logit_bias))
    object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
    object.__setattr__(self, "stop_strings", tuple(self.stop_strings))

  @property
  def greedy(self) -> bool:
    return self.temperature == 0

  @property
  def counts_tokens(self) -> bool:
    """Whether sampling needs per-row token counts (a penalty on repeated tokens)."""
    return (self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0)

  def replace(self, **changes) -> "SamplingConfig":
    return dataclasses.replace(self, **changes)


def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
  """Logits outside the k largest of each row set to -inf."""
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits < kth, NEG_INF, logits)


def top_p_mask(logits: jax.Array, p: float) -> jax.Array:
  """Logits outside each row's nucleus of mass p set to -inf (the top token always stays)."""
  if p >= 1.0:
    return logits
  sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep = mass_before < p
  cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits < cutoff, NEG_INF, logits)


def token_counts(tokens: jax.Array, valid: jax.Array, vocab_size: int) -> jax.Array:
  """[batch, vocab] int32: how often each token occurs in each row's valid positions."""
  rows = jnp.arange(tokens.shape[0])[:, None]
  return jnp.zeros((tokens.shape[0], vocab_size), jnp.int32).at[rows, tokens].add(
      valid.astype(jnp.int32))


def ngram_bans(history: jax.Array, start: jax.Array, length: jax.Array, n: int,
               vocab_size: int) -> jax.Array:
  """[batch, vocab] bool: the tokens that would complete an n-gram already in a row.

  history: [batch, T] tokens; a row's tokens are history[b, start[b]:length] (`length` is
  one scalar for the batch: prompts are left-padded to one width). The next token x is
  banned when the row's last n-1 tokens followed by x occur anywhere in it.
  """
  batch, total = history.shape
  width = total - n + 1
  index = jnp.arange(width)[None, :]
  match = (index >= start[:, None]) & (index + n - 1 < length)
  match &= (length - (n - 1) >= start)[:, None]  # the row has n-1 tokens to match
  if n > 1:
    last = jax.lax.dynamic_slice_in_dim(history, length - (n - 1), n - 1, axis=1)
    for k in range(n - 1):
      match &= history[:, k:k + width] == last[:, k:k + 1]
  follow = history[:, n - 1:n - 1 + width]
  return token_counts(follow, match, vocab_size) > 0


def apply_penalties(logits: jax.Array, config: SamplingConfig, seen: jax.Array | None,
                    counts: jax.Array | None, banned: jax.Array | None) -> jax.Array:
  """Repetition, frequency and presence penalties and n-gram bans on [batch, vocab]
  float32 logits. seen: [batch, vocab] bool (in the prompt or continuation); counts:
  [batch, vocab] int32 (in the continuation); banned: `ngram_bans`."""
  if config.repetition_penalty != 1.0:
    penalized = jnp.where(logits > 0, logits / config.repetition_penalty,
                          logits * config.repetition_penalty)
    logits = jnp.where(seen, penalized, logits)
  if config.frequency_penalty != 0.0 or config.presence_penalty != 0.0:
    logits = (logits - config.frequency_penalty * counts
              - config.presence_penalty * (counts > 0))
  if banned is not None:
    logits = jnp.where(banned, NEG_INF, logits)
  return logits


def process_logits(logits: jax.Array, step: jax.Array, config: SamplingConfig,
                   stop_mask: jax.Array) -> jax.Array:
  """The logits a step samples from ([batch, vocab] float32).

  `stop_mask` is a boolean [vocab] marking stop tokens (banned before min_new_tokens).
  With temperature 0 the temperature step is skipped (greedy takes the argmax).
  """
  logits = logits.astype(jnp.float32)
  if config.logit_bias:
    ids = jnp.asarray([t for t, _ in config.logit_bias], jnp.int32)
    bias = jnp.asarray([b for _, b in config.logit_bias], jnp.float32)
    logits = logits.at[:, ids].add(bias)
  if config.min_new_tokens > 0:
    logits = jnp.where((step < config.min_new_tokens) & stop_mask[None, :], NEG_INF, logits)
  if config.temperature > 0:
    logits = logits / config.temperature
  logits = top_k_mask(logits, config.top_k)
  return top_p_mask(logits, config.top_p)


def sample_tokens(row_keys: jax.Array, logits: jax.Array, greedy: bool) -> jax.Array:
  """One token per row: argmax, or a Gumbel-max draw with each row's own key."""
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  gumbel = jax.vmap(lambda k: jax.random.gumbel(k, logits.shape[-1:], jnp.float32))(row_keys)
  return jnp.argmax(logits + gumbel, axis=-1).astype(jnp.int32)
