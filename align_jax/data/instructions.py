"""Filters for machine-written instructions and red-teaming topics.

Self-instruct grows a pool of instructions from a few seed tasks: a model writes new ones
after a handful of examples, and `InstructionFilter` keeps a candidate only when it

  * has between `min_words` and `max_words` words,
  * starts with a letter or a digit (not punctuation, not another script),
  * names none of the `blocked_words` (things a text-only model cannot see, hear or
    open: images, audio, files, links), matched as whole words, case-insensitively,
  * and has ROUGE-L (F-measure, `rouge-score`'s tokenizer) of at most `max_rouge_l` with
    every instruction already in the pool, the ones kept before it included.

Topic-guided red-teaming grows topics per question type; `clean_topic` keeps the first
line of a sample when it is capitalised and at most `max_words` words long, and
`merge_topics` adds topics case-insensitively new to a type's list.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Iterable, Sequence

BLOCKED_WORDS = ("image", "images", "picture", "pictures", "photo", "photos", "drawing",
                 "draw", "diagram", "chart", "plot", "graph", "video", "videos", "audio",
                 "sound", "music", "song", "file", "files", "attachment", "map", "maps",
                 "website", "link", "url")
REASONS = ("too_short", "too_long", "bad_start", "blocked_word", "similar", "kept")


@dataclasses.dataclass(frozen=True)
class InstructionFilter:
  """Which machine-written instructions to keep (see the module docstring)."""
  min_words: int = 4
  max_words: int = 150
  max_rouge_l: float = 0.7
  blocked_words: tuple[str, ...] = BLOCKED_WORDS

  def __post_init__(self):
    if not 1 <= self.min_words <= self.max_words:
      raise ValueError(f"InstructionFilter needs 1 <= min_words <= max_words, got "
                       f"{self.min_words} and {self.max_words}")
    if not 0.0 <= self.max_rouge_l <= 1.0:
      raise ValueError(f"InstructionFilter.max_rouge_l must be in [0, 1], got "
                       f"{self.max_rouge_l}")

  def reason(self, instruction: str) -> str | None:
    """Why an instruction fails the checks that need no pool (None when it passes)."""
    words = instruction.split()
    if len(words) < self.min_words:
      return "too_short"
    if len(words) > self.max_words:
      return "too_long"
    first = instruction.strip()[0]
    if not (first.isascii() and first.isalnum()):
      return "bad_start"
    if self.blocked_words and re.search(
        r"\b(?:" + "|".join(re.escape(w) for w in self.blocked_words) + r")\b",
        instruction, re.IGNORECASE):
      return "blocked_word"
    return None


class _RougeL:
  """ROUGE-L F-measure against a growing pool, each text tokenized once."""

  def __init__(self, pool: Iterable[str]):
    from rouge_score import rouge_scorer, tokenizers
    self._tokenizer = tokenizers.DefaultTokenizer(use_stemmer=False)
    self._lcs = rouge_scorer._score_lcs  # noqa: SLF001  (the scorer's own LCS, on tokens)
    self._pool = [self._tokenizer.tokenize(t) for t in pool]

  def most_similar(self, text: str) -> float:
    tokens = self._tokenizer.tokenize(text)
    return max((self._lcs(other, tokens).fmeasure for other in self._pool), default=0.0)

  def add(self, text: str) -> None:
    self._pool.append(self._tokenizer.tokenize(text))


def filter_instructions(candidates: Sequence[str], pool: Sequence[str] = (),
                        config: InstructionFilter = InstructionFilter()
                        ) -> tuple[list[str], dict[str, int]]:
  """The candidates kept, in order, and how many went each way (`REASONS`). A kept
  candidate joins the pool the later ones are compared with."""
  counts = collections.Counter({r: 0 for r in REASONS})
  rouge = _RougeL(pool)
  kept = []
  for candidate in candidates:
    text = " ".join(candidate.split())
    why = config.reason(text) if text else "too_short"
    if why is None and rouge.most_similar(text) > config.max_rouge_l:
      why = "similar"
    counts[why or "kept"] += 1
    if why is None:
      kept.append(text)
      rouge.add(text)
  return kept, dict(counts)


def clean_topic(sample: str, max_words: int = 3) -> str | None:
  """The topic a sample names: its first line, stripped of spaces and trailing
  punctuation, when it starts with a capital letter and has at most `max_words` words."""
  lines = sample.strip().splitlines()
  topic = lines[0].strip().rstrip(".,;:!?").strip() if lines else ""
  if not topic or not topic[0].isupper() or len(topic.split()) > max_words:
    return None
  return " ".join(topic.split())


def merge_topics(existing: Sequence[str], new: Iterable[str]) -> list[str]:
  """`existing` followed by each new topic not already there, compared case-insensitively
  (the first spelling stays)."""
  seen = {t.casefold() for t in existing}
  merged = list(existing)
  for topic in new:
    if topic.casefold() not in seen:
      seen.add(topic.casefold())
      merged.append(topic)
  return merged


def balance_types(topics: dict[str, Sequence[str]], per_type: int | None = None
                  ) -> dict[str, list[str]]:
  """Every type cut to the same number of topics: `per_type`, or the fewest any type has."""
  if not topics:
    return {}
  n = min(len(v) for v in topics.values()) if per_type is None else per_type
  short = [k for k, v in topics.items() if len(v) < n]
  if short:
    raise ValueError(f"balance_types: types {short} have fewer than {n} topics")
  return {k: list(v[:n]) for k, v in topics.items()}
