"""The recite-and-answer procedures run through the shared sampler (a tiny random model:
this checks the plumbing, paths, cuts and determinism; learning is the world
experiment's business)."""

import dataclasses

import jax
import pytest

from align_jax.data.vocab import train_sentencepiece
from align_jax.methods.recite.prompts import Exemplar
from align_jax.methods.recite.recite import ReciteConfig, Reciter
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
  reciter = Reciter(sampler, EXEMPLARS, CONFIG)
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


def test_baselines_multi_recitation_and_diversified_paths(sampler):
  reciter = Reciter(sampler, EXEMPLARS, CONFIG)
  assert [len(r.paths) for r in reciter.direct(RECORDS)] == [1, 1]
  cot = reciter.chain_of_thought(RECORDS)
  assert all(len(r.paths) == 1 and "\n" not in r.paths[0].answer for r in cot)
  multi = reciter.multi_recite_and_answer(RECORDS, jax.random.key(2))
  assert [len(r.paths) for r in multi] == [3, 3]
  diverse = reciter.diversified(RECORDS, jax.random.key(3))
  # One path per distinct sampled hint, at most num_hints, each recording its hint.
  assert all(1 <= len(r.paths) <= 4 for r in diverse)
  hints = [p.hint for p in diverse[0].paths]
  assert len(set(hints)) == len(hints) and all(h for h in hints)
  line = Reciter(sampler, EXEMPLARS, dataclasses.replace(CONFIG, recitation_stop="\n"))
  for result in line.recite_and_answer(RECORDS, jax.random.key(1)):
    assert all("\n" not in p.recitations[0] for p in result.paths)


def test_hinted_recitation_and_question_generation(sampler):
  reciter = Reciter(sampler, EXEMPLARS, dataclasses.replace(CONFIG, passage_shots=0))
  results = reciter.hinted_recite_and_answer(RECORDS, jax.random.key(4))
  assert [len(r.paths) for r in results] == [3, 3]  # one path per sampled hint
  for result in results:
    by_hint = {}
    for path in result.paths:
      # A hint sampled twice is recited once: same passage, same answer.
      assert by_hint.setdefault(path.hint, (path.recitations, path.answer)) == (
          path.recitations, path.answer)
  questions = reciter.generate_questions(["Bo was born in Usk.", "Ada was born in Norbury."],
                                         jax.random.key(5), 2)
  assert len(questions) == 2
  assert all(len(row) <= 2 and all(q and "\n" not in q for q in row) for row in questions)


def test_a_vocabulary_that_flattens_newlines_is_refused(tmp_path, sampler):
  flat = train_sentencepiece(["a b c\nd e"] * 20, str(tmp_path / "flat"), 280,
                             extra_options={"hard_vocab_limit": False})
  other = Sampler(sampler.model, sampler.params, vocab=flat)
  with pytest.raises(ValueError, match="does not keep newlines"):
    Reciter(other, EXEMPLARS, CONFIG)
