"""PPO for language models: the four roles on one mesh, and the job.

Four roles share one mesh: the policy (a `Transformer`), the value model (a
`TransformerWithHead`, by default a copy of the reward model), the frozen reference
(the initial policy) and the reward, a `CompositeReward` whose terms may include
reward models (`align_jax.rewards.RewardModelTerm`), each building its own input.
With `TransformerConfig.lora_rank > 0` the policy and the value model are adapters over
one shared frozen base, which is also the reference, so the policy, value and
reference roles take the memory of about one model plus adapters.

One PPO iteration is one step of the shared `train_loop`:

  1. `RolloutSource` (the loop's batch source) generates one response per prompt
     with the current policy through the shared `Sampler` (timed: generation);
  2. it scores the rollouts (timed: scoring): policy and reference log-probabilities
     of the response tokens and the policy's entropy in one compiled call, then the
     reward terms; the sequence reward goes on the EOS token (the last response
     token), dense terms on their tokens, and a per-token KL penalty `-beta * KL` on
     every response token, with beta fixed or adapted towards a target KL;
  3. the step function (`align_jax.ppo.step`, timed: training) recomputes the old
     log-probabilities and values with exactly the computation the loss uses, runs
     GAE and whitens the advantages over the mask, then `num_epochs` passes over
     shuffled mini-batches (the first epoch in rollout order, so its first mini-batch
     has ratio exactly 1), each mini-batch one optimizer update accumulated over
     `num_micro_batches`.

A response ends at its first stop token (EOS); tokens after it are masked out. A
response that hit `max_new_tokens` without EOS can have its sequence score replaced by
`missing_eos_penalty`. Dropout does not exist in these models, so rollouts and
updates see the same function.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from align_jax import fs
from align_jax.data.pipeline import check_seq_len
from align_jax.data.vocab import load_vocabulary
from align_jax.models import (Transformer, TransformerConfig, TransformerWithHead,
                              init_lora_params, is_lora_path, merge_lora, merge_params,
                              param_shardings, split_params)
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.ppo.config import PPOConfig
from align_jax.ppo.rollouts import RolloutSource, load_prompts, make_score_fn
from align_jax.ppo.step import make_ppo_step
from align_jax.rewards import CompositeReward, RewardContext, RewardModelTerm
from align_jax.sampling import Sampler
from align_jax.training.checkpoints import Checkpointer, config_record
from align_jax.training.loop import (LoopConfig, TrainState, init_train_state, state_shardings,
                                     train_loop)
from align_jax.training.optimizer import OptimizerConfig, by_part, make_optimizer
from align_jax.training.runs import RUNTIME_FIELDS
from align_jax.training.runs import (absolute_path, check_model_vocabulary, finish_run,
                                     fresh_head, is_hf_dir, load_initial_params,
                                     vocabulary_record)


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
              evaluate: Callable[[Any, int], Mapping[str, float]] | None = None,
              allow_foreign_vocabulary: bool = False) -> PPOSetup:
  """Builds the four roles and everything `train_loop` needs for PPO (see `train_ppo`).

  model: the policy's TransformerConfig (lora_rank > 0: adapters over a frozen base).
  prompts: jsonl files of prompt records (metadata such as a gold "answer" is kept for
    reward terms). policy_init: an align_jax run or a Hugging Face directory.
  reward_model: a `train_reward_model` run (same architecture as the policy); its
    normalised score is available to reward terms as `reward_model` (default reward:
    that score alone).
  evaluate(policy_params, step): extra metrics (e.g. a gold judge), run every
    `loop.eval_every` steps and at the end.
  Loop total_steps counts PPO iterations; the optimizer's schedule counts updates (or
  iterations, with `PPOConfig.schedule_per_iteration`).
  (workdir is unused here; the signature mirrors `train_ppo`.)
  """
  del workdir
  mesh = mesh or create_mesh()
  vocab = load_vocabulary(vocabulary)
  vocab_record = vocabulary_record(vocab)
  if is_hf_dir(policy_init):  # The policy is the checkpoint's.
    from align_jax.hf import load_config
    check_model_vocabulary(load_config(policy_init), vocab, vocabulary, hf_dir=policy_init,
                           allow_foreign_vocabulary=allow_foreign_vocabulary)
  else:
    check_model_vocabulary(model, vocab, vocabulary)
  prompt_records = load_prompts((prompts,) if isinstance(prompts, str) else tuple(prompts),
                                vocab, chat_template, ppo.max_prompt_len)
  check_seq_len(ppo.max_prompt_len + ppo.max_new_tokens, model.max_seq_len,
                length_name="PPOConfig.max_prompt_len + PPOConfig.max_new_tokens")
  init_vocab = None if is_hf_dir(policy_init) else vocab_record
  config, policy_params = load_initial_params(policy_init, model, mesh, rules, seed, init_vocab)
  lora = config.lora_rank > 0
  policy = Transformer(config)
  value_module = TransformerWithHead(config)

  if reward is None:
    if reward_model is None:
      raise ValueError("train_ppo needs a reward: a reward_model run, reward terms, or both")
    reward = CompositeReward({"reward_model": (RewardModelTerm(reward_model), 1.0)})
  reward_terms = _reward_model_terms(reward, reward_model)
  reward.setup(RewardContext(mesh=mesh, rules=rules, policy_vocab=vocab,
                             chat_template=chat_template))
  reward_params = None
  if reward_terms:  # the first reward model may seed the value model
    reward_run = reward_terms[0].run
    reward_params = reward_run.params
    if ppo.value_init == "reward_model" and _architecture(reward_run.config) != _architecture(
        config):
      raise ValueError(f"PPOConfig.value_init='reward_model' needs a reward model with the "
                       f"policy's architecture; {reward_run.path} differs (use "
                       "value_init='policy')")

  # Trainable and frozen parts of each role.
  policy_shardings = param_shardings(policy, mesh, rules)
  value_shardings = param_shardings(value_module, mesh, rules)
  if lora:
    policy_train, base = split_params(policy_params, is_lora_path)
    reference_params = base
    value_key = jax.random.key(seed + 1)
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

  updates = ppo.updates_per_iteration
  per_schedule_step = updates if ppo.schedule_per_iteration else 1
  opt_config = dataclasses.replace(
      optimizer, total_steps=loop.total_steps * updates // per_schedule_step)
  opt = make_optimizer(opt_config, steps_per_schedule_step=per_schedule_step)
  if ppo.value_learning_rate is not None:
    # Each model its own AdamW and gradient clip; the value model's at its own rate.
    value_opt = make_optimizer(
        dataclasses.replace(opt_config, learning_rate=ppo.value_learning_rate),
        steps_per_schedule_step=per_schedule_step)
    opt = by_part({"policy": opt, "value": value_opt})
  shardings = state_shardings(opt, trainable, trainable_shardings, mesh)
  # The initial state is a fresh copy (the jitted init writes new buffers), so updating
  # it never touches the reference or the reward model.
  init_state = lambda: init_train_state(trainable, opt, seed, trainable_shardings, mesh)

  start = ppo.max_prompt_len
  score_fn = make_score_fn(policy, reference_params, start, ppo.temperature)
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
            "vocabulary_file": absolute_path(vocabulary),
            "chat_template": chat_template, "ppo_config": config_record(ppo)}
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
              export_hf: bool = False, allow_foreign_vocabulary: bool = False) -> dict[str, Any]:
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
  `init_from` read it; export_hf also writes WORKDIR/hf_export. The vocabulary is checked
  against the policy as `train_lm` checks it (allow_foreign_vocabulary: a Hugging Face
  policy_init with another tokenizer).
  """
  setup = setup_ppo(workdir, model, prompts, vocabulary, policy_init, reward_model, reward, ppo,
                    optimizer, loop, chat_template=chat_template, mesh=mesh, rules=rules,
                    seed=seed, evaluate=evaluate,
                    allow_foreign_vocabulary=allow_foreign_vocabulary)
  state, metrics = run_ppo(workdir, setup)
  policy_params = setup.policy_params(state)
  policy = save_policy(fs.join(workdir, "policy"), setup, policy_params)
  return finish_run(workdir, state.step, metrics, setup.config, policy_params, vocabulary,
                    export_hf, extra={"policy": policy})


