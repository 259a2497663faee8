"""Cleaning principle-driven answers before they are engraved.

The base model writes, after the principles, the exemplars and a query, an "internal
thoughts" turn naming the principles that apply and then its answer. `clean_answer`
keeps the answer only when the output has that form, and cuts or drops what a base model
adds around a good answer:

  format    the output has no thoughts turn followed by an answer turn (dropped);
  user_turn the answer runs on into a new user turn (cut before it);
  repeated  the answer repeats a sentence (cut before the first repeat);
  empty     nothing is left after the cuts (dropped);
  leak      the answer copies a run of `leak_words` words from an exemplar (dropped).

`filter_answers` applies it to many outputs and counts each filter, for the report.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Iterable, Sequence

FILTERS = ("format", "user_turn", "repeated", "empty", "leak")
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")  # a sentence ends here (or a line does)


@dataclasses.dataclass(frozen=True)
class AnswerFormat:
  """The turn markers of the self-alignment prompt; `thoughts` and `answer` open the
  assistant's two turns and `user` opens a user's."""
  thoughts: str = "Assistant (internal thoughts):"
  answer: str = "Assistant:"
  user: str = "User:"
  leak_words: int = 8


def _words(text: str) -> list[str]:
  return re.findall(r"[\w']+", text.lower())


def exemplar_ngrams(exemplar_texts: Iterable[str], n: int) -> set[tuple[str, ...]]:
  """Every run of n words in the exemplars (lower-cased, punctuation ignored)."""
  grams = set()
  for text in exemplar_texts:
    words = _words(text)
    grams.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
  return grams


def clean_answer(output: str, leaked: set[tuple[str, ...]],
                 form: AnswerFormat = AnswerFormat()) -> tuple[str | None, list[str]]:
  """(the cleaned answer or None, the filters that acted, in order). `output` is what the
  model wrote after the query, starting with its thoughts turn; `leaked` is
  `exemplar_ngrams(exemplars, form.leak_words)`."""
  acted = []
  text = output.strip()
  if not text.startswith(form.thoughts):
    return None, ["format"]
  rest = text[len(form.thoughts):]
  at = rest.find("\n" + form.answer)
  if at < 0:
    return None, ["format"]
  answer = rest[at + 1 + len(form.answer):]
  cut = answer.find(form.user)
  if cut >= 0:
    answer = answer[:cut]
    acted.append("user_turn")
  answer = answer.strip()
  seen, start = set(), 0
  for end in [m.end() for m in _SENTENCE_END.finditer(answer)] + [len(answer)]:
    key = " ".join(_words(answer[start:end]))
    if key and key in seen:
      acted.append("repeated")
      answer = answer[:start].rstrip()
      break
    seen.add(key)
    start = end
  if not answer:
    return None, acted + ["empty"]
  words = _words(answer)
  n = form.leak_words
  if any(tuple(words[i:i + n]) in leaked for i in range(len(words) - n + 1)):
    return None, acted + ["leak"]
  return answer, acted


def filter_answers(outputs: Sequence[str], exemplar_texts: Iterable[str],
                   form: AnswerFormat = AnswerFormat()
                   ) -> tuple[list[str | None], dict[str, int]]:
  """Each output's cleaned answer (None when dropped) and how often each filter acted
  (`FILTERS`, plus `kept`)."""
  leaked = exemplar_ngrams(exemplar_texts, form.leak_words)
  counts = collections.Counter({f: 0 for f in (*FILTERS, "kept")})
  answers = []
  for output in outputs:
    answer, acted = clean_answer(output, leaked, form)
    counts.update(acted)
    counts["kept"] += answer is not None
    answers.append(answer)
  return answers, dict(counts)
