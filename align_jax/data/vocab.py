"""Vocabulary helpers: train a SentencePiece model and load vocabularies.

All vocabularies are `seqio.Vocabulary` instances so they plug straight into
seqio tasks and feature converters.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import seqio
import sentencepiece as spm
import tensorflow as tf

from align_jax import fs

# Special ids of models trained here. seqio pads with 0 and expects EOS at 1
# (the T5 convention); BOS and UNK take the next two slots.
PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
UNK_ID = 3

# Fixed seed for SentencePiece's process-wide random generator, so training
# is reproducible even for options that sample.
_TRAINER_SEED = 0

# A model's vocab_size may exceed its vocabulary's size only by padding, fewer than this
# many ids: rounding the embedding table up to a multiple of 64 or 128 (for the
# accelerators' tiles) always stays below it. More is a model built for another
# vocabulary (see `check_vocab_size`).
MAX_VOCAB_PADDING = 128


def train_sentencepiece(
    texts: Iterable[str],
    model_prefix: str,
    vocab_size: int,
    *,
    model_type: str = "unigram",
    seed_sentencepiece_size: int = 1_000_000,
    character_coverage: float = 1.0,
    user_defined_symbols: Sequence[str] = (),
    byte_fallback: bool = True,
    normalization_rule_name: str = "nmt_nfkc",
    remove_extra_whitespaces: bool = True,
    extra_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> seqio.SentencePieceVocabulary:
  """Trains a SentencePiece model on `texts` and returns it as a seqio vocab.

  The model is written to `<model_prefix>.model` with pad=0, eos=1, bos=2,
  unk=3. Training runs in-process and single-threaded, so the same inputs
  give a byte-identical model file. `extra_options` is passed verbatim to
  `sentencepiece.SentencePieceTrainer.train` for anything not covered here.

  Raises:
    FileExistsError: the model file exists and `overwrite` is False.
    ValueError: a user-defined symbol contains a comma (SentencePiece uses
      commas to separate the list).
  """
  model_path = f"{model_prefix}.model"
  if tf.io.gfile.exists(model_path) and not overwrite:
    raise FileExistsError(
        f"SentencePiece model {model_path!r} already exists; pass "
        "overwrite=True to replace it."
    )
  symbols = list(user_defined_symbols)
  for symbol in symbols:
    if "," in symbol:
      raise ValueError(
          f"user_defined_symbols entry {symbol!r} contains a comma, which "
          "SentencePiece cannot accept."
      )

  options: dict[str, Any] = dict(
      model_type=model_type,
      vocab_size=vocab_size,
      seed_sentencepiece_size=seed_sentencepiece_size,
      character_coverage=character_coverage,
      byte_fallback=byte_fallback,
      normalization_rule_name=normalization_rule_name,
      remove_extra_whitespaces=remove_extra_whitespaces,
      pad_id=PAD_ID,
      eos_id=EOS_ID,
      bos_id=BOS_ID,
      unk_id=UNK_ID,
      num_threads=1,
      # Use every sentence (no sampling) and keep SentencePiece quiet.
      input_sentence_size=0,
      shuffle_input_sentence=False,
      minloglevel=2,
  )
  if symbols:
    options["user_defined_symbols"] = symbols
  if extra_options:
    options.update(extra_options)

  spm.set_random_generator_seed(_TRAINER_SEED)
  buffer = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=buffer, **options
  )
  model_bytes = buffer.getvalue()
  if not model_bytes:
    raise RuntimeError(
        f"SentencePiece training for {model_path!r} produced no model."
    )

  parent = fs.dirname(model_path)  # `ram://` for `ram://spm.model`, never a folder `ram:`
  if parent:
    tf.io.gfile.makedirs(parent)
  with tf.io.gfile.GFile(model_path, "wb") as f:
    f.write(model_bytes)
  # seqio caches parsed models by file name; drop the cache so a model that
  # was just overwritten is not served stale.
  _clear_seqio_model_cache()
  return seqio.SentencePieceVocabulary(model_path)


def _clear_seqio_model_cache() -> None:
  """Forgets seqio's per-path cache of loaded SentencePiece models."""
  loader = getattr(seqio.vocabularies, "_load_model_internal", None)
  cache_clear = getattr(loader, "cache_clear", None)
  if cache_clear is not None:
    cache_clear()


def load_vocabulary(path: str) -> seqio.Vocabulary:
  """Loads a vocabulary from a SentencePiece `.model` file or an HF model dir.

  Raises:
    FileNotFoundError: `path` ends in `.model` but does not exist.
    ValueError: `path` is neither a `.model` file nor a directory.
  """
  path = os.fspath(path)
  if tf.io.gfile.isdir(path):
    # Imported here so the data package does not depend on the hf package
    # unless a directory is actually loaded.
    from align_jax.hf.tokenizer import load_tokenizer

    return load_tokenizer(path)
  if path.endswith(".model"):
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"SentencePiece model {path!r} does not exist.")
    return seqio.SentencePieceVocabulary(path)
  raise ValueError(
      f"Cannot load a vocabulary from {path!r}: expected a SentencePiece "
      "'.model' file or a Hugging Face model directory containing "
      "'tokenizer.json' or 'tokenizer.model'."
  )


