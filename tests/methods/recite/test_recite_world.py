"""The RECITE world experiment: what the tiny model may learn from, and the pipeline."""

import json
import os

import numpy as np
import pytest

from align_jax.methods.recite import world as recite_world
from align_jax.methods.recite.analysis import ERROR_CLASSES
from align_jax.methods.recite.recite import ReciteConfig
from align_jax.models import TransformerConfig
from align_jax.pipeline import TrainingSchedule
from align_jax.worlds.encyclopedia import EncyclopediaConfig, build_world, passage_hint

CORPUS = recite_world.CorpusConfig(shots=1, passage_repeats=2, qa_repeats=2, skill_worlds=2,
                                   skill_questions=(6, 3))


def test_documents_hold_every_passage_and_only_training_questions():
  world = build_world(EncyclopediaConfig.preset("tiny"))
  docs = recite_world.training_documents(world, CORPUS, np.random.default_rng(0))
  paragraphs = list(world.paragraphs())
  passages = [d for d in docs if d.startswith("Hint: ")]
  assert len(passages) == 2 * len(paragraphs)
  title, section, k, text = paragraphs[0]
  assert f"Hint: {passage_hint(title, section, k)}\nRecitation: {text}" in passages
  joined = "\n".join(docs)
  for qa in world.qa(split="heldout"):
    assert f"Question: {qa.question}\n" not in joined
  one_hop = world.qa(split="train", hops=1)[0]
  # Each training question is a target block in every single-hop format, qa_repeats times.
  targets = [d.split("\n\n")[-1] for d in docs if d.split("\n\n")[-1].startswith(
      f"Question: {one_hop.question}\n")]
  fields = sorted(t.split("\n")[1].split(":")[0] for t in targets)
  assert fields == sorted(["Answer", "Hint", "Reasoning", "Recitation"] * 2)
  exemplar = recite_world.exemplar_for(world, one_hop)
  assert exemplar.hints[0] in joined and one_hop.answers[0] in exemplar.passages[0]


def test_skill_worlds_bring_other_names_in_reading_and_hint_documents_only():
  world = build_world(EncyclopediaConfig.preset("tiny"))
  docs = recite_world.training_documents(world, CORPUS, np.random.default_rng(0))
  for i in range(CORPUS.skill_worlds):
    other = recite_world.skill_world(world, i)
    assert not set(other.entities) & set(world.entities)
    mentions = [d for d in docs if any(name in d for name in other.entities)]
    assert mentions
    # Zero-shot reading (passage first) and hint documents: no passage document, so
    # nothing of the skill worlds is memorised under a hint.
    assert all(d.startswith(("Recitation", "Question: ")) and "\n\n" not in d for d in mentions)
  expected = sum(CORPUS.skill_questions[0] * 2 + CORPUS.skill_questions[1]
                 for _ in range(CORPUS.skill_worlds))
  skill_docs = [d for d in docs if not any(n in d for n in world.entities)]
  assert len(skill_docs) == expected


@pytest.mark.slow
def test_world_pipeline_runs_every_stage_and_reports(tmp_path):
  model = TransformerConfig(vocab_size=700, num_layers=1, d_model=32, num_heads=2,
                            num_kv_heads=1, head_dim=16, mlp_dim=64, max_seq_len=640,
                            pad_id=0, eos_id=1, bos_id=2)
  kwargs = dict(
      model=model, world=EncyclopediaConfig.preset("tiny"), corpus=CORPUS,
      pretrain=TrainingSchedule(steps=4, batch_size=8, seq_len=256, checkpoint_every=4),
      hint_data=recite_world.HintDataConfig(questions_per_passage=1, replay=0.5),
      hint_finetune=TrainingSchedule(steps=2, batch_size=8, seq_len=256, checkpoint_every=2),
      vocab_size=700,
      recite=ReciteConfig(num_paths=2, num_hints=2, recitation_tokens=8, answer_tokens=4,
                          reasoning_tokens=6, hint_tokens=8, question_tokens=8,
                          recitation_stop="\n", passage_shots=0),
      settings=recite_world.WorldEvalConfig(path_counts=(1, 2), resamples=2, max_questions=3,
                                            batch_size=8),
      seeds=(0,))
  result = recite_world.recite_world(str(tmp_path), **kwargs)
  rows = result["seeds"][0]
  assert {(r["method"], r["hops"]) for r in rows} == {
      ("direct", 1), ("chain_of_thought", 1), ("recite (2 paths)", 1), ("diversified", 1),
      ("hint-FT direct", 1), ("hint-FT recite (2 paths)", 1), ("direct", 2),
      ("chain_of_thought", 2), ("multi_recite (2 paths)", 2)}
  assert all(r["n"] == 3 for r in rows)
  report = open(result["report"]).read()
  for heading in ("Headline", "Error analysis", "EM by number of recitation paths",
                  "Where recitation can fail", "Stage seconds"):
    assert heading in report
  assert os.path.exists(tmp_path / "report" / "em_by_paths.png")
  seed_dir = tmp_path / "seed_0"
  evaluation = json.load(open(seed_dir / "eval" / "COMPLETED.json"))["result"]
  for shares in evaluation["analysis"].values():
    assert sum(shares[c] for c in ERROR_CLASSES) == pytest.approx(1.0)
  questions = [json.loads(line) for line in open(seed_dir / "hint_data" / "questions.jsonl")]
  assert questions and all(q["hint"].count(" — ") == 2 for q in questions)
  # Rerunning finds every stage complete and trains nothing again.
  mtime = os.path.getmtime(seed_dir / "pretrain" / "metrics.jsonl")
  again = recite_world.recite_world(str(tmp_path), **kwargs)
  assert again["seeds"][0] == rows
  assert os.path.getmtime(seed_dir / "pretrain" / "metrics.jsonl") == mtime
