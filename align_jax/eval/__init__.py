"""Evaluation metrics shared by the methods."""

from align_jax.eval.qa import CONVENTIONS, exact_match, f1, normalize_answer

__all__ = ["CONVENTIONS", "exact_match", "f1", "normalize_answer"]
