"""Data utilities: vocabularies, chat templates, jsonl files."""

from align_jax.data.chat import (
    ROLES,
    TEMPLATES,
    ChatTemplate,
    RenderedChat,
    get_template,
)
from align_jax.data.jsonl import JsonlError, read_jsonl, write_jsonl
from align_jax.data.vocab import load_vocabulary, train_sentencepiece

__all__ = [
    "ROLES",
    "TEMPLATES",
    "ChatTemplate",
    "RenderedChat",
    "get_template",
    "JsonlError",
    "read_jsonl",
    "write_jsonl",
    "load_vocabulary",
    "train_sentencepiece",
]
