"""Helpers shared by the benchmarks: timing, memory, a same-weights transformers twin."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import tempfile
import time
from typing import Any, Callable

import jax

from align_jax.models import TransformerConfig


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
  """(seconds, output) of one call of `fn`, its arrays computed to the end."""
  start = time.perf_counter()
  out = fn()
  out = jax.block_until_ready(out)
  return time.perf_counter() - start, out


def summary(seconds: list[float]) -> dict[str, float]:
  """Median, minimum and number of repeated timings."""
  return {"median_s": statistics.median(seconds), "min_s": min(seconds), "runs": len(seconds)}


def peak_rss_mb() -> float:
  """This process's peak resident memory so far, in MiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
  """The JAX backend, device count, CPU count and processor a benchmark ran on."""
  return {"platform": jax.default_backend(), "devices": jax.device_count(),
          "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}


def small_config(vocab: int, d_model: int, layers: int, max_seq_len: int,
                 **options: Any) -> TransformerConfig:
  """The benchmarks' model of a size: 4 heads of d_model / 4 (as many key-value heads),
  an MLP of 3 x d_model, pad 0, EOS 1, BOS 2; `options` set other fields."""
  return TransformerConfig(**{
      "vocab_size": vocab, "num_layers": layers, "d_model": d_model, "num_heads": 4,
      "num_kv_heads": 4, "head_dim": d_model // 4, "mlp_dim": 3 * d_model,
      "max_seq_len": max_seq_len, "pad_id": 0, "eos_id": 1, "bos_id": 2, **options})


def measure_value_and_grad(f: Callable[[Any], Any], params: Any, repeats: int,
                           has_aux: bool = False) -> dict[str, Any]:
  """`jax.value_and_grad(f)` jitted and compiled for `params`: XLA's compiled temporary
  memory (`temp_bytes`, None where the backend does not say), the median of `repeats`
  timed calls after one warm-up call, and the warm-up call's `value` (with `has_aux`, a
  (value, aux) pair) and `grads`, for the caller to compare against a peer's."""
  compiled = jax.jit(jax.value_and_grad(f, has_aux=has_aux)).lower(params).compile()
  stats = compiled.memory_analysis()
  value, grads = jax.block_until_ready(compiled(params))
  seconds = [timed(lambda: compiled(params))[0] for _ in range(repeats)]
  return {"temp_bytes": int(stats.temp_size_in_bytes) if stats is not None else None,
          "median_s": statistics.median(seconds), "value": value, "grads": grads}


def max_abs_diff(a: Any, b: Any) -> float:
  """The largest absolute difference between the leaves of two pytrees of one structure."""
  return max(float(abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def llama_twin(d_model: int, layers: int, vocab: int, mlp_dim: int, heads: int, kv_heads: int,
               max_len: int, seed: int = 0, dtype: str = "float32"):
  """A random transformers Llama and the same weights imported into align_jax.

  Returns (torch_model, align_jax_config, align_jax_params).
  """
  import torch
  import transformers

  from align_jax.hf import load_checkpoint
  hf_config = transformers.LlamaConfig(
      vocab_size=vocab, hidden_size=d_model, intermediate_size=mlp_dim, num_hidden_layers=layers,
      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_len,
      bos_token_id=1, eos_token_id=2, pad_token_id=0)
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(hf_config).eval()
  with tempfile.TemporaryDirectory() as directory:
    model.save_pretrained(directory)
    config, params = load_checkpoint(directory, dtype=dtype, param_dtype=dtype)
  return model, config, params
