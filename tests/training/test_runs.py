"""The one run loader on every run kind, and the one export on SFT, reward and PPO runs."""

import dataclasses
import json

import jax
import numpy as np
import pytest
import torch
import transformers

from align_jax.data.jsonl import write_jsonl
from align_jax.data.vocab import load_vocabulary, train_sentencepiece
from align_jax.models import (Transformer, TransformerConfig, is_lora_path,
                              merge_params, split_params)
from align_jax.parallel import DEFAULT_RULES, create_mesh
from align_jax.ppo import PPOConfig, train_ppo
from align_jax.rewards import RewardContext, RewardModelTerm, text_input
from align_jax.rewards.reward_model import batch_from_records
from align_jax.sampling import SamplingConfig
from align_jax.training import (DataConfig, LoopConfig, OptimizerConfig, load_run, train_lm,
                                train_reward_model, vocabulary_record)
from align_jax.training.checkpoints import restore_params
from align_jax.training.runs import placed_abstract_params, restore_run_params
from hf_fixtures import save_tiny_llama, words_corpus

CONFIG = TransformerConfig(vocab_size=320, num_layers=1, d_model=32, num_heads=4, num_kv_heads=2,
                           head_dim=8, mlp_dim=64, max_seq_len=64, pad_id=0, eos_id=1, bos_id=2)
QUIET = dict(progress_bar=False, async_checkpoints=False)


def _write(path, records):
  write_jsonl(str(path), records)
  return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  texts = words_corpus(300)
  train_sentencepiece(texts, str(root / "spm"), 300)
  vocab = str(root / "spm.model")
  sft = _write(root / "sft.jsonl", [{"prompt": "repeat: " + t, "response": t}
                                    for t in texts[:120]])
  pairs = _write(root / "pairs.jsonl", [{"prompt": t, "chosen": t + " cat",
                                         "rejected": t + " dog"} for t in texts[:120]])
  prompts = _write(root / "prompts.jsonl", [{"prompt": " ".join(t.split()[:3])}
                                            for t in texts[:16]])
  small = dict(batch_size=8, seq_len=64)
  train_lm(str(root / "sft"), CONFIG, DataConfig(kind="sft", train_files=sft, **small), vocab,
           OptimizerConfig(learning_rate=3e-3, warmup_steps=2, total_steps=20),
           LoopConfig(total_steps=20, checkpoint_every=20, **QUIET), export_hf=True)
  lora = dataclasses.replace(CONFIG, lora_rank=4, lora_targets=("q", "v", "up"))
  train_lm(str(root / "lora_sft"), lora, DataConfig(kind="sft", train_files=sft, **small), vocab,
           OptimizerConfig(learning_rate=3e-2, warmup_steps=0, total_steps=3),
           LoopConfig(total_steps=3, checkpoint_every=3, **QUIET), init_from=str(root / "sft"))
  train_reward_model(str(root / "reward"), CONFIG,
                     DataConfig(kind="preference", train_files=pairs, pack=False, **small), vocab,
                     OptimizerConfig(learning_rate=1e-3, warmup_steps=0, total_steps=6),
                     LoopConfig(total_steps=6, checkpoint_every=6, **QUIET),
                     init_from=str(root / "sft"), export_hf=True)
  train_ppo(str(root / "ppo"), CONFIG, prompts, vocab, str(root / "sft"),
            reward_model=str(root / "reward"),
            ppo=PPOConfig(rollout_batch_size=8, mini_batch_size=4, num_epochs=1,
                          max_prompt_len=48, max_new_tokens=8),
            optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=0),
            loop=LoopConfig(total_steps=1, checkpoint_every=1, **QUIET), export_hf=True)
  hf_dir = root / "hf"
  save_tiny_llama(hf_dir)
  return {"root": root, "vocab": vocab, "sft": str(root / "sft"),
          "lora_sft": str(root / "lora_sft"), "lora": lora, "reward": str(root / "reward"),
          "ppo": str(root / "ppo"), "hf": str(hf_dir)}


