"""Tests for align_jax.data.chat."""

import collections.abc
import dataclasses
import random

import numpy as np
import pytest
import seqio
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from align_jax.data import chat
from align_jax.data.vocab import train_sentencepiece
from align_jax.hf.tokenizer import load_tokenizer

_CHAT_SPECIALS = [
    "<pad>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|im_start|>",
    "<|im_end|>",
    "<bos>",
    "<start_of_turn>",
    "<end_of_turn>",
]

_WORDS = (
    "the a cat dog sat ran on mat tree big small red blue hello world how are "
    "you fine thanks system user assistant model über café 東京 , . ? !"
).split()

CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "How big is the cat?"},
    {"role": "assistant", "content": "The cat is small."},
    {"role": "user", "content": "And the dog, über café?"},
    {"role": "assistant", "content": "Big. 東京!"},
]


def _corpus(n: int = 300) -> list[str]:
  rng = random.Random(0)
  return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 10))) for _ in range(n)]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("chat_bpe")
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=400,
      special_tokens=_CHAT_SPECIALS,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tokenizer.train_from_iterator(_corpus(), trainer)
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tokenizer,
      bos_token="<|begin_of_text|>",
      eos_token="<|end_of_text|>",
      pad_token="<pad>",
  )
  fast.save_pretrained(str(directory))
  return directory


@pytest.fixture(scope="module")
def hf_vocab(hf_dir):
  return load_tokenizer(str(hf_dir))


@pytest.fixture(scope="module")
def sp_vocab(tmp_path_factory):
  prefix = tmp_path_factory.mktemp("chat_sp") / "spm"
  return train_sentencepiece(_corpus(), str(prefix), 300)


def _spans(rendered: chat.RenderedChat) -> list[list[int]]:
  """Returns the runs of consecutive masked token ids."""
  spans, current = [], []
  for token, flag in zip(rendered.token_ids.tolist(), rendered.loss_mask.tolist()):
    if flag:
      current.append(token)
    elif current:
      spans.append(current)
      current = []
  if current:
    spans.append(current)
  return spans


def _assistant_contents(messages):
  return [m["content"] for m in messages if m["role"] == "assistant"]


def _check_shapes(rendered):
  assert rendered.token_ids.dtype == np.int32
  assert rendered.token_ids.shape == rendered.loss_mask.shape
  assert set(rendered.loss_mask.tolist()) <= {0, 1}


# -- plain template -------------------------------------------------------


def test_plain_pieces_and_mask_byte_vocab():
  vocab = seqio.ByteVocabulary()
  template = chat.get_template("plain")
  rendered = template.render(CONVERSATION, vocab)
  _check_shapes(rendered)

  enc = vocab.encode
  eos = vocab.eos_id
  expected_ids, expected_mask = [], []
  for ids, flag in [
      (enc("System: "), 0),
      (enc("You answer briefly."), 0),
      (enc("\n"), 0),
      (enc("User: "), 0),
      (enc("How big is the cat?"), 0),
      (enc("\n"), 0),
      (enc("Assistant: "), 0),
      (enc("The cat is small.") + [eos], 1),
      (enc("User: "), 0),
      (enc("And the dog, über café?"), 0),
      (enc("\n"), 0),
      (enc("Assistant: "), 0),
      (enc("Big. 東京!") + [eos], 1),
  ]:
    expected_ids += ids
    expected_mask += [flag] * len(ids)
  assert rendered.token_ids.tolist() == expected_ids
  assert rendered.loss_mask.tolist() == expected_mask
  assert [vocab.decode(s) for s in _spans(rendered)] == _assistant_contents(CONVERSATION)


def test_plain_mask_with_sentencepiece(sp_vocab):
  rendered = chat.get_template("plain").render(CONVERSATION, sp_vocab)
  _check_shapes(rendered)
  spans = _spans(rendered)
  contents = _assistant_contents(CONVERSATION)
  assert len(spans) == len(contents)
  for span, content in zip(spans, contents):
    # Content tokens followed by the EOS id, nothing else.
    assert span == list(sp_vocab.encode(content)) + [sp_vocab.eos_id]
    assert sp_vocab.decode(span) == content
  # EOS only appears at the end of assistant turns.
  eos_positions = np.flatnonzero(rendered.token_ids == sp_vocab.eos_id)
  assert rendered.loss_mask[eos_positions].tolist() == [1, 1]


