"""gin names of Easy-to-Hard: the world experiment, the real-data run and their configs."""

from align_jax.configurables import register
from align_jax.methods.easy_to_hard import pipeline, prm800k
from align_jax.worlds import leveled_math

register((
    (pipeline.easy_to_hard_world, "easy_to_hard_world"),
    (pipeline.EvaluatorDataConfig, "EvaluatorDataConfig"),
    (pipeline.RerankConfig, "RerankConfig"),
    (prm800k.easy_to_hard_prm800k, "easy_to_hard_prm800k"),
    (prm800k.RealDataConfig, "RealDataConfig"),
    (leveled_math.LeveledMathConfig, "LeveledMathConfig"),
))