def _tokens(seed=0, rows=2, length=12, high=300):
  return np.random.RandomState(seed).randint(3, high, (rows, length)).astype(np.int32)


def test_an_align_jax_run_loads_with_its_recorded_config_and_vocabulary(runs):
  run = load_run(runs["sft"])
  assert run.config == CONFIG and not run.head
  assert vocabulary_record(run.vocab) == vocabulary_record(load_vocabulary(runs["vocab"]))
  mesh = create_mesh()
  by_hand = restore_run_params(runs["sft"], Transformer(CONFIG), mesh, DEFAULT_RULES)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(run.params),
                                                  jax.tree.leaves(by_hand)))
  # A reward run loads as a reward model, with its head.
  reward = load_run(runs["reward"])
  assert reward.head and set(reward.params) == {"backbone", "head"}
  # A given config must agree with the recorded one.
  with pytest.raises(ValueError, match="model_config.d_model"):
    load_run(runs["sft"], config=dataclasses.replace(CONFIG, d_model=64, head_dim=16))


def test_a_lora_run_loads_merged_over_its_base(runs):
  run = load_run(runs["lora_sft"])
  assert run.config.lora_rank == 0
  mesh = create_mesh()
  base = restore_run_params(runs["sft"], Transformer(CONFIG), mesh, DEFAULT_RULES)
  lora = runs["lora"]
  trained, _ = restore_params(f"{runs['lora_sft']}/checkpoints", split_params(
      placed_abstract_params(Transformer(lora), mesh, DEFAULT_RULES), is_lora_path)[0])
  tokens = _tokens()
  np.testing.assert_allclose(run.module.apply({"params": run.params}, tokens),
                             Transformer(lora).apply({"params": merge_params(trained, base)},
                                                     tokens), atol=1e-5)
  assert not np.allclose(run.module.apply({"params": run.params}, tokens),
                         Transformer(CONFIG).apply({"params": base}, tokens))


def test_a_hugging_face_directory_loads_with_its_tokenizer(runs):
  run = load_run(runs["hf"])
  assert run.config.vocab_size == 300 and run.record == {"hf_dir": runs["hf"]}
  reference = transformers.AutoModelForCausalLM.from_pretrained(runs["hf"]).eval()
  tokens = _tokens(high=290)
  with torch.no_grad():
    expected = reference(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(run.module.apply({"params": run.params}, tokens), expected,
                             atol=1e-4)
  tokenizer = transformers.AutoTokenizer.from_pretrained(runs["hf"])
  text = "the big cat sat on the mat"
  assert list(run.vocab.encode(text)) == tokenizer(text, add_special_tokens=False).input_ids


def test_a_ppo_run_loads_as_its_final_policy(runs):
  run = load_run(runs["ppo"])
  assert run.path.endswith("policy") and run.config == CONFIG
  initial = load_run(runs["sft"])
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(run.params),
                                                      jax.tree.leaves(initial.params)))


def _greedy_ours(run_dir, prompt_ids, new_tokens):
  sampler = load_run(run_dir).sampler(batch_size=1)
  result = sampler.generate([prompt_ids], SamplingConfig(max_new_tokens=new_tokens,
                                                         temperature=0.0,
                                                         min_new_tokens=new_tokens),
                            jax.random.key(0))
  return result.tokens[0, 0, :int(result.lengths[0, 0])].tolist()


