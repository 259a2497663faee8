"""PPO for language models: rollouts, scoring, and the clipped policy/value update.

Four roles share one mesh: the policy (a `Transformer`), the value model (a
`TransformerWithHead`, by default a copy of the reward model), the frozen reference
(the initial policy) and the frozen reward model. With `TransformerConfig.lora_rank > 0`
the policy and the value model are adapters over one shared frozen base, which is also
the reference, so the four roles take the memory of about two models.

One PPO iteration is one step of the shared `train_loop`:

  1. `RolloutSource` (the loop's batch source) generates one response per prompt
     with the current policy through the shared `Sampler` (timed: generation);
  2. it scores the rollouts in one compiled call: policy and reference
     log-probabilities of the response tokens, the policy's entropy, the reward
     model's score at the last token; then the `CompositeReward` terms (timed:
     scoring); the score goes on the EOS token (the last response token), a per-token
     KL penalty `-beta * KL` on every response token, with beta fixed or adapted
     towards a target KL;
  3. the step function (timed: training) recomputes the old log-probabilities and
     values with exactly the computation the loss uses, runs GAE and whitens the
     advantages over the mask, then `num_epochs` passes over shuffled mini-batches
     (the first epoch in rollout order, so its first mini-batch has ratio exactly 1),
     each mini-batch one optimizer update accumulated over `num_micro_batches`.

A response ends at its first stop token (EOS); tokens after it are masked out. A
response that hit `max_new_tokens` without EOS can have its score replaced by
`missing_eos_penalty`. Dropout does not exist in these models, so rollouts and
updates see the same function.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import seqio
from jax.sharding import Mesh

from align_jax.data.chat import get_template
from align_jax.data.jsonl import read_jsonl
from align_jax.data.pipeline import list_stream
from align_jax.data.tasks import tokenize_record, validate_record
from align_jax.data.vocab import load_vocabulary
from align_jax.models import (Transformer, TransformerConfig, TransformerWithHead,
                              is_lora_path, merge_params, param_shardings,
                              split_params)
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.parallel.partitioning import logical_sharding
from align_jax.rewards.terms import CompositeReward, RewardBatch
from align_jax.sampling import Sampler, SamplingConfig
from align_jax.training import ppo_math
from align_jax.training.checkpoints import config_record
from align_jax.training.lm_trainer import (fresh_head, load_initial_params,
                                           restore_run_params, vocabulary_record)
from align_jax.training.loop import (LoopConfig, TrainState, init_train_state, state_shardings,
                                     train_loop)
from align_jax.training.losses import accumulate_gradients
from align_jax.training.optimizer import OptimizerConfig, make_optimizer


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """Rollout, reward and update settings (defaults follow common RLHF practice).

  rollout_batch_size: prompts per iteration (global), one response each.
  mini_batch_size: rows per optimizer update; num_epochs passes over the rollouts.
  num_micro_batches: gradient accumulation inside a mini-batch.
  max_prompt_len: prompts are left-padded to this many tokens (longer ones skipped).
  kl_coef: beta of the per-token KL penalty; with target_kl set, beta adapts towards
    it (horizon in episodes). kl_estimator: 'k1' or 'k3' (clamped at kl_clamp).
  missing_eos_penalty: replaces the score of responses without EOS (None: keep).
  score_clip: clip scores to [-score_clip, score_clip] (None: no clip).
  value_init: 'reward_model' (the value model starts as a copy of the reward model)
    or 'policy' (the policy's weights and a fresh head).
  exact_ratio: recompute the forward pass in the backward pass (one more forward per
    update) so that the first mini-batch's ratio is exactly 1, not 1 +- 1e-8.
  """
  rollout_batch_size: int = 64
  mini_batch_size: int = 16
  num_epochs: int = 4
  num_micro_batches: int = 1
  max_prompt_len: int = 128
  max_new_tokens: int = 64
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  clip_ratio: float = 0.2
  value_clip: float | None = 0.2
  value_loss_coef: float = 0.5
  entropy_coef: float = 0.0
  gamma: float = 1.0
  lam: float = 0.95
  kl_coef: float = 0.05
  target_kl: float | None = None
  kl_horizon: int = 10_000
  kl_estimator: str = "k1"
  kl_clamp: float = 20.0
  missing_eos_penalty: float | None = None
  score_clip: float | None = None
  whiten_advantages: bool = True
  value_init: str = "reward_model"
  sampler_batch_size: int = 0          # 0: the whole rollout batch in one compiled call
  exact_ratio: bool = True             # remat the loss's forward: first ratio exactly 1

  def __post_init__(self):
    if self.rollout_batch_size % self.mini_batch_size:
      raise ValueError(f"PPOConfig.rollout_batch_size={self.rollout_batch_size} must be a "
                       f"multiple of mini_batch_size={self.mini_batch_size}")
    if self.mini_batch_size % self.num_micro_batches:
      raise ValueError(f"PPOConfig.mini_batch_size={self.mini_batch_size} must be a multiple "
                       f"of num_micro_batches={self.num_micro_batches}")
    if self.kl_estimator not in ("k1", "k3"):
      raise ValueError(f"PPOConfig.kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
    if self.value_init not in ("reward_model", "policy"):
      raise ValueError("PPOConfig.value_init must be 'reward_model' or 'policy', got "
                       f"{self.value_init!r}")

  @property
  def updates_per_iteration(self) -> int:
    return self.num_epochs * (self.rollout_batch_size // self.mini_batch_size)


# ---------------------------------------------------------------------------------------
# Model outputs on rollouts. Rows are [left-padded prompt | response], the response
# starting at column `start` for every row.


def response_logprobs(model: Transformer, params: Any, batch: Mapping[str, jax.Array],
                      start: int, temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """log p(response token) and the entropy of the distribution it was drawn from,
  float32 [batch, response length], at the sampling temperature."""
  hidden = model.apply({"params": params}, batch["tokens"], batch["positions"],
                       batch["segment_ids"], output="hidden")
  logits = model.apply({"params": params}, hidden[:, start - 1:-1],
                       method=Transformer.logits_from_hidden)
  logprobs = jax.nn.log_softmax(logits / temperature, axis=-1)
  picked = jnp.take_along_axis(logprobs, batch["tokens"][:, start:, None], axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logprobs) * logprobs, axis=-1)
  return picked, entropy


def response_values(model: TransformerWithHead, params: Any, batch: Mapping[str, jax.Array],
                    start: int) -> jax.Array:
  """The value model's estimate before each response token, float32 [batch, response]."""
  scores = model.apply({"params": params}, batch["tokens"], batch["positions"],
                       batch["segment_ids"])
  return scores[:, start - 1:-1]


def last_token_scores(model: TransformerWithHead, params: Any,
                      batch: Mapping[str, jax.Array]) -> jax.Array:
  """The reward model's score at each row's last real token (the EOS), float32 [batch]."""
  scores = model.apply({"params": params}, batch["tokens"], batch["positions"],
                       batch["segment_ids"])
  last = ppo_math.last_token_index(batch["segment_ids"] > 0)
  return jnp.take_along_axis(scores, last[:, None], axis=1)[:, 0]


# ---------------------------------------------------------------------------------------
# The update.


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
    pg = ppo_math.policy_loss_terms(logprobs, batch["old_logprobs"], batch["advantages"], mask,
                                    config.clip_ratio)
    vf = ppo_math.value_loss_terms(values, batch["old_values"], batch["returns"],
                                   config.value_clip)
    total = (pg["loss"] + config.value_loss_coef * vf["loss"] - config.entropy_coef * entropy)
    s = lambda x: ppo_math.masked_sum(x, mask)
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
    old_logprobs, old_values = old_logprobs * mask, old_values * mask
    advantages, returns = ppo_math.gae(rollouts["token_rewards"], old_values, mask, config.gamma,
                                       config.lam)
    if config.whiten_advantages:
      advantages = ppo_math.masked_whiten(advantages, mask)
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
        "value/explained_variance": ppo_math.explained_variance(old_values, returns, mask),
        "value/mean": ppo_math.masked_mean(old_values, mask),
        "value/returns_mean": ppo_math.masked_mean(returns, mask),
        "value/advantages_mean": ppo_math.masked_mean(advantages, mask),
    })
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return step_fn


