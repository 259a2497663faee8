"""Process reward models: step scores, their aggregation, and a process reward for RL.

A process reward model (PRM) is a `train_reward_model` run of kind 'process': it was
trained with binary cross-entropy on its score at the last token of each step (the step
format of `align_jax.eval.math`, every step but the last followed by its blank-line
separator) and, for an outcome model (ORM), at the EOS after the solution; an OPRM saw
both kinds of record. `ProcessRewardModel` renders a (prompt, solution) exactly as its
training data was rendered (`tokenize_record(..., 'process')`), so the scores it reads
sit where the labels sat: one logit per step and the logit at the EOS.

Step scores become one solution score by `aggregate` ('min', 'product', 'last' or
'mean' of the step probabilities); `align_jax.sampling.voting` then reranks.

For RL, `process_rewards` turns step probabilities into per-step rewards as the
Easy-to-Hard paper does: a running minimum that starts at `upper_bound` (0.5); each
step where the probability drops below it gets the drop (negative) as its reward, and
every step gets `positive_total / number of steps`, so a solution whose steps all look
right earns `positive_total` in total. `ProcessRewardTerm` is that reward as a dense
PPO reward term: each step's reward sits on the policy token that ends the step's
separator. Only steps followed by a separator are scored (not the answer block).

An implicit process reward model (`ImplicitProcessRewardModel`) is a `train_dpo` run: no
head and no step labels, only pairs of right and wrong solutions. Its step logit is the
implicit reward accumulated up to the step's last token, beta times the summed
log-ratio of the trained model to its reference, and its outcome logit that sum over the
whole response (EOS included), the quantity its training compared. `load_process_model`
loads either kind from its run record; both score as `StepScores`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from align_jax.data.chat import get_template
from align_jax.data.tasks import tokenize_record
from align_jax.eval.math import process_steps, step_end_offsets
from align_jax.models import TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules
from align_jax.rewards.terms import RewardBatch, RewardContext
from align_jax.training.reward import SequenceScorer
from align_jax.training.runs import LoadedRun, load_run, read_run_record

AGGREGATIONS = ("min", "product", "last", "mean")


def sigmoid(x: np.ndarray | float) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def aggregate(probabilities: Sequence[float], how: str) -> float:
  """One solution score from its step probabilities: their min, product, last or mean
  (a solution without a scored step gets 0)."""
  if how not in AGGREGATIONS:
    raise ValueError(f"unknown step-score aggregation {how!r}; expected one of {AGGREGATIONS}")
  values = np.asarray(probabilities, np.float64)
  if values.size == 0:
    return 0.0
  if how == "min":
    return float(values.min())
  if how == "product":
    return float(values.prod())
  if how == "last":
    return float(values[-1])
  return float(values.mean())


def process_rewards(probabilities: Sequence[float], upper_bound: float = 0.5,
                    positive_total: float = 0.25) -> np.ndarray:
  """Per-step rewards from step probabilities (see the module docstring)."""
  values = np.asarray(probabilities, np.float64)
  rewards = np.zeros(len(values))
  running = upper_bound
  for i, p in enumerate(values):
    if p < running:
      rewards[i] = p - running
      running = p
  if len(values):
    rewards += positive_total / len(values)
  return rewards.astype(np.float32)


@dataclasses.dataclass
class StepScores:
  """A solution as the model scored it: its pieces (steps with separators), the logit
  at each step's last token, and the logit at the EOS (an outcome model's score)."""
  steps: list[str]
  logits: np.ndarray
  outcome: float

  @property
  def probabilities(self) -> np.ndarray:
    return sigmoid(self.logits)


class ProcessRewardModel:
  """Scores solutions step by step with a process (or outcome) reward model run."""

  def __init__(self, run: LoadedRun, chat_template: str | None = "plain",
               batch_size: int = 64):
    if run.vocab is None:
      raise ValueError(f"reward model {run.path}: its run names no vocabulary; load it with "
                       "vocabulary=")
    self.run = run
    self.template = get_template(chat_template) if chat_template else None
    self.scorer = SequenceScorer(run.module, run.params, batch_size, run.mesh, run.rules)

  @classmethod
  def load(cls, run_dir: str, *, config: TransformerConfig | None = None,
           vocabulary: str | None = None, mesh=None, rules: LogicalRules = DEFAULT_RULES,
           chat_template: str | None = None, batch_size: int = 64) -> "ProcessRewardModel":
    """A trained run; chat_template None: the one it was trained with."""
    run = load_run(run_dir, config=config, vocabulary=vocabulary, head=True, mesh=mesh,
                   rules=rules)
    template = chat_template or run.record.get("chat_template", "plain")
    return cls(run, template, batch_size)

  def inputs(self, prompt: str, solution: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(pieces, tokens, positions of the step ends) of one solution, rendered as the
    model's process training data was (the EOS is the last token)."""
    pieces = process_steps(solution) or [solution]
    features = tokenize_record({"prompt": prompt, "steps": pieces, "labels": [1] * len(pieces)},
                               "process", self.run.vocab, chat_template=self.template)
    tokens = features["tokens"]
    if len(tokens) > self.run.config.max_seq_len:
      raise ValueError(f"reward model {self.run.path}: a solution takes {len(tokens)} tokens, "
                       f"more than its max_seq_len={self.run.config.max_seq_len}")
    return pieces, tokens, np.flatnonzero(features["label_values"] >= 0)

  def score(self, prompts: Sequence[str], solutions: Sequence[str]) -> list[StepScores]:
    """Each solution's step logits and outcome logit."""
    if len(prompts) != len(solutions):
      raise ValueError(f"{len(prompts)} prompts but {len(solutions)} solutions")
    rendered = [self.inputs(p, s) for p, s in zip(prompts, solutions)]
    scores = self.scorer.token_scores([tokens for _, tokens, _ in rendered])
    return [StepScores(pieces, token_scores[positions], float(token_scores[-1]))
            for (pieces, _, positions), token_scores in zip(rendered, scores)]


