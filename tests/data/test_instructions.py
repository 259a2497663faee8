"""Self-instruct's instruction filter and red-teaming's topic rules on hand-worked cases."""

import pytest
from rouge_score import rouge_scorer

from align_jax.data.instructions import (InstructionFilter, _RougeL, balance_types, clean_topic,
                                         filter_instructions, merge_topics)


def test_rouge_l_is_the_packages_f_measure():
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
  pool = ["Write a short poem about the sea.", "List three prime numbers above 10"]
  rouge = _RougeL(pool)
  for text in ["Write a short poem about the moon.", "list 3 primes", "Nothing alike here"]:
    expected = max(scorer.score(p, text)["rougeL"].fmeasure for p in pool)
    assert rouge.most_similar(text) == pytest.approx(expected)
  # Hand-worked: "write a short poem about the sea" vs "... the moon": LCS 6 of 7 tokens
  # each side, F = 6/7.
  assert rouge.most_similar("Write a short poem about the moon.") == pytest.approx(6 / 7)


def test_filter_keeps_in_order_and_counts_each_reason():
  pool = ["Write a short poem about the sea."]
  candidates = [
      "Write a short poem about the moon.",          # ROUGE-L 6/7 > 0.7 with the pool
      "Explain why the sky looks blue at noon.",     # kept
      "Explain why the sky looks blue at dusk.",     # 7/8 with the one kept just before
      "Summarise this.",                             # 2 words
      "Describe the attached image in detail please",  # a blocked word
      "Describe the imagery of this old poem",       # 'imagery' is not the word 'image'
      "- Give two reasons to learn a language",      # starts with punctuation
      "Ésta es una pregunta sobre historia antigua",  # starts outside ASCII
      " ".join(["word"] * 151),                      # 151 words
      "   ",
  ]
  kept, counts = filter_instructions(candidates, pool)
  assert kept == ["Explain why the sky looks blue at noon.",
                  "Describe the imagery of this old poem"]
  assert counts == {"too_short": 2, "too_long": 1, "bad_start": 2, "blocked_word": 1,
                    "similar": 2, "kept": 2}
  # The threshold is inclusive: at most max_rouge_l is kept.
  kept, _ = filter_instructions(["Write a short poem about the moon."], pool,
                                InstructionFilter(max_rouge_l=6 / 7))
  assert kept == ["Write a short poem about the moon."]
  with pytest.raises(ValueError, match="min_words"):
    InstructionFilter(min_words=5, max_words=4)


def test_topic_rules():
  assert clean_topic("Vaccines\nand more text") == "Vaccines"
  assert clean_topic("  Ancient   Rome.  ") == "Ancient Rome"
  assert clean_topic("The Roman Empire") == "The Roman Empire"
  assert clean_topic("The Holy Roman Empire") is None    # four words
  assert clean_topic("climate change") is None           # not capitalised
  assert clean_topic("") is None and clean_topic("\n\n") is None
  assert merge_topics(["Vaccines", "Space travel"], ["vaccines", "Oceans", "SPACE TRAVEL",
                                                     "Oceans"]) == [
      "Vaccines", "Space travel", "Oceans"]
  topics = {"a": ["x", "y", "z"], "b": ["p", "q"]}
  assert balance_types(topics) == {"a": ["x", "y"], "b": ["p", "q"]}
  assert balance_types(topics, per_type=1) == {"a": ["x"], "b": ["p"]}
  with pytest.raises(ValueError, match=r"types \['b'\] have fewer than 3"):
    balance_types(topics, per_type=3)
