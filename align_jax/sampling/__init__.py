"""The one generation engine: sampling strategies, KV-cache decoding, scoring, voting."""

from align_jax.sampling.engine import (GenerationResult, Sampler, default_length_buckets,
                                       token_logprobs)
from align_jax.sampling.strategies import SamplingConfig, process_logits, top_k_mask, top_p_mask
from align_jax.sampling.voting import best_of_n, majority_vote, weighted_majority_vote
