"""PPO for language models: config, rollouts, the update step and the trainer."""

from align_jax.ppo.config import PPOConfig
from align_jax.ppo.rollouts import RolloutSource, assemble_rollouts, load_prompts, make_score_fn
from align_jax.ppo.step import make_ppo_step
from align_jax.ppo.trainer import PPOSetup, run_ppo, setup_ppo, train_ppo
