"""Low-rank adapters: splitting them from the base, initialising them, merging them in.

With `TransformerConfig.lora_rank > 0` every targeted projection carries two extra
leaves, `<name>_lora_a` and `<name>_lora_b`, in the same parameter tree. Training
then differentiates only those leaves (see `split_params`), checkpoints store only
them, and `merge_lora` folds them into the base weights for export.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import Mesh

from align_jax.models.init import _boxed_init, param_shardings
from align_jax.models.transformer import TransformerConfig, is_lora_path
from align_jax.parallel.partitioning import DEFAULT_RULES, LogicalRules

Predicate = Callable[[Sequence[str]], bool]


def split_params(params: Any, trainable: Predicate) -> tuple[dict, dict]:
  """(trainable, frozen) nested dicts; `trainable(path)` picks the leaves to train."""
  flat = traverse_util.flatten_dict(params)
  train = {k: v for k, v in flat.items() if trainable(k)}
  frozen = {k: v for k, v in flat.items() if not trainable(k)}
  return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)


def merge_params(*trees: Any) -> dict:
  """One parameter tree from disjoint parts (e.g. trainable and frozen)."""
  flat: dict = {}
  for tree in trees:
    for key, value in traverse_util.flatten_dict(tree).items():
      if key in flat:
        raise ValueError(f"parameter {'/'.join(key)} appears in more than one part")
      flat[key] = value
  return traverse_util.unflatten_dict(flat)


def init_lora_params(module: nn.Module, rng: jax.Array, mesh: Mesh | None = None,
                     rules: LogicalRules = DEFAULT_RULES) -> dict:
  """Fresh adapter leaves only (the base initialisers are compiled away)."""
  def init(key):
    boxed = nn.unbox(_boxed_init(module, key))
    return split_params(boxed, is_lora_path)[0]
  if mesh is None:
    return jax.jit(init)(rng)
  shardings = split_params(param_shardings(module, mesh, rules), is_lora_path)[0]
  return jax.jit(init, out_shardings=shardings)(rng)


def merge_lora(config: TransformerConfig, params: Any) -> tuple[TransformerConfig, dict]:
  """Folds adapters into their base kernels: W + (alpha / r) A B; returns a LoRA-free model."""
  if config.lora_rank <= 0:
    return config, params
  scale = config.lora_alpha / config.lora_rank
  flat = traverse_util.flatten_dict(params)
  merged = {k: v for k, v in flat.items() if not is_lora_path(k)}
  for key, a in flat.items():
    if not key[-1].endswith("_lora_a"):
      continue
    name = key[-1][:-len("_lora_a")]
    b = flat[key[:-1] + (f"{name}_lora_b",)]
    kernel_key = key[:-1] + (f"{name}_kernel",)
    contract = lambda a, b: jnp.tensordot(a, b, axes=([-1], [0]))
    delta = jax.vmap(contract)(a, b) if config.scan_layers else contract(a, b)
    kernel = merged[kernel_key]
    merged[kernel_key] = (kernel.astype(jnp.float32) + scale * delta.astype(jnp.float32)
                          ).astype(kernel.dtype)
  return dataclasses.replace(config, lora_rank=0), traverse_util.unflatten_dict(merged)
