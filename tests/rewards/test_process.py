"""Process reward models: where step labels and scores sit, aggregation, the dense
process reward, on hand-worked cases."""

import jax
import numpy as np
import pytest

from align_jax.data.chat import get_template
from align_jax.data.tasks import tokenize_record
from align_jax.data.vocab import train_sentencepiece
from align_jax.eval.math import process_steps
from align_jax.models import Transformer, TransformerConfig, TransformerWithHead
from align_jax.models.init import init_params
from align_jax.parallel import DEFAULT_RULES, create_mesh
from align_jax.rewards import (ImplicitProcessRewardModel, ProcessRewardModel, ProcessRewardTerm,
                               RewardBatch, aggregate, process_rewards)
from align_jax.training.runs import LoadedRun
from align_jax.worlds.leveled_math import LeveledMathConfig, build_world

SOLUTION = "17+5=22\n\n22*3=66\n\n66-8=58\n\n# Answer\n\n58"
PROMPT = "Compute from left to right: 17+5*3-8"
CONFIG = TransformerConfig(vocab_size=320, num_layers=1, d_model=32, num_heads=4, num_kv_heads=2,
                           head_dim=8, mlp_dim=64, max_seq_len=128)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  """The world's kind of vocabulary: BPE, digits split, newlines kept, no dummy prefix."""
  world = build_world(LeveledMathConfig(num_sft=100, num_label=0, num_rl=5, num_eval=5))
  prefix = str(tmp_path_factory.mktemp("vocab") / "spm")
  return train_sentencepiece(world.texts(), prefix, 300, model_type="bpe", extra_options={
      "split_digits": True, "normalization_rule_name": "identity",
      "remove_extra_whitespaces": False, "add_dummy_prefix": False,
      "user_defined_symbols": "\n", "hard_vocab_limit": False})


def test_aggregations_on_hand_cases():
  probabilities = [0.9, 0.5, 0.8]
  assert aggregate(probabilities, "min") == pytest.approx(0.5)
  assert aggregate(probabilities, "product") == pytest.approx(0.36)
  assert aggregate(probabilities, "last") == pytest.approx(0.8)
  assert aggregate(probabilities, "mean") == pytest.approx(2.2 / 3)
  assert aggregate([], "min") == 0.0
  with pytest.raises(ValueError, match="unknown step-score aggregation 'max'"):
    aggregate(probabilities, "max")


def test_process_reward_is_the_running_minimums_drops_plus_a_step_bonus():
  # Running minimum from 0.5: 0.9 no drop; 0.4 drops 0.1; 0.6 none; 0.2 drops 0.2;
  # every step gets 0.25 / 4.
  np.testing.assert_allclose(process_rewards([0.9, 0.4, 0.6, 0.2]),
                             [0.0625, -0.0375, 0.0625, -0.1375], atol=1e-7)
  # Steps that all look right earn 0.25 in total; none scored, nothing.
  assert process_rewards([0.8, 0.9, 0.7]).sum() == pytest.approx(0.25)
  assert process_rewards([]).shape == (0,)
  np.testing.assert_allclose(process_rewards([0.3], upper_bound=1.0, positive_total=0.0),
                             [-0.7], atol=1e-7)


def test_step_labels_sit_on_each_separators_last_newline_and_the_answers_last_token(vocab):
  pieces = process_steps(SOLUTION)
  assert pieces == ["17+5=22\n\n", "22*3=66\n\n", "66-8=58\n\n", "# Answer\n\n58"]
  features = tokenize_record({"prompt": PROMPT, "steps": pieces, "labels": [1, 1, 0, 0]},
                             "process", vocab, chat_template=get_template("plain"))
  tokens, values = features["tokens"], features["label_values"]
  positions = np.flatnonzero(values >= 0)
  assert values[positions].tolist() == [1, 1, 0, 0]
  pieces_at = [vocab.decode([int(t)]) for t in tokens]
  for p in positions[:3]:  # the second newline of a blank line
    assert pieces_at[p] == "\n" and pieces_at[p - 1] == "\n"
  assert pieces_at[positions[3]] == "8" and pieces_at[positions[3] - 1] == "5"
  assert tokens[-1] == 1 and values[-1] == -1  # EOS: no step label
  # The steps tokenized one by one are the solution's own tokens (no dummy prefix).
  start = len(tokenize_record({"prompt": PROMPT}, "prompt", vocab,
                              chat_template=get_template("plain"))["prompt_tokens"])
  assert tokens[start:-1].tolist() == [int(t) for t in vocab.encode(SOLUTION)]
  # An outcome record: one label, on the EOS.
  outcome = tokenize_record({"prompt": PROMPT, "response": SOLUTION, "label": 1}, "process",
                            vocab, chat_template=get_template("plain"))["label_values"]
  assert np.flatnonzero(outcome >= 0).tolist() == [len(outcome) - 1]


@pytest.fixture(scope="module")
def prm(vocab):
  module = TransformerWithHead(CONFIG)
  params = init_params(module, jax.random.key(0))
  run = LoadedRun("prm", CONFIG, params, vocab, {"kind": "process"}, create_mesh(),
                  DEFAULT_RULES, head=True)
  return ProcessRewardModel(run, "plain", batch_size=2)


