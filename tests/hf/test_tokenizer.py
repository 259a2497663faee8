"""Tests for align_jax.hf.tokenizer."""

import json
import pickle

import numpy as np
import pytest
import seqio
import tensorflow as tf
import transformers

from align_jax.hf import tokenizer as tok_lib

from hf_fixtures import save_bpe_tokenizer as _save_bpe
from hf_fixtures import train_llama2_style_sentencepiece as _train_llama2_style_sp


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("bpe")
  _save_bpe(directory, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
  return directory


@pytest.fixture(scope="module")
def hf_tokenizer(bpe_dir):
  return transformers.AutoTokenizer.from_pretrained(str(bpe_dir))


@pytest.fixture(scope="module")
def vocab(bpe_dir):
  return tok_lib.load_tokenizer(str(bpe_dir))


_TEXTS = [
    "hello world",
    "the cat sat on the mat.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew lines\n\n",
    "über café naïve 東京 🙂",
    "unseen: Ωψ ¿qué? ‽",
    "a <s> inside and <|im_start|>tags",
    "",
]


def test_special_ids_match_transformers(vocab, hf_tokenizer):
  assert isinstance(vocab, tok_lib.HFTokenizerVocabulary)
  assert vocab.eos_id == hf_tokenizer.eos_token_id == hf_tokenizer.convert_tokens_to_ids("</s>")
  assert vocab.bos_id == hf_tokenizer.bos_token_id == hf_tokenizer.convert_tokens_to_ids("<s>")
  assert vocab.pad_id == hf_tokenizer.pad_token_id == hf_tokenizer.convert_tokens_to_ids("<pad>")
  # All three are distinct, so the assertions above can tell them apart.
  assert len({vocab.eos_id, vocab.bos_id, vocab.pad_id}) == 3
  assert vocab.vocab_size == len(hf_tokenizer)


@pytest.mark.parametrize("text", _TEXTS)
def test_encode_decode_match_transformers(vocab, hf_tokenizer, text):
  expected = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
  ids = vocab.encode(text)
  assert list(ids) == expected
  assert vocab.decode(ids) == hf_tokenizer.decode(expected)
  assert vocab.decode(ids) == text


def test_encode_adds_no_special_tokens(vocab):
  ids = vocab.encode("hello world")
  assert vocab.bos_id not in ids and vocab.eos_id not in ids


def test_decode_cuts_after_eos_and_drops_padding(vocab):
  ids = vocab.encode("hello world")
  more = vocab.encode("cat")
  with_eos = ids + [vocab.eos_id] + more + [vocab.pad_id] * 3
  assert vocab.decode(with_eos) == "hello world</s>"
  assert vocab.decode(ids + [vocab.pad_id] * 4) == "hello world"


def test_tf_encode_decode(vocab):
  text = "über café, hello world"
  ids = vocab.encode(text)
  np.testing.assert_array_equal(vocab.encode_tf(tf.constant(text)).numpy(), ids)

  batch = vocab.encode_tf(tf.constant(["hello", "the big dog"]))
  assert batch.to_list() == [vocab.encode("hello"), vocab.encode("the big dog")]

  rows = tf.constant(
      [ids + [vocab.eos_id, 7, 7], ids[:2] + [vocab.pad_id] * (len(ids) + 1)],
      dtype=tf.int32,
  )
  decoded = vocab.decode_tf(rows).numpy().tolist()
  assert decoded == [
      (text + "</s>").encode(),
      vocab.decode(ids[:2]).encode(),
  ]


def test_tf_encode_in_dataset_map(vocab):
  texts = ["hello world", "東京 🙂"]
  ds = tf.data.Dataset.from_tensor_slices(texts).map(vocab.encode_tf)
  got = [row.tolist() for row in ds.as_numpy_iterator()]
  assert got == [vocab.encode(t) for t in texts]
  assert ds.element_spec.shape.as_list() == [None]


def test_pickle_and_equality(vocab, bpe_dir, tmp_path):
  restored = pickle.loads(pickle.dumps(vocab))
  assert restored == vocab
  assert restored.encode("hello world") == vocab.encode("hello world")
  # Same tokenizer, different pad token -> not equal.
  assert tok_lib.HFTokenizerVocabulary(str(bpe_dir), pad_token="<unk>") != vocab
  # Loading the tokenizer.json file directly gives an equal vocabulary.
  assert tok_lib.HFTokenizerVocabulary(str(bpe_dir / "tokenizer.json")) == vocab


def _rewrite_configs(directory, tokenizer_config=None, extra=None):
  """Replaces the token entries of a saved tokenizer's config files."""
  path = directory / "tokenizer_config.json"
  config = json.loads(path.read_text())
  for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
    config.pop(key, None)
  config.update(tokenizer_config or {})
  path.write_text(json.dumps(config))
  for name, content in (extra or {}).items():
    (directory / name).write_text(json.dumps(content))


def test_special_tokens_given_as_dicts(tmp_path):
  _save_bpe(tmp_path)
  _rewrite_configs(
      tmp_path,
      {"eos_token": {"content": "<|im_end|>", "special": True}},
      {"special_tokens_map.json": {"bos_token": {"content": "<s>"}, "pad_token": "<pad>"}},
  )
  vocab = tok_lib.load_tokenizer(str(tmp_path))
  tokenizer = vocab.tokenizer
  assert vocab.eos_id == tokenizer.token_to_id("<|im_end|>")
  assert vocab.bos_id == tokenizer.token_to_id("<s>")
  assert vocab.pad_id == tokenizer.token_to_id("<pad>")


def test_ids_from_generation_config_and_pad_falls_back_to_eos(tmp_path):
  _save_bpe(tmp_path)
  eos = 2  # "</s>" in _SPECIALS order
  im_end = 5
  _rewrite_configs(
      tmp_path,
      extra={
          "generation_config.json": {"bos_token_id": 1, "eos_token_id": [eos, im_end]},
          "config.json": {"eos_token_id": 4},
      },
  )
  vocab = tok_lib.load_tokenizer(str(tmp_path))
  assert vocab.eos_id == eos
  assert vocab.bos_id == 1
  assert vocab.pad_id == eos
  assert vocab.stop_ids == (eos, im_end, 4)


def test_tokenizer_config_beats_generation_config(tmp_path):
  _save_bpe(tmp_path)
  _rewrite_configs(
      tmp_path,
      {"eos_token": "<|im_end|>"},
      {"generation_config.json": {"eos_token_id": 2}},
  )
  vocab = tok_lib.load_tokenizer(str(tmp_path))
  assert vocab.eos_id == 5
  assert vocab.stop_ids == (5, 2)


def test_unknown_or_missing_eos_is_an_error(tmp_path):
  _save_bpe(tmp_path)
  _rewrite_configs(tmp_path, {"eos_token": "<|nope|>"})
  with pytest.raises(ValueError, match=r"<\|nope\|>.*not in the vocabulary"):
    tok_lib.load_tokenizer(str(tmp_path))
  _rewrite_configs(tmp_path, {})
  with pytest.raises(ValueError, match="eos_token="):
    tok_lib.load_tokenizer(str(tmp_path))
  # An explicit argument fixes it.
  vocab = tok_lib.HFTokenizerVocabulary(str(tmp_path), eos_token="</s>")
  assert vocab.eos_id == 2



def test_sentencepiece_model_dir(tmp_path):
  _train_llama2_style_sp(tmp_path / "tokenizer")
  (tmp_path / "tokenizer.vocab").unlink()
  vocab = tok_lib.load_tokenizer(str(tmp_path))
  assert isinstance(vocab, seqio.SentencePieceVocabulary)
  assert (vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2)
  assert vocab.decode(vocab.encode("the cat sat")) == "the cat sat"
  ids = vocab.encode("hello world") + [vocab.eos_id] + vocab.encode("dog")
  assert vocab.decode(ids) == "hello world"


def test_tokenizer_json_wins_over_tokenizer_model(tmp_path):
  _save_bpe(tmp_path, eos_token="</s>")
  _train_llama2_style_sp(tmp_path / "tokenizer")
  assert isinstance(tok_lib.load_tokenizer(str(tmp_path)), tok_lib.HFTokenizerVocabulary)


def test_missing_tokenizer_files(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError) as info:
    tok_lib.load_tokenizer(str(tmp_path))
  message = str(info.value)
  assert str(tmp_path) in message
  assert "tokenizer.json" in message and "tokenizer.model" in message
