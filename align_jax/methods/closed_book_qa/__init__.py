"""Closed-book QA on the encyclopedia world, end to end on a CPU."""

from align_jax.methods.closed_book_qa.pipeline import encyclopedia_qa
