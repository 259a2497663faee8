"""What gin files may bind from the core, registered under short names.

Library code carries no gin decorators; this module makes the core's entry points,
configs and registries configurable (`TransformerConfig`, `create_mesh`, `train_ppo`,
...). The jobs (`align_jax/jobs/configurables.py`) and each method
(`align_jax/methods/<name>/configurables.py`) register their own names with `register`;
`align_jax.main` imports them all.
"""

import gin

from align_jax.data import chat
from align_jax.models import transformer
from align_jax.parallel import host, mesh, partitioning
from align_jax.pipeline import builders
from align_jax.ppo import config as ppo_config
from align_jax.ppo import trainer as ppo_trainer
from align_jax.rewards import reward_model
from align_jax.rewards import terms as reward_terms
from align_jax.sampling import strategies
from align_jax.training import lm_trainer, loop, optimizer
from align_jax.worlds import arithmetic, encyclopedia

MODULE = "align_jax"


def register(entries, module: str = MODULE) -> None:
  """Makes each (callable, name) of `entries` configurable in gin as `name`."""
  for fn, name in entries:
    gin.external_configurable(fn, name, module=module)


register((
    (transformer.TransformerConfig, "TransformerConfig"),
    (transformer.RopeScaling, "RopeScaling"),
    (mesh.create_mesh, "create_mesh"),
    (host.retain_freed_host_memory, "host_memory"),
    (chat.get_template, "get_chat_template"),
    (strategies.SamplingConfig, "SamplingConfig"),
    (lm_trainer.train_lm, "train_lm"),
    (lm_trainer.DataConfig, "DataConfig"),
    (lm_trainer.train_reward_model, "train_reward_model"),
    (lm_trainer.train_dpo, "train_dpo"),
    (ppo_config.PPOConfig, "PPOConfig"),
    (ppo_trainer.train_ppo, "train_ppo"),
    (optimizer.OptimizerConfig, "OptimizerConfig"),
    (loop.LoopConfig, "LoopConfig"),
    (builders.TrainingSchedule, "TrainingSchedule"),
    (arithmetic.ArithmeticConfig, "ArithmeticConfig"),
    (encyclopedia.EncyclopediaConfig, "EncyclopediaConfig"),
    (reward_terms.CompositeReward, "CompositeReward"),
    (reward_terms.length_term, "length_term"),
    (reward_terms.missing_eos_term, "missing_eos_term"),
    (reward_terms.correctness_term, "correctness_term"),
    (reward_terms.language_match_term, "language_match_term"),
    (reward_model.reward_model_term, "reward_model_term"),
    (reward_model.policy_tokens, "policy_tokens"),
    (reward_model.text_input, "text_input"),
))

gin.constant("align_jax.DEFAULT_RULES", partitioning.DEFAULT_RULES)
