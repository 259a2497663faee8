"""gin names of the RLHF demo."""

from align_jax.configurables import register
from align_jax.methods.rlhf import pipeline

register(((pipeline.rlhf_demo, "rlhf_demo"),))