class VocabSizeError(ValueError):
  """A model whose vocab_size does not fit its vocabulary."""


_SAID: set[tuple[int, int, str]] = set()


def token_after(vocab: seqio.Vocabulary, prefix: str, text: str) -> int | None:
  """The one token `text` is where it follows `prefix` in running text (e.g. "A" after
  "(", or " Sorry" after a word), or None when it is not exactly one token there or
  changes the prefix's own tokens."""
  base = [int(t) for t in vocab.encode(prefix)]
  full = [int(t) for t in vocab.encode(prefix + text)]
  if full[:len(base)] != base or len(full) != len(base) + 1:
    return None
  return full[-1]


def continued_text(vocab: seqio.Vocabulary, context: str, completion: Mapping[str, Any]
                   ) -> str:
  """A completion's text as it reads after `context`, the text the model continued. The
  sampler decodes a continuation on its own, and a vocabulary that drops the leading space
  of a text it decodes (SentencePiece's dummy prefix) drops the one between the context
  and the continuation; decoded after the context's last token, it is back."""
  tokens, text = [int(t) for t in completion["tokens"]], completion["text"]
  if not context or not tokens:
    return text
  last = [int(i) for i in vocab.encode(context)][-1:]
  head, both, alone = (vocab.decode(last), vocab.decode(last + tokens[:1]),
                       vocab.decode(tokens[:1]))
  in_context = both[len(head):] if both.startswith(head) else alone
  return (in_context[:len(in_context) - len(alone)] if in_context.endswith(alone) else "") + text


def check_vocab_size(model_vocab_size: int, vocab: seqio.Vocabulary,
                     vocabulary: str | None = None, *, published_by: str | None = None) -> None:
  """Checks a model's vocab_size against its vocabulary; every trainer and loader calls it.

  The rule: vocab_size >= the vocabulary's size n (an id past the embedding table would
  index out of range), and vocab_size - n < MAX_VOCAB_PADDING (128): any rounding of n up
  to a multiple of 64 or 128 passes, a model built for a larger vocabulary (gin's tiny
  model of 512 over a 320-piece vocabulary) does not, since it would learn nothing for
  ids n and above and still sample them as text the vocabulary cannot decode. A padded
  model is said once in the log; the sampling engine never samples its padding ids.
  published_by: the Hugging Face checkpoint whose own tokenizer `vocab` is; its padding,
  whatever its size, is the publisher's (Qwen2: 151936 rows over 151665 tokens).
  vocabulary: the file the vocabulary was loaded from, for the messages.

  Raises:
    VocabSizeError: naming both sizes, the vocabulary file and the gin key to set.
  """
  size = int(vocab.vocab_size)
  name = vocabulary or getattr(vocab, "sentencepiece_model_file", None) or str(vocab)
  setting = (f"set vocab_size to {size} (--gin.VOCAB_SIZE={size} with gin/models/tiny.gin, "
             f"else --gin.TransformerConfig.vocab_size={size})")
  if model_vocab_size < size:
    raise VocabSizeError(
        f"the model's vocab_size {model_vocab_size} is smaller than the vocabulary {name}, "
        f"which has {size} pieces: {_ids(model_vocab_size, size - 1)} would index past the "
        f"model's embedding table; {setting}")
  padding = model_vocab_size - size
  if padding >= MAX_VOCAB_PADDING and published_by is None:
    rounded = -(-size // MAX_VOCAB_PADDING) * MAX_VOCAB_PADDING
    raise VocabSizeError(
        f"the model's vocab_size {model_vocab_size} does not fit the vocabulary {name}, "
        f"which has {size} pieces: {_ids(size, model_vocab_size - 1)} would be embedding "
        "rows that no text trains, yet a trained model samples them, as text the vocabulary "
        f"cannot decode (' ⁇ '); {setting}, or pad it by fewer than {MAX_VOCAB_PADDING} ids"
        + (f", e.g. to {rounded} (a multiple of {MAX_VOCAB_PADDING})" if rounded > size else ""))
  key = (model_vocab_size, size, str(name))
  if padding and key not in _SAID:
    _SAID.add(key)
    logging.getLogger(__name__).info(
        "model vocab_size %d pads the vocabulary's %d pieces; %s %s never sampled%s",
        model_vocab_size, size, _ids(size, model_vocab_size - 1),
        "is" if padding == 1 else "are",
        f" (the padding of {published_by})" if published_by else "")


def _ids(first: int, last: int) -> str:
  return f"id {first}" if first == last else f"ids {first}..{last}"
