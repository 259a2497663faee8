"""seqio vocabularies for Hugging Face tokenizers.

`load_tokenizer` turns a Hugging Face model directory into a
`seqio.Vocabulary`: a `tokenizer.json` (fast BPE tokenizers such as Llama 3
or Qwen2) becomes an `HFTokenizerVocabulary`, a `tokenizer.model`
(SentencePiece, e.g. Llama 2 or Gemma) becomes a
`seqio.SentencePieceVocabulary`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf
import tokenizers

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
