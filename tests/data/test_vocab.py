"""Tests for align_jax.data.vocab."""

import random

import numpy as np
import pytest
import seqio
import tensorflow as tf

from align_jax.data import vocab as vocab_lib
from hf_fixtures import train_llama2_style_sentencepiece

_WORDS = (
    "the a cat dog bird sat ran flew on under over mat tree roof big small "
    "red blue green quickly slowly today yesterday über café naïve 東京 42 7"
).split()


def _corpus(n: int = 400, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  return [
      " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
      for _ in range(n)
  ]


@pytest.fixture(scope="module")
def sp_vocab(tmp_path_factory) -> seqio.SentencePieceVocabulary:
  prefix = tmp_path_factory.mktemp("sp") / "spm"
  return vocab_lib.train_sentencepiece(_corpus(), str(prefix), 300)


def test_special_ids_follow_t5_convention(sp_vocab):
  assert isinstance(sp_vocab, seqio.SentencePieceVocabulary)
  assert sp_vocab.pad_id == 0
  assert sp_vocab.eos_id == 1
  assert sp_vocab.bos_id == 2
  assert sp_vocab.unk_id == 3
  assert sp_vocab.vocab_size == 300
  # The model proto itself agrees (seqio's pad_id is a constant).
  assert sp_vocab.tokenizer.pad_id() == 0


@pytest.mark.parametrize(
    "text",
    ["the cat sat on the mat", "über café naïve 東京 42", "yesterday the big red bird flew"],
)
def test_round_trip(sp_vocab, text):
  ids = sp_vocab.encode(text)
  assert ids and all(4 <= i < 300 for i in ids)  # no specials, no unk
  assert sp_vocab.decode(ids) == text


def test_unseen_characters_use_byte_fallback(sp_vocab):
  text = "zebra ¿Ωψ?"
  ids = sp_vocab.encode(text)
  assert sp_vocab.unk_id not in ids
  assert sp_vocab.decode(ids) == text


def test_decode_stops_at_eos(sp_vocab):
  ids = sp_vocab.encode("the cat") + [sp_vocab.eos_id] + sp_vocab.encode("dog")
  assert sp_vocab.decode(ids) == "the cat"


def test_tf_encode_decode_match_python(sp_vocab):
  text = "the small dog ran under the tree"
  ids = sp_vocab.encode(text)
  np.testing.assert_array_equal(sp_vocab.encode_tf(tf.constant(text)).numpy(), ids)
  padded = tf.constant([ids + [sp_vocab.eos_id, 0, 0]], dtype=tf.int32)
  assert sp_vocab.decode_tf(padded).numpy().tolist() == [text.encode()]


def test_user_defined_symbols_are_single_tokens(tmp_path):
  vocab = vocab_lib.train_sentencepiece(
      _corpus(), str(tmp_path / "sym"), 300, user_defined_symbols=["<sep>"]
  )
  sep_id = vocab.tokenizer.piece_to_id("<sep>")
  assert sep_id > 3
  assert sep_id in vocab.encode("the cat<sep>the dog")


def test_training_is_deterministic(tmp_path):
  corpus = _corpus(seed=1)
  vocab_lib.train_sentencepiece(corpus, str(tmp_path / "a"), 300)
  vocab_lib.train_sentencepiece(iter(corpus), str(tmp_path / "b"), 300)
  first = (tmp_path / "a.model").read_bytes()
  assert first == (tmp_path / "b.model").read_bytes()
  # A different corpus gives a different model, so the comparison has teeth.
  vocab_lib.train_sentencepiece(_corpus(seed=2), str(tmp_path / "c"), 300)
  assert first != (tmp_path / "c.model").read_bytes()


def test_bpe_model_type(tmp_path):
  vocab = vocab_lib.train_sentencepiece(
      _corpus(), str(tmp_path / "bpe"), 300, model_type="bpe"
  )
  assert vocab.tokenizer.eos_id() == 1
  assert vocab.decode(vocab.encode("the red cat")) == "the red cat"


def test_refuses_to_overwrite(tmp_path):
  prefix = str(tmp_path / "m")
  vocab_lib.train_sentencepiece(_corpus(seed=3), prefix, 300)
  before = (tmp_path / "m.model").read_bytes()
  with pytest.raises(FileExistsError, match="m.model"):
    vocab_lib.train_sentencepiece(_corpus(seed=4), prefix, 300)
  assert (tmp_path / "m.model").read_bytes() == before

  vocab = vocab_lib.train_sentencepiece(_corpus(seed=4), prefix, 300, overwrite=True)
  after = (tmp_path / "m.model").read_bytes()
  assert after != before
  # The returned vocabulary reflects the new file, not a cached old one.
  assert vocab.sp_model == after


def test_comma_in_user_symbol_is_rejected(tmp_path):
  with pytest.raises(ValueError, match="comma"):
    vocab_lib.train_sentencepiece(
        _corpus(), str(tmp_path / "x"), 300, user_defined_symbols=["a,b"]
    )


def test_load_vocabulary_model_file(sp_vocab):
  loaded = vocab_lib.load_vocabulary(sp_vocab.sentencepiece_model_file)
  assert isinstance(loaded, seqio.SentencePieceVocabulary)
  assert loaded == sp_vocab
  assert loaded.encode("the cat") == sp_vocab.encode("the cat")


def test_load_vocabulary_directory_delegates_to_hf_loader(tmp_path):
  # A Llama-2 style SentencePiece model in a model directory.
  model_dir = tmp_path / "model"
  model_dir.mkdir()
  train_llama2_style_sentencepiece(model_dir / "tokenizer")
  loaded = vocab_lib.load_vocabulary(str(model_dir))
  assert isinstance(loaded, seqio.SentencePieceVocabulary)
  assert (loaded.eos_id, loaded.bos_id, loaded.unk_id) == (2, 1, 0)


def test_load_vocabulary_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.model"):
    vocab_lib.load_vocabulary(str(tmp_path / "missing.model"))
  other = tmp_path / "vocab.txt"
  other.write_text("a\nb\n")
  with pytest.raises(ValueError, match=r"vocab\.txt.*'\.model' file.*directory"):
    vocab_lib.load_vocabulary(str(other))