@pytest.mark.parametrize("kind", ["sft", "ppo"])
def test_sft_and_ppo_exports_generate_in_transformers_with_their_tokenizer(runs, kind):
  export = f"{runs[kind]}/hf_export"
  model = transformers.AutoModelForCausalLM.from_pretrained(export).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(export)
  vocab = load_vocabulary(runs["vocab"])
  prompt = [vocab.bos_id] + list(vocab.encode("repeat: the cat sat"))
  with torch.no_grad():
    generated = model.generate(torch.tensor([prompt]), max_new_tokens=6, min_new_tokens=6,
                               do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
  assert generated == _greedy_ours(runs[kind], prompt, 6)
  # The exported tokenizer is the run's: same ids, same text.
  assert tokenizer.decode(generated, skip_special_tokens=True) == vocab.decode(generated)


def test_a_reward_export_scores_in_transformers_like_the_run(runs):
  export = f"{runs['reward']}/hf_export"
  model = transformers.AutoModelForSequenceClassification.from_pretrained(export).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(export)
  assert tokenizer.decode(tokenizer("the cat", add_special_tokens=False).input_ids) == "the cat"
  bias = json.load(open(f"{export}/score_bias.json"))["bias"]
  term = RewardModelTerm(runs["reward"], input_builder=text_input("plain"), normalize=False)
  term.setup(RewardContext(mesh=create_mesh()))
  records = [{"prompt": "the dog ran", "response": "the dog ran cat"},
             {"prompt": "a bird", "response": "a bird dog"}]
  batch = batch_from_records(records)
  ours = term.raw_scores(batch)
  with torch.no_grad():
    theirs = [model(torch.tensor([ids])).logits[0, 0].item() + bias
              for ids in term.inputs(batch)]
  np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_the_export_job_writes_a_lora_run_merged_with_its_tokenizer(runs, tmp_path):
  from align_jax import main as entry
  entry.main(["--gin_file=gin/runs/export.gin", f"--gin.WORKDIR='{tmp_path}'",
              f"--gin.RUN='{runs['lora_sft']}'"])
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf_export")).eval()
  transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf_export"))
  run = load_run(runs["lora_sft"])
  tokens = _tokens()
  with torch.no_grad():
    theirs = model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(theirs, run.module.apply({"params": run.params}, tokens), atol=1e-4)


def test_a_run_that_does_not_exist_is_an_error_and_is_never_created(tmp_path):
  from align_jax.training.runs import load_initial_params
  missing = tmp_path / "no_such_run"
  with pytest.raises(FileNotFoundError, match="no_such_run"):
    load_run(str(missing))
  with pytest.raises(FileNotFoundError, match="no_such_run"):
    load_initial_params(str(missing), CONFIG, create_mesh(), DEFAULT_RULES, seed=0)
  assert not missing.exists()


def test_a_reward_model_continues_from_a_reward_run_head_and_all(runs, tmp_path):
  from align_jax.training.runs import is_reward_run, model_for
  assert is_reward_run(runs["reward"]) and not is_reward_run(runs["sft"])
  assert not is_reward_run(runs["hf"])
  pairs = _write(tmp_path / "pairs.jsonl", [{"prompt": "a b", "chosen": "c", "rejected": "d"}
                                            for _ in range(8)])
  # A zero learning rate: the continued run's parameters are the reward run's, head included.
  train_reward_model(str(tmp_path / "more"), CONFIG,
                     DataConfig(kind="preference", train_files=pairs, batch_size=8, seq_len=64),
                     runs["vocab"], OptimizerConfig(learning_rate=0.0, warmup_steps=0,
                                                    total_steps=1),
                     LoopConfig(total_steps=1, checkpoint_every=1, **QUIET),
                     init_from=runs["reward"])
  before, after = load_run(runs["reward"]), load_run(str(tmp_path / "more"))
  assert after.head
  jax.tree.map(np.testing.assert_array_equal, before.params, after.params)
  # model_for: an align_jax run's recorded shape with the caller's runtime fields.
  runtime = dataclasses.replace(CONFIG, d_model=999, dtype="bfloat16", lora_rank=2)
  built = model_for(runs["reward"], runtime)
  assert built.d_model == CONFIG.d_model and built.dtype == "bfloat16" and built.lora_rank == 2
  assert model_for(runs["hf"], runtime) is runtime
  with pytest.raises(ValueError, match="continuing one trains every weight"):
    train_reward_model(str(tmp_path / "lora"), dataclasses.replace(CONFIG, lora_rank=2),
                       DataConfig(kind="preference", train_files=pairs, batch_size=8,
                                  seq_len=64), runs["vocab"], OptimizerConfig(total_steps=1),
                       LoopConfig(total_steps=1, **QUIET), init_from=runs["reward"])
