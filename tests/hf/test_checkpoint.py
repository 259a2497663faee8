"""Hugging Face interop: logits parity with transformers, export round trip, clear errors."""

import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers

from align_jax.hf import load_checkpoint, save_checkpoint
from align_jax.models import Transformer

_COMMON = dict(vocab_size=120, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)

FAMILIES = {
    "llama_gqa": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "llama3_rope_scaling": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 16})),
    "mistral_sliding_window": (transformers.MistralConfig, transformers.MistralForCausalLM,
                               dict(sliding_window=6)),
    "qwen2_bias_tied": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                        dict(tie_word_embeddings=True)),
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM,
              dict(num_key_value_heads=1, head_dim=32)),
}


def _save_hf_model(family, directory, seed=0, **extra):
  config_cls, model_cls, kw = FAMILIES[family]
  torch.manual_seed(seed)
  model = model_cls(config_cls(**{**_COMMON, **kw, **extra})).eval()
  with torch.no_grad():  # random norms and biases too, so every tensor matters
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  model.save_pretrained(directory, **({"max_shard_size": "40KB"} if extra.pop("_shard", 0) else {}))
  return model


def _tokens(batch=2, length=24, seed=0):
  return np.random.RandomState(seed).randint(0, _COMMON["vocab_size"], (batch, length))


def _torch_logits(model, tokens):
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.float().numpy()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_match_transformers_and_export_round_trips(family, tmp_path):
  reference = _save_hf_model(family, tmp_path / "hf")
  config, params = load_checkpoint(str(tmp_path / "hf"))
  tokens = _tokens()
  ours = np.asarray(Transformer(config).apply({"params": params}, tokens))
  theirs = _torch_logits(reference, tokens)
  assert np.abs(ours - theirs).max() <= 1e-4

  save_checkpoint(str(tmp_path / "export"), config, params)
  config2, params2 = load_checkpoint(str(tmp_path / "export"))
  assert config2 == config
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bit-exact
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export")).eval()
  assert type(reloaded) is type(reference)
  assert np.abs(_torch_logits(reloaded, tokens) - ours).max() <= 1e-4


def test_sharded_checkpoint_with_index_and_scanned_layout(tmp_path):
  reference = _save_hf_model("llama_gqa", tmp_path / "hf", _shard=1)
  assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
  config, params = load_checkpoint(str(tmp_path / "hf"), scan_layers=True)
  assert params["layers"]["attention"]["q_kernel"].shape[0] == config.num_layers
  tokens = _tokens()
  ours = np.asarray(Transformer(config).apply({"params": params}, tokens))
  assert np.abs(ours - _torch_logits(reference, tokens)).max() <= 1e-4
  files = save_checkpoint(str(tmp_path / "out"), config, params, max_shard_bytes=30_000)
  assert "model.safetensors.index.json" in files and len(files) > 3
  _, params2 = load_checkpoint(str(tmp_path / "out"), scan_layers=True)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bfloat16_checkpoint_loads(tmp_path):
  reference = _save_hf_model("qwen2_bias_tied", tmp_path / "hf")
  reference.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
  config, params = load_checkpoint(str(tmp_path / "bf16"), param_dtype="bfloat16")
  assert params["embedder"]["embedding"].dtype == jax.numpy.bfloat16
  expected = reference.model.embed_tokens.weight.detach().float().numpy()
  np.testing.assert_array_equal(np.asarray(params["embedder"]["embedding"], np.float32), expected)


def test_export_refuses_to_overwrite(tmp_path, tiny_config):
  from align_jax.models import init_params
  params = init_params(Transformer(tiny_config), jax.random.key(0))
  save_checkpoint(str(tmp_path / "x"), tiny_config, params)
  before = (tmp_path / "x" / "model.safetensors").read_bytes()
  with pytest.raises(FileExistsError, match="already holds a checkpoint"):
    save_checkpoint(str(tmp_path / "x"), tiny_config, params)
  assert (tmp_path / "x" / "model.safetensors").read_bytes() == before
  # Overwriting a sharded export with a single file leaves no stale shard or index behind.
  save_checkpoint(str(tmp_path / "y"), tiny_config, params, max_shard_bytes=20_000)
  assert (tmp_path / "y" / "model.safetensors.index.json").exists()
  save_checkpoint(str(tmp_path / "y"), tiny_config, params, overwrite=True)
  assert sorted(p.name for p in (tmp_path / "y").iterdir()) == ["config.json", "model.safetensors"]


def test_shape_mismatch_is_named(tmp_path):
  _save_hf_model("llama_gqa", tmp_path / "hf")
  config_path = tmp_path / "hf" / "config.json"
  hf = json.loads(config_path.read_text())
  hf["intermediate_size"] = 80
  config_path.write_text(json.dumps(hf))
  with pytest.raises(ValueError, match=r"model.safetensors: tensor 'model.layers.0.mlp.gate_proj"
                                       r".weight' has shape \(96, 64\), but config.json implies "
                                       r"\(80, 64\)"):
    load_checkpoint(str(tmp_path / "hf"))


def test_missing_shard_is_named(tmp_path):
  _save_hf_model("llama_gqa", tmp_path / "hf", _shard=1)
  shards = sorted(p for p in os.listdir(tmp_path / "hf") if p.endswith(".safetensors"))
  os.remove(tmp_path / "hf" / shards[1])
  with pytest.raises(FileNotFoundError, match=f"lists shard '{shards[1]}'"):
    load_checkpoint(str(tmp_path / "hf"))


def test_unknown_architecture_is_named(tmp_path):
  _save_hf_model("llama_gqa", tmp_path / "hf")
  config_path = tmp_path / "hf" / "config.json"
  hf = json.loads(config_path.read_text())
  hf["model_type"] = "falcon"
  config_path.write_text(json.dumps(hf))
  with pytest.raises(ValueError, match="config.json: unsupported model_type 'falcon'"):
    load_checkpoint(str(tmp_path / "hf"))


def test_missing_weights_file_is_named(tmp_path):
  _save_hf_model("llama_gqa", tmp_path / "hf")
  os.remove(tmp_path / "hf" / "model.safetensors")
  with pytest.raises(FileNotFoundError, match="no model.safetensors or model.safetensors.index"):
    load_checkpoint(str(tmp_path / "hf"))
