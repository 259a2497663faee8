"""Recite-and-answer and its baselines over the shared sampler.

Every procedure returns one `QuestionResult` per question, whose paths are what the
model recited and answered; `analysis` scores them. Generation settings follow the
paper's defaults (`ReciteConfig`): 20 recitation paths sampled at temperature 0.7 with
up to 128 tokens, cut at the first blank line; one greedy answer of up to 16 tokens per
recitation, cut at the end of its line, from the recitation prepended to the
closed-book exemplars; plurality vote over the answers.

The baselines take the same number of paths: `direct` and `chain_of_thought` answer
greedily (one path) or, given `num_paths`, sample that many answers / chains at the
recitation temperature and vote (self-consistency). Diversified recitation samples
passage hints, drops repeats, recites each distinct hint's passage greedily and answers
once from all of them in one context (`diversified_aggregation='context'`, the paper's
way) or from each passage with a vote (`'vote'`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from align_jax.data.tasks import encode_prompt
from align_jax.eval.qa import CONVENTIONS
from align_jax.methods.recite import prompts as prompt_lib
from align_jax.methods.recite import analysis
from align_jax.methods.recite.analysis import Path, QuestionResult
from align_jax.sampling import Sampler, SamplingConfig

BLANK_LINE = "\n\n"
END_OF_LINE = "\n"
AGGREGATIONS = ("context", "vote")
HINT_FORMATS = ("plain", "hinted")


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
  # Exemplars in the hint fine-tuning format's prompts (question -> hint -> passage), and
  # in the fine-tuning documents the world writes in that format (-1: all). A fine-tuned
  # model needs none; the world's small one recalls held-out passages far better without.
  hinted_shots: int = -1
  # Where the recitation goes in the answer prompt: 'paper' (prepended to the plain
  # question -> answer exemplars) or 'reading' (every exemplar with its own passage).
  answer_layout: str = "paper"
  # Diversified recitation: answer once from the distinct passages in one context
  # ('context', at most `context_passages` of them, the most often hinted first; 0: all)
  # or answer from each passage and vote ('vote').
  diversified_aggregation: str = "context"
  context_passages: int = 0

  def __post_init__(self):
    checks = (("answer_layout", self.answer_layout, prompt_lib.ANSWER_LAYOUTS),
              ("diversified_aggregation", self.diversified_aggregation, AGGREGATIONS))
    for name, value, allowed in checks:
      if value not in allowed:
        raise ValueError(f"ReciteConfig.{name} = {value!r}; expected one of {allowed}")


class Reciter:
  """Runs RECITE's prompts through one `Sampler` (whose vocabulary must keep newlines).

  questions: records with "question", "answers" (a list) and optionally "hops".
  convention: how answers are normalised for votes and scores ('trivia_qa' or 'squad',
    see `align_jax.eval.qa`); the dataset's gin file chooses it.
  Greedy continuations are cached by prompt, so a passage or an answer that several
  paths (or several path counts) need is decoded once.
  """

  def __init__(self, sampler: Sampler, exemplars: Sequence[prompt_lib.Exemplar],
               config: ReciteConfig = ReciteConfig(), add_bos: bool = True, *,
               convention: str):
    if sampler.vocab is None:
      raise ValueError("the RECITE sampler needs a vocabulary (prompts are text)")
    if sampler.vocab.decode(sampler.vocab.encode("a\n\nb")) != "a\n\nb":
      raise ValueError("the sampler's vocabulary does not keep newlines, which RECITE's "
                       "prompts use to end fields and exemplars; train it with "
                       "normalization_rule_name='identity', remove_extra_whitespaces=False "
                       "and '\\n' among user_defined_symbols")
    if convention not in CONVENTIONS:
      raise ValueError(f"unknown answer convention {convention!r}; expected one of "
                       f"{CONVENTIONS}")
    self.sampler = sampler
    self.exemplars = list(exemplars)
    self.config = config
    self.add_bos = add_bos  # prompts are encoded as everywhere else (`encode_prompt`)
    self.convention = convention
    self._greedy_cache: dict[tuple[str, int, str], str] = {}

  # ------------------------------------------------------------------------------
  def _generate(self, texts: Sequence[str], num_samples: int, temperature: float,
                max_tokens: int, stop: str, key: jax.Array) -> list[list[str]]:
    if not texts:
      return []
    greedy = temperature == 0.0 and num_samples == 1
    todo = ([t for t in dict.fromkeys(texts) if (t, max_tokens, stop) not in self._greedy_cache]
            if greedy else list(texts))
    rows = []
    if todo:
      ids = [encode_prompt(self.sampler.vocab, t, add_bos=self.add_bos) for t in todo]
      result = self.sampler.generate(ids, SamplingConfig(
          max_new_tokens=max_tokens, temperature=temperature, top_k=self.config.top_k,
          num_samples=num_samples, stop_strings=(stop,)), key)
      rows = [[x.strip() for x in row] for row in result.texts]
    if not greedy:
      return rows
    self._greedy_cache.update({(t, max_tokens, stop): row[0] for t, row in zip(todo, rows)})
    return [[self._greedy_cache[t, max_tokens, stop]] for t in texts]

  def greedy(self, texts: Sequence[str], max_tokens: int, stop: str = END_OF_LINE) -> list[str]:
    """The greedy continuation of each prompt, cut at `stop` (for probes and checks)."""
    return [row[0] for row in self._generate(texts, 1, 0.0, max_tokens, stop,
                                             jax.random.key(0))]

  def _answers(self, recited: Sequence[Sequence[str]], questions: Sequence[str]) -> list[str]:
    """One greedy answer per (recitations, question)."""
    texts = [prompt_lib.answer_prompt(self.exemplars, r, q, self.config.answer_layout)
             for r, q in zip(recited, questions)]
    return [prompt_lib.clean_answer(a) for a in self.greedy(texts, self.config.answer_tokens)]

  def _results(self, records: Sequence[Mapping[str, Any]], paths: Sequence[list[Path]],
               finals: Sequence[str] | None = None) -> list[QuestionResult]:
    finals = finals if finals is not None else [None] * len(records)
    return [QuestionResult(r["question"], tuple(r["answers"]), list(p), int(r.get("hops", 1)),
                           convention=self.convention, final=f)
            for r, p, f in zip(records, paths, finals)]

  def _sampled(self, texts: Sequence[str], key: jax.Array | None, num_paths: int | None,
               max_tokens: int, stop: str) -> list[list[str]]:
    """Greedy (one path) without `num_paths`; else `num_paths` samples at the
    configured temperature (self-consistency)."""
    if num_paths is None:
      return self._generate(texts, 1, 0.0, max_tokens, stop, jax.random.key(0))
    if key is None:
      raise ValueError("sampled paths need a PRNG key")
    return self._generate(texts, num_paths, self.config.temperature, max_tokens, stop, key)

  # ------------------------------------------------------------------------------
  def direct(self, records: Sequence[Mapping[str, Any]], key: jax.Array | None = None,
             num_paths: int | None = None) -> list[QuestionResult]:
    """Closed-book answering from (question -> answer) exemplars: one greedy answer, or
    `num_paths` sampled answers and their vote (self-consistency)."""
    texts = [prompt_lib.direct_prompt(self.exemplars, r["question"]) for r in records]
    out = self._sampled(texts, key, num_paths, self.config.answer_tokens, END_OF_LINE)
    return self._results(records, [[Path((), prompt_lib.clean_answer(a)) for a in row]
                                   for row in out])

  def chain_of_thought(self, records: Sequence[Mapping[str, Any]], key: jax.Array | None = None,
                       num_paths: int | None = None) -> list[QuestionResult]:
    """Reasoning then the answer, from (question, reasoning, answer) exemplars: one greedy
    chain, or `num_paths` sampled chains and the vote of their answers."""
    texts = [prompt_lib.chain_of_thought_prompt(self.exemplars, r["question"]) for r in records]
    out = self._sampled(texts, key, num_paths,
                        self.config.reasoning_tokens + self.config.answer_tokens, BLANK_LINE)
    paths = []
    for row in out:
      paths.append([])
      for text in row:
        reasoning, _, answer = text.partition("Answer:")
        paths[-1].append(Path((reasoning.strip(),), prompt_lib.clean_answer(answer)))
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

  @property
  def multi_recitation_tokens(self) -> int:
    """Multiple recitation's token budget: `recitation_tokens` per hop of the exemplars."""
    return max(max((len(e.passages) for e in self.exemplars), default=1), 1) * (
        self.config.recitation_tokens)

  def multi_recite_and_answer(self, records: Sequence[Mapping[str, Any]], key: jax.Array,
                              num_paths: int | None = None) -> list[QuestionResult]:
    """'Recitation 1', 'Recitation 2', ... in one decoding pass per path (multi-hop)."""
    n = num_paths or self.config.num_paths
    texts = [prompt_lib.multi_recite_prompt(self.exemplars, r["question"]) for r in records]
    generated = self._generate(texts, n, self.config.temperature,
                               self.multi_recitation_tokens, BLANK_LINE, key)
    recited = [[prompt_lib.split_recitations(t) for t in row] for row in generated]
    flat = [(r_list, rec["question"]) for rec, row in zip(records, recited) for r_list in row]
    answers = self._answers([f[0] or [""] for f in flat], [f[1] for f in flat])
    return self._results(records, [[Path(tuple(r), answers[i * n + j])
                                    for j, r in enumerate(row)] for i, row in enumerate(recited)])

  # ------------------------------------------------------------------------------
  def sample_hints(self, records: Sequence[Mapping[str, Any]], key: jax.Array,
                   num_hints: int | None = None, hint_format: str = "plain"
                   ) -> list[list[str]]:
    """`num_hints` passage hints sampled per question, repeats kept (in sampling order).

    hint_format 'plain': the few-shot question -> hint prompt; 'hinted': the
    question -> hint -> passage format that hint fine-tuning teaches.
    """
    n = num_hints or self.config.num_hints
    texts = [self._hinted_prompt(hint_format)(r["question"], None) for r in records]
    return self._generate(texts, n, self.config.temperature, self.config.hint_tokens,
                          END_OF_LINE, key)

  def _hinted_prompt(self, hint_format: str) -> Callable[[str, str | None], str]:
    """(question, hint) -> the prompt that writes the hint (hint None) or its passage."""
    if hint_format == "plain":
      shots = self.shots(self.config.passage_shots)
      return lambda q, h: (prompt_lib.hint_prompt(self.exemplars, q) if h is None
                           else prompt_lib.passage_prompt(shots, h))
    if hint_format == "hinted":
      hinted = self.shots(self.config.hinted_shots)
      return lambda q, h: prompt_lib.hinted_recite_prompt(hinted, q, h)
    raise ValueError(f"unknown hint format {hint_format!r}; expected one of {HINT_FORMATS}")

  def shots(self, count: int) -> list[prompt_lib.Exemplar]:
    """The first `count` exemplars (all of them for a negative count)."""
    return self.exemplars if count < 0 else self.exemplars[:count]

  def recite_from_hints(self, records: Sequence[Mapping[str, Any]],
                        hints: Sequence[Sequence[str]], hint_format: str = "plain"
                        ) -> list[QuestionResult]:
    """Diversified recitation from sampled hints: the distinct hints of each question
    (repeats dropped) each recite their passage greedily; then one answer from all the
    passages in one context (aggregation 'context': the hints sampled most often first,
    at most `context_passages`) or an answer per passage and a vote ('vote').
    One path per distinct hint."""
    prompt = self._hinted_prompt(hint_format)
    distinct = [prompt_lib.rank_hints(row) for row in hints]
    pairs = [(i, h) for i, row in enumerate(distinct) for h in row]
    passages = dict(zip(pairs, self.greedy(
        [prompt(records[i]["question"], h) for i, h in pairs],
        self.config.recitation_tokens, self.config.recitation_stop)))
    if self.config.diversified_aggregation == "vote":
      answers = dict(zip(pairs, self._answers([[passages[p]] for p in pairs],
                                              [records[i]["question"] for i, _ in pairs])))
      return self._results(records, [[Path((passages[i, h],), answers[i, h], hint=h)
                                      for h in row] for i, row in enumerate(distinct)])
    most = self.config.context_passages or None
    contexts = [[passages[i, h] for h in row[:most]] for i, row in enumerate(distinct)]
    finals = self._answers([c or [""] for c in contexts], [r["question"] for r in records])
    return self._results(records, [[Path((passages[i, h],), "", hint=h) for h in row]
                                   for i, row in enumerate(distinct)], finals)

  def diversified(self, records: Sequence[Mapping[str, Any]], key: jax.Array,
                  num_hints: int | None = None, hint_format: str = "plain"
                  ) -> list[QuestionResult]:
    """Passage-hint diversified recitation: `sample_hints`, then `recite_from_hints`."""
    return self.recite_from_hints(records, self.sample_hints(records, key, num_hints,
                                                             hint_format), hint_format)

  def diversified_by_paths(self, records: Sequence[Mapping[str, Any]], key: jax.Array,
                           counts: Sequence[int], resamples: int = 5, seed: int = 0,
                           hint_format: str = "plain"
                           ) -> tuple[list[QuestionResult], list[dict[str, float]]]:
    """Diversified recitation at each number of sampled hints k in `counts`: the largest
    k is sampled; each k answers from `resamples` random subsets of those hints
    (`analysis.em_over_subsets`, as `em_by_paths` does with voting paths). Returns the
    results at the largest k and rows {"paths", "em_mean", "em_std"}."""
    hints = self.sample_hints(records, key, max(counts), hint_format)
    full = self.recite_from_hints(records, hints, hint_format)

    def score(chosen: list[list[int]]) -> float:
      # A subset answers from its own hints; greedy passages and answers are cached.
      results = self.recite_from_hints(records, [[row[i] for i in c] for row, c in
                                                 zip(hints, chosen)], hint_format)
      return float(np.mean([r.exact_match() for r in results])) if results else 0.0
    return full, analysis.em_over_subsets([len(row) for row in hints], counts, score,
                                          resamples, seed)

  def hinted_recite_and_answer(self, records: Sequence[Mapping[str, Any]], key: jax.Array,
                               num_paths: int | None = None) -> list[QuestionResult]:
    """Recitation after hint fine-tuning: diversified recitation in the format hint
    fine-tuning teaches (question -> hint, then question + hint -> passage)."""
    return self.diversified(records, key, num_paths or self.config.num_paths,
                            hint_format="hinted")

  def generate_questions(self, passages: Sequence[str], key: jax.Array,
                         num_questions: int = 1) -> list[list[str]]:
    """Questions the model writes about each passage (few-shot, sampled; hint
    fine-tuning's data). Empty questions are dropped."""
    texts = [prompt_lib.question_prompt(self.exemplars, p) for p in passages]
    rows = self._generate(texts, num_questions, self.config.temperature,
                          self.config.question_tokens, END_OF_LINE, key)
    return [[q for q in row if q] for row in rows]


