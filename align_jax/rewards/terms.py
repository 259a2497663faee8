"""Composable reward terms.

A term maps a `RewardBatch` (prompts, responses, their token lengths, whether each
ended with EOS, and per-example metadata) to a float32 score per example. A
`CompositeReward` adds weighted terms and reports each term's mean, so a run shows
which part of the reward moved. The published systems' terms are here: a length
bonus or penalty with a per-prompt multiplier, language match, correctness against
a ground-truth answer, a missing-EOS penalty, and a model's score.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from align_jax.eval.qa import exact_match


@dataclasses.dataclass
class RewardBatch:
  prompts: Sequence[str]
  responses: Sequence[str]
  response_lengths: np.ndarray          # tokens per response, [batch]
  finished: np.ndarray                  # ended with EOS, [batch] bool
  metadata: Sequence[Mapping[str, Any]]
  # Scores computed with the batch by learned models, by name (e.g. 'reward_model').
  model_scores: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.responses)


RewardTerm = Callable[[RewardBatch], np.ndarray]


def _metadata_values(batch: RewardBatch, key: str, default: float) -> np.ndarray:
  return np.array([float(m.get(key, default)) for m in batch.metadata], np.float32)


def length_term(max_length: int, scale: float = 5.0, cap: float | None = 0.8,
                multiplier_key: str = "length_multiplier") -> RewardTerm:
  """scale * min(length / max_length * m, cap), m read per example (default 1).

  SALMON's bonus: scale 5, cap 0.8, m < 0 on reasoning prompts; Fact-RLHF's penalty:
  scale -10 without a cap.
  """
  def term(batch: RewardBatch) -> np.ndarray:
    value = (np.asarray(batch.response_lengths, np.float32) / max_length
             * _metadata_values(batch, multiplier_key, 1.0))
    if cap is not None:
      value = np.minimum(value, cap)
    return (scale * value).astype(np.float32)
  return term


def missing_eos_term(penalty: float = -1.0) -> RewardTerm:
  """`penalty` for every response that did not end with EOS, 0 otherwise."""
  def term(batch: RewardBatch) -> np.ndarray:
    return np.where(np.asarray(batch.finished, bool), 0.0, penalty).astype(np.float32)
  return term


def correctness_term(answer_key: str = "answer", right: float = 1.0, wrong: float = 0.0,
                     extract: Callable[[str], str | None] | None = None) -> RewardTerm:
  """`right` when the (extracted) response matches metadata[answer_key], else `wrong`.

  The gold answer may be a string or a list of acceptable strings; comparison is
  exact match after SQuAD normalisation. Examples without a gold answer get 0.
  """
  def term(batch: RewardBatch) -> np.ndarray:
    scores = np.zeros(len(batch), np.float32)
    for i, (response, meta) in enumerate(zip(batch.responses, batch.metadata)):
      gold = meta.get(answer_key)
      if gold is None:
        continue
      answers = [gold] if isinstance(gold, str) else list(gold)
      predicted = extract(response) if extract else response
      scores[i] = right if exact_match(predicted, answers) else wrong
    return scores
  return term


def language_match_term(bonus: float = 1.0, mismatch: float = 0.0) -> RewardTerm:
  """`bonus` when langdetect finds the response in the prompt's language, else `mismatch`."""
  from langdetect import DetectorFactory, LangDetectException, detect
  DetectorFactory.seed = 0  # langdetect samples; a fixed seed makes it deterministic

  def language(text: str) -> str | None:
    try:
      return detect(text)
    except LangDetectException:  # no letters to go on
      return None

  def term(batch: RewardBatch) -> np.ndarray:
    return np.array([bonus if language(p) is not None and language(p) == language(r)
                     else mismatch for p, r in zip(batch.prompts, batch.responses)], np.float32)
  return term


def model_score_term(score_fn: Callable[[RewardBatch], np.ndarray]) -> RewardTerm:
  """A learned reward (e.g. a reward model's normalised score) as a term."""
  def term(batch: RewardBatch) -> np.ndarray:
    return np.asarray(score_fn(batch), np.float32)
  return term


@dataclasses.dataclass
class CompositeReward:
  """Sum of weighted terms: {name: (term, weight)}."""
  terms: Mapping[str, tuple[RewardTerm, float]]

  def __call__(self, batch: RewardBatch) -> tuple[np.ndarray, dict[str, float]]:
    total = np.zeros(len(batch), np.float32)
    logged: dict[str, float] = {}
    for name, (term, weight) in self.terms.items():
      values = np.asarray(term(batch), np.float32)
      if values.shape != (len(batch),):
        raise ValueError(f"reward term {name!r} returned shape {values.shape}; expected "
                         f"({len(batch)},)")
      logged[f"reward/{name}"] = float(values.mean())
      total += weight * values
    logged["reward/total"] = float(total.mean())
    return total, logged