def test_plain_render_text():
  text = chat.get_template("plain").render_text(CONVERSATION, eos_text="<EOS>")
  assert text == (
      "System: You answer briefly.\n"
      "User: How big is the cat?\n"
      "Assistant: The cat is small.<EOS>"
      "User: And the dog, über café?\n"
      "Assistant: Big. 東京!<EOS>"
  )


def test_generation_prompt():
  vocab = seqio.ByteVocabulary()
  template = chat.get_template("plain")
  prompt = CONVERSATION[:4]
  rendered = template.render(prompt, vocab, add_generation_prompt=True)
  plain = template.render(prompt, vocab)
  gen = vocab.encode("Assistant: ")
  assert rendered.token_ids.tolist() == plain.token_ids.tolist() + gen
  assert rendered.loss_mask[-len(gen):].tolist() == [0] * len(gen)
  assert template.render_text(prompt, add_generation_prompt=True).endswith(
      "über café?\nAssistant: "
  )


def test_default_system_is_used_only_without_system_message():
  vocab = seqio.ByteVocabulary()
  template = dataclasses.replace(chat.get_template("plain"), default_system="Be kind.")
  no_system = CONVERSATION[1:]
  assert template.render_text(no_system).startswith("System: Be kind.\nUser: How big")
  assert template.render_text(CONVERSATION).startswith("System: You answer briefly.\n")
  assert "Be kind." not in template.render_text(CONVERSATION)
  rendered = template.render(no_system, vocab)
  assert [vocab.decode(s) for s in _spans(rendered)] == _assistant_contents(no_system)


def test_empty_assistant_content_still_trains_end_marker():
  vocab = seqio.ByteVocabulary()
  messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]
  rendered = chat.get_template("plain").render(messages, vocab)
  assert _spans(rendered) == [[vocab.eos_id]]


# -- model-family templates -------------------------------------------------

_CHATML_JINJA = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_LLAMA3_JINJA = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] "
    "+ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def _hf_ids(result) -> list[int]:
  if isinstance(result, collections.abc.Mapping):
    result = result["input_ids"]
  return list(result)


@pytest.mark.parametrize(
    "name,jinja,end_marker",
    [("chatml", _CHATML_JINJA, "<|im_end|>\n"), ("llama3", _LLAMA3_JINJA, "<|eot_id|>")],
)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_matches_transformers_chat_template(
    hf_dir, hf_vocab, name, jinja, end_marker, add_generation_prompt
):
  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
  hf_tokenizer.chat_template = jinja
  messages = CONVERSATION[:4] if add_generation_prompt else CONVERSATION
  template = chat.get_template(name)

  bos_text = "<|begin_of_text|>" if template.add_bos else ""
  expected_text = hf_tokenizer.apply_chat_template(
      messages, tokenize=False, add_generation_prompt=add_generation_prompt
  )
  assert (
      template.render_text(
          messages, add_generation_prompt=add_generation_prompt, bos_text=bos_text
      )
      == expected_text
  )

  rendered = template.render(messages, hf_vocab, add_generation_prompt=add_generation_prompt)
  _check_shapes(rendered)
  expected_ids = _hf_ids(
      hf_tokenizer.apply_chat_template(
          messages, tokenize=True, add_generation_prompt=add_generation_prompt
      )
  )
  assert rendered.token_ids.tolist() == expected_ids
  assert [hf_vocab.decode(s) for s in _spans(rendered)] == [
      c + end_marker for c in _assistant_contents(messages)
  ]
  if template.add_bos:
    assert rendered.token_ids[0] == hf_vocab.bos_id
    assert rendered.loss_mask[0] == 0


def test_gemma_merges_system_into_first_user_turn(hf_vocab):
  template = chat.get_template("gemma")
  assert template.render_text(CONVERSATION[:3], bos_text="<bos>") == (
      "<bos><start_of_turn>user\nYou answer briefly.\n\nHow big is the cat?<end_of_turn>\n"
      "<start_of_turn>model\nThe cat is small.<end_of_turn>\n"
  )
  rendered = template.render(CONVERSATION, hf_vocab)
  assert [hf_vocab.decode(s) for s in _spans(rendered)] == [
      c + "<end_of_turn>\n" for c in _assistant_contents(CONVERSATION)
  ]
  # The system text lies in the unmasked user turn.
  system_ids = hf_vocab.encode("You answer briefly.")
  ids = rendered.token_ids.tolist()
  start = next(i for i in range(len(ids)) if ids[i : i + len(system_ids)] == system_ids)
  assert rendered.loss_mask[start : start + len(system_ids)].sum() == 0