# ---------------------------------------------------------------------------------------
# Prompts and rollouts.


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
    self.controller = (ppo_math.AdaptiveKLController(beta, config.target_kl, config.kl_horizon)
                       if config.target_kl is not None else ppo_math.FixedKLController(beta))
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
    outputs = jax.device_get(self.score_fn(policy_params, arrays))
    mask = rollouts["response_mask"]
    texts = [t[0] for t in generated.texts] if generated.texts is not None else [""] * len(records)
    prompt_texts = [r.get("prompt", "") for r in records]
    reward_batch = RewardBatch(prompts=prompt_texts, responses=texts, response_lengths=lengths,
                               finished=finished, metadata=records,
                               model_scores={"reward_model": outputs["reward_model"]})
    scores, logged = self.reward(reward_batch)
    if config.missing_eos_penalty is not None:
      scores = np.where(finished, scores, config.missing_eos_penalty)
    if config.score_clip is not None:
      scores = np.clip(scores, -config.score_clip, config.score_clip)
    kl = np.asarray(ppo_math.kl_penalty(outputs["logprobs"], outputs["ref_logprobs"],
                                        config.kl_estimator, config.kl_clamp)) * mask
    beta = self.controller.beta
    token_rewards = np.asarray(ppo_math.token_rewards(scores, kl, mask, beta))
    sequence_kl = kl.sum(axis=1)
    scoring_time = time.perf_counter() - started

    self.controller.update(float(sequence_kl.mean()), len(records))
    self.batches += 1
    self.stats = {
        **logged,
        "objective/score": float(scores.mean()),
        "objective/kl": float(sequence_kl.mean()),
        "objective/kl_coef": float(beta),
        "objective/rlhf_reward": float((scores - beta * sequence_kl).mean()),
        "objective/entropy": float((outputs["entropy"] * mask).sum() / max(mask.sum(), 1.0)),
        "rollout/response_length": float(lengths.mean()),
        "rollout/eos_rate": float(finished.mean()),
        "time/generation_s": generation_time,
        "time/scoring_s": scoring_time,
    }
    self.last = {"records": records, "texts": texts, "scores": scores, "lengths": lengths,
                 "finished": finished}
    batch = {**rollouts, "token_rewards": token_rewards.astype(np.float32)}
    per_host = config.rollout_batch_size // jax.process_count()
    lo = jax.process_index() * per_host
    return {k: v[lo:lo + per_host] for k, v in batch.items()}


