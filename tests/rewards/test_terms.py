"""Reward terms on hand-worked batches."""

import numpy as np
import pytest

from align_jax.rewards import (CompositeReward, RewardBatch, correctness_term,
                               language_match_term, length_term, missing_eos_term)


def _batch():
  return RewardBatch(
      prompts=["What is the capital of France?", "Quelle est la capitale de la France ?",
               "Add 2 and 3.", "Name a colour."],
      responses=["The capital of France is Paris.", "The capital is Paris.", "5", ""],
      response_lengths=np.array([512, 256, 1, 1024]),
      finished=np.array([True, True, False, False]),
      metadata=[{"answer": "Paris"}, {"answer": ["Paris", "paris"]},
                {"answer": "5", "length_multiplier": -1.0}, {}])


def test_length_term_with_cap_and_per_prompt_multiplier():
  values = length_term(max_length=1024, scale=5.0, cap=0.8)(_batch())
  np.testing.assert_allclose(values, [2.5, 1.25, -5 / 1024, 4.0])
  penalty = length_term(max_length=1024, scale=-10.0, cap=None)(_batch())
  np.testing.assert_allclose(penalty, [-5.0, -2.5, 10 / 1024, -10.0])


def test_missing_eos_and_correctness():
  np.testing.assert_array_equal(missing_eos_term(-6.0)(_batch()), [0, 0, -6, -6])
  extract = lambda r: r.rstrip(".").split()[-1] if r else None
  np.testing.assert_array_equal(correctness_term(extract=extract, wrong=-0.5)(_batch()),
                                [1.0, 1.0, 1.0, 0.0])


def test_language_match_is_deterministic():
  values = language_match_term(bonus=1.0, mismatch=-1.0)(_batch())
  assert values[0] == 1.0 and values[1] == -1.0  # French prompt, English answer
  np.testing.assert_array_equal(values, language_match_term(1.0, -1.0)(_batch()))


def test_composite_adds_weighted_terms_and_logs_each_mean():
  reward = CompositeReward({
      "eos": (missing_eos_term(-6.0), 1.0),
      "model": (lambda b: np.arange(len(b), dtype=np.float32), 0.5),
  })
  total, logged = reward(_batch())
  np.testing.assert_allclose(total, [0.0, 0.5, -5.0, -4.5])
  assert logged == {"reward/eos": -3.0, "reward/model": 1.5, "reward/total": -2.25}
  broken = CompositeReward({"bad": (lambda b: np.zeros(2), 1.0)})
  with pytest.raises(ValueError, match=r"reward term 'bad' returned shape \(2,\)"):
    broken(_batch())
