"""The quickstart: closed-book QA on the encyclopedia world, end to end on a CPU."""

from align_jax.methods.quickstart.pipeline import encyclopedia_qa