def make_score_fn(policy: Transformer, reference_params: Any, reward_model: TransformerWithHead
                  | None, reward_params: Any, start: int, temperature: float,
                  normalization: Mapping[str, float] | None = None):
  """One compiled call: policy/reference log-probabilities, entropy, and the reward
  model's score at the last token times gain plus bias (its stored normalisation)."""
  gain = float((normalization or {}).get("gain", 1.0))
  bias = float((normalization or {}).get("bias", 0.0))
  reference = Transformer(dataclasses.replace(policy.config, lora_rank=0))

  @jax.jit
  def score(policy_params, reference_params, reward_params, batch):
    logprobs, entropy = response_logprobs(policy, policy_params, batch, start, temperature)
    ref_logprobs, _ = response_logprobs(reference, reference_params, batch, start, temperature)
    out = {"logprobs": logprobs, "ref_logprobs": ref_logprobs, "entropy": entropy}
    if reward_model is not None:
      out["reward_model"] = last_token_scores(reward_model, reward_params, batch) * gain + bias
    else:
      out["reward_model"] = jnp.zeros(batch["tokens"].shape[:1], jnp.float32)
    return out

  return lambda policy_params, batch: score(policy_params, reference_params, reward_params, batch)


# ---------------------------------------------------------------------------------------
# Loading the roles and the job.


