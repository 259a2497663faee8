"""Parameter shapes, logical axes, shardings, and initialisation created already sharded."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from align_jax.parallel.partitioning import DEFAULT_RULES, LogicalRules, tree_shardings


def _boxed_init(module: nn.Module, rng: jax.Array) -> Any:
  tokens = jnp.zeros((1, 1), jnp.int32)
  return module.init(rng, tokens)["params"]


def _boxed_abstract(module: nn.Module) -> Any:
  return jax.eval_shape(lambda key: _boxed_init(module, key), jax.random.key(0))


def param_logical_axes(module: nn.Module) -> Any:
  """Tree of PartitionSpecs holding each parameter's logical axis names."""
  return nn.get_partition_spec(_boxed_abstract(module))


def abstract_params(module: nn.Module) -> Any:
  """Tree of ShapeDtypeStructs of the parameters (nothing is allocated)."""
  return nn.unbox(_boxed_abstract(module))


def param_shardings(module: nn.Module, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Any:
  """NamedSharding of every parameter under `rules` on `mesh`."""
  boxed = _boxed_abstract(module)
  return tree_shardings(nn.unbox(boxed), nn.get_partition_spec(boxed), mesh, rules)


def init_params(module: nn.Module, rng: jax.Array, mesh: Mesh | None = None,
                rules: LogicalRules = DEFAULT_RULES) -> Any:
  """Randomly initialised parameters, each created directly in its sharding.

  The initialiser is compiled with output shardings, so no device ever holds more
  than its own shards; without a mesh everything lands on the default device.
  """
  init = lambda key: nn.unbox(_boxed_init(module, key))
  if mesh is None:
    return jax.jit(init)(rng)
  return jax.jit(init, out_shardings=param_shardings(module, mesh, rules))(rng)