# name -> what it is: what `run_method` runs (SAMPLED: those that sample paths).
METHODS = {
    "direct": "greedy closed-book answer",
    "direct_sc": "closed-book answers sampled per path, voted (self-consistency)",
    "chain_of_thought": "greedy reasoning then answer",
    "chain_of_thought_sc": "reasoning + answer sampled per path, voted",
    "recite": "recitation sampled per path, answered greedily, voted",
    "multi_recite": "one recitation per hop sampled per path, answered greedily, voted",
    "diversified": "hints sampled per path, distinct ones recited greedily, aggregated",
    "hinted_recite": "diversified recitation in the hint fine-tuning format",
}
SAMPLED = frozenset(METHODS) - {"direct", "chain_of_thought"}


def run_method(reciter: Reciter, method: str, records: Sequence[Mapping[str, Any]],
               key: jax.Array, path_counts: Sequence[int], resamples: int = 5, seed: int = 0
               ) -> tuple[list[QuestionResult], list[dict[str, float]]]:
  """Runs one of `METHODS` with max(path_counts) paths (greedy methods: one) and
  returns its results and EM at each path count (rows {"paths", "em_mean", "em_std"};
  a greedy method has the one row of its single path)."""
  if method not in METHODS:
    raise ValueError(f"unknown RECITE method {method!r}; expected one of {sorted(METHODS)}")
  if method in ("diversified", "hinted_recite"):
    return reciter.diversified_by_paths(records, key, path_counts, resamples, seed,
                                        "hinted" if method == "hinted_recite" else "plain")
  if method in ("direct", "chain_of_thought"):
    results = getattr(reciter, method)(records)
    return results, [{"paths": 1, "em_mean": analysis.scores(results)["em"], "em_std": 0.0}]
  run = {"direct_sc": reciter.direct, "chain_of_thought_sc": reciter.chain_of_thought,
         "recite": reciter.recite_and_answer,
         "multi_recite": reciter.multi_recite_and_answer}[method]
  results = run(records, key, max(path_counts))
  return results, analysis.em_by_paths(results, path_counts, resamples, seed)