def load_reward_model(run_dir: str, config: TransformerConfig, mesh: Mesh, rules: LogicalRules,
                      vocab_record: Mapping[str, Any] | None = None
                      ) -> tuple[TransformerWithHead, Any, dict[str, float]]:
  """A reward model trained by `train_reward_model`: module, parameters, normalisation
  ({"gain", "bias"}; identity when the run stored none)."""
  module = TransformerWithHead(dataclasses.replace(config, lora_rank=0))
  params = restore_run_params(run_dir, module, mesh, rules, vocab_record)
  normalization = {"gain": 1.0, "bias": 0.0}
  path = os.path.join(run_dir, NORMALIZATION_FILE)
  if os.path.exists(path):
    with open(path) as f:
      normalization = json.load(f)
  return module, params, normalization


NORMALIZATION_FILE = "reward_normalization.json"


def reward_model_term():
  """The reward model's normalised score (computed with the rollouts) as a reward term.

  Use it in a `CompositeReward` given to `train_ppo` together with a `reward_model` run,
  e.g. in gin: CompositeReward.terms = {'reward_model': (@reward_model_term(), 1.0), ...}.
  """
  def term(batch: RewardBatch) -> np.ndarray:
    if "reward_model" not in batch.model_scores:
      raise ValueError("reward term 'reward_model_term' needs train_ppo.reward_model (a "
                       "train_reward_model run)")
    return np.asarray(batch.model_scores["reward_model"], np.float32)
  return term


@dataclasses.dataclass
class PPOSetup:
  """The roles and pieces of a PPO run, ready for `run_ppo` (tests inspect them)."""
  config: TransformerConfig
  policy: Transformer
  value: TransformerWithHead
  trainable: Any
  frozen: Any
  reference_params: Any
  reward_params: Any
  sampler: Sampler
  step_fn: Callable
  init_state: Callable[[], TrainState]
  shardings: Any
  make_batches: Callable[[Any], "RolloutSource"]
  eval_fn: Callable | None
  record: dict[str, Any]
  sources: list
  mesh: Mesh
  rules: LogicalRules
  loop: LoopConfig

  def policy_params(self, state: TrainState) -> Any:
    """The full policy parameters of a state (adapters merged into the tree)."""
    policy = state.params["policy"]
    return merge_params(policy, self.frozen["policy"]) if self.frozen else policy


