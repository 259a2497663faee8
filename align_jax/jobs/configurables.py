"""gin names of the jobs: `run` (the entry wrapper), `generate`, `export`,
`model_summary`, `train_vocabulary`."""

from align_jax.configurables import register
from align_jax.jobs import export, generate, model_summary, run, vocabulary

register((
    (run.run, "run"),
    (generate.generate_job, "generate"),
    (export.export_job, "export"),
    (model_summary.model_summary, "model_summary"),
    (vocabulary.train_vocabulary, "train_vocabulary"),
))
