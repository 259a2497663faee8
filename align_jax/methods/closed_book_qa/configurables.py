"""gin names of the closed-book QA demo (the encyclopedia world)."""

from align_jax.configurables import register
from align_jax.methods.closed_book_qa import pipeline

register(((pipeline.encyclopedia_qa, "encyclopedia_qa"),))
