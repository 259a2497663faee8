"""The (A)/(B) preference judge: which of two responses a principle prefers.

For a request, two responses and one principle, the judge prompt lays them out as
responses (A) and (B) and ends just before the letter of the preferred one. The judge's
preference is logit("A") - logit("B") at that position: at one position both letters
share the softmax's normaliser, so it equals log p("A") - log p("B"), which the shared
scoring engine (`Sampler.score`) computes. Each pair is judged in both orders; with
d1 (the first response shown as (A)) and d2 (shown as (B)),

  score = (d1 - d2) / 2    (> 0: the first response is preferred)
  agree = d1 * d2 < 0      (both orders prefer the same response)

`dimension_scores` turns a data set's scores into per-principle dimensions: each score
divided by its principle's variance over the data, and 0 where the orders disagree.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from align_jax.data.vocab import token_after

JUDGE_TEMPLATE = (
    "Two assistant responses to the same user request follow. Judge them by one "
    "principle only.\n\nPrinciple: {principle}\n\nUser: {prompt}\n\nResponse (A): {a}\n\n"
    "Response (B): {b}\n\nUnder this principle, the better response is (")


@dataclasses.dataclass(frozen=True)
class Judgement:
  """One pair under one principle (see the module docstring)."""
  prompt: str
  first: str
  second: str
  principle: str


def judge_prompts(items: Sequence[Judgement], template: str = JUDGE_TEMPLATE
                  ) -> tuple[list[str], list[str]]:
  """Each item's prompt with the first response as (A), and with it as (B)."""
  shown = [template.format(principle=i.principle, prompt=i.prompt, a=i.first, b=i.second)
           for i in items]
  swapped = [template.format(principle=i.principle, prompt=i.prompt, a=i.second, b=i.first)
             for i in items]
  return shown, swapped


def letter_token(vocab, prompt: str, letter: str) -> int:
  """The token `letter` is when it follows `prompt` in running text (e.g. "A" after "(",
  not the word-initial "A" it is on its own); an error unless it is exactly one token
  that leaves the prompt's own tokens as they are."""
  token = token_after(vocab, prompt, letter)
  if token is None:
    raise ValueError(f"judge letter {letter!r} after the prompt's last characters "
                     f"{prompt[-20:]!r} is not a single token of this vocabulary; the judge "
                     "compares one next token, so choose other letters or a template that "
                     "ends where a letter is one token")
  return token


def judge(sampler, items: Sequence[Judgement], template: str = JUDGE_TEMPLATE,
          letters: tuple[str, str] = ("A", "B")) -> dict[str, np.ndarray]:
  """Scores every item in both orders with `sampler.score`.

  Returns {"score": [n], "agree": [n] bool, "first_as_a": [n] (d1),
  "first_as_b": [n] (d2)}. An item whose two responses are the same text is not scored:
  both its orders are one prompt, so d1 = d2, its score is 0 and its orders do not agree
  (d1 and d2 are set to 0).
  """
  distinct = [k for k, i in enumerate(items) if i.first != i.second]
  margins = np.zeros((len(items), 2))
  if distinct:
    shown, swapped = judge_prompts([items[k] for k in distinct], template)
    prompts = [p for pair in zip(shown, swapped) for p in pair]
    ids = [[letter_token(sampler.vocab, p, letter) for p in prompts] for letter in letters]
    a = sampler.score(prompts, [[i] for i in ids[0]])
    b = sampler.score(prompts, [[i] for i in ids[1]])
    margins[distinct] = np.array([float(x[0]) - float(y[0])
                                  for x, y in zip(a, b)]).reshape(len(distinct), 2)
  d1, d2 = margins[:, 0], margins[:, 1]
  return {"score": (d1 - d2) / 2, "agree": d1 * d2 < 0, "first_as_a": d1, "first_as_b": d2}


def dimension_scores(scores: np.ndarray, agree: np.ndarray) -> np.ndarray:
  """[n, principles] scores -> each divided by its principle's variance over the n pairs,
  0 where the two orders disagree (and for a principle whose scores do not vary)."""
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2 or np.shape(agree) != scores.shape:
    raise ValueError(f"scores and agree must both be [pairs, principles], got "
                     f"{scores.shape} and {np.shape(agree)}")
  variance = scores.var(axis=0)
  out = np.divide(scores, variance, out=np.zeros_like(scores), where=variance > 0)
  return np.where(agree, out, 0.0)