class ImplicitProcessRewardModel:
  """Scores solutions step by step with a DPO run's implicit reward (see the module
  docstring): `policy` is the trained run, `reference` the run it was held to."""

  def __init__(self, policy: LoadedRun, reference: LoadedRun, beta: float,
               chat_template: str | None = "plain", batch_size: int = 64):
    if policy.vocab is None:
      raise ValueError(f"implicit reward model {policy.path}: its run names no vocabulary; "
                       "load it with vocabulary=")
    self.policy, self.reference, self.beta = policy, reference, float(beta)
    self.template = get_template(chat_template) if chat_template else None
    self.samplers = [run.sampler(batch_size=batch_size) for run in (policy, reference)]

  @classmethod
  def load(cls, run_dir: str, *, config: TransformerConfig | None = None,
           vocabulary: str | None = None, mesh=None, rules: LogicalRules = DEFAULT_RULES,
           chat_template: str | None = None, batch_size: int = 64
           ) -> "ImplicitProcessRewardModel":
    """A `train_dpo` run and the reference its record names; chat_template None: the
    one it was trained with."""
    policy = load_run(run_dir, config=config, vocabulary=vocabulary, mesh=mesh, rules=rules)
    if policy.record.get("kind") != "dpo" or "reference" not in policy.record:
      raise ValueError(f"{run_dir} is not a train_dpo run (kind {policy.record.get('kind')!r}); "
                       "an implicit reward needs the reference it was trained against")
    reference = load_run(policy.record["reference"], config=config, vocabulary=vocabulary,
                         mesh=mesh, rules=rules)
    template = chat_template or policy.record.get("chat_template", "plain")
    return cls(policy, reference, policy.record["dpo_beta"], template, batch_size)

  def inputs(self, prompt: str, solution: str) -> tuple[list[str], list[int], list[int],
                                                         list[int]]:
    """(pieces, prompt tokens, response tokens, index of each piece's last response
    token) of one solution, rendered as a preference side of its training data (the
    pieces joined: a solution in the step format is unchanged)."""
    pieces = process_steps(solution) or [solution]
    features = tokenize_record({"prompt": prompt, "response": "".join(pieces)}, "sft",
                               self.policy.vocab, chat_template=self.template)
    tokens, trained = features["tokens"], np.flatnonzero(features["loss_mask"])
    if len(tokens) > self.policy.config.max_seq_len:
      raise ValueError(f"implicit reward model {self.policy.path}: a solution takes "
                       f"{len(tokens)} tokens, more than its max_seq_len="
                       f"{self.policy.config.max_seq_len}")
    start = int(trained[0]) if len(trained) else len(tokens)
    response = [int(t) for t in tokens[start:]]
    ends = np.cumsum([len(piece) for piece in pieces])
    scored = response and "".join(pieces)  # an empty solution has no step to score
    positions = [token_at(self.policy.vocab, response, int(end)) for end in ends] if scored \
        else []
    return pieces, [int(t) for t in tokens[:start]], response, positions

  def score(self, prompts: Sequence[str], solutions: Sequence[str]) -> list[StepScores]:
    """Each solution's step logits (the implicit reward up to each step's end) and its
    outcome logit (the implicit reward of the whole response)."""
    if len(prompts) != len(solutions):
      raise ValueError(f"{len(prompts)} prompts but {len(solutions)} solutions")
    rendered = [self.inputs(p, s) for p, s in zip(prompts, solutions)]
    heads = [r[1] for r in rendered]
    bodies = [r[2] for r in rendered]
    policy, reference = (sampler.score(heads, bodies) for sampler in self.samplers)
    out = []
    for (pieces, _, _, positions), a, b in zip(rendered, policy, reference):
      total = np.cumsum(self.beta * (np.asarray(a, np.float64) - np.asarray(b, np.float64)))
      logits = total[positions] if len(total) else np.zeros(0)
      out.append(StepScores(pieces, logits.astype(np.float32),
                            float(total[-1]) if len(total) else 0.0))
    return out


