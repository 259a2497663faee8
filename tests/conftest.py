"""Test set-up: CPU only, quiet TensorFlow, and the tiny model configs the tests share."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from align_jax.models import TransformerConfig  # noqa: E402


@pytest.fixture
def tiny_config() -> TransformerConfig:
  return TransformerConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                           head_dim=8, mlp_dim=64, max_seq_len=64)
