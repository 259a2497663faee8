"""The RECITE world experiment: what the tiny model may learn from, and the pipeline."""

import dataclasses
import json
import os

import numpy as np
import pytest
import sentencepiece as spm

from align_jax import main as entry
from align_jax.data.vocab import train_sentencepiece
from align_jax.methods.recite import world as recite_world
from align_jax.methods.recite import prompts
from align_jax.methods.recite.analysis import ERROR_CLASSES, Path, QuestionResult
from align_jax.worlds.encyclopedia import EncyclopediaConfig, build_world, passage_hint
from tests.readme_commands import readme_command

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
  # Each training question is a target block in every single-hop format, qa_repeats times
  # (the answer format once per layout: 'paper' ends in a plain Question / Answer block,
  # 'reading' in a Recitation / Question / Answer block).
  targets = [d.split("\n\n")[-1] for d in docs if d.split("\n\n")[-1].startswith(
      f"Question: {one_hop.question}\n")]
  fields = sorted(t.split("\n")[1].split(":")[0] for t in targets)
  assert fields == sorted(["Answer", "Answer", "Hint", "Reasoning", "Recitation"] * 2)
  reading = [d for d in docs if d.split("\n\n")[-1].startswith("Recitation: ")
             and f"Question: {one_hop.question}\nAnswer:" in d.split("\n\n")[-1]]
  assert len(reading) == 2
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
    assert all(d.startswith(("Recitation", "Question: ")) and "Hint: " not in d.split("\n")[0]
               for d in mentions)
  # The world the diagnostics read from as unseen is in no training document.
  unseen = recite_world.skill_world(world, CORPUS.skill_worlds)
  assert not any(name in d for d in docs for name in unseen.entities)
  # Per single-hop question: reading in 2 layouts, reading among distractors in 2 layouts,
  # a hint document; per two-hop question: reading in 2 layouts.
  expected = sum(CORPUS.skill_questions[0] * 5 + CORPUS.skill_questions[1] * 2
                 for _ in range(CORPUS.skill_worlds))
  skill_docs = [d for d in docs if not any(n in d for n in world.entities)]
  assert len(skill_docs) == expected
  # Reading among distractors: the gold passage and CORPUS.context_distractors others.
  contexts = [d for d in skill_docs if f"Recitation {CORPUS.context_distractors + 1}: " in d]
  assert len(contexts) == CORPUS.skill_worlds * CORPUS.skill_questions[0] * 2


def test_two_hop_path_shares_on_a_hand_worked_case():
  world = build_world(EncyclopediaConfig.preset("tiny"))
  questions = world.qa(hops=2, variant=0)
  states = lambda q: any(a in recite_world.exemplar_for(world, q).passages[0]
                         for a in q.answers)
  q_in = next(q for q in questions if states(q))       # hop 1's passage names the answer
  q_out = next(q for q in questions if not states(q))
  gold = recite_world.exemplar_for(world, q_in).passages
  words = lambda text: len(text.split())
  budget = words(prompts.join_recitations(gold))
  assert words(prompts.join_recitations([gold[0], "made up"])) < 0.95 * budget
  paths = [Path(gold, q_in.answers[0]),                 # both gold, right, at the budget
           Path((gold[0], "made up"), "nowhere"),      # first gold, wrong
           Path((), ""),                                # nothing recited
           ]
  results = [QuestionResult(q_in.question, q_in.answers, paths, 2, convention="squad"),
             QuestionResult(q_out.question, q_out.answers, [Path(("foo",), q_out.answers[0])],
                            2, convention="squad")]
  shares = recite_world.two_hop_path_shares(world, [q_in, q_out], results, budget, words)
  assert shares == {
      "paths: recitation 1 is hop 1's gold passage": 0.5,
      "paths: recitation 2 is hop 2's gold passage": 0.25,
      "paths: recitation 2 right when recitation 1 is": 0.5,
      "paths: answer right when both recitations are": 1.0,
      "questions: hop 1's gold passage states the answer": 0.5,
      "paths: answer right when recitation 1 is gold and states it": 0.5,
      "paths: the recitations state the answer": 0.5,
      "paths: answer right when the recitations state it": 0.5,
      "paths: recitations at the token budget": 0.25,
  }


