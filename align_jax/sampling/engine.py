"""The generation engine: compiled prefill + KV-cache decode, and scoring.

One engine serves every method. Prompts are left-padded into length buckets and
batched to a fixed batch size, so each (batch, bucket, settings) shape compiles once.
The samples of one prompt share its prefill: a batch prefills only its distinct
prompts and copies their KV cache to the rows that continue them. The decode loop is a
`jax.lax.while_loop` that stops as soon as every row has finished. Each row draws its
randomness from its own key, folded from the caller's key and the row's global index,
so a row's output depends on its prompt and key only, never on which other prompts
share its batch or how much padding it got.
"""

from __future__ import annotations

import dataclasses
import contextlib
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import seqio
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from align_jax.data.tasks import encode_prompt
from align_jax.models.transformer import Transformer, cache_logical_axes, init_cache
from align_jax.parallel.partitioning import (DEFAULT_RULES, LogicalRules, logical_sharding,
                                             sharding_context, with_logical_constraint)
from align_jax.sampling.strategies import (NEG_INF, SamplingConfig, apply_penalties, ngram_bans,
                                          process_logits, sample_tokens, token_counts)


@dataclasses.dataclass
class GenerationResult:
  """Continuations of N prompts, n samples each.

  tokens: int32 [N, n, max_new_tokens], pad after each length; a stop token (EOS)
    that ended a row is included. lengths: [N, n]. logprobs: log-probabilities of the
    chosen tokens under the distribution sampled from (after bias, temperature,
    top-k/top-p; 0 past the length). model_logprobs: the same under the unmodified
    model (temperature 1). finished: [N, n] ended by a stop token or stop string
    (False when cut by max_new_tokens). texts: decoded continuations without the stop
    token or stop string (when the sampler has a vocabulary).
  """
  tokens: np.ndarray
  lengths: np.ndarray
  logprobs: np.ndarray
  model_logprobs: np.ndarray
  finished: np.ndarray
  texts: list[list[str]] | None = None

  @property
  def num_generated_tokens(self) -> int:
    return int(self.lengths.sum())


def default_length_buckets(max_length: int, smallest: int = 16) -> tuple[int, ...]:
  """Padded prompt lengths: smallest, twice that, ... below max_length, then max_length."""
  buckets, size = [], smallest
  while size < max_length:
    buckets.append(size)
    size *= 2
  return tuple(buckets) + (max_length,)


def token_logprobs(model: Transformer, params: Any, tokens: jax.Array,
                   segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
                   temperature: float = 1.0) -> jax.Array:
  """log p(tokens[:, t] | tokens[:, :t]) for t >= 1, as float32 [batch, length - 1].

  Logits are divided by `temperature` first, so PPO can recompute rollout
  log-probabilities with the temperature it sampled with.
  """
  logits = model.apply({"params": params}, tokens, positions, segment_ids)[:, :-1]
  if temperature != 1.0:
    logits = logits / temperature
  logprobs = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(logprobs, tokens[:, 1:, None], axis=-1)[..., 0]


