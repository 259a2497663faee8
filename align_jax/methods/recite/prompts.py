"""Few-shot prompts of RECITE and its baselines, assembled from exemplars.

Every prompt is a run of exemplars, each a block of `Field: value` lines, separated by
a blank line, followed by the query block that stops where the model continues. A
blank line therefore ends every generated field (recitations are cut at the first
blank line), and answers stop at the end of their line.

Formats (one block each):
  direct          Question: q / Answer: a
  chain_of_thought Question: q / Reasoning: r / Answer: a
  recite          Question: q / Recitation: p
  answer          the recited passage(s) ('Recitation: p', or 'Recitation 1: ...',
                  'Recitation 2: ...' for several) then plain Question / Answer
                  exemplars and the question (layout 'paper', the default: recitations
                  prepended to the closed-book prompt); or layout 'reading': every
                  exemplar a Recitation / Question / Answer block with its own passage
  multi_recite    Question: q / Recitation 1: p1 / Recitation 2: p2
  hint            Question: q / Hint: title — section — paragraph #k
  passage         Hint: h / Recitation: p
  question        Recitation: p / Question: q (/ Answer: a in the exemplars): writes a
                  question about a passage (hint fine-tuning's data)
  hinted_recite   Question: q / Hint: h / Recitation: p (what hint fine-tuning teaches)
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

BLOCK_SEPARATOR = "\n\n"


@dataclasses.dataclass(frozen=True)
class Exemplar:
  """One worked example: a question, the passages that answer it, the answer.

  passages: one per hop (multi-hop questions recite one passage per hop).
  hints: the passages' hints ('Title — Section — paragraph #k'), when known.
  reasoning: a short chain of thought for the chain-of-thought baseline.
  """
  question: str
  answer: str
  passages: tuple[str, ...] = ()
  hints: tuple[str, ...] = ()
  reasoning: str = ""

  def __post_init__(self):
    object.__setattr__(self, "passages", tuple(self.passages))
    object.__setattr__(self, "hints", tuple(self.hints))
    if self.hints and len(self.hints) != len(self.passages):
      raise ValueError(f"exemplar {self.question!r}: {len(self.hints)} hints for "
                       f"{len(self.passages)} passages")


def _one_line(text: str) -> str:
  """Field values stay on their line: inner newlines and blank lines are flattened."""
  return " ".join(text.split())


def _block(*fields: tuple[str, str | None]) -> str:
  """Lines 'Name: value'; a final value of None leaves 'Name:' open for the model."""
  lines = []
  for name, value in fields:
    lines.append(f"{name}:" if value is None else f"{name}: {_one_line(value)}")
  return "\n".join(lines)


def _prompt(blocks: Sequence[str], query: str) -> str:
  return BLOCK_SEPARATOR.join(list(blocks) + [query])


def _recitation_fields(passages: Sequence[str]) -> list[tuple[str, str]]:
  if len(passages) == 1:
    return [("Recitation", passages[0])]
  return [(f"Recitation {i + 1}", p) for i, p in enumerate(passages)]


def _need(exemplars: Sequence[Exemplar], what: str) -> None:
  missing = [e.question for e in exemplars if not getattr(e, what)]
  if missing:
    raise ValueError(f"exemplars without {what}: {missing[:3]}")


def direct_prompt(exemplars: Sequence[Exemplar], question: str) -> str:
  """Question -> answer, closed-book."""
  return _prompt([_block(("Question", e.question), ("Answer", e.answer)) for e in exemplars],
                 _block(("Question", question), ("Answer", None)))


def chain_of_thought_prompt(exemplars: Sequence[Exemplar], question: str) -> str:
  """Question -> reasoning, then the answer (exemplars need their reasoning)."""
  _need(exemplars, "reasoning")
  return _prompt([_block(("Question", e.question), ("Reasoning", e.reasoning),
                         ("Answer", e.answer)) for e in exemplars],
                 _block(("Question", question), ("Reasoning", None)))


def recite_prompt(exemplars: Sequence[Exemplar], question: str) -> str:
  """Question -> one recited passage (the first passage of each exemplar)."""
  _need(exemplars, "passages")
  return _prompt([_block(("Question", e.question), ("Recitation", e.passages[0]))
                  for e in exemplars],
                 _block(("Question", question), ("Recitation", None)))


def multi_recite_prompt(exemplars: Sequence[Exemplar], question: str) -> str:
  """Question -> 'Recitation 1: ...' 'Recitation 2: ...' in one decoding pass."""
  _need(exemplars, "passages")
  return _prompt([_block(("Question", e.question),
                         *[(f"Recitation {i + 1}", p) for i, p in enumerate(e.passages)])
                  for e in exemplars],
                 _block(("Question", question), ("Recitation 1", None)))


ANSWER_LAYOUTS = ("paper", "reading")


def answer_prompt(exemplars: Sequence[Exemplar], passages: Sequence[str], question: str,
                  layout: str = "paper") -> str:
  """(recited passages, question) -> answer.

  layout 'paper': the passages first, as one block, then the plain question -> answer
  exemplars and the question (the recitation prepended to the closed-book prompt).
  layout 'reading': each exemplar carries its own gold passage(s) before its question
  (a reading-comprehension prompt), and the query block carries the recitation.
  """
  if layout == "paper":
    return _prompt([_block(*_recitation_fields(passages))]
                   + [_block(("Question", e.question), ("Answer", e.answer)) for e in exemplars],
                   _block(("Question", question), ("Answer", None)))
  if layout != "reading":
    raise ValueError(f"unknown answer layout {layout!r}; expected one of {ANSWER_LAYOUTS}")
  _need(exemplars, "passages")
  return _prompt([_block(*_recitation_fields(e.passages), ("Question", e.question),
                         ("Answer", e.answer)) for e in exemplars],
                 _block(*_recitation_fields(passages), ("Question", question), ("Answer", None)))


def hint_prompt(exemplars: Sequence[Exemplar], question: str) -> str:
  """Question -> a passage hint."""
  _need(exemplars, "hints")
  return _prompt([_block(("Question", e.question), ("Hint", e.hints[0])) for e in exemplars],
                 _block(("Question", question), ("Hint", None)))


def passage_prompt(exemplars: Sequence[Exemplar], hint: str) -> str:
  """A passage hint -> the passage it names."""
  _need(exemplars, "hints")
  return _prompt([_block(("Hint", h), ("Recitation", p)) for e in exemplars
                  for h, p in zip(e.hints[:1], e.passages[:1])],
                 _block(("Hint", hint), ("Recitation", None)))


def question_prompt(exemplars: Sequence[Exemplar], passage: str) -> str:
  """A passage -> a question it answers; the exemplars are full reading blocks (passage,
  question, answer), so the model continues the reading format up to the question."""
  _need(exemplars, "passages")
  return _prompt([_block(("Recitation", e.passages[0]), ("Question", e.question),
                         ("Answer", e.answer)) for e in exemplars],
                 _block(("Recitation", passage), ("Question", None)))


def hinted_recite_prompt(exemplars: Sequence[Exemplar], question: str,
                         hint: str | None = None) -> str:
  """Question -> hint -> passage: open at 'Hint:', or, given the hint, at 'Recitation:'
  (no exemplars: the bare question block, as a fine-tuned model reads it)."""
  _need(exemplars, "hints")
  query = [("Question", question), ("Hint", hint)]
  if hint is not None:
    query.append(("Recitation", None))
  return _prompt([_block(("Question", e.question), ("Hint", e.hints[0]),
                         ("Recitation", e.passages[0])) for e in exemplars], _block(*query))


def hinted_recitation_document(exemplars: Sequence[Exemplar], question: str, hint: str,
                               passage: str) -> str:
  """One hint fine-tuning example: the hinted-recitation prompt, completed."""
  return f"{hinted_recite_prompt(exemplars, question, hint)} {_one_line(passage)}"


def join_recitations(passages: Sequence[str]) -> str:
  """What a multi-recitation continues 'Recitation 1:' with, for these passages:
  ['p1', 'p2'] -> 'p1\\nRecitation 2: p2' (the inverse of `split_recitations`)."""
  return "\n".join([_one_line(passages[0])] + [f"Recitation {i + 1}: {_one_line(p)}"
                                              for i, p in enumerate(passages) if i > 0])


def split_recitations(text: str) -> list[str]:
  """The passages of a multi-recitation continuation of 'Recitation 1:'.

  'p1\\nRecitation 2: p2' -> ['p1', 'p2']; text after a blank line is dropped.
  """
  text = text.split(BLOCK_SEPARATOR, 1)[0]
  passages, current = [], []
  for line in text.split("\n"):
    head, _, rest = line.partition(":")
    if head.startswith("Recitation ") and head[len("Recitation "):].strip().isdigit():
      passages.append(" ".join(current).strip())
      current = [rest.strip()]
    else:
      current.append(line.strip())
  passages.append(" ".join(current).strip())
  return [p for p in passages if p]


def clean_answer(text: str) -> str:
  """A generated answer up to the end of its line."""
  return text.split("\n", 1)[0].strip()


def rank_hints(hints: Sequence[str]) -> list[str]:
  """Distinct hints (compared after collapsing whitespace; empty ones dropped), the most
  often sampled first, ties in first-seen order."""
  counts = collections.Counter(key for key in (" ".join(h.split()) for h in hints) if key)
  return [hint for hint, _ in counts.most_common()]
