"""The recite-and-answer procedures run through the shared sampler (a tiny random model:
this checks the plumbing, paths, cuts and determinism; learning is the world
experiment's business)."""

import dataclasses

import jax
import pytest

from align_jax.data.vocab import train_sentencepiece
from align_jax.methods.recite import analysis, prompts
from align_jax.methods.recite.prompts import Exemplar
from align_jax.methods.recite.recite import METHODS, SAMPLED, ReciteConfig, Reciter, run_method
from align_jax.models import Transformer, TransformerConfig, init_params
from align_jax.sampling import Sampler

EXEMPLARS = [Exemplar("Where was Ada born?", "Norbury", passages=("Ada was born in Norbury.",),
                      hints=("Ada — Life — paragraph #1",), reasoning="Her article says so.")]
RECORDS = [{"question": "Where was Bo born?", "answers": ["Usk"]},
           {"question": "Who founded Quill?", "answers": ["Ada"], "hops": 2}]
CONFIG = ReciteConfig(num_paths=3, recitation_tokens=10, answer_tokens=4, reasoning_tokens=6,
                      num_hints=4, hint_tokens=6)


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
  root = tmp_path_factory.mktemp("recite")
  texts = ["Question: Where was Ada born?\nRecitation: Ada was born in Norbury.\n\n"
           "Hint: Ada — Life — paragraph #1\nAnswer: Norbury\n"] * 40
  vocab = train_sentencepiece(texts, str(root / "spm"), 300, normalization_rule_name="identity",
                              remove_extra_whitespaces=False, user_defined_symbols=["\n"],
                              extra_options={"hard_vocab_limit": False})
  config = TransformerConfig(vocab_size=320, num_layers=1, d_model=32, num_heads=4,
                             num_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=256,
                             pad_id=0, eos_id=1, bos_id=2)
  model = Transformer(config)
  return Sampler(model, init_params(model, jax.random.key(0)), vocab=vocab, batch_size=8,
                 length_buckets=(64, 128, 192))


def test_recite_and_answer_gives_one_path_per_sample_cut_at_blank_lines(sampler):
  reciter = Reciter(sampler, EXEMPLARS, CONFIG, convention="squad")
  results = reciter.recite_and_answer(RECORDS, jax.random.key(1))
  assert [len(r.paths) for r in results] == [3, 3]
  assert [r.hops for r in results] == [1, 2]
  for result in results:
    for path in result.paths:
      assert len(path.recitations) == 1 and "\n\n" not in path.recitations[0]
      assert "\n" not in path.answer
  again = reciter.recite_and_answer(RECORDS, jax.random.key(1))
  assert [r.to_dict() for r in again] == [r.to_dict() for r in results]
  assert [len(r.paths) for r in reciter.recite_and_answer(RECORDS, jax.random.key(1), 2)] == [2, 2]


def test_baselines_greedy_or_self_consistent_and_multi_recitation(sampler):
  reciter = Reciter(sampler, EXEMPLARS, CONFIG, convention="squad")
  assert [len(r.paths) for r in reciter.direct(RECORDS)] == [1, 1]
  cot = reciter.chain_of_thought(RECORDS)
  assert all(len(r.paths) == 1 and "\n" not in r.paths[0].answer for r in cot)
  # Self-consistency: as many sampled paths as asked, reproducible from the key.
  sampled = reciter.direct(RECORDS, jax.random.key(6), 5)
  assert [len(r.paths) for r in sampled] == [5, 5]
  assert [r.to_dict() for r in reciter.direct(RECORDS, jax.random.key(6), 5)] == [
      r.to_dict() for r in sampled]
  assert [len(r.paths) for r in reciter.chain_of_thought(RECORDS, jax.random.key(6), 4)] == [
      4, 4]
  with pytest.raises(ValueError, match="PRNG key"):
    reciter.direct(RECORDS, None, 3)
  multi = reciter.multi_recite_and_answer(RECORDS, jax.random.key(2))
  assert [len(r.paths) for r in multi] == [3, 3]


