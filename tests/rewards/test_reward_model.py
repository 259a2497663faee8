"""A reward model as a reward term that builds its own input in its own vocabulary."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from align_jax.data.chat import get_template
from align_jax.data.tasks import tokenize_record
from align_jax.data.vocab import load_vocabulary, train_sentencepiece
from align_jax.models import TransformerConfig
from align_jax.parallel import create_mesh
from align_jax.rewards import (NORMALIZATION_FILE, CompositeReward, RewardBatch, RewardContext,
                               RewardModelTerm, fit_reward_normalization, text_input)
from align_jax.rewards.reward_model import batch_from_records, policy_tokens
from align_jax.training import DataConfig, LoopConfig, OptimizerConfig, load_run, train_reward_model
from hf_fixtures import words_corpus

CONFIG = TransformerConfig(vocab_size=320, num_layers=1, d_model=32, num_heads=4, num_kv_heads=2,
                           head_dim=8, mlp_dim=64, max_seq_len=256, pad_id=0, eos_id=1, bos_id=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("reward_model")
  # The policy's vocabulary and the reward model's own, trained on other text (with the
  # markers of its 'chatml' template as single tokens).
  train_sentencepiece(words_corpus(300, seed=0), str(root / "policy_spm"), 300)
  train_sentencepiece([t + " principle: be brief" for t in words_corpus(300, seed=7)],
                      str(root / "reward_spm"), 300,
                      user_defined_symbols=["<|im_start|>", "<|im_end|>"])
  texts = words_corpus(120, seed=3)
  pairs = root / "pairs.jsonl"
  pairs.write_text("".join(json.dumps({"prompt": t, "chosen": t + " cat", "rejected": t + " dog"})
                           + "\n" for t in texts))
  train_reward_model(str(root / "reward"), CONFIG,
                     DataConfig(kind="preference", train_files=str(pairs), pack=False,
                                chat_template="chatml", batch_size=8, seq_len=160),
                     str(root / "reward_spm.model"),
                     OptimizerConfig(learning_rate=1e-3, warmup_steps=0, total_steps=4),
                     LoopConfig(total_steps=4, checkpoint_every=4, progress_bar=False,
                                async_checkpoints=False))
  return root


def _batch(policy_vocab):
  prompts, responses = ["the cat sat", "a red bird flew"], ["on the mat", "under the tree"]
  prompt_tokens = [list(policy_vocab.encode(p)) for p in prompts]
  encoded = [list(policy_vocab.encode(r)) for r in responses]
  width = max(map(len, encoded)) + 2
  response_tokens = np.zeros((2, width), np.int32)
  for i, ids in enumerate(encoded):
    response_tokens[i, :len(ids)] = ids
  return RewardBatch(prompts=prompts, responses=responses,
                     response_lengths=np.array([len(e) for e in encoded]),
                     finished=np.array([True, True]),
                     metadata=[{"principle": "be brief"}, {"principle": "be kind"}],
                     prompt_tokens=prompt_tokens, response_tokens=response_tokens)


def test_a_reward_model_with_its_own_vocabulary_scores_the_text_it_built(setup):
  mesh = create_mesh()
  policy_vocab = load_vocabulary(str(setup / "policy_spm.model"))
  reward_vocab = load_vocabulary(str(setup / "reward_spm.model"))
  suffix = lambda meta: "\nprinciple: " + meta["principle"]  # noqa: E731
  term = RewardModelTerm(str(setup / "reward"), input_builder=text_input("chatml", suffix))
  reward = CompositeReward({"reward_model": (term, 1.0)})
  reward.setup(RewardContext(mesh=mesh, policy_vocab=policy_vocab, chat_template="plain"))
  batch = _batch(policy_vocab)
  scores, logged = reward(batch)

  # By hand: the conversation in the reward model's template and vocabulary, then the
  # principle; the reward model's score at the last token.
  run = load_run(str(setup / "reward"), mesh=mesh)
  expected = []
  for prompt, response, meta in zip(batch.prompts, batch.responses, batch.metadata):
    ids = tokenize_record({"prompt": prompt, "response": response}, "sft", reward_vocab,
                          chat_template=get_template("chatml"))["tokens"].tolist()
    ids += list(reward_vocab.encode(suffix(meta)))
    assert ids in term.inputs(batch)
    out = run.module.apply({"params": run.params}, jnp.asarray([ids], jnp.int32))
    expected.append(float(out[0, -1]))
  np.testing.assert_allclose(scores, expected, atol=1e-5)
  assert logged["reward/reward_model"] == pytest.approx(np.mean(expected), abs=1e-5)


def test_the_default_input_is_the_policys_tokens_only_when_vocabulary_and_template_match(setup):
  mesh = create_mesh()
  reward_vocab = load_vocabulary(str(setup / "reward_spm.model"))
  same = RewardModelTerm(str(setup / "reward"))
  same.setup(RewardContext(mesh=mesh, policy_vocab=reward_vocab, chat_template="chatml"))
  batch = _batch(reward_vocab)
  assert same.inputs(batch) == policy_tokens()(batch, reward_vocab)
  other = RewardModelTerm(str(setup / "reward"))
  other.setup(RewardContext(mesh=mesh, policy_vocab=load_vocabulary(
      str(setup / "policy_spm.model")), chat_template="plain"))
  assert other.inputs(batch) == text_input("chatml")(batch, reward_vocab)


def test_the_stored_normalisation_maps_reference_samples_to_mean_0_std_1(setup, tmp_path):
  import shutil
  run = tmp_path / "reward"
  shutil.copytree(setup / "reward", run)
  samples = [{"prompt": t, "response": t + (" cat" if i % 2 else " dog")}
             for i, t in enumerate(words_corpus(40, seed=11))]
  fitted = fit_reward_normalization(str(run), samples, chat_template="chatml",
                                    mesh=create_mesh())
  assert json.load(open(run / NORMALIZATION_FILE)) == fitted
  term = RewardModelTerm(str(run), input_builder=text_input("chatml"))
  term.setup(RewardContext(mesh=create_mesh()))
  normalised = term(batch_from_records(samples))
  assert abs(normalised.mean()) < 1e-4 and abs(normalised.std() - 1.0) < 1e-3
  # A second fit keeps the stored one.
  assert fit_reward_normalization(str(run), samples[:5], chat_template="chatml",
                                  mesh=create_mesh()) == fitted
