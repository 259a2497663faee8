"""Test set-up: CPU only, quiet TensorFlow, and the tiny model configs the tests share."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Runs started through align_jax.main (in this process or in a subprocess) keep compiled
# programs in one folder for the session: a test compiles what an earlier one did not.
# The folder goes with the session, so every session starts cold, as CI does.
if "ALIGN_JAX_COMPILATION_CACHE" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="align_jax_test_xla_")
  os.environ["ALIGN_JAX_COMPILATION_CACHE"] = _cache
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import pytest  # noqa: E402

from align_jax.models import TransformerConfig  # noqa: E402


@pytest.fixture
def tiny_config() -> TransformerConfig:
  return TransformerConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                           head_dim=8, mlp_dim=64, max_seq_len=64)
