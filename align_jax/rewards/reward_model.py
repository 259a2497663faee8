"""Reward models as reward terms, each building its own input.

A `RewardModelTerm` loads a `train_reward_model` run (any run kind `load_run` reads),
turns a `RewardBatch` into its own model input with an *input builder*, scores it at
the last token and applies the run's stored normalisation. So the reward model may
use another vocabulary or chat template than the policy, or see more than the
response (principles after it, reference facts), without PPO knowing.

Input builders are `builder(batch, vocab) -> list[list[int]]`, one token sequence
per example, in the reward model's vocabulary:

- `policy_tokens()`: the policy's own prompt and response ids (only valid when the
  reward model shares the policy's vocabulary and template; the default then);
- `text_input(chat_template, suffix)`: prompt and response rendered as a user and an
  assistant turn with the reward model's vocabulary and template, exactly as
  `train_reward_model` rendered its preference data, plus optional text after the
  response built from each example's metadata.

The normalisation protocol: `fit_reward_normalization` scores reference-policy samples
(raw), fits gain and bias so they have mean 0 and std 1, and stores them beside the
run in `reward_normalization.json`; every later load applies them.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import seqio

from align_jax import fs
from align_jax.data.chat import get_template
from align_jax.data.tasks import tokenize_record
from align_jax.models import TransformerConfig, TransformerWithHead
from align_jax.parallel import DEFAULT_RULES, LogicalRules
from align_jax.rewards.terms import RewardBatch, RewardContext
from align_jax.training.reward import SequenceScorer, fit_normalization, last_token_index
from align_jax.training.runs import LoadedRun, load_run, vocabulary_record

NORMALIZATION_FILE = "reward_normalization.json"

InputBuilder = Callable[[RewardBatch, seqio.Vocabulary], list[list[int]]]


def policy_tokens() -> InputBuilder:
  """The policy's prompt ids followed by its response ids (up to each length)."""
  def build(batch: RewardBatch, vocab: seqio.Vocabulary) -> list[list[int]]:
    del vocab
    if batch.prompt_tokens is None or batch.response_tokens is None:
      raise ValueError("policy_tokens() needs the batch's prompt_tokens and response_tokens")
    return [list(map(int, p)) + [int(t) for t in r[:n]] for p, r, n in zip(
        batch.prompt_tokens, np.asarray(batch.response_tokens), batch.response_lengths)]
  return build


def text_input(chat_template: str | None = "plain",
               suffix: Callable[[Mapping[str, Any]], str] | None = None) -> InputBuilder:
  """Prompt and response as a conversation in the reward model's own vocabulary and chat
  template; `suffix(metadata)` adds text after it (e.g. the principles to judge by)."""
  template = get_template(chat_template) if chat_template else None

  def build(batch: RewardBatch, vocab: seqio.Vocabulary) -> list[list[int]]:
    sequences = []
    for prompt, response, meta in zip(batch.prompts, batch.responses, batch.metadata):
      ids = tokenize_record({"prompt": prompt, "response": response}, "sft", vocab,
                            chat_template=template)["tokens"].tolist()
      if suffix is not None:
        ids += [int(i) for i in vocab.encode(suffix(meta))]
      sequences.append(ids)
    return sequences
  return build


def last_token_scores(model: TransformerWithHead, params: Any,
                      batch: Mapping[str, jax.Array]) -> jax.Array:
  """A reward model's score at each row's last real token, float32 [batch]."""
  scores = model.apply({"params": params}, batch["tokens"], batch["positions"],
                       batch["segment_ids"])
  last = last_token_index(batch["segment_ids"] > 0)
  return jnp.take_along_axis(scores, last[:, None], axis=1)[:, 0]


def read_normalization(run_dir: str) -> dict[str, float] | None:
  """The gain and bias stored beside a reward model run (None when it has none)."""
  path = fs.join(run_dir, NORMALIZATION_FILE)
  if not fs.exists(path):
    return None
  with fs.open(path) as f:
    try:
      values = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: invalid JSON ({e})") from None
  if set(values) != {"gain", "bias"}:
    raise ValueError(f"{path}: expected the keys 'gain' and 'bias', got {sorted(values)}")
  return {"gain": float(values["gain"]), "bias": float(values["bias"])}


