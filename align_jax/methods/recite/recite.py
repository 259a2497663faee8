"""Recite-and-answer and its baselines over the shared sampler.

Every procedure returns one `QuestionResult` per question, whose paths are what the
model recited and answered; `analysis` scores them. Generation settings follow the
paper's defaults (`ReciteConfig`): 20 recitation paths sampled at temperature 0.7 with
up to 128 tokens, cut at the first blank line; one greedy answer of up to 16 tokens per
recitation, cut at the end of its line; plurality vote over the answers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax

from align_jax.data.tasks import encode_prompt
from align_jax.methods.recite import prompts as prompt_lib
from align_jax.methods.recite.analysis import Path, QuestionResult
from align_jax.sampling import Sampler, SamplingConfig

BLANK_LINE = "\n\n"
END_OF_LINE = "\n"


@dataclasses.dataclass(frozen=True)
class ReciteConfig:
  """Generation settings of RECITE and its baselines (defaults: the paper's).

  num_paths: recitation paths sampled per question. temperature, top_k (0: off): the
    sampling of recitations, hints and questions (answers are greedy).
  recitation_tokens, answer_tokens, reasoning_tokens, hint_tokens, question_tokens: the
    most new tokens of a recitation (per hop in multi-recitation), an answer, a chain of
    thought, a passage hint and a written question.
  num_hints: hints sampled per question for diversified recitation (repeats dropped).
  """
  num_paths: int = 20
  temperature: float = 0.7
  top_k: int = 0
  recitation_tokens: int = 128
  answer_tokens: int = 16
  reasoning_tokens: int = 64
  num_hints: int = 20
  hint_tokens: int = 32
  question_tokens: int = 32
  # Where a recitation ends: the first blank line (the paper's rule for multi-line
  # passages), or the end of the line for corpora whose passages are single lines.
  recitation_stop: str = "\n\n"
  # Exemplars in the prompts that recall a passage from its hint (-1: all of them). A
  # model that learned passages under their bare hints recalls them best with 0.
  passage_shots: int = -1


class Reciter:
  """Runs RECITE's prompts through one `Sampler` (whose vocabulary must keep newlines).

  questions: records with "question", "answers" (a list) and optionally "hops".
  """

  def __init__(self, sampler: Sampler, exemplars: Sequence[prompt_lib.Exemplar],
               config: ReciteConfig = ReciteConfig(), add_bos: bool = True):
    if sampler.vocab is None:
      raise ValueError("the RECITE sampler needs a vocabulary (prompts are text)")
    if sampler.vocab.decode(sampler.vocab.encode("a\n\nb")) != "a\n\nb":
      raise ValueError("the sampler's vocabulary does not keep newlines, which RECITE's "
                       "prompts use to end fields and exemplars; train it with "
                       "normalization_rule_name='identity', remove_extra_whitespaces=False "
                       "and '\\n' among user_defined_symbols")
    self.sampler = sampler
    self.exemplars = list(exemplars)
    self.config = config
    self.add_bos = add_bos  # prompts are encoded as everywhere else (`encode_prompt`)

  # ------------------------------------------------------------------------------
  def _generate(self, texts: Sequence[str], num_samples: int, temperature: float,
                max_tokens: int, stop: str, key: jax.Array) -> list[list[str]]:
    if not texts:
      return []
    ids = [encode_prompt(self.sampler.vocab, t, add_bos=self.add_bos) for t in texts]
    result = self.sampler.generate(ids, SamplingConfig(
        max_new_tokens=max_tokens, temperature=temperature, top_k=self.config.top_k,
        num_samples=num_samples, stop_strings=(stop,)), key)
    return [[t.strip() for t in row] for row in result.texts]

  def greedy(self, texts: Sequence[str], max_tokens: int, stop: str = END_OF_LINE) -> list[str]:
    """The greedy continuation of each prompt, cut at `stop` (for probes and checks)."""
    return [row[0] for row in self._generate(texts, 1, 0.0, max_tokens, stop,
                                             jax.random.key(0))]

  def _answers(self, recited: Sequence[Sequence[str]], questions: Sequence[str]) -> list[str]:
    """One greedy answer per (recitations, question)."""
    texts = [prompt_lib.answer_prompt(self.exemplars, r, q) for r, q in zip(recited, questions)]
    out = self._generate(texts, 1, 0.0, self.config.answer_tokens, END_OF_LINE,
                         jax.random.key(0))
    return [prompt_lib.clean_answer(row[0]) for row in out]

  @staticmethod
  def _results(records: Sequence[Mapping[str, Any]], paths: Sequence[list[Path]]
               ) -> list[QuestionResult]:
    return [QuestionResult(r["question"], tuple(r["answers"]), list(p), int(r.get("hops", 1)))
            for r, p in zip(records, paths)]

  # ------------------------------------------------------------------------------
  def direct(self, records: Sequence[Mapping[str, Any]]) -> list[QuestionResult]:
    """Closed-book answering: one greedy answer from (question -> answer) exemplars."""
    texts = [prompt_lib.direct_prompt(self.exemplars, r["question"]) for r in records]
    out = self._generate(texts, 1, 0.0, self.config.answer_tokens, END_OF_LINE,
                         jax.random.key(0))
    return self._results(records, [[Path((), prompt_lib.clean_answer(row[0]))] for row in out])

  def chain_of_thought(self, records: Sequence[Mapping[str, Any]]) -> list[QuestionResult]:
    """Greedy reasoning then the answer, from (question, reasoning, answer) exemplars."""
    texts = [prompt_lib.chain_of_thought_prompt(self.exemplars, r["question"]) for r in records]
    out = self._generate(texts, 1, 0.0, self.config.reasoning_tokens + self.config.answer_tokens,
                         BLANK_LINE, jax.random.key(0))
    paths = []
    for row in out:
      reasoning, _, answer = row[0].partition("Answer:")
      paths.append([Path((reasoning.strip(),), prompt_lib.clean_answer(answer))])
    return self._results(records, paths)

  def recite_and_answer(self, records: Sequence[Mapping[str, Any]], key: jax.Array,
                        num_paths: int | None = None) -> list[QuestionResult]:
    """Sample `num_paths` recitations per question, answer greedily from each."""
    n = num_paths or self.config.num_paths
    texts = [prompt_lib.recite_prompt(self.exemplars, r["question"]) for r in records]
    recitations = self._generate(texts, n, self.config.temperature,
                                 self.config.recitation_tokens, self.config.recitation_stop, key)
    flat = [([p], r["question"]) for r, row in zip(records, recitations) for p in row]
    answers = self._answers([f[0] for f in flat], [f[1] for f in flat])
    return self._results(records, [[Path((p,), answers[i * n + j]) for j, p in enumerate(row)]
                                   for i, row in enumerate(recitations)])

  def multi_recite_and_answer(self, records: Sequence[Mapping[str, Any]], key: jax.Array,
                              num_paths: int | None = None) -> list[QuestionResult]:
    """'Recitation 1', 'Recitation 2', ... in one decoding pass per path (multi-hop)."""
    n = num_paths or self.config.num_paths
    texts = [prompt_lib.multi_recite_prompt(self.exemplars, r["question"]) for r in records]
    hops = max(max(len(e.passages) for e in self.exemplars), 1)
    generated = self._generate(texts, n, self.config.temperature,
                               hops * self.config.recitation_tokens, BLANK_LINE, key)
    recited = [[prompt_lib.split_recitations(t) for t in row] for row in generated]
    flat = [(r_list, rec["question"]) for rec, row in zip(records, recited) for r_list in row]
    answers = self._answers([f[0] or [""] for f in flat], [f[1] for f in flat])
    return self._results(records, [[Path(tuple(r), answers[i * n + j])
                                    for j, r in enumerate(row)] for i, row in enumerate(recited)])

  def diversified(self, records: Sequence[Mapping[str, Any]], key: jax.Array,
                  num_hints: int | None = None) -> list[QuestionResult]:
    """Passage-hint diversified recitation: sample hints, deduplicate them, recite one
    passage per distinct hint greedily, answer from each passage, vote."""
    n = num_hints or self.config.num_hints
    texts = [prompt_lib.hint_prompt(self.exemplars, r["question"]) for r in records]
    hints = [prompt_lib.dedupe_hints(row) for row in self._generate(
        texts, n, self.config.temperature, self.config.hint_tokens, END_OF_LINE, key)]
    return self._recite_from_hints(
        records, hints, lambda record, hint: prompt_lib.passage_prompt(
            self._passage_exemplars(), hint))

  def hinted_recite_and_answer(self, records: Sequence[Mapping[str, Any]], key: jax.Array,
                               num_paths: int | None = None) -> list[QuestionResult]:
    """Recitation after hint fine-tuning: per path, sample a hint for the question, then
    recite its passage greedily (question and hint in context) and answer from it."""
    n = num_paths or self.config.num_paths
    texts = [prompt_lib.hinted_recite_prompt(self.exemplars, r["question"]) for r in records]
    hints = self._generate(texts, n, self.config.temperature, self.config.hint_tokens,
                           END_OF_LINE, key)
    return self._recite_from_hints(
        records, hints, lambda record, hint: prompt_lib.hinted_recite_prompt(
            self.exemplars, record["question"], hint))

  def generate_questions(self, passages: Sequence[str], key: jax.Array,
                         num_questions: int = 1) -> list[list[str]]:
    """Questions the model writes about each passage (few-shot, sampled; hint
    fine-tuning's data). Empty questions are dropped."""
    texts = [prompt_lib.question_prompt(self.exemplars, p) for p in passages]
    rows = self._generate(texts, num_questions, self.config.temperature,
                          self.config.question_tokens, END_OF_LINE, key)
    return [[q for q in row if q] for row in rows]

  def _passage_exemplars(self) -> list[prompt_lib.Exemplar]:
    shots = self.config.passage_shots
    return self.exemplars if shots < 0 else self.exemplars[:shots]

  def _recite_from_hints(self, records: Sequence[Mapping[str, Any]],
                         hints: Sequence[Sequence[str]], prompt) -> list[QuestionResult]:
    """One path per (record, hint): the passage recited greedily from prompt(record,
    hint) and the answer read from it. Repeated hints of a record are decoded once."""
    unique = list(dict.fromkeys((i, h) for i, row in enumerate(hints) for h in row))
    passages = self._generate([prompt(records[i], h) for i, h in unique], 1, 0.0,
                              self.config.recitation_tokens, self.config.recitation_stop,
                              jax.random.key(0))
    answers = self._answers([[p[0]] for p in passages], [records[i]["question"] for i, _ in unique])
    by_pair = {pair: (p[0], a) for pair, p, a in zip(unique, passages, answers)}
    paths = [[Path((by_pair[i, h][0],), by_pair[i, h][1], hint=h) for h in row]
             for i, row in enumerate(hints)]
    return self._results(records, paths)