def test_llama2_format_and_special_ids(sp_vocab):
  template = chat.get_template("llama2")
  assert template.render_text(CONVERSATION, bos_text="<s>", eos_text="</s>") == (
      "<s>[INST] <<SYS>>\nYou answer briefly.\n<</SYS>>\n\nHow big is the cat? [/INST] "
      "The cat is small. </s>"
      "<s>[INST] And the dog, über café? [/INST] Big. 東京! </s>"
  )
  rendered = template.render(CONVERSATION, sp_vocab)
  ids, mask = rendered.token_ids, rendered.loss_mask
  bos_positions = np.flatnonzero(ids == sp_vocab.bos_id).tolist()
  eos_positions = np.flatnonzero(ids == sp_vocab.eos_id).tolist()
  assert bos_positions[0] == 0 and len(bos_positions) == 2
  assert eos_positions[-1] == len(ids) - 1 and len(eos_positions) == 2
  # Each eos ends a masked span; each bos is unmasked and follows an eos.
  assert mask[eos_positions].tolist() == [1, 1]
  assert mask[bos_positions].tolist() == [0, 0]
  assert bos_positions[1] == eos_positions[0] + 1
  assert [sp_vocab.decode(s) for s in _spans(rendered)] == _assistant_contents(CONVERSATION)


def test_registry():
  assert {"plain", "llama2", "llama3", "chatml", "gemma"} <= set(chat.TEMPLATES)
  assert chat.get_template("chatml") is chat.TEMPLATES["chatml"]
  with pytest.raises(ValueError, match=r"'nope'.*chatml"):
    chat.get_template("nope")
  with pytest.raises(dataclasses.FrozenInstanceError):
    chat.get_template("plain").add_bos = True  # type: ignore[misc]


# -- errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "messages,pattern",
    [
        ([], "empty conversation.*'system', 'user', 'assistant'"),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
             {"role": "tool", "content": "c"}],
            r"Message 2 has role 'tool'; expected one of \('system', 'user', 'assistant'\)",
        ),
        ([{"content": "a"}], "Message 0 has role None"),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            "Message 1 has role 'system'.*only be message 0",
        ),
        ([{"role": "user", "content": 3}], "Message 0 .*string 'content'"),
        (["hello"], "Message 0 is a str"),
    ],
)
def test_bad_messages(messages, pattern):
  vocab = seqio.ByteVocabulary()
  with pytest.raises(ValueError, match=pattern):
    chat.get_template("plain").render(messages, vocab)
  with pytest.raises(ValueError, match=pattern):
    chat.get_template("chatml").render_text(messages)


def test_merged_system_needs_a_user_turn():
  messages = [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]
  with pytest.raises(ValueError, match="message 1 must have role 'user'"):
    chat.get_template("gemma").render_text(messages)


def test_missing_bos_id_is_reported():
  # ByteVocabulary has no BOS token.
  with pytest.raises(ValueError, match="BOS id"):
    chat.get_template("llama3").render(CONVERSATION, seqio.ByteVocabulary())


def test_a_template_needs_its_special_tokens_as_single_tokens(hf_vocab, sp_vocab):
  for name in ("llama3", "chatml", "gemma"):
    assert chat.get_template(name).missing_special_tokens(hf_vocab) == []
    assert chat.get_template(name).missing_special_tokens(sp_vocab)
  hi = [{"role": "user", "content": "hi"}]
  with pytest.raises(chat.MissingSpecialTokensError,
                     match=r"^chat template 'chatml' marks turns with the special tokens "
                           r"<\|im_start\|>, <\|im_end\|>, but the vocabulary .*spm\.model lacks "
                           r"<\|im_start\|>, <\|im_end\|> as single tokens: .* \(<\|im_start\|> "
                           r"alone is \d+ tokens\)"):
    chat.get_template("chatml").render(hi, sp_vocab, add_generation_prompt=True)
  with pytest.raises(ValueError, match=r"'llama3' .* lacks <\|start_header_id\|>, "
                                       r"<\|end_header_id\|>, <\|eot_id\|> as single"):
    chat.get_template("llama3").render(hi, sp_vocab)
  # A template without special tokens renders with any vocabulary.
  for name in ("plain", "llama2"):
    assert chat.get_template(name).render(hi, sp_vocab).token_ids.size
  # A custom template names its own markers.
  custom = dataclasses.replace(chat.get_template("plain"), user_prefix="<|im_start|>",
                               special_tokens=("<|im_start|>",))
  custom.render(hi, hf_vocab)
  with pytest.raises(ValueError, match=r"custom ChatTemplate.* lacks <\|im_start\|> as single"):
    custom.render(hi, sp_vocab)
