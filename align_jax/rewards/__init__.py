"""Composable reward terms: length, language match, correctness, missing EOS, model score."""

from align_jax.rewards.terms import (CompositeReward, RewardBatch, RewardTerm, correctness_term,
                                     language_match_term, length_term, missing_eos_term,
                                     model_score_term)
