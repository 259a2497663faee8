"""gin names of RECITE: its config, the real-dataset evaluation and the world experiment."""

from align_jax.configurables import register
from align_jax.methods.recite import evaluate, recite, world

register((
    (recite.ReciteConfig, "ReciteConfig"),
    (evaluate.recite_eval, "recite_eval"),
    (world.recite_world, "recite_world"),
    (world.CorpusConfig, "CorpusConfig"),
    (world.HintDataConfig, "HintDataConfig"),
    (world.WorldEvalConfig, "WorldEvalConfig"),
))
