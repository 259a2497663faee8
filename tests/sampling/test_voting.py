"""Voting over sampled answers, on hand-worked cases."""

import pytest

from align_jax.sampling import best_of_n, majority_vote, weighted_majority_vote


def test_majority_vote_counts_and_skips_empty():
  assert majority_vote(["7", "8", "7", "", None, "8", "7"]) == "7"
  assert majority_vote(["", "  ", None]) is None
  assert majority_vote([]) is None
  # Empty answers would win on count, but they are skipped.
  assert majority_vote(["", "", "", "Paris"]) == "Paris"


def test_majority_vote_ties_go_to_the_shorter_then_earlier_answer():
  assert majority_vote(["Barack Obama", "Obama", "Barack Obama", "Obama"]) == "Obama"
  assert majority_vote(["cat", "dog", "dog", "cat"]) == "cat"  # same length: seen first


def test_weighted_majority_sums_scores_per_answer():
  answers = ["12", "15", "12", "15", "15"]
  scores = [0.9, 0.2, 0.8, 0.3, 0.1]
  assert majority_vote(answers) == "15"                       # 3 votes vs 2
  assert weighted_majority_vote(answers, scores) == "12"     # 1.7 vs 0.6
  assert weighted_majority_vote(["4", "", "5"], [0.1, 5.0, 0.2]) == "5"
  with pytest.raises(ValueError, match="3 answers but 2 scores"):
    weighted_majority_vote(["1", "2", "3"], [0.1, 0.2])


def test_best_of_n_takes_the_single_best_score():
  answers = ["12", "15", "12", "15", "15"]
  scores = [0.9, 0.95, 0.8, 0.3, 0.1]
  assert best_of_n(answers, scores) == "15"
  assert best_of_n(["ab", "a"], [0.5, 0.5]) == "a"
  assert best_of_n([None, ""], [1.0, 2.0]) is None
