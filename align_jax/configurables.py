"""Everything gin files may bind, registered in one place.

Library code carries no gin decorators; this module makes the entry points,
configs and registries configurable under short names (`TransformerConfig`,
`create_mesh`, `run`, ...). Importing it is enough.
"""

import gin

from align_jax import main, model_summary, quickstart, rlhf_demo
from align_jax.data import chat
from align_jax.methods.recite import evaluate as recite_evaluate
from align_jax.methods.recite import recite as recite_lib
from align_jax.methods.recite import world as recite_world
from align_jax.models import transformer
from align_jax.parallel import host, mesh, partitioning
from align_jax.rewards import terms as reward_terms
from align_jax.sampling import generate, strategies
from align_jax.training import lm_trainer, loop, optimizer, ppo
from align_jax.worlds import arithmetic, encyclopedia

_MODULE = "align_jax"

for _fn, _name in (
    (main.run, "run"),
    (transformer.TransformerConfig, "TransformerConfig"),
    (transformer.RopeScaling, "RopeScaling"),
    (mesh.create_mesh, "create_mesh"),
    (host.retain_freed_host_memory, "host_memory"),
    (chat.get_template, "get_chat_template"),
    (model_summary.model_summary, "model_summary"),
    (strategies.SamplingConfig, "SamplingConfig"),
    (generate.generate_job, "generate"),
    (lm_trainer.train_lm, "train_lm"),
    (lm_trainer.DataConfig, "DataConfig"),
    (lm_trainer.train_reward_model, "train_reward_model"),
    (ppo.PPOConfig, "PPOConfig"),
    (ppo.train_ppo, "train_ppo"),
    (arithmetic.ArithmeticConfig, "ArithmeticConfig"),
    (rlhf_demo.rlhf_demo, "rlhf_demo"),
    (recite_lib.ReciteConfig, "ReciteConfig"),
    (recite_evaluate.recite_eval, "recite_eval"),
    (recite_world.recite_world, "recite_world"),
    (recite_world.CorpusConfig, "CorpusConfig"),
    (recite_world.HintDataConfig, "HintDataConfig"),
    (recite_world.WorldEvalConfig, "WorldEvalConfig"),
    (optimizer.OptimizerConfig, "OptimizerConfig"),
    (loop.LoopConfig, "LoopConfig"),
    (encyclopedia.EncyclopediaConfig, "EncyclopediaConfig"),
    (quickstart.TrainingSchedule, "TrainingSchedule"),
    (quickstart.encyclopedia_qa, "encyclopedia_qa"),
    (reward_terms.CompositeReward, "CompositeReward"),
    (reward_terms.length_term, "length_term"),
    (reward_terms.missing_eos_term, "missing_eos_term"),
    (reward_terms.correctness_term, "correctness_term"),
    (reward_terms.language_match_term, "language_match_term"),
    (ppo.reward_model_term, "reward_model_term"),
):
  gin.external_configurable(_fn, _name, module=_MODULE)

gin.constant("align_jax.DEFAULT_RULES", partitioning.DEFAULT_RULES)
