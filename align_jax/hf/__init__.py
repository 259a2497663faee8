"""Hugging Face interop: safetensors checkpoints, configs and tokenizers."""

from align_jax.hf.checkpoint import (
    config_from_hf,
    config_to_hf,
    load_checkpoint,
    load_config,
    save_checkpoint,
)
from align_jax.hf.tokenizer import (ForeignVocabularyError, HFTokenizerVocabulary,
                                    check_checkpoint_vocabulary, load_tokenizer,
                                    save_tokenizer, tokenizer_fingerprint)
