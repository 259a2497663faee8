"""The generate run: gin file -> jsonl of completions from an imported checkpoint."""

import json

import pytest
import torch
import transformers

from align_jax import main as entry
from hf_fixtures import save_bpe_tokenizer


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("hf_model")
  save_bpe_tokenizer(directory, vocab_size=300, bos_token="<s>", eos_token="</s>",
                     pad_token="<pad>")
  config = transformers.LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2,
                                    num_key_value_heads=1, max_position_embeddings=128,
                                    bos_token_id=1, eos_token_id=2, pad_token_id=0)
  torch.manual_seed(0)
  transformers.LlamaForCausalLM(config).save_pretrained(directory)
  return directory


def test_generate_run_writes_completions(hf_model_dir, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text("\n".join(json.dumps(r) for r in [
      {"prompt": "the cat sat on", "id": "a"},
      {"prompt_tokens": [1, 40, 41, 42], "id": "b"},
      {"prompt": "hello world", "id": "c"},
  ]) + "\n")
  workdir = tmp_path / "work"
  stats = entry.main([
      "--gin_file=gin/runs/generate.gin", f"--gin.WORKDIR='{workdir}'",
      f"--gin.PROMPTS='{prompts}'", f"--gin.CHECKPOINT='{hf_model_dir}'",
      "--gin.SamplingConfig.num_samples=2", "--gin.SamplingConfig.max_new_tokens=12",
      "--gin.generate.batch_size=4"])
  lines = [json.loads(l) for l in (workdir / "generations.jsonl").read_text().splitlines()]
  assert [l["id"] for l in lines] == ["a", "b", "c"]
  for line in lines:
    assert len(line["completions"]) == 2
    for completion in line["completions"]:
      n = len(completion["tokens"])
      assert 1 <= n <= 12 and len(completion["logprobs"]) == n
      assert all(lp <= 1e-6 for lp in completion["model_logprobs"])
      assert isinstance(completion["text"], str)
  assert stats["generated_tokens"] == sum(len(c["tokens"]) for l in lines for c in l["completions"])
  assert (workdir / "config.gin").exists() and (workdir / "metrics.jsonl").exists()

  # Rerunning into the same WORKDIR never overwrites the completions.
  before = (workdir / "generations.jsonl").read_bytes()
  with pytest.raises(FileExistsError, match="generations.jsonl already exists"):
    entry.main(["--gin_file=gin/runs/generate.gin", f"--gin.WORKDIR='{workdir}'",
                f"--gin.PROMPTS='{prompts}'", f"--gin.CHECKPOINT='{hf_model_dir}'"])
  assert (workdir / "generations.jsonl").read_bytes() == before


def test_malformed_prompt_line_is_named(hf_model_dir, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text('{"prompt": "ok"}\n{"text": "no prompt field"}\n')
  with pytest.raises(ValueError, match=r"prompts.jsonl, line 2: missing field 'prompt'"):
    entry.main(["--gin_file=gin/runs/generate.gin", f"--gin.WORKDIR='{tmp_path / 'w'}'",
                f"--gin.PROMPTS='{prompts}'", f"--gin.CHECKPOINT='{hf_model_dir}'"])
