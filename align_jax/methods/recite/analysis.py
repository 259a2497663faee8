"""RECITE's evaluation: votes over paths, the error analysis and EM against paths.

A question's result holds its paths: each path is the recitation(s) the model produced
and the answer it gave from them. The prediction is the plurality vote over the paths'
answers (empty answers skipped, ties to the shorter answer), or, where the paths'
recitations were read together in one context (diversified recitation), the one answer
read from them (`final`). Answers are compared under the dataset's convention
(`align_jax.eval.qa`: 'trivia_qa' or 'squad').

Error analysis (each question falls in exactly one class, so the shares add to 100%):
  hits@majority           the voted answer is right;
  hits@k paths            some path answered right, the vote picked another answer;
  hits@k recitations      some recitation contains a gold answer, no path answered right
                          (for passages read together: any recited passage, including
                          ones past the reader's `context_passages`);
  not recited             no recitation contains a gold answer.
Per-path 2x2 table: (recitation contains a gold answer) x (the path's answer is right).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from align_jax.eval.qa import exact_match, f1, normalize_answer
from align_jax.sampling.voting import majority_vote

ERROR_CLASSES = ("hits@majority", "hits@k paths", "hits@k recitations", "not recited")


@dataclasses.dataclass
class Path:
  """One path: the recitations the model produced and the answer it gave from them."""
  recitations: tuple[str, ...]
  answer: str
  hint: str | None = None           # the passage hint it recited from (diversified)


@dataclasses.dataclass
class QuestionResult:
  """A question, its gold answers and its paths; `prediction` is the paths' vote."""
  question: str
  answers: tuple[str, ...]          # gold answers
  paths: list[Path]
  hops: int = 1
  convention: str = dataclasses.field(kw_only=True)  # the dataset's ('trivia_qa', 'squad')
  final: str | None = None          # the answer read from all paths' recitations at once

  @property
  def prediction(self) -> str | None:
    if self.final is not None:
      return self.final or None
    return vote([p.answer for p in self.paths], self.convention)

  def exact_match(self) -> float:
    return exact_match(self.prediction, self.answers, self.convention)

  def to_dict(self) -> dict:
    return {"question": self.question, "answers": list(self.answers), "hops": self.hops,
            "convention": self.convention, "prediction": self.prediction,
            **({"final": self.final} if self.final is not None else {}),
            "paths": [{"recitations": list(p.recitations), "answer": p.answer,
                       **({"hint": p.hint} if p.hint is not None else {})}
                      for p in self.paths]}


def vote(answers: Sequence[str | None], convention: str) -> str | None:
  """Plurality over non-empty answers (compared after the convention's normalisation,
  reported in their first-seen spelling); ties go to the shorter answer, then the
  earlier one."""
  spelling: dict[str, str] = {}
  keys = []
  for answer in answers:
    key = normalize_answer(answer, convention) if answer else ""
    if key:
      spelling.setdefault(key, answer.strip())
    keys.append(key or None)
  winner = majority_vote(keys)
  return None if winner is None else spelling[winner]


def contains_answer(text: str, answers: Sequence[str], convention: str) -> bool:
  """Whether a normalised gold answer occurs in the normalised text as whole words."""
  padded = f" {normalize_answer(text, convention)} "
  golds = [normalize_answer(a, convention) for a in answers]
  return any(f" {g} " in padded for g in golds if g)


def path_correct(path: Path, result: QuestionResult) -> bool:
  """Whether the path's answer exactly matches a gold answer."""
  return exact_match(path.answer, result.answers, result.convention) == 1.0


def error_class(result: QuestionResult) -> str:
  """The question's class in the error analysis (see the module docstring)."""
  if result.exact_match() == 1.0:
    return "hits@majority"
  if any(path_correct(p, result) for p in result.paths):
    return "hits@k paths"
  if any(contains_answer(r, result.answers, result.convention)
         for p in result.paths for r in p.recitations):
    return "hits@k recitations"
  return "not recited"


def error_analysis(results: Sequence[QuestionResult]) -> dict[str, float]:
  """Share of questions in each error class (they add up to 1)."""
  counts = dict.fromkeys(ERROR_CLASSES, 0)
  for result in results:
    counts[error_class(result)] += 1
  total = max(len(results), 1)
  return {name: count / total for name, count in counts.items()}


def path_table(results: Sequence[QuestionResult]) -> dict[str, float]:
  """Shares of all paths in the 2x2 (recitation contains answer) x (answer right), over
  the results whose paths were answered one by one."""
  table = {f"recited={r},correct={c}": 0 for r in (True, False) for c in (True, False)}
  total = 0
  for result in results:
    if result.final is not None:
      continue  # paths read together: no per-path answer
    for path in result.paths:
      recited = any(contains_answer(r, result.answers, result.convention)
                    for r in path.recitations)
      table[f"recited={recited},correct={path_correct(path, result)}"] += 1
      total += 1
  return {k: v / max(total, 1) for k, v in table.items()}


def scores(results: Sequence[QuestionResult]) -> dict[str, float]:
  """Mean EM and F1 of the voted predictions."""
  if not results:
    return {"em": 0.0, "f1": 0.0, "n": 0}
  return {"em": float(np.mean([r.exact_match() for r in results])),
          "f1": float(np.mean([f1(r.prediction, r.answers, r.convention) for r in results])),
          "n": len(results)}


def em_over_subsets(sizes: Sequence[int], counts: Sequence[int],
                    score: Callable[[list[list[int]]], float], resamples: int = 5,
                    seed: int = 0) -> list[dict[str, float]]:
  """EM when each question keeps only k of its `sizes[i]` paths, k in `counts`: each k is
  repeated `resamples` times with random subsets (indices in path order), `score(chosen)`
  gives the EM of one draw; rows {"paths", "em_mean", "em_std"} over the repeats."""
  rng = np.random.default_rng(seed)
  rows = []
  for k in counts:
    ems = [score([sorted(rng.permutation(n)[:k]) for n in sizes]) for _ in range(resamples)]
    rows.append({"paths": int(k), "em_mean": float(np.mean(ems)), "em_std": float(np.std(ems))})
  return rows


def em_by_paths(results: Sequence[QuestionResult], counts: Sequence[int], resamples: int = 5,
                seed: int = 0) -> list[dict[str, float]]:
  """EM when only k of each question's paths vote, k in `counts` (`em_over_subsets`)."""
  def score(chosen: list[list[int]]) -> float:
    hits = [exact_match(vote([r.paths[i].answer for i in c], r.convention), r.answers,
                        r.convention) for r, c in zip(results, chosen)]
    return float(np.mean(hits)) if hits else 0.0
  return em_over_subsets([len(r.paths) for r in results], counts, score, resamples, seed)
