"""A job that builds a model on the mesh, runs it, and reports what it built.

Useful before a long run: it shows the parameter count, each parameter's sharding, the loss of random tokens
(about log(vocab) for a fresh model), and checks the KV-cache path against a full
forward on the real devices.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from align_jax.models import Transformer, TransformerConfig, init_cache, init_params
from align_jax.parallel import DEFAULT_RULES, LogicalRules, sharding_context


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def model_summary(workdir: str, config: TransformerConfig,
                  mesh: Mesh | None = None,
                  rules: LogicalRules = DEFAULT_RULES, checkpoint: str | None = None,
                  batch_size: int = 2, seq_len: int = 16, seed: int = 0) -> dict[str, Any]:
  """Initialises (or imports from `checkpoint`) the model, runs it, writes a summary."""
  if mesh is None:
    from align_jax.parallel import create_mesh
    mesh = create_mesh()
  start = time.perf_counter()
  if checkpoint:
    from align_jax.training.runs import load_run
    loaded = load_run(checkpoint, config=config, mesh=mesh, rules=rules)
    config, params = loaded.config, loaded.params
  else:
    params = init_params(Transformer(config), jax.random.key(seed), mesh, rules)
  init_seconds = time.perf_counter() - start
  model = Transformer(config)

  rows = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    rows.append({"name": _path_name(path), "shape": list(leaf.shape), "dtype": str(leaf.dtype),
                 "sharding": str(leaf.sharding.spec)})
  num_params = int(sum(np.prod(r["shape"]) for r in rows))

  tokens = jax.random.randint(jax.random.key(seed + 1), (batch_size, seq_len), 0,
                              config.vocab_size, jnp.int32)
  batch_sharding = NamedSharding(mesh, PartitionSpec())
  tokens = jax.device_put(tokens, batch_sharding)

  with sharding_context(mesh, rules):
    @jax.jit
    def loss_fn(params, tokens):
      logits = model.apply({"params": params}, tokens)
      logprobs = jax.nn.log_softmax(logits[:, :-1])
      return -jnp.take_along_axis(logprobs, tokens[:, 1:, None], -1).mean(), logits

    @jax.jit
    def cached_logits(params, tokens):
      half = tokens.shape[1] // 2
      cache = init_cache(config, tokens.shape[0], tokens.shape[1])
      first, cache = model.apply({"params": params}, tokens[:, :half], cache=cache)
      outs = [first]
      for t in range(half, tokens.shape[1]):
        step, cache = model.apply({"params": params}, tokens[:, t:t + 1], cache=cache)
        outs.append(step)
      return jnp.concatenate(outs, axis=1)

    start = time.perf_counter()
    loss, logits = jax.block_until_ready(loss_fn(params, tokens))
    forward_seconds = time.perf_counter() - start
    cache_gap = float(jnp.abs(cached_logits(params, tokens) - logits).max())

  summary = {
      "config": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                 for k, v in vars(config).items()},
      "mesh": dict(mesh.shape), "devices": jax.device_count(), "platform": jax.default_backend(),
      "num_params": num_params, "config_num_params": config.num_params,
      "loss_random_tokens": float(loss), "log_vocab": math.log(config.vocab_size),
      "kv_cache_max_abs_gap": cache_gap,
      "init_seconds": init_seconds, "first_forward_seconds_incl_compile": forward_seconds,
      "parameters": rows,
  }
  with open(os.path.join(workdir, "model_summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 0, "loss_random_tokens": float(loss),
                        "kv_cache_max_abs_gap": cache_gap}) + "\n")
  width = max(len(r["name"]) for r in rows)
  print(f"{'parameter':<{width}}  {'shape':<22} {'dtype':<9} sharding")
  for r in rows:
    print(f"{r['name']:<{width}}  {str(tuple(r['shape'])):<22} {r['dtype']:<9} {r['sharding']}")
  print(f"parameters: {num_params:,} on mesh {dict(mesh.shape)} ({jax.default_backend()})")
  print(f"loss on random tokens: {float(loss):.4f} (log vocab = {math.log(config.vocab_size):.4f})")
  print(f"KV-cache decode vs full forward, max |logit gap|: {cache_gap:.2e}")
  logging.info("model summary written to %s", os.path.join(workdir, "model_summary.json"))
  return summary
