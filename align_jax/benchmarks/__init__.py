"""Benchmarks: `python -m align_jax.benchmarks.NAME` prints one JSON object.

Each compares align_jax against a peer measured in the same process run (ratios),
since absolute times on shared machines are noise. None of them is part of the tests.
"""
