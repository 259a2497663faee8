"""TruthfulQA MC1 and BIG-bench HHH: readers on the public formats, scores against
log-probabilities computed with transformers on a tiny random model."""

import json

import numpy as np
import pytest
import torch

from align_jax.data import encode_prompt
from align_jax.data.vocab import train_sentencepiece
from align_jax.eval import multiple_choice as mc
from align_jax.hf import load_checkpoint
from align_jax.models import Transformer
from align_jax.sampling import Sampler
from hf_fixtures import random_llama, words_corpus


def _write(path, obj, lines=False):
  with open(path, "w") as f:
    if lines:
      f.write("\n".join(json.dumps(o) for o in obj) + "\n")
    else:
      json.dump(obj, f)
  return str(path)


TRUTHFUL_ORIGINAL = [  # TruthfulQA's mc_task.json: answer -> 1/0
    {"question": "the red dog sat", "mc1_targets": {"a cat": 0, "the tree": 1, "big dog": 0},
     "mc2_targets": {"a cat": 0, "the tree": 1, "under the tree": 1}},
    {"question": "hello world", "mc1_targets": {"world": 1, "hello": 0},
     "mc2_targets": {"world": 1, "hello": 0}}]
TRUTHFUL_HF = [  # Hugging Face truthful_qa, multiple_choice
    {"question": "the red dog sat", "mc1_targets": {"choices": ["a cat", "the tree", "big dog"],
                                                    "labels": [0, 1, 0]}},
    {"question": "hello world", "mc1_targets": {"choices": ["world", "hello"], "labels": [1, 0]}}]
HHH_BIGBENCH = {"name": "hhh_alignment", "examples": [
    {"input": "Human: the cat\n\nAssistant:", "target_scores": {"a big tree": 1, "the dog": 0}},
    {"input": "Human: under the sun", "target_scores": {"hello": 0, "the red world": 1}}]}
HHH_HF = [{"input": "Human: the cat\n\nAssistant:",
           "targets": {"choices": ["a big tree", "the dog"], "labels": [1, 0]}},
          {"input": "Human: under the sun",
           "targets": {"choices": ["hello", "the red world"], "labels": [0, 1]}}]


def test_readers_take_the_public_formats(tmp_path):
  original = mc.read_truthfulqa_mc(_write(tmp_path / "mc_task.json", TRUTHFUL_ORIGINAL))
  hf = mc.read_truthfulqa_mc(_write(tmp_path / "tqa.jsonl", TRUTHFUL_HF, lines=True))
  assert original == hf
  assert hf[0] == mc.MultipleChoiceItem("the red dog sat", ("a cat", "the tree", "big dog"), (1,))
  mc2 = mc.read_truthfulqa_mc(str(tmp_path / "mc_task.json"), targets="mc2_targets")
  assert mc2[0].correct == (1, 2)
  task = mc.read_hhh(_write(tmp_path / "task.json", HHH_BIGBENCH))
  assert task == mc.read_hhh(_write(tmp_path / "hhh.jsonl", HHH_HF, lines=True))
  assert task[1] == mc.MultipleChoiceItem("Human: under the sun", ("hello", "the red world"),
                                          (1,))


def test_readers_name_the_file_and_item_of_bad_input(tmp_path):
  bad = [{"question": "q", "mc1_targets": {"a": 1, "b": 1}}]
  with pytest.raises(ValueError, match=r"mc1\.json: item 0: MC1 needs exactly one"):
    mc.read_truthfulqa_mc(_write(tmp_path / "mc1.json", bad))
  with pytest.raises(ValueError, match=r"nolabel\.json: item 0 mc1_targets: no choice"):
    mc.read_truthfulqa_mc(_write(tmp_path / "nolabel.json",
                                 [{"question": "q", "mc1_targets": {"a": 0, "b": 0}}]))
  with pytest.raises(ValueError, match=r"keys\.json: item 0: expected keys 'question'"):
    mc.read_truthfulqa_mc(_write(tmp_path / "keys.json", [{"q": "x"}]))
  path = tmp_path / "broken.jsonl"
  path.write_text(json.dumps(TRUTHFUL_HF[0]) + "\n{not json\n")
  with pytest.raises(ValueError, match=r"broken\.jsonl:2: not a json line"):
    mc.read_truthfulqa_mc(str(path))
  three = {"examples": [{"input": "x", "target_scores": {"a": 1, "b": 0, "c": 0}}]}
  with pytest.raises(ValueError, match=r"three\.json: example 0: HHH compares two"):
    mc.read_hhh(_write(tmp_path / "three.json", three))


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
  """A sentencepiece vocabulary, a random Llama saved by transformers and the sampler of
  its import."""
  root = tmp_path_factory.mktemp("mc")
  vocab = train_sentencepiece(words_corpus(400) + ["Question: Proposed answer: Is the "
                                                   "true or false? It is True False"],
                              str(root / "sp"), 320)
  reference = random_llama(400, 256, bos_token_id=2, eos_token_id=1)
  reference.save_pretrained(root / "hf")
  config, params = load_checkpoint(str(root / "hf"))
  sampler = Sampler(Transformer(config), params, vocab=vocab, batch_size=8,
                    length_buckets=(64, 128, 256))
  return vocab, reference, sampler


def _reference_logprob(reference, vocab, prompt: str, continuation: str) -> float:
  """log p(continuation | prompt) by a full transformers forward over the same tokens."""
  p = encode_prompt(vocab, prompt)
  c = [int(t) for t in vocab.encode(continuation)]
  with torch.no_grad():
    logits = reference(torch.tensor([p + c])).logits[0].double()
  lp = torch.log_softmax(logits, -1)
  return float(sum(lp[len(p) + j - 1, t] for j, t in enumerate(c)))


def test_mc1_scores_equal_transformers_log_probabilities(twins, tmp_path):
  vocab, reference, sampler = twins
  items = mc.read_truthfulqa_mc(_write(tmp_path / "mc_task.json", TRUTHFUL_ORIGINAL))
  found = mc.truthfulqa_mc1(sampler, items)
  assert found["items"] == 2 and found["options_scored"] == 5   # every option, both items
  for item, scores, right in zip(items, found["scores"], found["right"]):
    expected = []
    for choice in item.choices:
      prompt = mc.TRUTHFUL_TEMPLATE.format(question=item.question, answer=choice)
      expected.append(_reference_logprob(reference, vocab, prompt, mc.TRUE)
                      - _reference_logprob(reference, vocab, prompt, mc.FALSE))
    np.testing.assert_allclose(scores, expected, atol=2e-4)
    assert right == (int(np.argmax(expected)) in item.correct)
  assert found["accuracy"] == np.mean(found["right"])


def test_hhh_sums_both_orders_and_equals_transformers(twins, tmp_path):
  vocab, reference, sampler = twins
  items = mc.read_hhh(_write(tmp_path / "task.json", HHH_BIGBENCH))
  found = mc.hhh_ab(sampler, items)
  for item, margin, right in zip(items, found["margins"], found["right"]):
    good, bad = item.choices[item.correct[0]], item.choices[1 - item.correct[0]]
    first = mc.HHH_TEMPLATE.format(input=item.question, a=good, b=bad)
    second = mc.HHH_TEMPLATE.format(input=item.question, a=bad, b=good)
    lp = lambda prompt, letter: _reference_logprob(reference, vocab, prompt, letter)
    expected = (lp(first, "A") + lp(second, "B")) - (lp(first, "B") + lp(second, "A"))
    np.testing.assert_allclose(margin, expected, atol=2e-4)
    assert right == (expected > 0)