def setup_ppo(workdir: str, model: TransformerConfig, prompts: Sequence[str] | str,
              vocabulary: str, policy_init: str, reward_model: str | None = None,
              reward: CompositeReward | None = None, ppo: PPOConfig = PPOConfig(),
              optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-5),
              loop: LoopConfig = LoopConfig(total_steps=100), *, chat_template: str = "plain",
              mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES, seed: int = 0,
              evaluate: Callable[[Any, int], Mapping[str, float]] | None = None) -> PPOSetup:
  """Builds the four roles and everything `train_loop` needs for PPO (see `train_ppo`).

  model: the policy's TransformerConfig (lora_rank > 0: adapters over a frozen base).
  prompts: jsonl files of prompt records (metadata such as a gold "answer" is kept for
    reward terms). policy_init: an align_jax run or a Hugging Face directory.
  reward_model: a `train_reward_model` run (same architecture as the policy); its
    normalised score is available to reward terms as `reward_model` (default reward:
    that score alone).
  evaluate(policy_params, step): extra metrics (e.g. a gold judge), run every
    `loop.eval_every` steps and at the end.
  Loop total_steps counts PPO iterations; the optimizer's schedule counts updates.
  (workdir is unused here; the signature mirrors `train_ppo`.)
  """
  del workdir
  mesh = mesh or create_mesh()
  vocab = load_vocabulary(vocabulary)
  vocab_record = vocabulary_record(vocab)
  prompt_records = load_prompts((prompts,) if isinstance(prompts, str) else tuple(prompts),
                                vocab, chat_template, ppo.max_prompt_len)
  if ppo.max_prompt_len + ppo.max_new_tokens > model.max_seq_len:
    raise ValueError(f"PPOConfig.max_prompt_len + max_new_tokens = "
                     f"{ppo.max_prompt_len + ppo.max_new_tokens} exceeds the model's "
                     f"max_seq_len={model.max_seq_len}")
  init_vocab = None if os.path.exists(os.path.join(policy_init, "config.json")) else vocab_record
  config, policy_params = load_initial_params(policy_init, model, mesh, rules, seed, init_vocab)
  lora = config.lora_rank > 0
  policy = Transformer(config)
  value_module = TransformerWithHead(config)

  reward_module, reward_params, normalization = (None, None, {"gain": 1.0, "bias": 0.0})
  if reward_model is not None:
    reward_module, reward_params, normalization = load_reward_model(reward_model, config, mesh,
                                                                    rules, vocab_record)
  if reward is None:
    if reward_model is None:
      raise ValueError("train_ppo needs a reward: a reward_model run, reward terms, or both")
    reward = CompositeReward({"reward_model": (reward_model_term(), 1.0)})

  # Trainable and frozen parts of each role.
  policy_shardings = param_shardings(policy, mesh, rules)
  value_shardings = param_shardings(value_module, mesh, rules)
  if lora:
    policy_train, base = split_params(policy_params, is_lora_path)
    reference_params = base
    value_key = jax.random.key(seed + 1)
    from align_jax.models import init_lora_params
    value_lora = init_lora_params(Transformer(config), value_key, mesh, rules)
    head = (reward_params["head"] if ppo.value_init == "reward_model" and reward_params is not None
            else fresh_head(value_module, value_key, mesh, rules))
    value_train = {"backbone": value_lora, "head": head}
    frozen = {"policy": base, "value": {"backbone": base}}
    trainable_shardings = {
        "policy": split_params(policy_shardings, is_lora_path)[0],
        "value": {"backbone": split_params(value_shardings["backbone"], is_lora_path)[0],
                  "head": value_shardings["head"]}}
  else:
    policy_train, frozen, reference_params = policy_params, None, policy_params
    if ppo.value_init == "reward_model":
      if reward_params is None:
        raise ValueError("PPOConfig.value_init='reward_model' needs a reward_model run")
      value_train = reward_params
    else:
      value_train = {"backbone": policy_params,
                     "head": fresh_head(value_module, jax.random.key(seed + 1), mesh, rules)}
    trainable_shardings = {"policy": policy_shardings, "value": value_shardings}
  trainable = {"policy": policy_train, "value": value_train}

  opt_config = dataclasses.replace(
      optimizer, total_steps=loop.total_steps * ppo.updates_per_iteration)
  opt = make_optimizer(opt_config)
  shardings = state_shardings(opt, trainable, trainable_shardings, mesh)
  # The initial state is a fresh copy (the jitted init writes new buffers), so updating
  # it never touches the reference or the reward model.
  init_state = lambda: init_train_state(trainable, opt, seed, trainable_shardings, mesh)

  start = ppo.max_prompt_len
  score_fn = make_score_fn(policy, reference_params, reward_module, reward_params, start,
                           ppo.temperature, normalization)
  sampler = Sampler(policy, None, vocab=vocab, mesh=mesh, rules=rules,
                    batch_size=ppo.sampler_batch_size or ppo.rollout_batch_size,
                    length_buckets=(ppo.max_prompt_len,))
  merge_policy = (lambda p: merge_params(p, frozen["policy"])) if lora else (lambda p: p)
  sources: list[RolloutSource] = []

  def make_batches(position):
    source = RolloutSource(prompts=prompt_records, config=ppo, sampler=sampler,
                           score_fn=score_fn, reward=reward, merge_policy=merge_policy,
                           seed=seed, position=position, mesh=mesh, rules=rules)
    sources.append(source)
    return source

  def evaluate_policy(state, frozen_params):
    del frozen_params
    return evaluate(merge_policy(state.params["policy"]), int(jax.device_get(state.step)))

  eval_fn = None if evaluate is None else evaluate_policy

  record = {"model_config": config_record(config), "vocabulary": vocab_record,
            "ppo_config": config_record(ppo)}
  return PPOSetup(
      config=config, policy=policy, value=value_module, trainable=trainable, frozen=frozen,
      reference_params=reference_params, reward_params=reward_params, sampler=sampler,
      step_fn=make_ppo_step(policy, value_module, ppo, opt, start), init_state=init_state,
      shardings=shardings, make_batches=make_batches, eval_fn=eval_fn, record=record,
      sources=sources, mesh=mesh, rules=rules, loop=loop)


