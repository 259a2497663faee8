"""Chat templates: turn a list of messages into token ids and a loss mask.

A conversation is rendered as a sequence of pieces (turn prefixes, message
contents, turn suffixes and special ids). Every text piece is tokenized on
its own and the id lists are concatenated. Because token boundaries then
always coincide with piece boundaries, the loss mask is exact: it is 1 on
the tokens of assistant contents and of the assistant end-of-turn marker,
and 0 everywhere else. The price is that the ids can differ from tokenizing
the whole rendered string at once where a tokenizer would merge across a
piece boundary (e.g. SentencePiece adds a leading space to every piece).
For byte-level BPE vocabularies whose markers are special tokens (Llama 3,
Qwen2) the two agree in practice.

A template whose turn markers are special tokens ('llama3', 'chatml', 'gemma')
needs a vocabulary that has each of them as a single token: rendering with one
that lacks them is an error (`MissingSpecialTokensError`) naming the missing
tokens, never a conversation spelled out in dozens of ordinary text pieces.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence

import numpy as np
import seqio

ROLES = ("system", "user", "assistant")

# Kinds of rendered pieces.
_TEXT, _BOS, _EOS = "text", "bos", "eos"


class MissingSpecialTokensError(ValueError):
  """A chat template whose special tokens the vocabulary does not have."""


@dataclasses.dataclass(frozen=True)
class RenderedChat:
  """Token ids of a rendered conversation and its loss mask.

  `loss_mask[i]` is 1 where `token_ids[i]` belongs to an assistant reply
  (content or end-of-turn marker) and 0 elsewhere.
  """

  token_ids: np.ndarray
  loss_mask: np.ndarray

  def __len__(self) -> int:
    return len(self.token_ids)


@dataclasses.dataclass(frozen=True)
class _Piece:
  kind: str
  text: str
  trained: bool


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """How the turns of a conversation are laid out.

  Attributes:
    system_prefix, system_suffix: text around a system message.
    user_prefix, user_suffix: text around a user message.
    assistant_prefix, assistant_suffix: text around an assistant message;
      the prefix is also the generation prompt. The suffix is trained on.
    assistant_end_eos: put the vocabulary's EOS id after every assistant
      turn (trained on, like the suffix).
    add_bos: start the sequence with the vocabulary's BOS id.
    bos_per_user_turn: start every user turn with the BOS id (Llama 2).
    merge_system_into_user: render the system message inside the first
      user turn, right after the user prefix, for formats without a system
      role (Llama 2, Gemma).
    default_system: system message used when the conversation has none.
    special_tokens: markers in the texts above that must each be one token of
      the vocabulary (see `check_vocabulary`).
  """

  system_prefix: str = ""
  system_suffix: str = ""
  user_prefix: str = ""
  user_suffix: str = ""
  assistant_prefix: str = ""
  assistant_suffix: str = ""
  assistant_end_eos: bool = False
  add_bos: bool = False
  bos_per_user_turn: bool = False
  merge_system_into_user: bool = False
  default_system: str | None = None
  special_tokens: tuple[str, ...] = ()

  def missing_special_tokens(self, vocab: seqio.Vocabulary) -> list[str]:
    """The template's special tokens that are not single tokens of `vocab`."""
    return [t for t in self.special_tokens if not _is_single_token(vocab, t)]

  def check_vocabulary(self, vocab: seqio.Vocabulary) -> None:
    """Checks that `vocab` has every special token of the template as one token.

    Raises:
      MissingSpecialTokensError: naming the template, the vocabulary and the
        tokens it lacks.
    """
    missing = self.missing_special_tokens(vocab)
    if not missing:
      return
    from align_jax.hf.tokenizer import vocabulary_name  # only on this error path
    name = next((repr(n) for n, t in TEMPLATES.items() if t == self), "(a custom ChatTemplate)")
    pieces = len(vocab.encode(missing[0]))
    raise MissingSpecialTokensError(
        f"chat template {name} marks turns with the special tokens "
        f"{', '.join(self.special_tokens)}, but the vocabulary {vocabulary_name(vocab)} "
        f"lacks {', '.join(missing)} as single tokens: each would be spelled out as "
        f"ordinary text ({missing[0]} alone is {pieces} tokens); use the tokenizer of a model "
        "trained with this template, a template without special tokens (e.g. 'plain'), or "
        "train the SentencePiece vocabulary with them among its user_defined_symbols"
    )

  def _pieces(
      self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool
  ) -> list[_Piece]:
    """Validates `messages` and lays them out as a list of pieces."""
    messages = _validate(messages)
    if messages[0]["role"] != "system" and self.default_system is not None:
      messages = [{"role": "system", "content": self.default_system}, *messages]
    if self.merge_system_into_user and messages[0]["role"] == "system":
      if len(messages) < 2 or messages[1]["role"] != "user":
        raise ValueError(
            "This template places the system message inside the first user "
            "turn, so message 1 must have role 'user'."
        )

    pieces: list[_Piece] = []

    def text(value: str, trained: bool = False) -> None:
      if value:
        pieces.append(_Piece(_TEXT, value, trained))

    if self.add_bos:
      pieces.append(_Piece(_BOS, "", False))
    pending_system: str | None = None
    for message in messages:
      role, content = message["role"], message["content"]
      if role == "system":
        if self.merge_system_into_user:
          pending_system = content
        else:
          text(self.system_prefix)
          text(content)
          text(self.system_suffix)
      elif role == "user":
        if self.bos_per_user_turn:
          pieces.append(_Piece(_BOS, "", False))
        text(self.user_prefix)
        if pending_system is not None:
          text(self.system_prefix)
          text(pending_system)
          text(self.system_suffix)
          pending_system = None
        text(content)
        text(self.user_suffix)
      else:
        text(self.assistant_prefix)
        text(content, trained=True)
        text(self.assistant_suffix, trained=True)
        if self.assistant_end_eos:
          pieces.append(_Piece(_EOS, "", True))
    if add_generation_prompt:
      text(self.assistant_prefix)
    return pieces

  def render(
      self,
      messages: Sequence[Mapping[str, str]],
      vocab: seqio.Vocabulary,
      *,
      add_generation_prompt: bool = False,
  ) -> RenderedChat:
    """Tokenizes a conversation and marks the assistant tokens to train on.

    `messages` are `{"role": "system"|"user"|"assistant", "content": str}`
    dicts; a system message may only come first. With
    `add_generation_prompt`, the assistant prefix is appended so a model
    can continue with its reply.

    Raises:
      ValueError: `messages` is empty or malformed, or the template needs a
        BOS/EOS id the vocabulary does not have.
      MissingSpecialTokensError: the vocabulary lacks a special token of the
        template (see `check_vocabulary`).
    """
    ids: list[int] = []
    mask: list[int] = []
    for piece in self._pieces(messages, add_generation_prompt):
      if piece.kind == _TEXT:
        piece_ids = [int(i) for i in vocab.encode(piece.text)]
      elif piece.kind == _BOS:
        piece_ids = [_template_special_id(vocab, "bos")]
      else:
        piece_ids = [_template_special_id(vocab, "eos")]
      ids.extend(piece_ids)
      mask.extend([int(piece.trained)] * len(piece_ids))
    _check_once(self, vocab)
    return RenderedChat(
        token_ids=np.asarray(ids, dtype=np.int32),
        loss_mask=np.asarray(mask, dtype=np.int32),
    )

  def render_text(
      self,
      messages: Sequence[Mapping[str, str]],
      *,
      add_generation_prompt: bool = False,
      bos_text: str = "",
      eos_text: str = "",
  ) -> str:
    """Renders a conversation as a string (for inspection and comparison).

    BOS/EOS ids have no text of their own; `bos_text` and `eos_text` are
    written in their place (e.g. "<s>" and "</s>").
    """
    special = {_BOS: bos_text, _EOS: eos_text}
    return "".join(
        piece.text if piece.kind == _TEXT else special[piece.kind]
        for piece in self._pieces(messages, add_generation_prompt)
    )


