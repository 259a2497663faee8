"""Data utilities: vocabularies and chat templates."""

from align_jax.data.chat import (
    ROLES,
    TEMPLATES,
    ChatTemplate,
    RenderedChat,
    get_template,
)
from align_jax.data.vocab import load_vocabulary, train_sentencepiece

__all__ = [
    "ROLES",
    "TEMPLATES",
    "ChatTemplate",
    "RenderedChat",
    "get_template",
    "load_vocabulary",
    "train_sentencepiece",
]
