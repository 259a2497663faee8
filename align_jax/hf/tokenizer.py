"""seqio vocabularies for Hugging Face tokenizers.

`load_tokenizer` turns a Hugging Face model directory into a
`seqio.Vocabulary`: a `tokenizer.json` (fast BPE tokenizers such as Llama 3
or Qwen2) becomes an `HFTokenizerVocabulary`, a `tokenizer.model`
(SentencePiece, e.g. Llama 2 or Gemma) becomes a
`seqio.SentencePieceVocabulary`.

`save_tokenizer` writes a vocabulary the other way, into a Hugging Face model folder that
transformers' AutoTokenizer loads. `check_checkpoint_vocabulary` refuses a vocabulary that
is not a checkpoint's own tokenizer (compared by `tokenizer_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf
import tokenizers

from align_jax import fs

TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_MODEL = "tokenizer.model"

# Files next to tokenizer.json that may name special tokens. Token strings
# are read from the first two, in this order; token ids from the last two.
_TOKENIZER_CONFIG = "tokenizer_config.json"
_SPECIAL_TOKENS_MAP = "special_tokens_map.json"
_GENERATION_CONFIG = "generation_config.json"
_MODEL_CONFIG = "config.json"


def _read_json(path: str) -> dict[str, Any]:
  """Returns the JSON object stored at `path`, or {} if there is no file."""
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path, "r") as f:
    data = json.load(f)
  return data if isinstance(data, dict) else {}


def _token_content(value: Any) -> str | None:
  """Returns a special-token string from a config value (str or dict)."""
  if isinstance(value, str):
    return value
  if isinstance(value, dict) and isinstance(value.get("content"), str):
    return value["content"]
  return None


def _as_id_list(value: Any) -> list[int]:
  """Returns the ids in a config value that is an int or a list of ints."""
  if isinstance(value, bool):
    return []
  if isinstance(value, int):
    return [value]
  if isinstance(value, (list, tuple)):
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
  return []


class HFTokenizerVocabulary(seqio.Vocabulary):
  """A seqio vocabulary backed by a Hugging Face `tokenizer.json`.

  Encoding never adds special tokens (BOS and chat markers are the job of
  the caller or the chat template). Decoding keeps special tokens as text;
  only trailing pad ids are dropped, so padding does not show up in the
  output. As in every seqio vocabulary, `decode`/`decode_tf` cut the
  sequence after the first EOS.

  Special tokens come from the keyword arguments if given, otherwise from
  `tokenizer_config.json` / `special_tokens_map.json`, otherwise (ids only)
  from `generation_config.json` / `config.json`. Without a pad token the
  EOS id doubles as pad id.
  """

  def __init__(
      self,
      path: str,
      *,
      eos_token: str | None = None,
      bos_token: str | None = None,
      pad_token: str | None = None,
      unk_token: str | None = None,
  ):
    """Loads `path`, a model directory or a `tokenizer.json` file.

    Raises:
      FileNotFoundError: there is no tokenizer.json at `path`.
      ValueError: a named special token is not in the vocabulary, or no
        EOS token could be determined.
    """
    super().__init__(extra_ids=0)
    path = os.fspath(path)
    if tf.io.gfile.isdir(path):
      directory, json_path = path, os.path.join(path, TOKENIZER_JSON)
    else:
      directory, json_path = os.path.dirname(path), path
    if not tf.io.gfile.exists(json_path):
      raise FileNotFoundError(f"No {TOKENIZER_JSON} found at {json_path!r}.")
    self._path = json_path

    with tf.io.gfile.GFile(json_path, "rb") as f:
      raw = f.read()
    self._fingerprint = hashlib.sha256(raw).hexdigest()
    self._tokenizer: tokenizers.Tokenizer | None = tokenizers.Tokenizer.from_str(
        raw.decode("utf-8")
    )
    vocab = self._tokenizer.get_vocab(with_added_tokens=True)
    self._size = max(vocab.values()) + 1 if vocab else 0

    def config_path(name: str) -> str:
      return os.path.join(directory, name) if directory else name

    token_configs = [
        _read_json(config_path(_TOKENIZER_CONFIG)),
        _read_json(config_path(_SPECIAL_TOKENS_MAP)),
    ]
    id_configs = [
        _read_json(config_path(_GENERATION_CONFIG)),
        _read_json(config_path(_MODEL_CONFIG)),
    ]

    def resolve(kind: str, explicit: str | None) -> int | None:
      key = f"{kind}_token"
      sources = [("argument", explicit)] + [
          (name, _token_content(cfg.get(key)))
          for name, cfg in zip((_TOKENIZER_CONFIG, _SPECIAL_TOKENS_MAP), token_configs)
      ]
      for source, token in sources:
        if token is None:
          continue
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
          raise ValueError(
              f"{key} {token!r} (from {source}) is not in the vocabulary "
              f"of {json_path!r}."
          )
        return token_id
      for cfg in id_configs:
        ids = _as_id_list(cfg.get(f"{kind}_token_id"))
        if ids:
          return ids[0]
      return None

    self._eos_id = resolve("eos", eos_token)
    self._bos_id = resolve("bos", bos_token)
    self._pad_token_id = resolve("pad", pad_token)
    self._unk_id = resolve("unk", unk_token)
    if self._unk_id is None:
      model_unk = getattr(self._tokenizer.model, "unk_token", None)
      if isinstance(model_unk, str):
        self._unk_id = self._tokenizer.token_to_id(model_unk)
    if self._eos_id is None:
      raise ValueError(
          f"Could not find an EOS token for {json_path!r} in {_TOKENIZER_CONFIG}, "
          f"{_SPECIAL_TOKENS_MAP}, {_GENERATION_CONFIG} or {_MODEL_CONFIG}; "
          "pass eos_token= explicitly."
      )

    # Every id that ends generation: the EOS id plus any extra stop ids
    # listed by generation_config.json / config.json (e.g. Llama 3).
    stop = [self._eos_id]
    for cfg in id_configs:
      for token_id in _as_id_list(cfg.get("eos_token_id")):
        if token_id not in stop:
          stop.append(token_id)
    self._stop_ids = tuple(stop)

  # -- pickling (gin deep-copies configurables): reload the tokenizer lazily.

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state["_tokenizer"] = None
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)

  @property
  def tokenizer(self) -> tokenizers.Tokenizer:
    """The underlying `tokenizers.Tokenizer`."""
    if self._tokenizer is None:
      with tf.io.gfile.GFile(self._path, "rb") as f:
        self._tokenizer = tokenizers.Tokenizer.from_str(f.read().decode("utf-8"))
    return self._tokenizer

  @property
  def path(self) -> str:
    """Path of the tokenizer.json this vocabulary was loaded from."""
    return self._path

  # -- special ids

  @property
  def eos_id(self) -> int:
    return self._eos_id

  @property
  def bos_id(self) -> int | None:
    return self._bos_id

  @property
  def pad_id(self) -> int:
    return self._eos_id if self._pad_token_id is None else self._pad_token_id

  @property
  def unk_id(self) -> int | None:
    return self._unk_id

  @property
  def stop_ids(self) -> tuple[int, ...]:
    """Ids that end generation: EOS first, then extra configured stop ids."""
    return self._stop_ids

  @property
  def _base_vocab_size(self) -> int:
    return self._size

  # -- python encode / decode

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.encode(s, add_special_tokens=False).ids

  def _strip_trailing_pad(self, ids: Iterable[int]) -> list[int]:
    ids = [int(i) for i in ids]
    pad = self.pad_id
    end = len(ids)
    while end and ids[end - 1] == pad:
      end -= 1
    return ids[:end]

  def _decode(self, ids: Iterable[int]) -> str:
    return self.tokenizer.decode(
        self._strip_trailing_pad(ids), skip_special_tokens=False
    )

  # -- tensorflow encode / decode (wrapping the python tokenizer)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
    s = tf.convert_to_tensor(s, dtype=tf.string)
    if s.shape.rank == 0:
      return self._encode_tf_scalar(s)
    if s.shape.rank == 1:
      return tf.map_fn(
          self._encode_tf_scalar,
          s,
          fn_output_signature=tf.RaggedTensorSpec(
              shape=[None], dtype=tf.int32, ragged_rank=0
          ),
      )
    raise ValueError(
        f"encode_tf expects a scalar or 1-D string tensor, got shape {s.shape}."
    )

  def _encode_tf_scalar(self, s: tf.Tensor) -> tf.Tensor:
    def encode(text: bytes | np.ndarray) -> np.ndarray:
      if isinstance(text, np.ndarray):  # eager mode passes a 0-d array
        text = text.item()
      return np.asarray(self._encode(text.decode("utf-8")), dtype=np.int32)

    ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    ids = tf.convert_to_tensor(ids)

    def decode(array: np.ndarray) -> np.ndarray:
      texts = np.empty(array.shape[:-1], dtype=object)
      for index in np.ndindex(*array.shape[:-1]):
        texts[index] = self._decode(array[index]).encode("utf-8")
      return texts

    text = tf.numpy_function(decode, [ids], tf.string, stateful=False)
    text.set_shape(ids.shape[:-1])
    return text

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, HFTokenizerVocabulary):
      return False
    return (
        self._fingerprint == other._fingerprint
        and self.eos_id == other.eos_id
        and self.bos_id == other.bos_id
        and self.pad_id == other.pad_id
        and self.unk_id == other.unk_id
    )

  def __hash__(self) -> int:
    return hash((self._fingerprint, self.eos_id, self.bos_id, self.pad_id))

  def __str__(self) -> str:
    return (
        f"HFTokenizerVocabulary(path={self._path!r}, size={self.vocab_size}, "
        f"eos_id={self.eos_id}, bos_id={self.bos_id}, pad_id={self.pad_id})"
    )


def load_tokenizer(path: str) -> seqio.Vocabulary:
  """Returns the vocabulary of the Hugging Face model directory `path`.

  `tokenizer.json` is preferred over `tokenizer.model` when both exist. For a
  SentencePiece model, eos/bos/unk ids come from the model itself (Llama 2:
  unk=0, bos=1, eos=2), but seqio always pads with id 0, which is `<unk>` in
  Llama 2 models.

  Raises:
    FileNotFoundError: the directory holds neither file.
  """
  path = os.fspath(path)
  json_path = os.path.join(path, TOKENIZER_JSON)
  if tf.io.gfile.exists(json_path):
    return HFTokenizerVocabulary(path)
  sp_path = os.path.join(path, SENTENCEPIECE_MODEL)
  if tf.io.gfile.exists(sp_path):
    return seqio.SentencePieceVocabulary(sp_path)
  raise FileNotFoundError(
      f"No tokenizer found in {path!r}: looked for {TOKENIZER_JSON!r} and "
      f"{SENTENCEPIECE_MODEL!r}."
  )


# ---------------------------------------------------------------------------------
# Which tokenizer a vocabulary is


class ForeignVocabularyError(ValueError):
  """A vocabulary that is not the tokenizer of the checkpoint it is used with."""


def vocabulary_name(vocab: seqio.Vocabulary) -> str:
  """The file a vocabulary was loaded from (for messages), else its type."""
  for attribute in ("sentencepiece_model_file", "path"):
    value = getattr(vocab, attribute, None)
    if isinstance(value, str) and value:
      return value
  return type(vocab).__name__


def _special(vocab: seqio.Vocabulary, kind: str) -> int | None:
  try:
    value = getattr(vocab, f"{kind}_id")
  except NotImplementedError:
    return None
  return None if value is None or value < 0 else int(value)


def _describe(vocab: seqio.Vocabulary) -> str:
  return (f"{vocab.vocab_size} tokens, eos id {_special(vocab, 'eos')}, bos id "
          f"{_special(vocab, 'bos')}")


def tokenizer_fingerprint(vocab: seqio.Vocabulary) -> str:
  """A digest of what a vocabulary means: the token of every id, and its EOS and BOS ids.

  Two vocabularies with the same digest encode and decode alike even when their files
  differ, e.g. a Llama 2 folder's tokenizer.json and its tokenizer.model, or a file that
  was saved again.
  """
  processor = getattr(vocab, "tokenizer", None)
  if isinstance(vocab, HFTokenizerVocabulary):
    token = lambda i: processor.id_to_token(i) or ""  # noqa: E731
  elif hasattr(processor, "id_to_piece"):  # SentencePiece
    token = processor.id_to_piece
  else:
    token = lambda i: vocab.decode([i])  # noqa: E731
  digest = hashlib.sha256()
  for i in range(int(vocab.vocab_size)):
    digest.update(token(i).encode("utf-8") + b"\0")
  digest.update(f"eos={_special(vocab, 'eos')} bos={_special(vocab, 'bos')}".encode())
  return digest.hexdigest()


def _has_tokenizer(directory: str) -> bool:
  return any(fs.exists(fs.join(directory, name)) for name in (TOKENIZER_JSON, SENTENCEPIECE_MODEL))


def check_checkpoint_vocabulary(directory: str, vocab: seqio.Vocabulary, *,
                                allow_foreign: bool = False) -> bool:
  """Whether `vocab` is the tokenizer of the Hugging Face checkpoint `directory`.

  A checkpoint's embeddings and output layer belong to its own token ids: with another
  vocabulary every id would mean another word. The vocabulary is compared with the
  checkpoint's tokenizer files by `tokenizer_fingerprint`; a checkpoint without them is
  compared by what its config.json says (vocab_size, eos and bos ids), which can show a
  difference but never prove sameness (False, no error).

  Raises:
    ForeignVocabularyError: the vocabulary differs, unless `allow_foreign` (then it is
      logged as a warning and False is returned).
  """
  name = vocabulary_name(vocab)
  if _has_tokenizer(directory):
    own = load_tokenizer(directory)
    if tokenizer_fingerprint(own) == tokenizer_fingerprint(vocab):
      return True
    ours, theirs = _describe(vocab), _describe(own)
    difference = (f"it has {ours}, whereas the checkpoint's tokenizer has {theirs}"
                  if ours != theirs else f"both have {ours}, but the tokens differ")
  else:
    config = _read_json(fs.join(directory, _MODEL_CONFIG))
    clashes = []
    if isinstance(config.get("vocab_size"), int) and vocab.vocab_size > config["vocab_size"]:
      clashes.append(f"{vocab.vocab_size} tokens for a vocab_size of {config['vocab_size']}")
    for kind in ("eos", "bos"):
      ids = _as_id_list(config.get(f"{kind}_token_id"))
      if ids and _special(vocab, kind) not in ids:
        clashes.append(f"{kind} id {_special(vocab, kind)} where config.json says {ids[0]}")
    if not clashes:
      return False
    difference = "it has " + " and ".join(clashes)
  if allow_foreign:
    logging.getLogger(__name__).warning(
        "the vocabulary %s is not the tokenizer of the Hugging Face checkpoint %s (%s); used "
        "anyway, as allow_foreign_vocabulary=True asks", name, directory, difference)
    return False
  raise ForeignVocabularyError(
      f"the vocabulary {name} is not the tokenizer of the Hugging Face checkpoint {directory} "
      f"({difference}): the checkpoint's embeddings belong to its own token ids, so every id "
      f"would mean another word; use the checkpoint's tokenizer (--gin.VOCABULARY=\"'{directory}'"
      "\"), or set the job's allow_foreign_vocabulary=True (e.g. "
      "--gin.train_lm.allow_foreign_vocabulary=True) to use this vocabulary anyway")


# ---------------------------------------------------------------------------------
# Writing a tokenizer into a Hugging Face model folder

# Files of a Hugging Face folder that belong to its tokenizer (copied as they are).
_TOKENIZER_FILES = (TOKENIZER_JSON, SENTENCEPIECE_MODEL, _TOKENIZER_CONFIG, _SPECIAL_TOKENS_MAP,
                    "added_tokens.json", "vocab.json", "merges.txt")


def _sentencepiece_proto(model: bytes):
  from sentencepiece import sentencepiece_model_pb2
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(model)
  return proto


def sentencepiece_tokenizer_json(model: bytes) -> str | None:
  """A tokenizer.json equivalent to a SentencePiece unigram model (None for other model
  types): the same normalisation (the model's own rule, whitespace folding, the leading
  "▁"), pieces, scores and byte fallback, so it encodes text to the same ids; BOS is put
  before a text when encoding with special tokens."""
  from tokenizers import AddedToken, Regex, decoders, normalizers, processors
  proto = _sentencepiece_proto(model)
  piece_type = type(proto.pieces[0]) if proto.pieces else None
  if proto.trainer_spec.model_type != proto.trainer_spec.UNIGRAM or piece_type is None:
    return None
  unk = next((i for i, p in enumerate(proto.pieces) if p.type == piece_type.UNKNOWN), None)
  # User-defined pieces stay in the unigram lattice with score 0, which beats any split
  # of their text, as SentencePiece always extracts them.
  tokenizer = tokenizers.Tokenizer(tokenizers.models.Unigram(
      [(p.piece, p.score) for p in proto.pieces], unk_id=unk,
      byte_fallback=proto.trainer_spec.byte_fallback))
  spec = proto.normalizer_spec
  steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
  if spec.remove_extra_whitespaces:
    steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
  if spec.add_dummy_prefix:
    steps.append(normalizers.Prepend("▁"))
  steps.append(normalizers.Replace(" ", "▁"))
  tokenizer.normalizer = normalizers.Sequence(steps)
  tokenizer.decoder = decoders.Sequence(
      [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
      + ([decoders.Strip(" ", 1, 0)] if spec.add_dummy_prefix else []))
  tokenizer.add_special_tokens([
      AddedToken(p.piece, special=True, normalized=False) for p in proto.pieces
      if p.type in (piece_type.CONTROL, piece_type.UNKNOWN)])
  bos = proto.trainer_spec.bos_id
  if 0 <= bos < len(proto.pieces):
    piece = proto.pieces[bos].piece
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{piece} $A", pair=f"{piece} $A {piece} $B:1", special_tokens=[(piece, bos)])
  return tokenizer.to_str()


def _sentencepiece_tokenizer_config(model: bytes, unigram: bool) -> dict[str, Any]:
  proto = _sentencepiece_proto(model)
  spec = proto.trainer_spec

  def piece(index: int) -> str | None:
    return proto.pieces[index].piece if 0 <= index < len(proto.pieces) else None

  config: dict[str, Any] = {
      # transformers' LlamaTokenizer builds a BPE model: a unigram model is read from the
      # tokenizer.json written next to it.
      "tokenizer_class": "PreTrainedTokenizerFast" if unigram else "LlamaTokenizer",
      "add_bos_token": piece(spec.bos_id) is not None, "add_eos_token": False,
      "clean_up_tokenization_spaces": False, "legacy": False}
  for kind in ("bos", "eos", "unk", "pad"):
    token = piece(getattr(spec, f"{kind}_id"))
    if token is not None:
      config[f"{kind}_token"] = token
  return config


def save_tokenizer(directory: str, vocabulary: seqio.Vocabulary | str) -> list[str]:
  """Writes a vocabulary's tokenizer into the Hugging Face model folder `directory`, so
  that transformers' AutoTokenizer loads it and encodes text to the same ids.

  vocabulary: a tokenizer folder or a SentencePiece `.model` file, or a vocabulary loaded
    from one. A Hugging Face tokenizer's files are copied as they are. A SentencePiece
    model is written as tokenizer.model with a tokenizer_config.json naming its special
    tokens and, for a unigram model (what `train_sentencepiece` makes), an equivalent
    tokenizer.json (`sentencepiece_tokenizer_json`). Either way the tokenizer puts BOS
    before a text, as align_jax does for documents and prompts.

  Returns the names of the files written. Raises ValueError for a vocabulary that has
  no tokenizer files (a byte vocabulary, say).
  """
  tokenizer_json, source, model = None, None, None
  if isinstance(vocabulary, HFTokenizerVocabulary):
    tokenizer_json, source = vocabulary.path, fs.dirname(vocabulary.path)
  elif isinstance(vocabulary, seqio.SentencePieceVocabulary):
    model = vocabulary.sp_model
    folder = fs.dirname(vocabulary.sentencepiece_model_file)
    if (fs.basename(vocabulary.sentencepiece_model_file) == SENTENCEPIECE_MODEL
        and fs.exists(fs.join(folder, _TOKENIZER_CONFIG))):
      source = folder  # a Hugging Face model's own tokenizer.model
  elif isinstance(vocabulary, str) and fs.isdir(vocabulary):
    if fs.exists(fs.join(vocabulary, TOKENIZER_JSON)):
      tokenizer_json, source = fs.join(vocabulary, TOKENIZER_JSON), vocabulary
    elif fs.exists(fs.join(vocabulary, _TOKENIZER_CONFIG)):
      source = vocabulary
    elif fs.exists(fs.join(vocabulary, SENTENCEPIECE_MODEL)):
      model = fs.read_bytes(fs.join(vocabulary, SENTENCEPIECE_MODEL))
  elif isinstance(vocabulary, str) and vocabulary.endswith(".model"):
    model = fs.read_bytes(vocabulary)
  if source is None and model is None:
    raise ValueError(f"cannot write a tokenizer for {vocabulary}: expected a SentencePiece "
                     "'.model' file, a Hugging Face tokenizer folder, or a vocabulary loaded "
                     "from one")
  fs.makedirs(directory)
  if source is not None:  # a Hugging Face tokenizer: its files as they are
    if fs.resolve(source) == fs.resolve(directory):
      return [n for n in _TOKENIZER_FILES if fs.exists(fs.join(directory, n))]
    written = []
    if tokenizer_json is not None:
      fs.copy(tokenizer_json, fs.join(directory, TOKENIZER_JSON))
      written.append(TOKENIZER_JSON)
    for name in _TOKENIZER_FILES:
      if name not in written and fs.exists(fs.join(source, name)):
        fs.copy(fs.join(source, name), fs.join(directory, name))
        written.append(name)
    return written
  written = [SENTENCEPIECE_MODEL]
  fs.write_atomically(fs.join(directory, SENTENCEPIECE_MODEL), model)
  converted = sentencepiece_tokenizer_json(model)
  if converted is not None:
    fs.write_atomically(fs.join(directory, TOKENIZER_JSON), converted)
    written.append(TOKENIZER_JSON)
  config = _sentencepiece_tokenizer_config(model, converted is not None)
  fs.write_atomically(fs.join(directory, _TOKENIZER_CONFIG), json.dumps(config, indent=2) + "\n")
  return written + [_TOKENIZER_CONFIG]
