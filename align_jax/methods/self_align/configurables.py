"""gin names of Self-Align: the world experiment and its configs."""

from align_jax.configurables import register
from align_jax.data import instructions
from align_jax.methods.self_align import answers, dromedary, stages, world
from align_jax.worlds import principles

register((
    (world.self_align_world, "self_align_world"),
    (dromedary.self_align_dromedary, "self_align_dromedary"),
    (dromedary.DromedaryFiles, "DromedaryFiles"),
    (world.BaseEvalConfig, "BaseEvalConfig"),
    (world.SelfAlignStages, "SelfAlignStages"),
    (world.WorldPromptsConfig, "WorldPromptsConfig"),
    (world.ComplianceConfig, "ComplianceConfig"),
    (stages.SelfInstructConfig, "SelfInstructConfig"),
    (stages.RedTeamConfig, "RedTeamConfig"),
    (stages.AnswerConfig, "AnswerConfig"),
    (stages.VerboseConfig, "VerboseConfig"),
    (answers.AnswerFormat, "AnswerFormat"),
    (instructions.InstructionFilter, "InstructionFilter"),
    (principles.PrinciplesConfig, "PrinciplesConfig"),
))
