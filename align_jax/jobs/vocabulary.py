"""A job that trains a sentencepiece vocabulary on jsonl data (WORKDIR/spm.model).

The texts are every string field a data file of align_jax holds: `text` (pretraining),
`prompt` / `response` (SFT), `chosen` / `rejected` (preferences) and the `content` of
`messages`. Special ids follow align_jax's convention (pad 0, eos 1, bos 2, unk 3), and a
vocabulary trained twice on the same data is byte-identical.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Iterator, Sequence

from align_jax import fs
from align_jax.data.jsonl import read_jsonl
from align_jax.data.vocab import load_vocabulary, train_sentencepiece

TEXT_FIELDS = ("text", "prompt", "response", "chosen", "rejected")


def record_texts(record: dict[str, Any]) -> Iterator[str]:
  """The strings of one data record that a vocabulary should cover."""
  for field in TEXT_FIELDS:
    value = record.get(field)
    if isinstance(value, str) and value:
      yield value
  for message in record.get("messages") or ():
    if isinstance(message, dict) and isinstance(message.get("content"), str):
      yield message["content"]


def train_vocabulary(workdir: str, train_data: str | Sequence[str], vocab_size: int,
                     model_type: str = "unigram", split_digits: bool = False,
                     keep_newlines: bool = False, character_coverage: float = 1.0,
                     byte_fallback: bool = True) -> dict[str, Any]:
  """Trains WORKDIR/spm.model on the texts of `train_data` (jsonl files) and writes
  WORKDIR/vocabulary.json (its size, special ids and the files it was trained on).

  vocab_size: the number of pieces; a model trained with this vocabulary sets
    `--gin.VOCAB_SIZE` (or `TransformerConfig.vocab_size`) to it, or to a padding of it.
  split_digits: every digit its own piece (arithmetic data).
  keep_newlines: keep "\\n" as a piece instead of normalising it to a space (prompts
    whose fields are separated by newlines need this).
  """
  files = (train_data,) if isinstance(train_data, str) else tuple(train_data)
  if not files:
    raise ValueError("train_vocabulary: TRAIN_DATA names no file")
  prefix = fs.join(workdir, "spm")
  if fs.exists(prefix + ".model"):
    raise FileExistsError(f"{prefix}.model already exists; a vocabulary is never replaced "
                          "(models trained with it would no longer match). Use another WORKDIR")
  texts = [t for path in files for record in read_jsonl(path) for t in record_texts(record)]
  if not texts:
    raise ValueError(f"train_vocabulary: no text in {', '.join(files)} (expected fields: "
                     f"{', '.join(TEXT_FIELDS)} or messages)")
  options: dict[str, Any] = {"split_digits": split_digits}
  if keep_newlines:  # "\n" kept as its own piece, no whitespace folding
    options.update(normalization_rule_name="identity", remove_extra_whitespaces=False,
                   user_defined_symbols=["\n"])
  try:
    train_sentencepiece(texts, prefix, vocab_size, model_type=model_type,
                        character_coverage=character_coverage, byte_fallback=byte_fallback,
                        extra_options=options)
  except RuntimeError as e:  # sentencepiece: the size does not suit the data
    too_small = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(e))
    too_large = re.search(r"value <= (\d+)", str(e))
    if not (too_small or too_large):
      raise
    byte_pieces = " plus 256 byte pieces" if byte_fallback else ""
    bound = (f"at least {too_small.group(1)} (every character{byte_pieces})" if too_small
             else f"at most {too_large.group(1)} on this data")
    raise ValueError(f"train_vocabulary: VOCAB_SIZE={vocab_size} does not suit "
                     f"{', '.join(files)}: it must be {bound}; set --gin.VOCAB_SIZE") from None
  vocab = load_vocabulary(prefix + ".model")
  record = {"model": prefix + ".model", "vocab_size": int(vocab.vocab_size),
            "train_data": list(files), "texts": len(texts),
            "model_type": model_type, "split_digits": split_digits,
            "keep_newlines": keep_newlines, "pad_id": 0, "eos_id": int(vocab.eos_id),
            "bos_id": 2, "unk_id": 3}
  fs.write_atomically(fs.join(workdir, "vocabulary.json"), json.dumps(record, indent=2) + "\n")
  logging.info("vocabulary: %d pieces trained on %d texts -> %s", vocab.vocab_size, len(texts),
               prefix + ".model")
  print(f"vocabulary: {vocab.vocab_size} pieces from {len(texts)} texts -> {prefix}.model")
  return record
