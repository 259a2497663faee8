"""A model's vocab_size and its vocabulary agree, or the run stops before its first step."""

import logging

import pytest

from align_jax import main as entry
from align_jax.data import MAX_VOCAB_PADDING, VocabSizeError, check_vocab_size, load_vocabulary
from training_fixtures import TINY_MODEL_FLAGS
from hf_fixtures import write_words_data

# gin/models/tiny.gin shrunk, with its own VOCAB_SIZE (512) unless a test sets one.
MODEL = [flag for flag in TINY_MODEL_FLAGS if not flag.startswith("--gin.VOCAB_SIZE=")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("vocab_size")
  write_words_data(root, 200)
  return root


def _pretrain(data, workdir, *flags):
  return entry.main(MODEL + list(flags) + [
      "--gin_file=gin/runs/pretrain.gin", f"--gin.WORKDIR='{workdir}'",
      f"--gin.TRAIN_DATA='{data / 'text.jsonl'}'", f"--gin.VOCABULARY='{data / 'spm.model'}'",
      "--gin.STEPS=2", "--gin.DataConfig.batch_size=4", "--gin.DataConfig.seq_len=32",
      "--gin.LoopConfig.progress_bar=False"])


def test_vocab_size_is_the_vocabulary_or_a_padding_of_it(data):
  vocab = load_vocabulary(str(data / "spm.model"))  # 300 pieces
  for size in (300, 320, 384, 300 + MAX_VOCAB_PADDING - 1):
    check_vocab_size(size, vocab, "rule.model")
  with pytest.raises(VocabSizeError, match=r"^the model's vocab_size 299 is smaller than the "
                     r"vocabulary small\.model, which has 300 pieces: id 299 would index past"):
    check_vocab_size(299, vocab, "small.model")
  for size in (300 + MAX_VOCAB_PADDING, 512):
    with pytest.raises(VocabSizeError, match=rf"^the model's vocab_size {size} does not fit the "
                       r"vocabulary large\.model, which has 300 pieces: .* set vocab_size to 300 "
                       r"\(--gin\.VOCAB_SIZE=300 with gin/models/tiny\.gin, else "
                       r"--gin\.TransformerConfig\.vocab_size=300\), or pad it by fewer than 128 "
                       r"ids, e\.g\. to 384"):
      check_vocab_size(size, vocab, "large.model")
  # A Hugging Face model's own tokenizer may be padded as the model was published.
  check_vocab_size(512, vocab, "published.model", published_by="some/checkpoint")


def test_a_model_smaller_than_its_vocabulary_stops_before_training(data, tmp_path):
  with pytest.raises(VocabSizeError, match=rf"^the model's vocab_size 256 is smaller than the "
                     rf"vocabulary {data / 'spm.model'}, which has 300 pieces: ids 256\.\.299 "
                     r"would index past the model's embedding table; set vocab_size to 300 "
                     r"\(--gin\.VOCAB_SIZE=300"):
    _pretrain(data, tmp_path / "small", "--gin.VOCAB_SIZE=256")
  assert not (tmp_path / "small" / "checkpoints").exists()
  assert not (tmp_path / "small" / "metrics.jsonl").exists()


def test_the_tiny_models_512_over_a_300_piece_vocabulary_stops_before_training(data, tmp_path):
  # The README's pretrain command with a user's own vocabulary: no VOCAB_SIZE given.
  with pytest.raises(VocabSizeError, match=r"^the model's vocab_size 512 does not fit the "
                     r"vocabulary .*spm\.model, which has 300 pieces: ids 300\.\.511 would be "
                     r"embedding rows that no text trains"):
    _pretrain(data, tmp_path / "large")
  assert not (tmp_path / "large" / "checkpoints").exists()


def test_a_padded_model_trains_and_says_so_once(data, tmp_path, caplog):
  with caplog.at_level(logging.INFO, logger="align_jax.data.vocab"):
    summary = _pretrain(data, tmp_path / "padded", "--gin.VOCAB_SIZE=320")
  assert summary["steps"] == 2
  said = [r.getMessage() for r in caplog.records if r.name == "align_jax.data.vocab"]
  assert said == ["model vocab_size 320 pads the vocabulary's 300 pieces; ids 300..319 are "
                  "never sampled"]
