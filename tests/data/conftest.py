"""Fixtures of the data tests."""

import pytest
import seqio

from align_jax.data import train_sentencepiece
from tests.hf_fixtures import words_corpus


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> seqio.SentencePieceVocabulary:
  """A small sentencepiece vocabulary that knows the plain chat template's role names."""
  corpus = words_corpus(300) + ["User: Assistant: System:"] * 20
  prefix = tmp_path_factory.mktemp("sp") / "spm"
  return train_sentencepiece(corpus, str(prefix), 300)
