"""gin names of SALMON: the world experiment and its configs."""

from align_jax.configurables import register
from align_jax.methods.salmon import dromedary2, labels, stages, world

register((
    (world.salmon_world, "salmon_world"),
    (dromedary2.salmon_dromedary2, "salmon_dromedary2"),
    (dromedary2.SalmonFiles, "SalmonFiles"),
    (dromedary2.Dromedary2Config, "Dromedary2Config"),
    (world.PreferenceConfig, "PreferenceConfig"),
    (world.RLConfig, "RLConfig"),
    (world.EvalConfig, "SalmonEvalConfig"),
    (labels.LabelConfig, "LabelConfig"),
    (stages.SymbolicTerms, "SymbolicTerms"),
))