def test_reading_sets_put_every_single_hop_question_after_its_passage():
  world = build_world(EncyclopediaConfig.preset("tiny"))
  sets = recite_world.reading_sets(world)
  questions = world.qa(hops=1, variant=0)
  by_passage = {}
  for qa in questions:
    by_passage.setdefault(recite_world.exemplar_for(world, qa).passages[0], []).append(qa)
  assert len(sets) == len(by_passage)
  for doc in sets:
    blocks = doc.split("\n\n")
    passage = blocks[0].removeprefix("Recitation: ")
    expected = [f"Question: {q.question}\nAnswer: {q.answers[0]}" for q in by_passage[passage]]
    assert blocks[1:] == expected
    # Every answer is there to be read.
    assert all(q.answers[0] in passage for q in by_passage[passage])
  corpus = dataclasses.replace(CORPUS, reading_sets=True)
  with_sets = recite_world.training_documents(world, corpus, np.random.default_rng(0))
  without = recite_world.training_documents(world, CORPUS, np.random.default_rng(0))
  added = sum(len(recite_world.reading_sets(recite_world.skill_world(world, i)))
              for i in range(CORPUS.skill_worlds))
  assert len(with_sets) == len(without) + added
  assert not any(name in d for d in sets for name in recite_world.skill_world(world, 0).entities)


def test_world_vocabulary_reads_a_value_alike_in_a_sentence_and_as_an_answer(tmp_path):
  world = build_world(EncyclopediaConfig.preset("tiny"))
  docs = recite_world.training_documents(world, CORPUS, np.random.default_rng(0))
  prefix = str(tmp_path / "spm")
  train_sentencepiece(docs, prefix, 600, extra_options={"hard_vocab_limit": False,
                                                        **recite_world.WORLD_VOCABULARY})
  sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
  for sentence, value in (("was born in 1941.", "1941"), ("a native of Pukra.", "Pukra"),
                          ("Who employed Thusna Airways?", "Thusna Airways")):
    pieces = sp.encode(sentence, out_type=str)
    label = len(sp.encode("Answer:", out_type=str))
    answer = sp.encode("Answer: " + value, out_type=str)[label:]
    assert pieces[-1] in (".", "?") and pieces[-1 - len(answer):-1] == answer, (pieces, answer)
  assert sp.encode("a\nb", out_type=str).count("\n") == 1
  # Common words are pieces of their own (the unigram model split "was" into letters).
  assert "▁was" in sp.encode("He was born", out_type=str)


# The README's command with a tiny world, corpus, model and schedule.
SMALL = [
    "--gin.SEEDS=(0,)", "--gin.VOCAB_SIZE=700",
    "--gin.TransformerConfig.num_layers=1", "--gin.TransformerConfig.d_model=32",
    "--gin.TransformerConfig.num_heads=2", "--gin.TransformerConfig.num_kv_heads=1",
    "--gin.TransformerConfig.head_dim=16", "--gin.TransformerConfig.mlp_dim=64",
    "--gin.EncyclopediaConfig.num_people=16", "--gin.EncyclopediaConfig.num_cities=6",
    "--gin.EncyclopediaConfig.num_companies=6", "--gin.EncyclopediaConfig.num_countries=2",
    "--gin.EncyclopediaConfig.num_rivers=3",
    "--gin.CorpusConfig.passage_repeats=2", "--gin.CorpusConfig.qa_repeats=2",
    "--gin.CorpusConfig.skill_worlds=2", "--gin.CorpusConfig.skill_questions=(6, 3)",
    "--gin.pretrain/TrainingSchedule.steps=4", "--gin.pretrain/TrainingSchedule.batch_size=8",
    "--gin.pretrain/TrainingSchedule.checkpoint_every=4",
    "--gin.HintDataConfig.questions_per_passage=1", "--gin.HintDataConfig.replay=0.5",
    "--gin.hint_finetune/TrainingSchedule.steps=2",
    "--gin.hint_finetune/TrainingSchedule.batch_size=8",
    "--gin.hint_finetune/TrainingSchedule.checkpoint_every=2",
    "--gin.ReciteConfig.num_paths=2", "--gin.ReciteConfig.num_hints=2",
    "--gin.ReciteConfig.recitation_tokens=8", "--gin.ReciteConfig.answer_tokens=4",
    "--gin.ReciteConfig.reasoning_tokens=6", "--gin.ReciteConfig.hint_tokens=8",
    "--gin.ReciteConfig.question_tokens=8",
    "--gin.WorldEvalConfig.path_counts=(1, 2)", "--gin.WorldEvalConfig.resamples=2",
    "--gin.WorldEvalConfig.max_questions=3", "--gin.WorldEvalConfig.batch_size=8",
]


