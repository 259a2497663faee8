"""Direct preference optimisation: the loss against numpy on a hand-built batch, the frozen
reference, and gin/runs/dpo.gin end to end (a learning check and what its record keeps)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from align_jax import main as entry
from align_jax.data.jsonl import write_jsonl
from align_jax.data.vocab import train_sentencepiece
from align_jax.models import Transformer, TransformerConfig, init_params
from align_jax.rewards import ImplicitProcessRewardModel, load_process_model
from align_jax.training import DataConfig, dpo_loss_sums, load_run, train_dpo
from align_jax.training.dpo import REFERENCE_KEY
from align_jax.training.runs import read_run_record
from hf_fixtures import words_corpus
from training_fixtures import TINY_MODEL_FLAGS

CONFIG = TransformerConfig(vocab_size=320, num_layers=1, d_model=32, num_heads=4, num_kv_heads=2,
                           head_dim=8, mlp_dim=64, max_seq_len=64, pad_id=0, eos_id=1, bos_id=2)


def _side(rng, rows, length, prompt):
  """Shifted features of `rows` sequences: the first `prompt` targets untrained, the last
  row padding."""
  tokens = rng.integers(3, CONFIG.vocab_size, (rows, length + 1)).astype(np.int32)
  weights = np.ones((rows, length), np.float32)
  weights[:, :prompt] = 0
  segments = np.ones((rows, length), np.int32)
  segments[-1], weights[-1] = 0, 0
  return {"input_tokens": tokens[:, :-1], "target_tokens": tokens[:, 1:],
          "loss_weights": weights, "segment_ids": segments,
          "positions": np.broadcast_to(np.arange(length), (rows, length)).astype(np.int32)}


def _logprobs(module, params, side):
  """Summed log p(target) over the weighted targets, with numpy's log-softmax."""
  logits = np.asarray(module.apply({"params": params}, side["input_tokens"], side["positions"],
                                   side["segment_ids"]), np.float64)
  top = logits.max(-1, keepdims=True)
  logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
  picked = np.take_along_axis(logp, side["target_tokens"][..., None], -1)[..., 0]
  return (picked * side["loss_weights"]).sum(-1)


def test_the_loss_is_minus_log_sigmoid_of_the_implicit_reward_margin():
  module = Transformer(CONFIG)
  policy = init_params(module, jax.random.key(0))
  reference = init_params(module, jax.random.key(1))
  rng = np.random.default_rng(0)
  batch = {f"{side}_{k}": v for side in ("chosen", "rejected")
           for k, v in _side(rng, 3, 10, 4).items()}
  beta = 0.3
  total, weight, aux = dpo_loss_sums(module, {**policy, REFERENCE_KEY: reference}, batch, beta)
  sides = {s: {k[len(s) + 1:]: v for k, v in batch.items() if k.startswith(s)}
           for s in ("chosen", "rejected")}
  rewards = {s: beta * (_logprobs(module, policy, sides[s]) - _logprobs(module, reference,
                                                                        sides[s]))[:2]
             for s in sides}  # the padding row is not a pair
  margin = rewards["chosen"] - rewards["rejected"]
  assert float(weight) == 2.0
  assert float(total) == pytest.approx(float(np.sum(np.log1p(np.exp(-margin)))), rel=1e-5)
  assert float(aux["margin"]) == pytest.approx(float(margin.sum()), rel=1e-4, abs=1e-5)
  assert float(aux["chosen_reward"]) == pytest.approx(float(rewards["chosen"].sum()),
                                                      rel=1e-4, abs=1e-5)
  assert float(aux["correct"]) == float((margin > 0).sum())
  # Held to itself, every pair is a coin toss: log 2 each, no margin.
  total, weight, aux = dpo_loss_sums(module, {**policy, REFERENCE_KEY: policy}, batch, beta)
  assert float(total) == pytest.approx(2 * np.log(2), rel=1e-6)
  assert float(aux["margin"]) == pytest.approx(0.0, abs=1e-6)
  # The reference gets no gradient; the policy does.
  grads = jax.grad(lambda p: dpo_loss_sums(module, p, batch, beta)[0])(
      {**policy, REFERENCE_KEY: reference})
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads[REFERENCE_KEY]))
  assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(
      {k: v for k, v in grads.items() if k != REFERENCE_KEY}))
  with pytest.raises(ValueError, match="under 'reference'"):
    dpo_loss_sums(module, policy, batch, beta)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """An SFT run and a DPO run from it, both through their gin files."""
  root = tmp_path_factory.mktemp("dpo")
  texts = words_corpus(300)
  train_sentencepiece(texts, str(root / "spm"), 300)
  vocab = str(root / "spm.model")
  write_jsonl(str(root / "sft.jsonl"), [{"prompt": "repeat: " + t, "response": t}
                                        for t in texts[:120]])
  # The same two endings everywhere: the preferred one is learnable at once.
  short = [" ".join(t.split()[:4]) for t in texts[:160]]  # nothing truncated
  pairs = [{"prompt": t, "chosen": t + " cat", "rejected": t + " dog"} for t in short]
  write_jsonl(str(root / "train.jsonl"), pairs[:128])
  write_jsonl(str(root / "eval.jsonl"), pairs[128:])
  common = TINY_MODEL_FLAGS + ["--gin.DataConfig.batch_size=8", "--gin.DataConfig.seq_len=64",
                               "--gin.LoopConfig.progress_bar=False", f"--gin.VOCABULARY='{vocab}'"]
  entry.main(common + ["--gin_file=gin/runs/sft.gin", f"--gin.WORKDIR='{root / 'sft'}'",
                       "--gin.INIT_FROM=None", f"--gin.TRAIN_DATA='{root / 'sft.jsonl'}'",
                       "--gin.STEPS=20", "--gin.OptimizerConfig.learning_rate=3e-3",
                       "--gin.OptimizerConfig.warmup_steps=2"])
  before = load_run(str(root / "sft")).params
  summary = entry.main(common + [
      "--gin_file=gin/runs/dpo.gin", f"--gin.WORKDIR='{root / 'dpo'}'",
      f"--gin.INIT_FROM='{root / 'sft'}'", f"--gin.TRAIN_DATA='{root / 'train.jsonl'}'",
      f"--gin.EVAL_DATA='{root / 'eval.jsonl'}'", "--gin.STEPS=16", "--gin.BETA=0.2",
      "--gin.OptimizerConfig.learning_rate=1e-3", "--gin.OptimizerConfig.warmup_steps=0",
      "--gin.LoopConfig.checkpoint_every=16"])
  return {"root": root, "vocab": vocab, "summary": summary, "before": before,
          "pairs": pairs[128:]}


