"""Evaluation metrics shared by the methods."""

from align_jax.eval.math import answers_equal, extract_answer
from align_jax.eval.qa import CONVENTIONS, exact_match, f1, normalize_answer

__all__ = ["CONVENTIONS", "answers_equal", "exact_match", "extract_answer", "f1",
           "normalize_answer"]