def test_the_prm_reads_its_scores_where_the_labels_were(prm, vocab):
  short = "3+4=7\n\n# Answer\n\n7"
  scored = prm.score([PROMPT, PROMPT, "Compute from left to right: 3+4"],
                     [SOLUTION, "", short])  # three rows: two batches of 2, with padding
  for (prompt, solution), result in zip([(PROMPT, SOLUTION), ("Compute from left to right: 3+4",
                                                              short)], [scored[0], scored[2]]):
    _, tokens, positions = prm.inputs(prompt, solution)
    per_token = np.asarray(prm.run.module.apply({"params": prm.run.params},
                                                np.asarray(tokens)[None]))[0]
    np.testing.assert_allclose(result.logits, per_token[positions], atol=1e-5)
    assert result.outcome == pytest.approx(float(per_token[-1]), abs=1e-5)
  assert len(scored[0].logits) == 4 and len(scored[2].logits) == 2
  assert scored[1].steps == [""] and len(scored[1].logits) == 0  # nothing to score


def test_process_reward_term_puts_each_steps_reward_on_the_policys_separator_token(prm, vocab):
  term = ProcessRewardTerm("prm", scale=2.0)
  term.model, term.policy_vocab = prm, vocab
  unfinished = "17+5=22\n\n22*3=6"
  responses = [SOLUTION, unfinished]
  encoded = [[int(t) for t in vocab.encode(r)] for r in responses]
  width = max(map(len, encoded)) + 3
  tokens = np.zeros((2, width), np.int32)
  for i, ids in enumerate(encoded):
    tokens[i, :len(ids)] = ids
  batch = RewardBatch(prompts=[PROMPT, PROMPT], responses=responses,
                      response_lengths=np.array([len(e) for e in encoded]),
                      finished=np.array([True, False]), metadata=[{}, {}],
                      response_tokens=tokens)
  dense = term(batch)
  assert dense.shape == (2, width)
  for i, response in enumerate(responses):
    pieces = [vocab.decode([t]) for t in encoded[i]]
    separators = [k for k in range(1, len(pieces)) if pieces[k] == "\n" and pieces[k - 1] == "\n"
                  and "# Answer" not in vocab.decode(encoded[i][:k - 1]).split("\n\n")[-1]]
    probabilities = prm.score([PROMPT], [response])[0].probabilities
    expected = 2.0 * process_rewards(probabilities[:len(separators)])
    assert np.flatnonzero(dense[i]).tolist() == separators
    np.testing.assert_allclose(dense[i, separators], expected, atol=1e-6)
  assert len(np.flatnonzero(dense[0])) == 3 and len(np.flatnonzero(dense[1])) == 1


@pytest.fixture(scope="module")
def implicit(vocab):
  module = Transformer(CONFIG)
  policy, reference = (LoadedRun(name, CONFIG, init_params(module, jax.random.key(key)), vocab,
                                 {"kind": "dpo"}, create_mesh(), DEFAULT_RULES)
                       for name, key in (("policy", 1), ("reference", 2)))
  return ImplicitProcessRewardModel(policy, reference, 0.5, "plain", batch_size=2)


def _token_logprobs(run, tokens):
  logits = np.asarray(run.module.apply({"params": run.params}, np.asarray(tokens)[None])[0],
                      np.float64)
  top = logits.max(-1, keepdims=True)
  logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
  return np.array([logp[i - 1, tokens[i]] for i in range(1, len(tokens))])


def test_the_implicit_prm_sums_the_log_ratio_up_to_each_steps_last_token(implicit, vocab):
  short_prompt, short = "Compute from left to right: 3+4", "3+4=7\n\n# Answer\n\n7"
  scored = implicit.score([PROMPT, PROMPT, short_prompt], [SOLUTION, "", short])
  for prompt, solution, steps, result in ((PROMPT, SOLUTION, 4, scored[0]),
                                          (short_prompt, short, 2, scored[2])):
    features = tokenize_record({"prompt": prompt, "response": solution}, "sft", vocab,
                               chat_template=get_template("plain"))
    tokens = features["tokens"]
    start = int(np.flatnonzero(features["loss_mask"])[0])
    assert tokens[-1] == 1  # the EOS is part of the response the reward sums over
    ratio = 0.5 * (_token_logprobs(implicit.policy, tokens)
                   - _token_logprobs(implicit.reference, tokens))[start - 1:]
    total = np.cumsum(ratio)
    # By hand: each step ends on its separator's second newline; the answer block (whose
    # blank line ends no step) on its last token, the one before the EOS.
    pieces = [vocab.decode([int(t)]) for t in tokens[start:]]
    blank = [k for k in range(1, len(pieces)) if pieces[k] == "\n" == pieces[k - 1]]
    ends = blank[:steps - 1] + [len(pieces) - 2]
    np.testing.assert_allclose(result.logits, total[ends], rtol=1e-4, atol=1e-4)
    assert result.outcome == pytest.approx(float(total[-1]), rel=1e-4, abs=1e-4)
    assert result.steps == process_steps(solution)
  assert len(scored[1].logits) == 0  # an empty solution has no step to score
