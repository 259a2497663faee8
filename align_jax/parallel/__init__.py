"""Meshes, logical-axis sharding rules and multi-host start-up."""

from align_jax.parallel.mesh import (MESH_AXES, create_mesh, initialize_distributed,
                                     resolve_mesh_shape, to_host)
from align_jax.parallel.partitioning import (
    DEFAULT_RULES,
    LogicalRules,
    ShardingContext,
    current_context,
    logical_axes_tree,
    logical_sharding,
    logical_to_spec,
    sharding_context,
    tree_shardings,
    with_logical_constraint,
)
