"""Pretrain and SFT runs from their gin files: from scratch, from a run, from Hugging Face."""

import json

import numpy as np
import pytest
import torch
import transformers

from align_jax import main as entry
from align_jax.data.vocab import train_sentencepiece
from align_jax.training import read_metrics
from training_fixtures import TINY_MODEL_FLAGS
from hf_fixtures import save_tiny_llama, words_corpus, write_words_data

MODEL = TINY_MODEL_FLAGS
SMALL = ["--gin.DataConfig.batch_size=8", "--gin.DataConfig.seq_len=64",
         "--gin.OptimizerConfig.learning_rate=3e-3", "--gin.OptimizerConfig.warmup_steps=2",
         "--gin.LoopConfig.progress_bar=False"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("lm_data")
  texts = write_words_data(root, 300)
  (root / "sft.jsonl").write_text("".join(
      json.dumps({"prompt": "repeat: " + t, "response": t}) + "\n" for t in texts[:80]))
  return root


def _losses(workdir):
  return [r["loss"] for r in read_metrics(str(workdir / "metrics.jsonl")) if "loss" in r]


def test_pretrain_then_sft_from_the_pretrain_run(data, tmp_path):
  pre = tmp_path / "pre"
  entry.main(MODEL + SMALL + [
      "--gin_file=gin/runs/pretrain.gin", f"--gin.WORKDIR='{pre}'",
      f"--gin.TRAIN_DATA='{data / 'text.jsonl'}'", f"--gin.EVAL_DATA='{data / 'text.jsonl'}'",
      f"--gin.VOCABULARY='{data / 'spm.model'}'", "--gin.STEPS=40",
      "--gin.LoopConfig.checkpoint_every=20", "--gin.LoopConfig.eval_every=20",
      "--gin.LoopConfig.keep_best_by='eval/loss'"])
  losses = _losses(pre)
  assert len(losses) == 40 and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
  records = read_metrics(str(pre / "metrics.jsonl"))
  assert [r["step"] for r in records if "eval/loss" in r] == [20, 40]
  assert (pre / "config.gin").exists() and list((pre / "tensorboard").iterdir())
  assert sorted(p.name for p in (pre / "checkpoints").iterdir() if p.name.isdigit()) == ["20", "40"]
  # The best checkpoint by eval loss is kept apart (eval loss fell, so it is step 40).
  assert [p.name for p in (pre / "checkpoints_best").iterdir() if p.name.isdigit()] == ["40"]

  sft = tmp_path / "sft"
  summary = entry.main(MODEL + SMALL + [
      "--gin_file=gin/runs/sft.gin", f"--gin.WORKDIR='{sft}'",
      f"--gin.TRAIN_DATA='{data / 'sft.jsonl'}'", f"--gin.VOCABULARY='{data / 'spm.model'}'",
      f"--gin.INIT_FROM='{pre}'", "--gin.STEPS=10", "--gin.DataConfig.seq_len=128"])
  first_sft_loss = _losses(sft)[0]
  # Starting from the pretrained weights, not from scratch (log(320) = 5.8).
  assert first_sft_loss < 5.0
  assert summary["steps"] == 10


def test_sft_from_a_different_vocabulary_is_refused(data, tmp_path):
  pre = tmp_path / "pre"
  entry.main(MODEL + SMALL + [
      "--gin_file=gin/runs/pretrain.gin", f"--gin.WORKDIR='{pre}'",
      f"--gin.TRAIN_DATA='{data / 'text.jsonl'}'", f"--gin.VOCABULARY='{data / 'spm.model'}'",
      "--gin.STEPS=2"])
  other = tmp_path / "other_spm"
  train_sentencepiece(words_corpus(300, seed=5)[::-1] + ["extra words here"], str(other), 300)
  with pytest.raises(ValueError, match=r"vocabulary.fingerprint: checkpoint has"):
    entry.main(MODEL + SMALL + [
        "--gin_file=gin/runs/sft.gin", f"--gin.WORKDIR='{tmp_path / 'sft'}'",
        f"--gin.TRAIN_DATA='{data / 'sft.jsonl'}'", f"--gin.VOCABULARY='{other}.model'",
        f"--gin.INIT_FROM='{pre}'", "--gin.STEPS=2"])


def test_lora_sft_from_a_hugging_face_checkpoint_exports_for_transformers(tmp_path):
  hf_dir = tmp_path / "hf"
  save_tiny_llama(hf_dir)
  sft_data = tmp_path / "sft.jsonl"
  sft_data.write_text("".join(json.dumps({"prompt": f"say {w}", "response": w}) + "\n"
                              for w in ["cat", "dog", "tree", "red", "blue", "big"] * 4))
  work = tmp_path / "sft"
  entry.main(MODEL + SMALL + [
      "--gin_file=gin/runs/sft.gin", f"--gin.WORKDIR='{work}'", f"--gin.TRAIN_DATA='{sft_data}'",
      f"--gin.VOCABULARY='{hf_dir}'", f"--gin.INIT_FROM='{hf_dir}'", "--gin.STEPS=6",
      "--gin.TransformerConfig.lora_rank=4", "--gin.train_lm.export_hf=True"])
  exported = transformers.AutoModelForCausalLM.from_pretrained(str(work / "hf_export")).eval()
  original = transformers.LlamaForCausalLM.from_pretrained(str(hf_dir)).eval()
  tokens = torch.tensor([[1, 20, 30, 40]])
  with torch.no_grad():
    gap = (exported(tokens).logits - original(tokens).logits).abs().max().item()
  assert gap > 1e-5  # the merged adapters changed the model
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(work / "hf_export"))
  assert tokenizer("cat", add_special_tokens=False).input_ids


