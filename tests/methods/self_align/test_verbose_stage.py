"""Verbose answers that elaborate the engraved model's brief answer: what the stage
prompts with (text and token-id prompts) and the space between a brief answer and its
continuation under a vocabulary that drops a decoded text's leading space."""

import json

import jax
import numpy as np
import pytest

from align_jax.data.jsonl import write_jsonl
from align_jax.data.tasks import encode_prompt
from align_jax.data.vocab import BOS_ID, EOS_ID, PAD_ID, continued_text, train_sentencepiece
from align_jax.methods.self_align import stages as sa
from align_jax.models import Transformer, TransformerConfig, init_params
from align_jax.sampling.engine import Sampler

WORDS = "the sky is blue and the sea is deep . it is clear today so we walk by the river"


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  """A SentencePiece vocabulary with its default dummy prefix: a text decoded on its own
  loses its leading space."""
  rng = np.random.default_rng(0)
  words = WORDS.split()
  texts = [" ".join(rng.choice(words, 12)) for _ in range(400)]
  return train_sentencepiece(texts, str(tmp_path_factory.mktemp("spm") / "spm"), 290)


def test_continued_text_gets_back_the_space_decoding_alone_drops(vocab):
  context, rest = " the sky is blue .", " it is clear"
  tokens = [int(i) for i in vocab.encode(rest)]
  alone = vocab.decode(tokens)
  assert alone == "it is clear"   # what the sampler writes for the continuation
  completion = {"tokens": tokens, "text": alone}
  assert continued_text(vocab, context, completion) == " it is clear"
  joined = vocab.decode([int(i) for i in vocab.encode(context)] + tokens)
  assert "the sky is blue ." + continued_text(vocab, context, completion) == joined
  assert continued_text(vocab, context, {"tokens": [], "text": ""}) == ""
  assert continued_text(vocab, "", completion) == alone


def _prompt_sets(vocab):
  unused = dict(instructions=lambda tasks: "", topics=lambda kind, topics: "",
                question=lambda kind, examples, topic: "", principled=lambda query: "")
  text = sa.PromptSet(**unused, plain=lambda q: f"{q} :",
                      verbose=lambda q: f"the sea is deep . {q} :", turn_text=lambda t: f" {t}")
  ids = sa.PromptSet(**unused, plain=lambda q: encode_prompt(vocab, f"{q} :"),
                     verbose=lambda q: encode_prompt(vocab, f"the sea is deep . {q} :"))
  return {"text": text, "ids": ids}


@pytest.mark.parametrize("kind", ["text", "ids"])
def test_elaborated_answers_continue_the_brief_answer_in_the_prompt(vocab, tmp_path, kind):
  config = TransformerConfig(vocab_size=vocab.vocab_size, num_layers=1, d_model=32,
                             num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64,
                             max_seq_len=128, pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID)
  model = Transformer(config)
  sampler = Sampler(model, init_params(model, jax.random.key(0)), vocab=vocab, batch_size=4)
  seen = []
  generate = sampler.generate
  sampler.generate = lambda prompts, *a, **k: (seen.extend(prompts), generate(prompts, *a, **k))[1]
  queries = ["the sky is blue", "we walk by the river", "is the sea deep", "it is clear today"]
  write_jsonl(str(tmp_path / "i.jsonl"), [{"text": q} for q in queries[:3]])
  write_jsonl(str(tmp_path / "q.jsonl"), [{"text": queries[3], "type": "t"}])
  results = {"self_instruct": {"instructions": str(tmp_path / "i.jsonl")},
             "red_team": {"questions": str(tmp_path / "q.jsonl")}}
  prompts = _prompt_sets(vocab)[kind]
  # A space ends the brief answers: the random model's greedy words, finished.
  config = sa.VerboseConfig(max_new_tokens=12, min_chars=1, elaborate=True,
                            stop_strings=(" ",), chunk_size=4)
  out = sa.verbose_answer_stage(config, prompts, [], lambda r: sampler, 0)(str(tmp_path), results)
  assert out["generated"] == 4 and out["elaborated"]
  briefs = [json.loads(line) for line in open(tmp_path / "brief.jsonl")]
  rows = [json.loads(line) for line in open(tmp_path / "answers.jsonl")]
  samples = [json.loads(line) for line in open(tmp_path / "samples.jsonl")]
  assert seen[:4] == [prompts.plain(q) for q in queries]   # the brief answers' prompts
  elaborated = 0
  for query, brief, row, sample, prompt in zip(queries, briefs, rows, samples, seen[4:]):
    done = brief["completions"][0]["finished"]
    assert row["brief"] == (brief["completions"][0]["text"].strip() if done else "")
    if not row["brief"]:
      assert prompt == prompts.verbose(query)
      continue
    elaborated += 1
    if kind == "text":
      assert prompt == prompts.verbose(query) + " " + row["brief"]
    else:
      assert prompt == [*prompts.verbose(query), *vocab.encode(row["brief"])]
    rest = continued_text(vocab, prompts.turn_text(row["brief"]), sample["completions"][0])
    assert row["answer"] == (row["brief"] + rest).strip()
  assert elaborated >= 2
