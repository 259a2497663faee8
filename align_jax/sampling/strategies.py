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
    # gin and JSON hand over lists; keep the config hashable.
    object.__setattr__(self, "logit_bias",
                       tuple((int(t), float(b)) for t, b in self.logit_bias))
    object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
    object.__setattr__(self, "stop_strings", tuple(self.stop_strings))

  @property
  def greedy(self) -> bool:
    return self.temperature == 0

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
