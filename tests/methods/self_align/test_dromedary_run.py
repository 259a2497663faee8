"""gin/methods/self_align/dromedary.gin end to end on an imported Hugging Face model with
the user's own files: the plumbing, not the numbers. The "imported" model is a tiny one
trained here for a minute on dialogues in the principles prompt's layout (so its
principle-driven answers pass the filters) and exported as a Hugging Face directory."""

import json

import numpy as np

from align_jax import main as entry
from align_jax.data.vocab import load_vocabulary, train_sentencepiece
from align_jax.methods.self_align import principles as sp
from align_jax.models import TransformerConfig
from align_jax.training import DataConfig, LoopConfig, OptimizerConfig, train_lm


def _lines(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def test_dromedary_runs_every_stage_on_an_imported_model_with_user_files(tmp_path):
  rng = np.random.default_rng(0)
  files = {
      "principles": _lines(tmp_path / "principles.jsonl", [
          {"number": 1, "category": "numerical", "text": "Add with care."},
          {"number": 2, "category": "candor", "text": "Say what you do not know."}]),
      "exemplars": _lines(tmp_path / "exemplars.jsonl", [
          {"query": "What is 2 plus 3?", "thoughts": "1 numerical.", "answer": "It is 5."},
          {"query": "What is 4 plus 1?", "thoughts": "1 numerical.", "answer": "It is 5."}]),
      "seed_tasks": _lines(tmp_path / "seeds.jsonl", [
          {"instruction": f"What is {a} plus {b} today?"}
          for a, b in rng.integers(1, 9, (6, 2))]),
      "red_team_types": _lines(tmp_path / "types.jsonl", [
          {"type": "sums", "examples": [{"topic": "Apples", "question": "What is 2 plus 2?"}]},
          {"type": "unknowns", "examples": [{"topic": "Zorb", "question": "Who is Zorb?"}]}]),
  }
  truthful = tmp_path / "mc_task.json"
  truthful.write_text(json.dumps([{"question": "What is 1 plus 1?",
                                   "mc1_targets": {"2": 1, "3": 0, "4": 0}}]))
  hhh = tmp_path / "hhh.json"
  hhh.write_text(json.dumps({"examples": [{"input": "Human: add 1 and 1\n\nAssistant:",
                                           "target_scores": {"2": 1, "11": 0}}]}))
  # A base model that writes the prompt's turns: dialogues in the exemplars' layout.
  principles = sp.load_principles(files["principles"])
  exemplars = sp.load_exemplars(files["exemplars"])
  texts = []
  for _ in range(300):
    a, b = (int(x) for x in rng.integers(1, 9, 2))
    query = sp.Exemplar(f"What is {a} plus {b}?", "1 numerical.", f"It is {a + b}.")
    texts.append(sp.principles_prompt(principles, exemplars, query.query)
                 + f" {query.thoughts}\nAssistant: {query.answer}")
  corpus = _lines(tmp_path / "corpus.jsonl", [{"text": t} for t in texts])
  train_sentencepiece(texts, str(tmp_path / "spm"), 512, extra_options={
      "hard_vocab_limit": False, "normalization_rule_name": "identity",
      "remove_extra_whitespaces": False, "user_defined_symbols": "\n"})
  size = load_vocabulary(str(tmp_path / "spm.model")).vocab_size
  model = TransformerConfig(vocab_size=size, num_layers=1, d_model=48, num_heads=2,
                            num_kv_heads=1, head_dim=24, mlp_dim=96, max_seq_len=384,
                            pad_id=0, eos_id=1, bos_id=2, tie_embeddings=False)
  summary = train_lm(str(tmp_path / "base_run"), model,
                     DataConfig(kind="lm", train_files=(corpus,), batch_size=8, seq_len=256),
                     str(tmp_path / "spm.model"),
                     OptimizerConfig(learning_rate=3e-3, warmup_steps=10, total_steps=120),
                     LoopConfig(total_steps=120, checkpoint_every=120), export_hf=True)
  base_model = summary["hf_export"]

  workdir = tmp_path / "run"
  result = entry.main([
      "--gin_file=gin/models/tiny.gin", "--gin_file=gin/methods/self_align/dromedary.gin",
      f"--gin.WORKDIR='{workdir}'", f"--gin.VOCAB_SIZE={size}", f"--gin.BASE_MODEL='{base_model}'",
      *[f"--gin.DromedaryFiles.{k}='{v}'" for k, v in files.items()],
      f"--gin.DromedaryFiles.truthfulqa='{truthful}'", f"--gin.DromedaryFiles.hhh='{hhh}'",
      "--gin.TransformerConfig.dtype='float32'", "--gin.TransformerConfig.remat_policy='none'",
      "--gin.TransformerConfig.lora_rank=4",
      "--gin.SelfInstructConfig.rounds=1", "--gin.SelfInstructConfig.prompts_per_round=4",
      "--gin.SelfInstructConfig.max_new_tokens=12", "--gin.RedTeamConfig.topic_rounds=1",
      "--gin.RedTeamConfig.topic_prompts=2", "--gin.RedTeamConfig.max_question_tokens=12",
      "--gin.AnswerConfig.max_new_tokens=24", "--gin.VerboseConfig.max_new_tokens=12",
      "--gin.VerboseConfig.min_chars=1", "--gin.VerboseConfig.elaborate=True",
      # A space ends the verbose stage's texts: the tiny model's brief answers finish.
      "--gin.VerboseConfig.stop_strings=(' ',)",
      *[f"--gin.{s}/TrainingSchedule.{k}={v}" for s in ("engrave", "clone")
        for k, v in (("steps", 2), ("batch_size", 2), ("seq_len", 128), ("warmup_steps", 1))],
      "--gin.self_align_dromedary.sampler_batch_size=8"])

  def completed(stage):
    return json.load(open(workdir / stage / "COMPLETED.json"))["result"]

  assert completed("self_instruct")["rounds"][0]["generated"] == 4
  red_team = completed("red_team")
  assert 0 < red_team["question_count"] <= 2 * red_team["topics_per_type"]
  answers = completed("principle_answers")
  engrave = [json.loads(line) for line in open(workdir / "principle_answers" / "engrave.jsonl")]
  assert len(engrave) == answers["filters"]["kept"] > 0
  for row in engrave:   # query -> answer only: no principles, exemplars or thoughts
    assert "Add with care" not in row["response"] and "internal thoughts" not in row["response"]
  # Elaborated verbose answers: each continues the engraved model's brief answer, which
  # the verbose prompt's token ids (a chat template's assistant turn) end with.
  verbose = [json.loads(line) for line in open(workdir / "verbose_answers" / "answers.jsonl")]
  assert verbose and all(row["answer"].startswith(row["brief"]) for row in verbose)
  samples = [json.loads(line) for line in open(workdir / "verbose_answers" / "samples.jsonl")]
  assert any(row["brief"] for row in samples)
  models = completed("evaluate")["models"]
  assert set(models) == {"base", "engraved", "verbose-cloned"}
  assert all(set(row) == {"truthfulqa_mc1", "hhh"} for row in models.values())
  report = open(result["report"]).read()
  assert "truthfulqa_mc1" in report and "Stage counts" in report