def _validate(messages: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
  """Checks roles and contents; returns the messages as a list."""
  messages = list(messages)
  if not messages:
    raise ValueError(
        f"Cannot render an empty conversation; expected at least one message "
        f"with a role in {ROLES}."
    )
  for index, message in enumerate(messages):
    if not isinstance(message, Mapping):
      raise ValueError(
          f"Message {index} is a {type(message).__name__}, expected a mapping "
          f"with 'role' (one of {ROLES}) and 'content'."
      )
    role = message.get("role")
    if role not in ROLES:
      raise ValueError(
          f"Message {index} has role {role!r}; expected one of {ROLES}."
      )
    if role == "system" and index != 0:
      raise ValueError(
          f"Message {index} has role 'system'; a system message may only be "
          f"message 0 (expected 'user' or 'assistant' here)."
      )
    if not isinstance(message.get("content"), str):
      raise ValueError(
          f"Message {index} (role {role!r}) needs a string 'content', got "
          f"{type(message.get('content')).__name__}."
      )
  return messages


def _is_single_token(vocab: seqio.Vocabulary, token: str) -> bool:
  """Whether `vocab` encodes `token` as one token (SentencePiece's word-start
  piece, which has no text of its own, aside)."""
  ids = [int(i) for i in vocab.encode(token)]
  ids = [i for i in ids if vocab.decode([i]).strip()]
  return len(ids) == 1 and vocab.decode(ids) == token


# (template, id(vocab)) -> vocab, for the pairs `render` has checked; the vocabulary
# is kept so that its id is not reused while the entry lives.
_CHECKED: dict[tuple[ChatTemplate, int], seqio.Vocabulary] = {}


def _check_once(template: ChatTemplate, vocab: seqio.Vocabulary) -> None:
  if not template.special_tokens or _CHECKED.get((template, id(vocab))) is vocab:
    return
  template.check_vocabulary(vocab)
  if len(_CHECKED) >= 64:
    _CHECKED.clear()
  _CHECKED[(template, id(vocab))] = vocab


def special_id(vocab: seqio.Vocabulary, kind: str) -> int | None:
  """The vocabulary's BOS (`kind` 'bos') or EOS id, or None if it has none."""
  try:
    value = vocab.bos_id if kind == "bos" else vocab.eos_id
  except NotImplementedError:
    return None
  if value is None or value < 0:
    return None
  return int(value)


def _template_special_id(vocab: seqio.Vocabulary, kind: str) -> int:
  value = special_id(vocab, kind)
  if value is None:
    raise ValueError(
        f"The chat template needs a {kind.upper()} id but vocabulary {vocab} "
        f"has none."
    )
  return value


TEMPLATES: Mapping[str, ChatTemplate] = types.MappingProxyType(
    {
        # Simple text markers for small models trained from scratch; EOS ends
        # every assistant turn.
        "plain": ChatTemplate(
            system_prefix="System: ",
            system_suffix="\n",
            user_prefix="User: ",
            user_suffix="\n",
            assistant_prefix="Assistant: ",
            assistant_suffix="",
            assistant_end_eos=True,
        ),
        # One line a turn, as the principles world writes dialogues ("User: ...\n
        # Assistant: ..."), for vocabularies trained without a dummy prefix: each turn's
        # text follows its marker as written, so it starts with its space (" What is...")
        # and a rendered dialogue has the token ids of the same text encoded whole.
        "lines": ChatTemplate(
            system_prefix="",
            system_suffix="\n\n",
            user_prefix="User:",
            user_suffix="\n",
            assistant_prefix="Assistant:",
            assistant_suffix="",
            assistant_end_eos=True,
        ),
        # No markers: the response continues the prompt's text as written (a document
        # whose last words are the target, e.g. a judging document's verdict), for
        # vocabularies trained without a dummy prefix, where the two encoded apart are
        # the whole text's ids when the prompt ends in a piece of its own.
        "text": ChatTemplate(),
        # Llama 2 chat: <s>[INST] <<SYS>>...<</SYS>> user [/INST] reply </s>
        "llama2": ChatTemplate(
            system_prefix="<<SYS>>\n",
            system_suffix="\n<</SYS>>\n\n",
            user_prefix="[INST] ",
            user_suffix=" [/INST] ",
            assistant_prefix="",
            assistant_suffix=" ",
            assistant_end_eos=True,
            bos_per_user_turn=True,
            merge_system_into_user=True,
        ),
        # Llama 3 instruct: header-id tokens, turns end with <|eot_id|>.
        "llama3": ChatTemplate(
            system_prefix="<|start_header_id|>system<|end_header_id|>\n\n",
            system_suffix="<|eot_id|>",
            user_prefix="<|start_header_id|>user<|end_header_id|>\n\n",
            user_suffix="<|eot_id|>",
            assistant_prefix="<|start_header_id|>assistant<|end_header_id|>\n\n",
            assistant_suffix="<|eot_id|>",
            add_bos=True,
            special_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        ),
        # ChatML (Qwen2): <|im_start|>role\n...<|im_end|>\n
        "chatml": ChatTemplate(
            system_prefix="<|im_start|>system\n",
            system_suffix="<|im_end|>\n",
            user_prefix="<|im_start|>user\n",
            user_suffix="<|im_end|>\n",
            assistant_prefix="<|im_start|>assistant\n",
            assistant_suffix="<|im_end|>\n",
            special_tokens=("<|im_start|>", "<|im_end|>"),
        ),
        # Gemma: no system role, so the system text opens the first user turn.
        "gemma": ChatTemplate(
            system_suffix="\n\n",
            user_prefix="<start_of_turn>user\n",
            user_suffix="<end_of_turn>\n",
            assistant_prefix="<start_of_turn>model\n",
            assistant_suffix="<end_of_turn>\n",
            add_bos=True,
            merge_system_into_user=True,
            special_tokens=("<start_of_turn>", "<end_of_turn>"),
        ),
    }
)


def get_template(name: str) -> ChatTemplate:
  """Returns the registered chat template called `name`.

  Raises:
    ValueError: no template has that name.
  """
  try:
    return TEMPLATES[name]
  except KeyError:
    raise ValueError(
        f"Unknown chat template {name!r}; known templates: {sorted(TEMPLATES)}."
    ) from None
