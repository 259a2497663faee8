"""gin/methods/salmon/dromedary2.gin end to end on an imported Hugging Face model (a tiny
random Llama saved by transformers) with the user's prompt files and public preference
data for pre-training: the plumbing, not the numbers. Also the disclaimer and language
rules, and the RL-time principles, on hand cases."""

import json

import numpy as np

from align_jax import main as entry
from align_jax.data.vocab import load_vocabulary, train_sentencepiece
from align_jax.methods.salmon import dromedary2 as d2
from align_jax.methods.salmon import judge as jd
from align_jax.methods.salmon.principles import load_principles
from align_jax.models import TransformerConfig
from align_jax.training import DataConfig, LoopConfig, OptimizerConfig, train_lm
from hf_fixtures import words_corpus


def _lines(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def _read(path):
  return [json.loads(line) for line in open(path)]


def test_dromedary2_runs_judge_reward_and_ppo_on_an_imported_model(tmp_path):
  # The "imported" model: a tiny one trained for seconds, exported as a Hugging Face
  # directory. Its corpus: chats whose answers start with "yes" or "no" at random, and
  # judge prompts whose better answer is the one starting with "yes" (so the judge's two
  # orders agree on some pairs of its own answers, and labels exist).
  principles = load_principles()
  rng = np.random.default_rng(0)
  words = words_corpus(2400)
  texts = []
  for i in range(600):
    a, b = (f"{w} {words[4 * i + j]}" for j, w in enumerate(rng.permutation(["yes", "no"])))
    texts.append(jd.JUDGE_TEMPLATE.format(
        principle=principles[int(rng.integers(len(principles)))].principle.positive,
        prompt=words[4 * i + 2], a=a, b=b) + ("A" if a.startswith("yes") else "B") + ")")
    texts.append(f"User: {words[4 * i + 3]}\nAssistant: {rng.choice(['yes', 'no'])} "
                 f"{words[4 * i]}")
  corpus = _lines(tmp_path / "corpus.jsonl", [{"text": t} for t in texts])
  train_sentencepiece(texts, str(tmp_path / "sp"), 400)
  size = load_vocabulary(str(tmp_path / "sp.model")).vocab_size
  model = TransformerConfig(vocab_size=size, num_layers=2, d_model=48, num_heads=2,
                            num_kv_heads=1, head_dim=24, mlp_dim=96, max_seq_len=768,
                            pad_id=0, eos_id=1, bos_id=2, tie_embeddings=False)
  base = train_lm(str(tmp_path / "base_run"), model,
                  DataConfig(kind="lm", train_files=(corpus,), batch_size=8, seq_len=256),
                  str(tmp_path / "sp.model"),
                  OptimizerConfig(learning_rate=3e-3, warmup_steps=10, total_steps=400),
                  LoopConfig(total_steps=400, checkpoint_every=400), export_hf=True)["hf_export"]
  prefs = _lines(tmp_path / "prefs.jsonl", [{"prompt": p} for p in words_corpus(6, seed=1)])
  rl = _lines(tmp_path / "rl.jsonl", [{"prompt": p, "kind": k} for p, k in zip(
      words_corpus(4, seed=2), ["reasoning", "red_team", "chat", "reasoning"])])
  hh = _lines(tmp_path / "hh.jsonl", [
      {"chosen": f"\n\nHuman: {a}\n\nAssistant: {b}",
       "rejected": f"\n\nHuman: {a}\n\nAssistant: {c}"}
      for a, b, c in zip(words_corpus(4, seed=3), words_corpus(4, seed=4),
                         words_corpus(4, seed=5))])
  workdir = tmp_path / "run"
  result = entry.main([
      "--gin_file=gin/models/tiny.gin", "--gin_file=gin/methods/salmon/dromedary2.gin",
      f"--gin.WORKDIR='{workdir}'", f"--gin.VOCAB_SIZE={size}",
      f"--gin.BASE_MODEL='{base}'", f"--gin.PREFERENCE_PROMPTS='{prefs}'",
      f"--gin.RL_PROMPTS='{rl}'", f"--gin.salmon_dromedary2.vocabulary='{tmp_path / 'sp.model'}'",
      f"--gin.SalmonFiles.hh_rlhf=('{hh}',)",
      "--gin.TransformerConfig.dtype='float32'", "--gin.TransformerConfig.remat_policy='none'",
      "--gin.Dromedary2Config.max_new_tokens=8", "--gin.Dromedary2Config.passes=2",
      "--gin.pmp/TrainingSchedule.steps=2", "--gin.pmp/TrainingSchedule.batch_size=2",
      "--gin.pmp/TrainingSchedule.seq_len=256",
      "--gin.reward/TrainingSchedule.steps=2", "--gin.reward/TrainingSchedule.batch_size=2",
      "--gin.reward/TrainingSchedule.seq_len=512",
      "--gin.ppo/TrainingSchedule.steps=1", "--gin.PPOConfig.rollout_batch_size=4",
      "--gin.PPOConfig.mini_batch_size=2", "--gin.PPOConfig.max_new_tokens=8",
      "--gin.PPOConfig.max_prompt_len=64"])
  judged = _read(workdir / "judge" / "judged.jsonl")
  training = [p for p in principles if p.use == "train"]
  assert len(judged) == 6 and all(len(r["judge"]) == len(training) for r in judged)
  labelled = _read(workdir / "rm_data" / "labelled.jsonl")
  assert all(r["suffix"].startswith("\n\nJudge the response above") for r in labelled)
  prompts = _read(workdir / "ppo" / "prompts.jsonl")
  rl_texts = [p.principle.positive for p in principles if p.use == "rl"]
  assert all(r["principles"][:len(rl_texts)] == rl_texts and len(r["principles"]) ==
             len(rl_texts) + 3 for r in prompts)
  assert [r["length_multiplier"] for r in prompts] == [-0.5, 1.0, 1.0, -0.5]
  pmp = json.load(open(workdir / "pmp" / "COMPLETED.json"))["result"]
  assert pmp["files"][hh] == {"pairs": 4, "skipped": 0}
  reward = json.load(open(workdir / "reward" / "COMPLETED.json"))
  assert reward["settings"]["upstream"]["pmp"]["workdir"] == str(workdir / "pmp")
  assert (workdir / "ppo" / "policy").exists()
  assert "Stage counts" in open(result["report"]).read()


def test_disclaimers_languages_and_rl_principles_on_hand_cases():
  assert d2.has_disclaimer("As an AI, I cannot have opinions.")
  assert d2.has_disclaimer("well, i am only a program")
  assert not d2.has_disclaimer("The capital of France is Paris.")
  assert d2.other_language("Where is the nearest train station, please?",
                           "La gare est au bout de la rue, à gauche après la boulangerie.")
  assert not d2.other_language("Where is the nearest train station, please?",
                               "The station is at the end of the street, on the left.")
  principles = load_principles()
  config = d2.Dromedary2Config(sampled=1, matching_weight=1000.0)
  rng = np.random.default_rng(0)
  texts = d2.rl_principle_texts({"prompt": "x", "kind": "reasoning"}, principles, config, rng)
  rl = [p.principle.positive for p in principles if p.use == "rl"]
  reasoning = {p.principle.positive for p in principles if "reasoning" in p.kinds}
  assert texts[:3] == rl and texts[3] in reasoning
