"""Reward terms (length, language match, correctness, math answers and format, missing
EOS), reward models as terms with their own input builders, and process reward models."""

from align_jax.rewards.process import (AGGREGATIONS, ImplicitProcessRewardModel,
                                       ProcessRewardModel, ProcessRewardTerm, StepScores,
                                       aggregate, load_process_model, process_rewards)
from align_jax.rewards.reward_model import (NORMALIZATION_FILE, RewardModelTerm,
                                            fit_reward_normalization, load_reward_model,
                                            policy_tokens, read_normalization, reward_model_term,
                                            text_input)
from align_jax.rewards.terms import (CompositeReward, RewardBatch, RewardContext, RewardScores,
                                     RewardTerm, correctness_term, language_match_term,
                                     length_term, math_answer_term, math_format_term,
                                     missing_eos_term)