def test_reward_and_ppo_runs_from_their_gin_files(data, tmp_path):
  texts = words_corpus(300, seed=3)
  def write(name, rows):
    (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(tmp_path / name)
  # Preferred answers end with "hello", rejected ones with "world".
  pairs = [{"prompt": t, "chosen": t + " hello", "rejected": t + " world"} for t in texts]
  write("pairs_train.jsonl", pairs[:240])
  write("pairs_eval.jsonl", pairs[240:])
  # Process labels: a step is good when it names an animal.
  good = {"cat", "dog", "bird"}
  steps = [{"prompt": "list", "steps": t.split()[:4],
            "labels": [int(w in good) for w in t.split()[:4]]} for t in texts]
  write("steps_train.jsonl", steps[:240])
  write("steps_eval.jsonl", steps[240:])
  sft = tmp_path / "sft"
  entry.main(MODEL + SMALL + [
      "--gin_file=gin/runs/sft.gin", f"--gin.WORKDIR='{sft}'", "--gin.INIT_FROM=None",
      f"--gin.TRAIN_DATA='{data / 'sft.jsonl'}'", f"--gin.VOCABULARY='{data / 'spm.model'}'",
      "--gin.STEPS=10"])
  common = MODEL + SMALL + ["--gin_file=gin/runs/reward.gin", "--gin.STEPS=40",
                            f"--gin.VOCABULARY='{data / 'spm.model'}'", f"--gin.INIT_FROM='{sft}'",
                            "--gin.LoopConfig.checkpoint_every=40", "--gin.DataConfig.seq_len=160"]
  pairwise = entry.main(common + [
      f"--gin.WORKDIR='{tmp_path / 'reward'}'", f"--gin.TRAIN_DATA='{tmp_path / 'pairs_train.jsonl'}'",
      f"--gin.EVAL_DATA='{tmp_path / 'pairs_eval.jsonl'}'"])
  assert pairwise["final_metrics"]["eval/accuracy"] >= 0.9   # held-out pair accuracy
  losses = _losses(tmp_path / "reward")
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
  process = entry.main(common + [
      f"--gin.WORKDIR='{tmp_path / 'prm'}'", f"--gin.TRAIN_DATA='{tmp_path / 'steps_train.jsonl'}'",
      f"--gin.EVAL_DATA='{tmp_path / 'steps_eval.jsonl'}'", "--gin.DataConfig.kind='process'"])
  assert process["final_metrics"]["eval/accuracy"] >= 0.8    # held-out step accuracy

  prompts = write("prompts.jsonl", [{"prompt": t} for t in texts[:64]])
  ppo = entry.main(MODEL + [
      "--gin_file=gin/runs/ppo.gin", f"--gin.WORKDIR='{tmp_path / 'ppo'}'", "--gin.STEPS=2",
      f"--gin.PROMPTS='{prompts}'", f"--gin.VOCABULARY='{data / 'spm.model'}'",
      f"--gin.POLICY_INIT='{sft}'", f"--gin.REWARD_MODEL='{tmp_path / 'reward'}'",
      "--gin.PPOConfig.rollout_batch_size=8", "--gin.PPOConfig.mini_batch_size=4",
      "--gin.PPOConfig.max_prompt_len=64", "--gin.PPOConfig.max_new_tokens=8",
      "--gin.LoopConfig.progress_bar=False"])
  records = read_metrics(str(tmp_path / "ppo" / "metrics.jsonl"))
  assert [r["step"] for r in records if "reward/reward_model" in r] == [1, 2]
  assert all("reward/missing_eos" in r for r in records if "loss" in r)
  assert ppo["steps"] == 2 and (tmp_path / "ppo" / "policy" / "checkpoints").is_dir()
