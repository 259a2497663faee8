"""Data utilities: vocabularies, chat templates, jsonl files, seqio tasks, batches."""

from align_jax.data.chat import (
    ROLES,
    TEMPLATES,
    ChatTemplate,
    RenderedChat,
    get_template,
)
from align_jax.data.jsonl import JsonlError, read_jsonl, write_jsonl
from align_jax.data.pipeline import (
    BATCH_FEATURES,
    DEFAULT_TRUNCATE,
    STATS_KEYS,
    TRUNCATE_POLICIES,
    BatchIterator,
    check_seq_len,
    data_summary,
    describe_stats,
    make_batch_iterator,
    pack_examples,
)
from align_jax.data.tasks import (
    FEATURES,
    KINDS,
    examples_to_dataset,
    register_function_task,
    register_jsonl_task,
    register_tfds_task,
    tokenize_record,
    validate_record,
)
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
    "BATCH_FEATURES",
    "DEFAULT_TRUNCATE",
    "STATS_KEYS",
    "TRUNCATE_POLICIES",
    "BatchIterator",
    "check_seq_len",
    "data_summary",
    "describe_stats",
    "make_batch_iterator",
    "pack_examples",
    "FEATURES",
    "KINDS",
    "examples_to_dataset",
    "register_function_task",
    "register_jsonl_task",
    "register_tfds_task",
    "tokenize_record",
    "validate_record",
]
