"""Reward terms (length, language match, correctness, missing EOS) and reward models as
terms with their own input builders."""

from align_jax.rewards.reward_model import (NORMALIZATION_FILE, RewardModelTerm,
                                            fit_reward_normalization, load_reward_model,
                                            policy_tokens, read_normalization, reward_model_term,
                                            text_input)
from align_jax.rewards.terms import (CompositeReward, RewardBatch, RewardContext, RewardScores,
                                     RewardTerm, correctness_term, language_match_term,
                                     length_term, missing_eos_term)
