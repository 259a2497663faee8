"""gin names of the quickstart (closed-book QA on the encyclopedia world)."""

from align_jax.configurables import register
from align_jax.methods.quickstart import pipeline

register(((pipeline.encyclopedia_qa, "encyclopedia_qa"),))
