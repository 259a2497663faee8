"""align_jax: scalable alignment of language models in JAX."""

__version__ = "0.1.0"