def train_ppo(workdir: str, model: TransformerConfig, prompts: Sequence[str] | str,
              vocabulary: str, policy_init: str, reward_model: str | None = None,
              reward: CompositeReward | None = None, ppo: PPOConfig = PPOConfig(),
              optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-5),
              loop: LoopConfig = LoopConfig(total_steps=100), *, chat_template: str = "plain",
              mesh: Mesh | None = None, rules: LogicalRules = DEFAULT_RULES, seed: int = 0,
              evaluate: Callable[[Any, int], Mapping[str, float]] | None = None,
              export_hf: bool = False) -> dict[str, Any]:
  """Runs PPO in WORKDIR (resuming from its checkpoints); returns a summary.

  model: the policy's TransformerConfig (lora_rank > 0: adapters over a frozen base).
  prompts: jsonl files of prompt records (metadata such as a gold "answer" is kept for
    reward terms). policy_init: an align_jax run or a Hugging Face directory.
  reward_model: a `train_reward_model` run (same architecture as the policy); its
    normalised score is available to reward terms as `reward_model` (default reward:
    that score alone). reward: a `CompositeReward` of weighted terms.
  evaluate(policy_params, step): extra metrics (e.g. a gold judge), run every
    `loop.eval_every` steps and at the end.
  The policy (adapters merged) is stored like any LM run, so `generate`, SFT and
  `init_from` read it; export_hf also writes WORKDIR/hf_export.
  """
  setup = setup_ppo(workdir, model, prompts, vocabulary, policy_init, reward_model, reward, ppo,
                    optimizer, loop, chat_template=chat_template, mesh=mesh, rules=rules,
                    seed=seed, evaluate=evaluate)
  state, metrics = run_ppo(workdir, setup)
  summary = {"steps": int(jax.device_get(state.step)),
             "checkpoints": os.path.join(workdir, "checkpoints"),
             "final_metrics": {k: float(v) for k, v in metrics.items()},
             "model_config": config_record(setup.config)}
  policy_params = setup.policy_params(state)
  summary["policy"] = save_policy(os.path.join(workdir, "policy"), setup, policy_params)
  if export_hf:
    from align_jax.hf import save_checkpoint
    config, full = setup.config, policy_params
    if config.lora_rank > 0:
      from align_jax.models import merge_lora
      config, full = merge_lora(config, full)
    save_checkpoint(os.path.join(workdir, "hf_export"), config, full, overwrite=True)
    summary["hf_export"] = os.path.join(workdir, "hf_export")
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "train_summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return summary


def run_ppo(workdir: str, setup: PPOSetup) -> tuple[TrainState, dict[str, float]]:
  """`train_loop` over a prepared PPO setup."""
  return train_loop(
      workdir=workdir, step_fn=setup.step_fn, init_state=setup.init_state,
      make_batches=setup.make_batches, config=setup.loop, mesh=setup.mesh, rules=setup.rules,
      shardings=setup.shardings, frozen=setup.frozen, eval_fn=setup.eval_fn,
      record=setup.record, batch_tokens=lambda b: int(np.asarray(b["response_mask"]).sum()))


def save_policy(directory: str, setup: PPOSetup, params: Any) -> str:
  """The final policy (adapters merged) as an align_jax run: WORKDIR/policy/checkpoints,
  readable by `init_from` / `generate` like any LM run."""
  from align_jax.models import merge_lora
  from align_jax.training.checkpoints import Checkpointer
  config = setup.config
  if config.lora_rank > 0:
    config, params = merge_lora(config, params)
  checkpointer = Checkpointer(os.path.join(directory, "checkpoints"), keep=1, async_save=False)
  try:
    step = 0
    if checkpointer.latest_step() is None:
      checkpointer.save(step, {"params": params},
                        {"model_config": config_record(config),
                         "vocabulary": setup.record["vocabulary"]}, force=True)
  finally:
    checkpointer.close()
  return directory
