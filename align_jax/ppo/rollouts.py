"""Rollouts: prompts -> responses of the current policy -> per-token rewards.

`RolloutSource` is PPO's batch source for the shared loop. Rows are
[left-padded prompt | response], the response starting at column `start`
(= max_prompt_len) for every row.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import seqio
from jax.sharding import Mesh

from align_jax.data.chat import get_template
from align_jax.data.jsonl import read_jsonl
from align_jax.data.pipeline import list_stream
from align_jax.data.tasks import tokenize_record, validate_record
from align_jax.models import Transformer
from align_jax.parallel import DEFAULT_RULES, LogicalRules, to_host
from align_jax.parallel.partitioning import logical_sharding
from align_jax.ppo import ops
from align_jax.ppo.config import PPOConfig
from align_jax.rewards import CompositeReward, RewardBatch
from align_jax.sampling import Sampler, SamplingConfig
from align_jax.training.loop import TrainState
from align_jax.training.losses import chunked_head, head_chunk_rows, output_matrix


def response_logprobs(model: Transformer, params: Any, batch: Mapping[str, jax.Array],
                      start: int, temperature: float = 1.0, chunk: int | None = None
                      ) -> tuple[jax.Array, jax.Array]:
  """log p(response token) and the entropy of the distribution it was drawn from,
  float32 [batch, response length], at the sampling temperature.

  The output head runs about `chunk` rows (None: `head_chunk_rows` of the vocabulary)
  at a time, in chunks along the response with every row of the batch in each
  (`training.losses.chunked_head`, so a batch split over devices stays split), each
  rematerialised: forward and backward hold [batch, chunk / batch, vocab] logits (one
  position's when the batch has more rows than `chunk`), never the whole
  [batch, length, vocab]. A response that fits one chunk is computed in one piece."""
  hidden = model.apply({"params": params}, batch["tokens"], batch["positions"],
                       batch["segment_ids"], output="hidden")[:, start - 1:-1]
  targets = batch["tokens"][:, start:]

  def stats(logits, t):
    logprobs = jax.nn.log_softmax(logits / temperature, axis=-1)
    picked = jnp.take_along_axis(logprobs, t[..., None], axis=-1)[..., 0]
    return picked, -jnp.sum(jnp.exp(logprobs) * logprobs, axis=-1)

  rows, length = targets.shape
  chunk = chunk or head_chunk_rows(model.config.vocab_size)
  if chunk // rows >= length:
    return stats(model.apply({"params": params}, hidden,
                             method=Transformer.logits_from_hidden), targets)
  return chunked_head(hidden, output_matrix(model, params), targets, chunk, stats)


def load_prompts(files: Sequence[str], vocab: seqio.Vocabulary, chat_template: str,
                 max_prompt_len: int) -> list[dict[str, Any]]:
  """Prompt records from jsonl files ({"prompt": ...} or {"messages": [...]} plus any
  metadata, e.g. a gold "answer"), each with its rendered `prompt_ids`.

  Records longer than `max_prompt_len` tokens are skipped (and counted on stdout).
  """
  template = get_template(chat_template)
  prompts, skipped = [], 0
  for path in files:
    check = lambda record: validate_record(record, "prompt")  # noqa: E731
    for record in read_jsonl(path, check):
      ids = tokenize_record(record, "prompt", vocab, chat_template=template)["prompt_tokens"]
      if len(ids) > max_prompt_len:
        skipped += 1
        continue
      prompts.append({**record, "prompt_ids": [int(i) for i in ids]})
  if skipped:
    print(f"[align_jax] skipped {skipped} prompts longer than max_prompt_len={max_prompt_len}",
          flush=True)
  if not prompts:
    raise ValueError(f"no usable prompts in {list(files)} (max_prompt_len={max_prompt_len})")
  return prompts


def assemble_rollouts(prompt_ids: Sequence[Sequence[int]], responses: np.ndarray,
                      lengths: np.ndarray, start: int, pad_id: int) -> dict[str, np.ndarray]:
  """[left-padded prompt | response] rows: tokens, positions, segment_ids, response_mask."""
  rows, length = responses.shape
  tokens = np.full((rows, start + length), pad_id, np.int32)
  segment_ids = np.zeros_like(tokens)
  positions = np.zeros_like(tokens)
  mask = (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)
  for i, ids in enumerate(prompt_ids):
    pad = start - len(ids)
    tokens[i, pad:start] = ids
    tokens[i, start:] = np.where(mask[i] > 0, responses[i], pad_id)
    real = pad + len(ids) + int(lengths[i])
    segment_ids[i, pad:real] = 1
    positions[i, pad:real] = np.arange(real - pad)
  return {"tokens": tokens, "positions": positions, "segment_ids": segment_ids,
          "response_mask": mask}


@dataclasses.dataclass
class ShapedRewards:
  """A rollout batch's per-token rewards and the pieces its statistics are made of.

  token_rewards: float32 [batch, R], what GAE sees (0 outside the response mask).
  scores: [batch], each response's sequence score as shaped plus its dense rewards.
  kl: [batch, R], the per-token KL estimate that was penalised (0 outside the mask).
  """
  token_rewards: np.ndarray
  scores: np.ndarray
  kl: np.ndarray


def shape_rewards(sequence: np.ndarray, dense: np.ndarray | None, finished: np.ndarray,
                  logprobs: Any, ref_logprobs: Any, mask: np.ndarray, beta: float,
                  config: PPOConfig) -> ShapedRewards:
  """Per-token rewards from a batch's reward scores and log-probabilities.

  sequence [batch] and dense [batch, R] (or None) are the reward terms' totals
  (`RewardScores`); finished [batch] says which responses ended with EOS; logprobs
  and ref_logprobs [batch, R] are the policy's and the reference's log-probabilities
  of the response tokens; mask [batch, R] is 1 on response tokens.

  In order: the sequence and dense rewards are multiplied by `config.reward_scale`;
  the sequence score of a response without EOS is replaced by
  `config.missing_eos_penalty` (its dense rewards stay); sequence scores are clipped
  to +-`config.score_clip`; the per-token KL estimate (`config.kl_estimator`, with
  `config.kl_clamp_min`) is penalised with coefficient beta on every response token,
  the sequence score goes on the last response token and dense rewards on their own
  tokens. Whatever logprobs, ref_logprobs or dense hold outside the mask is ignored.
  """
  sequence = np.asarray(sequence, np.float32) * config.reward_scale
  if dense is not None:  # per-token terms (e.g. process rewards at step ends)
    dense = np.where(mask > 0, np.asarray(dense, np.float32) * config.reward_scale, 0.0)
  if config.missing_eos_penalty is not None:
    sequence = np.where(finished, sequence, config.missing_eos_penalty)
  if config.score_clip is not None:
    sequence = np.clip(sequence, -config.score_clip, config.score_clip)
  kl = np.asarray(ops.kl_penalty(logprobs, ref_logprobs, config.kl_estimator, config.kl_clamp,
                                 config.kl_clamp_min))
  kl = np.where(mask > 0, kl, 0.0)
  token_rewards = np.asarray(ops.token_rewards(sequence, kl, mask, beta))
  scores = sequence
  if dense is not None:
    token_rewards = token_rewards + dense
    scores = sequence + dense.sum(axis=1)
  return ShapedRewards(token_rewards.astype(np.float32), scores, kl)


class RolloutSource:
  """The PPO batch source: prompts -> responses of the current policy -> rewards.

  Every host draws the same global prompt batch and generates it on the shared mesh;
  each then hands the loop its own rows. `position` = {"batches": n, "kl_coef": beta}
  is stored with checkpoints, so a resumed run continues with the same prompts,
  sampling keys and KL coefficient.
  """

  def __init__(self, *, prompts: Sequence[Mapping[str, Any]], config: PPOConfig,
               sampler: Sampler, score_fn: Callable, reward: CompositeReward,
               merge_policy: Callable[[Any], Any], seed: int, position: Any = 0,
               mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES):
    position = position or {}
    self.config = config
    self.sampler = sampler
    self.score_fn = score_fn
    self.reward = reward
    self.merge_policy = merge_policy
    self.seed = seed
    self.mesh, self.rules = mesh, rules
    self.batches = int(position.get("batches", 0))
    beta = float(position.get("kl_coef", config.kl_coef))
    self.controller = (ops.AdaptiveKLController(beta, config.target_kl, config.kl_horizon)
                       if config.target_kl is not None else ops.FixedKLController(beta))
    self.prompts = list(prompts)
    self._stream = list_stream(self.prompts, seqio.ShardInfo(0, 1), True, seed, None)
    for _ in range(self.batches * config.rollout_batch_size):
      next(self._stream)
    self.stats: dict[str, float] = {}
    self.last: dict[str, Any] = {}

  @property
  def position(self) -> dict[str, Any]:
    return {"batches": self.batches, "kl_coef": float(self.controller.beta)}

  def observe(self, state: TrainState) -> None:
    self._trainable = state.params

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    config = self.config
    records = [next(self._stream) for _ in range(config.rollout_batch_size)]
    prompt_ids = [r["prompt_ids"] for r in records]
    policy_params = self.merge_policy(self._trainable["policy"])

    started = time.perf_counter()
    self.sampler.params = policy_params
    sampling = SamplingConfig(max_new_tokens=config.max_new_tokens,
                              temperature=config.temperature, top_k=config.top_k,
                              top_p=config.top_p)
    key = jax.random.fold_in(jax.random.key(self.seed), self.batches)
    generated = self.sampler.generate(prompt_ids, sampling, key)
    generation_time = time.perf_counter() - started

    started = time.perf_counter()
    responses, lengths = generated.tokens[:, 0], generated.lengths[:, 0]
    finished = generated.finished[:, 0]
    rollouts = assemble_rollouts(prompt_ids, responses, lengths, config.max_prompt_len,
                                 self.sampler.pad_id)
    arrays = {k: rollouts[k] for k in ("tokens", "positions", "segment_ids")}
    if self.mesh is not None:
      arrays = {k: jax.device_put(v, logical_sharding(("act_batch", None), self.rules, self.mesh,
                                                      v.shape)) for k, v in arrays.items()}
    outputs = to_host(self.score_fn(policy_params, arrays))   # whole, on every host
    mask = rollouts["response_mask"]
    texts = [t[0] for t in generated.texts] if generated.texts is not None else [""] * len(records)
    prompt_texts = [r.get("prompt", "") for r in records]
    reward_batch = RewardBatch(prompts=prompt_texts, responses=texts, response_lengths=lengths,
                               finished=finished, metadata=records, prompt_tokens=prompt_ids,
                               response_tokens=np.where(mask > 0, responses, self.sampler.pad_id))
    reward = self.reward.score(reward_batch)
    beta = self.controller.beta
    shaped = shape_rewards(reward.sequence, reward.dense, finished, outputs["logprobs"],
                           outputs["ref_logprobs"], mask, beta, config)
    scores, logged = shaped.scores, reward.logged
    sequence_kl = shaped.kl.sum(axis=1)
    scoring_time = time.perf_counter() - started

    self.controller.update(float(sequence_kl.mean()), len(records))
    self.batches += 1
    self.stats = {
        **logged,
        "objective/score": float(scores.mean()),
        "objective/kl": float(sequence_kl.mean()),
        "objective/kl_coef": float(beta),
        "objective/rlhf_reward": float((scores - beta * sequence_kl).mean()),
        "objective/entropy": float(np.where(mask > 0, outputs["entropy"], 0.0).sum()
                                   / max(mask.sum(), 1.0)),
        "rollout/response_length": float(lengths.mean()),
        "rollout/eos_rate": float(finished.mean()),
        "time/generation_s": generation_time,
        "time/scoring_s": scoring_time,
    }
    self.last = {"records": records, "texts": texts, "scores": scores, "lengths": lengths,
                 "finished": finished}
    batch = {**rollouts, "token_rewards": shaped.token_rewards}
    per_host = config.rollout_batch_size // jax.process_count()
    lo = jax.process_index() * per_host
    return {k: v[lo:lo + per_host] for k, v in batch.items()}


def make_score_fn(policy: Transformer, reference_params: Any, start: int, temperature: float):
  """One compiled call: policy and reference log-probabilities of the response tokens
  and the policy's entropy, at the sampling temperature."""
  reference = Transformer(dataclasses.replace(policy.config, lora_rank=0))

  @jax.jit
  def score(policy_params, reference_params, batch):
    logprobs, entropy = response_logprobs(policy, policy_params, batch, start, temperature)
    ref_logprobs, _ = response_logprobs(reference, reference_params, batch, start, temperature)
    return {"logprobs": logprobs, "ref_logprobs": ref_logprobs, "entropy": entropy}

  return lambda policy_params, batch: score(policy_params, reference_params, batch)
