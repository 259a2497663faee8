"""Evaluation metrics shared by the methods."""

from align_jax.eval.qa import exact_match, f1_score, normalize_answer
