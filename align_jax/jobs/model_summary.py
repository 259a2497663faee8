"""A job that builds a model on the mesh, runs it, and reports what it built.

Useful before a long run: it shows the parameter count, each parameter's sharding, the loss of
random tokens (about log(vocab) for a fresh model), and checks the KV-cache path against a
full forward on the real devices. With `run_model=False` it only traces the initialiser
(shapes, dtypes and shardings, no memory), which any host can do for any model size.
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

from align_jax import fs
from align_jax.models import (Transformer, TransformerConfig, abstract_params, init_cache,
                              init_params, param_shardings)
from align_jax.parallel import DEFAULT_RULES, LogicalRules, sharding_context


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def _parameter_rows(params) -> list[dict[str, Any]]:
  return [{"name": _path_name(path), "shape": list(leaf.shape), "dtype": str(leaf.dtype),
           "sharding": str(leaf.sharding.spec)}
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)]


def _print_rows(rows: list[dict[str, Any]], num_params: int, mesh: Mesh) -> None:
  width = max(len(r["name"]) for r in rows)
  print(f"{'parameter':<{width}}  {'shape':<22} {'dtype':<9} sharding")
  for r in rows:
    print(f"{r['name']:<{width}}  {str(tuple(r['shape'])):<22} {r['dtype']:<9} {r['sharding']}")
  print(f"parameters: {num_params:,} on mesh {dict(mesh.shape)} ({jax.default_backend()})")


def _device_memory_bytes(mesh: Mesh) -> int | None:
  """The memory the mesh's devices hold together (host RAM for CPU devices), if known."""
  devices = list(mesh.devices.flat)
  if devices[0].platform == "cpu":
    try:
      return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
      return None
  limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
  return sum(limits) if all(limits) else None


def _check_fits(config: TransformerConfig, mesh: Mesh) -> None:
  """Stops before building a model whose parameters (plus room to run it) do not fit."""
  needed = config.num_params * jnp.dtype(config.param_dtype).itemsize
  available = _device_memory_bytes(mesh)
  if available is not None and 2 * needed > available:
    raise ValueError(
        f"model_summary: the model's {config.num_params / 1e9:.1f}B parameters need "
        f"{needed / 2**30:.1f} GiB ({jnp.dtype(config.param_dtype).name}), and running it about "
        f"twice that; the {mesh.devices.size} {jax.default_backend()} device(s) here have "
        f"{available / 2**30:.1f} GiB. Run it on an accelerator slice that holds it (see "
        "launch/README.md), or add --gin.model_summary.run_model=False to list its "
        "parameters, shapes and shardings without building it")


def _layout_summary(workdir: str, config: TransformerConfig, mesh: Mesh,
                    rules: LogicalRules) -> dict[str, Any]:
  """The parameters' names, shapes, dtypes and shardings, traced, never allocated."""
  model = Transformer(config)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_params(model), param_shardings(model, mesh, rules))
  rows = _parameter_rows(abstract)
  num_params = int(sum(np.prod(r["shape"]) for r in rows))
  summary = {
      "config": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                 for k, v in vars(config).items()},
      "mesh": dict(mesh.shape), "devices": jax.device_count(), "platform": jax.default_backend(),
      "num_params": num_params, "config_num_params": config.num_params, "ran_model": False,
      "parameters": rows,
  }
  fs.write_atomically(fs.join(workdir, "model_summary.json"), json.dumps(summary, indent=2))
  _print_rows(rows, num_params, mesh)
  print("layout only (run_model=False): nothing was allocated or run")
  return summary


def model_summary(workdir: str, config: TransformerConfig,
                  mesh: Mesh | None = None,
                  rules: LogicalRules = DEFAULT_RULES, checkpoint: str | None = None,
                  batch_size: int = 2, seq_len: int = 16, seed: int = 0,
                  run_model: bool = True) -> dict[str, Any]:
  """Initialises (or imports from `checkpoint`) the model, runs it, writes a summary.

  run_model: False lists parameters, shapes and shardings from the traced initialiser
  without creating them (nothing is run; e.g. an 8B model's layout on a CPU host). True
  first checks that the parameters fit in the devices' memory and stops with a hint if not.
  """
  if mesh is None:
    from align_jax.parallel import create_mesh
    mesh = create_mesh()
  if not run_model:
    return _layout_summary(workdir, config, mesh, rules)
  _check_fits(config, mesh)
  start = time.perf_counter()
  if checkpoint:
    from align_jax.training.runs import load_run
    loaded = load_run(checkpoint, config=config, mesh=mesh, rules=rules)
    config, params = loaded.config, loaded.params
  else:
    params = init_params(Transformer(config), jax.random.key(seed), mesh, rules)
  init_seconds = time.perf_counter() - start
  model = Transformer(config)

  rows = _parameter_rows(params)
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
      "num_params": num_params, "config_num_params": config.num_params, "ran_model": True,
      "loss_random_tokens": float(loss), "log_vocab": math.log(config.vocab_size),
      "kv_cache_max_abs_gap": cache_gap,
      "init_seconds": init_seconds, "first_forward_seconds_incl_compile": forward_seconds,
      "parameters": rows,
  }
  fs.write_atomically(fs.join(workdir, "model_summary.json"), json.dumps(summary, indent=2))
  with fs.open(fs.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 0, "loss_random_tokens": float(loss),
                        "kv_cache_max_abs_gap": cache_gap}) + "\n")
  _print_rows(rows, num_params, mesh)
  print(f"loss on random tokens: {float(loss):.4f} (log vocab = {math.log(config.vocab_size):.4f})")
  print(f"KV-cache decode vs full forward, max |logit gap|: {cache_gap:.2e}")
  logging.info("model summary written to %s", fs.join(workdir, "model_summary.json"))
  return summary
