"""Choosing one answer among sampled ones: majority, weighted majority, best-of-N."""

from __future__ import annotations

from typing import Sequence


def _candidates(answers: Sequence[str | None]) -> list[tuple[int, str]]:
  return [(i, a) for i, a in enumerate(answers) if a is not None and a.strip()]


def _pick(totals: dict[str, float], first_seen: dict[str, int]) -> str:
  # Highest total; ties go to the shorter answer, then to the one seen first.
  return min(totals, key=lambda a: (-totals[a], len(a), first_seen[a]))


def majority_vote(answers: Sequence[str | None]) -> str | None:
  """The most frequent non-empty answer (ties -> shorter, then earlier); None if none."""
  return weighted_majority_vote(answers, [1.0] * len(answers))


def weighted_majority_vote(answers: Sequence[str | None], scores: Sequence[float]) -> str | None:
  """argmax_a sum_i [answer_i = a] * score_i over non-empty answers; None if none."""
  if len(answers) != len(scores):
    raise ValueError(f"{len(answers)} answers but {len(scores)} scores")
  totals: dict[str, float] = {}
  first_seen: dict[str, int] = {}
  for i, answer in _candidates(answers):
    totals[answer] = totals.get(answer, 0.0) + float(scores[i])
    first_seen.setdefault(answer, i)
  return _pick(totals, first_seen) if totals else None


def best_of_n(answers: Sequence[str | None], scores: Sequence[float]) -> str | None:
  """The non-empty answer with the highest score (ties -> shorter, then earlier)."""
  if len(answers) != len(scores):
    raise ValueError(f"{len(answers)} answers but {len(scores)} scores")
  best: dict[str, float] = {}
  first_seen: dict[str, int] = {}
  for i, answer in _candidates(answers):
    best[answer] = max(best.get(answer, float("-inf")), float(scores[i]))
    first_seen.setdefault(answer, i)
  return _pick(best, first_seen) if best else None
