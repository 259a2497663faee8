"""Question-answering metrics: answer normalisation, exact match and token F1.

Published QA benchmarks score answers with different official scripts, and the
scripts normalise text differently, so every function here takes the dataset's
`convention` explicitly (one of `CONVENTIONS`):

  "trivia_qa"  Natural Questions (open) and TriviaQA. Matches the official TriviaQA
               evaluation script (and T5's `normalize_trivia_qa`): lowercase; each
               ASCII punctuation character (`string.punctuation`, underscore included)
               and each of the quote-like characters U+2018, U+2019, U+00B4 and "`"
               becomes a space; the whole words a/an/the become a space; runs of
               whitespace collapse to one space and the ends are stripped. Other
               Unicode punctuation (curly double quotes, en/em dashes, ...) is kept.
  "squad"      HotpotQA and SQuAD v1.1 (their official scripts): lowercase; ASCII
               punctuation is deleted (so "well-known" becomes "wellknown"), while
               Unicode punctuation, curly single quotes included, is kept; articles and
               whitespace as above. Its F1 also follows HotpotQA's rule for the special
               answers "yes", "no" and "noanswer": when either side normalises to one
               of them and the two sides differ, F1 is 0.

Exact match is equality of the normalised strings. F1 is the harmonic mean of token
precision and recall, tokens being the whitespace-separated words of the normalised
strings counted with multiplicity; as in the official scripts, no shared token means
F1 0, even when both sides normalise to nothing (exact match is then 1). Both metrics take
the best score over the gold answers (aliases), and a missing prediction (None) scores
0.0.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Sequence

CONVENTIONS = ("trivia_qa", "squad")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
# trivia_qa: ASCII punctuation plus left/right single quotes, acute accent and backtick.
_TRIVIA_QA_TO_SPACE = str.maketrans(
    {ch: " " for ch in string.punctuation + "\u2018\u2019\u00b4`"})
_SQUAD_DELETE = str.maketrans("", "", string.punctuation)
# HotpotQA's special answers: a mismatch on either side scores F1 0.
_SQUAD_SPECIAL = frozenset(("yes", "no", "noanswer"))


def _check(convention: str) -> None:
  if convention not in CONVENTIONS:
    raise ValueError(f"unknown QA convention {convention!r}; expected one of "
                     f"{', '.join(repr(c) for c in CONVENTIONS)}")


def normalize_answer(text: str, convention: str) -> str:
  """`text` normalised under `convention` ('trivia_qa' or 'squad'; see the module)."""
  _check(convention)
  text = text.lower()
  if convention == "trivia_qa":
    text = text.translate(_TRIVIA_QA_TO_SPACE)
  else:
    text = text.translate(_SQUAD_DELETE)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def _token_f1(predicted: str, gold: str) -> float:
  predicted_tokens, gold_tokens = predicted.split(), gold.split()
  overlap = sum((collections.Counter(predicted_tokens)
                 & collections.Counter(gold_tokens)).values())
  if not overlap:
    return 0.0
  precision, recall = overlap / len(predicted_tokens), overlap / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str | None, golds: Sequence[str], convention: str) -> float:
  """1.0 when the normalised prediction equals any normalised gold answer, else 0.0."""
  _check(convention)
  if prediction is None:
    return 0.0
  predicted = normalize_answer(prediction, convention)
  return float(any(predicted == normalize_answer(g, convention) for g in golds))


def f1(prediction: str | None, golds: Sequence[str], convention: str) -> float:
  """Best token-overlap F1 of the normalised prediction over the gold answers."""
  _check(convention)
  if prediction is None:
    return 0.0
  predicted = normalize_answer(prediction, convention)
  best = 0.0
  for gold in golds:
    normalised_gold = normalize_answer(gold, convention)
    if (convention == "squad" and predicted != normalised_gold
        and (predicted in _SQUAD_SPECIAL or normalised_gold in _SQUAD_SPECIAL)):
      continue  # HotpotQA: a yes/no/noanswer mismatch scores 0
    best = max(best, _token_f1(predicted, normalised_gold))
  return best