@pytest.mark.slow
def test_world_pipeline_runs_every_stage_and_reports(tmp_path):
  command = (readme_command("gin/methods/recite/world.gin") + [f"--gin.WORKDIR='{tmp_path}'"]
             + SMALL)
  result = entry.main(command)
  rows = result["seeds"][0]
  single = [label for label, _, _ in recite_world.SINGLE_HOP]
  assert [(r["model"], r["hops"], r["method"]) for r in rows] == [
      (model, 1, label) for model in ("pretrain", "hint_finetune_strict", "hint_finetune_corpus")
      for label in single] + [("pretrain", 2, label) for label, _, _ in recite_world.TWO_HOP]
  assert all(r["n"] == 3 for r in rows)
  report = open(result["report"]).read()
  for heading in ("Headline", "Error analysis", "EM by number of paths",
                  "overlap with the evaluation", "Where recitation can fail",
                  "Where multiple recitation fails", "Stage seconds"):
    assert heading in report
  assert "best compute-matched non-recitation method" in report
  for model in ("pretrain", "hint_finetune_strict", "hint_finetune_corpus"):
    assert os.path.exists(tmp_path / "report" / f"em_by_paths_{model}_1hop.png")
  assert os.path.exists(tmp_path / "report" / "em_by_paths_pretrain_2hop.png")
  seed_dir = tmp_path / "seed_0"
  evaluation = json.load(open(seed_dir / "eval" / "COMPLETED.json"))["result"]
  for shares in evaluation["analysis"].values():
    assert sum(shares[c] for c in ERROR_CLASSES) == pytest.approx(1.0)
  # Strict hint data never asks about a held-out entity's paragraph; the overlap counts
  # say so, and the corpus setting reports its own.
  strict = json.load(open(seed_dir / "hint_data_strict" / "COMPLETED.json"))["result"]
  assert strict["held-out entity paragraphs"] == 0
  assert strict["overlap"]["1-hop: gold paragraph is a target"] == 0
  assert strict["overlap"]["1-hop: some evidence paragraph is a target"] == 0
  questions = [json.loads(line)
               for line in open(seed_dir / "hint_data_strict" / "questions.jsonl")]
  assert questions and all(q["hint"].count(" — ") == 2 and q["entity_split"] == "train"
                           for q in questions)
  corpus = json.load(open(seed_dir / "hint_data_corpus" / "COMPLETED.json"))["result"]
  assert corpus["paragraphs"] == strict["paragraphs"]
  # Hint fine-tuning replays every paragraph's passage document (not only the sampled
  # pretraining documents), so it does not wear the other passages away.
  paragraphs = json.load(open(seed_dir / "world" / "COMPLETED.json"))["result"]["stats"][
      "paragraphs"]
  assert strict["replay"] >= paragraphs + round(0.5 * strict["examples"])
  tuned = [json.loads(line)["text"] for line in
           open(seed_dir / "hint_data_strict" / "hint_finetune.jsonl")]
  assert sum(t.startswith("Hint: ") and "\nRecitation: " in t for t in tuned) >= paragraphs
  # The gin's ReciteConfig.hinted_shots = 0: each fine-tuning example is the bare
  # question -> hint -> passage block, with no exemplar.
  bare = [t for t in tuned if t.startswith("Question: ") and "\nHint: " in t
          and "\nRecitation: " in t and "\n\n" not in t]
  assert len(bare) == strict["examples"]
  # Reading is also measured on a world no training document came from.
  for model in ("pretrain", "hint_finetune_strict", "hint_finetune_corpus"):
    share = evaluation["diagnostics"][model][
        "answer read from an unseen world's passage (paper layout)"]
    assert 0.0 <= share <= 1.0
    assert 0.0 <= evaluation["diagnostics"][model][
        "passage recalled from its hint (fine-tuning format)"] <= 1.0
  two_hop = evaluation["diagnostics"]["pretrain, two-hop"]
  assert 0.0 <= two_hop["paths: recitations at the token budget"] <= 1.0
  # Rerunning finds every stage complete and trains nothing again.
  mtime = os.path.getmtime(seed_dir / "pretrain" / "metrics.jsonl")
  again = entry.main(command)
  assert again["seeds"][0] == rows
  assert os.path.getmtime(seed_dir / "pretrain" / "metrics.jsonl") == mtime