def run_ppo(workdir: str, setup: PPOSetup) -> tuple[TrainState, dict[str, float]]:
  """`train_loop` over a prepared PPO setup."""
  return train_loop(
      workdir=workdir, step_fn=setup.step_fn, init_state=setup.init_state,
      make_batches=setup.make_batches, config=setup.loop, mesh=setup.mesh, rules=setup.rules,
      shardings=setup.shardings, frozen=setup.frozen, eval_fn=setup.eval_fn,
      record=setup.record, batch_tokens=lambda b: int(np.asarray(b["response_mask"]).sum()),
      progress_metrics=("reward/total",))


def save_policy(directory: str, setup: PPOSetup, params: Any) -> str:
  """The final policy (adapters merged) as an align_jax run: WORKDIR/policy/checkpoints,
  readable by `init_from` / `generate` / `load_run` like any LM run."""
  config = setup.config
  if config.lora_rank > 0:
    config, params = merge_lora(config, params)
  checkpointer = Checkpointer(fs.join(directory, "checkpoints"), keep=1, async_save=False)
  try:
    step = 0
    if checkpointer.latest_step() is None:
      checkpointer.save(step, {"params": params},
                        {"model_config": config_record(config),
                         "vocabulary": setup.record["vocabulary"],
                         "vocabulary_file": setup.record.get("vocabulary_file"),
                         "kind": "sft", "chat_template": setup.record.get("chat_template")},
                        force=True)
  finally:
    checkpointer.close()
  return directory


def _architecture(config: TransformerConfig) -> dict[str, Any]:
  """What a config says about the parameters (not how they run)."""
  record = config_record(config)
  return {k: v for k, v in record.items()
          if k not in RUNTIME_FIELDS and not k.startswith("lora_")}


def _reward_model_terms(reward: CompositeReward, reward_model: str | None
                        ) -> list[RewardModelTerm]:
  """The reward's reward-model terms; those without a run of their own get `reward_model`."""
  terms = [term for term, _ in reward.terms.values() if isinstance(term, RewardModelTerm)]
  for term in terms:
    if not term.run_dir:
      if reward_model is None:
        raise ValueError("reward_model_term() without a run needs train_ppo.reward_model (a "
                         "train_reward_model run)")
      term.run_dir = reward_model
  return terms
