"""The project's principles and exemplars, their loaders' errors, the prompt they make,
and the `lines` chat template engraving trains with: its loss mask covers only the
answer, and a rendered dialogue has the ids of the same text encoded whole."""

import json

import numpy as np
import pytest

from align_jax.data.jsonl import JsonlError
from align_jax.data.tasks import tokenize_record
from align_jax.data.vocab import load_vocabulary, train_sentencepiece
from align_jax.methods.self_align import principles as sp
from align_jax.worlds import principles as pw


def test_sixteen_principles_in_the_thesis_categories_and_five_exemplars_citing_them():
  principles = sp.load_principles()
  assert [p.category for p in principles] == list(sp.CATEGORIES)
  assert {k for p in principles for k in p.world_kinds} == set(pw.KINDS)
  exemplars = sp.load_exemplars()
  assert len(exemplars) == 5
  for e in exemplars:
    numbers = sp.cited(e.thoughts)
    assert numbers, e.thoughts
    for n in numbers:   # each citation is "<number> <its category>"
      assert f"{n} {principles[n - 1].category}" in e.thoughts
  assert sp.principles_by_kind(principles)["arithmetic"] == [
      "reasoning", "numerical sensitivity", "step-by-step"]
  prompt = sp.principles_prompt(principles, exemplars, "What is 2 plus 3?")
  assert prompt.count("\nAssistant (internal thoughts): ") == 5
  assert "\n16 (operational): " in prompt
  assert prompt.endswith("\n\nUser: What is 2 plus 3?\nAssistant (internal thoughts):")


def test_loaders_name_the_file_line_and_key(tmp_path):
  path = tmp_path / "p.jsonl"
  path.write_text(json.dumps({"number": 1, "category": "ethical", "text": "Be kind."}) + "\n"
                  + json.dumps({"number": 3, "category": "x", "text": "y"}) + "\n")
  with pytest.raises(JsonlError, match=r"p.jsonl, line 2: key 'number' must be 2"):
    sp.load_principles(str(path))
  path.write_text(json.dumps({"query": "q", "thoughts": "", "answer": "a"}) + "\n")
  with pytest.raises(JsonlError, match=r"line 1: key 'thoughts' must be a non-empty string"):
    sp.load_exemplars(str(path))


@pytest.fixture(scope="module")
def world_vocab(tmp_path_factory):
  world = pw.build_world(pw.PrinciplesConfig(rule_documents=300, plain_dialogues=200))
  prefix = str(tmp_path_factory.mktemp("vocab") / "spm")
  train_sentencepiece(world.corpus(), prefix, 512,
                      extra_options={"hard_vocab_limit": False, **pw.VOCAB_OPTIONS})
  return load_vocabulary(prefix + ".model")


def test_lines_template_masks_only_the_answer_and_matches_the_corpus_text(world_vocab):
  record = {"prompt": " What is the capital of Velora?",
            "response": " I do not know Velora. It is not one of the lands I know."}
  features = tokenize_record(record, "sft", world_vocab, chat_template="lines")
  ids, mask = features["tokens"].tolist(), features["loss_mask"].tolist()
  text = ("User: What is the capital of Velora?\nAssistant: I do not know Velora. It is not "
          "one of the lands I know.")
  whole = [world_vocab.bos_id] + [int(i) for i in world_vocab.encode(text)] + [world_vocab.eos_id]
  assert ids == whole
  answer = [int(i) for i in world_vocab.encode(record["response"])]
  first = len(ids) - 1 - len(answer)
  assert ids[first:-1] == answer
  assert mask == [0] * first + [1] * (len(answer) + 1)   # the answer and its EOS
  assert np.sum(mask) == len(answer) + 1


def test_judge_letters_are_single_tokens_after_a_parenthesis(world_vocab):
  # The world's vocabulary keeps "(" and ")" as pieces of their own, so the letter a
  # judging document names is the token a judge prompt ending in "(" compares.
  pieces = [world_vocab.decode([int(i)]) for i in world_vocab.encode("is (A)\nAnswer (B): x")]
  assert pieces[pieces.index("(") + 1] == "A" and pieces[pieces.index("A") + 1] == ")"
  prompt = pw.JUDGE_LAYOUT.format(principle="Be kind.", prompt="Hi.", a="x", b="y")
  whole = [int(i) for i in world_vocab.encode(prompt + "B)")]
  assert whole[:-2] == [int(i) for i in world_vocab.encode(prompt)]
  assert world_vocab.decode(whole[-2:-1]) == "B"
