"""Logical axis names -> mesh axes, and sharding constraints driven by them.

Layers name the axes of their parameters and activations logically (``embed``,
``heads``, ``act_batch``...). A list of rules, bound in gin, maps each logical name
to a mesh axis, a tuple of mesh axes, or ``None`` (replicated). A mesh axis that does
not divide the dimension it would shard is dropped for that array, so one rule set
serves models whose head counts differ (e.g. multi-query attention).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = Sequence[tuple[str, Any]]

# Parameters: fsdp shards the model dimension, tensor shards heads / mlp / vocab.
# Activations: the batch is split over data and fsdp, heads and mlp over tensor.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
    ("cache_kv_heads", "tensor"),
    ("cache_head_dim", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
    ("norm", None),
    ("lora_rank", None),
    ("head_out", None),
)


@dataclasses.dataclass(frozen=True)
class ShardingContext:
  """The mesh and logical-axis rules that activation constraints resolve against."""
  mesh: Mesh
  rules: tuple[tuple[str, Any], ...]


_CONTEXT: contextvars.ContextVar[ShardingContext | None] = contextvars.ContextVar(
    "align_jax_sharding_context", default=None)


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Iterator[ShardingContext]:
  """Makes `mesh` and `rules` the ones activation constraints use while tracing."""
  ctx = ShardingContext(mesh, tuple((name, _as_axes(axes)) for name, axes in rules))
  token = _CONTEXT.set(ctx)
  try:
    yield ctx
  finally:
    _CONTEXT.reset(token)


def current_context() -> ShardingContext | None:
  """The active `sharding_context`, or None outside one."""
  return _CONTEXT.get()


def _as_axes(axes: Any) -> Any:
  if axes is None or isinstance(axes, str):
    return axes
  return tuple(axes)


def logical_to_spec(
    logical_axes: Sequence[str | None] | None,
    rules: LogicalRules,
    mesh: Mesh,
    shape: Sequence[int] | None = None,
) -> PartitionSpec:
  """Resolves logical axis names to a PartitionSpec on `mesh`.

  Each mesh axis is used at most once per array; mesh axes of size 1 are left out;
  when `shape` is given, mesh axes that do not divide a dimension are dropped.
  """
  if logical_axes is None:
    return PartitionSpec()
  table: dict[str, Any] = {}
  for name, axes in rules:
    table.setdefault(name, _as_axes(axes))
  used: set[str] = set()
  out = []
  for dim, name in enumerate(logical_axes):
    if name is None:
      out.append(None)
      continue
    if name not in table:
      raise KeyError(
          f"logical axis {name!r} has no sharding rule; add it to the gin-bound "
          f"rules (known: {sorted(table)})")
    axes = table[name]
    candidates = () if axes is None else ((axes,) if isinstance(axes, str) else axes)
    chosen = []
    size = 1
    for axis in candidates:
      if axis not in mesh.shape:
        raise KeyError(f"rule for {name!r} names mesh axis {axis!r}, but the mesh has "
                       f"axes {tuple(mesh.shape)}")
      if axis in used or mesh.shape[axis] == 1:
        continue
      if shape is not None and shape[dim] % (size * mesh.shape[axis]) != 0:
        continue
      chosen.append(axis)
      size *= mesh.shape[axis]
    used.update(chosen)
    out.append(None if not chosen else (chosen[0] if len(chosen) == 1 else tuple(chosen)))
  while out and out[-1] is None:
    out.pop()
  return PartitionSpec(*out)


def logical_sharding(logical_axes, rules, mesh, shape=None) -> NamedSharding:
  """A NamedSharding on `mesh` for logical axis names (see `logical_to_spec`)."""
  return NamedSharding(mesh, logical_to_spec(logical_axes, rules, mesh, shape))


def with_logical_constraint(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """Constrains an activation's sharding; a no-op outside `sharding_context`."""
  ctx = _CONTEXT.get()
  if ctx is None:
    return x
  spec = logical_to_spec(logical_axes, ctx.rules, ctx.mesh, x.shape)
  return jax.lax.with_sharding_constraint(x, NamedSharding(ctx.mesh, spec))


def logical_axes_tree(boxed_tree: Any) -> Any:
  """Logical axis names of a (possibly abstract) tree of boxed Flax parameters."""
  return nn.get_partition_spec(boxed_tree)


def tree_shardings(abstract_tree: Any, logical_tree: Any, mesh: Mesh, rules: LogicalRules) -> Any:
  """NamedShardings for every leaf, given its shape and its logical axis names."""
  def one(names, leaf):
    names = tuple(names) if names is not None else None
    return logical_sharding(names, rules, mesh, np.shape(leaf))
  return jax.tree.map(one, logical_tree, abstract_tree,
                      is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)
