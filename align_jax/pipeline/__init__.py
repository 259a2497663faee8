"""Pipelines of resumable stages, the stage builders methods share, and reports."""

from align_jax.pipeline.builders import (TrainingSchedule, trained_run, training_stage,
                                         vocabulary_stage)
from align_jax.pipeline.stages import (COMPLETION_FILE, Pipeline, Stage, is_writer,
                                       read_completion, run_seeds, stage_seconds,
                                       stage_time_rows)
