"""Shared test fixtures: a tiny byte-level BPE tokenizer saved the way transformers saves one."""

import random

import sentencepiece as spm
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]

WORDS = (
    "the a cat dog bird sat ran flew on under mat tree big small red blue "
    "über café naïve 東京 🙂 42 hello world , . !"
).split()


def words_corpus(n: int = 300, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  return [
      " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
      for _ in range(n)
  ]


def write_words_data(root, n: int = 200, vocab_size: int = 300) -> list[str]:
  """`root/text.jsonl` with `n` lines of `words_corpus` and a sentencepiece vocabulary of
  `vocab_size` pieces trained on them (`root/spm.model`); returns the texts."""
  import json
  from align_jax.data.vocab import train_sentencepiece
  texts = words_corpus(n)
  train_sentencepiece(texts, str(root / "spm"), vocab_size)
  (root / "text.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  return texts


def save_bpe_tokenizer(directory, vocab_size: int = 300, extra_special_tokens=(),
                       **special_tokens) -> None:
  """Trains a tiny byte-level BPE tokenizer and saves it like HF does."""
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size,
      special_tokens=SPECIAL_TOKENS + list(extra_special_tokens),
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tokenizer.train_from_iterator(words_corpus(), trainer)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special_tokens)
  fast.save_pretrained(str(directory))


def train_llama2_style_sentencepiece(model_prefix) -> None:
  """A sentencepiece model with Llama 2's special ids (unk 0, bos 1, eos 2, no pad)."""
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(words_corpus()), model_prefix=str(model_prefix), vocab_size=300,
      unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True, num_threads=1,
      minloglevel=2)


def save_tiny_llama(directory, max_positions: int = 256, extra_special_tokens=()) -> None:
  """A one-layer random Llama and a matching BPE tokenizer (vocab 300), saved like HF does;
  `extra_special_tokens` (e.g. a chat template's) become single tokens of the tokenizer."""
  import torch
  save_bpe_tokenizer(directory, vocab_size=300, extra_special_tokens=extra_special_tokens,
                     bos_token="<s>", eos_token="</s>", pad_token="<pad>")
  config = transformers.LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2,
                                    num_key_value_heads=1, max_position_embeddings=max_positions,
                                    bos_token_id=1, eos_token_id=2, pad_token_id=0)
  torch.manual_seed(0)
  transformers.LlamaForCausalLM(config).save_pretrained(directory)


def random_llama(vocab_size: int, max_positions: int, bos_token_id: int, eos_token_id: int,
                 seed: int = 0):
  """A two-layer random Llama (hidden 64, 4 heads, 2 kv heads) in eval mode, pad id 0."""
  import torch
  config = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, max_position_embeddings=max_positions,
                                    bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                                    pad_token_id=0)
  torch.manual_seed(seed)
  return transformers.LlamaForCausalLM(config).eval()
