"""gin names of Self-Align: the world experiment and its configs."""

from align_jax.configurables import register
from align_jax.methods.self_align import world
from align_jax.worlds import principles

register((
    (world.self_align_world, "self_align_world"),
    (world.BaseEvalConfig, "BaseEvalConfig"),
    (principles.PrinciplesConfig, "PrinciplesConfig"),
))
