"""align_jax: scalable alignment of language models in JAX."""

import os as _os

__version__ = "0.1.0"


def _xla_cpu_defaults() -> None:
  """Turns on XNNPACK kernels for XLA:CPU (about 1.8x faster training of small models).

  Runs at import, before JAX starts its backends; set ALIGN_JAX_XLA_CPU_DEFAULTS=0 to
  leave XLA_FLAGS alone. Flags the user already set are never changed.
  """
  if _os.environ.get("ALIGN_JAX_XLA_CPU_DEFAULTS", "1") == "0":
    return
  flags = _os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_use_xnnpack" not in flags:
    _os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_use_xnnpack=true").strip()


_xla_cpu_defaults()