def load_process_model(run_dir: str, **options) -> ProcessRewardModel | ImplicitProcessRewardModel:
  """The process scorer a run is: an implicit one for a `train_dpo` run, otherwise a
  reward model with a head (options as their `load`)."""
  kind = read_run_record(run_dir).get("kind")
  loader = ImplicitProcessRewardModel if kind == "dpo" else ProcessRewardModel
  return loader.load(run_dir, **options)


def token_at(vocab, tokens: Sequence[int], offset: int) -> int:
  """The first token whose text, decoded with every token before it, reaches `offset`
  characters (the last token when none does); a binary search over prefix decodings."""
  ids = [int(t) for t in tokens]
  lo, hi = 0, len(ids) - 1
  while lo < hi:
    mid = (lo + hi) // 2
    if len(vocab.decode(ids[:mid + 1])) >= offset:
      hi = mid
    else:
      lo = mid + 1
  return lo


class ProcessRewardTerm:
  """A PRM's process reward as a dense PPO reward term (see the module docstring).

  run: the process reward model's run (a head's, or a `train_dpo` run read as an
  implicit process reward model); scale multiplies the rewards.
  """

  def __init__(self, run: str, *, upper_bound: float = 0.5, positive_total: float = 0.25,
               scale: float = 1.0, batch_size: int = 64):
    self.run_dir, self.upper_bound, self.positive_total = run, upper_bound, positive_total
    self.scale, self.batch_size = scale, batch_size
    self.model: ProcessRewardModel | ImplicitProcessRewardModel | None = None
    self.policy_vocab = None

  def setup(self, context: RewardContext) -> None:
    if self.model is None:
      self.model = load_process_model(self.run_dir, mesh=context.mesh,
                                      rules=context.rules or DEFAULT_RULES,
                                      batch_size=self.batch_size)
      self.policy_vocab = context.policy_vocab

  def __call__(self, batch: RewardBatch) -> np.ndarray:
    if self.model is None:
      raise RuntimeError("ProcessRewardTerm.setup(context) must run before scoring")
    if batch.response_tokens is None or self.policy_vocab is None:
      raise ValueError("ProcessRewardTerm places rewards on policy tokens; the batch needs "
                       "response_tokens and the context the policy's vocabulary")
    dense = np.zeros((len(batch), batch.response_length), np.float32)
    scored = self.model.score(batch.prompts, batch.responses)
    tokens = np.asarray(batch.response_tokens)
    for i, (scores, response) in enumerate(zip(scored, batch.responses)):
      length = int(batch.response_lengths[i])
      offsets = step_end_offsets(response)
      count = min(len(offsets), max(len(scores.steps) - 1, 0), len(scores.logits))
      if count == 0 or length == 0:
        continue
      rewards = process_rewards(scores.probabilities[:count], self.upper_bound,
                                self.positive_total)
      for reward, offset in zip(rewards, offsets[:count]):
        position = token_at(self.policy_vocab, tokens[i, :length], offset)
        dense[i, position] += self.scale * reward
    return dense
