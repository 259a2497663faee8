"""Question-answering metrics: SQuAD-style normalisation, exact match and token F1."""

from __future__ import annotations

import collections
import re
import string
import unicodedata
from typing import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
  """Lowercases, drops punctuation and the articles a/an/the, collapses whitespace."""
  text = text.lower()
  text = "".join(ch for ch in text
                 if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def exact_match(prediction: str | None, answers: Sequence[str]) -> float:
  """1.0 when the normalised prediction equals any normalised gold answer."""
  if prediction is None:
    return 0.0
  predicted = normalize_answer(prediction)
  return float(any(predicted == normalize_answer(a) for a in answers))


def f1_score(prediction: str | None, answers: Sequence[str]) -> float:
  """Best token-overlap F1 of the normalised prediction against the gold answers."""
  if prediction is None:
    return 0.0
  predicted = normalize_answer(prediction).split()
  best = 0.0
  for answer in answers:
    gold = normalize_answer(answer).split()
    if not predicted or not gold:
      best = max(best, float(predicted == gold))
      continue
    common = collections.Counter(predicted) & collections.Counter(gold)
    overlap = sum(common.values())
    if overlap:
      precision, recall = overlap / len(predicted), overlap / len(gold)
      best = max(best, 2 * precision * recall / (precision + recall))
  return best