def test_train_dpo_learns_the_preferred_ending_and_records_its_reference(runs):
  root = runs["root"]
  final = runs["summary"]["final_metrics"]
  assert final["eval/accuracy"] >= 0.9  # held-out pairs, from 0.5 (a tie) at the start
  assert final["eval/chosen_reward"] > final["eval/rejected_reward"]
  record = read_run_record(str(root / "dpo"))
  assert record["kind"] == "dpo" and record["dpo_beta"] == 0.2
  assert record["reference"] == str(root / "sft")
  # The policy moved; its reference (the run it started from) did not.
  after = load_run(str(root / "sft")).params
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(runs["before"]),
                                                  jax.tree.leaves(after)))
  trained = load_run(str(root / "dpo"))
  assert not trained.head and REFERENCE_KEY not in trained.params
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(trained.params),
                                                      jax.tree.leaves(after)))
  # Read back as an implicit reward model, it prefers the held-out chosen endings.
  scorer = load_process_model(str(root / "dpo"), batch_size=8)
  assert isinstance(scorer, ImplicitProcessRewardModel) and scorer.beta == 0.2
  pairs = runs["pairs"]
  chosen = scorer.score([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
  rejected = scorer.score([p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
  assert np.mean([a.outcome > b.outcome for a, b in zip(chosen, rejected)]) >= 0.9


def test_train_dpo_refuses_what_it_cannot_train(runs, tmp_path):
  data = DataConfig(kind="sft", train_files=(str(runs["root"] / "sft.jsonl"),))
  with pytest.raises(ValueError, match="kind 'preference'"):
    train_dpo(str(tmp_path / "x"), CONFIG, data, runs["vocab"], init_from=str(runs["root"] /
                                                                              "sft"))
  pairs = DataConfig(kind="preference", train_files=(str(runs["root"] / "train.jsonl"),))
  with pytest.raises(ValueError, match="needs init_from"):
    train_dpo(str(tmp_path / "x"), CONFIG, pairs, runs["vocab"], init_from="")
  with pytest.raises(ValueError, match="beta > 0"):
    train_dpo(str(tmp_path / "x"), CONFIG, pairs, runs["vocab"],
              init_from=str(runs["root"] / "sft"), beta=0.0)
