"""gin names of SALMON: the world experiment and its configs."""

from align_jax.configurables import register
from align_jax.methods.salmon import labels, world

register((
    (world.salmon_world, "salmon_world"),
    (world.PreferenceConfig, "PreferenceConfig"),
    (world.RLConfig, "RLConfig"),
    (world.EvalConfig, "SalmonEvalConfig"),
    (labels.LabelConfig, "LabelConfig"),
))
