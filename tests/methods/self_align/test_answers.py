"""Cleaning principle-driven answers: each filter on a hand-worked output."""

from align_jax.methods.self_align.answers import (AnswerFormat, clean_answer, exemplar_ngrams,
                                                  filter_answers)

EXEMPLARS = ["User: What is the tallest mountain of Velora?\n\nAssistant (internal thoughts): "
             "the question asks for a fact I know (informative).\n\nAssistant: The tallest "
             "mountain of Velora is Mount Arden, which rises above the northern lakes."]
THOUGHTS = "Assistant (internal thoughts): the user asks for arithmetic (step by step).\n"


def _clean(output):
  return clean_answer(output, exemplar_ngrams(EXEMPLARS, AnswerFormat().leak_words))


def test_a_well_formed_answer_is_kept_whole():
  output = THOUGHTS + "Assistant: 12 plus 30 is 42.\nSo the answer is 42."
  assert _clean(output) == ("12 plus 30 is 42.\nSo the answer is 42.", [])


def test_each_filter():
  # No thoughts turn, or no answer turn after it.
  assert _clean("Assistant: 42") == (None, ["format"])
  assert _clean(THOUGHTS + "I think it is 42.") == (None, ["format"])
  # A new user turn: cut before it.
  assert _clean(THOUGHTS + "Assistant: It is 42.\n\nUser: thanks") == ("It is 42.", ["user_turn"])
  # A repeated sentence (case and punctuation aside): cut before the first repeat.
  assert _clean(THOUGHTS + "Assistant: It is 42. I am sure. It is 42! Really.") == (
      "It is 42. I am sure.", ["repeated"])
  assert _clean(THOUGHTS + "Assistant: Step 1: 5+5=10\nStep 2: 10+2=12\nStep 1: 5+5=10") == (
      "Step 1: 5+5=10\nStep 2: 10+2=12", ["repeated"])
  # Nothing left.
  assert _clean(THOUGHTS + "Assistant: User: hello") == (None, ["user_turn", "empty"])
  # Eight words in a row from an exemplar: dropped; seven are fine.
  leak = THOUGHTS + "Assistant: The tallest mountain of Velora is Mount Arden, I know."
  assert _clean(leak) == (None, ["leak"])
  fine = THOUGHTS + "Assistant: A tallest mountain of Velora is Mount Arden, I believe."
  assert _clean(fine) == ("A tallest mountain of Velora is Mount Arden, I believe.", [])


def test_filter_answers_counts_every_filter():
  outputs = ["no form", THOUGHTS + "Assistant: Fine. Fine.", THOUGHTS + "Assistant: Yes.",
             THOUGHTS + "Assistant: Yes.\nUser: and?"]
  answers, counts = filter_answers(outputs, EXEMPLARS)
  assert answers == [None, "Fine.", "Yes.", "Yes."]
  assert counts == {"format": 1, "user_turn": 1, "repeated": 1, "empty": 0, "leak": 0,
                    "kept": 3}
