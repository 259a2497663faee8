"""The (A)/(B) preference judge: its margins equal next-token logit differences computed
with transformers on a tiny random model, in both orders; the order rule and the
per-principle normalisation on hand cases."""

import numpy as np
import pytest
import torch

from align_jax.data import encode_prompt
from align_jax.data.vocab import train_sentencepiece
from align_jax.hf import load_checkpoint
from align_jax.methods.salmon import judge as jd
from align_jax.models import Transformer
from align_jax.sampling import Sampler
from hf_fixtures import random_llama, words_corpus

ITEMS = [jd.Judgement("the red dog sat", "a big tree", "the dog", "Be brief."),
         jd.Judgement("under the sun", "hello world", "the red world sat", "Be kind to all."),
         jd.Judgement("the cat", "big", "big", "Never guess.")]


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
  root = tmp_path_factory.mktemp("judge")
  template_words = jd.JUDGE_TEMPLATE.format(principle="", prompt="", a="", b="")
  vocab = train_sentencepiece(words_corpus(400) + [template_words + "A) (B)"] * 3,
                              str(root / "sp"), 320)
  reference = random_llama(400, 256, bos_token_id=2, eos_token_id=1)
  reference.save_pretrained(root / "hf")
  config, params = load_checkpoint(str(root / "hf"))
  sampler = Sampler(Transformer(config), params, vocab=vocab, batch_size=8,
                    length_buckets=(128, 256))
  return vocab, reference, sampler


def _reference_margin(reference, vocab, prompt: str) -> float:
  """logit("A") - logit("B") at the position after `prompt`, by transformers."""
  ids = encode_prompt(vocab, prompt)
  with torch.no_grad():
    logits = reference(torch.tensor([ids])).logits[0, -1].double()
  a, b = (jd.letter_token(vocab, prompt, letter) for letter in ("A", "B"))
  return float(logits[a] - logits[b])


def test_judge_margins_equal_transformers_logits_in_both_orders(twins):
  vocab, reference, sampler = twins
  found = jd.judge(sampler, ITEMS)
  shown, swapped = jd.judge_prompts(ITEMS)
  assert shown[0].endswith("Response (A): a big tree\n\nResponse (B): the dog\n\nUnder this "
                           "principle, the better response is (")
  assert "Principle: Be brief.\n\nUser: the red dog sat\n\n" in shown[0]
  assert "Response (A): the dog\n\nResponse (B): a big tree" in swapped[0]
  d1 = np.array([_reference_margin(reference, vocab, p) for p in shown])
  d2 = np.array([_reference_margin(reference, vocab, p) for p in swapped])
  np.testing.assert_allclose(found["first_as_a"][:2], d1[:2], atol=2e-4)
  np.testing.assert_allclose(found["first_as_b"][:2], d2[:2], atol=2e-4)
  np.testing.assert_allclose(found["score"], (d1 - d2) / 2, atol=2e-4)
  np.testing.assert_array_equal(found["agree"], d1 * d2 < 0)
  # Two equal responses are one prompt in both orders: not scored (margins 0), their
  # score 0 and their orders disagreeing, as scoring them gives.
  assert shown[2] == swapped[2] and d1[2] == d2[2] != 0
  assert found["first_as_a"][2] == found["first_as_b"][2] == 0 and not found["agree"][2]
  # The letter is the token that follows "(" in running text, not the word "A".
  assert vocab.decode([jd.letter_token(vocab, shown[0], "A")]) == "A"


def test_order_rule_and_normalisation_on_hand_cases():
  scores = np.array([[2.0, 1.0], [-2.0, 1.0], [0.0, 1.0]])
  agree = np.array([[True, True], [True, False], [False, True]])
  out = jd.dimension_scores(scores, agree)
  variance = scores[:, 0].var()   # 8/3; the second principle does not vary
  np.testing.assert_allclose(out[:, 0], [2.0 / variance, -2.0 / variance, 0.0])
  np.testing.assert_array_equal(out[:, 1], [0.0, 0.0, 0.0])
  with pytest.raises(ValueError, match=r"\[pairs, principles\]"):
    jd.dimension_scores(scores[:, 0], agree[:, 0])


def test_a_letter_that_is_not_one_token_is_refused(twins):
  vocab, _, sampler = twins
  with pytest.raises(ValueError, match=r"judge letter 'zzqq' .* not a single token"):
    jd.judge(sampler, ITEMS[:1], letters=("zzqq", "B"))
