"""A checkpoint and its tokenizer: a foreign vocabulary is refused, and an export writes the
tokenizer that transformers loads and that encodes text to align_jax's ids."""

import shutil

import jax
import pytest
import transformers

from align_jax.data import encode_prompt, load_vocabulary, train_sentencepiece
from align_jax.hf import (ForeignVocabularyError, load_checkpoint, load_tokenizer,
                          save_checkpoint)
from align_jax.models import Transformer, TransformerConfig, init_params
from align_jax.training import DataConfig, LoopConfig, load_run, train_lm
from hf_fixtures import save_bpe_tokenizer, save_tiny_llama, words_corpus

TEXTS = ["the cat sat on the mat", "hello world, café 東京 🙂 42", "  two  spaces ", "a\nb",
         "zq unseen ☃", ""]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("vocabularies")
  save_tiny_llama(root / "llama")  # a random Llama with its own 300-token BPE tokenizer
  train_sentencepiece(words_corpus(300), str(root / "spm"), 300)  # 300 pieces too
  return root


def test_a_foreign_vocabulary_is_refused_unless_forced(files, tmp_path):
  llama, spm = str(files / "llama"), str(files / "spm.model")
  foreign = load_vocabulary(spm)
  with pytest.raises(ForeignVocabularyError,
                     match=rf"^the vocabulary {spm} is not the tokenizer of the Hugging Face "
                           rf"checkpoint {llama} \(it has 300 tokens, eos id 1, bos id 2, whereas "
                           r"the checkpoint's tokenizer has 300 tokens, eos id 2, bos id 1\).*"
                           r"allow_foreign_vocabulary=True"):
    load_checkpoint(llama, vocabulary=foreign)
  config, _ = load_checkpoint(llama, vocabulary=foreign, allow_foreign_vocabulary=True)
  assert config.vocab_size == 300
  # Its own tokenizer, and a copy of it in another folder, are the checkpoint's.
  load_checkpoint(llama, vocabulary=load_tokenizer(llama))
  copy = tmp_path / "tokenizer_copy"
  copy.mkdir()
  for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(files / "llama" / name, copy / name)
  load_checkpoint(llama, vocabulary=load_tokenizer(str(copy)))
  # load_run (and so the generate job) and the trainers refuse it the same way.
  with pytest.raises(ForeignVocabularyError, match="is not the tokenizer"):
    load_run(llama, vocabulary=spm)
  assert load_run(llama, vocabulary=spm, allow_foreign_vocabulary=True).vocab == foreign
  data = tmp_path / "text.jsonl"
  data.write_text('{"text": "the cat sat"}\n')
  with pytest.raises(ForeignVocabularyError, match="is not the tokenizer"):
    train_lm(str(tmp_path / "sft"), _config(300),
             DataConfig(train_files=str(data), batch_size=2, seq_len=32), spm,
             loop=LoopConfig(total_steps=1, progress_bar=False), init_from=llama)
  assert not (tmp_path / "sft" / "checkpoints").exists()


def _config(vocab_size):
  return TransformerConfig(vocab_size=vocab_size, num_layers=1, d_model=16, num_heads=2,
                           num_kv_heads=1, head_dim=8, mlp_dim=32, max_seq_len=64,
                           pad_id=0, eos_id=1, bos_id=2)


def _export(directory, vocabulary):
  config = _config(320)
  params = init_params(Transformer(config), jax.random.key(0))
  return save_checkpoint(str(directory), config, params, vocabulary=vocabulary)


@pytest.mark.parametrize("keep_newlines", [False, True])
def test_an_export_holds_a_tokenizer_that_encodes_like_align_jax(files, tmp_path,
                                                                 keep_newlines):
  if keep_newlines:  # RECITE's kind: newlines kept, no whitespace folding, "\n" a piece
    vocab = train_sentencepiece(
        ["Question: Where?\nRecitation: Ada was born.\n\n"] * 30 + words_corpus(200),
        str(tmp_path / "spm"), 300, normalization_rule_name="identity",
        remove_extra_whitespaces=False, user_defined_symbols=["\n"],
        extra_options={"hard_vocab_limit": False})
    spm = str(tmp_path / "spm.model")
  else:
    spm = str(files / "spm.model")
    vocab = load_vocabulary(spm)
  written = _export(tmp_path / "export", spm)
  assert {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"} <= set(written)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "export"))
  for text in TEXTS + ["Question: Where?\nRecitation:"]:
    ids = list(vocab.encode(text))
    assert tokenizer(text, add_special_tokens=False).input_ids == ids, text
    # With special tokens it puts BOS first, as align_jax prompts and documents start.
    assert tokenizer(text).input_ids == encode_prompt(vocab, text), text
    assert tokenizer.decode(ids) == vocab.decode(ids), text
  assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (vocab.bos_id, vocab.eos_id)


def test_an_export_copies_a_hugging_face_tokenizer(tmp_path):
  save_bpe_tokenizer(tmp_path / "bpe", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
  vocab = load_vocabulary(str(tmp_path / "bpe"))
  _export(tmp_path / "export", vocab)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "export"))
  for text in TEXTS:
    assert tokenizer(text, add_special_tokens=False).input_ids == list(vocab.encode(text))
  # Without a vocabulary the folder holds the weights only.
  assert not any("tokenizer" in name for name in _export(tmp_path / "bare", None))