class Sampler:
  """Generates from and scores with one model.

  Args:
    model: the `Transformer`.
    params: its parameters (already placed/sharded).
    vocab: a seqio vocabulary, for text prompts, decoded texts and stop strings.
    mesh, rules: shard the batch over `data`/`fsdp` and the model as the params are.
    batch_size: rows per compiled call (prompts x samples are split into such batches).
    length_buckets: allowed padded prompt lengths (default: powers of two up to
      the model's max_seq_len).
    add_bos: put BOS before text prompts (`align_jax.data.encode_prompt`, the BOS policy
      of training data and the generate job); token-id prompts are used as they are.
    share_prefill: prefill each distinct prompt of a batch once for all its samples
      (False: every row prefills its own copy, the peer `benchmarks.shared_prefill`
      measures against).

  A model whose vocab_size pads the vocabulary (`align_jax.data.check_vocab_size`) never
  samples the padding ids: their logits are masked, as no text could decode them.
  """

  def __init__(self, model: Transformer, params: Any, *, vocab: seqio.Vocabulary | None = None,
               mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES,
               batch_size: int = 16, length_buckets: Sequence[int] | None = None,
               add_bos: bool = True, share_prefill: bool = True):
    self.model = model
    self.share_prefill = share_prefill
    self.params = params
    self.vocab = vocab
    self.add_bos = add_bos
    self.mesh = mesh
    self.rules = tuple(rules)
    self.batch_size = batch_size
    config = model.config
    self.length_buckets = tuple(sorted(length_buckets or default_length_buckets(config.max_seq_len)))
    vocab_pad = getattr(vocab, "pad_id", None) if vocab is not None else None
    self.pad_id = int(next(i for i in (config.pad_id, vocab_pad, 0) if i is not None))
    vocab_eos = getattr(vocab, "eos_id", None) if vocab is not None else None
    self.eos_id = next((int(i) for i in (config.eos_id, vocab_eos) if i is not None), None)
    # Ids past the vocabulary (a padded embedding table) are never sampled.
    vocab_size = int(vocab.vocab_size) if vocab is not None else config.vocab_size
    self.sampled_vocab_size = min(vocab_size, config.vocab_size)
    self._single_token_stops: dict[tuple[str, ...], tuple[int, ...]] = {}
    # Outputs are small; replicate them so every host can read them (multi-host meshes).
    replicated = {} if mesh is None else {"out_shardings": NamedSharding(mesh, PartitionSpec())}
    self._generate_jit = jax.jit(self._generate_batch, static_argnames=("sampling", "stop_ids"),
                                 **replicated)
    self._score_jit = jax.jit(functools.partial(token_logprobs, model),
                              static_argnames=("temperature",), **replicated)

  # ------------------------------------------------------------------------------
  # Generation

  def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], sampling: SamplingConfig,
               key: jax.Array, progress: Callable[[int, int], None] | None = None
               ) -> GenerationResult:
    """Continues every prompt `sampling.num_samples` times.

    Prompts are texts (BOS and the text's tokens, see `align_jax.data.encode_prompt`;
    render chat templates before calling) or lists of token ids, used as they are.
    `progress(rows_done, tokens_done)` is called after each compiled batch.
    """
    prompt_tokens = self._encode_prompts(prompts)
    n, max_new = sampling.num_samples, sampling.max_new_tokens
    for i, p in enumerate(prompt_tokens):
      if not p:
        raise ValueError(f"prompt {i} is empty; a prompt needs at least one token (e.g. BOS)")
      if len(p) + max_new > self.model.config.max_seq_len:
        raise ValueError(f"prompt {i} has {len(p)} tokens; with max_new_tokens={max_new} it "
                         f"exceeds the model's max_seq_len={self.model.config.max_seq_len}")
    stop_ids = self._stop_ids(sampling)

    rows = [(i, s) for i in range(len(prompt_tokens)) for s in range(n)]
    order = sorted(range(len(rows)), key=lambda r: len(prompt_tokens[rows[r][0]]))
    shape = (len(prompt_tokens), n, max_new)
    tokens = np.full(shape, self.pad_id, np.int32)
    logprobs = np.zeros(shape, np.float32)
    model_logprobs = np.zeros(shape, np.float32)
    lengths = np.zeros(shape[:2], np.int32)
    finished = np.zeros(shape[:2], bool)
    tokens_done = 0
    for start in range(0, len(order), self.batch_size):
      chunk = [rows[r] for r in order[start:start + self.batch_size]]
      batch_prompts = [prompt_tokens[i] for i, _ in chunk]
      row_ids = [i * n + s for i, s in chunk]
      out = self._run_batch(batch_prompts, row_ids, sampling, stop_ids, key)
      for j, (i, s) in enumerate(chunk):
        tokens[i, s], logprobs[i, s], model_logprobs[i, s] = out[0][j], out[1][j], out[2][j]
        lengths[i, s], finished[i, s] = out[3][j], out[4][j]
      tokens_done += int(out[3][:len(chunk)].sum())
      if progress is not None:
        progress(start + len(chunk), tokens_done)

    result = GenerationResult(tokens, lengths, logprobs, model_logprobs, finished)
    if self.vocab is not None:
      self._decode_and_stop(result, sampling.stop_strings, self._hard_stop_ids(sampling))
    return result

  def prefill_rows(self, num_samples: int) -> int:
    """Distinct prompts one batch prefills. `generate` lays out each prompt's
    `num_samples` rows consecutively and cuts batches every `batch_size` rows, so this
    is the most groups of n rows any such batch meets (B/n when n divides B)."""
    n, b = num_samples, self.batch_size
    return min(b, max(((k + 1) * b - 1) // n - (k * b) // n + 1 for k in range(n)))

  def _run_batch(self, prompts: list[list[int]], row_ids: list[int], sampling: SamplingConfig,
                 stop_ids: tuple[int, ...], key: jax.Array):
    real = len(prompts)
    longest = max(len(p) for p in prompts)
    bucket = next((b for b in self.length_buckets if b >= longest), longest)
    # Rows of one prompt are consecutive (`generate` sorts rows stably by length).
    distinct, source = [], np.zeros((self.batch_size,), np.int32)
    for j, p in enumerate(prompts):
      if not distinct or (p is not prompts[j - 1] and p != prompts[j - 1]):
        distinct.append(p)
      source[j] = len(distinct) - 1
    width = self.prefill_rows(sampling.num_samples)
    if not self.share_prefill or width >= self.batch_size or len(distinct) > width:
      # Prefill every row in place (no copy of the cache).
      distinct, width = prompts, self.batch_size
      source = np.arange(self.batch_size, dtype=np.int32)
    batch = np.full((width, bucket), self.pad_id, np.int32)
    pad_counts = np.full((width,), bucket - 1, np.int32)
    for j, p in enumerate(distinct):
      batch[j, bucket - len(p):] = p
      pad_counts[j] = bucket - len(p)
    active = np.zeros((self.batch_size,), bool)
    active[:real] = True
    ids = np.zeros((self.batch_size,), np.uint32)
    ids[:real] = row_ids
    row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.asarray(ids))
    args = [batch, pad_counts, source, active]
    if self.mesh is not None:
      args = [jax.device_put(a, logical_sharding(("act_batch",) + (None,) * (a.ndim - 1),
                                                 self.rules, self.mesh, a.shape)) for a in args]
    with self._context():
      out = self._generate_jit(self.params, *args, row_keys, sampling=sampling,
                               stop_ids=stop_ids)
    return [np.asarray(x) for x in jax.device_get(out)]

  def _context(self):
    if self.mesh is None:
      return contextlib.nullcontext()
    return sharding_context(self.mesh, self.rules)

  def _generate_batch(self, params, prompt, pad_counts, source, active, row_keys, *,
                      sampling: SamplingConfig, stop_ids: tuple[int, ...]):
    """Prefills the distinct prompts [width, bucket], gives row r the cache and next-token
    logits of prompt source[r], then decodes every row."""
    model, config = self.model, self.model.config
    prompt_len = prompt.shape[1]
    batch = active.shape[0]
    max_new = sampling.max_new_tokens
    axes = cache_logical_axes(config)
    constrain = lambda c: jax.tree.map(with_logical_constraint, c, axes,
                                       is_leaf=lambda x: isinstance(x, jax.Array))
    cache = constrain(init_cache(config, prompt.shape[0], prompt_len + max_new))
    slots = jnp.arange(prompt_len, dtype=jnp.int32)[None, :]
    segment_ids = (slots >= pad_counts[:, None]).astype(jnp.int32)
    positions = jnp.maximum(slots - pad_counts[:, None], 0)
    hidden, cache = model.apply({"params": params}, prompt, positions, segment_ids, cache=cache,
                                output="hidden")
    logits = model.apply({"params": params}, hidden[:, -1:],
                         method=Transformer.logits_from_hidden)[:, 0]
    if prompt.shape[0] != batch:  # shared prefill: copy each prompt's cache to its rows
      cache = constrain(jax.tree.map(
          lambda x, names: x if x.ndim == 0 else jnp.take(x, source,
                                                          axis=names.index("cache_batch")),
          cache, axes, is_leaf=lambda x: isinstance(x, jax.Array)))
      logits, pad_counts = logits[source], pad_counts[source]
    stop_mask = jnp.zeros((config.vocab_size,), bool)
    if stop_ids:
      stop_mask = stop_mask.at[jnp.asarray(stop_ids)].set(True)
    padded = self.sampled_vocab_size < config.vocab_size
    real_ids = jnp.arange(config.vocab_size) < self.sampled_vocab_size
    # Penalties on repeats see each row's own prompt (its source's, without the padding).
    ngram = sampling.no_repeat_ngram_size
    row_prompt = prompt[source] if prompt.shape[0] != batch else prompt
    in_prompt = slots >= pad_counts[:, None]
    prompt_counts = (token_counts(row_prompt, in_prompt, config.vocab_size)
                     if sampling.repetition_penalty != 1.0 else None)

    def cond(state):
      return (state["step"] < max_new) & ~jnp.all(state["finished"])

    def body(state):
      step, logits = state["step"], state["logits"]
      allowed = jnp.where(real_ids, logits, NEG_INF) if padded else logits
      if sampling.counts_tokens or ngram:
        counts = state.get("counts")
        seen = (prompt_counts + counts > 0) if prompt_counts is not None else None
        banned = (ngram_bans(state["history"], pad_counts, prompt_len + step, ngram,
                             config.vocab_size) if ngram else None)
        allowed = apply_penalties(allowed.astype(jnp.float32), sampling, seen, counts, banned)
      processed = process_logits(allowed, step, sampling, stop_mask)
      keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
      token = sample_tokens(keys, processed, sampling.greedy)
      pick = lambda lp: jnp.take_along_axis(lp, token[:, None], axis=-1)[:, 0]
      live = ~state["finished"]
      token = jnp.where(live, token, self.pad_id)
      sample_lp = jnp.where(live, pick(jax.nn.log_softmax(processed, axis=-1)), 0.0)
      model_lp = jnp.where(live, pick(jax.nn.log_softmax(logits, axis=-1)), 0.0)
      next_logits, cache = model.apply(
          {"params": params}, token[:, None], state["positions"][:, None],
          jnp.ones((batch, 1), jnp.int32), cache=state["cache"])
      extra = {}
      if "counts" in state:
        extra["counts"] = state["counts"].at[jnp.arange(batch), token].add(
            live.astype(jnp.int32))
      if "history" in state:
        extra["history"] = state["history"].at[:, prompt_len + step].set(token)
      return {
          **extra,
          "step": step + 1, "cache": cache, "logits": next_logits[:, 0],
          "positions": state["positions"] + 1,
          "tokens": state["tokens"].at[:, step].set(token),
          "logprobs": state["logprobs"].at[:, step].set(sample_lp),
          "model_logprobs": state["model_logprobs"].at[:, step].set(model_lp),
          "lengths": state["lengths"] + live.astype(jnp.int32),
          "finished": state["finished"] | (live & stop_mask[token]),
      }

    state = {
        "step": jnp.zeros((), jnp.int32), "cache": cache, "logits": logits,
        "positions": (prompt_len - pad_counts).astype(jnp.int32),
        "tokens": jnp.full((batch, max_new), self.pad_id, jnp.int32),
        "logprobs": jnp.zeros((batch, max_new), jnp.float32),
        "model_logprobs": jnp.zeros((batch, max_new), jnp.float32),
        "lengths": jnp.zeros((batch,), jnp.int32), "finished": ~active,
    }
    if sampling.counts_tokens:
      state["counts"] = jnp.zeros((batch, config.vocab_size), jnp.int32)
    if ngram:
      state["history"] = jnp.concatenate(
          [row_prompt, jnp.full((batch, max_new), self.pad_id, jnp.int32)], axis=1)
    state = jax.lax.while_loop(cond, body, state)
    return (state["tokens"], state["logprobs"], state["model_logprobs"], state["lengths"],
            state["finished"] & active)

  def _hard_stop_ids(self, sampling: SamplingConfig) -> set[int]:
    """EOS ids (the model's and the vocabulary's) and the configured stop tokens: they
    end a row and are left out of its text."""
    ids = set(sampling.stop_token_ids) | set(self.model.config.extra_eos_ids)
    ids.update(i for i in (self.eos_id, getattr(self.vocab, "eos_id", None)) if i is not None)
    ids.update(getattr(self.vocab, "stop_ids", ()) or ())
    return {int(i) for i in ids}

  def _stop_ids(self, sampling: SamplingConfig) -> tuple[int, ...]:
    """Tokens that end a row in the decode loop: hard stops and stop-string tokens."""
    ids = self._hard_stop_ids(sampling)
    if sampling.stop_strings:
      ids.update(self._tokens_containing(sampling.stop_strings))
    return tuple(sorted(ids))

  def _tokens_containing(self, stop_strings: tuple[str, ...]) -> tuple[int, ...]:
    """Single tokens whose text holds a stop string: generation may stop right there."""
    if self.vocab is None:
      raise ValueError("stop_strings need a vocabulary; pass vocab= to the Sampler")
    if stop_strings not in self._single_token_stops:
      found = []
      for token in range(self.vocab.vocab_size):
        try:
          piece = self.vocab.decode([token])
        except Exception:  # noqa: BLE001  (ids a vocabulary cannot decode on their own)
          continue
        if any(s in piece for s in stop_strings):
          found.append(token)
      self._single_token_stops[stop_strings] = tuple(found)
    return self._single_token_stops[stop_strings]

  def _decode_and_stop(self, result: GenerationResult, stop_strings: tuple[str, ...],
                       stop_set: set[int]) -> None:
    """Decodes texts; cuts rows at their first stop string (text, tokens, logprobs)."""
    texts = []
    for i in range(result.tokens.shape[0]):
      row_texts = []
      for s in range(result.tokens.shape[1]):
        length = int(result.lengths[i, s])
        ids = result.tokens[i, s, :length].tolist()
        body = ids[:-1] if ids and ids[-1] in stop_set and result.finished[i, s] else ids
        text = self.vocab.decode(body)
        cut = min((text.find(x) for x in stop_strings if x in text), default=-1)
        if cut >= 0:
          text = text[:cut]
          keep = next(k for k in range(1, len(body) + 1)
                      if any(x in self.vocab.decode(body[:k]) for x in stop_strings))
          result.tokens[i, s, keep:] = self.pad_id
          result.logprobs[i, s, keep:] = 0.0
          result.model_logprobs[i, s, keep:] = 0.0
          result.lengths[i, s] = keep
          result.finished[i, s] = True
        row_texts.append(text)
      texts.append(row_texts)
    result.texts = texts

  def _encode_prompts(self, prompts, add_bos: bool = True) -> list[list[int]]:
    encoded = []
    for i, p in enumerate(prompts):
      if isinstance(p, str):
        if self.vocab is None:
          raise ValueError(f"prompt {i} is text but the Sampler has no vocabulary")
        encoded.append(encode_prompt(self.vocab, p, add_bos=add_bos and self.add_bos))
      else:
        encoded.append([int(t) for t in p])
    return encoded

  # ------------------------------------------------------------------------------
  # Scoring

  def score(self, prompts: Sequence[Sequence[int]] | Sequence[str],
            continuations: Sequence[Sequence[int]] | Sequence[str],
            temperature: float = 1.0) -> list[np.ndarray]:
    """Per-token log-probabilities of each continuation after its prompt (float32 [len]).

    Text prompts are encoded as `generate` encodes them (BOS first); text continuations
    are their tokens alone."""
    if len(prompts) != len(continuations):
      raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    prompt_tokens = self._encode_prompts(prompts)
    cont_tokens = self._encode_prompts(continuations, add_bos=False)
    results: list[np.ndarray | None] = [None] * len(prompt_tokens)
    totals = [len(p) + len(c) for p, c in zip(prompt_tokens, cont_tokens)]
    for i, (p, c) in enumerate(zip(prompt_tokens, cont_tokens)):
      if not p:
        raise ValueError(f"prompt {i} is empty; scoring needs at least one context token")
      if totals[i] > self.model.config.max_seq_len:
        raise ValueError(f"prompt {i} + continuation have {totals[i]} tokens, more than "
                         f"max_seq_len={self.model.config.max_seq_len}")
    order = sorted(range(len(totals)), key=totals.__getitem__)
    for start in range(0, len(order), self.batch_size):
      chunk = order[start:start + self.batch_size]
      longest = max(totals[i] for i in chunk)
      bucket = next((b for b in self.length_buckets if b >= longest), longest)
      tokens = np.full((self.batch_size, bucket), self.pad_id, np.int32)
      segments = np.zeros((self.batch_size, bucket), np.int32)
      for j, i in enumerate(chunk):
        row = prompt_tokens[i] + cont_tokens[i]
        tokens[j, :len(row)] = row
        segments[j, :len(row)] = 1
      args = [tokens, segments]
      if self.mesh is not None:
        args = [jax.device_put(a, logical_sharding(("act_batch", None), self.rules, self.mesh,
                                                   a.shape)) for a in args]
      with self._context():
        scores = np.asarray(self._score_jit(self.params, *args, temperature=float(temperature)))
      for j, i in enumerate(chunk):
        p_len = len(prompt_tokens[i])
        results[i] = scores[j, p_len - 1:p_len - 1 + len(cont_tokens[i])]
    return results  # type: ignore[return-value]