class RewardModelTerm:
  """A reward model run as a reward term (see the module docstring).

  run: the reward model (a `train_reward_model` run directory).
  input_builder: None picks `policy_tokens()` when the reward model was trained with
    the policy's vocabulary and chat template, else `text_input` with its own.
  vocabulary: the reward model's vocabulary when its run does not record one.
  normalize: apply the stored normalisation (False: raw scores, used to fit it).
  """

  def __init__(self, run: str, *, input_builder: InputBuilder | None = None,
               vocabulary: str | None = None, config: TransformerConfig | None = None,
               batch_size: int = 64, normalize: bool = True):
    self.run_dir = run
    self.input_builder = input_builder
    self.vocabulary = vocabulary
    self.config = config
    self.batch_size = batch_size
    self.normalize = normalize
    self.run: LoadedRun | None = None
    self.normalization = {"gain": 1.0, "bias": 0.0}
    self._scorer: SequenceScorer | None = None

  @classmethod
  def from_loaded(cls, run: LoadedRun, input_builder: InputBuilder, batch_size: int = 64,
                  normalization: Mapping[str, float] | None = None) -> "RewardModelTerm":
    """A term over a reward model already in memory (e.g. for benchmarks)."""
    term = cls(run.path, input_builder=input_builder, batch_size=batch_size)
    term.run = run
    term.normalization = dict(normalization or term.normalization)
    term._scorer = SequenceScorer(run.module, run.params, batch_size, run.mesh, run.rules)
    return term

  def setup(self, context: RewardContext) -> None:
    """Loads the run onto the context's mesh and picks the input builder."""
    if self.run is not None:
      return
    self.run = load_run(self.run_dir, config=self.config, vocabulary=self.vocabulary, head=True,
                        mesh=context.mesh, rules=context.rules or DEFAULT_RULES)
    if self.run.vocab is None:
      # A run that does not name its vocabulary file: the policy's, if it is the same one.
      recorded = self.run.record.get("vocabulary")
      if context.policy_vocab is None or recorded != vocabulary_record(context.policy_vocab):
        raise ValueError(f"reward model {self.run_dir}: its run names no vocabulary file and "
                         "was not trained with the policy's; pass vocabulary=")
      self.run.vocab = context.policy_vocab
    if self.normalize:
      self.normalization = read_normalization(self.run.path) or self.normalization
    if self.input_builder is None:
      template = self.run.record.get("chat_template", context.chat_template)
      same_vocab = (context.policy_vocab is not None and vocabulary_record(context.policy_vocab)
                    == vocabulary_record(self.run.vocab))
      self.input_builder = (policy_tokens() if same_vocab and template == context.chat_template
                            else text_input(template))
    self._scorer = SequenceScorer(self.run.module, self.run.params, self.batch_size,
                                  self.run.mesh, self.run.rules)

  def inputs(self, batch: RewardBatch) -> list[list[int]]:
    """The token sequences the reward model scores for `batch`."""
    self._require_setup()
    return self.input_builder(batch, self.run.vocab)

  def raw_scores(self, batch: RewardBatch) -> np.ndarray:
    """Scores before normalisation, float32 [batch]."""
    sequences = self.inputs(batch)
    max_len = self.run.config.max_seq_len
    too_long = [i for i, s in enumerate(sequences) if len(s) > max_len]
    if too_long:
      raise ValueError(f"reward model {self.run_dir}: input {too_long[0]} has "
                       f"{len(sequences[too_long[0]])} tokens, more than its max_seq_len="
                       f"{max_len}")
    return self._scorer(sequences)

  def __call__(self, batch: RewardBatch) -> np.ndarray:
    gain, bias = self.normalization["gain"], self.normalization["bias"]
    return (self.raw_scores(batch) * gain + bias).astype(np.float32)

  def _require_setup(self) -> None:
    if self.run is None:
      raise RuntimeError("RewardModelTerm.setup(context) must run before scoring (train_ppo "
                         "and CompositeReward.setup do it)")


def reward_model_term(run: str | None = None, *, input_builder: InputBuilder | None = None,
                      vocabulary: str | None = None, batch_size: int = 64) -> Any:
  """gin factory of a `RewardModelTerm`; run None: `train_ppo`'s reward_model run."""
  if run is None:
    return _DeferredRewardModel(input_builder=input_builder, vocabulary=vocabulary,
                                batch_size=batch_size)
  return RewardModelTerm(run, input_builder=input_builder, vocabulary=vocabulary,
                         batch_size=batch_size)


class _DeferredRewardModel(RewardModelTerm):
  """A reward model term whose run is the trainer's `reward_model` (set by the trainer)."""

  def __init__(self, **kwargs):
    super().__init__("", **kwargs)

  def setup(self, context: RewardContext) -> None:
    if not self.run_dir:
      raise ValueError("reward_model_term() without a run needs train_ppo.reward_model (a "
                       "train_reward_model run)")
    super().setup(context)


def batch_from_records(records: Sequence[Mapping[str, Any]]) -> RewardBatch:
  """A text-only RewardBatch of {"prompt", "response", ...} records (for scoring data
  outside PPO, e.g. reference samples)."""
  return RewardBatch(prompts=[r["prompt"] for r in records],
                     responses=[r["response"] for r in records],
                     response_lengths=np.zeros(len(records), np.int32),
                     finished=np.ones(len(records), bool), metadata=list(records))


def fit_reward_normalization(run_dir: str, samples: Sequence[Mapping[str, Any]], *,
                             chat_template: str | None = "plain", mesh=None,
                             rules: LogicalRules = DEFAULT_RULES,
                             input_builder: InputBuilder | None = None) -> dict[str, float]:
  """Fits and stores (beside the run) the gain and bias that give reference-policy
  `samples` ({"prompt", "response"} and the metadata `input_builder` reads; default
  builder: `text_input(chat_template)`) mean 0 and std 1; a stored fit is kept as is."""
  existing = read_normalization(run_dir)
  if existing is not None:
    return existing
  term = RewardModelTerm(run_dir, input_builder=input_builder or text_input(chat_template),
                         normalize=False)
  term.setup(RewardContext(mesh=mesh, rules=rules))
  normalization = fit_normalization(term.raw_scores(batch_from_records(samples)))
  if jax.process_index() == 0:
    fs.write_atomically(fs.join(run_dir, NORMALIZATION_FILE), json.dumps(normalization))
  return normalization


def load_reward_model(run_dir: str, config: TransformerConfig, mesh, rules: LogicalRules,
                      vocab_record: Mapping[str, Any] | None = None
                      ) -> tuple[TransformerWithHead, Any, dict[str, float]]:
  """(module, parameters, normalisation) of a reward model run, for scoring by hand."""
  del vocab_record  # load_run checks the run's own recorded vocabulary
  run = load_run(run_dir, config=config, head=True, mesh=mesh, rules=rules)
  return run.module, run.params, read_normalization(run.path) or {"gain": 1.0, "bias": 0.0}
