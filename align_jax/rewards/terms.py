"""Composable reward terms.

A term maps a `RewardBatch` (prompts, responses as text and as the policy's tokens,
their token lengths, whether each ended with EOS, and per-example metadata) to
float32 scores: one per example, `[batch]` (placed on the last response token), or
one per response token, `[batch, response_length]` (a dense reward, e.g. a process
reward at each step separator). A `CompositeReward` adds weighted terms and reports
each term's mean, so a run shows which part of the reward moved. The published
systems' terms are here: a length bonus or penalty with a per-prompt multiplier,
language match, correctness against a ground-truth answer, a math answer and a math
format term (Easy-to-Hard) and a missing-EOS penalty;
reward models are terms too (`align_jax.rewards.reward_model`).

A term that needs set-up before scoring (a reward model loads its run onto the mesh)
has a `setup(context: RewardContext)` method; `CompositeReward.setup` calls it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from align_jax.eval.math import ANSWER_HEADER, answers_equal, extract_answer, split_steps
from align_jax.eval.qa import exact_match


@dataclasses.dataclass
class RewardBatch:
  """What a reward term sees of a batch of responses.

  prompt_tokens / response_tokens are the policy's token ids (responses [batch, R],
  padding after each response's length); terms that build their own model input
  (another vocabulary, another layout) start from the texts instead.
  """
  prompts: Sequence[str]
  responses: Sequence[str]
  response_lengths: np.ndarray          # tokens per response, [batch]
  finished: np.ndarray                  # ended with EOS, [batch] bool
  metadata: Sequence[Mapping[str, Any]]
  prompt_tokens: Sequence[Sequence[int]] | None = None
  response_tokens: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.responses)

  @property
  def response_length(self) -> int:
    """R, the response axis of dense terms: the token array's width, else the longest."""
    if self.response_tokens is not None:
      return int(np.shape(self.response_tokens)[1])
    return int(np.max(self.response_lengths)) if len(self) else 0

  def response_mask(self) -> np.ndarray:
    """1.0 on each response's tokens, [batch, R]."""
    lengths = np.asarray(self.response_lengths)
    return (np.arange(self.response_length)[None, :] < lengths[:, None]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class RewardContext:
  """What a term's `setup` may need: the mesh to place a model on, and the policy's
  vocabulary and chat template (to tell whether the policy's tokens can be reused)."""
  mesh: Any = None
  rules: Any = None
  policy_vocab: Any = None
  chat_template: str | None = None


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
  exact match under the "squad" convention of `align_jax.eval.qa` (ASCII punctuation
  deleted, articles dropped). Examples without a gold answer get 0.
  """
  def score(response: str, gold: Any) -> float:
    answers = [gold] if isinstance(gold, str) else list(gold)
    predicted = extract(response) if extract else response
    return right if exact_match(predicted, answers, "squad") else wrong
  return _gold_answer_term(answer_key, score)


def _gold_answer_term(answer_key: str, score: Callable[[str, Any], float]) -> RewardTerm:
  """score(response, gold) for examples with a gold metadata[answer_key], 0 for others."""
  def term(batch: RewardBatch) -> np.ndarray:
    scores = np.zeros(len(batch), np.float32)
    for i, (response, meta) in enumerate(zip(batch.responses, batch.metadata)):
      gold = meta.get(answer_key)
      if gold is not None:
        scores[i] = score(response, gold)
    return scores
  return term


def math_answer_term(answer_key: str = "answer", unavailable: str = "Unavailable",
                     unavailable_reward: float = 0.25) -> RewardTerm:
  """1 when the solution's final answer (`extract_answer`) equals metadata[answer_key]
  (`answers_equal`), else 0; a problem whose answer is `unavailable` (a hard problem
  with no checkable answer, Easy-to-Hard's RL setting) gets `unavailable_reward`."""
  def score(response: str, gold: Any) -> float:
    if str(gold) == unavailable:
      return unavailable_reward
    return float(answers_equal(extract_answer(response), str(gold)))
  return _gold_answer_term(answer_key, score)


def math_format_term(penalty: float = -1.0) -> RewardTerm:
  """`penalty` times how far a solution is from the expected form (Easy-to-Hard's
  stop-token penalty): 0 when its answer block's answer appears boxed in the solution,
  0.5 when in math mode ($...$) in the last step, 0.75 when plainly in the last step,
  1 when elsewhere or when there is no (non-empty) answer block."""
  def grade(response: str) -> float:
    steps = split_steps(response)
    if not steps or not steps[-1].startswith(ANSWER_HEADER):
      return 1.0
    answer = steps[-1][len(ANSWER_HEADER):].strip()
    body = steps[:-1]
    if not answer or not body:
      return 1.0
    if "\\boxed{" + answer + "}" in "\n\n".join(body):
      return 0.0
    if f"${answer}$" in body[-1] or f"${answer}.$" in body[-1]:
      return 0.5
    return 0.75 if answer in body[-1] else 1.0

  def term(batch: RewardBatch) -> np.ndarray:
    return np.array([penalty * grade(r) for r in batch.responses], np.float32)
  return term


def detect_language(text: str) -> str | None:
  """langdetect's language code of a text; None when it has no letters to go on."""
  from langdetect import DetectorFactory, LangDetectException, detect
  DetectorFactory.seed = 0  # langdetect samples; a fixed seed makes it deterministic
  try:
    return detect(text)
  except LangDetectException:
    return None


def language_match_term(bonus: float = 1.0, mismatch: float = 0.0) -> RewardTerm:
  """`bonus` when langdetect finds the response in the prompt's language, else `mismatch`."""
  language = detect_language

  def term(batch: RewardBatch) -> np.ndarray:
    return np.array([bonus if language(p) is not None and language(p) == language(r)
                     else mismatch for p, r in zip(batch.prompts, batch.responses)], np.float32)
  return term


def place_on_last_token(scores: np.ndarray, lengths: np.ndarray, length: int) -> np.ndarray:
  """[batch] scores as a [batch, length] array holding each on its last response token."""
  placed = np.zeros((len(scores), length), np.float32)
  rows = np.flatnonzero(np.asarray(lengths) > 0)
  placed[rows, np.asarray(lengths)[rows] - 1] = np.asarray(scores, np.float32)[rows]
  return placed


@dataclasses.dataclass
class RewardScores:
  """A batch's reward split by kind: `sequence` [batch] (goes on the last response
  token), `dense` [batch, R] or None, and each term's logged mean."""
  sequence: np.ndarray
  dense: np.ndarray | None
  logged: dict[str, float]


@dataclasses.dataclass
class CompositeReward:
  """Sum of weighted terms: {name: (term, weight)}."""
  terms: Mapping[str, tuple[RewardTerm, float]]

  def setup(self, context: RewardContext) -> None:
    """Prepares every term that needs it (e.g. loads a reward model onto the mesh)."""
    for term, _ in self.terms.values():
      if hasattr(term, "setup"):
        term.setup(context)

  def score(self, batch: RewardBatch) -> RewardScores:
    """Each term once; sequence and dense totals kept apart. A dense term's logged value
    is its mean per response (summed over the response's tokens)."""
    sequence = np.zeros(len(batch), np.float32)
    dense = None
    logged: dict[str, float] = {}
    for name, (term, weight) in self.terms.items():
      values = np.asarray(term(batch), np.float32)
      if values.shape == (len(batch),):
        sequence += weight * values
        logged[f"reward/{name}"] = float(values.mean())
      elif values.shape == (len(batch), batch.response_length):
        values = np.where(batch.response_mask() > 0, values, 0.0)
        dense = weight * values if dense is None else dense + weight * values
        logged[f"reward/{name}"] = float(values.sum(axis=1).mean())
      else:
        raise ValueError(f"reward term {name!r} returned shape {values.shape}; expected "
                         f"({len(batch)},) or ({len(batch)}, {batch.response_length})")
    total = sequence + (dense.sum(axis=1) if dense is not None else 0.0)
    logged["reward/total"] = float(np.mean(total))
    return RewardScores(sequence, dense, logged)

  def __call__(self, batch: RewardBatch) -> tuple[np.ndarray, dict[str, float]]:
    """(total, logged means): total is [batch] when every term is, else [batch, R] with
    the sequence terms placed on each response's last token."""
    scores = self.score(batch)
    if scores.dense is None:
      return scores.sequence, scores.logged
    placed = place_on_last_token(scores.sequence, batch.response_lengths,
                                 batch.response_length)
    return placed + scores.dense, scores.logged
