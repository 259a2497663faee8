"""Principle-following reward-model data: one training pair from a judged pair.

Each principle has a positive definition and a negative one (its prohibition). For a
pair of responses with per-principle judge scores (`judge.dimension_scores`; > 0: the
first response is preferred), `label_pair` draws k ~ Geometric(p) principles (k <= the
cap, at most as many as there are), negates each with probability `negate`, and lets the
principle with the largest |score| set the label: the first response wins when its score
is positive, with the sign flipped when that principle is negated (a negated principle
prefers what the positive one disprefers). Then, in order:

  noise     the label flips with probability `noise`;
  overrides a response in another language than the prompt loses; else a response with
            the boilerplate disclaimer loses with probability `disclaimer_loses`
            (only when just one of the two has it).

A pair whose drawn principles all score 0 (orders disagreed everywhere) has no label.
The record lists the drawn principles' definitions (negative ones where negated), in
the order drawn, and carries them as the preference record's `suffix`
(`principles_text`): the reward model reads them after the response, in training and,
through `reward_input`, as a reward term. Train with `DataConfig.truncate='drop'` (or
rows long enough): the default 'right' cuts a too-long pair's tail, the principles first
(counted as `truncated`), so its score would be read without them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from align_jax.rewards.reward_model import InputBuilder, text_input

PRINCIPLES_HEADER = "\n\nJudge the response above by these principles:"


def principles_text(definitions: Sequence[str]) -> str:
  """What the reward model reads after the response: the principles, one a line."""
  return PRINCIPLES_HEADER + "".join(f"\n- {d}" for d in definitions)


def reward_input(chat_template: str | None = "plain") -> InputBuilder:
  """The reward term's input builder: prompt and response in the chat template, then
  `principles_text(metadata["principles"])`, the ids training saw."""
  return text_input(chat_template, suffix=lambda meta: principles_text(meta["principles"]))


@dataclasses.dataclass(frozen=True)
class Principle:
  """A principle with its positive and negative definitions."""
  name: str
  positive: str
  negative: str


@dataclasses.dataclass(frozen=True)
class LabelConfig:
  """How principles are drawn and labels set (see the module docstring)."""
  geometric_p: float = 0.2
  max_principles: int = 8
  negate: float = 0.5
  noise: float = 0.1
  disclaimer_loses: float = 0.5

  def __post_init__(self):
    for name in ("geometric_p", "negate", "noise", "disclaimer_loses"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"LabelConfig.{name} must be in [0, 1], got {getattr(self, name)}")
    if self.geometric_p == 0.0 or self.max_principles < 1:
      raise ValueError("LabelConfig needs geometric_p > 0 and max_principles >= 1")


@dataclasses.dataclass(frozen=True)
class Drawn:
  """What `label_pair` drew: principle indices, which were negated, the deciding one."""
  principles: tuple[int, ...]
  negated: tuple[bool, ...]
  decider: int


def drawn_texts(principles: Sequence[Principle], chosen: Sequence[int],
                negated: Sequence[bool]) -> list[str]:
  """The drawn principles' definitions: the negative one where negated."""
  return [principles[i].negative if neg else principles[i].positive
          for i, neg in zip(chosen, negated)]


def draw(num_principles: int, rng: np.random.Generator, config: LabelConfig
         ) -> tuple[list[int], list[bool]]:
  """k ~ Geometric(p) (k >= 1) distinct principles, capped, each negated with p `negate`."""
  k = min(int(rng.geometric(config.geometric_p)), config.max_principles, num_principles)
  chosen = [int(i) for i in rng.choice(num_principles, size=k, replace=False)]
  return chosen, [bool(rng.random() < config.negate) for _ in chosen]


def decide(scores: Sequence[float], chosen: Sequence[int], negated: Sequence[bool]
           ) -> tuple[int, int] | None:
  """(+1 if the first response wins else -1, the deciding principle) from the drawn
  principles' scores; None when they are all 0."""
  signed = [float(scores[i]) * (-1.0 if neg else 1.0) for i, neg in zip(chosen, negated)]
  at = int(np.argmax(np.abs(signed)))
  if signed[at] == 0.0:
    return None
  return (1 if signed[at] > 0 else -1), chosen[at]


def label_pair(prompt: str, first: str, second: str, scores: Sequence[float],
               principles: Sequence[Principle], rng: np.random.Generator,
               config: LabelConfig = LabelConfig(),
               other_language: tuple[bool, bool] = (False, False),
               disclaimer: tuple[bool, bool] = (False, False)) -> dict[str, Any] | None:
  """A reward-model record {"prompt", "chosen", "rejected", "principles" (the texts),
  "names", "negated", "decider", "first_won", "overridden"} for one judged pair, or None
  (see the module docstring)."""
  if len(scores) != len(principles):
    raise ValueError(f"{len(scores)} scores for {len(principles)} principles")
  chosen, negated = draw(len(principles), rng, config)
  decided = decide(scores, chosen, negated)
  if decided is None:
    return None
  winner, decider = decided
  if rng.random() < config.noise:
    winner = -winner
  overridden = None
  if other_language[0] != other_language[1]:
    overridden, winner = "language", (-1 if other_language[0] else 1)
  elif disclaimer[0] != disclaimer[1] and rng.random() < config.disclaimer_loses:
    overridden, winner = "disclaimer", (-1 if disclaimer[0] else 1)
  texts = drawn_texts(principles, chosen, negated)
  good, bad = (first, second) if winner > 0 else (second, first)
  return {"prompt": prompt, "chosen": good, "rejected": bad, "principles": texts,
          "suffix": principles_text(texts), "names": [principles[i].name for i in chosen],
          "negated": negated, "decider": principles[decider].name, "first_won": winner > 0,
          "overridden": overridden}