def test_diversified_reads_distinct_passages_together_or_votes(sampler):
  reciter = Reciter(sampler, EXEMPLARS, CONFIG, convention="squad")
  hints = [["h — a — paragraph #1", "h — b — paragraph #1", "h — a — paragraph #1"],
           ["  ", "h — c — paragraph #2"]]
  together = reciter.recite_from_hints(RECORDS, hints)
  # One path per distinct hint, the most sampled first; one answer read from all of them.
  assert [[p.hint for p in r.paths] for r in together] == [
      ["h — a — paragraph #1", "h — b — paragraph #1"], ["h — c — paragraph #2"]]
  assert all(r.final is not None and all(p.answer == "" for p in r.paths) for r in together)
  passages = [p.recitations[0] for p in together[0].paths]
  expected = reciter.greedy(
      [prompts.answer_prompt(EXEMPLARS, passages, RECORDS[0]["question"])], CONFIG.answer_tokens)
  assert together[0].final == prompts.clean_answer(expected[0])
  capped = Reciter(sampler, EXEMPLARS, dataclasses.replace(CONFIG, context_passages=1),
                   convention="squad").recite_from_hints(RECORDS, hints)
  expected = reciter.greedy([prompts.answer_prompt(EXEMPLARS, passages[:1],
                                                   RECORDS[0]["question"])], CONFIG.answer_tokens)
  assert capped[0].final == prompts.clean_answer(expected[0])
  voting = Reciter(sampler, EXEMPLARS, dataclasses.replace(
      CONFIG, diversified_aggregation="vote"), convention="squad").recite_from_hints(
          RECORDS, hints)
  assert all(r.final is None for r in voting)
  assert [[p.recitations for p in r.paths] for r in voting] == [
      [p.recitations for p in r.paths] for r in together]
  diverse, rows = reciter.diversified_by_paths(RECORDS, jax.random.key(3), [1, 4], resamples=2)
  assert all(1 <= len(r.paths) <= 4 for r in diverse)
  assert [r["paths"] for r in rows] == [1, 4]
  assert rows[1]["em_mean"] == analysis.scores(diverse)["em"] and rows[1]["em_std"] == 0.0
  with pytest.raises(ValueError, match="diversified_aggregation"):
    ReciteConfig(diversified_aggregation="sum")


def test_every_method_runs_by_name_with_its_path_counts(sampler):
  reciter = Reciter(sampler, EXEMPLARS, CONFIG, convention="squad")
  for method in METHODS:
    results, rows = run_method(reciter, method, RECORDS, jax.random.key(7), [1, 2],
                               resamples=2)
    assert len(results) == 2
    assert [r["paths"] for r in rows] == ([1, 2] if method in SAMPLED else [1])
  with pytest.raises(ValueError, match="unknown RECITE method"):
    run_method(reciter, "guess", RECORDS, jax.random.key(7), [1])
  line = Reciter(sampler, EXEMPLARS, dataclasses.replace(CONFIG, recitation_stop="\n"),
                 convention="squad")
  for result in line.recite_and_answer(RECORDS, jax.random.key(1)):
    assert all("\n" not in p.recitations[0] for p in result.paths)


def test_hinted_recitation_and_question_generation(sampler):
  reciter = Reciter(sampler, EXEMPLARS, dataclasses.replace(CONFIG, passage_shots=0),
                    convention="squad")
  results = reciter.hinted_recite_and_answer(RECORDS, jax.random.key(4))
  for result in results:
    # One path per distinct sampled hint: a repeated hint neither recites nor votes twice.
    hints = [p.hint for p in result.paths]
    assert 1 <= len(hints) <= 3 and len(set(hints)) == len(hints)
  questions = reciter.generate_questions(["Bo was born in Usk.", "Ada was born in Norbury."],
                                         jax.random.key(5), 2)
  assert len(questions) == 2
  assert all(len(row) <= 2 and all(q and "\n" not in q for q in row) for row in questions)


def test_hinted_format_prompts_carry_as_many_exemplars_as_configured(sampler):
  """hinted_shots=0: the bare question block a fine-tuned model reads; -1: every
  exemplar."""
  bare = Reciter(sampler, EXEMPLARS, dataclasses.replace(CONFIG, hinted_shots=0),
                 convention="squad")._hinted_prompt("hinted")
  assert bare("Where was Bo born?", None) == "Question: Where was Bo born?\nHint:"
  assert bare("Where was Bo born?", "Bo — Life — paragraph #1") == (
      "Question: Where was Bo born?\nHint: Bo — Life — paragraph #1\nRecitation:")
  full = Reciter(sampler, EXEMPLARS, CONFIG, convention="squad")._hinted_prompt("hinted")
  assert full("Where was Bo born?", None) == (
      "Question: Where was Ada born?\nHint: Ada — Life — paragraph #1\n"
      "Recitation: Ada was born in Norbury.\n\nQuestion: Where was Bo born?\nHint:")


def test_a_vocabulary_that_flattens_newlines_is_refused(tmp_path, sampler):
  flat = train_sentencepiece(["a b c\nd e"] * 20, str(tmp_path / "flat"), 280,
                             extra_options={"hard_vocab_limit": False})
  other = Sampler(sampler.model, sampler.params, vocab=flat)
  with pytest.raises(ValueError, match="does not keep newlines"):
    Reciter(other, EXEMPLARS, CONFIG, convention="squad")
